"""A rolling one-minute request budget. Each emulated API reports it in its own headers."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass(frozen=True)
class Budget:
    """The budget as seen at one instant: what every dialect's rate-limit headers are rendered from."""

    limit: int
    remaining: int
    #: Epoch seconds when the oldest counted request leaves the window (a slot frees up).
    reset_at: float


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

    def budget(self, now: float) -> Budget:
        self._forget_before(now)
        oldest = self._accepted[0] if self._accepted else now
        return Budget(self.limit, max(0, self.limit - len(self._accepted)), oldest + WINDOW_S)


def digitalocean_headers(budget: Budget, now: float) -> dict[str, str]:
    """Integer headers as DigitalOcean documents them; the reset is an epoch second."""
    return {
        "ratelimit-limit": str(budget.limit),
        "ratelimit-remaining": str(budget.remaining),
        "ratelimit-reset": str(math.ceil(budget.reset_at)),
    }
