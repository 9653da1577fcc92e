"""The create body, ``{"requests": [...]}``, streamed from the JSONL input file in bounded memory.

The lines already have the ``{custom_id, params}`` shape (the preflight checked them), so they are
copied in as they are, joined by commas: nothing is parsed or re-encoded. A first pass counts the
requests and the body's exact length, so the body goes out with a Content-Length (the API can refuse
an oversized one before reading it) and the request count is known for ``recover`` to match on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from batch_mcp.backends.base import BackendError

HEAD = b'{"requests":['
TAIL = b"]}"
#: The body is sent in pieces of about this size: memory stays flat whatever the file's size.
PIECE_BYTES = 1024 * 1024


_WHITESPACE = frozenset(b" \t\r\n")


def _request(line: bytes) -> bytes | memoryview:
    """The line without surrounding whitespace: in the usual case (a bare newline ending) a view, not a copy."""
    if len(line) > 1 and line[-1] == 0x0A and line[-2] not in _WHITESPACE and line[0] not in _WHITESPACE:
        return memoryview(line)[:-1]
    return line.strip()


@dataclass(frozen=True)
class InlineBody:
    """One input file as a create body: how many requests it holds and how long the body is."""

    path: Path
    requests: int
    length: int

    @classmethod
    def scan(cls, path: Path) -> InlineBody:
        """Count the requests (non-blank lines) and the bytes the body will take; reads, never holds, the file."""
        count = payload = 0
        with path.open("rb") as source:
            for line in source:
                if size := len(_request(line)):
                    count += 1
                    payload += size
        return cls(path, count, len(HEAD) + payload + max(0, count - 1) + len(TAIL))

    async def stream(self) -> AsyncIterator[bytes]:
        """The body in pieces, exactly as scanned; a file that changed since is refused, never sent as it now is.

        Each piece is one join of the lines' views, so every byte is copied once on its way out.
        """
        parts: list[bytes | memoryview] = [HEAD]
        size, sent, count = len(HEAD), 0, 0
        with self.path.open("rb") as source:
            for line in source:
                if not (request := _request(line)):
                    continue
                if count:
                    parts.append(b",")
                    size += 1
                parts.append(request)
                size += len(request)
                count += 1
                if sent + size > self.length - len(TAIL):
                    raise self._changed()
                if size >= PIECE_BYTES:
                    yield b"".join(parts)
                    sent += size
                    parts.clear()
                    size = 0
        parts.append(TAIL)
        if count != self.requests or sent + size + len(TAIL) != self.length:
            raise self._changed()
        yield b"".join(parts)

    def _changed(self) -> BackendError:
        return BackendError(f"{self.path.name} changed while its requests were being sent; nothing was created "
                            "from it. Check the file and submit it again", code="input_changed")
