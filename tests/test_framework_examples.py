"""The agent-framework examples, run as a user runs them (`python examples/X.py` in a subprocess), each with its
framework's default MCP client settings: on the embedded sandbox and against a standalone `batch-mcp sandbox`.

A framework comes from the interpreter BATCH_MCP_PYTHON_<FRAMEWORK> names (a venv holding it), else from this
one if it has it; otherwise its tests skip, saying how to get it (.ci/run sets every variable, so CI runs
them all). LangGraph and mcp-use never share this venv (they need mcp 1.x), nor fast-agent (Python 3.12+).
The server is always this checkout's, through BATCH_MCP_COMMAND.
The 75-second job runs only with BATCH_MCP_SLOW=1.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from test_stdio import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES, README, CI_RUN = ROOT / "examples", ROOT / "README.md", ROOT / ".ci" / "run"
REQUESTS = 300  # lines in examples/tickets.jsonl
#: The 75-second job: the sandbox works through the 300 requests at 4 a second.
SLOW_PACE = 4.0
SUMMARY = re.compile(r"^(?P<framework>[\w-]+): completed: (?P<succeeded>\d+) succeeded, (?P<failed>\d+) failed, "
                     r"(?P<waits>\d+) wait_for_batch calls; table \S+\.csv(?P<rest>.*) in (?P<seconds>[\d.]+) s$", re.M)


@dataclass(frozen=True)
class Framework:
    name: str  # as its example prints it
    script: str
    module: str
    install: str

    @property
    def variable(self) -> str:
        return "BATCH_MCP_PYTHON_" + self.name.upper().replace("-", "_")


PYDANTIC_AI = Framework("pydantic-ai", "pydantic_ai_agent.py", "pydantic_ai", "'pydantic-ai-slim[mcp]==2.68.0'")
OPENAI_AGENTS = Framework("openai-agents", "openai_agents_agent.py", "agents", "openai-agents==0.24.0")
LANGGRAPH = Framework("langgraph", "langgraph_agent.py", "langchain_mcp_adapters", "langchain-mcp-adapters==0.3.2 "
                      "langgraph==1.2.22 langchain-core==1.8.3 (in a venv without batch-mcp: it needs mcp 1.x)")
LLAMA_INDEX = Framework("llama-index", "llama_index_agent.py", "llama_index.tools.mcp", "llama-index-tools-mcp==0.6.0")
MCP_USE = Framework("mcp-use", "mcp_use_agent.py", "mcp_use",
                    "mcp-use==1.7.1 (in a venv without batch-mcp: it needs mcp 1.x)")
FAST_AGENT = Framework("fast-agent", "fast_agent_agent.py", "fast_agent",
                       "fast-agent-mcp==0.10.48 (in a venv of Python 3.12 or newer)")
ALL = (PYDANTIC_AI, OPENAI_AGENTS, LANGGRAPH, LLAMA_INDEX, MCP_USE, FAST_AGENT)


def frameworks(**marks: pytest.MarkDecorator) -> list:
    """Every framework as a test parameter named after it, with the marks given by name."""
    return [pytest.param(f, id=f.name, marks=[marks[f.name]] if f.name in marks else [])
            for f in ALL]


@dataclass(frozen=True)
class Run:
    framework: str
    succeeded: int
    failed: int
    waits: int
    seconds: float
    rest: str  # what the example adds to the summary


def python_for(framework: Framework) -> str:
    if chosen := os.environ.get(framework.variable):
        return chosen
    try:
        if importlib.util.find_spec(framework.module):
            return sys.executable
    except ModuleNotFoundError:  # a parent package of the module is missing
        pass
    pytest.skip(f"{framework.name} is not installed here: pip install {framework.install}, or set "
                f"{framework.variable} to the python of a venv that has it")


def run_example(framework: Framework, *args: str, timeout_s: float = 180) -> Run:
    """The example as a user runs it; its server is this checkout's `batch-mcp`, whatever the venv holds."""
    env = {**os.environ, "BATCH_MCP_COMMAND": f"{shlex.quote(sys.executable)} -m batch_mcp"}
    done = subprocess.run([python_for(framework), str(EXAMPLES / framework.script), *args], env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{framework.script} exited {done.returncode}:\n{done.stderr[-3000:]}"
    summary = SUMMARY.search(done.stdout)
    assert summary, f"no summary in {done.stdout!r}"
    run = Run(summary["framework"], int(summary["succeeded"]), int(summary["failed"]), int(summary["waits"]),
              float(summary["seconds"]), summary["rest"])
    assert run.framework == framework.name and run.succeeded + run.failed == REQUESTS and run.succeeded > 0
    assert run.waits >= 1
    return run


@contextmanager
def standalone_sandbox(requests_per_s: float | None = None) -> Iterator[str]:
    """`batch-mcp sandbox` as a user starts it (DigitalOcean's API, the default token); its base URL."""
    port = free_port()
    pace = ["--requests-per-s", str(requests_per_s)] if requests_per_s else []
    server = subprocess.Popen([sys.executable, "-m", "batch_mcp", "sandbox", "--port", str(port), *pace],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("framework", frameworks())
def test_the_canonical_job_completes_on_the_embedded_sandbox(framework: Framework) -> None:
    run_example(framework)


@pytest.mark.parametrize("framework", frameworks())
def test_the_canonical_job_completes_against_a_standalone_sandbox(framework: Framework) -> None:
    with standalone_sandbox() as base_url:
        run_example(framework, "--base-url", base_url)


def test_openai_agents_converts_every_tool_to_strict_mode() -> None:
    with standalone_sandbox() as base_url:
        run = run_example(OPENAI_AGENTS, "--base-url", base_url)
    assert run.rest == "; 13 of 13 tools strict"


@pytest.mark.skipif(not os.environ.get("BATCH_MCP_SLOW"), reason="takes 75 s: set BATCH_MCP_SLOW=1")
@pytest.mark.parametrize("framework", frameworks())
def test_a_75_second_job_completes_against_a_standalone_sandbox(framework: Framework) -> None:
    with standalone_sandbox(requests_per_s=SLOW_PACE) as base_url:
        run = run_example(framework, "--base-url", base_url, timeout_s=300)
    assert run.seconds >= REQUESTS / SLOW_PACE
    # every wait answers inside the client's timeout, so a long job takes several (about 3 s each without
    # progress, up to 50 s with it); none failed, or the example would have
    assert run.waits >= 2
    print(f"{framework.name}: {run.waits} waits, {run.seconds} s")


def readme_section(framework: Framework) -> str:
    """The framework's own section of the README's "Use it from an agent framework"."""
    frameworks_part = README.read_text().split("\n## Use it from an agent framework\n", 1)[1].split("\n## ", 1)[0]
    section = re.search(rf"\n### [^\n]*`examples/{framework.script}`[^\n]*\n(.*?)(?=\n### |\Z)", frameworks_part, re.S)
    assert section, f"no section for examples/{framework.script} in the README"
    return section[1]


def pins(pip_arguments: str) -> set[str]:
    """What a `pip install` line asks for beside batch-mcp itself (`.` from a checkout)."""
    return set(shlex.split(pip_arguments)) - {".", "batch-mcp"}


@pytest.mark.parametrize("framework", frameworks())
def test_the_readme_shows_each_framework_as_its_example_runs_it(framework: Framework) -> None:
    snippet = re.search(r"```python\n(.*?)```", readme_section(framework), re.S)
    assert snippet, f"no snippet for {framework.script} in the README"
    example = (EXAMPLES / framework.script).read_text()
    assert [line for line in snippet[1].splitlines() if line.strip() not in example] == []


@pytest.mark.parametrize("framework", frameworks())
def test_the_readme_and_the_example_install_what_ci_tests(framework: Framework) -> None:
    """The pins a user is told to install are the ones .ci/run installs for this test."""
    ci = {name: pins(arguments) for name, arguments in
          re.findall(r"^(?:PYTHON=\S+ )?framework_venv ([\w-]+) (.+)$", CI_RUN.read_text(), re.M)}
    readme = re.search(r"`pip install ([^`]+)`", readme_section(framework))
    example = re.search(r"^ +pip install (.+?)(?: +#.*)?$", (EXAMPLES / framework.script).read_text(), re.M)
    assert readme and example, framework.script
    assert pins(readme[1]) == pins(example[1]) == ci[framework.name]
