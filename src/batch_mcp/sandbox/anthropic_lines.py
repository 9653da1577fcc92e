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

from batch_mcp.sandbox.results import Outcome, pick, read_prompt, reply_to, tokens
from batch_mcp.sandbox.validation import NotStreamed, OpenLine, describe

CUSTOM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FAILURES = (
    ("overloaded_error", "Overloaded"),
    ("invalid_request_error", "The request parameters were rejected by the model."),
    ("api_error", "Internal server error"),
)


class _Params(OpenLine):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Any] = Field(min_length=1)
    stream: NotStreamed = None


class _RequestLine(OpenLine):
    custom_id: str
    params: _Params

    @field_validator("custom_id")
    @classmethod
    def _safe_custom_id(cls, value: str) -> str:
        if not CUSTOM_ID_PATTERN.fullmatch(value):
            raise ValueError("custom_id must be 1-64 characters of letters, digits, '_' or '-'")
        return value


class AnthropicLineCheck:
    model: str | None = None  # Message Batches may mix models: none is reported

    def problem(self, obj: Any) -> str | None:
        try:
            _RequestLine.model_validate(obj)
        except ValidationError as exc:
            return describe(exc)
        return None


#: Anthropic's spelling of the outcomes of requests that never ran.
CUT_OFF = {"cancelled": "canceled", "expired": "expired"}


@dataclass(frozen=True)
class AnthropicLineFormat:
    #: Every request gets a line in the one stream, and there is no error file (Anthropic's own API).
    one_stream: bool = False

    def checker(self) -> AnthropicLineCheck:
        return AnthropicLineCheck()

    def result_lines(
        self, request: dict[str, Any], key: str, outcome: Outcome, created: int
    ) -> tuple[dict | None, dict | None]:
        custom_id = str(request.get("custom_id"))
        if outcome in CUT_OFF:
            return ({"custom_id": custom_id, "result": {"type": CUT_OFF[outcome]}} if self.one_stream else None), None
        if outcome == "failed":
            code, message = pick(key, FAILURES)
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
