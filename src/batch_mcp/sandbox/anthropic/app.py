"""Anthropic's Message Batches API on the engine every emulator shares.

Routes, below the origin (the SDK's paths start with ``/v1`` themselves): ``POST /v1/messages/batches``
(the requests inline in the body), ``GET /v1/messages/batches`` (newest first; ``limit`` 1..1000,
``after_id`` or ``before_id``; ``has_more``, ``first_id``, ``last_id``), ``GET|DELETE
/v1/messages/batches/{id}``, ``POST /v1/messages/batches/{id}/cancel`` and ``GET
/v1/messages/batches/{id}/results`` (the JSONL stream ``results_url`` names, absolute on the host
the client called), plus the shared ``/_sandbox`` admin routes. Every route runs through
:mod:`batch_mcp.sandbox.pipeline`, so faults and rate limits work as on the other emulators.

The body is checked when it arrives, so the engine's ``validating`` phase is skipped. Choices
where Anthropic documents nothing: cancelling an ended batch, deleting one still processing and
asking for results before the end answer 400 ``invalid_request_error``; an ``after_id`` or
``before_id`` that names no batch, or both at once, 400.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Literal, get_args

import anyio
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from batch_mcp.sandbox.admin import admin_routes
from batch_mcp.sandbox.anthropic.intake import check, split, spool
from batch_mcp.sandbox.anthropic.wire import (
    BATCHES,
    authenticate,
    batch_object,
    ended,
    error_response,
    processing_status,
    ratelimit_headers,
)
from batch_mcp.sandbox.anthropic_lines import AnthropicLineFormat
from batch_mcp.sandbox.config import SandboxConfig
from batch_mcp.sandbox.pipeline import Handler, RateLimitHeaders, RequestIds, closing, operation_route, unrouted
from batch_mcp.sandbox.state import ApiError, EmulatedApi, Job, Sandbox, Snapshot

Operation = Literal["create_batch", "list_batches", "get_batch", "cancel_batch", "delete_batch", "download"]
OPERATIONS: tuple[str, ...] = get_args(Operation)
MAX_REQUESTS, MAX_BODY_BYTES = 100_000, 256 * 1000 * 1000
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 1000
LINES = AnthropicLineFormat(one_stream=True)


class StoredBatch(BaseModel):
    """What the ledger keeps of a create body: nothing, since its requests became the job's input file."""

    model_config = ConfigDict(extra="forbid")


def _origin(request: Request, sandbox: Sandbox) -> str:
    """Where ``results_url`` points: the configured public origin, else the one this request came to."""
    return sandbox.config.public_base_url or str(request.base_url).rstrip("/")


def _answer(request: Request, sandbox: Sandbox, job: Job, snap: Snapshot) -> Response:
    return JSONResponse(batch_object(job, snap, _origin(request, sandbox)))


async def _found(request: Request, sandbox: Sandbox) -> tuple[Job, Snapshot]:
    batch_id = request.path_params["batch_id"]
    job = sandbox.ledger.job(batch_id)
    if job is None:
        raise ApiError(404, f"No message batch found with id '{batch_id}'.")
    return job, await sandbox.snapshot(job)


async def create_batch(request: Request, sandbox: Sandbox) -> Response:
    batch_id = f"msgbatch_{uuid.uuid4().hex[:24]}"
    lines_path = sandbox.upload_path(batch_id)  # the account holds batches, not files: only the job names it
    body_path = lines_path.with_suffix(".body")
    try:
        await spool(request, body_path, sandbox.max_bytes)
        await anyio.to_thread.run_sync(split, body_path, lines_path, sandbox.max_requests)
        checked = await anyio.to_thread.run_sync(
            partial(
                check,
                lines_path,
                batch_id=batch_id,
                failure_rate=sandbox.config.failure_rate,
                max_requests=sandbox.max_requests,
                max_bytes=sandbox.max_bytes,
            )
        )
        job = sandbox.add_job(StoredBatch(), batch_id, sandbox.config.completion_window_s, batch_id=batch_id,
                              check=checked)
    except BaseException:
        lines_path.unlink(missing_ok=True)
        raise
    finally:
        body_path.unlink(missing_ok=True)
    return _answer(request, sandbox, job, await sandbox.snapshot(job))


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise ApiError(400, f"limit: Input should be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def _anchor(sandbox: Sandbox, name: str, batch_id: str) -> int:
    job = sandbox.ledger.job(batch_id)
    if job is None:
        raise ApiError(400, f"{name}: '{batch_id}' names no message batch")
    return job.seq


async def list_batches(request: Request, sandbox: Sandbox) -> Response:
    """Newest first. ``after_id`` pages toward older batches, ``before_id`` toward newer ones."""
    query = request.query_params
    limit = _page_size(query.get("limit"))
    after, before = query.get("after_id"), query.get("before_id")
    if after and before:
        raise ApiError(400, "Pass after_id or before_id, not both.")
    jobs = sandbox.ledger.jobs()
    if after:
        seq = _anchor(sandbox, "after_id", after)
        rest = [job for job in jobs if job.seq < seq]
        page = rest[:limit]
    elif before:
        seq = _anchor(sandbox, "before_id", before)
        rest = [job for job in jobs if job.seq > seq]
        page = rest[-limit:]
    else:
        rest = jobs
        page = rest[:limit]
    origin = _origin(request, sandbox)
    data = [batch_object(job, await sandbox.snapshot(job), origin) for job in page]
    return JSONResponse(
        {
            "data": data,
            "has_more": len(rest) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def get_batch(request: Request, sandbox: Sandbox) -> Response:
    return _answer(request, sandbox, *await _found(request, sandbox))


async def cancel_batch(request: Request, sandbox: Sandbox) -> Response:
    job, snap = await _found(request, sandbox)
    if ended(snap):
        raise ApiError(400, f"Message batch {job.batch_id} has already ended and cannot be canceled.")
    return _answer(request, sandbox, job, await sandbox.cancel(job, while_validating=True))


async def delete_batch(request: Request, sandbox: Sandbox) -> Response:
    job, snap = await _found(request, sandbox)
    if not ended(snap):
        raise ApiError(
            400,
            f"Message batch {job.batch_id} is {processing_status(snap)}; it can be deleted once processing has "
            "ended. Cancel it first.",
        )
    if not sandbox.delete_job(job):  # another process deleted it a moment ago
        raise ApiError(404, f"No message batch found with id '{job.batch_id}'.")
    return JSONResponse({"id": job.batch_id, "type": "message_batch_deleted"})


async def batch_results(request: Request, sandbox: Sandbox) -> Response:
    job, snap = await _found(request, sandbox)
    if not ended(snap):
        raise ApiError(
            400, f"Message batch {job.batch_id} is {processing_status(snap)}; results are ready once it has ended."
        )
    files = await sandbox.result_files(job, snap)
    return FileResponse(files[job.output_file_id], media_type="application/binary")


def _routes() -> list[Route]:
    handlers: list[tuple[str, str, str, Handler]] = [
        ("", "POST", "create_batch", create_batch),
        ("", "GET", "list_batches", list_batches),
        ("/{batch_id}", "GET", "get_batch", get_batch),
        ("/{batch_id}", "DELETE", "delete_batch", delete_batch),
        ("/{batch_id}/cancel", "POST", "cancel_batch", cancel_batch),
        ("/{batch_id}/results", "GET", "download", batch_results),
    ]
    return [
        operation_route(BATCHES + path, method, operation, handler, error_response, check_auth=authenticate)
        for path, method, operation, handler in handlers
    ] + admin_routes(error_response)


def create_app(config: SandboxConfig) -> Starlette:
    """A fresh Anthropic emulator; its state is ``app.state.sandbox``."""
    api = EmulatedApi(OPERATIONS, (MAX_REQUESTS, MAX_BODY_BYTES), StoredBatch, lambda _batch: LINES)
    sandbox = Sandbox(config.model_copy(update={"validating_s": 0.0}), api)
    app = Starlette(
        routes=_routes(),
        middleware=[
            Middleware(RequestIds, header="request-id"),
            Middleware(RateLimitHeaders, sandbox=sandbox, render=ratelimit_headers),
        ],
        exception_handlers={HTTPException: unrouted(error_response)},
        lifespan=closing(sandbox),
    )
    app.state.sandbox = sandbox
    return app
