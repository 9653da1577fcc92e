"""A job's status, counts and timestamps as a pure function of the clock.

No background task drives a job: its state follows from its creation time, its pace (fixed when it was
created), a possible cancel time and the current wall-clock time, evaluated on each access. So a job
"runs" while no process is alive, and whichever process looks next sees it advanced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from batch_mcp.sandbox.ledger import Job

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
#: Terminal statuses whose partial or full results can be downloaded.
RESULT_STATUSES = frozenset({"completed", "cancelled", "expired"})


@dataclass(frozen=True)
class Snapshot:
    """A job as seen at one instant. ``status`` may be ``queued``; dialects map it as they must."""

    status: str
    total: int
    done: int  # requests finished (succeeded or failed); frozen once the job stops
    failed: int
    updated_at: float
    expires_at: float  # end of the completion window
    queued_at: float | None = None  # validation passed: handed to the provider
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    cancelled_at: float | None = None
    expired_at: float | None = None

    @property
    def has_results(self) -> bool:
        return self.status in RESULT_STATUSES

    @property
    def unfinished(self) -> int:
        """Requests that will never run: cut off by a cancel or the deadline."""
        return self.total - self.done if self.status in RESULT_STATUSES else 0


def _validated_at(job: Job) -> float:
    return job.created_at + job.pace.validating_s


def _deadline(job: Job) -> float:
    return job.created_at + job.window_s


def needs_check(job: Job, now: float) -> bool:
    """Whether the job has left ``validating`` (before expiring) and so needs its input checked."""
    return (
        job.check is None
        and now >= _validated_at(job)
        and _validated_at(job) < _deadline(job)
        and (job.cancel_requested_at is None or job.cancel_requested_at >= _validated_at(job))
    )


def snapshot_at(job: Job, now: float) -> Snapshot:
    """The job's state at ``now``. Requires ``job.check`` once ``needs_check`` would be true."""
    pace = job.pace
    created, validated, deadline = job.created_at, _validated_at(job), _deadline(job)
    cancel = job.cancel_requested_at
    if cancel is not None and cancel < min(validated, deadline):  # cancelled before it was ever checked
        ended = cancel + pace.cancelling_s
        if now >= ended:
            return Snapshot("cancelled", 0, 0, 0, updated_at=ended, expires_at=deadline, cancelled_at=ended)
        return Snapshot("cancelling", 0, 0, 0, updated_at=cancel, expires_at=deadline)
    if now < min(validated, deadline):
        return Snapshot("validating", 0, 0, 0, updated_at=created, expires_at=deadline)
    if deadline <= validated:
        return Snapshot("expired", 0, 0, 0, updated_at=deadline, expires_at=deadline, expired_at=deadline)
    check = job.check
    assert check is not None, "check the input before taking a snapshot past validation"
    if check.errors:
        return Snapshot("failed", 0, 0, 0, updated_at=validated, expires_at=deadline, failed_at=validated)

    started = validated + pace.queued_s
    drained = started + check.total / pace.requests_per_s
    finished = drained + pace.finalizing_s
    if cancel is not None:
        stop, end_status, ended = cancel, "cancelled", cancel + pace.cancelling_s
    elif deadline < finished:
        stop, end_status, ended = deadline, "expired", deadline
    else:
        stop, end_status, ended = finished, "completed", finished

    cut = min(now, stop)
    done = (
        check.total
        if cut >= drained
        else min(check.total, math.floor(max(0.0, cut - started) * pace.requests_per_s))
    )
    events = {  # Snapshot fields; the end event is named after the final status (completed_at, ...)
        "queued_at": validated,
        "in_progress_at": started if started <= cut else None,
        "finalizing_at": drained if drained <= cut else None,
        f"{end_status}_at": ended if now >= ended else None,
    }
    if now >= ended:
        status = end_status
    elif cancel is not None:
        status = "cancelling"
    else:
        status = "finalizing" if now >= drained else "in_progress" if now >= started else "queued"
    happened = [t for t in (*events.values(), cancel) if t is not None]
    return Snapshot(
        status,
        check.total,
        done,
        check.failures[:done].count(1),
        updated_at=max(happened),
        expires_at=deadline,
        **events,
    )
