"""The job store must remember every job across restarts, never double-submit, and open older stores."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batch_mcp.backends.digitalocean.wire import WireBatch, to_job
from batch_mcp.domain import Job
from batch_mcp.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    STORE_FILENAME,
    ClaimLost,
    JobRecord,
    JobStore,
    SqliteDatabase,
    StoreUnavailable,
    StoreVersionError,
    Submission,
    UploadRecord,
    submission_fingerprint,
)

from conftest import OpenStore

SHA = "a" * 64
INPUT = Path("/data/requests.jsonl")


def plan(store: JobStore, **overrides: Any) -> Submission:
    fields: dict[str, Any] = {
        "sha256": SHA,
        "path": INPUT,
        "file_id": "file-1",
        "provider": "openai",
        "endpoint": "/v1/chat/completions",
        "metadata": {"project": "eval"},
    }
    return store.plan_submission(**(fields | overrides))


def batch(batch_id: str, status: str = "validating", **fields: Any) -> Job:
    """A DigitalOcean job as its API describes it."""
    return to_job(WireBatch.model_validate({"id": batch_id, "status": status, **fields}), "digitalocean")


def existing_job(store: JobStore, batch_id: str) -> JobRecord:
    found = store.get_job(batch_id)
    assert found is not None, batch_id
    return found


def pragma(state_dir: Path, name: str) -> Any:
    """Read a setting through a separate connection, as another process would see the file."""
    connection = sqlite3.connect(state_dir / STORE_FILENAME)
    try:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        connection.close()


def upload(file_id: str, created_at: datetime, completed_at: datetime | None = None) -> UploadRecord:
    return UploadRecord(
        file_id=file_id,
        path=INPUT,
        sha256=SHA,
        size_bytes=1234,
        line_count=10,
        intent_expires_at=created_at + timedelta(hours=1),
        created_at=created_at,
        completed_at=completed_at,
    )


def test_plan_attach_upsert_then_get_and_list(store: JobStore) -> None:
    submission = plan(store, group_id="group-1", parent_batch_id="batch-0")
    assert submission.batch_id is None

    store.attach_batch(submission.request_id, batch("batch-1", created_at="2025-01-01T00:00:00Z"))
    store.upsert_batch(
        batch("batch-1", "in_progress", request_counts={"total": 10, "completed": 4, "failed": 1}, x="kept"),
    )

    job = existing_job(store, "batch-1")
    assert (job.request_id, job.file_id, job.path) == (submission.request_id, "file-1", INPUT)
    assert (job.provider, job.endpoint) == ("openai", "/v1/chat/completions")
    assert job.metadata == {"project": "eval"}
    assert (job.group_id, job.parent_batch_id) == ("group-1", "batch-0")
    assert job.status == "in_progress"
    assert (job.counts.total, job.counts.succeeded, job.counts.failed) == (10, 4, 1)
    assert job.created_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert job.last_seen.status == "in_progress"
    assert job.last_seen.extra == {"x": "kept"}
    assert store.get_job("batch-unknown") is None

    later = plan(store, file_id="file-2")
    store.attach_batch(later.request_id, batch("batch-2", "completed", created_at="2025-01-02T00:00:00Z"))
    assert [j.batch_id for j in store.list_jobs()] == ["batch-2", "batch-1"]
    assert [j.batch_id for j in store.list_jobs(status="in_progress")] == ["batch-1"]
    assert [j.batch_id for j in store.list_jobs(limit=1)] == ["batch-2"]


def test_attach_is_idempotent_but_refuses_a_second_batch(store: JobStore) -> None:
    submission = plan(store)
    store.attach_batch(submission.request_id, batch("batch-1"))
    store.attach_batch(submission.request_id, batch("batch-1", "queued"))
    assert existing_job(store, "batch-1").status == "queued"
    with pytest.raises(ValueError, match="already attached"):
        store.attach_batch(submission.request_id, batch("batch-2"))
    with pytest.raises(KeyError):
        store.attach_batch("no-such-request", batch("batch-3"))


def test_fingerprint_lookup_returns_the_existing_job(store: JobStore) -> None:
    first = plan(store, metadata={"a": "1", "b": "2"})
    store.attach_batch(first.request_id, batch("batch-1"))

    fingerprint = submission_fingerprint(SHA, "openai", "/v1/chat/completions", {"b": "2", "a": "1"})
    found = store.find_submission_by_fingerprint(fingerprint)
    assert found is not None
    assert (found.request_id, found.batch_id) == (first.request_id, "batch-1")

    newer = plan(store, metadata={"a": "1", "b": "2"})  # the caller asked for a new job anyway
    assert store.find_submission_by_fingerprint(fingerprint) == newer

    for different in (
        submission_fingerprint("b" * 64, "openai", "/v1/chat/completions", {"a": "1", "b": "2"}),
        submission_fingerprint(SHA, "anthropic", None, {"a": "1", "b": "2"}),
        submission_fingerprint(SHA, "openai", "/v1/responses", {"a": "1", "b": "2"}),
        submission_fingerprint(SHA, "openai", "/v1/chat/completions", {"a": "1"}),
    ):
        assert store.find_submission_by_fingerprint(different) is None
    no_metadata = submission_fingerprint(SHA, "anthropic", None, None)
    assert no_metadata == submission_fingerprint(SHA, "anthropic", None, {})


def test_upload_reuse_respects_completion_and_age(open_store: OpenStore) -> None:
    day0 = datetime(2025, 3, 1, tzinfo=UTC)
    with open_store() as store:
        store.record_upload(upload("file-interrupted", created_at=day0))
        assert store.find_reusable_upload(SHA, now=day0 + timedelta(hours=1)) is None

        store.mark_upload_complete("file-interrupted")
        reusable = store.find_reusable_upload(SHA, now=day0 + timedelta(days=6))
        assert reusable is not None and reusable.file_id == "file-interrupted"
        assert reusable.completed_at is not None
        assert store.find_reusable_upload(SHA, now=day0 + timedelta(days=7, seconds=1)) is None
        assert store.find_reusable_upload("c" * 64, now=day0) is None

        store.record_upload(upload("file-newer", created_at=day0 + timedelta(days=1), completed_at=day0))
        newest = store.find_reusable_upload(SHA, now=day0 + timedelta(days=2))
        assert newest is not None and newest.file_id == "file-newer"
        with pytest.raises(KeyError):
            store.mark_upload_complete("no-such-file")

    with open_store(upload_max_age=timedelta(hours=1)) as strict:
        assert strict.find_reusable_upload(SHA, now=day0 + timedelta(days=1, minutes=30)) == newest
        assert strict.find_reusable_upload(SHA, now=day0 + timedelta(days=1, hours=2)) is None


def test_pending_submissions_are_found_after_a_restart(open_store: OpenStore) -> None:
    with open_store() as store:
        answered = plan(store, file_id="file-1")
        store.attach_batch(answered.request_id, batch("batch-1"))
        crashed = plan(store, file_id="file-2")  # the create call was sent, the answer never stored
        refused = plan(store, file_id="file-3")

    with open_store() as restarted:
        assert restarted.pending_submissions() == [crashed, refused]
        restarted.attach_batch(crashed.request_id, batch("batch-2", request_id=crashed.request_id))
        restarted.discard_submission(refused.request_id)
        assert restarted.pending_submissions() == []
        with pytest.raises(KeyError):
            restarted.discard_submission(answered.request_id)  # a job that exists is never forgotten
        assert existing_job(restarted, "batch-2").request_id == crashed.request_id


def test_conflicts_are_counted_per_submission_across_restarts(open_store: OpenStore) -> None:
    with open_store() as store:
        stuck, other = plan(store, file_id="file-1"), plan(store, file_id="file-2")
        assert [store.count_conflict(stuck.request_id) for _ in range(2)] == [1, 2]
    with open_store() as restarted:
        assert restarted.count_conflict(stuck.request_id) == 3
        assert [s.conflicts for s in restarted.pending_submissions()] == [3, 0]
        restarted.attach_batch(other.request_id, batch("batch-2"))
        with pytest.raises(KeyError):
            restarted.count_conflict(other.request_id)  # answered: nothing is pending to count against


def test_jobs_and_downloads_survive_reopen(open_store: OpenStore, tmp_path: Path) -> None:
    with open_store() as store:
        submission = plan(store)
        store.attach_batch(submission.request_id, batch("batch-1", "in_progress"))
        before = existing_job(store, "batch-1")

    with open_store() as restarted:
        assert restarted.get_job("batch-1") == before
        restarted.upsert_batch(batch("batch-1", "completed", request_counts={"total": 2, "completed": 2}))
        restarted.record_download("batch-1", tmp_path / "out.jsonl", None)
        with pytest.raises(KeyError):
            restarted.record_download("batch-unknown", tmp_path / "out.jsonl", None)

    with open_store() as again:
        job = existing_job(again, "batch-1")
        assert (job.status, job.output_path, job.error_path) == ("completed", tmp_path / "out.jsonl", None)
        assert job.created_at == before.created_at
        assert job.updated_at > before.updated_at


def test_stale_view_does_not_undo_a_terminal_status(store: JobStore) -> None:
    store.upsert_batch(batch("batch-1", "completed"))
    store.upsert_batch(batch("batch-1", "in_progress"))  # a slower poller's older answer
    assert existing_job(store, "batch-1").status == "completed"
    store.upsert_batch(batch("batch-1", "expired"))
    assert existing_job(store, "batch-1").status == "expired"


def test_batch_not_submitted_here_is_described_by_the_api(store: JobStore) -> None:
    store.upsert_batch(
        batch("batch-x", provider="anthropic", file_id="file-x", request_id="req-x", metadata={"k": "v"})
    )
    job = existing_job(store, "batch-x")
    assert (job.request_id, job.file_id, job.provider, job.endpoint) == ("req-x", "file-x", "anthropic", None)
    assert (job.path, job.metadata) == (None, {"k": "v"})


def test_opens_a_v1_store_and_keeps_its_data(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / STORE_FILENAME)
    for statement in MIGRATIONS[0]:
        connection.execute(statement)
    connection.execute(
        "INSERT INTO uploads VALUES ('file-1', '/data/in.jsonl', ?, 10, 2, NULL,"
        " '2025-01-01T00:00:00.000000+00:00', '2025-01-01T00:01:00.000000+00:00')",
        (SHA,),
    )
    connection.execute(
        "INSERT INTO submissions VALUES ('req-1', 'fp-1', '/data/in.jsonl', 'file-1', 'openai',"
        " '/v1/responses', '{\"k\":\"v\"}', 'batch-1', '2025-01-01T00:02:00.000000+00:00')"
    )
    connection.execute(
        "INSERT INTO submissions VALUES ('req-2', 'fp-2', '/data/in.jsonl', 'file-1', 'anthropic',"
        " NULL, NULL, NULL, '2025-01-01T00:03:00.000000+00:00')"
    )
    connection.execute(
        "INSERT INTO batches VALUES ('batch-1', 'in_progress', 2, 1, 0, ?,"
        " '2025-01-01T00:02:00.000000+00:00', '2025-01-01T00:04:00.000000+00:00', NULL, NULL)",
        (batch("batch-1", "in_progress").model_dump_json(),),
    )
    connection.execute("PRAGMA user_version = 1")
    connection.commit()
    connection.close()

    with JobStore.open(tmp_path) as store:
        job = existing_job(store, "batch-1")
        assert (job.request_id, job.endpoint, job.metadata, job.status) == (
            "req-1", "/v1/responses", {"k": "v"}, "in_progress",
        )
        assert (job.group_id, job.parent_batch_id) == (None, None)
        assert [(s.request_id, s.conflicts) for s in store.pending_submissions()] == [("req-2", 0)]
        resumed = store.find_submission_by_fingerprint("fp-1")
        assert resumed is not None and resumed.batch_id == "batch-1"
        reusable = store.find_reusable_upload(SHA, now=datetime(2025, 1, 2, tzinfo=UTC))
        assert reusable is not None and reusable.file_id == "file-1"

        grouped = plan(store, group_id="group-1")
        store.attach_batch(grouped.request_id, batch("batch-2"))
        assert existing_job(store, "batch-2").group_id == "group-1"
    assert pragma(tmp_path, "user_version") == SCHEMA_VERSION


def test_refuses_a_store_from_a_newer_release(tmp_path: Path) -> None:
    JobStore.open(tmp_path).close()
    connection = sqlite3.connect(tmp_path / STORE_FILENAME)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StoreVersionError):
        JobStore.open(tmp_path)


def test_wal_mode_is_on(tmp_path: Path) -> None:
    state_dir = tmp_path / "nested" / "state"
    with JobStore.open(state_dir):
        assert pragma(state_dir, "journal_mode") == "wal"  # WAL is a property of the file, seen by all


def run_in_threads(work: Callable[[int], None], count: int) -> None:
    """Run ``work(0..count-1)`` at once and fail the test if any thread raised."""
    failures: list[BaseException] = []

    def guarded(number: int) -> None:
        try:
            work(number)
        except BaseException as error:  # reported by the assertion below
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_concurrent_writes_from_threads_do_not_corrupt(store: JobStore) -> None:
    threads_count, writes_each = 8, 50

    def poll(thread: int) -> None:
        for i in range(writes_each):
            store.upsert_batch(batch(f"batch-{thread}", "in_progress", request_counts={"completed": i}))
            store.upsert_batch(batch("batch-shared", "in_progress", request_counts={"completed": i}))
            store.list_jobs(limit=5)

    run_in_threads(poll, threads_count)

    if isinstance(store.database, SqliteDatabase):
        assert pragma(store.database.path.parent, "integrity_check") == "ok"
    assert len(store.list_jobs(limit=1000)) == threads_count + 1
    for n in range(threads_count):
        assert existing_job(store, f"batch-{n}").counts.succeeded == writes_each - 1


def test_two_servers_share_one_store(open_store: OpenStore) -> None:
    with open_store() as first, open_store() as second:
        servers = (first, second)

        def submit(thread: int) -> None:
            for i in range(20):
                servers[thread % 2].upsert_batch(batch(f"batch-{thread}-{i}"))

        run_in_threads(submit, 4)
        assert len(first.list_jobs(limit=1000)) == len(second.list_jobs(limit=1000)) == 80


def test_a_claim_is_held_by_one_store_until_released_or_expired(open_store: OpenStore) -> None:
    with open_store() as first, open_store() as second:
        held = first.claim("fp")
        assert held is not None and second.claim("fp") is None and second.claim("other") is not None
        first.release_claim(held)
        again = second.claim("fp", lease=timedelta(seconds=30))
        assert again is not None
        assert first.claim("fp", now=datetime.now(UTC) + timedelta(seconds=20)) is None
        taken = first.claim("fp", now=datetime.now(UTC) + timedelta(seconds=31))  # the lease ran out
        assert taken is not None
        with pytest.raises(ClaimLost):  # the holder taken over can no longer plan the job
            plan(second, claim=again)
        assert not second.renew_claim(again)
        assert plan(first, claim=taken).request_id
        second.release_claim(again)  # releasing a lost claim leaves the new holder's alone
        assert second.claim("fp") is None


def test_renewal_extends_a_claim(open_store: OpenStore) -> None:
    with open_store() as first, open_store() as second:
        held = first.claim("fp", lease=timedelta(seconds=1))
        assert held is not None and first.renew_claim(held, lease=timedelta(hours=1))
        assert second.claim("fp", now=datetime.now(UTC) + timedelta(minutes=5)) is None

        def expiry() -> Any:  # as the other process reads it
            return second.database.query("SELECT expires_at FROM claims")[0][0]

        before = expiry()
        with first.keeping(held, lease=timedelta(milliseconds=30)):
            deadline = time.monotonic() + 60
            while expiry() == before:  # renewed in the background
                assert time.monotonic() < deadline
                time.sleep(0.01)


def test_a_claim_of_a_process_that_died_is_taken_over_at_once(tmp_path: Path) -> None:
    code = "import sys; from pathlib import Path; from batch_mcp.store import JobStore; " \
           "assert JobStore.open(Path(sys.argv[1])).claim('fp') is not None"
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)  # exits holding it
    with JobStore.open(tmp_path) as store:
        assert read_one(tmp_path, "SELECT count(*) FROM claims") == 1
        assert store.claim("fp") is not None


def read_one(state_dir: Path, sql: str) -> Any:
    connection = sqlite3.connect(state_dir / STORE_FILENAME)
    try:
        return connection.execute(sql).fetchone()[0]
    finally:
        connection.close()


def test_a_deleted_folder_is_recreated_with_every_job_and_seen_by_the_other_server(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with JobStore.open(state) as first, JobStore.open(state) as second:
        first.upsert_batch(batch("batch-before"))
        shutil.rmtree(state)
        first.upsert_batch(batch("batch-after"))  # notices, recreates from its open copy, then writes
        assert {job.batch_id for job in second.list_jobs()} == {"batch-before", "batch-after"}  # switched to it
        second.upsert_batch(batch("batch-second"))
        assert existing_job(first, "batch-second")
    with JobStore.open(state) as reopened:
        assert {job.batch_id for job in reopened.list_jobs()} == {"batch-before", "batch-after", "batch-second"}
    assert pragma(state, "integrity_check") == "ok" and pragma(state, "user_version") == SCHEMA_VERSION
    assert sorted(path.name for path in state.iterdir()) == [STORE_FILENAME]  # no restore leftovers


def test_a_folder_that_cannot_be_recreated_refuses_writes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with JobStore.open(state) as store:
        shutil.rmtree(state)
        state.write_text("a file where the folder was")
        with pytest.raises(StoreUnavailable, match="cannot be written"):
            store.upsert_batch(batch("batch-1"))
        state.unlink()
        store.upsert_batch(batch("batch-1"))  # recovers as soon as the folder can be made again
    with JobStore.open(state) as reopened:
        assert existing_job(reopened, "batch-1")
