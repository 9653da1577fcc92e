"""The OpenAI Batch protocol's wire shapes, read tolerantly, and their translation into neutral jobs.

Compatible services drift from OpenAI in small ways, all absorbed here rather than in hooks:
DeepInfra's file object has no ``status``; ``request_counts`` is null while a batch validates; an
empty ``error_file_id`` means there is none; statuses may arrive in another case or spelling.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import httpx2
from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator

from batch_mcp.backends.base import TOKEN_METADATA_KEY
from batch_mcp.backends.http import parse_answer
from batch_mcp.domain import Counts, Job, JobError, JobStatus, Timestamp, is_terminal


def _absent_if_empty(value: Any) -> Any:
    return None if value == "" else value


FileId = Annotated[str | None, BeforeValidator(_absent_if_empty)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class WireFile(_Wire):
    id: str
    bytes: int | None = None
    filename: str | None = None
    purpose: str | None = None
    status: str | None = None  # deprecated at OpenAI, absent at DeepInfra
    status_details: str | None = None
    created_at: Timestamp = None
    expires_at: Timestamp = None


class WireCounts(_Wire):
    total: int = 0
    completed: int = 0
    failed: int = 0

    @field_validator("total", "completed", "failed", mode="before")
    @classmethod
    def _null_is_zero(cls, value: Any) -> Any:
        return 0 if value is None else value


class WireBatchError(_Wire):
    code: str | None = None
    message: str | None = None
    line: int | None = None
    param: str | None = None


def _unwrap_list(value: Any) -> Any:
    """OpenAI nests a batch's errors as ``{"object": "list", "data": [...]}``."""
    return value.get("data") if isinstance(value, dict) else value


BatchErrors = Annotated[list[WireBatchError] | None, BeforeValidator(_unwrap_list)]


def neutral_errors(errors: list[WireBatchError] | None) -> list[JobError]:
    return [JobError(code=e.code, message=e.message, line=e.line, param=e.param) for e in errors or ()]


class WireBatch(_Wire):
    id: str
    status: str
    endpoint: str | None = None
    input_file_id: FileId = None
    completion_window: str | None = None
    output_file_id: FileId = None
    error_file_id: FileId = None
    request_counts: WireCounts | None = None
    metadata: dict[str, Any] | None = None
    errors: BatchErrors = None
    model: str | None = None
    usage: dict[str, Any] | None = None
    created_at: Timestamp = None
    in_progress_at: Timestamp = None
    finalizing_at: Timestamp = None
    completed_at: Timestamp = None
    failed_at: Timestamp = None
    expired_at: Timestamp = None
    cancelling_at: Timestamp = None
    cancelled_at: Timestamp = None
    expires_at: Timestamp = None


M = TypeVar("M", bound=BaseModel)


class WirePage(_Wire):
    data: list[WireBatch]
    has_more: bool = False


def parse(model: type[M], response: httpx2.Response, backend: str, operation: str) -> M:
    return parse_answer(model, response, backend=backend, operation=operation, api="the OpenAI Batch API")


_STATUSES = {status.value: status for status in JobStatus} | {
    "canceled": JobStatus.CANCELLED,
    "canceling": JobStatus.CANCELLING,
}


def job_status(raw: str, *, has_result_files: bool, counts: WireCounts | None) -> JobStatus:
    """Our status for ``raw``. A ``completed`` batch whose files are not attached yet is still finalizing,
    unless it is known to have had nothing to write. Unknown statuses count as running (keep polling)."""
    status = _STATUSES.get(raw.strip().lower(), JobStatus.IN_PROGRESS)
    if status is JobStatus.COMPLETED and not has_result_files and (counts is None or counts.total > 0):
        return JobStatus.FINALIZING
    return status


def neutral_counts(wire: WireCounts | None, status: JobStatus) -> Counts | None:
    """OpenAI counts only total/completed/failed; the rest is still running, or ended with the batch."""
    if wire is None:
        return None
    rest = max(0, wire.total - wire.completed - wire.failed)
    return Counts(
        total=wire.total,
        succeeded=wire.completed,
        failed=wire.failed,
        processing=0 if is_terminal(status) else rest,
        expired=rest if status is JobStatus.EXPIRED else 0,
        cancelled=rest if status is JobStatus.CANCELLED else 0,
    )


def to_job(batch: WireBatch, backend: str) -> Job:
    has_files = batch.output_file_id is not None or batch.error_file_id is not None
    status = job_status(batch.status, has_result_files=has_files, counts=batch.request_counts)
    metadata = {str(key): str(value) for key, value in (batch.metadata or {}).items() if value is not None}
    token = metadata.pop(TOKEN_METADATA_KEY, None)
    extra = {key: value for key, value in (batch.model_extra or {}).items() if value is not None}
    extra.update({key: getattr(batch, key) for key in ("output_file_id", "error_file_id", "usage")
                  if getattr(batch, key) is not None})
    if batch.finalizing_at is not None:
        extra["finalizing_at"] = batch.finalizing_at.isoformat()
    return Job(
        backend=backend,
        id=batch.id,
        status=status,
        raw_status=batch.status,
        counts=neutral_counts(batch.request_counts, status),
        line_format="openai",
        endpoint=batch.endpoint,
        model=batch.model,
        input_ref=batch.input_file_id,
        completion_window=batch.completion_window,
        metadata=metadata,
        client_token=token,
        created_at=batch.created_at,
        started_at=batch.in_progress_at,
        ended_at=batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at,
        expires_at=batch.expires_at,
        cancel_requested_at=batch.cancelling_at,
        results_ready=has_files and is_terminal(status),
        errors=neutral_errors(batch.errors),
        extra=extra,
    )


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(text: str) -> float | None:
    """``6m0s``, ``1.5s``, ``120ms`` as seconds (the form of OpenAI's ``x-ratelimit-reset-*``)."""
    text = text.strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def rate_limit_reset_s(response: httpx2.Response) -> float | None:
    """When an OpenAI-style limit resets: the later of the request and token budgets it names."""
    waits = [duration_s(value) for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
             if (value := response.headers.get(name))]
    known = [wait for wait in waits if wait is not None]
    return max(known) if known else None
