"""The create body, read as the API reads it: spooled to disk, split into one request per line, checked.

A body may be 256 MB, so it is never held in memory: it streams to a file, msgspec splits the
``requests`` array out of a memory map of that file (each element kept raw, not decoded), and each
request becomes one line of the job's input file, which the shared engine reads like any other
input. The envelope of every request (its ``custom_id``, that it has ``params``) is checked before the
batch exists, as Anthropic checks the body's schema: the first problem answers 400 and names
``requests.<index>``. ``params`` are checked only when the request runs, as on the real service: a bad
one comes back as an ``errored`` result (``invalid_request_error``) once the batch has ended.
"""

from __future__ import annotations

import mmap
import re
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request

from batch_mcp.sandbox.anthropic_lines import AnthropicLineCheck
from batch_mcp.sandbox.state import ApiError
from batch_mcp.sandbox.validation import InputCheck, check_input

#: JSON whitespace inside one request may hold line breaks (strings never do): they become spaces.
_ONE_LINE = bytes.maketrans(b"\r\n", b"  ")
#: A problem the line check words as ``'params.max_tokens': ...`` or ``missing required field 'params.model'``.
_FIELD = re.compile(r"'([^']+)': (.*)", re.DOTALL)
_MISSING = re.compile(r"missing required field '([^']+)'")


class CreateBody(msgspec.Struct, forbid_unknown_fields=True):
    requests: list[msgspec.Raw]


_decoder = msgspec.json.Decoder(CreateBody)


async def spool(request: Request, path: Path, max_bytes: int) -> None:
    """Write the request body to ``path`` as it arrives; beyond ``max_bytes`` it is refused with 413.

    The caller removes ``path`` however this ends."""
    size = 0
    with path.open("wb", buffering=1 << 20) as sink:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, f"The request body exceeds {max_bytes} bytes; split the batch.")
            sink.write(chunk)


def split(body_path: Path, lines_path: Path, max_requests: int) -> None:
    """Write each element of the body's ``requests`` array to ``lines_path`` as one line (worker thread)."""
    if body_path.stat().st_size == 0:
        raise ApiError(400, 'The request body is empty; send {"requests": [...]}.')
    with body_path.open("rb") as source:
        view = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ)  # closed when the last Raw is gone
    try:
        body = _decoder.decode(view)
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"Invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}") from None
    if not 1 <= len(body.requests) <= max_requests:
        raise ApiError(400, f"requests: a batch holds from 1 to {max_requests} requests, not {len(body.requests)}")
    with lines_path.open("wb", buffering=1 << 20) as out:
        for raw in body.requests:
            out.write(bytes(raw).translate(_ONE_LINE) + b"\n")


def api_message(error: dict[str, Any]) -> str:
    """An input-check problem worded as the API words a schema error: ``requests.<index>.<field>: ...``."""
    message, line = error["message"], error["line"]
    if line is None:
        return message
    where = f"requests.{line - 1}"  # line N of the split file is requests[N - 1]
    problem = message.removeprefix(f"Line {line}: ").rstrip(".")
    if field := _FIELD.fullmatch(problem):
        return f"{where}.{field[1]}: {field[2]}"
    if missing := _MISSING.fullmatch(problem):
        return f"{where}.{missing[1]}: Field required"
    return f"{where}: {problem}"


def check(lines_path: Path, *, batch_id: str, failure_rate: float, max_requests: int, max_bytes: int) -> InputCheck:
    """Check every request's envelope and draw its outcome; the first problem is the API's 400 (worker thread)."""
    checked = check_input(lines_path, AnthropicLineCheck(deferred_params=True), batch_id=batch_id,
                          failure_rate=failure_rate, max_requests=max_requests, max_bytes=max_bytes)
    if checked.errors:
        raise ApiError(400, api_message(checked.errors[0]))
    return checked
