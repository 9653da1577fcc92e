"""When a failed call is tried again, and after how long: pure rules, unit-tested without a network."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx2

#: Failures after which the request surely never reached the service, so even a create may be resent.
NEVER_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)

#: Extra wait hint a backend reads from its own rate-limit headers, in seconds.
WaitHint = Callable[[httpx2.Response], float | None]


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with up to 25 % jitter; a server's own wait wins when it names one."""

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    #: A server wait longer than this is not sat out: the caller is told when to come back instead.
    max_wait_s: float = 60.0

    def backoff_s(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)) * (1 - 0.25 * random.random())


def is_retryable_status(status: int) -> bool:
    """408, 429 and every 5xx (Anthropic's 529 ``overloaded`` included) may succeed later."""
    return status in (408, 429) or status >= 500


def server_wait_s(response: httpx2.Response) -> float | None:
    """The wait a response asks for: ``retry-after-ms``, else ``retry-after`` in seconds or as a date."""
    headers = response.headers
    try:
        if (millis := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(millis) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def retry_delay(policy: RetryPolicy, attempt: int, *, idempotent: bool, response: httpx2.Response | None = None,
                error: Exception | None = None, wait_hint: WaitHint | None = None) -> float | None:
    """Seconds to wait before sending again, or None to stop: the whole retry rule in one pure function."""
    if attempt >= policy.max_attempts:
        return None
    if error is not None:
        return policy.backoff_s(attempt) if idempotent or isinstance(error, NEVER_SENT) else None
    assert response is not None
    if response.headers.get("x-should-retry", "").lower() == "false":
        return None
    status = response.status_code
    if not is_retryable_status(status) or (not idempotent and status != 429):
        return None
    wait = server_wait_s(response)
    if wait is None and status == 429 and wait_hint is not None:
        wait = wait_hint(response)
    if wait is None:
        return policy.backoff_s(attempt)
    return None if wait > policy.max_wait_s else wait + random.uniform(0, policy.base_delay_s / 4)
