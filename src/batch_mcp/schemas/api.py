"""Data models of the batch API, normalised from every wire shape the service is known to send.

DigitalOcean's documented contract (OpenAPI) and the shapes its Go client was written against (godo)
disagree on field names, pagination and result links. Parsing accepts both and yields one model, so
nothing above the client ever sees which dialect answered. Unknown fields are kept (``extra="allow"``)
and unknown statuses are treated as non-terminal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

Provider = Literal["openai", "anthropic"]
OpenAIEndpoint = Literal["/v1/chat/completions", "/v1/responses"]
OPENAI_ENDPOINTS: tuple[str, ...] = ("/v1/chat/completions", "/v1/responses")


class BatchStatus(StrEnum):
    """Statuses seen in any source. The API may send others; those are kept as plain strings."""

    VALIDATING = "validating"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
#: Terminal statuses whose partial or full results can be downloaded.
RESULT_STATUSES = frozenset({"completed", "cancelled", "expired"})


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def parse_timestamp(value: Any) -> datetime | None:
    """Parse RFC 3339 leniently: nanosecond fractions, a trailing Z, epoch numbers, empty strings."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    text = str(value).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "." in text:  # trim fractions beyond microseconds, which fromisoformat refuses
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}" if digits else head + rest
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


Timestamp = Annotated[datetime | None, BeforeValidator(parse_timestamp)]


class RequestCounts(_Tolerant):
    total: int = 0
    completed: int = 0
    failed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_zero(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: (0 if v is None and k in ("total", "completed", "failed") else v) for k, v in data.items()}
        return data


class BatchErrorItem(_Tolerant):
    code: str | None = None
    message: str | None = None
    line: int | None = None


class FileIntent(_Tolerant):
    """Answer of ``POST /v1/batches/files``: where to upload, and until when."""

    file_id: str
    upload_url: str
    expires_at: Timestamp = None


class Batch(_Tolerant):
    """One batch job, whatever dialect described it."""

    batch_id: str
    status: str
    provider: str | None = None
    endpoint: str | None = None
    completion_window: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    request_id: str | None = None
    metadata: dict[str, str] | None = None
    errors: list[BatchErrorItem] | None = None
    result_available: bool | None = None
    created_at: Timestamp = None
    in_progress_at: Timestamp = None
    finalizing_at: Timestamp = None
    completed_at: Timestamp = None
    expires_at: Timestamp = None
    cancelled_at: Timestamp = None
    cancel_requested_at: Timestamp = None
    failed_at: Timestamp = None
    updated_at: Timestamp = None

    @model_validator(mode="before")
    @classmethod
    def _accept_every_dialect(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "batch_id" not in data and "id" in data:
            data["batch_id"] = data.pop("id")
        if data.get("input_file_id") is None and data.get("file_id") is not None:
            data["input_file_id"] = data.pop("file_id")
        if data.get("request_counts") is None:
            data.pop("request_counts", None)
        if isinstance(data.get("errors"), dict):  # OpenAI nests them as {"object": "list", "data": [...]}
            data["errors"] = data["errors"].get("data")
        return data

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.status)


class BatchPage(BaseModel):
    """One page of ``GET /v1/batches`` in either pagination style, reduced to items plus the next cursor."""

    data: list[Batch]
    next_cursor: str | None = None
    has_more: bool = False

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> BatchPage:
        if "edges" in body:  # godo's Relay-style page
            edges = body.get("edges") or []
            info = body.get("page_info") or body.get("pageInfo") or {}
            has_more = bool(info.get("hasNextPage") or info.get("has_next_page"))
            cursor = info.get("endCursor") or info.get("end_cursor")
            return cls(data=[Batch.model_validate(e["node"]) for e in edges], next_cursor=cursor, has_more=has_more)
        items = [Batch.model_validate(b) for b in body.get("data") or []]
        has_more = bool(body.get("has_more"))
        last = body.get("last_id") or (items[-1].batch_id if items else None)
        return cls(data=items, next_cursor=last if has_more else None, has_more=has_more and last is not None)


class ResultLinks(BaseModel):
    """Presigned download links of a batch's output and error files."""

    batch_id: str | None = None
    result_available: bool
    output_file_url: str | None = None
    error_file_url: str | None = None
    output_file_id: str | None = None
    expires_at: Timestamp = None

    @classmethod
    def from_wire(cls, body: dict[str, Any], batch_id: str | None = None) -> ResultLinks:
        download = body.get("download") if isinstance(body.get("download"), dict) else {}
        output = body.get("output_file_url") or download.get("presigned_url") or body.get("output_url")
        errors = body.get("error_file_url") or body.get("error_url")
        available = body.get("result_available")
        if available is None:
            available = bool(output or errors)
        return cls(
            batch_id=body.get("batch_id") or batch_id,
            result_available=bool(available),
            output_file_url=output,
            error_file_url=errors,
            output_file_id=body.get("output_file_id"),
            expires_at=body.get("expires_at") or download.get("expires_at"),
        )


class ApiErrorBody(_Tolerant):
    """The API's error body: ``{id, message, request_id?}``."""

    id: str = "unknown_error"
    message: str = ""
    request_id: str | None = None


class CreateBatchRequest(BaseModel):
    """Body of ``POST /v1/batches``. ``endpoint`` is sent only for openai, as the contract demands."""

    file_id: str
    provider: Provider
    completion_window: Literal["24h"] = "24h"
    request_id: str
    endpoint: OpenAIEndpoint | None = None
    metadata: dict[str, str] | None = None

    def to_wire(self) -> dict[str, Any]:
        body = self.model_dump(exclude_none=True)
        if self.provider == "anthropic":
            body.pop("endpoint", None)
        return body
