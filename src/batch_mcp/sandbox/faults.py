"""Test instrumentation: injected failures per operation, and the log of every request received.

Operations are the verbs of one emulated API (DigitalOcean's by default); each API's app hands its own
list to the :class:`FaultPlan` it arms.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal, get_args

Operation = Literal[
    "create_file",
    "upload",
    "create_batch",
    "list_batches",
    "get_batch",
    "cancel_batch",
    "get_results",
    "download",
]
OPERATIONS: tuple[str, ...] = get_args(Operation)
#: ``server_error`` answers 500, ``rate_limit`` answers 429 with ``retry-after``, ``conflict`` answers 409
#: (as to a create whose idempotency key the API will not accept), ``redirect`` answers 307 to another
#: host (as S3 does when a bucket lives in another region), ``drop`` starts a response and then closes
#: the connection mid-body (after reading part of any request body).
#: ``lost_answer`` carries the call out (a create commits) and then drops the connection before the
#: answer: the client cannot tell whether it happened. ``overloaded`` answers 529, as Anthropic does when
#: it sheds load (``overloaded_error``), having done nothing.
FaultKind = Literal["server_error", "rate_limit", "conflict", "redirect", "drop", "lost_answer", "overloaded"]


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    retry_after_s: int = 1


@dataclass(frozen=True)
class RequestRecord:
    """One request as the sandbox saw it: enough to prove where credentials were sent."""

    operation: str
    method: str
    path: str  # without the query string, which holds presigned signatures
    authorization: bool  # credentials came along: an Authorization or (Anthropic's) x-api-key header
    host: str


class FaultPlan:
    """Faults armed for upcoming calls. Each armed fault fires once, on the next call of its operation."""

    def __init__(self, operations: tuple[str, ...] = OPERATIONS) -> None:
        self.operations = operations
        self._pending: dict[str, deque[Fault]] = {}
        self._delays: dict[str, float] = {}
        #: When set, new upload URLs live this many seconds instead of the configured TTL.
        self.upload_url_ttl_s: float | None = None

    def _known(self, operation: str) -> str:
        if operation not in self.operations:
            raise ValueError(f"unknown operation {operation!r}; expected one of {', '.join(self.operations)}")
        return operation

    def fail_next(
        self, operation: str, kind: FaultKind = "server_error", times: int = 1, retry_after_s: int = 1
    ) -> None:
        """Make the next ``times`` calls of ``operation`` fail with ``kind``."""
        self._pending.setdefault(self._known(operation), deque()).extend([Fault(kind, retry_after_s)] * times)

    def slow(self, operation: str, seconds: float) -> None:
        """Delay every call of ``operation`` by ``seconds`` (0 removes the delay)."""
        self._delays[self._known(operation)] = seconds

    def take(self, operation: str) -> Fault | None:
        pending = self._pending.get(operation)
        return pending.popleft() if pending else None

    def delay(self, operation: str) -> float:
        return self._delays.get(operation, 0.0)

    def reset(self) -> None:
        self._pending.clear()
        self._delays.clear()
        self.upload_url_ttl_s = None
