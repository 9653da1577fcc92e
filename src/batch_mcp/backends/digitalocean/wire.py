"""DigitalOcean's wire shapes, read in both dialects, and their translation into neutral jobs.

DigitalOcean's published spec (``openapi``) and the shapes its Go client was written against
(``godo``) disagree on field names, pagination and result links (do-batch-api.md §9). Parsing
accepts both, so nothing above this module knows which one answered. Unknown fields are kept in
``Job.extra``; unknown statuses count as running (keep polling), and the status as sent stays in
``Job.raw_status``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from batch_mcp.backends.openai_compat.wire import BatchErrors, FileId, WireCounts, neutral_counts, neutral_errors
from batch_mcp.domain import Job, JobStatus, Timestamp, is_terminal


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class WireIntent(_Wire):
    """Answer of ``POST /v1/batches/files``: where to PUT the bytes, and until when."""

    file_id: str
    upload_url: str
    expires_at: Timestamp = None


class WireBatch(_Wire):
    """One batch job in either dialect (``id`` for ``batch_id``, ``file_id`` for ``input_file_id``)."""

    batch_id: str
    status: str
    provider: str | None = None
    endpoint: str | None = None
    model: str | None = None
    completion_window: str | None = None
    input_file_id: FileId = None
    output_file_id: FileId = None
    error_file_id: FileId = None
    request_counts: WireCounts | None = None
    request_id: str | None = None
    metadata: dict[str, Any] | None = None
    errors: BatchErrors = None
    result_available: bool | None = None
    usage: dict[str, Any] | None = None
    created_at: Timestamp = None
    in_progress_at: Timestamp = None
    finalizing_at: Timestamp = None
    completed_at: Timestamp = None
    failed_at: Timestamp = None
    cancelled_at: Timestamp = None
    expired_at: Timestamp = None
    cancel_requested_at: Timestamp = None
    updated_at: Timestamp = None
    expires_at: Timestamp = None

    @model_validator(mode="before")
    @classmethod
    def _accept_both_dialects(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("batch_id") is None and data.get("id") is not None:
            data["batch_id"] = data.pop("id")
        if data.get("input_file_id") is None and data.get("file_id") is not None:
            data["input_file_id"] = data.pop("file_id")
        return data


class WirePage(BaseModel):
    """One page of ``GET /v1/batches``, reduced to its jobs and the ``after`` for the next page."""

    data: list[WireBatch]
    next_cursor: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_both_dialects(cls, body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        if "edges" in body:  # godo: Relay-style, an opaque endCursor
            info = body.get("page_info") or body.get("pageInfo") or {}
            more = info.get("hasNextPage") or info.get("has_next_page")
            cursor = info.get("endCursor") or info.get("end_cursor")
            return {"data": [edge.get("node") if isinstance(edge, dict) else edge for edge in body["edges"] or []],
                    "next_cursor": cursor if more else None}
        items = body.get("data") or []
        last = body.get("last_id") or (items[-1].get("batch_id") or items[-1].get("id")
                                       if items and isinstance(items[-1], dict) else None)
        return {"data": items, "next_cursor": last if body.get("has_more") else None}


class WireResults(BaseModel):
    """Presigned links to a job's output and error files (the spec's, godo's and the how-to's names)."""

    output_url: str | None = None
    error_url: str | None = None
    expires_at: Timestamp = None
    result_available: bool = False

    @model_validator(mode="before")
    @classmethod
    def _accept_every_shape(cls, body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        download = body.get("download") if isinstance(body.get("download"), dict) else {}
        output = body.get("output_file_url") or download.get("presigned_url") or body.get("output_url")
        errors = body.get("error_file_url") or body.get("error_url")
        available = body.get("result_available")
        return {"output_url": output or None, "error_url": errors or None,
                "expires_at": body.get("expires_at") or download.get("expires_at"),
                "result_available": bool(output or errors) if available is None else bool(available)}


_STATUSES = {status.value: status for status in JobStatus} | {
    "canceled": JobStatus.CANCELLED,
    "canceling": JobStatus.CANCELLING,
    "awaiting_processing": JobStatus.QUEUED,  # the control panel's word
}


def job_status(raw: str) -> JobStatus:
    """Our status for DigitalOcean's; one we do not know counts as still running."""
    return _STATUSES.get(raw.strip().lower(), JobStatus.IN_PROGRESS)


def _results_ready(batch: WireBatch, status: JobStatus) -> bool:
    """godo says so outright; the spec's shape shows it by the result files being attached."""
    if not is_terminal(status) or status is JobStatus.FAILED:
        return False
    if batch.result_available is not None:
        return batch.result_available
    return batch.output_file_id is not None or batch.error_file_id is not None


_NAMED = frozenset(WireBatch.model_fields) - {"output_file_id", "error_file_id", "result_available", "usage",
                                               "finalizing_at", "updated_at"}


def to_job(batch: WireBatch, backend: str) -> Job:
    """The neutral job. DigitalOcean's ``request_id`` is our submission token, so it keeps no metadata
    key of ours; godo reports no end time, so an ended job's ``updated_at`` stands in for it."""
    status = job_status(batch.status)
    ended = batch.completed_at or batch.failed_at or batch.cancelled_at or batch.expired_at
    if ended is None and is_terminal(status):
        ended = batch.updated_at
    extra = {key: value for key, value in (batch.model_extra or {}).items() if value is not None}
    extra.update({key: value for key, value in batch.model_dump(exclude=set(_NAMED)).items() if value is not None})
    for key in ("finalizing_at", "updated_at"):
        if key in extra:
            extra[key] = extra[key].isoformat()
    return Job(
        backend=backend,
        id=batch.batch_id,
        status=status,
        raw_status=batch.status,
        counts=neutral_counts(batch.request_counts, status),
        line_format=batch.provider,
        endpoint=batch.endpoint,
        model=batch.model,
        input_ref=batch.input_file_id,
        completion_window=batch.completion_window,
        metadata={str(key): str(value) for key, value in (batch.metadata or {}).items() if value is not None},
        client_token=batch.request_id,
        created_at=batch.created_at,
        started_at=batch.in_progress_at,
        ended_at=ended,
        expires_at=batch.expires_at,
        cancel_requested_at=batch.cancel_requested_at,
        results_ready=_results_ready(batch, status),
        errors=neutral_errors(batch.errors),
        extra=extra,
    )
