"""Anthropic Message Batches lines, as DigitalOcean's sandbox and the Anthropic emulator accept and write them.

Input: ``{"custom_id", "params": {model, max_tokens, messages, ...}}``, never streamed. Output: one
stream where each line is ``{"custom_id", "result": {"type": "succeeded", "message"} | {"type":
"errored", "error"}}``. On DigitalOcean errored lines also go to the error file and requests that
never ran leave no line; Anthropic's own API (``one_stream``) writes every request into the one
stream, those cut off as ``{"type": "canceled"}`` or ``{"type": "expired"}``, and no error file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError, field_validator

from batch_mcp.sandbox.results import Deferred, Outcome, pick, read_prompt, reply_to, tokens
from batch_mcp.sandbox.validation import NotStreamed, OpenLine, describe

CUSTOM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: What a request that fails by chance fails with: passing troubles, which a retry may get past (a request
#: that is itself invalid fails every time, as ``invalid_request_error``).
FAILURES = (
    ("overloaded_error", "Overloaded"),
    ("api_error", "Internal server error"),
)
INVALID = "invalid_request_error"


class _Params(OpenLine):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Any] = Field(min_length=1)
    stream: NotStreamed = None


class _Envelope(OpenLine):
    """What the create call itself checks: the id, and that there are params."""

    custom_id: str
    params: dict[str, Any]

    @field_validator("custom_id")
    @classmethod
    def _safe_custom_id(cls, value: str) -> str:
        if not CUSTOM_ID_PATTERN.fullmatch(value):
            raise ValueError("custom_id must be 1-64 characters of letters, digits, '_' or '-'")
        return value


class _RequestLine(_Envelope):
    params: _Params  # type: ignore[assignment]


#: The emulated models' context window in tokens (Claude's 200k); Anthropic's API finds a longer prompt only
#: when the request runs.
CONTEXT_TOKENS = 200_000


def params_problem(request: Any, *, running: bool = False) -> str | None:
    """Why the request's params are rejected (``running``: also what only running it shows), or None."""
    try:
        _RequestLine.model_validate(request)
    except ValidationError as exc:
        return describe(exc)
    if running and (used := tokens(read_prompt(request)[1])) > CONTEXT_TOKENS:
        return f"prompt is too long: {used} tokens > {CONTEXT_TOKENS} maximum"
    return None


@dataclass
class AnthropicLineCheck:
    """The whole line at once (DigitalOcean's validation), or, as Anthropic's own API checks, the envelope at
    create and ``params`` only when the request runs (``deferred_params``: a bad one comes back errored)."""

    deferred_params: bool = False
    model: str | None = None  # Message Batches may mix models: none is reported

    def problem(self, obj: Any) -> str | None:
        try:
            _Envelope.model_validate(obj)
        except ValidationError as exc:
            return describe(exc)
        problem = params_problem(obj, running=self.deferred_params)
        return Deferred(problem) if problem is not None and self.deferred_params else problem


#: Anthropic's spelling of the outcomes of requests that never ran.
CUT_OFF = {"cancelled": "canceled", "expired": "expired"}


@dataclass(frozen=True)
class AnthropicLineFormat:
    #: Every request gets a line in the one stream, and there is no error file (Anthropic's own API).
    one_stream: bool = False

    def checker(self) -> AnthropicLineCheck:
        return AnthropicLineCheck(deferred_params=self.one_stream)

    def result_lines(
        self, request: dict[str, Any], key: str, outcome: Outcome, created: int
    ) -> tuple[dict | None, dict | None]:
        custom_id = str(request.get("custom_id"))
        if outcome in CUT_OFF:
            return ({"custom_id": custom_id, "result": {"type": CUT_OFF[outcome]}} if self.one_stream else None), None
        if outcome == "failed":
            invalid = params_problem(request, running=True) if self.one_stream else None
            code, message = (INVALID, invalid) if invalid else pick(key, FAILURES)
            error = {"type": "error", "error": {"type": code, "message": message}}
            line = {"custom_id": custom_id, "result": {"type": "errored", "error": error}}
            return line, None if self.one_stream else line
        prompt, prompt_chars = read_prompt(request)
        text = reply_to(prompt)
        message = {
            "id": f"msg_{key}",
            "type": "message",
            "role": "assistant",
            "model": request.get("params", {}).get("model"),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": tokens(prompt_chars), "output_tokens": tokens(len(text))},
        }
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}, None
