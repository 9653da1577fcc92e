"""The preflight checks a file against one backend's Capabilities: its endpoints, line formats, limits and
model rule come from that record, and the report names the backend and the facts it applied."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batch_mcp.backends import digitalocean
from batch_mcp.backends.registry import CATALOG
from batch_mcp.services.preflight import Limits, UnusableInput, preflight

CHAT = "/v1/chat/completions"


def caps(name: str):  # noqa: ANN201 - the record of one backend
    return CATALOG[name].capabilities


def chat_line(n: int, model: str = "gpt-4o-mini", url: str = CHAT) -> dict:
    return {"custom_id": f"req-{n}", "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": f"q{n}"}], "max_tokens": 8}}


def anthropic_line(n: int) -> dict:
    return {"custom_id": f"req-{n}", "params": {"model": "claude-haiku-4-5", "max_tokens": 8,
                                                 "messages": [{"role": "user", "content": "hi"}]}}


def write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def codes(report) -> list[tuple[int | None, str, str]]:  # noqa: ANN001
    return [(p.line, p.severity, p.code) for p in report.problems]


def test_default_is_digitalocean_and_the_report_names_it(tmp_path: Path) -> None:
    report = preflight(write(tmp_path / "a.jsonl", [chat_line(1), chat_line(2, "gpt-4.1")]))
    assert report.valid  # DigitalOcean lets each line choose its model
    assert report.backend is not None and report.backend.name == "digitalocean"
    assert report.backend.max_requests == digitalocean.CAPABILITIES.max_requests
    assert report.backend.endpoints == list(digitalocean.CAPABILITIES.endpoints)
    assert "checked for DigitalOcean" in report.summary()


def test_openai_runs_one_model_per_file(tmp_path: Path) -> None:
    lines = [chat_line(1), chat_line(2, "gpt-4.1"), chat_line(3, "gpt-4.1"), chat_line(4)]
    report = preflight(write(tmp_path / "m.jsonl", lines), limits=Limits.of(caps("openai")))
    assert not report.valid and codes(report) == [(2, "error", "mixed_models")]
    message = report.problems[0].message
    assert "'gpt-4.1' differs from 'gpt-4o-mini', used from line 1" in message and "OpenAI" in message
    assert report.backend.one_model_per_file and report.backend.label == "OpenAI"


def test_openai_endpoints_beyond_digitalocean(tmp_path: Path) -> None:
    embeddings = [{"custom_id": "e-1", "method": "POST", "url": "/v1/embeddings",
                   "body": {"model": "text-embedding-3-small", "input": "hello"}}]
    path = write(tmp_path / "e.jsonl", embeddings)
    assert preflight(path, limits=Limits.of(caps("openai"))).valid
    on_do = preflight(path)
    assert codes(on_do) == [(1, "error", "unsupported_endpoint")]
    assert "/v1/chat/completions, /v1/responses" in on_do.problems[0].message
    no_input = write(tmp_path / "n.jsonl", [{**embeddings[0], "body": {"model": "text-embedding-3-small"}}])
    assert codes(preflight(no_input, limits=Limits.of(caps("openai")))) == [(1, "error", "missing_input")]


def test_groq_runs_chat_only_and_names_what_it_accepts(tmp_path: Path) -> None:
    path = write(tmp_path / "r.jsonl", [{"custom_id": "r-1", "method": "POST", "url": "/v1/responses",
                                         "body": {"model": "llama-3.1-8b-instant", "input": "hi"}}])
    report = preflight(path, limits=Limits.of(caps("groq")))
    assert codes(report) == [(1, "error", "unsupported_endpoint")]
    message = report.problems[0].message
    assert "Groq does not run batches for '/v1/responses'; it accepts /v1/chat/completions" in message
    with pytest.raises(UnusableInput, match="Groq does not run batches for it; use one of /v1/chat/completions"):
        preflight(path, endpoint="/v1/responses", limits=Limits.of(caps("groq")))


def test_groq_limit_is_100_mb_and_has_no_request_cap(tmp_path: Path) -> None:
    limits = Limits.of(caps("groq"))
    assert (limits.max_bytes, limits.max_requests) == (100_000_000, None)
    report = preflight(write(tmp_path / "g.jsonl", [chat_line(n, "llama-3.1-8b-instant") for n in range(60_001)]),
                       limits=limits)
    assert report.valid and report.batches == 1 and report.warning_count == 0  # 60,001 requests fit one Groq batch
    assert report.backend.max_bytes == 100_000_000 and report.backend.max_requests is None
    assert preflight(tmp_path / "g.jsonl").batches == 2  # DigitalOcean's 50,000-request cap splits it


def test_anthropic_lines_are_refused_on_openai_family_backends(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", [anthropic_line(1), anthropic_line(2)])
    assert preflight(path).valid  # DigitalOcean takes anthropic lines
    for name in ("openai", "deepinfra", "groq"):
        report = preflight(path, limits=Limits.of(caps(name)))
        assert codes(report) == [(1, "error", "unsupported_line_format"), (2, "error", "unsupported_line_format")]
        message = report.problems[0].message
        assert f"which {caps(name).label} does not take" in message and '"url": "/v1/chat/completions"' in message
        with pytest.raises(UnusableInput, match=f"{caps(name).label} takes openai lines, not anthropic"):
            preflight(path, "anthropic", limits=Limits.of(caps(name)))


def test_cli_validate_takes_a_backend(tmp_path: Path) -> None:
    path = write(tmp_path / "m.jsonl", [chat_line(1), chat_line(2, "gpt-4.1")])

    def validate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "batch_mcp", "validate", str(path), *args],
                              capture_output=True, text=True, timeout=60)

    assert validate().returncode == 0
    on_openai = validate("--backend", "openai", "--json")
    assert on_openai.returncode == 1
    report = json.loads(on_openai.stdout)
    assert report["backend"]["name"] == "openai" and report["problems"][0]["code"] == "mixed_models"
    unknown = validate("--backend", "nope")
    assert unknown.returncode == 2 and "unknown backend 'nope'" in unknown.stderr
    with_provider = validate("--backend", "groq", "--provider", "openai", "--max-bytes", "100")
    assert with_provider.returncode == 1 and "over the 100-byte limit" in with_provider.stdout


@pytest.mark.parametrize(("extra", "code", "fix"), [
    ({"stream": True}, "stream_requested", "never stream"),
    ({"betas": ["message-batches-2024-09-24"]}, "betas_in_params", "anthropic-beta header"),
])
def test_anthropic_lines_that_ask_to_stream_or_carry_betas_are_refused_with_their_line(
        tmp_path: Path, extra: dict, code: str, fix: str) -> None:
    lines = [anthropic_line(1), anthropic_line(2), anthropic_line(3)]
    lines[1]["params"].update(extra)
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = preflight(path, limits=Limits.of(caps("digitalocean")))
    assert not report.valid and [(p.line, p.code) for p in report.problems] == [(2, code)]
    assert fix in report.problems[0].message
    lines[1]["params"]["stream"] = False
    lines[1]["params"].pop("betas", None)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert preflight(path, limits=Limits.of(caps("digitalocean"))).valid  # stream: false is harmless
