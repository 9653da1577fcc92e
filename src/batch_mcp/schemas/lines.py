"""JSONL line shapes: request lines each provider accepts, and result lines each provider writes.

Request lines are strict (they describe what the service will accept). Result lines are parsed
tolerantly into one :class:`ResultRecord`, since the sources disagree on whether the output file is
normalised or provider-native (do-batch-api.md §10.3): the success payload may sit in
``response.body``, in ``response`` itself or in ``result.message``; the failure in ``error`` or
``result.error``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The request-line formats: OpenAI's (``method``/``url``/``body``) and Anthropic's (``params``).
Provider = Literal["openai", "anthropic"]
#: The endpoints DigitalOcean runs OpenAI-format lines for.
OPENAI_ENDPOINTS: tuple[str, ...] = ("/v1/chat/completions", "/v1/responses")

CUSTOM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Per line format, the error types that say the request itself is wrong: a retry would fail the same way.
RETRY_CANNOT_FIX: dict[str, frozenset[str]] = {"anthropic": frozenset({"invalid_request_error"})}


class _Line(BaseModel):
    model_config = ConfigDict(extra="allow")


class OpenAIBody(_Line):
    model: str = Field(min_length=1)
    messages: list[Any] | None = None
    input: Any = None


class OpenAIRequestLine(_Line):
    """``{"custom_id", "method": "POST", "url", "body"}`` (OpenAI Batch input format)."""

    custom_id: str = Field(min_length=1)
    method: Literal["POST"]
    url: str
    body: OpenAIBody

    @field_validator("url")
    @classmethod
    def _supported_url(cls, url: str) -> str:
        if url not in OPENAI_ENDPOINTS:
            raise ValueError(f"url must be one of {', '.join(OPENAI_ENDPOINTS)}")
        return url

    def check_body_for(self, endpoint: str) -> str | None:
        """Return a problem if the body lacks what the endpoint needs."""
        if endpoint == "/v1/chat/completions" and not self.body.messages:
            return "body.messages must be a non-empty list for /v1/chat/completions"
        if endpoint == "/v1/responses" and self.body.input in (None, "", []):
            return "body.input is required for /v1/responses"
        return None


class AnthropicParams(_Line):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Any] = Field(min_length=1)


class AnthropicRequestLine(_Line):
    """``{"custom_id", "params": {model, max_tokens, messages, ...}}`` (Message Batches format)."""

    custom_id: str
    params: AnthropicParams

    @field_validator("custom_id")
    @classmethod
    def _safe_custom_id(cls, value: str) -> str:
        if not CUSTOM_ID_PATTERN.fullmatch(value):
            raise ValueError("custom_id must be 1-64 characters of letters, digits, '_' or '-'")
        return value


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def from_any(cls, usage: Any) -> Usage:
        if not isinstance(usage, dict):
            return cls()
        return cls(
            input_tokens=int(usage.get("input_tokens") or usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or usage.get("completion_tokens") or 0),
        )


class ResultRecord(BaseModel):
    """One result line, normalised across providers and output styles."""

    custom_id: str
    succeeded: bool
    text: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    model: str | None = None
    usage: Usage = Field(default_factory=Usage)

    @classmethod
    def from_line(cls, line: dict[str, Any]) -> ResultRecord:
        custom_id = str(line.get("custom_id", ""))
        result = line.get("result") if isinstance(line.get("result"), dict) else None
        if result is not None:  # Anthropic: {"result": {"type": "succeeded", "message": {...}}}
            if result.get("type") == "succeeded" and isinstance(result.get("message"), dict):
                return cls._success(custom_id, result["message"])
            error = result.get("error") if isinstance(result.get("error"), dict) else {}
            inner = error.get("error") if isinstance(error.get("error"), dict) else error
            return cls(
                custom_id=custom_id,
                succeeded=False,
                error_code=inner.get("type") or inner.get("code") or str(result.get("type") or "errored"),
                error_message=inner.get("message") or f"request {result.get('type', 'errored')}",
            )
        response = line.get("response") if isinstance(line.get("response"), dict) else None
        error = line.get("error") if isinstance(line.get("error"), dict) else None
        if response is not None and error is None:
            body = response.get("body") if isinstance(response.get("body"), dict) else response
            status = response.get("status_code")
            if status is None or 200 <= int(status) < 300:
                return cls._success(custom_id, body)
            error = body.get("error") if isinstance(body.get("error"), dict) else {"code": f"http_{status}"}
        error = error or {"code": "unknown_error", "message": "the result line has neither response nor error"}
        return cls(
            custom_id=custom_id,
            succeeded=False,
            error_code=error.get("code") or error.get("type") or "unknown_error",
            error_message=error.get("message"),
        )

    @classmethod
    def _success(cls, custom_id: str, payload: dict[str, Any]) -> ResultRecord:
        model = payload.get("model")
        return cls(custom_id=custom_id, succeeded=True, text=extract_text(payload),
                   model=model if isinstance(model, str) else None, usage=Usage.from_any(payload.get("usage")))


def extract_text(payload: dict[str, Any]) -> str | None:
    """The generated text of a chat completion, a Responses API object or an Anthropic message."""
    choices = payload.get("choices")
    if isinstance(choices, list) and choices:
        message = choices[0].get("message") or {}
        content = message.get("content")
        if isinstance(content, str):
            return content
    if isinstance(payload.get("output_text"), str):
        return payload["output_text"]
    parts: list[str] = []
    for item in payload.get("output") or []:  # Responses API
        for block in (item.get("content") or []) if isinstance(item, dict) else []:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
    for block in payload.get("content") or [] if isinstance(payload.get("content"), list) else []:
        if isinstance(block, dict) and block.get("type") == "text":  # Anthropic message
            parts.append(block.get("text", ""))
    return "".join(parts) if parts else None
