"""The batch tools' arguments: typed, described for a model, and shaped from the configured backends."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import Resolve
from mcp.types import ListRootsResult, ToolAnnotations
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from batch_mcp.backends.registry import CATALOG, Registry
from batch_mcp.tools.context import client_roots
from batch_mcp.tools.describe import discount_text, limits_text

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
METADATA_EXAMPLE = '[{"key": "project", "value": "triage"}]'


# Labels come as a list of pairs, not as an object with free-form keys: strict tool calling (OpenAI's,
# openai-agents' strict mode) accepts no such object. The service and the backends keep a dict.
class MetadataPair(BaseModel):
    """One label of the job."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, Field(strict=True, min_length=1, max_length=MAX_METADATA_KEY_CHARS)]
    value: Annotated[str, Field(strict=True, max_length=MAX_METADATA_VALUE_CHARS)]


#: Spelled out in place rather than as a ``$ref``: openai-agents' strict mode refuses references in a tool schema.
MetadataItem = Annotated[MetadataPair, WithJsonSchema(MetadataPair.model_json_schema())]


def _pairs_not_an_object(given: Any) -> Any:
    if isinstance(given, dict):
        raise ValueError(f"metadata is a list of key/value pairs, e.g. {METADATA_EXAMPLE}, not an object")
    return given


def _unique_keys(pairs: list[MetadataPair] | None) -> list[MetadataPair] | None:
    keys = [pair.key for pair in pairs or ()]
    if twice := next((key for key in keys if keys.count(key) > 1), None):
        raise ValueError(f"metadata key {twice!r} is given more than once; give each key once")
    return pairs


def metadata_dict(pairs: list[MetadataPair] | None) -> dict[str, str] | None:
    """The labels as the service and the backends take them."""
    return None if pairs is None else {pair.key: pair.value for pair in pairs}


Path_ = Annotated[str, Field(min_length=1, max_length=4096,
                             description="Path of the .jsonl file; relative paths start at the first allowed folder.")]
#: Line format and endpoint: ArgumentShapes offers what the configured backends accept.
ProviderArg = str | None
EndpointArg = str | None
BatchId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
                               description="The batch_id returned by submit_batch, create_batch or list_batches "
                                           "(or a job group's id, group-...).")]
Metadata = Annotated[
    Annotated[list[MetadataItem], Field(max_length=MAX_METADATA_KEYS)] | None,
    BeforeValidator(_pairs_not_an_object),
    AfterValidator(_unique_keys),
    Field(description=f"Optional labels for the job as key/value pairs, e.g. {METADATA_EXAMPLE}: at most "
                      f"{MAX_METADATA_KEYS}, each key once (1-{MAX_METADATA_KEY_CHARS} characters), values up to "
                      f"{MAX_METADATA_VALUE_CHARS} characters. get_batch shows them as an object."),
]
Roots = Annotated[ListRootsResult, Resolve(client_roots)]
NewJob = Annotated[bool, Field(description="Force a new job even if this exact submission already made one.")]

def titled(title: str, annotations: ToolAnnotations) -> dict[str, Any]:
    """The tool's title, also as its annotation title: some clients (langchain's) read only the latter."""
    return {"title": title, "annotations": annotations.model_copy(update={"title": title})}


READ_ONLY_LOCAL = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
READ_ONLY_REMOTE = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True)
CREATES_REMOTE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                 open_world_hint=True)


Tool = TypeVar("Tool", bound=Callable[..., Any])


def unregistered(**_: Any) -> Callable[[Tool], Tool]:
    """Stands in for ``mcp.tool`` or ``mcp.prompt`` where a configuration offers no such tool or prompt."""
    return lambda tool: tool

#: A completion window as the backends write them: ``24h``, ``48h``, ``7d``.
WINDOW_PATTERN = r"^[1-9][0-9]{0,3}[hd]$"


class ArgumentShapes:
    """Tool arguments shaped from the configured backends (the default one when none is): a choice offers what
    one of them accepts, and an argument with a single possible value is not offered at all. With DigitalOcean
    alone, every schema stays as it always was."""

    def __init__(self, registry: Registry) -> None:
        self.names = registry.configured  # hosted: every backend a caller may send a key for
        shown = [CATALOG[name].capabilities for name in self.names or (registry.default,)]
        self.formats = tuple(dict.fromkeys(f for caps in shown for f in caps.line_formats))
        self.endpoints = tuple(dict.fromkeys(e for caps in shown for e in caps.endpoints))
        self.windows = "; ".join(f"{caps.name}: {caps.windows}" for caps in shown)
        self.one_window = all(str(caps.windows) == "24h" for caps in shown)
        facts = "; ".join(f"{name} ({limits_text(CATALOG[name].capabilities)}, "
                          f"{discount_text(CATALOG[name].capabilities)})" for name in self.names)
        self._backend: Any = Annotated[Literal[self.names] | None,  # type: ignore[valid-type]
                                       Field(description=f"Which backend runs it: {facts}. "
                                                         f"Default: {registry.default}.")]

    def _annotation(self, param: inspect.Parameter) -> Any:
        formats: Any = Literal[self.formats]  # type: ignore[valid-type]
        endpoints: Any = Literal[self.endpoints]  # type: ignore[valid-type]
        optional = param.default is None
        if param.name == "provider":
            said = " or ".join(self.formats)
            return Annotated[formats | None if optional else formats,
                             Field(description=f"{said}; detected from the lines when omitted." if optional
                                   else f"{said}.")]
        if param.name == "endpoint":
            return Annotated[endpoints | None if optional else endpoints,
                             Field(description="openai only: the endpoint every line's url uses; detected when "
                                               "omitted." if optional else "openai only.")]
        if param.name == "completion_window" and not self.one_window:
            return Annotated[str, Field(pattern=WINDOW_PATTERN, description="How long the backend may take to "
                                        f"finish, as 24h or 7d ({self.windows}). Default 24h.")]
        return param.annotation

    def __call__(self, tool: Tool) -> Tool:
        signature = inspect.signature(tool, eval_str=True)
        params = []
        for param in signature.parameters.values():
            if param.name == "backend" and len(self.names) < 2:
                continue
            if param.name == "endpoint" and not self.endpoints:
                continue  # no configured backend names endpoints (Anthropic's lines carry none)
            if param.name == "completion_window" and self.one_window and param.annotation is str:
                continue  # offered where there is a choice; create_batch has always shown its one value
            annotation = self._backend if param.name == "backend" else self._annotation(param)
            default = param.default
            if param.name == "provider" and isinstance(default, str) and default not in self.formats:
                default = self.formats[0]  # e.g. Anthropic alone: its own line format, not openai's
            params.append(param.replace(annotation=annotation, default=default))
        tool.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return tool
