"""What stands behind a job: its result files, its parts, the jobs it retries, and the input it came from.

A retry's results merge with its parent's, a group's with its parts', and the table joins them with
the original input (or the records a prepared file was rendered from) while that input is unchanged.
Everything here reads the job store; nothing calls the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batch_mcp.services.prepare import SourceRows
from batch_mcp.services.results import ResultIndex, ResultTable, build_results_table, request_prompts
from batch_mcp.services.workspace import sha256_of
from batch_mcp.store import JobGroup, JobRecord, JobStore


def is_group_id(job_id: str) -> bool:
    return job_id.startswith("group-")


class Lineage:
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def results_table(self, job_id: str, csv_path: Path, jsonl_path: Path, warnings: list[str], *,
                      overwrite: bool = False) -> ResultTable:
        """Join every result line behind ``job_id`` (its parts, the jobs it retries) with the original input."""
        index = ResultIndex(self.result_files(job_id))
        source, problem = self.unchanged_root_input(job_id)
        if problem:
            warnings.append(problem + " The table lists the results without their input.")
        rows = self.input_rows(source, warnings) if source else None
        return build_results_table(index, rows, csv_path, jsonl_path, overwrite=overwrite)

    def result_files(self, job_id: str) -> list[Path]:
        """Downloaded result files of a job, its group parts and the jobs it retries, oldest first."""
        if is_group_id(job_id):
            group = self.store.get_group(job_id)
            inherited = self.result_files(group.parent_batch_id) if group and group.parent_batch_id else []
            parts = [s.batch_id for s in self.store.group_submissions(job_id) if s.batch_id]
            return inherited + [file for part in parts for file in self.result_files(part)]
        record = self.store.get_job(job_id)
        if record is None:
            return []
        inherited = self.result_files(record.parent_batch_id) if record.parent_batch_id else []
        return inherited + [p for p in (record.error_path, record.output_path) if p is not None]

    def root(self, job_id: str) -> JobGroup | JobRecord | None:
        """The first ancestor: the job or group whose input lists every request (retries only rerun some)."""
        node: JobGroup | JobRecord | None = (self.store.get_group(job_id) if is_group_id(job_id)
                                             else self.store.get_job(job_id))
        if node is not None and node.parent_batch_id:
            return self.root(node.parent_batch_id)
        return node

    def submitted_sha256(self, job_id: str) -> str | None:
        """SHA-256 of the root input as it was submitted, when this server knows it."""
        root = self.root(job_id)
        if isinstance(root, JobGroup):
            return root.sha256
        upload = self.store.get_upload(root.file_id) if root and root.file_id else None
        return upload.sha256 if upload else None

    def unchanged_root_input(self, job_id: str) -> tuple[Path | None, str | None]:
        """The root input if it still holds what was submitted, else (None, why not)."""
        root = self.root(job_id)
        path = root.path if root else None
        if path is None or not path.exists():
            return None, f"The input file of {job_id} is unknown to this server or was moved."
        expected = self.submitted_sha256(job_id)
        if expected is not None and sha256_of(path) != expected:
            return None, f"{path} changed after it was submitted, so its lines no longer match the results."
        return path, None

    def input_rows(self, path: Path, warnings: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """The input to join results with: the prepared file's source records while unchanged, else the prompts."""
        prepared = self.store.find_prepared(path)
        if prepared is not None and prepared.source_path.exists():
            if prepared.source_sha256 is None or sha256_of(prepared.source_path) == prepared.source_sha256:
                return SourceRows(prepared.source_path, prepared.source_format,  # type: ignore[arg-type]
                                  prepared.id_column).joined()
            warnings.append(f"{prepared.source_path} changed after the request file was prepared from it, so the "
                            "table shows the prompts instead of its columns.")
        return request_prompts(path)
