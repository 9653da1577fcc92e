"""The jobs this server recorded, a page at a time and each in brief, for the batch://jobs resource.

Pages are cut by keyset, after the (created_at, id) of the previous page's last job, so jobs submitted while
an agent pages through the list neither repeat nor push others off a page.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime

from batch_mcp.schemas.jobs import JOBS_URI, BatchView, JobsPage, JobSummary
from batch_mcp.store import JobRecord, JobStore

#: Jobs per page of the job list: 10-20 KB of JSON, depending on the length of the input paths.
JOBS_PAGE_SIZE = 50


class InvalidCursor(Exception):
    """A page cursor this server did not hand out."""


def recorded_jobs(store: JobStore, before: tuple[datetime, str] | None, limit: int) -> JobsPage:
    """Jobs and job groups, merged newest first, older than ``before`` when given."""
    entries: list[tuple[datetime, str, JobSummary]] = []
    for record in store.list_jobs(limit=limit + 1, before=before):
        entries.append((record.created_at, record.batch_id, job_summary(BatchView.from_job(record.last_seen),
                                                                        record)))
    for group in store.list_groups(limit=limit + 1, before=before):
        parts = [record.last_seen for submission in store.group_submissions(group.group_id)
                 if submission.batch_id and (record := store.get_job(f"{submission.backend}:{submission.batch_id}"))]
        view = BatchView.from_group(group.group_id, parts, group.parts)
        # listed by when this server made the group, the time its place in the list is keyed on
        view = view.model_copy(update={"parent_batch_id": group.parent_batch_id, "created_at": group.created_at})
        entries.append((group.created_at, group.group_id, JobSummary.of(view, input_path=str(group.path))))
    entries.sort(key=lambda entry: entry[:2], reverse=True)
    page = entries[:limit]
    more = len(entries) > limit
    return JobsPage(jobs=[summary for _, _, summary in page], count=len(page),
                    next=f"{JOBS_URI}?cursor={_encode_cursor(*page[-1][:2])}" if more else None)


def job_summary(view: BatchView, record: JobRecord | None) -> JobSummary:
    """A job in brief, with what this server recorded of it (its input, its group, the job it retries)."""
    if record is None:
        return JobSummary.of(view)
    return JobSummary.of(view.model_copy(update={"parent_batch_id": record.parent_batch_id}),
                         input_path=str(record.path) if record.path else None, group_id=record.group_id)


def _encode_cursor(created_at: datetime, job_id: str) -> str:
    """Where a page ended, as an opaque token safe in a URI query."""
    return base64.urlsafe_b64encode(json.dumps([created_at.isoformat(), job_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(created_at)
        if not isinstance(job_id, str) or moment.tzinfo is None:
            raise ValueError(cursor)
    except (ValueError, TypeError):  # bad base64 or JSON are ValueErrors; a wrong shape, TypeErrors
        raise InvalidCursor(f"The cursor {cursor[:60]!r} is not one this server handed out; read {JOBS_URI} for "
                            "the first page and follow its `next` link.") from None
    return moment, job_id
