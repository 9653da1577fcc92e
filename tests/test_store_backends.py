"""The store keys every id by its backend, and an upgraded v5 store (DigitalOcean only) loses nothing."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from batch_mcp.backends.digitalocean.wire import WireBatch, to_job
from batch_mcp.domain import Job
from batch_mcp.store import MIGRATIONS, SCHEMA_VERSION, STORE_FILENAME, JobStore, UploadRecord, submission_fingerprint

SHA = "b" * 64
T0 = "2025-03-01T00:00:00.000000+00:00"
T1 = "2025-03-01T00:05:00.000000+00:00"


def _v5_store(state: Path) -> str:
    """A store as the last single-backend release left it: an upload, a finished job with downloads,
    a pending submission, a two-part group and a claim. Returns the finished job's fingerprint."""
    fingerprint = submission_fingerprint(SHA, "openai", "/v1/chat/completions", {"team": "eval"})
    connection = sqlite3.connect(state / STORE_FILENAME)
    for statements in MIGRATIONS[:5]:
        for statement in statements:
            connection.execute(statement)
    connection.execute("INSERT INTO uploads VALUES ('file-1', '/data/in.jsonl', ?, 99, 3, NULL, ?, ?)", (SHA, T0, T0))
    connection.execute(
        "INSERT INTO submissions (request_id, fingerprint, path, file_id, provider, endpoint, metadata, batch_id,"
        " created_at, group_id, parent_batch_id, conflicts) VALUES"
        " ('req-done', ?, '/data/in.jsonl', 'file-1', 'openai', '/v1/chat/completions', '{\"team\":\"eval\"}',"
        "  'batch-done', ?, NULL, NULL, 0),"
        " ('req-pending', 'fp-pending', '/data/in.jsonl', 'file-1', 'anthropic', NULL, NULL, NULL, ?, NULL, NULL, 2),"
        " ('req-part1', 'fp-part1', '/data/p1.jsonl', 'file-1', 'openai', '/v1/chat/completions', NULL,"
        "  'batch-part1', ?, 'group-7', NULL, 0)",
        (fingerprint, T0, T1, T1),
    )
    # rows before the neutral job model held DigitalOcean's own batch JSON, as its client parsed it
    done = json.dumps({"batch_id": "batch-done", "status": "completed", "provider": "openai", "endpoint": None,
                       "request_counts": {"total": 3, "completed": 2, "failed": 1}, "metadata": None,
                       "errors": None, "result_available": None, "created_at": "2025-01-01T00:00:00Z"})
    part = json.dumps({"batch_id": "batch-part1", "status": "in_progress", "request_counts": {"total": 0,
                       "completed": 0, "failed": 0}, "metadata": None, "errors": None})
    connection.execute(
        "INSERT INTO batches VALUES ('batch-done', 'completed', 3, 2, 1, ?, ?, ?, '/out/o.jsonl', '/out/e.jsonl',"
        " '/out/t.csv', ?)", (done, T0, T1, json.dumps({"m": [3, 30, 60]})))
    connection.execute("INSERT INTO batches VALUES ('batch-part1', 'in_progress', 0, 0, 0, ?, ?, ?, NULL, NULL,"
                       " NULL, NULL)", (part, T1, T1))
    connection.execute("INSERT INTO job_groups VALUES ('group-7', '/data/big.jsonl', 'fp-group', 2, ?, NULL, ?)",
                       (SHA, T1))
    connection.execute("INSERT INTO claims VALUES ('fp-x', 'holder', 'host', 1, ?)", (T1,))
    connection.execute("PRAGMA user_version = 5")
    connection.commit()
    connection.close()
    return fingerprint


def job(backend: str, batch_id: str, status: str) -> Job:
    return to_job(WireBatch.model_validate({"id": batch_id, "status": status}), backend)


def test_a_v5_store_upgrades_with_every_row_and_its_bare_ids_still_resolve(tmp_path: Path) -> None:
    fingerprint = _v5_store(tmp_path)
    with JobStore.open(tmp_path) as store:
        done = store.get_job("batch-done")
        assert done is not None and done.ref == "digitalocean:batch-done"
        assert (done.request_id, done.metadata, done.status, str(done.table_path), done.usage) == (
            "req-done", {"team": "eval"}, "completed", "/out/t.csv", {"m": [3, 30, 60]})
        assert (done.counts.succeeded, done.counts.failed) == (2, 1)
        assert (done.last_seen.status, done.last_seen.line_format, done.last_seen.results_ready) == (
            "completed", "openai", False)  # read from the old shape: no result files were attached
        assert store.get_job("digitalocean:batch-done") == done
        assert store.get_job("openai:batch-done") is None

        # the same file sent the same way to DigitalOcean is still recognised as the same job
        again = submission_fingerprint(SHA, "openai", "/v1/chat/completions", {"team": "eval"},
                                       backend="digitalocean", completion_window="24h")
        assert again == fingerprint
        found = store.find_submission_by_fingerprint(again)
        assert found is not None and (found.batch_id, found.backend) == ("batch-done", "digitalocean")

        pending = store.pending_submissions()
        assert [(s.request_id, s.backend, s.conflicts, s.completion_window) for s in pending] == [
            ("req-pending", "digitalocean", 2, "24h")]
        assert store.pending_submissions("openai") == []

        group = store.get_group("group-7")
        assert group is not None and (group.backend, group.parts) == ("digitalocean", 2)
        assert [s.batch_id for s in store.group_submissions("group-7")] == ["batch-part1"]

        upload = store.get_upload("file-1")
        assert upload is not None and upload.backend == "digitalocean" and store.get_upload("digitalocean:file-1")
        now = datetime(2025, 3, 2, tzinfo=UTC)
        assert store.find_reusable_upload(SHA, now) == upload
        assert store.find_reusable_upload(SHA, now, backend="openai") is None
        assert len(store.list_jobs()) == 2
    connection = sqlite3.connect(tmp_path / STORE_FILENAME)
    try:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("SELECT holder, account FROM claims").fetchall() == [("holder", "local")]
        for table in ("uploads", "submissions", "batches", "job_groups"):  # every old row is the single user's
            assert connection.execute(f"SELECT DISTINCT account FROM {table}").fetchall() == [("local",)]
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()


def test_one_native_id_on_two_backends_is_two_jobs(store: JobStore) -> None:
    store.upsert_batch(job("openai", "batch_1", "completed"))
    store.upsert_batch(job("groq", "batch_1", "in_progress"))
    openai, groq = store.get_job("openai:batch_1"), store.get_job("groq:batch_1")
    assert openai is not None and groq is not None
    assert (openai.status, groq.status) == ("completed", "in_progress")
    store.record_download("groq:batch_1", Path("/o.jsonl"), None)
    refreshed = store.get_job("openai:batch_1")
    assert refreshed is not None and refreshed.output_path is None


def test_a_submission_is_another_job_on_another_backend_or_window(store: JobStore) -> None:
    keys = {submission_fingerprint(SHA, "openai", "/v1/chat/completions", None, backend=backend,
                                   completion_window=window)
            for backend, window in [("digitalocean", "24h"), ("openai", "24h"), ("groq", "24h"), ("groq", "7d")]}
    assert len(keys) == 4
    planned = store.plan_submission(sha256=SHA, path=None, file_id="file-a", provider="openai",
                                    endpoint="/v1/chat/completions", metadata=None, backend="groq",
                                    completion_window="7d")
    store.attach_batch(planned.request_id, job("groq", "batch_9", "validating"))
    record = store.get_job("groq:batch_9")
    assert record is not None and record.request_id == planned.request_id
    assert store.get_job("digitalocean:batch_9") is None


def test_reusable_uploads_are_per_backend(store: JobStore) -> None:
    moment = datetime(2025, 3, 1, tzinfo=UTC)
    store.record_upload(UploadRecord(backend="openai", file_id="file-x", path=Path("/in.jsonl"), sha256=SHA,
                                     size_bytes=1, line_count=1, created_at=moment))
    store.mark_upload_complete("openai:file-x")
    assert store.find_reusable_upload(SHA, moment, backend="digitalocean") is None
    reused = store.find_reusable_upload(SHA, moment, backend="openai")
    assert reused is not None and reused.file_id == "file-x"
    store.forget_upload("openai:file-x")
    assert store.find_reusable_upload(SHA, moment, backend="openai") is None
