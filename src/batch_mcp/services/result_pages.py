"""A downloaded job's merged results table, read back a page at a time for the ``batch://results`` resource.

Clients truncate long tool results (50-131 KB caps are common in 2026), so a download's answer carries a
preview and links; the rows themselves are read here, a bounded page at a time, with long cells cut.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from batch_mcp.domain import Ref
from batch_mcp.schemas.jobs import RESULTS_URI, ResultsPage
from batch_mcp.services.lineage import is_group_id
from batch_mcp.store import JobStore

ROWS_PER_PAGE = 100
#: A cell longer than this is cut on a page (the CSV and JSONL files keep it whole).
CELL_CHARS = 1_000


class NoResultsTable(Exception):
    """The job has no downloaded results table (yet), or its page cursor is not one this server gave."""


def results_uri(batch_id: str, after: int | None = None) -> str:
    return f"{RESULTS_URI}/{batch_id}" + (f"?cursor={after}" if after else "")


def table_of(store: JobStore, batch_id: str) -> Path | None:
    """The merged table's CSV path, as recorded by the download (a group's is kept on each of its parts)."""
    if is_group_id(batch_id):
        parts = [s for s in store.group_submissions(batch_id) if s.batch_id]
        records = (store.get_job(str(Ref(s.backend, s.batch_id))) for s in parts)
        return next((record.table_path for record in records if record and record.table_path), None)
    record = store.get_job(batch_id)
    return record.table_path if record else None


def results_page(store: JobStore, batch_id: str, cursor: str | None, size: int = ROWS_PER_PAGE) -> ResultsPage:
    table = table_of(store, batch_id)
    jsonl = table.with_suffix(".jsonl") if table else None
    if table is None or jsonl is None or not jsonl.is_file():
        raise NoResultsTable(f"Job {batch_id} has no downloaded results table here: call download_batch_results "
                             "first, then read this resource.")
    if cursor is not None and not cursor.isdigit():
        raise NoResultsTable(f"The cursor {cursor[:40]!r} is not one this server handed out; start at "
                             f"{results_uri(batch_id)} and follow `next`.")
    start = int(cursor or 0)
    with jsonl.open(encoding="utf-8") as lines:
        page = [json.loads(line) for line in islice(lines, start, start + size + 1)]
    more = len(page) > size
    rows, cut = [], 0
    for row in page[:size]:
        for key, value in row.items():
            if isinstance(value, str) and len(value) > CELL_CHARS:
                row[key], cut = value[:CELL_CHARS] + "…", cut + 1
        rows.append(row)
    return ResultsPage(batch_id=batch_id, rows=rows, first_row=start + 1, count=len(rows), cut_cells=cut,
                       next=results_uri(batch_id, start + size) if more else None, table_csv_path=str(table),
                       table_jsonl_path=str(jsonl))
