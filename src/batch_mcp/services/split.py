"""Split a request file that exceeds the per-batch limits into parts that each fit, line by line."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from batch_mcp.services.workspace import NewFile

BOM = b"\xef\xbb\xbf"
_CHUNK = 4 * 1024 * 1024


class UnsplittableFile(Exception):
    """A single line is larger than a whole batch may be, so no split can make the file fit."""


def check_splittable(source: Path, max_bytes: int) -> None:
    """Refuse, in one cheap pass and before anything parses the file, a line longer than ``max_bytes``.

    Parsing such a line would hold all of it in memory; a sparse or corrupt file can be one
    gigabyte-long line.
    """
    line, run = 1, 0  # current line number, bytes since the last newline
    with source.open("rb") as data:
        while chunk := data.read(_CHUNK):
            start = 0
            while (newline := chunk.find(b"\n", start)) != -1:
                if run + newline - start + 1 > max_bytes:  # the newline counts, as in the parts
                    break
                line, run, start = line + 1, 0, newline + 1
            else:
                run += len(chunk) - start
                if run + 1 <= max_bytes:
                    continue
            raise UnsplittableFile(
                f"{source.name}: line {line} alone is over {max_bytes:,} bytes, more than one batch may hold, so "
                "the file cannot be split into batches; check that the file is JSONL with one request per line.")


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
    count = size = 0
    with ExitStack() as open_part:
        for line in _request_lines(source):
            if part is None or count >= max_requests or size + len(line) > max_bytes:
                open_part.close()
                parts.append(folder / f"part-{len(parts) + 1:03d}.jsonl")
                part = open_part.enter_context(NewFile(parts[-1], if_taken="move it away, then submit again"))
                count = size = 0
            part.out.write(line)
            count += 1
            size += len(line)
    return parts


def _request_lines(source: Path) -> Iterator[bytes]:
    with source.open("rb") as lines:
        for number, line in enumerate(lines):
            if number == 0 and line.startswith(BOM):
                line = line[len(BOM):]
            if not line.strip():
                continue
            yield line if line.endswith(b"\n") else line + b"\n"
