"""The one place that decides whether and when a failed call is tried again."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx2

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter; a server's ``retry-after`` wins when it is given.

    Only idempotent calls are retried, and create-batch counts as one because it always carries
    an idempotency ``request_id``: a retry can never produce a second job.
    """

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    #: A ``retry-after`` longer than this is not waited out: the caller is told when to come back.
    max_wait_s: float = 60.0

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to sleep before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after_s is not None:
            return max(0.0, retry_after_s) + random.uniform(0, self.base_delay_s / 4)
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return random.uniform(cap / 2, cap)

    def should_retry(self, attempt: int, retry_after_s: float | None = None) -> bool:
        if attempt >= self.max_attempts:
            return False
        return retry_after_s is None or retry_after_s <= self.max_wait_s


def retry_after_seconds(response: httpx2.Response) -> float | None:
    """``retry-after`` in seconds, else the time until ``ratelimit-reset`` (epoch seconds) on a 429."""
    value = response.headers.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    if response.status_code == 429 and (reset := response.headers.get("ratelimit-reset")):
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            return None
    return None
