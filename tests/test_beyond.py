"""What other batch tools lack: prepare from data, split oversized input, results tables, retries, cost."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from batch_mcp.sandbox import SandboxServer

from conftest import fast_config, mcp_session, settings_for


def _text(result) -> str:
    return result.content[0].text


def _rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


async def _run(client, tool: str, **args) -> dict:
    result = await client.call_tool(tool, args)
    assert not result.is_error, _text(result)
    return result.structured_content


async def test_prepare_from_csv_submit_and_get_a_joined_table(sandbox: SandboxServer, workdir: Path) -> None:
    reviews = workdir / "data" / "reviews.csv"
    reviews.write_text("review_id,product,review\nr-1,kettle,Boils fast and looks great.\n"
                       "r-2,toaster,\"Burns one side, \"\"meh\"\".\"\n,,\nr-3,blender,Loud but strong.\n")
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        prepared = await _run(client, "prepare_batch_file", source="data/reviews.csv", model="gpt-4o-mini",
                              prompt="Summarise this {product} review in one sentence: {review}",
                              system="You are concise.", id_column="review_id", max_tokens=60)
        assert prepared["valid"] and prepared["records"] == 3 and prepared["skipped_blank"] == 1
        assert prepared["example_prompt"] == "Summarise this kettle review in one sentence: Boils fast and looks great."
        assert prepared["example_line"]["custom_id"] == "r-1"
        assert prepared["estimated_cost"]["models"][0]["model"] == "gpt-4o-mini"
        path = prepared["path"]
        assert path.endswith("reviews.batch.jsonl")
        assert [json.loads(line)["custom_id"] for line in Path(path).read_text().splitlines()] == ["r-1", "r-2", "r-3"]

        batch_id = (await _run(client, "submit_batch", path=path))["batch"]["batch_id"]
        await _run(client, "wait_for_batch", batch_id=batch_id, timeout_s=60)
        summary = await _run(client, "download_batch_results", batch_id=batch_id)
        rows = _rows(summary["table_csv_path"])
        assert [r["custom_id"] for r in rows] == ["r-1", "r-2", "r-3"]
        assert rows[1]["product"] == "toaster" and rows[1]["review"] == 'Burns one side, "meh".'
        assert {r["status"] for r in rows} <= {"succeeded", "failed"}
        assert all(r["output_text"] for r in rows if r["status"] == "succeeded")
        jsonl_rows = [json.loads(line) for line in Path(summary["table_jsonl_path"]).read_text().splitlines()]
        assert [r["custom_id"] for r in jsonl_rows] == ["r-1", "r-2", "r-3"]


@pytest.mark.parametrize(("content", "args", "expected"), [
    ("id,text\n1,a\n", {"prompt": "Say {missing}"}, "names column(s) missing"),
    ("id,text\n1,a\n", {"prompt": "No placeholder"}, "names no column"),
    ("id,text\n1,\n", {"prompt": "Say {text}"}, "Row 2 has an empty value for text"),
    ("id,text\n1,a,extra\n", {"prompt": "Say {text}"}, "Row 2"),
    ("id,text\n1,a\n1,b\n", {"prompt": "Say {text}", "id_column": "id"}, "used twice"),
    ("id,text\nbad id!,a\n", {"prompt": "Say {text}", "id_column": "id"}, "not 1-64 letters"),
    ("id,text\n", {"prompt": "Say {text}"}, "no records"),
    ("id,text\n1,Jos\xe9 tr\xe8s bien\n".encode("latin-1"), {"prompt": "Say {text}"}, "not UTF-8"),
])
async def test_prepare_explains_bad_records_and_templates(sandbox: SandboxServer, workdir: Path,
                                                          content: str | bytes, args: dict, expected: str) -> None:
    source = workdir / "data" / "in.csv"
    source.write_bytes(content if isinstance(content, bytes) else content.encode())
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        result = await client.call_tool("prepare_batch_file", {"source": "data/in.csv", "model": "gpt-4o-mini",
                                                               **args})
    assert result.is_error and expected in _text(result)
    assert not (workdir / "data" / "in.batch.jsonl").exists()


async def test_prepare_from_text_and_jsonl_for_anthropic(sandbox: SandboxServer, workdir: Path) -> None:
    (workdir / "data" / "notes.txt").write_text("first note\n\nsecond note\n")
    (workdir / "data" / "items.jsonl").write_text('{"name": "a", "size": 3}\n{"name": "b", "size": 5}\n')
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        text = await _run(client, "prepare_batch_file", source="data/notes.txt", provider="anthropic",
                          model="claude-3-5-haiku-latest", prompt="Translate to French: {text}")
        assert text["records"] == 2 and text["columns"] == ["text"] and text["valid"]
        line = text["example_line"]
        assert line["params"]["max_tokens"] == 1024 and line["custom_id"] == "row-1"
        items = await _run(client, "prepare_batch_file", source="data/items.jsonl", model="gpt-4o-mini",
                           endpoint="/v1/responses", prompt="Describe {name} of size {size}")
        assert items["example_line"]["body"]["input"] == "Describe a of size 3"
        again = await client.call_tool("prepare_batch_file", {"source": "data/items.jsonl", "model": "m",
                                                              "prompt": "{name}"})
        assert again.is_error and "overwrite=true" in _text(again)


async def test_oversized_input_runs_as_one_job_group(sandbox: SandboxServer, workdir: Path) -> None:
    settings = settings_for(sandbox, workdir, max_requests=100)
    async with mcp_session(settings) as (client, _):
        jobs_before = sandbox.sandbox.stats()["jobs"]
        submitted = await _run(client, "submit_batch", path="data/tickets.jsonl")
        group = submitted["batch"]
        assert group["batch_id"].startswith("group-") and len(group["parts"]) == 3
        assert sandbox.sandbox.stats()["jobs"] == jobs_before + 3
        assert "job group" in submitted["warnings"][0]
        again = await _run(client, "submit_batch", path="data/tickets.jsonl")
        assert again["batch"]["batch_id"] == group["batch_id"] and again["reused_existing_job"]
        assert sandbox.sandbox.stats()["jobs"] == jobs_before + 3

        waited = await _run(client, "wait_for_batch", batch_id=group["batch_id"], timeout_s=60)
        assert waited["batch"]["status"] == "completed" and waited["batch"]["total"] == 300
        links = await _run(client, "get_batch_results", batch_id=group["batch_id"])
        assert len(links["parts"]) == 3
        summary = await _run(client, "download_batch_results", batch_id=group["batch_id"])
        assert summary["succeeded"] + summary["failed"] == 300 and summary["missing"] == 0
        rows = _rows(summary["table_csv_path"])
        assert len(rows) == 300 and rows[0]["custom_id"] == "ticket-0001" and rows[0]["prompt"]
        listing = json.loads((await client.read_resource("batch://jobs")).contents[0].text)["jobs"]
        assert any(j["batch_id"] == group["batch_id"] and j["total"] == 300 for j in listing)
        one = json.loads((await client.read_resource(f"batch://jobs/{group['batch_id']}")).contents[0].text)
        assert one["parts"] == group["parts"]


async def test_cancelling_a_group_cancels_its_parts(workdir: Path) -> None:
    with SandboxServer(fast_config(requests_per_s=50, validating_s=0.0, queued_s=0.0)) as slow:
        async with mcp_session(settings_for(slow, workdir, max_requests=150)) as (client, _):
            group_id = (await _run(client, "submit_batch", path="data/tickets.jsonl"))["batch"]["batch_id"]
            await _run(client, "wait_for_batch", batch_id=group_id, timeout_s=0.3, poll_interval_s=0.05)
            cancelled = await _run(client, "cancel_batch", batch_id=group_id)
            assert cancelled["status"] in ("cancelling", "cancelled")
            final = (await _run(client, "wait_for_batch", batch_id=group_id, timeout_s=30))["batch"]
            assert final["status"] == "cancelled"


async def test_retrying_failures_converges_on_complete_results(workdir: Path) -> None:
    with SandboxServer(fast_config(failure_rate=0.3)) as flaky:
        async with mcp_session(settings_for(flaky, workdir)) as (client, _):
            job = (await _run(client, "submit_batch", path="data/tickets.jsonl"))["batch"]["batch_id"]
            await _run(client, "wait_for_batch", batch_id=job, timeout_s=60)
            summary = await _run(client, "download_batch_results", batch_id=job)
            assert summary["failed"] > 0
            succeeded = summary["succeeded"]
            for _ in range(12):  # a request fails each round with p=0.3: 12 rounds leave ~5e-7 odds
                retry = await _run(client, "retry_failed_requests", batch_id=job)
                if retry["retried"] == 0:
                    break
                assert retry["retried"] == 300 - succeeded and Path(retry["retry_file"]).exists()
                child = retry["submitted"]["batch"]["batch_id"]
                assert (await _run(client, "get_batch", batch_id=child))["parent_batch_id"] == job
                await _run(client, "wait_for_batch", batch_id=child, timeout_s=60)
                merged = await _run(client, "download_batch_results", batch_id=child)
                assert merged["succeeded"] + merged["failed"] + merged["missing"] == 300
                assert merged["succeeded"] >= succeeded  # a success is never replaced by a later failure
                succeeded, job = merged["succeeded"], child
            assert succeeded == 300
            rows = _rows(merged["table_csv_path"])
            assert len(rows) == 300 and all(r["status"] == "succeeded" for r in rows)


async def test_retry_covers_requests_with_no_result(workdir: Path) -> None:
    with SandboxServer(fast_config(requests_per_s=200, validating_s=0.0, failure_rate=0.0)) as slow:
        async with mcp_session(settings_for(slow, workdir)) as (client, _):
            job = (await _run(client, "submit_batch", path="data/tickets.jsonl"))["batch"]["batch_id"]
            await _run(client, "wait_for_batch", batch_id=job, timeout_s=0.4, poll_interval_s=0.05)
            await _run(client, "cancel_batch", batch_id=job)
            await _run(client, "wait_for_batch", batch_id=job, timeout_s=30)
            retry = await _run(client, "retry_failed_requests", batch_id=job)
            assert retry["missing"] > 0 and retry["failed"] == 0 and retry["retried"] == retry["missing"]
            running = await client.call_tool("retry_failed_requests",
                                             {"batch_id": retry["submitted"]["batch"]["batch_id"]})
            assert running.is_error and "wait_for_batch" in _text(running)


async def test_cost_estimate_and_actual(sandbox: SandboxServer, workdir: Path) -> None:
    unknown = workdir / "data" / "unknown-model.jsonl"
    unknown.write_text(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                                   "body": {"model": "mystery-model-9", "messages": [{"role": "user",
                                                                                      "content": "hi"}]}}) + "\n")
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        estimate = await _run(client, "estimate_batch_cost", path="data/tickets.jsonl")
        model = estimate["models"][0]
        assert model["model"] == "gpt-4o-mini" and model["priced"] and model["requests"] == 300
        assert model["output_tokens"] == 300 * 120  # each ticket asks for at most 120 tokens
        assert estimate["total_cost"] > 0 and estimate["batch_discount"] == 0.5 and estimate["estimated"]
        anthropic = await _run(client, "estimate_batch_cost", path="data/reviews-anthropic.jsonl")
        assert anthropic["models"][0]["priced"]  # claude-3-5-haiku-latest matches claude-3-5-haiku

        mystery = await _run(client, "estimate_batch_cost", path="data/unknown-model.jsonl")
        assert mystery["total_cost"] is None and mystery["unknown_models"] == ["mystery-model-9"]
        assert "mystery-model-9" in mystery["note"]

        batch_id = (await _run(client, "submit_batch", path="data/tickets.jsonl", new=True))["batch"]["batch_id"]
        await _run(client, "wait_for_batch", batch_id=batch_id, timeout_s=60)
        summary = await _run(client, "download_batch_results", batch_id=batch_id)
        actual = summary["cost"]
        assert actual["estimated"] is False and actual["total_cost"] > 0
        assert actual["models"][0]["input_tokens"] == summary["usage"]["input_tokens"]
        viewed = await _run(client, "get_batch", batch_id=batch_id)
        assert viewed["cost"]["total_cost"] == actual["total_cost"]


async def test_asking_twice_for_a_retry_makes_one_job(workdir: Path) -> None:
    with SandboxServer(fast_config(failure_rate=0.3)) as flaky:
        async with mcp_session(settings_for(flaky, workdir)) as (client, _):
            job = (await _run(client, "submit_batch", path="data/tickets.jsonl"))["batch"]["batch_id"]
            await _run(client, "wait_for_batch", batch_id=job, timeout_s=60)
            first = await _run(client, "retry_failed_requests", batch_id=job)
            jobs = flaky.sandbox.stats()["jobs"]
            second = await _run(client, "retry_failed_requests", batch_id=job)
            assert second["submitted"]["batch"]["batch_id"] == first["submitted"]["batch"]["batch_id"]
            assert second["submitted"]["reused_existing_job"] and flaky.sandbox.stats()["jobs"] == jobs


async def test_retrying_a_group_merges_with_its_parts(workdir: Path) -> None:
    with SandboxServer(fast_config(failure_rate=0.3)) as flaky:
        async with mcp_session(settings_for(flaky, workdir, max_requests=100)) as (client, _):
            group = (await _run(client, "submit_batch", path="data/tickets.jsonl"))["batch"]["batch_id"]
            await _run(client, "wait_for_batch", batch_id=group, timeout_s=60)
            before = await _run(client, "download_batch_results", batch_id=group)
            retry = await _run(client, "retry_failed_requests", batch_id=group)
            child = retry["submitted"]["batch"]["batch_id"]
            assert retry["retried"] == before["failed"] > 0
            assert (await _run(client, "get_batch", batch_id=child))["parent_batch_id"] == group
            await _run(client, "wait_for_batch", batch_id=child, timeout_s=60)
            merged = await _run(client, "download_batch_results", batch_id=child)
            assert merged["succeeded"] + merged["failed"] == 300 and merged["succeeded"] >= before["succeeded"]
            assert len(_rows(merged["table_csv_path"])) == 300


async def test_a_group_with_a_failed_part_still_delivers_the_rest(workdir: Path) -> None:
    with SandboxServer(fast_config(max_requests=150, failure_rate=0.0)) as strict:  # the service refuses part 1
        async with mcp_session(settings_for(strict, workdir, max_requests=200)) as (client, _):
            group = (await _run(client, "submit_batch", path="data/tickets.jsonl"))["batch"]["batch_id"]
            view = (await _run(client, "wait_for_batch", batch_id=group, timeout_s=60))["batch"]
            assert view["status"] == "completed" and len(view["failed_parts"]) == 1 and view["total"] == 300
            assert "retry_failed_requests" in view["next_step"] and view["errors"]
            summary = await _run(client, "download_batch_results", batch_id=group)
            assert summary["succeeded"] == 100 and summary["missing"] == 200
            retry = await _run(client, "retry_failed_requests", batch_id=group)
            assert retry["missing"] == 200 and retry["failed"] == 0


async def test_a_retry_round_that_fails_entirely_still_gets_a_new_round(sandbox: SandboxServer,
                                                                        workdir: Path) -> None:
    """Round 2 reruns the very requests round 1 did: same file content, but a new job (its parent differs)."""
    (workdir / "data" / "doomed.jsonl").write_text(json.dumps({
        "custom_id": "doomed", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "[[fail]] always"}]}}) + "\n")
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        job = (await _run(client, "submit_batch", path="data/doomed.jsonl"))["batch"]["batch_id"]
        seen = [job]
        for _ in range(2):
            await _run(client, "wait_for_batch", batch_id=job, timeout_s=60)
            retry = await _run(client, "retry_failed_requests", batch_id=job)
            assert retry["retried"] == 1 and not retry["submitted"]["reused_existing_job"]
            job = retry["submitted"]["batch"]["batch_id"]
            assert job not in seen
            seen.append(job)


async def test_a_retry_too_big_for_one_batch_runs_as_a_linked_group(workdir: Path) -> None:
    with SandboxServer(fast_config(failure_rate=0.5)) as flaky:
        async with mcp_session(settings_for(flaky, workdir, max_requests=60)) as (client, _):
            group = (await _run(client, "submit_batch", path="data/tickets.jsonl"))["batch"]["batch_id"]
            await _run(client, "wait_for_batch", batch_id=group, timeout_s=60)
            before = await _run(client, "download_batch_results", batch_id=group)
            retry = await _run(client, "retry_failed_requests", batch_id=group)
            child = retry["submitted"]["batch"]
            assert retry["retried"] > 60 and child["batch_id"].startswith("group-")  # over one batch's limit
            assert child["parent_batch_id"] == group
            await _run(client, "wait_for_batch", batch_id=child["batch_id"], timeout_s=60)
            merged = await _run(client, "download_batch_results", batch_id=child["batch_id"])
            assert merged["succeeded"] + merged["failed"] == 300 and merged["succeeded"] > before["succeeded"]


async def test_a_source_changed_after_prepare_is_not_joined_wrongly(sandbox: SandboxServer, workdir: Path) -> None:
    reviews = workdir / "data" / "reviews.csv"
    reviews.write_text("review_id,review\nr-1,Great kettle.\nr-2,Awful toaster.\n")
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        prepared = await _run(client, "prepare_batch_file", source="data/reviews.csv", model="gpt-4o-mini",
                              prompt="Sentiment of: {review}")
        batch_id = (await _run(client, "submit_batch", path=prepared["path"]))["batch"]["batch_id"]
        await _run(client, "wait_for_batch", batch_id=batch_id, timeout_s=60)
        reviews.write_text("review_id,review\nr-2,Awful toaster.\nr-1,Great kettle.\n")  # sorted by the user
        summary = await _run(client, "download_batch_results", batch_id=batch_id)
        rows = _rows(summary["table_csv_path"])
        assert "changed after the request file was prepared" in summary["warnings"][0]
        assert rows[0]["custom_id"] == "row-1" and rows[0]["prompt"] == "Sentiment of: Great kettle."
        assert "review" not in rows[0]

        Path(prepared["path"]).write_text("")  # the request file itself is gone too: no join, no retry
        again = await _run(client, "download_batch_results", batch_id=batch_id, overwrite=True)
        assert "changed after it was submitted" in again["warnings"][0]
        retry = await client.call_tool("retry_failed_requests", {"batch_id": batch_id})
        assert retry.is_error and "changed after it was submitted" in _text(retry)
