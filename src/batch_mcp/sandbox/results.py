"""Deterministic fake inference: which requests fail, and the provider-native result files.

Everything derives from the input line and the batch id, so the same batch always yields the same
files, while a request retried in a new batch usually succeeds (its failure draw changes with the
batch id). A prompt containing ``[[fail]]`` always fails, for tests that need a sure failure.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

FAIL_MARKER = b"[[fail]]"
SUMMARY_WORDS = 12
GIL_PAUSE_EVERY_S = 0.02

OPENAI_ERRORS = (
    ("context_length_exceeded", "This model's maximum context length was exceeded by the request."),
    ("invalid_request_error", "The request body was rejected by the model endpoint."),
    ("server_error", "The server had an error while processing your request."),
)
ANTHROPIC_ERRORS = (
    ("overloaded_error", "Overloaded"),
    ("invalid_request_error", "The request parameters were rejected by the model."),
    ("api_error", "Internal server error"),
)

_POSITIVE = frozenset(
    "good great excellent love loved amazing wonderful best happy fantastic enjoyed perfect nice".split()
)
_NEGATIVE = frozenset(
    "bad terrible awful hate hated worst poor disappointing broken boring horrible refund slow".split()
)
_WORD = re.compile(r"[a-z']+")
_encoder = msgspec.json.Encoder()


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def _short_id(*parts: str) -> str:
    return _digest(*parts).hex()[:24]


def will_fail(batch_id: str, custom_id: str, raw_line: bytes, failure_rate: float) -> bool:
    """Whether this request fails in this batch: the marker, or a hash draw under the failure rate."""
    if FAIL_MARKER in raw_line:
        return True
    draw = int.from_bytes(_digest(batch_id, custom_id)[:8], "big") / 2**64
    return draw < failure_rate


def iter_requests(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(1-based line number, raw line)`` for every non-blank line: blank lines are not requests.

    Callers run in a worker thread doing CPU-bound work per line. Pausing every ``GIL_PAUSE_EVERY_S``
    hands the GIL to the event loop thread, which would otherwise wait ~5 ms for it after each of
    its system calls and answer requests slowly while a large file is processed.
    """
    paused_at = time.monotonic()
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if time.monotonic() - paused_at >= GIL_PAUSE_EVERY_S:
                time.sleep(0)
                paused_at = time.monotonic()
            if raw.strip():
                yield number, raw


# --- reading prompts -------------------------------------------------------------------------------


def _text(content: Any) -> str:
    """Plain text of a message content in any provider's shape (string, parts list, nested message)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(filter(None, (_text(part) for part in content)))
    if isinstance(content, dict):
        if isinstance(content.get("text"), str):
            return content["text"]
        return _text(content.get("content"))
    return ""


def _messages(request: dict[str, Any]) -> tuple[list[Any], str]:
    """The conversation of a request line and any system text, whatever the provider."""
    payload = request.get("params") or request.get("body") or {}
    system = _text(payload.get("system")) + " " + _text(payload.get("instructions"))
    messages = payload.get("messages")
    if messages is None:  # Responses API: ``input`` is a string or a list of input items
        raw_input = payload.get("input")
        messages = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input
    return (messages if isinstance(messages, list) else []), system.strip()


def read_prompt(request: dict[str, Any]) -> tuple[str, int]:
    """The last user message, and the character count of the whole prompt (for token usage)."""
    messages, system = _messages(request)
    texts = [(m.get("role") if isinstance(m, dict) else None, _text(m)) for m in messages]
    user_texts = [text for role, text in texts if role == "user"] or [text for _, text in texts]
    prompt_chars = len(system) + sum(len(text) for _, text in texts)
    return (user_texts[-1] if user_texts else ""), prompt_chars


def reply_to(prompt: str) -> str:
    """A plausible answer: a sentiment label when asked to classify, otherwise a short summary."""
    lowered = prompt.lower()
    if "classify" in lowered or "sentiment" in lowered:
        subject = lowered.split(":", 1)[-1]  # skip the instruction, which names the labels
        words = _WORD.findall(subject)
        score = sum(w in _POSITIVE for w in words) - sum(w in _NEGATIVE for w in words)
        return "positive" if score > 0 else "negative" if score < 0 else "neutral"
    return "Summary: " + " ".join(prompt.split(maxsplit=SUMMARY_WORDS)[:SUMMARY_WORDS])


def _tokens(chars: int) -> int:
    return max(1, chars // 4)


# --- provider-native result lines ------------------------------------------------------------------


def _openai_body(
    endpoint: str, key: str, model: str, text: str, usage: tuple[int, int], created: int
) -> dict:
    prompt_tokens, output_tokens = usage
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
            "usage": {
                "input_tokens": prompt_tokens,
                "output_tokens": output_tokens,
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
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": prompt_tokens + output_tokens,
        },
    }


def _result_lines(
    request: dict[str, Any], *, provider: str, endpoint: str | None, batch_id: str, failed: bool, created: int
) -> tuple[dict | None, dict | None]:
    """``(output line, error-file line)`` of one request; either may be ``None``."""
    custom_id = str(request.get("custom_id"))
    key = _short_id(batch_id, custom_id)
    choices = ANTHROPIC_ERRORS if provider == "anthropic" else OPENAI_ERRORS
    code, message = choices[_digest(key)[0] % len(choices)]
    if provider == "anthropic":
        if failed:
            line = {
                "custom_id": custom_id,
                "result": {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": code, "message": message}},
                },
            }
            return line, line
        prompt, prompt_chars = read_prompt(request)
        text = reply_to(prompt)
        return {
            "custom_id": custom_id,
            "result": {
                "type": "succeeded",
                "message": {
                    "id": f"msg_{key}",
                    "type": "message",
                    "role": "assistant",
                    "model": request.get("params", {}).get("model"),
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": _tokens(prompt_chars), "output_tokens": _tokens(len(text))},
                },
            },
        }, None
    if failed:
        return None, {
            "id": f"batch_req_{key}",
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    prompt, prompt_chars = read_prompt(request)
    text = reply_to(prompt)
    body = _openai_body(
        endpoint or "/v1/chat/completions",
        key,
        request.get("body", {}).get("model"),
        text,
        (_tokens(prompt_chars), _tokens(len(text))),
        created,
    )
    return {
        "id": f"batch_req_{key}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": f"req_{_short_id(key)}", "body": body},
        "error": None,
    }, None


def write_results(
    input_path: Path,
    output_path: Path,
    error_path: Path,
    *,
    provider: str,
    endpoint: str | None,
    batch_id: str,
    failures: bytes,
    done: int,
    created: int,
) -> bool:
    """Stream the result files of the first ``done`` requests; return whether an error file was written.

    ``failures`` holds one flag per request (decided at validation), so the files always agree with
    the counts the job reported while running.
    """
    wrote_errors = False
    with output_path.open("wb") as output, error_path.open("wb") as errors:
        for index, (_, raw) in enumerate(iter_requests(input_path)):
            if index >= done:
                break
            request = msgspec.json.decode(raw)
            line, error_line = _result_lines(
                request,
                provider=provider,
                endpoint=endpoint,
                batch_id=batch_id,
                failed=bool(failures[index]),
                created=created,
            )
            if line is not None:
                output.write(_encoder.encode(line) + b"\n")
            if error_line is not None:
                errors.write(_encoder.encode(error_line) + b"\n")
                wrote_errors = True
    if not wrote_errors:
        error_path.unlink()
    return wrote_errors
