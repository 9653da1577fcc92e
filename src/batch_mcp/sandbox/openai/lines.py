"""OpenAI-format result lines: ``{id, custom_id, response: {status_code, request_id, body}, error}``.

Successful bodies are the endpoint's own response object (a ``chat.completion``, an embedding list,
...), built from the deterministic answers of :mod:`batch_mcp.sandbox.results`. A failed request is
reported as OpenAI's guide shows, a non-200 ``response`` whose body holds ``error``, or (DeepInfra,
DigitalOcean) as ``response: null`` with ``error: {code, message}``. Requests a cancel or the deadline
cut off get ``response: null`` and ``error.code`` ``batch_cancelled`` / ``batch_expired``, except on
DigitalOcean's sandbox, which writes nothing for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from batch_mcp.sandbox.openai.checks import OpenAILineCheck
from batch_mcp.sandbox.results import Outcome, digest, pick, read_prompt, reply_to, short_id, tokens

#: ``(code, message)`` per failure, with the HTTP status and error type a real failure carries.
FAILURES = (
    ("context_length_exceeded", "This model's maximum context length was exceeded by the request."),
    ("invalid_request_error", "The request body was rejected by the model endpoint."),
    ("server_error", "The server had an error while processing your request."),
)
FAILURE_STATUS = {"server_error": (500, "server_error")}
CUT_OFF = {
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
}
DEFAULT_DIMENSIONS = 8
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)  # fmt: skip


def _usage(prompt_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": prompt_tokens + output_tokens,
    }


def _texts(value: Any) -> list[str]:
    """The separate inputs of an embeddings or moderations request, as text."""
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return [item if isinstance(item, str) else " ".join(map(str, item)) for item in value]
    return [value if isinstance(value, str) else " ".join(map(str, value))]


def _vector(key: str, dimensions: int) -> list[float]:
    """A unit vector drawn from the key: the same input always embeds the same."""
    raw = b"".join(digest(key, str(block)) for block in range(math.ceil(dimensions / 32)))[:dimensions]
    values = [byte / 127.5 - 1 for byte in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _moderation(key: str) -> dict[str, Any]:
    return {
        "flagged": False,
        "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
        "category_scores": {name: round(digest(key, name)[0] / 25500, 6) for name in MODERATION_CATEGORIES},
        "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
    }


def success_body(endpoint: str, key: str, body: dict[str, Any], created: int) -> dict[str, Any]:
    """The response object ``endpoint`` answers to ``body``."""
    model = body.get("model") or "omni-moderation-latest"
    if endpoint == "/v1/embeddings":
        inputs = _texts(body.get("input"))
        dimensions = body.get("dimensions") or DEFAULT_DIMENSIONS
        prompt_tokens = sum(tokens(len(text)) for text in inputs)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _vector(f"{key}:{text}", dimensions)}
                for i, text in enumerate(inputs)
            ],
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    if endpoint == "/v1/moderations":
        inputs = _texts(body.get("input"))
        return {"id": f"modr-{key}", "model": model, "results": [_moderation(f"{key}:{t}") for t in inputs]}
    prompt, prompt_chars = read_prompt({"body": body})
    text = reply_to(prompt)
    prompt_tokens, output_tokens = tokens(prompt_chars), tokens(len(text))
    if endpoint == "/v1/completions":
        return {
            "id": f"cmpl-{key}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(prompt_tokens, output_tokens),
        }
    if endpoint == "/v1/responses":
        return {
            "id": f"resp_{key}",
            "object": "response",
            "created_at": created,
            "status": "completed",
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{key}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "output_text": text,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "usage": {
                "input_tokens": prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt_tokens + output_tokens,
            },
        }
    return {
        "id": f"chatcmpl-{key}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(prompt_tokens, output_tokens),
    }


@dataclass(frozen=True)
class OpenAILineFormat:
    """OpenAI Batch lines for one batch endpoint."""

    endpoint: str
    #: ``response``: failures carry an HTTP status and error body (OpenAI); ``error``: only ``error``.
    failure_style: Literal["response", "error"] = "response"
    #: Whether requests that never ran get an error-file line.
    cut_off_lines: bool = True
    #: Whether ``response`` carries ``request_id`` (DeepInfra documents none).
    request_ids: bool = True
    one_model: bool = True
    max_embedding_inputs: int | None = None

    def checker(self) -> OpenAILineCheck:
        return OpenAILineCheck(self.endpoint, self.one_model, self.max_embedding_inputs)

    def result_lines(
        self, request: dict[str, Any], key: str, outcome: Outcome, created: int
    ) -> tuple[dict | None, dict | None]:
        line: dict[str, Any] = {"id": f"batch_req_{key}", "custom_id": str(request.get("custom_id"))}
        if outcome == "succeeded":
            body = success_body(self.endpoint, key, request.get("body") or {}, created)
            return line | {"response": self._response(200, key, body), "error": None}, None
        if outcome in CUT_OFF:
            code, message = CUT_OFF[outcome]
        else:
            code, message = pick(key, FAILURES)
        if outcome in CUT_OFF and not self.cut_off_lines:
            return None, None
        if outcome in CUT_OFF or self.failure_style == "error":
            return None, line | {"response": None, "error": {"code": code, "message": message}}
        status, kind = FAILURE_STATUS.get(code, (400, "invalid_request_error"))
        error = {"message": message, "type": kind, "param": None, "code": code}
        return None, line | {"response": self._response(status, key, {"error": error}), "error": None}

    def _response(self, status: int, key: str, body: dict[str, Any]) -> dict[str, Any]:
        request_id = {"request_id": f"req_{short_id(key)}"} if self.request_ids else {}
        return {"status_code": status, **request_id, "body": body}
