"""The data-workflow demo scenario as a user runs it (the default scenario runs at DEBUG in test_security), on
DigitalOcean and on Anthropic (whose lines and prompt defaults the tools take when it is the only backend)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batch_mcp.backends.registry import CATALOG
from batch_mcp.cli import EMULATED

REVIEWS = ["1. prepare_batch_file", "merged table", "150 rows", "every review has a result"]


@pytest.mark.parametrize(("scenario", "backend", "expected"), [
    ("reviews", None, REVIEWS),
    ("reviews", "anthropic", [*REVIEWS, "on Anthropic", "anthropic:msgbatch_"]),
])
def test_demo_runs_end_to_end(tmp_path: Path, scenario: str, backend: str | None, expected: list[str]) -> None:
    chosen = ["--backend", backend] if backend else []
    done = subprocess.run([sys.executable, "-m", "batch_mcp", "demo", "--scenario", scenario, *chosen, "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for text in expected:
        assert text in done.stdout, text
    assert "sandbox-token" not in done.stdout + done.stderr
    assert list((tmp_path / "batch-results").glob("*.results.csv"))


def test_the_command_line_offers_every_emulated_backend() -> None:
    assert tuple(CATALOG) == EMULATED
    refused = subprocess.run([sys.executable, "-m", "batch_mcp", "demo", "--backend", "anthropic"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--backend goes with --scenario reviews" in refused.stderr
