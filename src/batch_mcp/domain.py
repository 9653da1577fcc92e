"""The neutral vocabulary every layer above the backends speaks: jobs, their status and counts, ids.

Each backend translates its wire objects into these types and keeps what does not fit in
``raw_status`` and ``extra``, so nothing a provider said is lost. This module imports nothing
from batch_mcp, so any layer may depend on it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

#: ``await on_progress(done, total)`` while bytes move; ``total`` is 0 when the size is unknown.
Progress = Callable[[int, int], Awaitable[None]]


class JobStatus(StrEnum):
    """Our status names (OpenAI's plus ``queued``); every backend maps its own onto them."""

    VALIDATING = "validating"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED})


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def parse_timestamp(value: Any) -> datetime | None:
    """Epoch seconds or RFC 3339 (a trailing Z, nanosecond fractions); empty means absent."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    text = str(value).strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    # fromisoformat takes at most six fraction digits: cut the rest (nanoseconds) off
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


Timestamp = Annotated[datetime | None, BeforeValidator(parse_timestamp)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Counts(_Frozen):
    """Requests by outcome. Anthropic reports all six; OpenAI-style APIs only total/succeeded/failed.

    ``processing`` is what has not finished yet. Requests that never ran in a batch that ended
    for another reason are counted nowhere, so the parts may sum to less than ``total``.
    """

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    processing: int = 0


class JobError(_Frozen):
    """A reason a job (not one request) failed, with the input line it points at when known."""

    code: str | None = None
    message: str | None = None
    line: int | None = None
    param: str | None = None


class Job(_Frozen):
    """One batch job on one backend, as the layers above see it."""

    backend: str
    id: str = Field(description="The backend's own id; see ``ref`` for the namespaced one.")
    status: JobStatus
    raw_status: str = Field(description="The status exactly as the backend sent it.")
    counts: Counts | None = Field(default=None, description="None while the backend has not counted yet.")
    line_format: str | None = None
    endpoint: str | None = None
    model: str | None = None
    input_ref: str | None = Field(default=None, description="The backend's id of the input file, if it has one.")
    completion_window: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict, description="The user's metadata, without our token.")
    client_token: str | None = Field(default=None, description="Our submission token, when the backend echoes it.")
    created_at: Timestamp = None
    started_at: Timestamp = None
    ended_at: Timestamp = None
    expires_at: Timestamp = None
    cancel_requested_at: Timestamp = None
    results_ready: bool = False
    errors: list[JobError] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict, description="Backend fields with no neutral meaning.")

    @property
    def ref(self) -> str:
        return str(Ref(self.backend, self.id))

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.status)


class JobPage(_Frozen):
    """One page of a listing, newest first; pass ``next_cursor`` back to get the next one."""

    jobs: list[Job]
    next_cursor: str | None = None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


_BACKEND_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Ref:
    """A namespaced id, ``backend:native``: it routes without the job store, also for jobs made elsewhere.

    A bare id (no backend prefix) is a legacy id from before there were several backends; its
    ``backend`` is None and the caller decides where it belongs. Backend names never contain ``:``,
    so only the first one separates; the native part may contain more.
    """

    backend: str | None
    native: str

    @classmethod
    def parse(cls, text: str) -> Ref:
        value = text.strip()
        prefix, colon, rest = value.partition(":")
        if colon and _BACKEND_NAME.fullmatch(prefix):
            if not rest:
                raise ValueError(f"{text!r} names backend {prefix!r} but no id after the ':'")
            return cls(prefix, rest)
        if not value:
            raise ValueError("an id is required")
        return cls(None, value)

    def __str__(self) -> str:
        return self.native if self.backend is None else f"{self.backend}:{self.native}"


class StagedInput(_Frozen):
    """An input file placed where ``create`` can use it."""

    backend: str
    ref: str = Field(description="What CreateSpec.input_ref takes: a file id, or a local path for inline APIs.")
    bytes: int
    filename: str
    expires_at: Timestamp = None
    reusable: bool = Field(default=True, description="Whether another job may be created from the same ref.")


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("planned_at needs a time zone")
    return value


class CreateSpec(_Frozen):
    """Everything a create needs, fixed before it is sent, so a lost answer can be recovered.

    ``client_token`` is our submission's identity: DigitalOcean takes it as its idempotency key,
    OpenAI-style APIs carry it in the batch metadata. ``planned_at`` bounds how far back
    ``recover`` looks.
    """

    input_ref: str
    line_format: str
    endpoint: str | None = None
    completion_window: str = "24h"
    metadata: dict[str, str] = Field(default_factory=dict)
    client_token: str = Field(pattern=r"^[A-Za-z0-9_-]{8,128}$")
    planned_at: Annotated[datetime, AfterValidator(_aware)]
    not_ours: frozenset[str] = Field(default=frozenset(), description="Native ids of jobs other submissions made: "
                                     "``recover`` never takes one of them for this one's.")


class ResultSource(_Frozen):
    """One downloadable part of a job's results, and how to fetch it.

    ``output`` and ``errors`` are the two files of OpenAI-style APIs; ``combined`` is one stream
    holding both (Anthropic). ``locator`` is what the backend's ``download`` needs (a file id or a
    URL); ``shareable_url`` is set only when the link works without credentials.
    """

    kind: Literal["output", "errors", "combined"]
    locator: str
    shareable_url: str | None = None
    expires_at: Timestamp = None
