"""Anthropic Message Batches' wire shapes, read tolerantly, and their translation into neutral jobs.

The API has three processing statuses and five counts. ``ended`` says only that processing stopped;
why is read from the rest of the batch: a cancel was initiated (``cancelled``), requests ran out of
time (``expired``: only the 24-hour deadline expires requests), or everything ran (``completed``).
A batch never maps to ``failed``: bad requests come back as ``errored`` results, not as a failed batch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx2
from pydantic import BaseModel, ConfigDict, field_validator

from batch_mcp.backends.http import parse_answer
from batch_mcp.domain import Counts, Job, JobStatus, Timestamp, is_terminal, parse_timestamp

LINE_FORMAT = "anthropic"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class WireCounts(_Wire):
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @field_validator("*", mode="before")
    @classmethod
    def _null_is_zero(cls, value: Any) -> Any:
        return 0 if value is None else value


class WireBatch(_Wire):
    id: str
    type: str | None = None
    processing_status: str
    request_counts: WireCounts | None = None
    results_url: str | None = None
    created_at: Timestamp = None
    expires_at: Timestamp = None
    ended_at: Timestamp = None
    cancel_initiated_at: Timestamp = None
    archived_at: Timestamp = None


class WirePage(_Wire):
    data: list[WireBatch]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


class WireDeleted(_Wire):
    id: str
    type: str | None = None


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], response: httpx2.Response, backend: str, operation: str) -> M:
    return parse_answer(model, response, backend=backend, operation=operation,
                        api="the Anthropic Message Batches API")


_RUNNING = {"in_progress": JobStatus.IN_PROGRESS, "canceling": JobStatus.CANCELLING}


def job_status(batch: WireBatch) -> JobStatus:
    """Our status for the batch; an unknown processing status counts as running (keep polling)."""
    raw = batch.processing_status.strip().lower()
    if raw != "ended":
        return _RUNNING.get(raw, JobStatus.IN_PROGRESS)
    if batch.cancel_initiated_at is not None:
        return JobStatus.CANCELLED
    if batch.request_counts is not None and batch.request_counts.expired > 0:
        return JobStatus.EXPIRED
    return JobStatus.COMPLETED


def neutral_counts(wire: WireCounts | None) -> Counts | None:
    """The five counts as they are; their sum is the number of requests in the batch."""
    if wire is None:
        return None
    total = wire.processing + wire.succeeded + wire.errored + wire.canceled + wire.expired
    return Counts(total=total, succeeded=wire.succeeded, failed=wire.errored, cancelled=wire.canceled,
                  expired=wire.expired, processing=wire.processing)


def to_job(batch: WireBatch, backend: str) -> Job:
    status = job_status(batch)
    extra = {key: value for key, value in (batch.model_extra or {}).items() if value is not None}
    if batch.results_url:
        extra["results_url"] = batch.results_url
    if batch.archived_at is not None:
        extra["archived_at"] = batch.archived_at.isoformat()
    return Job(
        backend=backend,
        id=batch.id,
        status=status,
        raw_status=batch.processing_status,
        counts=neutral_counts(batch.request_counts),
        line_format=LINE_FORMAT,
        completion_window="24h",
        created_at=batch.created_at,
        ended_at=batch.ended_at,
        expires_at=batch.expires_at,
        cancel_requested_at=batch.cancel_initiated_at,
        results_ready=is_terminal(status) and bool(batch.results_url) and batch.archived_at is None,
        extra=extra,
    )


_BUDGETS = ("requests", "tokens", "input-tokens", "output-tokens")


def rate_limit_reset_s(response: httpx2.Response) -> float | None:
    """Seconds until the spent budget resets (Anthropic writes resets as RFC 3339 times).

    The budgets whose ``remaining`` is 0 decide; when none says so, the latest reset does.
    """
    now, headers = datetime.now(UTC), response.headers
    waits = {budget: (moment - now).total_seconds() for budget in _BUDGETS
             if (moment := parse_timestamp(headers.get(f"anthropic-ratelimit-{budget}-reset"))) is not None}
    spent = [wait for budget, wait in waits.items() if headers.get(f"anthropic-ratelimit-{budget}-remaining") == "0"]
    chosen = spent or list(waits.values())
    return max(0.0, *chosen) if chosen else None
