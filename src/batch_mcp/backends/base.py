"""The seam between the workflow and each batch API: the Backend protocol, its capability facts, its errors.

Everything here is neutral. Error hints say what to do in general terms; the tool layer adds tool
names and environment variables (it has the capabilities to do so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, runtime_checkable

from batch_mcp.domain import CreateSpec, Job, JobPage, JobStatus, Progress, ResultSource, StagedInput

#: The one metadata key a ``metadata_tag`` backend reserves for our submission token.
TOKEN_METADATA_KEY = "batch_mcp_token"

_WINDOW = re.compile(r"([1-9][0-9]*)([hd])")


def window_hours(window: str) -> int | None:
    """Hours in a completion window written as ``24h`` or ``7d``; None if it is not written so."""
    match = _WINDOW.fullmatch(window.strip())
    if match is None:
        return None
    return int(match[1]) * (24 if match[2] == "d" else 1)


@dataclass(frozen=True)
class Windows:
    """The completion windows a backend accepts: every ``Nh``/``Nd`` from ``shortest`` to ``longest``."""

    shortest: str = "24h"
    longest: str = "24h"

    def __post_init__(self) -> None:
        if None in (window_hours(self.shortest), window_hours(self.longest)):
            raise ValueError(f"windows are written like 24h or 7d, not {self.shortest!r}..{self.longest!r}")

    def accepts(self, window: str) -> bool:
        hours, low, high = window_hours(window), window_hours(self.shortest), window_hours(self.longest)
        return None not in (hours, low, high) and low <= hours <= high  # type: ignore[operator]

    def __str__(self) -> str:
        return self.shortest if self.shortest == self.longest else f"{self.shortest} to {self.longest}"


@dataclass(frozen=True)
class MetadataLimits:
    """What a backend documents about job metadata; None where it documents nothing."""

    max_pairs: int | None = None
    key_chars: int | None = None
    value_chars: int | None = None


@dataclass(frozen=True)
class Capabilities:
    """The facts about one backend, as data: tools, preflight, the split and ``batch://backends`` read them.

    None means "not documented"; nothing is guessed (a discount of None is never shown as one).
    """

    name: str
    label: str
    token_env: tuple[str, ...]
    base_url_env: str
    default_base_url: str
    line_formats: tuple[str, ...]
    #: Endpoints for line formats that name one (OpenAI-style lines); Anthropic lines name none.
    endpoints: tuple[str, ...]
    max_requests: int | None
    max_bytes: int | None
    windows: Windows
    #: Fraction off the synchronous price (0.5 = half price); None when no source documents it.
    discount: float | None
    #: ``any``: unique strings; ``anthropic``: ``^[A-Za-z0-9_-]{1,64}$``.
    custom_id: Literal["any", "anthropic"] = "any"
    #: Whether one batch may name several models; None when undocumented.
    mixed_models: bool | None = False
    #: None: the backend keeps no metadata at all.
    metadata: MetadataLimits | None = MetadataLimits()
    upload: Literal["presigned", "multipart", "inline"] = "multipart"
    #: How a lost create answer is resolved: the API replays a ``request_id``, or we find our
    #: token in the metadata, or nothing but heuristics helps.
    idempotency: Literal["request_id", "metadata_tag", "none"] = "metadata_tag"
    results: Literal["output+errors", "combined"] = "output+errors"
    shareable_result_links: bool = False
    #: Days results stay downloadable after the job ends; None when undocumented.
    retention_days: int | None = None
    #: Days an uploaded input stays usable for another job; None when undocumented.
    input_retention_days: int | None = None
    #: Whether the list call filters by status itself (else we filter the pages we get).
    status_filter: bool = False
    #: Whether an ended job can be deleted at the provider, its results with it (the backend is then
    #: also a :class:`Deleting`).
    deletes: bool = False

    @property
    def reserved_metadata_keys(self) -> tuple[str, ...]:
        return (TOKEN_METADATA_KEY,) if self.idempotency == "metadata_tag" else ()

    @property
    def user_metadata_pairs(self) -> int | None:
        """How many metadata pairs the user may set, after the ones we reserve."""
        if self.metadata is None:
            return 0
        if self.metadata.max_pairs is None:
            return None
        return self.metadata.max_pairs - len(self.reserved_metadata_keys)


# --- errors ---------------------------------------------------------------------------------------


class BackendError(Exception):
    """A batch API refused a call, answered something unusable, or could not be reached."""

    hint = "Check the request and try again."

    def __init__(self, message: str, *, backend: str | None = None, status_code: int | None = None,
                 code: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.backend = backend
        self.status_code = status_code
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        text = self.message.rstrip(".") + "."
        if self.status_code is not None:
            text += f" (HTTP {self.status_code}{', ' + self.code if self.code else ''})"
        elif self.code:
            text += f" ({self.code})"
        if self.request_id:
            text += f" Support request id: {self.request_id}."
        return text


class AuthenticationError(BackendError):
    hint = "The API key was refused; set a valid key for this backend and restart the server."


class PermissionDeniedError(BackendError):
    hint = "The key may not do this; use a key with batch permissions."


class NotFoundError(BackendError):
    hint = "Check the id; listing the backend's jobs shows the ones this account has."


class ConflictError(BackendError):
    hint = "The job is not in a state that allows this; look at its status first."


class InvalidRequestError(BackendError):
    hint = "Fix the request as the message says and call again."


class RateLimitedError(BackendError):
    hint = "The backend's rate limit is spent; wait before calling again."

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        text = super().__str__()
        return text if self.retry_after_s is None else f"{text} Retry after {self.retry_after_s:.0f} s."


class ServiceError(BackendError):
    hint = "The service kept failing; try again in a few minutes."


class Redirected(ServiceError):
    """A 3xx: redirects are never followed (a presigned link is signed for one host), so nothing happened."""

    hint = ("Nothing was transferred and nothing is recorded as done. The redirect comes from the service's "
            "side (object storage sends one when a bucket lives in another region): try again in a few "
            "minutes, and tell the provider if it persists.")


class UnexpectedResponse(BackendError):
    hint = "The service answered in a shape batch-mcp does not understand; check the base URL."


class ConnectionFailed(BackendError):
    hint = "The service could not be reached; check the network and the base URL."


class TimedOut(ConnectionFailed):
    hint = "The service did not answer in time; try again later."


class LinkRefused(BackendError):
    """Object storage refused a presigned link: it expired, or its signature does not match."""

    hint = "The presigned link was refused even after a fresh one was fetched; try again in a few minutes."


class ResultsNotReady(BackendError):
    hint = "Results are not ready yet; wait until the job has ended, then fetch them."


class OutcomeUnknown(BackendError):
    """A call that is not safe to repeat got no usable answer: it may or may not have taken effect."""

    hint = "Do not repeat the call blindly; find out first whether it took effect."


class CreateNotConfirmed(OutcomeUnknown):
    """The create may or may not exist. ``recover(spec)`` with the same spec finds it if it does."""

    hint = "The job may exist; it is looked up by its submission token before anything is sent again."

    def __init__(self, message: str, *, client_token: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.client_token = client_token


class RecoveryInconclusive(BackendError):
    """The listing could not tell whether our create took effect: several candidates, or no end in sight."""

    hint = "Check the candidate jobs by hand; cancel any that should not run."

    def __init__(self, message: str, *, candidates: tuple[str, ...] = (), **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.candidates = candidates


class NotConfigured(BackendError):
    """A backend was asked for that has no key (or is unknown)."""

    hint = "Set the backend's API key and restart the server, or pick a configured backend."


# --- the protocol ---------------------------------------------------------------------------------


class Backend(Protocol):
    """One batch API account. Ids in and out are the backend's native ids; the registry namespaces them.

    ``create`` sends once: when its answer is lost it raises :class:`CreateNotConfirmed`, and the
    caller asks ``recover(spec)`` before it ever creates again.
    """

    name: str
    capabilities: Capabilities

    async def upload(self, path: Path, line_format: str, on_progress: Progress | None = None) -> StagedInput: ...

    async def create(self, spec: CreateSpec) -> Job: ...

    async def recover(self, spec: CreateSpec) -> Job | None: ...

    async def get(self, job_id: str) -> Job: ...

    async def list(self, status: JobStatus | None = None, limit: int = 20, cursor: str | None = None) -> JobPage: ...

    async def cancel(self, job_id: str) -> Job: ...

    async def results(self, job_id: str) -> list[ResultSource]: ...

    async def download(self, source: ResultSource, out: BinaryIO, on_progress: Progress | None = None) -> int:
        """Stream ``source`` into ``out`` (a binary file the caller opened), from its start on each retry."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Deleting(Protocol):
    """A backend that can delete an ended job (``Capabilities.deletes``)."""

    async def delete(self, job_id: str) -> None:
        """Delete the ended job ``job_id`` and its results at the provider; a running one is refused."""
        ...


def check_spec(capabilities: Capabilities, spec: CreateSpec) -> None:
    """Refuse, before anything is sent, a create this backend is documented to reject."""
    caps = capabilities
    if spec.line_format not in caps.line_formats:
        raise InvalidRequestError(f"{caps.label} takes {' or '.join(caps.line_formats)} request lines, "
                                  f"not {spec.line_format}", backend=caps.name, code="unsupported_line_format")
    # anthropic lines name no endpoint: the line format itself says where each request goes
    if caps.endpoints and spec.line_format != "anthropic" and spec.endpoint not in caps.endpoints:
        raise InvalidRequestError(f"{caps.label} runs batches for {', '.join(caps.endpoints)}; "
                                  f"{spec.endpoint or 'no endpoint'} was given", backend=caps.name,
                                  code="unsupported_endpoint")
    if not caps.windows.accepts(spec.completion_window):
        raise InvalidRequestError(f"{caps.label} accepts a completion window of {caps.windows}, "
                                  f"not {spec.completion_window!r}", backend=caps.name, code="unsupported_window")
    check_metadata(caps, spec.metadata)


def check_metadata(capabilities: Capabilities, metadata: dict[str, str]) -> None:
    """The user's metadata fits what the backend documents, next to the keys we reserve."""
    caps, limits = capabilities, capabilities.metadata
    if not metadata:
        return
    if limits is None:
        raise InvalidRequestError(f"{caps.label} keeps no job metadata; leave it out", backend=caps.name,
                                  code="metadata_unsupported")
    if reserved := set(metadata) & set(caps.reserved_metadata_keys):
        raise InvalidRequestError(f"metadata key {sorted(reserved)[0]!r} is reserved for batch-mcp's own "
                                  "submission token; rename it", backend=caps.name, code="metadata_reserved_key")
    allowed = caps.user_metadata_pairs
    if allowed is not None and len(metadata) > allowed:
        raise InvalidRequestError(f"metadata has {len(metadata)} pairs; {caps.label} allows {allowed} "
                                  "besides batch-mcp's own", backend=caps.name, code="metadata_too_many")
    for key, value in metadata.items():
        if limits.key_chars is not None and len(key) > limits.key_chars:
            raise InvalidRequestError(f"metadata key {key[:20]!r}... is longer than {limits.key_chars} characters",
                                      backend=caps.name, code="metadata_key_too_long")
        if limits.value_chars is not None and len(value) > limits.value_chars:
            raise InvalidRequestError(f"metadata value of {key!r} is longer than {limits.value_chars} characters",
                                      backend=caps.name, code="metadata_value_too_long")
