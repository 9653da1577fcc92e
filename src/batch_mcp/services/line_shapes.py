"""What the preflight reads a line as, and the words its messages use: the shape each line is decoded into
(one level deep, so the bulk of a prompt is scanned, never built), the required fields with what a correct
value looks like, and how values are described back to the agent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from batch_mcp.schemas.preflight import ProblemCode

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
COMPLETIONS = "/v1/completions"
#: The body field each OpenAI endpoint cannot do without (a protocol fact; which endpoints a backend runs is
#: its capabilities' business).
PROMPT_FIELD = {CHAT: "messages", RESPONSES: "input", "/v1/embeddings": "input", "/v1/moderations": "input",
                 COMPLETIONS: "prompt"}
#: Output tokens assumed for a request that sets no limit, in the cost estimate's ceiling.
DEFAULT_OUTPUT_TOKENS = 1000
QUOTE_MAX = 80  # longest value quoted back in a message


# --- The shape a line is decoded into ------------------------------------------------------------------
# JSON values decoded one level deep: containers hold msgspec.Raw slices, so the big prompt content is only
# scanned, never built into Python objects. A field typed this way (or Any) accepts every JSON value, so
# decoding fails only on real syntax errors and the checks below can say exactly which field is wrong.
# The Structs are not tracked by the garbage collector (gc=False): decoded JSON cannot form cycles.
NonObject = list[Raw] | str | int | float | bool | None
Shallow = NonObject | dict[str, Raw]


class OpenAIBody(msgspec.Struct, gc=False):
    model: Any = UNSET
    messages: Shallow | UnsetType = UNSET
    input: Shallow | UnsetType = UNSET
    instructions: Shallow | UnsetType = UNSET
    max_tokens: Any = UNSET
    max_completion_tokens: Any = UNSET
    max_output_tokens: Any = UNSET
    prompt: Shallow | UnsetType = UNSET


class AnthropicParams(msgspec.Struct, gc=False):
    model: Any = UNSET
    max_tokens: Any = UNSET
    messages: Shallow | UnsetType = UNSET
    system: Shallow | UnsetType = UNSET
    stream: Any = UNSET
    betas: Any = UNSET


class RequestLine(msgspec.Struct, gc=False):
    custom_id: Any = UNSET
    method: Any = UNSET
    url: Any = UNSET
    body: OpenAIBody | NonObject | UnsetType = UNSET
    params: AnthropicParams | NonObject | UnsetType = UNSET


DECODER = msgspec.json.Decoder(RequestLine | NonObject)


# --- Describing fields and values in messages ----------------------------------------------------------
@dataclass(frozen=True)
class RequiredField:
    """A required field: its path in the line, its two problem codes, and what a correct value looks like."""

    path: str
    missing: ProblemCode
    invalid: ProblemCode
    expected: str


MESSAGES_EXAMPLE = 'a non-empty array of messages, e.g. [{"role": "user", "content": "..."}]'
CUSTOM_ID = RequiredField("custom_id", ProblemCode.MISSING_CUSTOM_ID, ProblemCode.INVALID_CUSTOM_ID,
                    'a non-empty string unique in the file, e.g. "req-1", used to match each result')
METHOD = RequiredField("method", ProblemCode.MISSING_METHOD, ProblemCode.INVALID_METHOD, '"POST"')
BODY = RequiredField("body", ProblemCode.MISSING_BODY, ProblemCode.INVALID_BODY,
               "an object holding the request for the url's endpoint (model, messages or input, ...)")
PARAMS = RequiredField("params", ProblemCode.MISSING_PARAMS, ProblemCode.INVALID_PARAMS,
                 "an object holding a Messages API request (model, max_tokens, messages, ...)")
BODY_MODEL = RequiredField("body.model", ProblemCode.MISSING_MODEL, ProblemCode.INVALID_MODEL,
                     'a non-empty string naming the model, e.g. "gpt-4o-mini"')
PARAMS_MODEL = RequiredField("params.model", ProblemCode.MISSING_MODEL, ProblemCode.INVALID_MODEL,
                       'a non-empty string naming the model, e.g. "claude-sonnet-4-5"')
BODY_MESSAGES = RequiredField("body.messages", ProblemCode.MISSING_MESSAGES, ProblemCode.INVALID_MESSAGES,
                        f"{MESSAGES_EXAMPLE} ({CHAT} needs it)")
PARAMS_MESSAGES = RequiredField("params.messages", ProblemCode.MISSING_MESSAGES, ProblemCode.INVALID_MESSAGES,
                          MESSAGES_EXAMPLE)
INPUT = RequiredField("body.input", ProblemCode.MISSING_INPUT, ProblemCode.INVALID_INPUT,
                "a non-empty string or array of input items (the url's endpoint needs it)")
PROMPT = RequiredField("body.prompt", ProblemCode.MISSING_INPUT, ProblemCode.INVALID_INPUT,
                 f"a non-empty string or array of prompts ({COMPLETIONS} needs it)")
MAX_TOKENS = RequiredField("params.max_tokens", ProblemCode.MISSING_MAX_TOKENS, ProblemCode.INVALID_MAX_TOKENS,
                     "an integer >= 1, the most tokens to generate, e.g. 1024")


def quote(value: str) -> str:
    return repr(value if len(value) <= QUOTE_MAX else value[:QUOTE_MAX] + "...")


def describe(value: Any) -> str:
    """A value as a message shows it: scalars quoted, containers by their JSON type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int | float):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return f"{quote(value)} (a string)" if value else "an empty string"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    return "an object"


def output_ceiling(*limits: Any) -> int:
    """The first integer output limit a request sets, else the default the cost estimate assumes."""
    for limit in limits:
        if type(limit) is int:
            return limit
    return DEFAULT_OUTPUT_TOKENS


def prompt_size(*fields: Any) -> int:
    """Size of the prompt fields: characters of a string, JSON bytes of an array's items."""
    size = 0
    for value in fields:
        if type(value) is list:
            size += sum(map(len, value))
        elif type(value) is str:
            size += len(value)
    return size
