"""The data-workflow demo scenario as a user runs it (the default scenario runs at DEBUG in test_security)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(("scenario", "expected"), [
    ("reviews", ["1. prepare_batch_file", "merged table", "150 rows", "every review has a result"]),
])
def test_demo_runs_end_to_end(tmp_path: Path, scenario: str, expected: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "batch_mcp", "demo", "--scenario", scenario, "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for text in expected:
        assert text in done.stdout, text
    assert "sandbox-token" not in done.stdout + done.stderr
    assert list((tmp_path / "batch-results").glob("*.results.csv"))
