"""The install descriptions agree with the code and with each other.

server.json (MCP Registry) and manifest.json (MCPB bundle) validate against their vendored schemas and declare
exactly the environment variables ``Settings`` reads; mcp.json, the manifest and the README's client snippets
run the same server command with the same settings. A new setting, tool or version fails here until every
description says so.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import tomllib
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

import batch_mcp
from batch_mcp.cli import build_parser, serve_settings
from batch_mcp.config import Settings, environment_variables

from conftest import mcp_session

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "tests" / "schemas"
# Byte-for-byte copies; see tests/schemas/README.md for where each comes from.
SCHEMA_SHA256 = {
    "server.schema.json": "3fba09590c99f61735d234822279f4223fab9e300c0a81e81c91ab62a4114de0",
    "mcpb-manifest-v0.4.schema.json": "068557824c651d6d49b86ad132adeafe62ca788d918b3e1e2b224bf0f91320fd",
}
RUNNERS = (["uvx"], ["uv", "tool", "run"], ["pipx", "run"])  # run the package's script from the package index
HOSTS = ("Claude Desktop", "Cursor", "VS Code", "Claude Code")  # each has a section in the README
USER_CONFIG_REFERENCE = re.compile(r"^\$\{user_config\.(\w+)\}$")


def load(name: str) -> Any:
    return json.loads((ROOT / name).read_text())


def validate(document: object, schema_name: str) -> None:
    raw = (SCHEMAS / schema_name).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256[schema_name], f"{schema_name} is not the vendored copy"
    schema = json.loads(raw)
    Draft7Validator.check_schema(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER).iter_errors(document)]
    assert not errors, errors


def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def is_secret(field: FieldInfo) -> bool:
    return field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)


def registry_format(field: FieldInfo) -> str:
    """The server.json ``format`` a setting of this type needs."""
    if field.annotation is bool:
        return "boolean"
    if field.annotation in (int, float) or set(typing.get_args(field.annotation)) in ({int, type(None)},
                                                                                         {float, type(None)}):
        return "number"
    return "filepath" if field.annotation is Path else "string"


def mcpb_type(field: FieldInfo) -> str:
    """The MCPB ``user_config`` type that collects a setting of this type (folders get a folder picker)."""
    if Path in (field.annotation, *typing.get_args(field.annotation)):
        return "directory"
    return {bool: "boolean", int: "number", float: "number"}.get(field.annotation, "string")


def registry_default(field: FieldInfo) -> str | None:
    """A fixed default as server.json spells it (booleans as true/false), or None if it depends on the machine."""
    if field.default is PydanticUndefined or field.default is None:
        return None
    return str(field.default).lower() if isinstance(field.default, bool) else str(field.default)


def variable_of(field_name: str) -> set[str]:
    field = Settings.model_fields[field_name]
    return {name for name, f in environment_variables().items() if f is field}


def flag_variables(flags: list[str]) -> set[str]:
    """The variables whose settings ``serve`` flags change, found by parsing the flags with the CLI itself."""
    before = serve_settings(build_parser().parse_args(["serve"]))
    after = serve_settings(build_parser().parse_args(["serve", *flags]))
    changed = [name for name in Settings.model_fields if getattr(before, name) != getattr(after, name)]
    return {variable for name in changed for variable in variable_of(name)}


def entry_form(command: str, args: list[str], env: Iterable[str]) -> tuple[list[str], set[str]]:
    """A client entry reduced to what it runs (script and subcommand) and which variables it sets."""
    words = [command, *args]
    for runner in RUNNERS:
        if words[:len(runner)] == runner:
            words = words[len(runner):]
    return words[:2], set(env) | flag_variables(words[2:])


def mcp_json_forms() -> dict[str, tuple[list[str], set[str]]]:
    entries = load("mcp.json")["mcpServers"]
    return {name: entry_form(e["command"], e["args"], e.get("env", {})) for name, e in entries.items()}


def readme_snippets(readme: str | None = None) -> Iterator[tuple[str, tuple[list[str], set[str]]]]:
    """Every client snippet in the README (or a part of it): JSON configs (any host's layout) and `claude mcp
    add` lines."""
    readme = (ROOT / "README.md").read_text() if readme is None else readme
    for block in re.findall(r"```json\n(.*?)```", readme, re.S):
        config = json.loads(block)
        for name, e in (config.get("mcpServers") or config.get("servers") or {}).items():
            yield name, entry_form(e["command"], e.get("args", []), e.get("env", {}))
    for name, options, command in re.findall(r"^claude mcp add (\S+)(.*?) -- (.+)$", readme, re.M):
        words = shlex.split(options)
        env = [words[i + 1].split("=", 1)[0] for i, word in enumerate(words) if word in ("--env", "-e")]
        program, *args = shlex.split(command)
        yield name, entry_form(program, args, env)


def test_server_json_is_valid_for_the_registry() -> None:
    server = load("server.json")
    validate(server, "server.schema.json")
    assert server["$schema"] == json.loads((SCHEMAS / "server.schema.json").read_text())["$id"]
    owner = re.fullmatch(r"io\.github\.([\w-]+)/[\w.-]+", server["name"]).group(1)  # GitHub-authenticated namespace
    assert server["repository"] == {"url": f"https://github.com/{owner}/{project()['name']}", "source": "github"}
    [package] = server["packages"]
    assert package["registryType"] == "pypi" and package["registryBaseUrl"] == "https://pypi.org"
    assert package["identifier"] == project()["name"]
    assert server["version"] == package["version"] == project()["version"] == batch_mcp.__version__
    assert package["runtimeHint"] == "uvx" and package["transport"] == {"type": "stdio"}
    script_and_subcommand, _ = mcp_json_forms()["batch"]
    assert [package["identifier"], *(a["value"] for a in package["packageArguments"])] == script_and_subcommand


def test_server_json_declares_exactly_the_variables_the_server_reads() -> None:
    [package] = load("server.json")["packages"]
    declared = {v["name"]: v for v in package["environmentVariables"]}
    read = environment_variables()
    assert sorted(declared) == sorted(read), "server.json must list every variable Settings reads, and no other"
    for name, field in read.items():
        variable = declared[name]
        assert variable["description"].strip(), name
        assert isinstance(variable["isRequired"], bool) and isinstance(variable["isSecret"], bool), name
        assert variable["isSecret"] == is_secret(field), name
        assert variable.get("format", "string") == registry_format(field), name
        assert variable.get("default") == registry_default(field), name
    # What a registry user must fill in is what the real account's client entry sets.
    _, real_entry_variables = mcp_json_forms()["batch"]
    assert {name for name, v in declared.items() if v["isRequired"]} == real_entry_variables


def test_manifest_is_a_valid_mcpb_bundle() -> None:
    manifest = load("manifest.json")
    validate(manifest, "mcpb-manifest-v0.4.schema.json")
    assert manifest["manifest_version"] == "0.4"
    assert manifest["version"] == project()["version"] and manifest["license"] == project()["license"]["text"]
    assert manifest["compatibility"]["runtimes"]["python"] == project()["requires-python"]
    assert manifest["server"]["type"] == "uv" and (ROOT / manifest["server"]["entry_point"]).is_file()
    assert manifest["privacy_policies"], "required: requests go to an external service"


def test_manifest_user_config_sets_server_variables() -> None:
    manifest = load("manifest.json")
    user_config, env = manifest["user_config"], manifest["server"]["mcp_config"]["env"]
    read = environment_variables()
    option_of: dict[str, str] = {}  # variable -> the user_config key that fills it
    for variable, value in env.items():
        assert variable in read, f"the server does not read {variable}"
        reference = USER_CONFIG_REFERENCE.fullmatch(value)
        assert reference and reference.group(1) in user_config, f"{variable} must come from a user_config entry"
        option_of[variable] = reference.group(1)
    assert sorted(option_of.values()) == sorted(user_config), "every user_config entry feeds exactly one variable"
    for variable, key in option_of.items():
        assert user_config[key].get("sensitive", False) == is_secret(read[variable]), key
        assert user_config[key]["type"] == mcpb_type(read[variable]), key
    # The bundle runs either entry of mcp.json (a switch picks the sandbox): only what both need is required.
    _, sandbox_variables = mcp_json_forms()["batch-sandbox"]
    required = {variable for variable, key in option_of.items() if user_config[key].get("required", False)}
    assert required == sandbox_variables - variable_of("sandbox")


async def test_manifest_lists_the_tools_the_server_serves(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", allowed_dirs=[tmp_path])
    async with mcp_session(settings) as (client, _):
        served = [tool.name for tool in (await client.list_tools()).tools]
    assert [tool["name"] for tool in load("manifest.json")["tools"]] == served


def test_mcp_json_entries_agree_with_the_manifest() -> None:
    forms = mcp_json_forms()
    mcp_config = load("manifest.json")["server"]["mcp_config"]
    bundle_command, bundle_variables = entry_form(mcp_config["command"], mcp_config["args"], mcp_config["env"])
    assert forms["batch"][0] == forms["batch-sandbox"][0] == bundle_command
    secrets = {name for name, field in environment_variables().items() if is_secret(field)}
    assert forms["batch-sandbox"][1] == forms["batch"][1] - secrets | variable_of("sandbox")
    assert bundle_variables == forms["batch"][1] | forms["batch-sandbox"][1]
    entries = load("mcp.json")["mcpServers"]
    assert entries["batch"]["command"] == entries["batch-sandbox"]["command"]  # one runner for both


def test_readme_snippets_agree_with_mcp_json() -> None:
    forms = mcp_json_forms()
    snippets = list(readme_snippets())
    assert {name for name, _ in snippets} >= set(forms), "the README shows a snippet for each mcp.json entry"
    for name, form in snippets:
        assert form == forms[name], f"README snippet {name!r} differs from mcp.json"


@pytest.mark.parametrize("host", HOSTS)
def test_the_readme_has_a_section_per_host_with_a_snippet_that_agrees(host: str) -> None:
    """Each host's section shows a snippet the test above compares; one in mcp.json's own layout is mcp.json's
    entry word for word, placeholders included."""
    clients = (ROOT / "README.md").read_text().split("\n## Use it from your MCP client\n", 1)[1].split("\n## ", 1)[0]
    section = re.search(rf"\n### {re.escape(host)}\n(.*?)(?=\n### |\Z)", clients, re.S)
    assert section, f"no section for {host} in the README"
    assert list(readme_snippets(section[1])), f"no client snippet in the {host} section"
    entries = load("mcp.json")["mcpServers"]
    for block in re.findall(r"```json\n(.*?)```", section[1], re.S):
        for name, entry in json.loads(block).get("mcpServers", {}).items():
            assert entry == entries[name], f"{host}: {name} differs from mcp.json"


@pytest.mark.parametrize("flags, variables", [([], set()), (["--sandbox"], {"BATCH_MCP_SANDBOX"}),
                                              (["--allow-dir", "/data", "--transport", "sse"],
                                               {"BATCH_MCP_ALLOWED_DIRS"})])
def test_serve_flags_map_to_the_variables_they_stand_for(flags: list[str], variables: set[str]) -> None:
    assert flag_variables(flags) == variables
