"""The built wheel, run the ways MCP hosts run servers: `uvx`, `pipx run` and `python -m batch_mcp`.

The wheel is built once per session. Every check runs an install of that wheel alone, with its dependencies
resolved from its own metadata (uvx and pipx each build a fresh environment), never the source tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from zipfile import ZipFile

import pytest
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "batch_mcp"
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)  # a plain interpreter, as on a fresh machine
INHERITED_SETTINGS = re.compile(r"BATCH_MCP_|MODEL_ACCESS_KEY$|DIGITALOCEAN_TOKEN$|VIRTUAL_ENV$|PYTHON(PATH|HOME)$")

# Run inside the installed wheel: import every module, and say where the package and its example live.
IMPORT_EVERYTHING = """
import importlib, json, pkgutil, batch_mcp
from batch_mcp.demo import example_file
names = [m.name for m in pkgutil.walk_packages(batch_mcp.__path__, "batch_mcp.") if m.name != "batch_mcp.__main__"]
for name in names:
    importlib.import_module(name)
print(json.dumps({"package": batch_mcp.__file__, "example": str(example_file()), "modules": len(names)}))
"""


def installer(name: str) -> str:
    """uvx or pipx, from the test extra. In CI a missing one fails the run rather than skipping it."""
    found = shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is missing: the test extra installs it (pip install '.[test]')")
    pytest.skip(f"{name} is not installed (pip install '.[test]')")


def installer_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would point the installed server at this checkout."""
    env = {key: value for key, value in os.environ.items() if not INHERITED_SETTINGS.match(key)}
    return {**env, "UV_PYTHON": BASE_PYTHON, "UV_PYTHON_DOWNLOADS": "never", "BATCH_MCP_LOG_LEVEL": "WARNING",
            **extra}


def run(command: Sequence[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command[1:]} exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from the source tree the way a release is (isolated build)."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)], os.environ.copy(), ROOT)
    [built] = out.glob("*.whl")
    return built


@pytest.fixture
def uvx() -> str:
    return installer("uvx")


def test_wheel_holds_every_module_the_examples_and_the_ownership_line(wheel: Path) -> None:
    with ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    shipped = {f"batch_mcp/{p.relative_to(SOURCE).as_posix()}" for p in SOURCE.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    shipped |= {f"batch_mcp/examples/{p.name}" for p in (ROOT / "examples").iterdir() if p.is_file()}
    assert "batch_mcp/data/prices.json" in shipped and "batch_mcp/examples/tickets.jsonl" in shipped
    assert not shipped - names, f"missing from the wheel: {sorted(shipped - names)}"
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]
    assert re.search(r"^batch-mcp = batch_mcp\.cli:main$", entry_points, re.M)
    # The registry proves we own the PyPI package by finding this line in its description (the README).
    registry_name = json.loads((ROOT / "server.json").read_text())["name"]
    assert re.search(rf"mcp-name: {re.escape(registry_name)}(?=\s|-->|<|$)", metadata)


def test_uvx_runs_the_wheel_and_python_m_works(wheel: Path, uvx: str, tmp_path: Path) -> None:
    env = installer_env()
    from_wheel = [uvx, "--from", str(wheel)]
    assert "serve" in run([*from_wheel, "batch-mcp", "--help"], env, tmp_path)
    assert "serve" in run([*from_wheel, "python", "-m", "batch_mcp", "--help"], env, tmp_path)
    installed = json.loads(run([*from_wheel, "python", "-c", IMPORT_EVERYTHING], env, tmp_path))
    package_dir = Path(installed["package"]).parent
    assert ROOT not in package_dir.parents, f"ran the source tree, not the wheel: {package_dir}"
    assert Path(installed["example"]).parent == package_dir / "examples"
    modules = [p for p in SOURCE.rglob("*.py") if p.name != "__main__.py" and p != SOURCE / "__init__.py"]
    assert installed["modules"] == len(modules)
    report = run([*from_wheel, "batch-mcp", "validate", installed["example"]], env, tmp_path)
    assert "300" in report  # the bundled example's request count


async def test_mcp_json_sandbox_entry_runs_from_the_wheel(wheel: Path, uvx: str, workdir: Path) -> None:
    """What a newcomer pastes: the `batch-sandbox` entry of mcp.json, with the wheel standing in for PyPI."""
    entry = json.loads((ROOT / "mcp.json").read_text())["mcpServers"]["batch-sandbox"]
    assert entry["command"] == "uvx"
    env = {**installer_env(), **dict.fromkeys(entry["env"], str(workdir)),
           "BATCH_MCP_STATE_DIR": str(workdir.parent / "state")}
    server = StdioServerParameters(command=uvx, args=["--from", str(wheel), *entry["args"]], env=env,
                                   cwd=str(workdir))
    async with Client(server) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"submit_batch", "wait_for_batch", "estimate_batch_cost"} <= tools
        cost = await client.call_tool("estimate_batch_cost", {"path": "data/tickets.jsonl"})
        assert not cost.is_error and not cost.structured_content["unknown_models"]  # prices.json came along
        submitted = await client.call_tool("submit_batch", {"path": "data/tickets.jsonl"})
        assert not submitted.is_error, submitted.content[0].text
        batch_id = submitted.structured_content["batch"]["batch_id"]
        waited = await client.call_tool("wait_for_batch", {"batch_id": batch_id, "timeout_s": 60,
                                                           "poll_interval_s": 0.2})
        assert waited.structured_content["batch"]["status"] == "completed"


def test_pipx_run_installs_the_wheel_and_runs_the_demo(wheel: Path, tmp_path: Path) -> None:
    """pipx with pip (not uv) as its installer; the demo drives `python -m batch_mcp serve` from that venv."""
    pipx = installer("pipx")
    env = installer_env(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"),
                        PIPX_DEFAULT_BACKEND="pip")
    output = run([pipx, "run", "--python", BASE_PYTHON, "--spec", str(wheel), "batch-mcp", "demo", "--workdir",
                  str(tmp_path / "demo")], env, tmp_path)
    assert "every step passed" in output
