"""What the store holds, as pydantic records, and how they are spelled in SQLite rows and text columns."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field

from batch_mcp.backends.digitalocean.wire import WireBatch, to_job
from batch_mcp.domain import Counts, Job


def _now() -> datetime:
    return datetime.now(UTC)


def _time_to_text(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with fixed precision, so text order is time order. Naive times are taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _canonical_json(value: Any) -> str:
    """One spelling per value (sorted keys, no spaces), so equal data gives equal text and hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _metadata_to_text(metadata: dict[str, str] | None) -> str | None:
    return None if metadata is None else _canonical_json(metadata)


def _text_to_metadata(text: str | None) -> dict[str, str] | None:
    return None if text is None else json.loads(text)


def _path_to_text(path: Path | None) -> str | None:
    return None if path is None else str(path)


#: The columns a submission is written and read with (its account aside, which the scope decides).
_SUBMISSION_COLUMNS = (
    "request_id, backend, fingerprint, path, file_id, provider, endpoint, completion_window, metadata, batch_id, "
    "group_id, parent_batch_id, created_at, conflicts"
)


def _older(created_at: str, key: str) -> str:
    """Rows after a page's last one in (created_at DESC, key DESC) order; every row when there is none."""
    return f"(:before_at IS NULL OR {created_at} < :before_at OR ({created_at} = :before_at AND {key} < :before_id))"


def _older_than(before: tuple[datetime, str] | None) -> dict[str, str | None]:
    return {"before_at": _time_to_text(before[0]) if before else None, "before_id": before[1] if before else None}


#: The backend every row stored before there were several belongs to.
LEGACY_BACKEND = "digitalocean"
_LEGACY_WINDOW = "24h"


def submission_fingerprint(
    sha256: str, provider: str, endpoint: str | None, metadata: dict[str, str] | None, *,
    backend: str = LEGACY_BACKEND, completion_window: str = _LEGACY_WINDOW,
) -> str:
    """Identity of "this file sent this way": equal fingerprints mean a resubmission of the same job.

    Absent and empty metadata are the same job; key order in metadata does not matter. The same file
    sent to another backend, or with another window, is another job. DigitalOcean with 24 h keeps the
    identity it had before backends existed, so a stored submission is still found after the upgrade.
    """
    identity: list[Any] = [sha256, provider, endpoint, metadata or {}]
    if (backend, completion_window) != (LEGACY_BACKEND, _LEGACY_WINDOW):
        identity += [backend, completion_window]
    return hashlib.sha256(_canonical_json(identity).encode()).hexdigest()


class UploadRecord(BaseModel):
    """One input file sent to the service, kept so that the same bytes are not uploaded twice."""

    backend: str = LEGACY_BACKEND
    file_id: str
    path: Path
    sha256: str
    size_bytes: int
    line_count: int
    intent_expires_at: AwareDatetime | None = None
    created_at: AwareDatetime = Field(default_factory=_now)
    completed_at: AwareDatetime | None = None


class Submission(BaseModel):
    """A create call, stored before it is made; ``batch_id`` stays None until the API has answered."""

    request_id: str = Field(description="Our submission token: DO's idempotency key, a metadata tag elsewhere.")
    backend: str = LEGACY_BACKEND
    fingerprint: str
    path: Path | None
    file_id: str
    provider: str
    endpoint: str | None = None
    completion_window: str = _LEGACY_WINDOW
    metadata: dict[str, str] | None = None
    batch_id: str | None = None
    group_id: str | None = None
    parent_batch_id: str | None = None
    created_at: AwareDatetime
    conflicts: int = Field(default=0, description="Create calls answered 409 so far.")


class JobRecord(BaseModel):
    """A batch as last seen, joined with how it was submitted (if this server submitted it)."""

    backend: str = LEGACY_BACKEND
    batch_id: str
    request_id: str | None
    file_id: str | None
    path: Path | None
    provider: str | None
    endpoint: str | None
    metadata: dict[str, str] | None
    status: str
    counts: Counts
    created_at: AwareDatetime
    updated_at: AwareDatetime
    last_seen: Job
    output_path: Path | None
    error_path: Path | None
    group_id: str | None
    parent_batch_id: str | None
    table_path: Path | None = None
    usage: dict[str, list[int]] | None = Field(
        default=None, description="Token usage by model from the downloaded results: [requests, input, output]."
    )

    @property
    def ref(self) -> str:
        """The namespaced id tools show: ``backend:batch_id``."""
        return f"{self.backend}:{self.batch_id}"


class PreparedFile(BaseModel):
    """A request file this server rendered from records, so results can be joined with those records."""

    path: Path
    source_path: Path
    source_format: str
    id_column: str | None
    source_sha256: str | None = None
    created_at: AwareDatetime


class JobGroup(BaseModel):
    """One logical job split into several batches because its input exceeded the per-batch limits."""

    group_id: str
    backend: str = LEGACY_BACKEND
    path: Path
    fingerprint: str
    parts: int
    sha256: str | None = Field(default=None, description="Of the whole input, to notice it changing later.")
    parent_batch_id: str | None = None
    created_at: AwareDatetime


def _upload_from_row(row: sqlite3.Row) -> UploadRecord:
    return UploadRecord.model_validate(dict(row))


def _submission_from_row(row: sqlite3.Row) -> Submission:
    return Submission.model_validate({**dict(row), "metadata": _text_to_metadata(row["metadata"])})


def _last_seen(text: str, backend: str) -> Job:
    """The stored job; rows written before the neutral model hold DigitalOcean's own batch JSON."""
    if text.startswith('{"backend":'):  # Job JSON as the store writes it; DigitalOcean's began with batch_id
        return Job.model_validate_json(text)
    return to_job(WireBatch.model_validate_json(text), backend)


def _job_from_row(row: sqlite3.Row) -> JobRecord:
    """What we sent wins over what the API echoes; a batch we did not submit has only the latter."""
    job = _last_seen(row["last_seen"], row["backend"])
    submitted = row["request_id"] is not None
    return JobRecord(
        backend=row["backend"],
        batch_id=row["batch_id"],
        request_id=row["request_id"] if submitted else job.client_token,
        file_id=row["file_id"] if submitted else job.input_ref,
        path=row["path"],
        provider=row["provider"] if submitted else job.line_format,
        endpoint=row["endpoint"] if submitted else job.endpoint,
        metadata=_text_to_metadata(row["metadata"]) if submitted else job.metadata or None,
        status=row["status"],
        counts=Counts(total=row["total_count"], succeeded=row["completed_count"], failed=row["failed_count"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_seen=job,
        output_path=row["output_path"],
        error_path=row["error_path"],
        group_id=row["group_id"],
        parent_batch_id=row["parent_batch_id"],
        table_path=row["table_path"],
        usage=json.loads(row["usage"]) if row["usage"] else None,
    )
