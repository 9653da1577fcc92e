"""DigitalOcean's wire shapes without a network: ``to_job`` on both dialects (statuses, counts, timestamps
with nanoseconds, unknown statuses keep polling, the raw status kept), pages and result links in every
shape, and the rate-limit reset read as an epoch."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx2
import pytest

from batch_mcp.backends.digitalocean.hooks import rate_limit_reset_s
from batch_mcp.backends.digitalocean.wire import WireBatch, WirePage, WireResults, to_job
from batch_mcp.domain import JobStatus

CHAT = "/v1/chat/completions"

OPENAPI_BATCH = {
    "batch_id": "b-1", "status": "completed", "provider": "openai", "endpoint": CHAT, "completion_window": "24h",
    "input_file_id": "f-1", "output_file_id": "o-1", "error_file_id": "", "request_id": "tok_12345678",
    "request_counts": {"total": 10, "completed": 8, "failed": 2}, "metadata": {"team": "support"},
    "errors": None, "created_at": "2026-04-21T17:41:57.123456789Z", "in_progress_at": "2026-04-21T17:42:00Z",
    "finalizing_at": "2026-04-21T17:49:00Z", "completed_at": "2026-04-21T17:49:27.536939587Z",
    "expires_at": "2026-04-22T17:41:57Z", "cancelled_at": None, "failed_at": None,
}
GODO_BATCH = {
    "batch_id": "11f13da9-64a4-fe5b-8567-a23ae3abd3e2", "provider": "anthropic", "file_id": "f-2",
    "completion_window": "24h", "status": "queued", "request_id": "postman-1776793316",
    "request_counts": {"total": 4, "completed": 1, "failed": 0}, "result_available": False,
    "cancel_requested_at": None, "created_at": "2026-04-21T17:41:57Z",
    "updated_at": "2026-04-21T17:49:27.536939587Z", "expires_at": "2026-04-21T17:49:28Z",
}


def test_to_job_reads_the_spec_dialect() -> None:
    job = to_job(WireBatch.model_validate(OPENAPI_BATCH), "digitalocean")
    assert (job.id, job.status, job.raw_status, job.line_format, job.input_ref) == (
        "b-1", JobStatus.COMPLETED, "completed", "openai", "f-1")
    assert job.counts is not None and (job.counts.succeeded, job.counts.failed, job.counts.processing) == (8, 2, 0)
    assert job.client_token == "tok_12345678" and job.metadata == {"team": "support"}
    assert job.created_at == datetime(2026, 4, 21, 17, 41, 57, 123456, tzinfo=UTC)
    assert job.ended_at == datetime(2026, 4, 21, 17, 49, 27, 536939, tzinfo=UTC)
    assert job.results_ready and job.extra["output_file_id"] == "o-1" and "error_file_id" not in job.extra
    assert job.extra["finalizing_at"].startswith("2026-04-21T17:49:00")
    nested = {**OPENAPI_BATCH, "status": "failed", "errors": {"object": "list", "data": [
        {"code": "invalid_input_file", "line": 42, "message": "Line 42: missing custom_id"}]}}
    failed = to_job(WireBatch.model_validate(nested), "digitalocean")
    assert [(e.code, e.line) for e in failed.errors] == [("invalid_input_file", 42)] and not failed.results_ready


def test_to_job_reads_the_godo_dialect() -> None:
    job = to_job(WireBatch.model_validate(GODO_BATCH), "digitalocean")
    assert (job.status, job.raw_status, job.line_format, job.input_ref) == (JobStatus.QUEUED, "queued",
                                                                            "anthropic", "f-2")
    assert job.counts is not None and (job.counts.total, job.counts.succeeded, job.counts.processing) == (4, 1, 3)
    assert job.client_token == "postman-1776793316" and job.ended_at is None and not job.results_ready
    done = to_job(WireBatch.model_validate({**GODO_BATCH, "status": "cancelled", "result_available": True}), "d")
    assert done.status is JobStatus.CANCELLED and done.results_ready
    assert done.ended_at == datetime(2026, 4, 21, 17, 49, 27, 536939, tzinfo=UTC)  # godo's updated_at
    assert done.counts is not None and (done.counts.cancelled, done.counts.processing) == (3, 0)


@pytest.mark.parametrize(("raw", "status"), [
    ("validating", JobStatus.VALIDATING), ("in_progress", JobStatus.IN_PROGRESS), ("finalizing", JobStatus.FINALIZING),
    ("Cancelled", JobStatus.CANCELLED), ("canceling", JobStatus.CANCELLING), ("expired", JobStatus.EXPIRED),
    ("failed", JobStatus.FAILED), ("awaiting_processing", JobStatus.QUEUED), ("warming_up", JobStatus.IN_PROGRESS)])
def test_statuses_map_and_unknown_ones_keep_polling(raw: str, status: JobStatus) -> None:
    job = to_job(WireBatch.model_validate({"id": "b", "status": raw}), "digitalocean")
    assert (job.status, job.raw_status, job.id) == (status, raw, "b")
    assert job.is_terminal is (status in (JobStatus.CANCELLED, JobStatus.EXPIRED, JobStatus.FAILED))
    assert job.counts is None and not job.results_ready


def test_pages_and_result_links_in_every_shape() -> None:
    godo = WirePage.model_validate({"edges": [{"cursor": "c1", "node": GODO_BATCH}],
                                    "page_info": {"endCursor": "c1", "hasNextPage": True}})
    assert [b.batch_id for b in godo.data] == [GODO_BATCH["batch_id"]] and godo.next_cursor == "c1"
    last = WirePage.model_validate({"edges": [], "page_info": {"endCursor": None, "hasNextPage": False}})
    assert last.data == [] and last.next_cursor is None
    spec = WirePage.model_validate({"object": "list", "data": [OPENAPI_BATCH], "last_id": "b-1", "has_more": True})
    assert spec.next_cursor == "b-1"
    assert WirePage.model_validate({"data": [OPENAPI_BATCH], "has_more": False}).next_cursor is None
    links = WireResults.model_validate({"download": {"presigned_url": "https://s/o?sig=1",
                                                     "expires_at": "2026-04-21T18:07:47.228188268Z"},
                                        "output_file_id": "msgbatch_1"})
    assert links.result_available and links.output_url == "https://s/o?sig=1" and links.expires_at is not None
    how_to = WireResults.model_validate({"output_url": "https://s/o", "error_url": "https://s/e"})
    assert (how_to.output_url, how_to.error_url, how_to.result_available) == ("https://s/o", "https://s/e", True)
    assert not WireResults.model_validate({"result_available": False, "output_file_url": None}).result_available


def test_the_rate_limit_reset_is_an_epoch() -> None:
    answer = httpx2.Response(429, headers={"ratelimit-reset": "1000060", "ratelimit-remaining": "0"})
    assert rate_limit_reset_s(answer, now=1_000_000.0) == 60
    assert rate_limit_reset_s(answer, now=2_000_000.0) == 0
    assert rate_limit_reset_s(httpx2.Response(429, headers={"ratelimit-reset": "soon"})) is None
    assert rate_limit_reset_s(httpx2.Response(429)) is None
