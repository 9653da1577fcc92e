"""Split a request file that exceeds the per-batch limits into parts that each fit, line by line.

The preflight check counts the parts with the same packing (:func:`count_batches`) and looks for a line no part
can hold (:func:`overlong_line`), so what validation reports is what a submission does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from batch_mcp.services.workspace import NewFile

BOM = b"\xef\xbb\xbf"
_CHUNK = 4 * 1024 * 1024


def overlong_line(data: IO[bytes], max_bytes: int) -> int | None:
    """The number of the first line longer than ``max_bytes`` (its newline counted, as in the parts), if any.

    One cheap pass that never holds a line in memory: a sparse or corrupt file can be one gigabyte-long line.
    """
    line, run = 1, 0  # current line number, bytes since the last newline
    while chunk := data.read(_CHUNK):
        start = 0
        while (newline := chunk.find(b"\n", start)) != -1:
            if run + newline - start + 1 > max_bytes:
                return line
            line, run, start = line + 1, 0, newline + 1
        run += len(chunk) - start
        if run + 1 > max_bytes:  # the rest of the line, plus the newline a part gives it
            return line
    return None


def count_batches(data: IO[bytes], max_requests: int, max_bytes: int) -> int:
    """How many parts :func:`split_requests` would write, without writing any."""
    return sum(starts for starts, _ in _packed(data, max_requests, max_bytes))


def parts_folder(source: Path, sha256: str, max_requests: int, max_bytes: int) -> str:
    """``<stem>.parts/<key>``, relative to the folder of ``source``: one folder per content and limits.

    The same input always gives the same parts, so an interrupted group submission resumes with the
    files it made; a changed input gets parts of its own beside those its earlier jobs were sent from.
    """
    key = hashlib.sha256(f"{sha256}:{max_requests}:{max_bytes}".encode()).hexdigest()[:12]
    return f"{source.stem}.parts/{key}"


def split_requests(source: Path, folder: Path, max_requests: int, max_bytes: int) -> list[Path]:
    """Write ``folder/part-001.jsonl``, ... each within both limits; blank lines and a BOM are dropped.

    A part already there with the same content (from an interrupted run) is kept; a different file
    under a part's name is never replaced.
    """
    parts: list[Path] = []
    part: NewFile | None = None
    with source.open("rb") as data, ExitStack() as open_part:
        for starts, line in _packed(data, max_requests, max_bytes):
            if starts:
                open_part.close()
                parts.append(folder / f"part-{len(parts) + 1:03d}.jsonl")
                part = open_part.enter_context(NewFile(parts[-1], if_taken="move it away, then submit again"))
            assert part is not None  # the first line starts a part
            part.out.write(line)
    return parts


def _packed(data: IO[bytes], max_requests: int, max_bytes: int) -> Iterator[tuple[bool, bytes]]:
    """Each request line, and whether it starts a new part: one that would take a part past a limit does."""
    count = size = 0
    for line in _request_lines(data):
        starts = count == 0 or count >= max_requests or size + len(line) > max_bytes
        if starts:
            count = size = 0
        count += 1
        size += len(line)
        yield starts, line


def _request_lines(data: IO[bytes]) -> Iterator[bytes]:
    for number, line in enumerate(data):
        if number == 0 and line.startswith(BOM):
            line = line[len(BOM):]
        if not line.strip():
            continue
        yield line if line.endswith(b"\n") else line + b"\n"
