"""The OpenAI family's response shapes: Batch and FileObject bodies, error bodies, rate-limit headers.

Timestamps are unix seconds. A job that is queued on the engine shows as ``in_progress`` (OpenAI has
no queued status). ``error_file_id`` is null unless some request failed or was cut off, and
``output_file_id`` is null unless some request succeeded.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse

from batch_mcp.sandbox.ledger import Job, StoredFile
from batch_mcp.sandbox.lifecycle import Snapshot
from batch_mcp.sandbox.openai.variants import Variant
from batch_mcp.sandbox.ratelimit import Budget
from batch_mcp.sandbox.state import ApiError

#: ``(type, code, message)`` an error of this status carries unless it says otherwise.
ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "The request was invalid."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. Send 'Authorization: Bearer <key>' with the sandbox token.",
    ),
    404: ("invalid_request_error", None, "Not found: no route matches this method and path."),
    405: ("invalid_request_error", None, "Method not allowed on this path."),
    409: ("invalid_request_error", None, "The request conflicts with the batch's current state."),
    413: ("invalid_request_error", "file_too_large", "The file is larger than this service accepts."),
    422: ("invalid_request_error", None, "The request body failed validation."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Retry after the delay."),
    500: ("server_error", None, "The server had an error while processing your request."),
}
SDK_SECONDS_PER_DAY = 86400
FILE_TTL_S = 30 * SDK_SECONDS_PER_DAY  # batch files are kept 30 days unless told otherwise


def epoch(value: float | None) -> int | None:
    return None if value is None else math.floor(value)


def error_response(error: ApiError) -> JSONResponse:
    kind, code, message = ERROR_DEFAULTS.get(error.status, ERROR_DEFAULTS[500])
    body = {"error": {"message": error.message or message, "type": kind, "param": error.param,
                      "code": error.code or code}}  # fmt: skip
    headers = {"retry-after": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return JSONResponse(body, status_code=error.status, headers=headers)


def duration(seconds: float) -> str:
    """A reset delay the way OpenAI writes it: ``120ms``, ``6.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


def ratelimit_headers(budget: Budget, now: float) -> dict[str, str]:
    """OpenAI's request headers. The sandbox meters requests only, so no ``-tokens`` ones are sent."""
    return {
        "x-ratelimit-limit-requests": str(budget.limit),
        "x-ratelimit-remaining-requests": str(budget.remaining),
        "x-ratelimit-reset-requests": duration(max(0.0, budget.reset_at - now)),
    }


def file_object(record: StoredFile, variant: Variant) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": record.file_id,
        "object": "file",
        "bytes": record.size or 0,
        "created_at": epoch(record.created_at),
        "filename": record.file_name,
        "purpose": record.purpose,
        "expires_at": epoch(record.expires_at),
    }
    if variant.file_status:
        body |= {"status": "processed", "status_details": None}
    return body


def has_output(snap: Snapshot) -> bool:
    return snap.has_results and snap.done > snap.failed


def has_errors(snap: Snapshot) -> bool:
    return snap.has_results and (snap.failed > 0 or snap.unfinished > 0)


def batch_object(job: Job, snap: Snapshot, variant: Variant) -> dict[str, Any]:
    request = job.request
    check = job.check
    counts = {"total": snap.total, "completed": snap.done - snap.failed, "failed": snap.failed}
    errors = [{"param": None} | error for error in check.errors] if check else []
    expires_at = snap.expires_at if variant.expires_at_upfront or snap.status == "expired" else None
    return {
        "id": job.batch_id,
        "object": "batch",
        "endpoint": request.endpoint,
        "errors": {"object": "list", "data": errors} if errors else None,
        "input_file_id": request.input_file_id,
        "completion_window": request.completion_window,
        "status": "in_progress" if snap.status == "queued" else snap.status,
        "output_file_id": job.output_file_id if has_output(snap) else None,
        "error_file_id": job.error_file_id if has_errors(snap) else None,
        "created_at": epoch(job.created_at),
        "in_progress_at": epoch(snap.queued_at),
        "expires_at": epoch(expires_at),
        "finalizing_at": epoch(snap.finalizing_at),
        "completed_at": epoch(snap.completed_at),
        "failed_at": epoch(snap.failed_at),
        "expired_at": epoch(snap.expired_at),
        "cancelling_at": epoch(job.cancel_requested_at),
        "cancelled_at": epoch(snap.cancelled_at),
        "request_counts": counts if variant.counts_while_validating or snap.status != "validating" else None,
        "metadata": request.metadata,
        "model": check.model if check else None,
        "usage": None,
    }
