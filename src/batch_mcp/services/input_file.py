"""Reading a batch input file safely for the preflight: regular files only, chunked, hashed on the side.

A FIFO or a device is refused before it is opened for reading (``open`` on a FIFO would wait for a
writer); the lines are cut from large chunks while a helper thread feeds the same chunks to SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

BOM = b"\xef\xbb\xbf"
CHUNK = 1 << 22  # bytes read, and hashed on the helper thread, at a time


class UnusableInput(Exception):
    """The path cannot be checked at all: missing, not a regular file, unreadable, or bad arguments."""


def hashed_lines(file: IO[bytes], hasher: hashlib._Hash, max_line: int) -> Iterator[bytes]:
    """The file's lines, newline kept, while a helper thread feeds the same chunks to ``hasher``.

    hashlib releases the GIL while it hashes a large buffer, so hashing one chunk overlaps with checking
    the lines of that chunk, and the SHA-256 costs almost no wall time on a machine with two cores.
    A line growing past ``max_line`` bytes is handed over as read so far, and the pass ends there.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="preflight-sha256") as hashing:
        hashed: Future[None] | None = None
        pending: list[bytes] = []  # pieces of a line that spans chunks
        held = 0
        while chunk := file.read(CHUNK):
            if hashed is not None:
                hashed.result()  # at most two chunks in memory
            hashed = hashing.submit(hasher.update, chunk)
            for piece in io.BytesIO(chunk):
                if not piece.endswith(b"\n"):  # only a chunk's last line can lack it
                    pending.append(piece)
                    held += len(piece)
                    if held > max_line:
                        yield b"".join(pending)
                        return
                elif pending:
                    yield b"".join([*pending, piece])
                    pending.clear()
                    held = 0
                else:
                    yield piece
        if pending:
            yield b"".join(pending)
        if hashed is not None:
            hashed.result()


_TOO_DEEP = "the JSON nests arrays or objects too deeply to parse; flatten the request"


def explain_invalid_json(line: bytes, error: Exception) -> str:
    """Name the syntax error precisely. Slow path: the standard library parser gives a reason and a column."""
    fix = "write exactly one complete JSON object per line, with no line breaks inside it"
    if isinstance(error, RecursionError):
        return _TOO_DEEP
    text = line.rstrip(b"\r\n")  # a line cut inside a string then reads as unterminated, not as a line break
    if text.startswith(BOM):
        return ("the line starts with a UTF-8 byte order mark, as when files are concatenated; remove it "
                "(only plain UTF-8 without BOM is safe)")
    try:
        json.loads(text)
    except json.JSONDecodeError as stdlib:
        if stdlib.pos >= len(stdlib.doc.rstrip()):
            return f"the line ends before its JSON value is complete (cut short, or split over lines); {fix}"
        return f"not valid JSON: {stdlib.msg.removesuffix(' at')} at column {stdlib.colno}; {fix}"
    except RecursionError:
        return _TOO_DEEP
    # Python's parser is laxer than msgspec: NaN, Infinity, huge numbers and lone surrogates get here.
    return (f"JSON that strict parsers reject ({error}): NaN, Infinity, a number out of range or an unpaired "
            r"\u surrogate escape; replace those values")



def _require_regular_file(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise UnusableInput(f"{path} is a directory; pass the path of one .jsonl file inside it")
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
    raise UnusableInput(f"{path} is {kind}, not a regular file; write the requests to a .jsonl file and pass "
                        "its path")


def open_regular_file(path: Path) -> tuple[IO[bytes], int]:
    """Open for reading only after ``stat`` shows a regular file, so a FIFO or /dev/zero never blocks."""
    try:
        _require_regular_file(path, os.stat(path).st_mode)
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        dangling = " (it is a symlink to a missing target)" if path.is_symlink() else ""
        relative = "" if path.is_absolute() else f" (relative paths start at {Path.cwd()})"
        raise UnusableInput(f"{path} does not exist{dangling}; check the path{relative}") from None
    except OSError as exc:
        raise UnusableInput(f"cannot open {path}: {exc.strerror}; check the path and its "
                            "permissions") from None
    try:
        info = os.fstat(fd)
        _require_regular_file(path, info.st_mode)  # the path may have changed since the stat
        return os.fdopen(fd, "rb", buffering=0), info.st_size
    except BaseException:
        os.close(fd)
        raise

