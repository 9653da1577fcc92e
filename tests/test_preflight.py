"""The preflight check: the shared corpus of bad files, valid files' figures, limits and unusable paths."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batch_mcp.schemas.preflight import ModelUsage, PreflightReport, Problem, ProblemCode
from batch_mcp.services import input_file
from batch_mcp.services.preflight import Limits, UnusableInput, preflight

CORPUS = Path(__file__).parent / "corpus"
MANIFEST: dict[str, dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text())["cases"]


def chat_line(i: int, model: str = "gpt-4o-mini", custom_id: str | None = None) -> dict[str, Any]:
    return {"custom_id": custom_id or f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]}}


def anthropic_line(i: int, custom_id: str | None = None) -> dict[str, Any]:
    params = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    return {"custom_id": custom_id or f"req-{i}", "params": params}


def write_jsonl(path: Path, lines: list[Any], newline: str = "\n", prefix: bytes = b"") -> Path:
    path.write_bytes(prefix + "".join(json.dumps(line) + newline for line in lines).encode())
    return path


def codes(report: PreflightReport) -> list[tuple[int | None, str, str]]:
    return [(p.line, p.severity, p.code.value) for p in report.problems]


# --- The corpus ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_case(name: str) -> None:
    case = MANIFEST[name]
    report = preflight(CORPUS / name, case.get("provider"), case.get("endpoint"))
    assert report.valid is case["expect_valid"], codes(report)
    if case["expect_code"] is None:
        assert report.problems == []
    else:
        expected = (case["expect_line"], case["expect_severity"], case["expect_code"])
        assert expected in codes(report)


def test_manifest_uses_stable_codes_and_lists_every_corpus_file() -> None:
    known = {code.value for code in ProblemCode}
    assert {case["expect_code"] for case in MANIFEST.values()} - {None} <= known
    assert len(MANIFEST) >= 40
    assert set(MANIFEST) == {p.name for p in CORPUS.iterdir()} - {"manifest.json"}


def test_messages_say_what_to_fix_without_a_line_prefix() -> None:
    for name, case in MANIFEST.items():
        for problem in preflight(CORPUS / name, case.get("provider"), case.get("endpoint")).problems:
            assert not problem.message.startswith("line"), problem.message
            assert ";" in problem.message, problem.message  # "<what is wrong>; <what to change>"


# --- Valid files: figures ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "provider", "endpoint", "models"),
    [
        ("valid_openai_chat.jsonl", "openai", "/v1/chat/completions", {"gpt-4o-mini": 2, "gpt-4.1": 1}),
        ("valid_openai_responses.jsonl", "openai", "/v1/responses", {"gpt-4.1-mini": 3}),
        ("valid_anthropic.jsonl", "anthropic", None, {"claude-sonnet-4-5": 3}),
    ],
)
def test_valid_file_figures(name: str, provider: str, endpoint: str | None, models: dict[str, int]) -> None:
    path = CORPUS / name
    data = path.read_bytes()
    report = preflight(path)
    assert report.valid and report.problems == [] and not report.truncated
    assert (report.provider, report.endpoint, report.models) == (provider, endpoint, models)
    assert report.requests == report.lines == 3 and report.blank_lines == 0
    assert report.bytes == len(data) and report.sha256 == hashlib.sha256(data).hexdigest()
    assert not report.has_bom and report.crlf_lines == 0
    assert 0 < report.estimated_input_tokens < len(data) // 4
    assert report.summary().startswith(f"VALID: {path} ({' '.join(filter(None, (provider, endpoint)))})")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_bom_and_crlf_file_is_valid_and_counted(tmp_path: Path, provider: str) -> None:
    lines = [chat_line(i) if provider == "openai" else anthropic_line(i) for i in range(5)]
    path = write_jsonl(tmp_path / "windows.jsonl", lines, newline="\r\n", prefix=b"\xef\xbb\xbf")
    report = preflight(path)
    assert report.valid and report.provider == provider
    assert report.has_bom and report.crlf_lines == 5 and report.requests == 5
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # the BOM is hashed too
    assert codes(report) == [(1, "warning", "utf8_bom")]


def test_blank_lines_are_counted_and_warned_once(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    path.write_text(f"\n{json.dumps(chat_line(1))}\n   \n{json.dumps(chat_line(2))}\n\n")
    report = preflight(path)
    assert report.valid and report.requests == 2 and report.blank_lines == 3 and report.lines == 5
    assert codes(report) == [(1, "warning", "blank_line")] and report.warning_count == 1


def test_lines_split_across_read_chunks_give_the_same_report(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {name: preflight(CORPUS / name) for name in MANIFEST if name.endswith(".jsonl")}
    monkeypatch.setattr(input_file, "CHUNK", 7)
    for name, report in expected.items():
        assert preflight(CORPUS / name) == report, name


def test_endpoint_argument_implies_openai_and_is_enforced(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", [chat_line(1)])
    assert preflight(path, endpoint="/v1/chat/completions").provider == "openai"
    report = preflight(path, endpoint="/v1/responses")
    assert (report.endpoint, codes(report)) == ("/v1/responses", [(1, "error", "url_mismatch")])


# --- Problem list: cap, count, order, severity ---------------------------------------------------------
def test_problem_list_is_capped_with_a_true_total(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "dups.jsonl", [chat_line(i, custom_id="same") for i in range(30)])
    report = preflight(path)
    assert report.error_count == 29 and len(report.problems) == 20 and report.truncated
    assert [p.line for p in report.problems] == list(range(2, 22))
    assert "first used on line 1" in report.problems[0].message
    small = preflight(path, limits=Limits(max_problems=3))
    assert small.error_count == 29 and len(small.problems) == 3 and small.truncated


def test_errors_are_listed_before_warnings(tmp_path: Path) -> None:
    lines = [chat_line(i, custom_id=f"id.{i}") for i in range(25)] + [{"custom_id": "late"}]
    report = preflight(write_jsonl(tmp_path / "many.jsonl", lines))
    assert report.warning_count == 25 and report.error_count >= 1 and report.truncated
    assert report.problems[-1].line == 26 and report.problems[-1].severity == "error"
    assert sum(p.severity == "warning" for p in report.problems) == 20 - report.error_count


def test_custom_id_format_is_an_error_for_anthropic_and_a_warning_for_openai(tmp_path: Path) -> None:
    openai = preflight(write_jsonl(tmp_path / "o.jsonl", [chat_line(1, custom_id="a/b")]))
    anthropic = preflight(write_jsonl(tmp_path / "a.jsonl", [anthropic_line(1, custom_id="a/b")]))
    assert openai.valid and codes(openai) == [(1, "warning", "custom_id_format")]
    assert not anthropic.valid and codes(anthropic) == [(1, "error", "custom_id_format")]


def test_custom_id_with_a_trailing_newline_is_not_safe(tmp_path: Path) -> None:
    report = preflight(write_jsonl(tmp_path / "nl.jsonl", [anthropic_line(1, custom_id="req-1\n")]))
    assert codes(report) == [(1, "error", "custom_id_format")]


# --- Limits --------------------------------------------------------------------------------------------
def test_request_limit_names_the_first_excess_line_and_stays_valid(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line = '{"custom_id": "r%d", "params": {"model": "m", "max_tokens": 1, "messages": [{}]}}\n'
    path.write_text("".join(line % i for i in range(50_001)))
    report = preflight(path)
    assert report.valid and report.requests == 50_001 and report.models == {"m": 50_001}
    assert codes(report) == [(50_001, "warning", "too_many_requests")] and report.batches == 2
    assert "50,000" in report.problems[0].message and "2 batches in one job group" in report.problems[0].message


@pytest.mark.parametrize("limits", [Limits(max_requests=7), Limits(max_bytes=900),
                                    Limits(max_requests=5, max_bytes=700)], ids=["requests", "bytes", "both"])
def test_a_file_over_one_batch_counts_the_batches_the_split_makes(tmp_path: Path, limits: Limits) -> None:
    from batch_mcp.services.split import split_requests

    lines = [chat_line(i, custom_id=f"r-{i}" + "x" * (i % 13)) for i in range(40)]
    path = write_jsonl(tmp_path / "many.jsonl", lines, prefix=b"\xef\xbb\xbf")
    with path.open("ab") as tail:
        tail.write(b"\n  \n" + json.dumps(chat_line(99)).encode())  # blank lines and no final newline
    report = preflight(path, limits=limits)
    (tmp_path / "parts").mkdir()  # the service makes (and checks) the folder; the split only fills it
    parts = split_requests(path, tmp_path / "parts", limits.max_requests, limits.max_bytes)
    assert report.valid and report.batches == len(parts) > 1, codes(report)
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and report.requests == 41
    over = {code for _, severity, code in codes(report) if severity == "warning"} - {"utf8_bom", "blank_line"}
    expected = {"too_many_requests"} if limits.max_requests < 41 else set()
    assert over == expected | ({"file_too_large"} if report.bytes > limits.max_bytes else set())
    assert f"{len(parts)} batches" in report.summary()


def test_the_limit_warnings_are_listed_even_after_many_other_warnings(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ids.jsonl", [chat_line(i, custom_id=f"id.{i}") for i in range(30)])
    report = preflight(path, limits=Limits(max_requests=10))
    assert report.valid and report.truncated and report.batches == 3
    assert (11, "warning", "too_many_requests") in codes(report)


def test_oversized_sparse_file_is_one_overlong_line_found_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as f:
        f.truncate(201_000_000)
    report = preflight(path)
    assert not report.valid and codes(report) == [(1, "error", "line_too_large")]
    assert report.bytes == 201_000_000 and report.sha256 == "" and report.lines == 0 and report.batches == 0
    assert "over the 200,000,000-byte limit of one batch" in report.problems[0].message


@pytest.mark.parametrize("chunk", [7, 1 << 22])
def test_a_line_longer_than_a_batch_is_an_error_wherever_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              chunk: int) -> None:
    monkeypatch.setattr(input_file, "CHUNK", chunk)
    lines = [chat_line(1), chat_line(2) | {"note": "y" * 600}, chat_line(3)]
    report = preflight(write_jsonl(tmp_path / "long.jsonl", lines), limits=Limits(max_bytes=500))
    assert not report.valid and codes(report) == [(2, "error", "line_too_large")] and report.batches == 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs procfs")
def test_line_limit_also_holds_when_stat_reports_less_than_is_read() -> None:
    report = preflight(Path("/proc/self/status"), limits=Limits(max_bytes=10, require_jsonl_suffix=False))
    assert codes(report) == [(1, "error", "line_too_large")] and report.sha256 == ""


def test_deeply_nested_json_is_invalid_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"custom_id": "a", "params": {"messages": [' + "[" * 5000 + "]" * 5000 + "]}}\n")
    assert codes(preflight(path))[0] == (1, "error", "invalid_json")


def test_line_cut_short_is_named_as_such_even_with_non_ascii_text(tmp_path: Path) -> None:
    line = json.dumps(anthropic_line(1) | {"note": "café, naïve, Zürich"}, ensure_ascii=False)
    path = tmp_path / "cut.jsonl"
    path.write_bytes(line[:-1].encode() + b"\n")
    (problem,) = preflight(path).problems
    assert problem.code == "invalid_json" and problem.message.startswith("the line ends before")


def test_suffix_rule_can_be_turned_off(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "requests.txt", [chat_line(1)])
    assert not preflight(path).valid
    assert preflight(path, limits=Limits(require_jsonl_suffix=False)).valid


# --- Unusable input ------------------------------------------------------------------------------------
def test_missing_path_and_dangling_symlink(tmp_path: Path) -> None:
    with pytest.raises(UnusableInput, match="does not exist"):
        preflight(tmp_path / "nope.jsonl")
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(UnusableInput, match="symlink to a missing target"):
        preflight(tmp_path / "dangling.jsonl")


def test_directory_device_fifo_and_socket_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "s.jsonl"))
        for path, kind in [(tmp_path, "a directory"), (Path("/dev/zero"), "a device"),
                           (fifo, "a named pipe"), (tmp_path / "s.jsonl", "a socket")]:
            with pytest.raises(UnusableInput, match=kind):
                preflight(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "secret.jsonl", [chat_line(1)])
    path.chmod(0)
    with pytest.raises(UnusableInput, match="cannot open"):
        preflight(path)


def test_symlink_is_followed(tmp_path: Path) -> None:
    link = tmp_path / "link.jsonl"
    link.symlink_to(CORPUS / "valid_anthropic.jsonl")
    report = preflight(link)
    assert report.valid and report.path == str(link) and report.requests == 3


@pytest.mark.parametrize(("provider", "endpoint", "match"), [
    ("gemini", None, "unknown provider"),
    (None, "/v1/embeddings", "unsupported endpoint"),
    ("anthropic", "/v1/responses", "take no endpoint"),
])
def test_bad_arguments_are_unusable(provider: str | None, endpoint: str | None, match: str) -> None:
    with pytest.raises(UnusableInput, match=match):
        preflight(CORPUS / "valid_anthropic.jsonl", provider, endpoint)


# --- Report schema and import weight ------------------------------------------------------------------
def test_report_schema_describes_every_field() -> None:
    for model in (PreflightReport, Problem, ModelUsage):
        schema = model.model_json_schema()
        assert all("description" in field for field in schema["properties"].values()), model


def test_summary_of_an_invalid_file_names_the_first_error() -> None:
    summary = preflight(CORPUS / "duplicate_custom_id.jsonl").summary()
    assert summary.startswith("INVALID:") and "First error (line 3): duplicate custom_id 'req-1'" in summary


def test_import_stays_light() -> None:
    code = ("import sys, batch_mcp.services.preflight; "
            "print([m for m in ('mcp', 'httpx2', 'starlette', 'uvicorn') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
