"""The two wire shapes the sandbox can speak (do-batch-api.md §9).

``openapi`` follows DigitalOcean's published spec: Batch objects with ``input_file_id`` and per-phase
timestamps, OpenAI-style list pages, and a results body with ``output_file_url``; it has no ``queued``
status, so a queued job shows as ``in_progress``. ``godo`` follows what the official Go client was
written against: Relay-style pages with opaque cursors, ``download.presigned_url`` and ``queued``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from batch_mcp.sandbox.ledger import Job
from batch_mcp.sandbox.lifecycle import Snapshot

Row = tuple[Job, Snapshot]


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ResultUrls:
    output_url: str
    error_url: str | None
    expires_at: float


class WireDialect(Protocol):
    #: Values the ``status`` list filter accepts: those this dialect can report.
    statuses: tuple[str, ...]

    def status(self, snap: Snapshot) -> str: ...
    def batch(self, job: Job, snap: Snapshot) -> dict[str, Any]: ...
    def page(self, rows: list[Row], has_more: bool) -> dict[str, Any]: ...
    def after_seq(self, after: str, jobs: Mapping[str, Job]) -> int: ...
    def results(self, job: Job, urls: ResultUrls | None) -> dict[str, Any]: ...


def _counts(snap: Snapshot) -> dict[str, int]:
    return {"total": snap.total, "completed": snap.done - snap.failed, "failed": snap.failed}


class OpenApiDialect:
    statuses: tuple[str, ...] = (
        "validating",
        "in_progress",
        "finalizing",
        "completed",
        "failed",
        "expired",
        "cancelling",
        "cancelled",
    )

    def status(self, snap: Snapshot) -> str:
        return "in_progress" if snap.status == "queued" else snap.status

    def batch(self, job: Job, snap: Snapshot) -> dict[str, Any]:
        request = job.request
        body: dict[str, Any] = {
            "batch_id": job.batch_id,
            "status": self.status(snap),
            "provider": request.provider,
            "completion_window": request.completion_window,
            "input_file_id": request.file_id,
            "output_file_id": job.output_file_id if snap.has_results else None,
            "error_file_id": job.error_file_id if snap.has_results and snap.failed else None,
            "request_counts": _counts(snap),
            "request_id": request.request_id,
            "metadata": request.metadata,
            "errors": (job.check.errors or None) if job.check else None,
            "created_at": rfc3339(job.created_at),
            "in_progress_at": rfc3339(snap.queued_at),  # queued is reported as in_progress here
            "finalizing_at": rfc3339(snap.finalizing_at),
            "completed_at": rfc3339(snap.completed_at),
            "expires_at": rfc3339(snap.expires_at),
            "cancelled_at": rfc3339(snap.cancelled_at),
            "failed_at": rfc3339(snap.failed_at),
        }
        if request.endpoint is not None:  # the spec's endpoint is not nullable: anthropic jobs omit it
            body["endpoint"] = request.endpoint
        return body

    def page(self, rows: list[Row], has_more: bool) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [self.batch(job, snap) for job, snap in rows],
            "first_id": rows[0][0].batch_id if rows else None,
            "last_id": rows[-1][0].batch_id if rows else None,
            "has_more": has_more,
        }

    def after_seq(self, after: str, jobs: Mapping[str, Job]) -> int:
        if after not in jobs:
            raise ValueError(f"after must be the batch_id of a listed batch; '{after}' is unknown")
        return jobs[after].seq

    def results(self, job: Job, urls: ResultUrls | None) -> dict[str, Any]:
        return {
            "batch_id": job.batch_id,
            "result_available": urls is not None,
            "output_file_url": urls.output_url if urls else None,
            "error_file_url": urls.error_url if urls else None,
            "expires_at": rfc3339(urls.expires_at) if urls else None,
        }


class GodoDialect:
    statuses: tuple[str, ...] = (
        "validating",
        "queued",
        "in_progress",
        "finalizing",
        "completed",
        "failed",
        "expired",
        "cancelling",
        "cancelled",
    )

    def status(self, snap: Snapshot) -> str:
        return snap.status

    def batch(self, job: Job, snap: Snapshot) -> dict[str, Any]:
        request = job.request
        return {
            "batch_id": job.batch_id,
            "provider": request.provider,
            "file_id": request.file_id,
            "completion_window": request.completion_window,
            "status": snap.status,
            "request_id": request.request_id,
            "request_counts": _counts(snap),
            "result_available": snap.has_results,
            "cancel_requested_at": rfc3339(job.cancel_requested_at),
            "created_at": rfc3339(job.created_at),
            "updated_at": rfc3339(snap.updated_at),
            "expires_at": rfc3339(snap.expires_at),
        }

    @staticmethod
    def cursor(job: Job) -> str:
        payload = json.dumps({"c": rfc3339(job.created_at), "i": job.seq}, separators=(",", ":"))
        return base64.urlsafe_b64encode(payload.encode()).decode()

    def page(self, rows: list[Row], has_more: bool) -> dict[str, Any]:
        edges = [{"cursor": self.cursor(job), "node": self.batch(job, snap)} for job, snap in rows]
        return {
            "edges": edges,
            "page_info": {"endCursor": edges[-1]["cursor"] if edges else None, "hasNextPage": has_more},
        }

    def after_seq(self, after: str, jobs: Mapping[str, Job]) -> int:
        try:
            return int(json.loads(base64.urlsafe_b64decode(after.encode()))["i"])
        except (binascii.Error, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"after must be a page_info.endCursor value; '{after}' is not one") from exc

    def results(self, job: Job, urls: ResultUrls | None) -> dict[str, Any]:
        if urls is None:
            return {"download": None, "output_file_id": None, "error_file_url": None}
        return {
            "download": {"presigned_url": urls.output_url, "expires_at": rfc3339(urls.expires_at)},
            "output_file_id": job.output_file_id,
            "error_file_url": urls.error_url,
        }


DIALECTS: dict[str, WireDialect] = {"openapi": OpenApiDialect(), "godo": GodoDialect()}
