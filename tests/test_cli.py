"""`batch-mcp validate`: exit 0 valid, 1 invalid, 2 unusable; human text or the full JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batch_mcp", "validate", *args], capture_output=True, text=True,
                          timeout=60)


def test_valid_file_exits_0_with_a_summary(workdir: Path) -> None:
    done = validate(str(workdir / "data" / "tickets.jsonl"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("VALID") and "300 requests" in done.stdout


def test_invalid_file_exits_1_naming_the_line(workdir: Path) -> None:
    bad = workdir / "data" / "bad.jsonl"
    lines = (workdir / "data" / "tickets.jsonl").read_text().splitlines()
    bad.write_text("\n".join([*lines[:4], lines[1], "not json"]) + "\n")
    done = validate(str(bad))
    assert done.returncode == 1
    assert "line 5" in done.stdout and "duplicate" in done.stdout and "line 6" in done.stdout
    report = json.loads(validate(str(bad), "--json").stdout)
    assert report["valid"] is False and report["error_count"] == 2
    assert [p["line"] for p in report["problems"]] == [5, 6]


@pytest.mark.parametrize("target", ["missing.jsonl", "data", "/dev/zero"])
def test_unusable_input_exits_2(workdir: Path, target: str) -> None:
    path = target if target.startswith("/") else str(workdir / target)
    done = validate(path)
    assert done.returncode == 2 and "unusable input" in done.stderr


def test_provider_mismatch_is_invalid(workdir: Path) -> None:
    done = validate(str(workdir / "data" / "tickets.jsonl"), "--provider", "anthropic", "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["valid"] is False
