"""Deterministic fake inference: which requests fail, what they answer, and the result files.

Everything derives from the input line and the batch id, so the same batch always yields the same
files, while a request retried in a new batch usually succeeds (its failure draw changes with the
batch id). A prompt containing ``[[fail]]`` always fails, for tests that need a sure failure.
The shape of each line belongs to a :class:`LineFormat` (one per provider format).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec

FAIL_MARKER = b"[[fail]]"
SUMMARY_WORDS = 12
GIL_PAUSE_EVERY_S = 0.02

#: What became of one request: it ran (and succeeded or failed), or a cancel or the deadline cut it off.
Outcome = Literal["succeeded", "failed", "cancelled", "expired"]


class Deferred(str):
    """A problem an API finds only when the request runs (Anthropic's ``params``): the line is accepted, and
    its request fails."""


class LineCheck(Protocol):
    """Checks the lines of one input file in order; it may remember earlier lines (one model per file)."""

    #: The model the file's requests name, once a line named one.
    model: str | None

    def problem(self, obj: Any) -> str | None:
        """Why this decoded line is refused, or ``None``; ``obj["custom_id"]`` is a string when accepted (also
        when the problem is :class:`Deferred`)."""
        ...


class LineFormat(Protocol):
    """A provider's input and result line shapes, as one job of the sandbox uses them."""

    def checker(self) -> LineCheck: ...

    def result_lines(
        self, request: dict[str, Any], key: str, outcome: Outcome, created: int
    ) -> tuple[dict | None, dict | None]:
        """``(output line, error-file line)`` of one request; either may be ``None``."""
        ...

_POSITIVE = frozenset(
    "good great excellent love loved amazing wonderful best happy fantastic enjoyed perfect nice".split()
)
_NEGATIVE = frozenset(
    "bad terrible awful hate hated worst poor disappointing broken boring horrible refund slow".split()
)
_WORD = re.compile(r"[a-z']+")
_encoder = msgspec.json.Encoder()


def digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def short_id(*parts: str) -> str:
    return digest(*parts).hex()[:24]


def will_fail(batch_id: str, custom_id: str, raw_line: bytes, failure_rate: float) -> bool:
    """Whether this request fails in this batch: the marker, or a hash draw under the failure rate."""
    if FAIL_MARKER in raw_line:
        return True
    draw = int.from_bytes(digest(batch_id, custom_id)[:8], "big") / 2**64
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
    if messages is None:  # Responses API: ``input`` is a string or a list of input items (legacy: prompt)
        raw_input = payload.get("input", payload.get("prompt"))
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


def tokens(chars: int) -> int:
    return max(1, chars // 4)


def pick(key: str, choices: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """A stable choice among ``(code, message)`` failures for the request with this key."""
    return choices[digest(key)[0] % len(choices)]


def write_results(
    input_path: Path,
    output_path: Path,
    error_path: Path,
    *,
    lines: LineFormat,
    batch_id: str,
    failures: bytes,
    done: int,
    cut_off_by: Literal["cancelled", "expired"] | None,
    created: int,
) -> bool:
    """Stream the result files; return whether an error file was written.

    The first ``done`` requests ran; ``failures`` holds one flag per request (decided at validation),
    so the files always agree with the counts the job reported while running. The rest were cut off
    by ``cut_off_by``, and the format decides whether they leave a line.
    """
    wrote_errors = False
    with output_path.open("wb") as output, error_path.open("wb") as errors:
        for index, (_, raw) in enumerate(iter_requests(input_path)):
            if index >= done and cut_off_by is None:
                break
            request = msgspec.json.decode(raw)
            outcome: Outcome = (
                cut_off_by if index >= done and cut_off_by else "failed" if failures[index] else "succeeded"
            )
            line, error_line = lines.result_lines(
                request, short_id(batch_id, str(request.get("custom_id"))), outcome, created
            )
            if line is not None:
                output.write(_encoder.encode(line) + b"\n")
            if error_line is not None:
                errors.write(_encoder.encode(error_line) + b"\n")
                wrote_errors = True
    if not wrote_errors:
        error_path.unlink()
    return wrote_errors
