"""Waiting for a job: poll with backoff until it finishes, or until a deadline that nothing overruns.

Clients abandon a tool call that outlasts their request timeout, and we cannot know theirs (openai-agents
gives up after 5 s by default, llama-index after 30 s), so a wait checks at once and, unless the client
asked for progress, returns inside the shortest common timeout: "still running, call again" is a normal,
cheap answer. A client that asked for progress is sent some every few seconds (clients that extend their
timeout on progress keep waiting) and is held longer. The deadline is hard: a poll in flight (with the
request loop's own retries and their pauses) is cut off when it passes. A poll that fails transiently
inside the window is simply tried again; at the deadline the answer is the last status known.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from batch_mcp.backends.base import BackendError, ConnectionFailed, RateLimitedError, ServiceError, TimedOut
from batch_mcp.domain import Progress
from batch_mcp.schemas.jobs import BatchView, WaitResult

log = logging.getLogger(__name__)

MAX_POLL_INTERVAL_S = 60.0
#: A wait's length when the agent names none: well inside a 5 s client timeout (2 s are left for the call's
#: own way there and back, which a loaded machine can stretch past 1 s), or longer for a client that asked for
#: progress (which it then gets every ``HEARTBEAT_S``, changed or not).
QUICK_WAIT_S = 3.0
WATCHED_WAIT_S = 50.0
HEARTBEAT_S = 2.5
#: Poll failures a wait rides out until its deadline: the next poll may well get through.
TRANSIENT = (ServiceError, RateLimitedError, ConnectionFailed)


async def wait_for(job_id: str, poll: Callable[[], Awaitable[BatchView]],
                   recorded: Callable[[], BatchView | None], *, timeout_s: float, interval_s: float,
                   on_progress: Progress | None = None) -> WaitResult:
    """Poll ``job_id`` until a terminal status or ``timeout_s``; ``recorded`` is its last stored status.

    With ``on_progress``, progress goes out after every poll and at least every ``HEARTBEAT_S`` between them."""
    start = anyio.current_time()
    deadline = start + timeout_s
    view: BatchView | None = None
    problem: BackendError | None = None  # of the last poll that ended, cleared by an answer
    interval, last_done, poll_took = interval_s, -1, 0.0
    while True:
        polled_at, fresh = anyio.current_time(), None
        with anyio.move_on_after(deadline - polled_at):
            try:
                fresh, problem = await poll(), None
            except TRANSIENT as exc:
                problem = exc
                log.info("wait for %s: a poll failed, polling on until the deadline: %s", job_id, exc)
        now = anyio.current_time()
        if fresh is not None:
            view, poll_took = fresh, now - polled_at
            done = view.settled
            if on_progress:  # every poll, even unchanged: clients that extend timeouts on progress keep waiting
                await on_progress(done, view.total)
            if view.terminal:
                return WaitResult(batch=view, timed_out=False, waited_s=round(now - start, 2),
                                  next_step=view.next_step)
        if fresh is not None and done != last_done:
            last_done = done
        else:  # nothing changed, or no answer: poll less often
            interval = min(interval * 1.5, MAX_POLL_INTERVAL_S)
        # after an answer, poll early enough for the next one to arrive by the deadline too
        lead = poll_took if fresh is not None else 0.0
        if now + lead >= deadline:
            cut = TimedOut(f"get_batch: no answer for {job_id} before the deadline", code="deadline")
            return _timed_out(view or recorded(), None if fresh else problem or cut, now - start)
        come_back = getattr(problem, "retry_after_s", None) or 0.0
        pause = min(max(interval, come_back), deadline - now - lead)
        await _pause(pause, on_progress, view)


async def _pause(seconds: float, on_progress: Progress | None, view: BatchView | None) -> None:
    """Sleep between polls; a client that asked for progress hears from us every ``HEARTBEAT_S`` meanwhile."""
    if on_progress is None or view is None:
        await anyio.sleep(seconds)
        return
    end = anyio.current_time() + seconds
    while (left := end - anyio.current_time()) > 0:
        await anyio.sleep(min(HEARTBEAT_S, left))
        if anyio.current_time() < end:
            await on_progress(view.settled, view.total)


def _timed_out(view: BatchView | None, unanswered: BackendError | None, waited: float) -> WaitResult:
    """The normal answer at the deadline: the last status known, even if no poll got through."""
    if view is None:  # nothing at all is known about the job: the failure is all there is to say
        raise unanswered or AssertionError("a wait that learnt nothing always has a failure")
    if view.terminal:  # recorded before this wait, and final: no poll could have changed it
        return WaitResult(batch=view, timed_out=False, waited_s=round(waited, 2), next_step=view.next_step)
    stale = f" That is the last status seen: the last poll failed. {unanswered}" if unanswered else ""
    done = f", {view.settled:,} of {view.total:,} requests done" if view.total else ""
    return WaitResult(batch=view, timed_out=True, waited_s=round(waited, 2),
                      next_step=f"Still {view.status}{done} after {waited:.0f} s; the job keeps running. Call "
                                f"wait_for_batch again to keep waiting.{stale}")
