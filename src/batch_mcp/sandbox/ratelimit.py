"""The API's rolling one-minute request budget and the ``ratelimit-*`` headers that report it."""

from __future__ import annotations

import math
from collections import deque

WINDOW_S = 60.0


class RateLimiter:
    """Counts accepted requests over the last minute; a request beyond the budget is refused.

    Refused requests do not count, so a client that waits ``retry-after`` seconds gets through.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._accepted: deque[float] = deque()

    def _forget_before(self, now: float) -> None:
        while self._accepted and self._accepted[0] <= now - WINDOW_S:
            self._accepted.popleft()

    def acquire(self, now: float) -> int | None:
        """Count one request; return ``None`` if allowed, else the seconds to wait before retrying."""
        self._forget_before(now)
        if len(self._accepted) >= self.limit:
            return max(1, math.ceil(self._accepted[0] + WINDOW_S - now))
        self._accepted.append(now)
        return None

    def headers(self, now: float) -> dict[str, str]:
        """Integer headers as DigitalOcean documents them; the reset is the epoch second the oldest
        counted request leaves the window."""
        self._forget_before(now)
        oldest = self._accepted[0] if self._accepted else now
        return {
            "ratelimit-limit": str(self.limit),
            "ratelimit-remaining": str(max(0, self.limit - len(self._accepted))),
            "ratelimit-reset": str(math.ceil(oldest + WINDOW_S)),
        }
