"""The PostgreSQL store: the same schema history as SQLite, one winner of every race between replicas (each
its own connections, as separate processes would be), changes announced to every listener, and the store CLI."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from batch_mcp.backends.digitalocean.wire import WireBatch, to_job
from batch_mcp.cli import main
from batch_mcp.store import MIGRATIONS, SCHEMA_VERSION, JobStore, StoreVersionError

from conftest import OpenStore, postgres_schema

T0 = "2025-03-01T00:00:00.000000+00:00"


def _connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def test_an_older_postgresql_schema_is_migrated_with_every_row() -> None:
    from batch_mcp.store.postgres import PostgresDatabase, translate

    with postgres_schema() as url:
        with _connect(url) as conn:  # v6, as the last release before tenants would have left it
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            for statements in MIGRATIONS[:6]:
                for statement in statements:
                    conn.execute(translate(statement))
            conn.execute("INSERT INTO schema_version VALUES (6)")
            conn.execute("INSERT INTO uploads (backend, file_id, path, sha256, size_bytes, line_count, created_at,"
                         " completed_at) VALUES ('openai', 'file-1', '/in.jsonl', 'abc', 3, 1, %s, %s)", (T0, T0))
            conn.execute("INSERT INTO submissions (request_id, backend, fingerprint, file_id, provider, batch_id,"
                         " created_at) VALUES ('req-1', 'openai', 'fp-1', 'file-1', 'openai', 'batch-1', %s)", (T0,))
            job = to_job(WireBatch.model_validate({"id": "batch-1", "status": "completed"}), "openai")
            conn.execute("INSERT INTO batches (backend, batch_id, status, total_count, completed_count, failed_count,"
                         " last_seen, created_at, updated_at) VALUES ('openai', 'batch-1', 'completed', 1, 1, 0, %s,"
                         " %s, %s)", (job.model_dump_json(), T0, T0))
        with JobStore.open(database=PostgresDatabase(url)) as store:
            assert store.database.version() == SCHEMA_VERSION
            record = store.get_job("openai:batch-1")
            assert record is not None and (record.request_id, record.status) == ("req-1", "completed")
            assert store.get_upload("openai:file-1") is not None
            found = store.find_submission_by_fingerprint("fp-1")
            assert found is not None and found.batch_id == "batch-1"
            assert store.scoped({"openai": "acct-x"}).get_job("openai:batch-1") is None
        with _connect(url) as conn:
            assert conn.execute("SELECT DISTINCT account FROM batches").fetchall() == [("local",)]
            conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
        with pytest.raises(StoreVersionError, match="newer batch-mcp"):
            JobStore.open(database=PostgresDatabase(url))


def race(work: Callable[[int], Any], count: int) -> list[Any]:
    """``work(0..count-1)`` released at once from threads; their results in order."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(number: int) -> None:
        start.wait()
        results[number] = work(number)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_replicas_racing_for_one_submission_make_one_plan(open_store: OpenStore) -> None:
    replicas = [open_store() for _ in range(6)]
    for replica in replicas:
        replica.check()

    def submit(number: int) -> str | None:
        store = replicas[number]
        claim = store.claim("fp-race")
        if claim is None:
            return None
        existing = store.find_submission_by_fingerprint("fp-race")
        planned = existing or store.plan_submission(sha256="a" * 64, path=None, file_id="file-1", provider="openai",
                                                    endpoint=None, metadata=None, claim=claim)
        return planned.request_id

    winners = [result for result in race(submit, len(replicas)) if result is not None]
    assert len(winners) == 1
    assert [s.request_id for s in replicas[0].pending_submissions()] == winners


def test_replicas_racing_for_a_lease_or_a_link_have_one_winner(open_store: OpenStore) -> None:
    replicas = [open_store() for _ in range(6)]
    assert sum(race(lambda n: replicas[n].take_lease("poll", f"replica-{n}", timedelta(minutes=1)), 6)) == 1
    token = replicas[0].create_link("upload", {}, timedelta(minutes=1), account="acct")
    used = race(lambda n: replicas[n].consume_link(token, "upload", account="acct"), 6)
    assert sum(link is not None for link in used) == 1


def test_job_changes_reach_every_replicas_listener() -> None:
    from batch_mcp.store.postgres import PostgresDatabase

    with postgres_schema() as url, JobStore.open(database=PostgresDatabase(url)) as writer, \
            JobStore.open(database=PostgresDatabase(url)) as listener:
        stop, seen, listening = threading.Event(), [], threading.Event()

        def listen() -> None:
            changes = listener.job_changes(stop)
            listening.set()
            for change in changes:
                seen.append(change)
                if len(seen) == 2:
                    stop.set()

        thread = threading.Thread(target=listen)
        thread.start()
        listening.wait()
        deadline = threading.Event()
        while not seen and not deadline.wait(0.1):  # until the listener is subscribed
            writer.upsert_batch(to_job(WireBatch.model_validate({"id": "batch-0", "status": "queued"}), "digitalocean"))
        writer.scoped({"openai": "acct-a"}).upsert_batch(
            to_job(WireBatch.model_validate({"id": "batch-1", "status": "completed"}), "openai"))
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert ("acct-a", "openai", "batch-1", writer.database.origin) in [
            (c.account, c.backend, c.batch_id, c.origin) for c in seen]
        assert writer.database.origin != listener.database.origin


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_store_commands_check_then_migrate(dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    def command(action: str) -> tuple[int, str, str]:
        code = main(["store", action, "--state-dir", str(tmp_path)])
        out, err = capsys.readouterr()
        return code, out, err

    def run() -> None:
        code, out, _ = command("check")
        assert code == 1 and "store migrate" in out
        code, out, _ = command("migrate")
        assert code == 0 and f"v{SCHEMA_VERSION} (migrated from v0)" in out
        code, out, _ = command("check")
        assert code == 0 and "up to date" in out

    if dialect == "sqlite":
        monkeypatch.delenv("BATCH_MCP_STORE_URL", raising=False)
        run()
        return
    with postgres_schema() as url:
        monkeypatch.setenv("BATCH_MCP_STORE_URL", url)
        run()
    monkeypatch.setenv("BATCH_MCP_STORE_URL", "postgresql://u:hunter2@127.0.0.1:1/none")
    code, out, err = command("check")
    assert code == 2 and "cannot be reached" in err and "hunter2" not in out + err
