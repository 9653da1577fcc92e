"""What DigitalOcean's answers say beyond the shared loop's defaults: when its rate limit resets, and
which statuses mean something of their own (412: results not ready yet).

Its error bodies, ``{"id", "message", "request_id"}``, are among the shapes ``http.error_details``
reads; ``request_id`` there is a support id, not our idempotency key.
"""

from __future__ import annotations

import time

import httpx2

from batch_mcp.backends.base import BackendError, ResultsNotReady

#: Statuses whose meaning is DigitalOcean's own.
STATUS_ERRORS: dict[int, type[BackendError]] = {412: ResultsNotReady}


def rate_limit_reset_s(response: httpx2.Response, now: float | None = None) -> float | None:
    """Seconds until ``ratelimit-reset`` (Unix epoch seconds), the wait a 429 without ``retry-after`` implies."""
    value = response.headers.get("ratelimit-reset")
    if value is None:
        return None
    try:
        reset = float(value)
    except ValueError:
        return None
    return max(0.0, reset - (time.time() if now is None else now))
