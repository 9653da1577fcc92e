"""Settings that cannot work are refused at start-up, in one line naming the variable (or flag) and the fix,
without echoing a secret; tokens lose the whitespace a paste adds; an exposed server needs a strong token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batch_mcp.cli import build_parser
from batch_mcp.config import MIN_PUBLIC_AUTH_TOKEN, Settings
from batch_mcp.sandbox import SandboxServer
from batch_mcp.server import UnsafeBinding, check_binding

from conftest import mcp_session
from test_stdio import free_port

SECRET = "dop_v1_SECRET_7d1e"
PUBLIC = ["--transport", "streamable-http", "--host", "0.0.0.0"]
#: case -> (serve flags, environment, what the one line must say)
EMPTY_AUTH = "BATCH_MCP_AUTH_TOKEN (or --auth-token) is empty"
REFUSED: dict[str, tuple[list[str], dict[str, str], list[str]]] = {
    "empty --auth-token": (["--auth-token", ""], {}, [EMPTY_AUTH, "unset it"]),
    "blank --auth-token": (["--auth-token", " \n"], {}, [EMPTY_AUTH]),
    "empty BATCH_MCP_AUTH_TOKEN": ([], {"BATCH_MCP_AUTH_TOKEN": ""}, [EMPTY_AUTH]),
    "empty token on a public bind": ([*PUBLIC, "--auth-token", ""], {}, ["is empty"]),
    "1-character token on a public bind": ([*PUBLIC, "--auth-token", "x"], {},
                                           ["1-character auth token", f"at least {MIN_PUBLIC_AUTH_TOKEN}",
                                            "--auth-token", "BATCH_MCP_AUTH_TOKEN", "secrets.token_urlsafe"]),
    "31-character token on a public bind": ([*PUBLIC], {"BATCH_MCP_AUTH_TOKEN": "a" * 31}, ["31-character"]),
    "non-ASCII API token": ([], {"MODEL_ACCESS_KEY": SECRET + "é"}, ["MODEL_ACCESS_KEY", "non-ASCII character"]),
    "control character in the API token": ([], {"DIGITALOCEAN_TOKEN": SECRET[:5] + "\x01" + SECRET[5:]},
                                           ["DIGITALOCEAN_TOKEN", "control character (at position 6)"]),
    "non-ASCII auth token": (["--auth-token", SECRET + "’"], {}, ["BATCH_MCP_AUTH_TOKEN", "non-ASCII"]),
    "zero attempts": ([], {"BATCH_MCP_MAX_ATTEMPTS": "0"}, ["BATCH_MCP_MAX_ATTEMPTS must be ≥ 1 (got '0')"]),
    "text timeout": ([], {"BATCH_MCP_TIMEOUT_S": "soon"}, ["BATCH_MCP_TIMEOUT_S must be a number (got 'soon')"]),
    "zero poll interval": ([], {"BATCH_MCP_POLL_INTERVAL_S": "0"}, ["BATCH_MCP_POLL_INTERVAL_S must be > 0"]),
    "fractional request limit": ([], {"BATCH_MCP_MAX_REQUESTS": "1.5"},
                                 ["BATCH_MCP_MAX_REQUESTS must be a whole number (got '1.5')"]),
    "unclear switch": ([], {"BATCH_MCP_SANDBOX": "maybe"}, ["BATCH_MCP_SANDBOX must be true or false"]),
    "two problems": ([], {"BATCH_MCP_MAX_ATTEMPTS": "-1", "BATCH_MCP_BASE_URL": "ftp://x"},
                     ["BATCH_MCP_MAX_ATTEMPTS must be ≥ 1", "; ", "BATCH_MCP_BASE_URL must be an http(s) URL"]),
}


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No batch-mcp settings but a state folder of the test's own (which a refused start must not create)."""
    for name in list(os.environ):
        if name.startswith("BATCH_MCP_") or name in ("MODEL_ACCESS_KEY", "DIGITALOCEAN_TOKEN"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BATCH_MCP_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.mark.parametrize("case", REFUSED)
def test_unusable_settings_are_refused_in_one_line(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], case: str) -> None:
    flags, env, expected = REFUSED[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if "--host" in flags:  # were it not refused it would serve until stopped: run it apart, with a deadline
        done = subprocess.run([sys.executable, "-m", "batch_mcp", "serve", *flags, "--port", str(free_port())],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        code, stderr = done.returncode, done.stderr
    else:  # in-process, without main()'s logging set-up (it would outlive the test)
        args = build_parser().parse_args(["serve", *flags])
        code, stderr = args.run(args), capsys.readouterr().err
    assert code == 2, stderr
    assert stderr.startswith("batch-mcp: ") and stderr.count("\n") == 1, stderr
    for part in expected:
        assert part in stderr, stderr
    assert SECRET not in stderr and SECRET[8:] not in stderr and "Traceback" not in stderr
    assert not clean_env.exists()


def test_a_strong_token_may_serve_beyond_loopback_and_loopback_takes_any() -> None:
    check_binding("0.0.0.0", "k" * MIN_PUBLIC_AUTH_TOKEN)
    check_binding("127.0.0.1", "k")
    with pytest.raises(UnsafeBinding, match="--auth-token"):
        check_binding("192.0.2.7", "k" * (MIN_PUBLIC_AUTH_TOKEN - 1))


def test_pasted_whitespace_around_tokens_is_dropped(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_ACCESS_KEY", f"  {SECRET}\r\n")
    monkeypatch.setenv("BATCH_MCP_AUTH_TOKEN", f"\t{'k' * 40}\n")
    settings = Settings()
    assert settings.token_value() == SECRET and settings.auth_token is not None
    assert settings.auth_token.get_secret_value() == "k" * 40
    monkeypatch.setenv("MODEL_ACCESS_KEY", " \n")
    assert Settings().token is None  # a blank API token is no token: the tools say how to set one
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", SECRET)  # nor does it hide the next variable (MCPB leaves it "")
    assert Settings().token_value() == SECRET


async def test_a_token_with_a_trailing_newline_reaches_the_api(sandbox: SandboxServer, workdir: Path,
                                                               clean_env: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Copied from a file or a terminal, a token often ends in a newline; before, every call then failed as
    a "connection" problem after all its retries."""
    monkeypatch.setenv("MODEL_ACCESS_KEY", sandbox.token + "\n")
    monkeypatch.setenv("BATCH_MCP_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("BATCH_MCP_ALLOWED_DIRS", str(workdir))
    monkeypatch.setenv("BATCH_MCP_MAX_ATTEMPTS", "1")
    async with mcp_session(Settings()) as (client, _):
        listed = await client.call_tool("list_batches", {"limit": 1})
    assert not listed.is_error, listed.content[0].text


def test_a_stray_token_variable_is_not_the_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """TOKEN is a common name for unrelated secrets: only MODEL_ACCESS_KEY or DIGITALOCEAN_TOKEN are ours."""
    for name in ("MODEL_ACCESS_KEY", "DIGITALOCEAN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TOKEN", "someone-elses")
    assert Settings().token is None
