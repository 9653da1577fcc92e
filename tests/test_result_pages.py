"""A download's answer links the merged table as a resource read in pages, instead of inlining rows that
clients would truncate; every row is reachable by following ``next``, and long cells are cut on a page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import MCPError

from batch_mcp.backends.digitalocean.wire import WireBatch, to_job
from batch_mcp.sandbox import SandboxServer
from batch_mcp.services.result_pages import CELL_CHARS, ROWS_PER_PAGE, NoResultsTable, results_page
from batch_mcp.store import JobStore

from conftest import mcp_session, settings_for


async def test_the_download_links_its_table_and_every_row_is_read_in_pages(sandbox: SandboxServer,
                                                                           workdir: Path) -> None:
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        batch_id = (await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
                    ).structured_content["batch"]["batch_id"]
        await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 30, "poll_interval_s": 0.05})
        downloaded = await client.call_tool("download_batch_results", {"batch_id": batch_id})
        assert not downloaded.is_error, downloaded.content[0].text
        (link,) = [block for block in downloaded.content if block.type == "resource_link"]
        rows, uri, pages = [], str(link.uri), 0
        while uri:
            page = json.loads((await client.read_resource(uri)).contents[0].text)
            rows += page["rows"]
            pages += 1
            uri = page.get("next")
        with pytest.raises(MCPError) as unknown:
            await client.read_resource("batch://results/digitalocean:nobody-downloaded-this")
    table = Path(downloaded.structured_content["table_jsonl_path"]).read_text().splitlines()
    assert [row["custom_id"] for row in rows] == [json.loads(line)["custom_id"] for line in table]
    assert len(rows) == 300 and pages == -(-300 // ROWS_PER_PAGE)
    assert "download_batch_results first" in unknown.value.message


def test_long_cells_are_cut_on_a_page_and_a_foreign_cursor_is_refused(tmp_path: Path) -> None:
    with JobStore.open(tmp_path / "state") as store:
        store.upsert_batch(to_job(WireBatch.model_validate({"id": "b-1", "status": "completed"}), "digitalocean"))
        csv_path = tmp_path / "b-1.results.csv"
        csv_path.write_text("")
        rows = [{"custom_id": "r-1", "output_text": "x" * (CELL_CHARS + 50)}, {"custom_id": "r-2", "output_text": "ok"}]
        csv_path.with_suffix(".jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        store.record_download("digitalocean:b-1", None, None, csv_path)
        page = results_page(store, "digitalocean:b-1", None)
        with pytest.raises(NoResultsTable, match="not one this server handed out"):
            results_page(store, "digitalocean:b-1", "../../etc")
    assert page.count == 2 and page.cut_cells == 1 and page.next is None
    assert len(page.rows[0]["output_text"]) == CELL_CHARS + 1 and page.rows[1]["output_text"] == "ok"
