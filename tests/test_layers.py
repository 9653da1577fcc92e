"""Imports point down the layers: domain <- backends <- store <- schemas <- services <- tools <- server. Domain
imports nothing of ours, and the emulators never the backends' wire models (a shared model would hide a client bug)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "batch_mcp"

#: What the workflow may use of the backend layer: the protocol, its errors and the registry; never one API's
#: wire models or implementation (a view built from a wire object is how a backend's quirk leaks upward).
SERVICE_BACKEND_IMPORTS = {"batch_mcp.backends", "batch_mcp.backends.base", "batch_mcp.backends.registry"}

#: module (or package) -> (modules it may import, packages it may import anything from)
ALLOWED: dict[str, tuple[set[str], set[str]]] = {
    "domain.py": (set(), set()),
    "backends": ({"batch_mcp", "batch_mcp.domain"}, {"batch_mcp.backends"}),  # batch_mcp: only __version__
    # the store reads rows written before the neutral job model in DigitalOcean's own shape
    "store": ({"batch_mcp.domain", "batch_mcp.backends.digitalocean.wire"}, {"batch_mcp.store"}),
    "schemas": ({"batch_mcp.domain"}, {"batch_mcp.schemas"}),
    "services": ({"batch_mcp.domain", *SERVICE_BACKEND_IMPORTS},
                 {"batch_mcp.services", "batch_mcp.schemas", "batch_mcp.store"}),
}


def ours(path: Path) -> set[str]:
    """The batch_mcp modules ``path`` imports (absolute imports; the package uses no relative ones)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name == "batch_mcp" or name.startswith("batch_mcp.")}


@pytest.mark.parametrize("where", sorted(ALLOWED))
def test_imports_point_down(where: str) -> None:
    root = PACKAGE / where
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    assert files
    modules, packages = ALLOWED[where]
    for path in files:
        for name in ours(path):
            inside = any(name == package or name.startswith(package + ".") for package in packages)
            assert name in modules or inside, f"{path.relative_to(PACKAGE)} imports {name}"


def test_the_sandbox_never_imports_the_backends() -> None:
    for path in sorted((PACKAGE / "sandbox").rglob("*.py")):
        assert not {name for name in ours(path) if name.startswith("batch_mcp.backends")}, path


@pytest.mark.parametrize("layer", ["services", "schemas", "tools"])
def test_the_workflow_sees_backends_only_through_the_seam(layer: str) -> None:
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        reached = {name for name in ours(path) if name.startswith("batch_mcp.backends")}
        assert reached <= SERVICE_BACKEND_IMPORTS, f"{path.relative_to(PACKAGE)} imports {reached}"
