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
                if stripped := line.strip():
                    count += 1
                    payload += len(stripped)
        return cls(path, count, len(HEAD) + payload + max(0, count - 1) + len(TAIL))

    async def stream(self) -> AsyncIterator[bytes]:
        """The body in pieces, exactly as scanned; a file that changed since is refused, never sent as it now is."""
        piece, sent, count = bytearray(HEAD), 0, 0
        with self.path.open("rb") as source:
            for line in source:
                if not (stripped := line.strip()):
                    continue
                if count:
                    piece += b","
                piece += stripped
                count += 1
                if sent + len(piece) > self.length - len(TAIL):
                    raise self._changed()
                if len(piece) >= PIECE_BYTES:
                    sent += len(piece)
                    yield bytes(piece)
                    piece.clear()
        piece += TAIL
        if count != self.requests or sent + len(piece) != self.length:
            raise self._changed()
        yield bytes(piece)

    def _changed(self) -> BackendError:
        return BackendError(f"{self.path.name} changed while its requests were being sent; nothing was created "
                            "from it. Check the file and submit it again", code="input_changed")
