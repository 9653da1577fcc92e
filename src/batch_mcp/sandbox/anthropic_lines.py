"""Anthropic Message Batches lines, as DigitalOcean's sandbox accepts and writes them.

Input: ``{"custom_id", "params": {model, max_tokens, messages, ...}}``. Output: one stream where each
line is ``{"custom_id", "result": {"type": "succeeded", "message"} | {"type": "errored", "error"}}``;
errored lines also go to the error file. Requests that never ran leave no line.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from batch_mcp.sandbox.results import Outcome, pick, read_prompt, reply_to, tokens
from batch_mcp.sandbox.validation import describe

CUSTOM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FAILURES = (
    ("overloaded_error", "Overloaded"),
    ("invalid_request_error", "The request parameters were rejected by the model."),
    ("api_error", "Internal server error"),
)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Params(_Open):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Any] = Field(min_length=1)


class _RequestLine(_Open):
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


class AnthropicLineFormat:
    def checker(self) -> AnthropicLineCheck:
        return AnthropicLineCheck()

    def result_lines(
        self, request: dict[str, Any], key: str, outcome: Outcome, created: int
    ) -> tuple[dict | None, dict | None]:
        custom_id = str(request.get("custom_id"))
        if outcome in ("cancelled", "expired"):
            return None, None
        if outcome == "failed":
            code, message = pick(key, FAILURES)
            error = {"type": "error", "error": {"type": code, "message": message}}
            line = {"custom_id": custom_id, "result": {"type": "errored", "error": error}}
            return line, line
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
