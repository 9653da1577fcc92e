"""Test and admin routes every emulated API serves under ``/_sandbox``: bearer-authenticated, never
rate-limited, answering errors in that API's own shape."""

from __future__ import annotations

from dataclasses import asdict

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from batch_mcp.sandbox.faults import FaultKind
from batch_mcp.sandbox.pipeline import ErrorRenderer, Handler, operation_route, parse_json
from batch_mcp.sandbox.state import ApiError, Sandbox

#: Admin bodies that break their schema answer 422 on every API: this surface is the sandbox's own.
INVALID = 422


class FaultBody(BaseModel):
    operation: str
    kind: FaultKind = "server_error"
    times: int = Field(default=1, ge=1)
    retry_after_s: int = Field(default=1, ge=0)


class SlowBody(BaseModel):
    operation: str
    seconds: float = Field(ge=0)


class AdvanceClockBody(BaseModel):
    seconds: float = Field(ge=0)


async def arm_fault(request: Request, sandbox: Sandbox) -> Response:
    body = await parse_json(request, FaultBody, invalid_status=INVALID)
    try:
        sandbox.faults.fail_next(body.operation, body.kind, body.times, body.retry_after_s)
    except ValueError as exc:
        raise ApiError(INVALID, str(exc), param="operation") from exc
    return Response(status_code=204)


async def slow_down(request: Request, sandbox: Sandbox) -> Response:
    body = await parse_json(request, SlowBody, invalid_status=INVALID)
    try:
        sandbox.faults.slow(body.operation, body.seconds)
    except ValueError as exc:
        raise ApiError(INVALID, str(exc), param="operation") from exc
    return Response(status_code=204)


async def advance_clock(request: Request, sandbox: Sandbox) -> Response:
    sandbox.clock.advance((await parse_json(request, AdvanceClockBody, invalid_status=INVALID)).seconds)
    return Response(status_code=204)


async def reset_faults(request: Request, sandbox: Sandbox) -> Response:
    sandbox.faults.reset()
    return Response(status_code=204)


async def stats(request: Request, sandbox: Sandbox) -> Response:
    return JSONResponse(sandbox.stats())


async def request_log(request: Request, sandbox: Sandbox) -> Response:
    return JSONResponse([asdict(record) for record in sandbox.requests])


def admin_routes(render_error: ErrorRenderer, extra: dict[tuple[str, str], Handler] | None = None) -> list[Route]:
    """The shared admin routes plus an API's own (``{(method, path): handler}``)."""
    handlers: dict[tuple[str, str], Handler] = {
        ("POST", "/_sandbox/faults"): arm_fault,
        ("POST", "/_sandbox/slow"): slow_down,
        ("POST", "/_sandbox/advance-clock"): advance_clock,
        ("POST", "/_sandbox/reset-faults"): reset_faults,
        ("GET", "/_sandbox/stats"): stats,
        ("GET", "/_sandbox/requests"): request_log,
        **(extra or {}),
    }
    return [
        operation_route(path, method, "admin", handler, render_error, metered=False)
        for (method, path), handler in handlers.items()
    ]
