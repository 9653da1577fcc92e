"""Split a request file that exceeds the per-batch limits into parts that each fit, line by line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO

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


def split_requests(source: Path, folder: Path, max_requests: int, max_bytes: int) -> list[Path]:
    """Write ``folder/part-001.jsonl``, ... each within both limits; blank lines and a BOM are dropped.

    The same input always gives the same parts, so an interrupted group submission can resume.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("part-*.jsonl"):
        stale.unlink()
    parts: list[Path] = []
    out: IO[bytes] | None = None
    count = size = 0
    try:
        for line in _request_lines(source):
            if out is None or count >= max_requests or size + len(line) > max_bytes:
                if out is not None:
                    out.close()
                parts.append(folder / f"part-{len(parts) + 1:03d}.jsonl")
                out = parts[-1].open("wb")
                count = size = 0
            out.write(line)
            count += 1
            size += len(line)
    finally:
        if out is not None:
            out.close()
    return parts


def _request_lines(source: Path) -> Iterator[bytes]:
    with source.open("rb") as lines:
        for number, line in enumerate(lines):
            if number == 0 and line.startswith(BOM):
                line = line[len(BOM):]
            if not line.strip():
                continue
            yield line if line.endswith(b"\n") else line + b"\n"
