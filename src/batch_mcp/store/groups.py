"""Job groups and prepared request files: what a job is made from, stored beside the jobs (see :mod:`.jobs`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

from batch_mcp.store.claims import Claim
from batch_mcp.store.coordination import Coordinated
from batch_mcp.store.records import (
    _SUBMISSION_COLUMNS,
    LEGACY_BACKEND,
    JobGroup,
    PreparedFile,
    Submission,
    _now,
    _older,
    _older_than,
    _submission_from_row,
    _time_to_text,
)


class GroupRecords(Coordinated):
    """The job store's groups of batches and the request files it rendered from records."""

    # prepared files (no backend: they belong to the view's owner, see .scope) ----------------------

    def record_prepared(self, path: Path, source_path: Path, source_format: str, id_column: str | None,
                        source_sha256: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO prepared_files (account, path, source_path, source_format, id_column, source_sha256,"
                " created_at) VALUES (:account, :path, :source_path, :source_format, :id_column, :source_sha256,"
                " :created_at) ON CONFLICT (account, path) DO UPDATE SET source_path = excluded.source_path,"
                " source_format = excluded.source_format, id_column = excluded.id_column,"
                " source_sha256 = excluded.source_sha256, created_at = excluded.created_at",
                {"account": self._scope.owner, "path": str(path), "source_path": str(source_path),
                 "source_format": source_format, "id_column": id_column, "source_sha256": source_sha256,
                 "created_at": _time_to_text(_now())},
            )

    def find_prepared(self, path: Path) -> PreparedFile | None:
        rows = self._query(f"SELECT * FROM prepared_files WHERE {self._scope.where_owner()} AND path = :path",
                           {"path": str(path)})
        return PreparedFile.model_validate(dict(rows[0])) if rows else None

    # job groups ----------------------------------------------------------------------------------

    def create_group(self, path: Path, sha256: str, fingerprint: str, parts: int,
                     parent_batch_id: str | None = None, claim: Claim | None = None,
                     backend: str = LEGACY_BACKEND) -> JobGroup:
        group = JobGroup(group_id=f"group-{uuid.uuid4()}", backend=backend, path=path, sha256=sha256,
                         fingerprint=fingerprint, parts=parts, parent_batch_id=parent_batch_id, created_at=_now())
        with self._write(claim) as conn:
            conn.execute(
                "INSERT INTO job_groups (account, group_id, backend, path, sha256, fingerprint, parts,"
                " parent_batch_id, created_at) VALUES (:account, :group_id, :backend, :path, :sha256, :fingerprint,"
                " :parts, :parent_batch_id, :created_at)",
                {"account": self._scope.account(backend), "group_id": group.group_id, "backend": backend,
                 "path": str(path), "sha256": sha256, "fingerprint": fingerprint, "parts": parts,
                 "parent_batch_id": parent_batch_id, "created_at": _time_to_text(group.created_at)},
            )
        return group

    def get_group(self, group_id: str) -> JobGroup | None:
        rows = self._query(f"SELECT * FROM job_groups WHERE {self._scope.where()} AND group_id = :group_id",
                           {"group_id": group_id})
        return JobGroup.model_validate(dict(rows[0])) if rows else None

    def find_group_by_fingerprint(self, fingerprint: str) -> JobGroup | None:
        rows = self._query(f"SELECT * FROM job_groups WHERE {self._scope.where()} AND fingerprint = :fingerprint"
                           " ORDER BY created_at DESC LIMIT 1", {"fingerprint": fingerprint})
        return JobGroup.model_validate(dict(rows[0])) if rows else None

    def list_groups(self, limit: int = 100, before: tuple[datetime, str] | None = None) -> list[JobGroup]:
        """Newest first, or older than ``before`` (created_at, group_id)."""
        rows = self._query(f"SELECT * FROM job_groups WHERE {self._scope.where()}"
                           f" AND {_older('created_at', 'group_id')} ORDER BY created_at DESC, group_id DESC"
                           " LIMIT :limit", {"limit": limit, **_older_than(before)})
        return [JobGroup.model_validate(dict(row)) for row in rows]

    def group_submissions(self, group_id: str) -> list[Submission]:
        """The group's parts in submission order (answered or still pending)."""
        rows = self._query(
            f"SELECT {_SUBMISSION_COLUMNS} FROM submissions WHERE {self._scope.where()} AND group_id = :group_id"
            " ORDER BY created_at, request_id",
            {"group_id": group_id},
        )
        return [_submission_from_row(row) for row in rows]
