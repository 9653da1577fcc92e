"""The OpenAI Batch API (files + batches) as OpenAI, DeepInfra or Groq serve it, under the vendor's base path.

Routes: ``POST /files`` (multipart, streamed to disk), ``GET|DELETE /files/{id}``,
``GET /files/{id}/content``, ``POST /batches``, ``GET /batches`` (newest first, ``limit`` + ``after``),
``GET /batches/{id}``, ``POST /batches/{id}/cancel``; plus the shared ``/_sandbox`` admin routes.
Every route runs through :mod:`batch_mcp.sandbox.pipeline`, so faults and rate limits work as on
DigitalOcean's emulator. Choices where the vendors document nothing:

* an unknown ``input_file_id`` on create: 404 (``param: input_file_id``); a file not uploaded for
  ``purpose=batch``: 400;
* cancel while ``validating`` is accepted (the batch ends ``cancelled`` with no results); on a
  terminal batch: 409;
* deleting an input file keeps its bytes for the batches that still read it.
"""

from __future__ import annotations

import uuid
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from batch_mcp.sandbox.admin import admin_routes
from batch_mcp.sandbox.config import SandboxConfig
from batch_mcp.sandbox.ledger import Job, StoredFile
from batch_mcp.sandbox.openai.uploads import read_upload
from batch_mcp.sandbox.openai.variants import HOUR_S, VARIANTS, Variant
from batch_mcp.sandbox.openai.wire import (
    FILE_TTL_S,
    batch_object,
    error_response,
    file_object,
    has_errors,
    has_output,
    ratelimit_headers,
)
from batch_mcp.sandbox.pipeline import (
    Handler,
    RateLimitHeaders,
    RequestIds,
    closing,
    operation_route,
    parse_json,
    unrouted,
)
from batch_mcp.sandbox.state import ApiError, EmulatedApi, Sandbox

Operation = Literal[
    "upload", "get_file", "delete_file", "download", "create_batch", "list_batches", "get_batch", "cancel_batch"
]
OPERATIONS: tuple[str, ...] = get_args(Operation)
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
MAX_METADATA_PAIRS, MAX_KEY_CHARS, MAX_VALUE_CHARS = 16, 64, 512
MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 2_592_000


class OutputExpiry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchor: Literal["created_at"]
    seconds: int = Field(ge=MIN_EXPIRY_S, le=MAX_EXPIRY_S)


class CreateBatchBody(BaseModel):
    """``POST /batches``. Unknown fields are refused, as the real API refuses unrecognised arguments."""

    model_config = ConfigDict(extra="forbid")
    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    output_expires_after: OutputExpiry | None = None

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata is None:
            return None
        if len(metadata) > MAX_METADATA_PAIRS:
            raise ValueError(f"metadata holds at most {MAX_METADATA_PAIRS} pairs")
        for key, value in metadata.items():
            if len(key) > MAX_KEY_CHARS or len(value) > MAX_VALUE_CHARS:
                raise ValueError(f"metadata keys hold at most {MAX_KEY_CHARS} characters, values {MAX_VALUE_CHARS}")
        return metadata


def _variant(request: Request) -> Variant:
    return request.app.state.variant


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


async def _write_results(sandbox: Sandbox, file_id: str) -> None:
    """Write the result files of the batch that advertises ``file_id``, if it has not yet."""
    job = sandbox.ledger.job_with_result(file_id)
    if job is None or job.results is not None:
        return
    snap = await sandbox.snapshot(job)
    advertised = has_output(snap) if file_id == job.output_file_id else has_errors(snap)
    if advertised:
        expiry = job.request.output_expires_after
        # an output file never advertised (nothing succeeded) stays unreachable
        await sandbox.result_files(job, snap, publish_output=has_output(snap),
                                   ttl_s=expiry.seconds if expiry else None)


async def _find_file(sandbox: Sandbox, file_id: str) -> StoredFile:
    if file_id not in sandbox.files and file_id not in sandbox.result_records:
        await _write_results(sandbox, file_id)
    record = sandbox.files.get(file_id) or sandbox.result_records.get(file_id)
    if record is None or record.size is None:
        raise ApiError(404, f"No such File object: {file_id}", param="file_id")
    return record


# --- files -----------------------------------------------------------------------------------------


async def upload_file(request: Request, sandbox: Sandbox) -> Response:
    variant = _variant(request)
    file_id = _new_id("file-")
    partial_path = sandbox.upload_path(file_id).with_suffix(".part")
    upload = await read_upload(request, partial_path, variant.max_upload_bytes)
    try:
        if upload.too_large:
            raise ApiError(413, f"The file is {upload.size} bytes; the limit is {variant.max_upload_bytes}.")
        if upload.file_name is None:
            raise ApiError(400, "Missing the 'file' part (a file upload).", param="file")
        if upload.fields.get("purpose") != "batch":
            raise ApiError(400, "'purpose' must be 'batch' for batch input files.", param="purpose")
        ttl_s = _expiry(upload.fields)
    except ApiError:
        partial_path.unlink(missing_ok=True)
        raise
    partial_path.replace(sandbox.upload_path(file_id))
    record = sandbox.create_file(upload.file_name, file_id=file_id, size=upload.size, ttl_s=ttl_s)
    return JSONResponse(file_object(record, variant))


def _expiry(fields: dict[str, str]) -> float:
    """``expires_after[seconds]`` if sent (anchored at creation), else the default 30 days."""
    seconds = fields.get("expires_after[seconds]")
    if seconds is None:
        return FILE_TTL_S
    if fields.get("expires_after[anchor]") != "created_at" or not seconds.isdigit() or not (
        MIN_EXPIRY_S <= int(seconds) <= MAX_EXPIRY_S
    ):
        raise ApiError(
            400,
            f"expires_after needs anchor 'created_at' and seconds from {MIN_EXPIRY_S} to {MAX_EXPIRY_S}.",
            param="expires_after",
        )
    return int(seconds)


async def get_file(request: Request, sandbox: Sandbox) -> Response:
    record = await _find_file(sandbox, request.path_params["file_id"])
    return JSONResponse(file_object(record, _variant(request)))


async def delete_file(request: Request, sandbox: Sandbox) -> Response:
    record = await _find_file(sandbox, request.path_params["file_id"])
    sandbox.delete_file(record)
    return JSONResponse({"id": record.file_id, "object": "file", "deleted": True})


async def file_content(request: Request, sandbox: Sandbox) -> Response:
    record = await _find_file(sandbox, request.path_params["file_id"])
    return FileResponse(record.path, media_type="application/octet-stream")


# --- batches ---------------------------------------------------------------------------------------


async def create_batch(request: Request, sandbox: Sandbox) -> Response:
    variant = _variant(request)
    body = await parse_json(request, CreateBatchBody, invalid_status=400)
    if body.endpoint not in variant.endpoints:
        raise ApiError(400, f"endpoint must be one of {', '.join(variant.endpoints)}.", param="endpoint")
    hours = variant.window_hours(body.completion_window)
    if hours is None:
        raise ApiError(400, f"completion_window must be {variant.window_rule()}.", param="completion_window")
    record = sandbox.files.get(body.input_file_id)
    if record is None or record.size is None:
        raise ApiError(404, f"No such File object: {body.input_file_id}", param="input_file_id")
    if record.purpose != "batch":
        raise ApiError(400, f"File {body.input_file_id} was not uploaded with purpose 'batch'.", param="input_file_id")
    window_s = sandbox.config.completion_window_s * hours * HOUR_S / (24 * HOUR_S)
    job = sandbox.add_job(body, body.input_file_id, window_s, batch_id=_new_id("batch_"),
                          result_ids=(_new_id("file-"), _new_id("file-")))
    return JSONResponse(batch_object(job, await sandbox.snapshot(job), variant))


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_PAGE_SIZE}.", param="limit")
    return int(raw)


async def list_batches(request: Request, sandbox: Sandbox) -> Response:
    variant = _variant(request)
    limit = _page_size(request.query_params.get("limit"))
    jobs = sandbox.ledger.jobs()
    if after := request.query_params.get("after"):
        anchor = sandbox.ledger.job(after)
        if anchor is None:
            raise ApiError(400, f"after must be the id of a listed batch; '{after}' is unknown.", param="after")
        jobs = [job for job in jobs if job.seq < anchor.seq]
    page = [batch_object(job, await sandbox.snapshot(job), variant) for job in jobs[:limit]]
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(jobs) > limit,
        }
    )


def _job(sandbox: Sandbox, batch_id: str) -> Job:
    job = sandbox.ledger.job(batch_id)
    if job is None:
        raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
    return job


async def get_batch(request: Request, sandbox: Sandbox) -> Response:
    job = _job(sandbox, request.path_params["batch_id"])
    return JSONResponse(batch_object(job, await sandbox.snapshot(job), _variant(request)))


async def cancel_batch(request: Request, sandbox: Sandbox) -> Response:
    job = _job(sandbox, request.path_params["batch_id"])
    snap = await sandbox.cancel(job, while_validating=True)
    return JSONResponse(batch_object(job, snap, _variant(request)))


# --- assembly --------------------------------------------------------------------------------------


def _routes(base: str) -> list[Route]:
    handlers: list[tuple[str, str, str, Handler]] = [
        ("/files", "POST", "upload", upload_file),
        ("/files/{file_id}", "GET", "get_file", get_file),
        ("/files/{file_id}", "DELETE", "delete_file", delete_file),
        ("/files/{file_id}/content", "GET", "download", file_content),
        ("/batches", "POST", "create_batch", create_batch),
        ("/batches", "GET", "list_batches", list_batches),
        ("/batches/{batch_id}", "GET", "get_batch", get_batch),
        ("/batches/{batch_id}/cancel", "POST", "cancel_batch", cancel_batch),
    ]
    return [
        operation_route(base + path, method, operation, handler, error_response)
        for path, method, operation, handler in handlers
    ] + admin_routes(error_response)


def create_app(config: SandboxConfig) -> Starlette:
    """A fresh emulator of ``config.backend`` (openai, deepinfra or groq); its state is ``app.state.sandbox``."""
    variant = VARIANTS[config.backend]
    api = EmulatedApi(OPERATIONS, (variant.max_requests, variant.max_batch_bytes), CreateBatchBody,
                      lambda body: variant.lines(body.endpoint))
    sandbox = Sandbox(config.model_copy(), api)

    app = Starlette(
        routes=_routes(variant.base_path),
        middleware=[
            Middleware(RequestIds),
            Middleware(RateLimitHeaders, sandbox=sandbox, render=ratelimit_headers),
        ],
        exception_handlers={HTTPException: unrouted(error_response)},
        lifespan=closing(sandbox),
    )
    app.state.sandbox = sandbox
    app.state.variant = variant
    return app

