"""Tenants share one store and never reach each other's rows; links are used once; leases have one holder."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batch_mcp.backends.digitalocean.wire import WireBatch, to_job
from batch_mcp.domain import Job
from batch_mcp.store import JobStore, NoAccount, UploadRecord, submission_fingerprint

SHA = "c" * 64
ALICE = {"digitalocean": "acct-alice", "openai": "acct-alice-openai"}
BOB = {"digitalocean": "acct-bob"}


def job(batch_id: str, status: str = "in_progress", backend: str = "digitalocean") -> Job:
    return to_job(WireBatch.model_validate({"id": batch_id, "status": status}), backend)


def plan(store: JobStore, **overrides: Any) -> Any:
    fields: dict[str, Any] = {"sha256": SHA, "path": Path("/in.jsonl"), "file_id": "file-1", "provider": "openai",
                              "endpoint": "/v1/chat/completions", "metadata": None}
    return store.plan_submission(**(fields | overrides))


def fill(store: JobStore) -> dict[str, Any]:
    """One of everything a tenant stores, with the ids another tenant could guess."""
    store.record_upload(UploadRecord(file_id="file-1", path=Path("/in.jsonl"), sha256=SHA, size_bytes=9, line_count=1,
                                     completed_at=datetime.now(UTC)))
    done = plan(store)
    store.attach_batch(done.request_id, job("batch-1"))
    pending = plan(store, file_id="file-2")
    group = store.create_group(Path("/big.jsonl"), SHA, "fp-group", 2)
    plan(store, file_id="file-3", group_id=group.group_id)
    store.record_prepared(Path("/in.jsonl"), Path("/in.csv"), "csv", "id", SHA)
    return {"done": done, "pending": pending, "group": group}


def test_a_tenant_cannot_reach_another_tenants_rows_even_by_guessing_ids(store: JobStore) -> None:
    alice, bob = store.scoped(ALICE), store.scoped(BOB)
    mine = fill(alice)
    for other in (bob, store):  # another tenant, and the single-user ('local') view of the same database
        assert other.get_upload("file-1") is None and other.get_upload("digitalocean:file-1") is None
        assert other.find_reusable_upload(SHA, datetime.now(UTC)) is None
        assert other.get_job("batch-1") is None and other.get_job("digitalocean:batch-1") is None
        assert other.list_jobs() == [] and other.list_groups() == [] and other.pending_submissions() == []
        assert other.find_submission_by_fingerprint(mine["done"].fingerprint) is None
        assert other.get_group(mine["group"].group_id) is None
        assert other.find_group_by_fingerprint("fp-group") is None
        assert other.group_submissions(mine["group"].group_id) == []
        assert other.find_prepared(Path("/in.jsonl")) is None
        for request_id in (mine["done"].request_id, mine["pending"].request_id):
            with pytest.raises(KeyError):
                other.count_conflict(request_id)
            with pytest.raises(KeyError):
                other.discard_submission(request_id)
            with pytest.raises(KeyError):
                other.attach_batch(request_id, job("batch-evil"))
        with pytest.raises(KeyError):
            other.record_download("batch-1", Path("/evil"), None)
        with pytest.raises(KeyError):
            other.mark_upload_complete("file-1")
        other.forget_upload("file-1")

    # every guess left alice's rows as they were
    record = alice.get_job("batch-1")
    assert record is not None and record.request_id == mine["done"].request_id and record.output_path is None
    assert alice.get_upload("file-1") is not None and alice.find_reusable_upload(SHA, datetime.now(UTC))
    assert [s.request_id for s in alice.pending_submissions()][0] == mine["pending"].request_id
    assert alice.pending_submissions()[0].conflicts == 0
    assert len(alice.group_submissions(mine["group"].group_id)) == 1
    assert alice.find_prepared(Path("/in.jsonl")) is not None
    # a view with the same account on one backend sees that backend's rows (the key, not the view, is the tenant)
    assert store.scoped({"digitalocean": "acct-alice"}).get_job("batch-1") == record
    assert store.scoped({"openai": "acct-alice"}).get_job("batch-1") is None


def test_the_same_submission_in_two_accounts_is_two_jobs_each_claimed_once(store: JobStore) -> None:
    alice, bob = store.scoped(ALICE), store.scoped(BOB)
    fingerprint = submission_fingerprint(SHA, "openai", "/v1/chat/completions", None)
    held = alice.claim(fingerprint)
    assert held is not None and alice.claim(fingerprint) is None  # one claim per account...
    theirs = bob.claim(fingerprint)
    assert theirs is not None  # ...and one in each account
    first, second = plan(alice, claim=held), plan(bob, claim=theirs)
    assert first.fingerprint == second.fingerprint and first.request_id != second.request_id
    assert alice.find_submission_by_fingerprint(fingerprint) == first
    assert bob.find_submission_by_fingerprint(fingerprint) == second

    # one native id answered to both (an emulator, or two accounts of one provider): two rows, never mixed
    alice.attach_batch(first.request_id, job("batch-same"))
    bob.attach_batch(second.request_id, job("batch-same"))
    bob.upsert_batch(job("batch-same", "completed"))
    mine, theirs_job = alice.get_job("batch-same"), bob.get_job("batch-same")
    assert mine is not None and theirs_job is not None
    assert (mine.status, mine.request_id) == ("in_progress", first.request_id)
    assert (theirs_job.status, theirs_job.request_id) == ("completed", second.request_id)

    # the same bytes uploaded in both accounts: each reuses only its own file_id
    for view, file_id in ((alice, "file-a"), (bob, "file-a")):
        view.record_upload(UploadRecord(file_id=file_id, path=Path("/x"), sha256=SHA, size_bytes=1, line_count=1,
                                        completed_at=datetime.now(UTC)))
    assert alice.get_upload("file-a") is not None and bob.get_upload("file-a") is not None


def test_a_view_writes_nothing_for_a_backend_it_has_no_account_on(store: JobStore) -> None:
    bob = store.scoped(BOB)
    with pytest.raises(NoAccount, match="openai"):
        plan(bob, backend="openai")
    with pytest.raises(NoAccount):
        bob.upsert_batch(job("batch-1", backend="openai"))
    with pytest.raises(NoAccount):
        bob.claim("fp", backend="openai")
    assert bob.pending_submissions() == [] and store.scoped({}).list_jobs() == []
    assert bob.find_reusable_upload(SHA, datetime.now(UTC), backend="openai") is None


def test_the_unscoped_store_is_the_local_account(store: JobStore) -> None:
    submission = plan(store)
    store.attach_batch(submission.request_id, job("batch-1"))
    local = store.scoped({"digitalocean": "local"})
    assert local.get_job("batch-1") == store.get_job("batch-1") is not None
    assert store.scoped({"digitalocean": "acct-alice"}).get_job("batch-1") is None


def test_a_record_without_a_backend_belongs_to_the_views_owner(store: JobStore) -> None:
    both = store.scoped(ALICE)
    both.record_prepared(Path("/p.jsonl"), Path("/p.csv"), "csv", None, SHA)
    assert both.find_prepared(Path("/p.jsonl")) is not None
    assert store.scoped(dict(reversed(list(ALICE.items())))).find_prepared(Path("/p.jsonl")) is not None
    assert store.scoped({"digitalocean": "acct-alice"}).find_prepared(Path("/p.jsonl")) is None  # fails closed
    single = store.scoped({"digitalocean": "acct-x", "openai": "acct-x"})  # one account on every backend
    single.record_prepared(Path("/q.jsonl"), Path("/q.csv"), "csv", None, SHA)
    assert store.scoped({"groq": "acct-x"}).find_prepared(Path("/q.jsonl")) is not None


def test_a_link_is_used_once_by_its_account_before_it_expires(store: JobStore) -> None:
    alice = store.scoped(ALICE)
    token = alice.create_link("upload", {"name": "in.jsonl"}, timedelta(minutes=5))
    assert store.consume_link(token, "download") is None  # another kind
    assert store.consume_link(token, "upload", account="acct-bob") is None  # another account
    assert store.consume_link("x" + token, "upload") is None  # a guessed token
    used = store.consume_link(token, "upload", account="acct-alice+acct-alice-openai")  # the owner's (see .scope)
    assert used is not None and used.payload == {"name": "in.jsonl"} and used.kind == "upload"
    assert store.consume_link(token, "upload") is None  # once only

    now = datetime.now(UTC)
    stale = store.create_link("download", {}, timedelta(seconds=10), account="acct-bob", now=now)
    assert store.consume_link(stale, "download", now=now + timedelta(seconds=11)) is None
    fresh = store.create_link("download", {"job": "j"}, timedelta(seconds=10), account="acct-bob", now=now)
    assert store.consume_link(fresh, "download", account="acct-bob", now=now + timedelta(seconds=9)) is not None
    assert store.purge_links(now=now + timedelta(seconds=11)) == 3
    text = "\n".join(str(tuple(row)) for row in store.database.query("SELECT * FROM links"))
    assert token not in text and stale not in text


def test_concurrent_uses_of_one_link_let_exactly_one_through(store: JobStore) -> None:
    token = store.create_link("upload", {"n": 1}, timedelta(minutes=1))
    wins: list[object] = []
    start = threading.Barrier(8)

    def use() -> None:
        start.wait()
        if store.consume_link(token, "upload") is not None:
            wins.append(1)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert hashlib.sha256(token.encode()).hexdigest() in str(store.database.query("SELECT token_hash FROM links")[0][0])


def test_a_lease_has_one_holder_until_released_or_expired(store: JobStore) -> None:
    now = datetime.now(UTC)
    ttl = timedelta(seconds=30)
    assert store.take_lease("resume", "replica-a", ttl, now=now)
    assert not store.take_lease("resume", "replica-b", ttl, now=now + timedelta(seconds=29))
    assert store.take_lease("resume", "replica-a", ttl, now=now + timedelta(seconds=29))  # taking again renews
    assert store.take_lease("poll", "replica-b", ttl, now=now)  # another lease, another holder
    assert store.renew_lease("resume", "replica-a", ttl, now=now + timedelta(seconds=40))
    assert not store.take_lease("resume", "replica-b", ttl, now=now + timedelta(seconds=60))
    assert store.take_lease("resume", "replica-b", ttl, now=now + timedelta(seconds=71))  # a dead holder's lapsed
    assert not store.renew_lease("resume", "replica-a", ttl)
    store.release_lease("resume", "replica-a")  # releasing a lost lease leaves the new holder's alone
    assert not store.take_lease("resume", "replica-a", ttl, now=now + timedelta(seconds=72))
    store.release_lease("resume", "replica-b")
    assert store.take_lease("resume", "replica-a", ttl)
