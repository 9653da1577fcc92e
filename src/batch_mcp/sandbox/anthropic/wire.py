"""Anthropic's side of the wire: how it authenticates, its error bodies, rate-limit headers and MessageBatch.

Timestamps are RFC 3339. The engine's phases collapse onto Anthropic's three processing statuses, and
its counts onto five that keep every request ``processing`` until the whole batch has ended (as the
API documents). ``results_url`` is absolute, on the host the client called: an SDK follows it as
given, so it must never name the real API.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from batch_mcp.sandbox.dialects import rfc3339
from batch_mcp.sandbox.pipeline import REQUEST_ID, bearer_token, is_token
from batch_mcp.sandbox.ratelimit import Budget
from batch_mcp.sandbox.state import TERMINAL_STATUSES, ApiError, Job, Snapshot

#: The documented version, and the one the 2.x SDKs send.
API_VERSIONS = ("2023-06-01", "2026-10-21")
BATCHES = "/v1/messages/batches"

ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "The request is invalid."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found: no route matches this method and path."),
    405: ("invalid_request_error", "Method not allowed on this path."),
    409: ("conflict_error", "The request conflicts with the batch's current state."),
    413: ("request_too_large", "The request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit. Retry after the delay."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def authenticate(request: Request, token: str) -> None:
    """The key as ``x-api-key`` (the docs, SDK 1.x) or as a bearer token (SDK 2.x); a known ``anthropic-version``."""
    if not is_token(request.headers.get("x-api-key") or bearer_token(request), token):
        raise ApiError(401)
    version = request.headers.get("anthropic-version")
    if version is None:
        raise ApiError(400, "anthropic-version: header is required")
    if version not in API_VERSIONS:
        raise ApiError(400, f"anthropic-version: '{version}' is not a valid version; use {' or '.join(API_VERSIONS)}")


def error_response(error: ApiError) -> JSONResponse:
    kind, message = ERRORS.get(error.status, ERRORS[500])
    body = {"type": "error", "error": {"type": kind, "message": error.message or message},
            "request_id": REQUEST_ID.get() or None}  # fmt: skip
    headers = {"retry-after": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return JSONResponse(body, status_code=error.status, headers=headers)


def ratelimit_headers(budget: Budget, now: float) -> dict[str, str]:
    """Anthropic's request budget; its reset is a moment (RFC 3339), not a delay. Tokens are not metered here."""
    return {
        "anthropic-ratelimit-requests-limit": str(budget.limit),
        "anthropic-ratelimit-requests-remaining": str(budget.remaining),
        "anthropic-ratelimit-requests-reset": rfc3339(max(budget.reset_at, now)) or "",
    }


def ended(snap: Snapshot) -> bool:
    return snap.status in TERMINAL_STATUSES


def processing_status(snap: Snapshot) -> str:
    if ended(snap):
        return "ended"
    return "canceling" if snap.status == "cancelling" else "in_progress"


def request_counts(job: Job, snap: Snapshot) -> dict[str, int]:
    total = job.check.total if job.check else snap.total
    if not ended(snap):
        return {"processing": total, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    unfinished = total - snap.done
    return {
        "processing": 0,
        "succeeded": snap.done - snap.failed,
        "errored": snap.failed,
        "canceled": unfinished if snap.status == "cancelled" else 0,
        "expired": unfinished if snap.status == "expired" else 0,
    }


def results_url(origin: str, batch_id: str) -> str:
    return f"{origin}{BATCHES}/{batch_id}/results"


def batch_object(job: Job, snap: Snapshot, origin: str) -> dict[str, Any]:
    end = snap.completed_at or snap.cancelled_at or snap.expired_at or snap.failed_at
    return {
        "id": job.batch_id,
        "type": "message_batch",
        "processing_status": processing_status(snap),
        "request_counts": request_counts(job, snap),
        "created_at": rfc3339(job.created_at),
        "expires_at": rfc3339(snap.expires_at),
        "ended_at": rfc3339(end) if ended(snap) else None,
        "cancel_initiated_at": rfc3339(job.cancel_requested_at),
        "archived_at": None,
        "results_url": results_url(origin, job.batch_id) if ended(snap) else None,
    }
