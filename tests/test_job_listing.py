"""batch://jobs pages through every job this server made, each in brief; list_batches lists in brief too."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path

import pytest
from mcp import Client, MCPError

from batch_mcp.sandbox import SandboxServer
from batch_mcp.schemas.jobs import JobSummary

from conftest import mcp_session, settings_for

#: Fields a brief entry may carry; the full view (errors, next_step, metadata, cost, ...) is not among them.
BRIEF = set(JobSummary.model_fields)


async def _read(client: Client, uri: str) -> tuple[dict, int]:
    text = (await client.read_resource(uri)).contents[0].text
    return json.loads(text), len(text.encode())


async def _every_page(client: Client) -> list[dict]:
    """Follow `next` from batch://jobs to the last page; each page stays small."""
    pages, uri = [], "batch://jobs"
    while uri:
        page, size = await _read(client, uri)
        paths = sum(len(job.get("input_path", "")) for job in page["jobs"])  # long in a test's temporary folder
        assert page["count"] == len(page["jobs"]) <= 50 and size - paths < 12_000, (page["count"], size)
        assert all(set(job) <= BRIEF for job in page["jobs"])
        pages.append(page)
        uri = page.get("next")
    return pages


async def test_batch_jobs_pages_through_every_job(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir, max_requests=200)) as (client, state):
        group = (await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})).structured_content
        group_id = group["batch"]["batch_id"]
        upload = await client.call_tool("upload_batch_file", {"path": "data/reviews-anthropic.jsonl"})
        file_id = upload.structured_content["file_id"]
        singles = [(await state.service.create(file_id, "anthropic", new=True)).batch.batch_id for _ in range(110)]
        made = {group_id, *group["batch"]["parts"], *singles}

        pages = await _every_page(client)
        listed = [job["batch_id"] for page in pages for job in page["jobs"]]
        assert len(listed) == len(set(listed)) and set(listed) == made and len(pages) == 3
        keys = [(datetime.fromisoformat(job["created_at"]), job["batch_id"]) for page in pages for job in page["jobs"]]
        assert keys == sorted(keys, reverse=True)  # newest first, across pages
        first = (await _read(client, "batch://jobs?cursor="))[0]  # an empty cursor: the first page
        assert [job["batch_id"] for job in first["jobs"]] == [job["batch_id"] for job in pages[0]["jobs"]]
        entry = {job["batch_id"]: job for page in pages for job in page["jobs"]}
        assert entry[group_id]["parts"] == 2 and entry[group["batch"]["parts"][0]]["group_id"] == group_id
        assert entry[singles[0]]["input_path"].endswith("reviews-anthropic.jsonl")

        # a job submitted while paging shows up on a fresh first page, and moves nothing on the later ones
        second_page = pages[0]["next"]
        newest = (await state.service.create(file_id, "anthropic", new=True)).batch.batch_id
        again, _ = await _read(client, second_page)
        assert again["jobs"] == pages[1]["jobs"]
        assert (await _read(client, "batch://jobs"))[0]["jobs"][0]["batch_id"] == newest


def _token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", ["nonsense", "a%20b", _token(["x"]), _token([]), _token({"a": 1}),
                                    _token(["2026-01-01T00:00:00", "b"]), _token(["2026-01-01T00:00:00+00:00", 1])])
async def test_a_cursor_not_handed_out_is_refused_clearly(sandbox: SandboxServer, workdir: Path,
                                                          cursor: str) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        with pytest.raises(MCPError) as refused:
            await client.read_resource(f"batch://jobs?cursor={cursor}")
        assert refused.value.code == -32602 and "handed out; read batch://jobs" in refused.value.message


async def test_list_batches_lists_in_brief(sandbox: SandboxServer, workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, state):
        upload = await client.call_tool("upload_batch_file", {"path": "data/tickets.jsonl"})
        file_id = upload.structured_content["file_id"]
        for _ in range(100):
            await state.service.create(file_id, "openai", "/v1/chat/completions", new=True)
        listed = await client.call_tool("list_batches", {"limit": 100})
    batches = listed.structured_content["batches"]
    assert len(batches) == 100 and all(set(job) <= BRIEF for job in batches)
    assert batches[0]["input_path"].endswith("tickets.jsonl")
    paths = sum(len(job["input_path"]) for job in batches)  # as long as the test's temporary folder makes them
    assert len(listed.content[0].text) - paths < 30_000  # 69 KB when each entry was the full view
