"""Split a request file that exceeds the per-batch limits into parts that each fit, line by line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO

BOM = b"\xef\xbb\xbf"


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
