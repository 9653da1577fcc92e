"""Every tool through the SDK's real Client, in memory, on both protocol eras, against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import MCPError

from batch_mcp.sandbox import SandboxServer

from conftest import mcp_session, settings_for

ERAS = ["auto", "legacy"]

#: name -> (read_only, destructive, idempotent, open_world). A new tool needs a row; a drift fails.
ANNOTATIONS = {
    "validate_batch_file": (True, None, True, False),
    "upload_batch_file": (False, False, True, True),
    "create_batch": (False, False, True, True),
    "submit_batch": (False, False, True, True),
    "get_batch": (True, None, True, True),
    "wait_for_batch": (True, None, True, True),
    "list_batches": (True, None, True, True),
    "cancel_batch": (False, True, True, True),
    "get_batch_results": (True, None, True, True),
    "download_batch_results": (False, False, True, True),
    "prepare_batch_file": (False, False, True, False),
    "estimate_batch_cost": (True, None, True, False),
    "retry_failed_requests": (False, False, False, True),
}
#: name -> fields its structured output always has.
OUTPUT_REQUIRED = {
    "validate_batch_file": {"valid", "requests", "problems", "sha256"},
    "upload_batch_file": {"file_id", "sha256", "reused"},
    "create_batch": {"batch", "request_id", "reused_existing_job"},
    "submit_batch": {"batch", "request_id", "reused_existing_job"},
    "get_batch": {"batch_id", "status", "next_step", "results_ready"},
    "wait_for_batch": {"batch", "timed_out", "next_step"},
    "list_batches": {"batches", "has_more"},
    "cancel_batch": {"batch_id", "status"},
    "get_batch_results": {"batch_id"},
    "download_batch_results": {"succeeded", "failed", "missing", "next_step", "table_csv_path", "cost"},
    "prepare_batch_file": {"path", "records", "example_prompt", "valid", "next_step"},
    "estimate_batch_cost": {"models", "total_cost", "unknown_models", "prices_as_of"},
    "retry_failed_requests": {"retried", "submitted", "next_step"},
}


def _text(result) -> str:
    return result.content[0].text


async def test_tool_contract(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == set(ANNOTATIONS)
    for name, tool in tools.items():
        hints = tool.annotations
        assert (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint, hints.open_world_hint) \
            == ANNOTATIONS[name], name
        assert tool.description and len(tool.description) > 60, name
        assert tool.title and hints.title == tool.title, name  # langchain shows only the annotation's title
        schema = tool.output_schema
        assert schema and schema["type"] == "object", name
        assert OUTPUT_REQUIRED[name] <= set(schema["properties"]), name
        for prop, spec in tool.input_schema["properties"].items():
            assert "description" in spec or "$ref" in spec or "anyOf" in spec, f"{name}.{prop} undocumented"


@pytest.mark.parametrize("mode", ERAS)
async def test_full_workflow(sandbox: SandboxServer, workdir: Path, mode: str) -> None:
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    async with mcp_session(settings_for(sandbox, workdir), mode=mode) as (client, _):
        report = (await client.call_tool("validate_batch_file", {"path": "data/tickets.jsonl"})).structured_content
        assert report["valid"] and report["requests"] == 300 and report["provider"] == "openai"
        assert report["endpoint"] == "/v1/chat/completions" and report["models"] == {"gpt-4o-mini": 300}

        submitted = (await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})).structured_content
        batch_id = submitted["batch"]["batch_id"]
        assert submitted["reused_existing_job"] is False

        waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60,
                                                           "poll_interval_s": 0.05}, progress_callback=on_progress)
        assert not waited.is_error, _text(waited)
        job = waited.structured_content["batch"]
        assert job["status"] == "completed" and job["terminal"] and job["results_ready"]
        assert job["completed"] + job["failed"] == 300 and job["percent_done"] == 100.0
        assert progress and progress[-1] == (300, 300)

        links = (await client.call_tool("get_batch_results", {"batch_id": batch_id})).structured_content
        assert links["output_file_url"].startswith(sandbox.base_url)

        summary = (await client.call_tool("download_batch_results", {"batch_id": batch_id})).structured_content
        assert summary["succeeded"] == job["completed"] and summary["failed"] == job["failed"]
        assert summary["missing"] == 0
        assert Path(summary["output_path"]).is_file() and Path(summary["output_path"]).is_relative_to(workdir)
        assert sum(summary["error_codes"].values()) == summary["failed"]
        assert summary["usage"]["input_tokens"] > 0 and summary["preview"]

        listed = (await client.call_tool("list_batches", {"limit": 100})).structured_content
        assert batch_id in {b["batch_id"] for b in listed["batches"]}


async def test_anthropic_file_detected_and_run(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        submitted = (await client.call_tool("submit_batch", {"path": "data/reviews-anthropic.jsonl"})
                     ).structured_content
        assert submitted["batch"]["provider"] == "anthropic"
        waited = (await client.call_tool("wait_for_batch", {"batch_id": submitted["batch"]["batch_id"],
                                                            "timeout_s": 60})).structured_content
        assert waited["batch"]["status"] == "completed"
        summary = (await client.call_tool("download_batch_results",
                                          {"batch_id": submitted["batch"]["batch_id"]})).structured_content
        assert summary["succeeded"] + summary["failed"] == 120


async def test_submitting_the_same_file_twice_makes_one_job(sandbox: SandboxServer, workdir: Path) -> None:
    args = {"path": "data/tickets.jsonl", "metadata": [{"key": "run", "value": "twice"}]}
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        jobs_before = sandbox.sandbox.stats()["jobs"]
        first = (await client.call_tool("submit_batch", args)).structured_content
        second = (await client.call_tool("submit_batch", args)).structured_content
        assert second["batch"]["batch_id"] == first["batch"]["batch_id"]
        assert second["reused_existing_job"] is True and second["request_id"] == first["request_id"]
        assert sandbox.sandbox.stats()["jobs"] == jobs_before + 1
        forced = (await client.call_tool("submit_batch", {**args, "new": True})).structured_content
        assert forced["batch"]["batch_id"] != first["batch"]["batch_id"]
        assert sandbox.sandbox.stats()["jobs"] == jobs_before + 2


async def test_upload_then_create_is_idempotent(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        upload = (await client.call_tool("upload_batch_file", {"path": "data/tickets.jsonl"})).structured_content
        again = (await client.call_tool("upload_batch_file", {"path": "data/tickets.jsonl"})).structured_content
        assert again["reused"] is True and again["file_id"] == upload["file_id"]
        args = {"file_id": upload["file_id"], "provider": "openai", "endpoint": "/v1/chat/completions"}
        first = (await client.call_tool("create_batch", args)).structured_content
        second = (await client.call_tool("create_batch", args)).structured_content
        assert first["batch"]["batch_id"] == second["batch"]["batch_id"] and second["reused_existing_job"]
        missing_endpoint = await client.call_tool("create_batch", {"file_id": upload["file_id"],
                                                                   "provider": "openai"})
        assert missing_endpoint.is_error and "endpoint is required" in _text(missing_endpoint)


async def test_wait_timeout_is_a_normal_answer(workdir: Path) -> None:
    from conftest import fast_config

    with SandboxServer(fast_config(validating_s=5.0)) as slow:
        async with mcp_session(settings_for(slow, workdir)) as (client, _):
            batch_id = (await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
                        ).structured_content["batch"]["batch_id"]
            result = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 0.3,
                                                               "poll_interval_s": 0.05})
            assert not result.is_error
            assert result.structured_content["timed_out"] is True
            assert result.structured_content["batch"]["status"] == "validating"
            assert "wait_for_batch again" in result.structured_content["next_step"]
            early_cancel = await client.call_tool("cancel_batch", {"batch_id": batch_id})
            assert early_cancel.is_error and "409" in _text(early_cancel)


async def test_agent_facing_errors(sandbox: SandboxServer, workdir: Path, tmp_path: Path) -> None:
    bad = workdir / "data" / "bad.jsonl"
    bad.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
                   '"body": {"model": "m", "messages": [{"role": "user", "content": "x"}]}}\n{"custom_id": "a"\n')
    outside = tmp_path / "outside.jsonl"
    outside.write_text("{}\n")
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        jobs_before = sandbox.sandbox.stats()["jobs"]
        result = await client.call_tool("submit_batch", {"path": "data/bad.jsonl"})
        assert result.is_error and "line 2" in _text(result) and "nothing was uploaded" in _text(result)

        result = await client.call_tool("validate_batch_file", {"path": str(outside)})
        assert result.is_error and "outside the allowed folders" in _text(result) and "--allow-dir" in _text(result)

        result = await client.call_tool("get_batch", {"batch_id": "11111111-2222-3333-4444-555555555555"})
        assert result.is_error and "404" in _text(result) and "list_batches" in _text(result)

        result = await client.call_tool("get_batch", {"batch_id": "../../etc/passwd"})
        assert result.is_error and "pattern" in _text(result)

        result = await client.call_tool("list_batches", {"limit": 1000})
        assert result.is_error and "100" in _text(result)

        result = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl",
                                                         "metadata": [{"key": "n", "value": 1}]})
        assert result.is_error and "metadata" in _text(result)
        result = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl",
                                                         "metadata": [{"key": f"k{i}", "value": "v"}
                                                                      for i in range(50)]})
        assert result.is_error and "at most 16" in _text(result)
        assert sandbox.sandbox.stats()["jobs"] == jobs_before


async def test_results_before_completion_and_cancel_conflicts(workdir: Path) -> None:
    from conftest import fast_config

    with SandboxServer(fast_config(validating_s=2.0)) as slow:
        async with mcp_session(settings_for(slow, workdir)) as (client, _):
            batch_id = (await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
                        ).structured_content["batch"]["batch_id"]
            early = await client.call_tool("download_batch_results", {"batch_id": batch_id})
            assert early.is_error and "wait_for_batch" in _text(early)
            links = await client.call_tool("get_batch_results", {"batch_id": batch_id})
            assert links.is_error and "412" in _text(links) and "wait" in _text(links)
            slow.sandbox.clock.advance(5)
            await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60})
            late = await client.call_tool("cancel_batch", {"batch_id": batch_id})
            assert late.is_error and "409" in _text(late) and "get_batch" in _text(late)


async def test_cancel_keeps_partial_results(workdir: Path) -> None:
    from conftest import fast_config

    with SandboxServer(fast_config(requests_per_s=200, validating_s=0.0)) as slow:
        async with mcp_session(settings_for(slow, workdir)) as (client, _):
            batch_id = (await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
                        ).structured_content["batch"]["batch_id"]
            await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 0.4,
                                                      "poll_interval_s": 0.05})
            cancelled = await client.call_tool("cancel_batch", {"batch_id": batch_id})
            assert not cancelled.is_error, _text(cancelled)
            assert cancelled.structured_content["status"] in ("cancelling", "cancelled")
            final = (await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 30})
                     ).structured_content["batch"]
            assert final["status"] == "cancelled"
            summary = (await client.call_tool("download_batch_results", {"batch_id": batch_id})).structured_content
            assert 0 < summary["succeeded"] + summary["failed"] < 300
            assert summary["missing"] == 300 - summary["succeeded"] - summary["failed"]


async def test_missing_token_is_explained(workdir: Path) -> None:
    from batch_mcp.config import Settings

    settings = Settings(token=None, allowed_dirs=[workdir], state_dir=workdir.parent / "state")
    async with mcp_session(settings) as (client, _):
        result = await client.call_tool("get_batch", {"batch_id": "abc"})
        assert result.is_error and "MODEL_ACCESS_KEY" in _text(result) and "--sandbox" in _text(result)
        report = await client.call_tool("validate_batch_file", {"path": "data/tickets.jsonl"})
        assert not report.is_error  # local tools work without a token


@pytest.mark.parametrize("mode", ERAS)
async def test_resources(sandbox: SandboxServer, workdir: Path, mode: str) -> None:
    async with mcp_session(settings_for(sandbox, workdir), mode=mode) as (client, _):
        batch_id = (await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "new": True})
                    ).structured_content["batch"]["batch_id"]
        listing = (await client.read_resource("batch://jobs")).contents[0]
        assert listing.mime_type == "application/json"
        jobs = json.loads(listing.text)["jobs"]
        mine = next(j for j in jobs if j["batch_id"] == batch_id)
        assert mine["input_path"].endswith("tickets.jsonl")
        one = (await client.read_resource(f"batch://jobs/{batch_id}")).contents[0]
        assert one.mime_type == "application/json" and json.loads(one.text)["batch_id"] == batch_id
        templates = (await client.list_resource_templates()).resource_templates
        assert sorted(t.uri_template for t in templates) == ["batch://jobs/{batch_id}", "batch://jobs{?cursor}",
                                                          "batch://results/{batch_id}{?cursor}"]
        with pytest.raises(MCPError) as missing:
            await client.read_resource("batch://jobs/00000000-0000-0000-0000-000000000000")
        assert "batch://jobs" in missing.value.message


async def test_prompts(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        names = {p.name for p in (await client.list_prompts()).prompts}
        assert names == {"run_batch", "summarise_batch"}
        prompt = await client.get_prompt("run_batch", {"path": "data/tickets.jsonl", "goal": "triage"})
        text = prompt.messages[0].content.text
        assert "data/tickets.jsonl" in text and "submit_batch" in text and "triage" in text
        summary = await client.get_prompt("summarise_batch", {"batch_id": "b-1"})
        assert "download_batch_results" in summary.messages[0].content.text


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")  # and exactly what 2025-era clients send
async def test_status_changes_notify_legacy_sessions(sandbox: SandboxServer, workdir: Path) -> None:
    seen: list[str] = []

    async def on_message(message) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            seen.append(str(message.params.uri))

    async with mcp_session(settings_for(sandbox, workdir), mode="legacy", message_handler=on_message) as (client, _):
        batch_id = (await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "new": True})
                    ).structured_content["batch"]["batch_id"]
        await client.subscribe_resource(f"batch://jobs/{batch_id}")  # only subscribers hear (test_subscriptions.py)
        await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60, "poll_interval_s": 0.05})
    assert f"batch://jobs/{batch_id}" in seen


async def test_status_changes_reach_modern_listeners(sandbox: SandboxServer, workdir: Path) -> None:
    import anyio

    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        batch_id = (await client.call_tool("submit_batch", {"path": "data/tickets.jsonl", "new": True})
                    ).structured_content["batch"]["batch_id"]
        uri = f"batch://jobs/{batch_id}"
        events = []
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60,
                                                      "poll_interval_s": 0.05})
            with anyio.move_on_after(2):
                async for event in subscription:
                    events.append(event)
                    break
    assert events and str(events[0].uri) == uri


async def test_argument_errors_read_as_instructions(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        result = await client.call_tool("list_batches", {"limit": 0, "status": "done"})
    text = _text(result)
    assert result.is_error and text.startswith("Invalid arguments for list_batches: ")
    assert "limit: Input should be greater than or equal to 1" in text and "status:" in text
    assert "call list_batches again" in text and "pydantic.dev" not in text


async def test_upload_and_create_remember_the_file(sandbox: SandboxServer, workdir: Path) -> None:
    """Jobs made in two steps know their input: the same file submitted later returns them, and retries work."""
    args = {"metadata": [{"key": "route", "value": "two-steps"}]}
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        upload = (await client.call_tool("upload_batch_file", {"path": "data/reviews-anthropic.jsonl"})
                  ).structured_content
        created = (await client.call_tool("create_batch", {"file_id": upload["file_id"], "provider": "anthropic",
                                                           **args})).structured_content
        submitted = (await client.call_tool("submit_batch", {"path": "data/reviews-anthropic.jsonl", **args})
                     ).structured_content
        assert submitted["batch"]["batch_id"] == created["batch"]["batch_id"] and submitted["reused_existing_job"]
        await client.call_tool("wait_for_batch", {"batch_id": created["batch"]["batch_id"], "timeout_s": 60})
        retry = await client.call_tool("retry_failed_requests", {"batch_id": created["batch"]["batch_id"]})
        assert not retry.is_error, _text(retry)


async def test_state_from_another_account_does_not_block_submitting(workdir: Path) -> None:
    from conftest import fast_config

    settings = {"state_dir": workdir.parent / "shared-state"}
    with SandboxServer(fast_config()) as first:
        async with mcp_session(settings_for(first, workdir, **settings)) as (client, _):
            assert not (await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})).is_error
    with SandboxServer(fast_config()) as second:  # a new account: it knows neither that job nor that file
        async with mcp_session(settings_for(second, workdir, **settings)) as (client, _):
            result = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
            assert not result.is_error, _text(result)
            assert second.sandbox.stats()["jobs"] == 1 and second.sandbox.stats()["uploaded_files"] == 1


async def test_results_of_a_failed_job_are_explained(sandbox: SandboxServer, workdir: Path) -> None:
    from conftest import fast_config

    with SandboxServer(fast_config(max_requests=10)) as strict:  # the service refuses the 300-line file
        async with mcp_session(settings_for(strict, workdir)) as (client, _):
            batch_id = (await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
                        ).structured_content["batch"]["batch_id"]
            await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60})
            links = await client.call_tool("get_batch_results", {"batch_id": batch_id})
    assert links.is_error and "will never have results" in _text(links) and "submit_batch" in _text(links)


async def test_a_file_changed_during_upload_is_not_submitted(sandbox: SandboxServer, workdir: Path) -> None:
    from batch_mcp.server import open_app_state
    from batch_mcp.services.errors import FileChanged

    path = workdir / "data" / "tickets.jsonl"
    original = path.read_text()

    async def edit_while_uploading(sent: int, total: int) -> None:
        path.write_text(original + original.splitlines()[0].replace("ticket-0001", "ticket-9999") + "\n")

    jobs = sandbox.sandbox.stats()["jobs"]
    async with open_app_state(settings_for(sandbox, workdir, state_dir=workdir.parent / "changed")) as state:
        with pytest.raises(FileChanged) as changed:
            await state.service.submit("data/tickets.jsonl", new=True, on_progress=edit_while_uploading)
        assert "nothing was submitted" in str(changed.value)
        assert sandbox.sandbox.stats()["jobs"] == jobs
        again = await state.service.submit("data/tickets.jsonl", new=True)  # the edited file, checked afresh
        assert again.requests == 301
