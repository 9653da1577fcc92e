"""Server-side check of an uploaded input file, run at the end of the ``validating`` phase.

The rules every batch API shares live here (one JSON object per line, unique ``custom_id``, request
and size limits); what a line must look like is the job's :class:`LineCheck`. Problems are reported
the way the Batch object carries them: ``{code: "invalid_input_file", message: "Line N: ...", line: N}``.
The check also decides, once, which requests will fail, so running counts and result files agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from batch_mcp.sandbox.results import Deferred, LineCheck, iter_requests, will_fail


class OpenLine(BaseModel):
    """A request line's part as the APIs read it: the fields they check, and any others passed through."""

    model_config = ConfigDict(extra="allow")


def _not_streamed(stream: bool | None) -> bool | None:
    if stream:
        raise ValueError("a batch request cannot stream; drop stream or set it to false")
    return stream


#: ``stream`` in a batch request: absent or false (every batch API refuses a streamed request).
NotStreamed = Annotated[bool | None, AfterValidator(_not_streamed)]

#: The Batch object carries at most this many errors; the check stops once it has them.
MAX_REPORTED_ERRORS = 20
INVALID_INPUT = "invalid_input_file"


def describe(error: ValidationError, within: str | None = None) -> str:
    """One readable sentence for the first problem pydantic found (``within`` prefixes its field)."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in ((within,) if within else ()) + tuple(first["loc"]))
    if first["type"] == "missing":
        return f"missing required field '{where}'"
    message = first["msg"].removeprefix("Value error, ")
    return f"'{where}': {message}" if where else message


@dataclass(frozen=True)
class InputCheck:
    total: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: One byte per request, in file order: 1 if that request fails.
    failures: bytes = b""
    #: The one model the file's requests name, if the format names one.
    model: str | None = None


def check_input(
    path: Path,
    lines: LineCheck,
    *,
    batch_id: str,
    failure_rate: float,
    max_requests: int,
    max_bytes: int,
) -> InputCheck:
    """Validate the file and draw each request's outcome. Runs in a worker thread (it reads the file)."""
    size = path.stat().st_size
    if size > max_bytes:
        message = f"The input file is {size} bytes; the limit is {max_bytes} bytes."
        return InputCheck(0, [{"code": INVALID_INPUT, "message": message, "line": None}])
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    failures = bytearray()

    def report(number: int, problem: str) -> None:
        errors.append({"code": INVALID_INPUT, "message": f"Line {number}: {problem}.", "line": number})

    for number, raw in iter_requests(path):
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
        if len(failures) >= max_requests:
            report(number, f"the file holds more than {max_requests} requests")
            break
        try:
            obj = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            report(number, f"invalid JSON ({exc})")
            continue
        problem = lines.problem(obj) if isinstance(obj, dict) else "expected a JSON object"
        deferred = isinstance(problem, Deferred)
        if (problem is None or deferred) and obj["custom_id"] in seen:
            problem, deferred = (
                f"duplicate custom_id '{obj['custom_id']}' (first used on line {seen[obj['custom_id']]})"
            ), False
        if problem is not None and not deferred:
            report(number, problem)
            continue
        seen[obj["custom_id"]] = number
        failures.append(deferred or will_fail(batch_id, obj["custom_id"], raw, failure_rate))
    if errors:
        return InputCheck(0, errors)
    if not failures:
        return InputCheck(
            0, [{"code": INVALID_INPUT, "message": "The input file holds no requests.", "line": None}]
        )
    return InputCheck(len(failures), [], bytes(failures), lines.model)
