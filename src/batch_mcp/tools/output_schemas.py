"""Tool output schemas as short as they can be without saying less to the model that reads them.

mcp 2.3 derives each tool's outputSchema from its return model and offers no option to declare another one,
so the listing rewrites what the SDK derived (the result is still validated against the full model on the
server). Frameworks that forward output schemas to the model pay for every byte on every turn, and the SDK's
own are mostly repetition: every model again in each tool that nests it, each field titled after its own
name, defaults a result never leaves out, ``anyOf`` for every nullable field. Here:

- a model that is some tool's whole output is spelled out there only: nested in another tool's output it is
  an object whose description names that tool (``SubmitResult.batch`` is shaped like get_batch's output), and
  a second tool with the same whole output (cancel_batch) keeps its structure but points to the first one for
  what the fields mean;
- a recursive model refers to the root rather than to a copy of itself;
- the root's description goes (the tool's own says what it returns), and so do titles and defaults;
- a nullable field of a plain type is ``"type": [..., "null"]``.

What stays is every property, type, requirement, enum and description: what a model reads to use a result.
"""

from __future__ import annotations

from typing import Any

from mcp.types import Tool

_DEFS = "#/$defs/"
#: Keys whose value maps names to schemas (rather than being a schema keyword).
_NAMED_SCHEMAS = ("properties", "$defs")
_DROPPED = ("title", "default")
_NULL = {"type": "null"}


def lean_tools(tools: list[Tool]) -> list[Tool]:
    """The listed tools with lean output schemas."""
    owners: dict[str, str] = {}  # model name -> the first tool whose whole output it is
    for tool in tools:
        if tool.output_schema and "title" in tool.output_schema:
            owners.setdefault(tool.output_schema["title"], tool.name)
    return [tool.model_copy(update={"output_schema": lean_schema(tool.output_schema, owners, tool.name)})
            if tool.output_schema else tool for tool in tools]


def lean_schema(schema: dict[str, Any], owners: dict[str, str], tool: str) -> dict[str, Any]:
    """``tool``'s output schema made lean; ``owners`` names, for each model, the tool that spells it out."""
    own = schema.get("title")
    pointers = {f"{_DEFS}{name}": {"type": "object", "description": f"Shaped like {owner}'s output."}
                for name, owner in owners.items() if name != own}
    if own in schema.get("$defs", {}):  # a recursive model: the SDK put it at the root and left it in $defs
        pointers[f"{_DEFS}{own}"] = {"$ref": "#"}
    lean = _rewrite({k: v for k, v in schema.items() if k != "description"}, pointers)
    reachable = _reachable(lean)
    defs = {name: value for name, value in lean.pop("$defs", {}).items() if name in reachable}
    lean = {**lean, "$defs": defs} if defs else lean
    owner = owners.get(own, tool) if own else tool
    if owner != tool:
        lean = {**_undescribed(lean), "description": f"What each field means: {owner}'s output schema."}
    return lean


def _rewrite(node: Any, pointers: dict[str, dict[str, Any]]) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, pointers) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("$ref") in pointers:
        siblings = _rewrite({k: v for k, v in node.items() if k != "$ref"}, pointers)
        return _described({**pointers[node["$ref"]], **siblings}, siblings, pointers[node["$ref"]])
    lean = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key in _NAMED_SCHEMAS and isinstance(value, dict):
            lean[key] = {name: _rewrite(sub, pointers) for name, sub in value.items()}
        else:
            lean[key] = _rewrite(value, pointers)
    return _nullable(lean)


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` as X with ``null`` among its types, where X is of one plain type (no enum or const,
    whose value list would then have to hold null too)."""
    options = node.get("anyOf")
    if not (isinstance(options, list) and len(options) == 2 and _NULL in options):
        return node
    (other,) = (option for option in options if option != _NULL)
    if not isinstance(other.get("type"), str) or {"enum", "const", "$ref"} & set(other):
        return node
    merged = {**{k: v for k, v in node.items() if k != "anyOf"}, **other, "type": [other["type"], "null"]}
    return _described(merged, node, other)


def _described(merged: dict[str, Any], *parts: dict[str, Any]) -> dict[str, Any]:
    """``merged`` with the descriptions of the schemas it was merged from, in order, as one."""
    said = [part["description"] for part in parts if part.get("description")]
    return {**merged, "description": " ".join(said)} if said else merged


def _undescribed(node: Any) -> Any:
    if isinstance(node, list):
        return [_undescribed(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {key: ({name: _undescribed(sub) for name, sub in value.items()} if key in _NAMED_SCHEMAS
                  else _undescribed(value)) for key, value in node.items() if key != "description"}


def _reachable(schema: dict[str, Any]) -> set[str]:
    """Names of the ``$defs`` the schema still refers to, directly or through one another."""
    defs = schema.get("$defs", {})
    seen: set[str] = set()
    stack = [{k: v for k, v in schema.items() if k != "$defs"}]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_DEFS) and (name := ref[len(_DEFS):]) not in seen:
                seen.add(name)
                stack.append(defs.get(name))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return seen
