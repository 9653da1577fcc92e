"""Looking back through a backend's listing for a job whose create answer was lost.

Backends without an idempotency key find such a job by listing newest first back to when the create
was planned, each matching on what it can (our token in the metadata, or the request count). The
walk is shared; what counts as a match is the backend's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx2

from batch_mcp.backends.base import RecoveryInconclusive
from batch_mcp.domain import Job, JobPage

#: Our clock and the service's may disagree; recovery looks this much further back than planned_at.
CLOCK_SKEW = timedelta(minutes=5)
#: With the service's clock read from its ``Date`` header, what is left to allow for: servers of one
#: service whose clocks differ a little.
MEASURED_SKEW = timedelta(seconds=5)
#: Recovery gives up (and says so) rather than page through an account's whole history.
RECOVER_MAX_PAGES = 50

ListPage = Callable[[str | None], Awaitable[JobPage]]


def created_before(job: Job, since: datetime) -> bool:
    """Created before ``since``; a job without a creation time is never ruled out."""
    return job.created_at is not None and job.created_at < since


def service_offset(response: httpx2.Response) -> timedelta | None:
    """How far the service's clock is ahead of ours, at most (its ``Date`` header against our clock now).

    ``Date`` is written before the answer travels and is cut to the second, so the result is never
    more than the true offset: a bound built on it never rules out a job that was created after it.
    """
    try:
        stamped = parsedate_to_datetime(response.headers.get("date", ""))
    except (TypeError, ValueError):
        return None
    return stamped.astimezone(UTC) - datetime.now(UTC) if stamped.tzinfo else None


def planned_on_service_clock(planned_at: datetime, offset: timedelta | None) -> datetime:
    """The earliest a job planned at ``planned_at`` (our clock) can have been created, on the service's clock."""
    return planned_at - CLOCK_SKEW if offset is None else planned_at + offset - MEASURED_SKEW


async def listed_since(list_page: ListPage, since: datetime, *, backend: str,
                       max_pages: int = RECOVER_MAX_PAGES) -> AsyncIterator[Job]:
    """Every listed job not created before ``since`` (the service's time), newest first.

    ``list_page(cursor)`` fetches one page. The walk stops at the first page that reaches back past
    ``since``; when ``max_pages`` pages do not get there it raises :class:`RecoveryInconclusive`
    (without candidates: the caller adds the ones it collected).
    """
    cursor: str | None = None
    for _ in range(max_pages):
        page = await list_page(cursor)
        for job in page.jobs:
            if not created_before(job, since):
                yield job
        if not page.has_more or all(created_before(job, since) for job in page.jobs):
            return
        cursor = page.next_cursor
    raise RecoveryInconclusive(f"recover: {max_pages} pages of jobs did not reach back to "
                               f"{since.isoformat()}", backend=backend, code="recover_too_far")
