"""The sandbox's HTTP surface: DigitalOcean's batch API, its presigned storage, and admin routes.

Every route runs through the shared pipeline (:mod:`batch_mcp.sandbox.pipeline`): log the request,
check the bearer token (API and admin only; storage URLs are presigned), spend the rate budget (API
only), apply injected delays and faults, then answer. Errors always use the API's ``{id, message, request_id}`` body,
except storage refusals, which answer like S3 with XML.
"""

from __future__ import annotations

import math
from typing import Literal
from xml.sax.saxutils import escape

from pydantic import BaseModel, Field, model_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from batch_mcp.sandbox.admin import INVALID, admin_routes
from batch_mcp.sandbox.anthropic_lines import AnthropicLineFormat
from batch_mcp.sandbox.config import DO_MAX_BYTES, DO_MAX_REQUESTS, SandboxConfig
from batch_mcp.sandbox.dialects import DIALECTS, ResultUrls, rfc3339
from batch_mcp.sandbox.faults import OPERATIONS
from batch_mcp.sandbox.ledger import Job, new_id
from batch_mcp.sandbox.lifecycle import TERMINAL_STATUSES
from batch_mcp.sandbox.openai.lines import OpenAILineFormat
from batch_mcp.sandbox.pipeline import (
    Body,
    Handler,
    RateLimitHeaders,
    closing,
    discard_body,
    operation_route,
    parse_json,
)
from batch_mcp.sandbox.ratelimit import digitalocean_headers
from batch_mcp.sandbox.results import LineFormat
from batch_mcp.sandbox.state import ApiError, EmulatedApi, Sandbox

FILE_NAME_PATTERN = r".+\.[Jj][Ss][Oo][Nn][Ll]$"
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
#: S3's answers for an expired URL, and for a signed URL whose object is gone.
EXPIRED = ("AccessDenied", "Request has expired.")
ACCESS_DENIED = ("AccessDenied", "Access Denied")

ERROR_IDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "server_error",
}
DEFAULT_MESSAGES = {
    400: "error parsing request body",
    401: "Unable to authenticate you.",
    404: "The resource you requested could not be found.",
    409: "The request could not be completed due to a conflict.",
    412: "Batch results are not yet available. Retry once the job has completed.",
    422: "request payload validation failed",
    429: "API rate limit exceeded.",
    500: "Unexpected server-side error",
}
#: Every status each operation can answer (a ``drop`` fault answers none; a ``redirect`` fault answers
#: 307, as S3 does beyond the spec, and a ``conflict`` fault 409 anywhere). Conformance tests check
#: that each pair is exercised and matches the OpenAPI extract.
RESPONSE_STATUSES: dict[str, frozenset[int]] = {
    "create_file": frozenset({201, 400, 401, 422, 429, 500}),
    "upload": frozenset({200, 403, 429, 500}),
    "create_batch": frozenset({201, 400, 401, 404, 409, 422, 429, 500}),
    "list_batches": frozenset({200, 400, 401, 429, 500}),
    "get_batch": frozenset({200, 401, 404, 429, 500}),
    "cancel_batch": frozenset({200, 401, 404, 409, 429, 500}),
    "get_results": frozenset({200, 401, 404, 412, 429, 500}),
    "download": frozenset({200, 403, 429, 500}),
}


# --- request bodies --------------------------------------------------------------------------------


class FileIntentBody(BaseModel):
    file_name: str = Field(min_length=7, pattern=FILE_NAME_PATTERN)


class BatchCreateBody(BaseModel):
    """``POST /v1/batches`` held to the contract: every field the spec requires is required, and
    ``endpoint`` is present exactly when the provider is openai."""

    file_id: str
    provider: Literal["openai", "anthropic"]
    completion_window: Literal["24h"]
    request_id: str = Field(min_length=1)
    endpoint: Literal["/v1/chat/completions", "/v1/responses"] | None = None
    metadata: dict[str, str] | None = None

    @model_validator(mode="after")
    def _endpoint_fits_provider(self) -> BatchCreateBody:
        if self.provider == "openai" and self.endpoint is None:
            raise ValueError("endpoint is required when provider is openai")
        if self.provider == "anthropic" and self.endpoint is not None:
            raise ValueError("endpoint must be omitted when provider is anthropic")
        return self

    def lines(self) -> LineFormat:
        if self.endpoint is None:
            return AnthropicLineFormat()
        return OpenAILineFormat(self.endpoint, failure_style="error", cut_off_lines=False, one_model=False)


class ExpireUploadsBody(BaseModel):
    #: Also give upload URLs created from now on this lifetime.
    ttl_s: float | None = Field(default=None, gt=0)


async def _parse(request: Request, model: type[Body]) -> Body:
    """The JSON body as ``model``: 400 if it is not JSON, 422 if it breaks the schema."""
    return await parse_json(request, model, invalid_status=INVALID)


# --- responses -------------------------------------------------------------------------------------


def error_response(error: ApiError) -> JSONResponse:
    body = {
        "id": ERROR_IDS.get(error.status, "error"),
        "message": error.message or DEFAULT_MESSAGES.get(error.status, "error"),
        "request_id": new_id(),
    }
    headers = {"retry-after": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return JSONResponse(body, status_code=error.status, headers=headers)


def _storage_refusal(code: str, message: str) -> Response:
    """A 403 as object storage sends it: S3-style XML, not the API's JSON."""
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message><RequestId>{new_id()}</RequestId></Error>"
    )
    return Response(xml, status_code=403, media_type="application/xml")


def _origin(request: Request, sandbox: Sandbox) -> str:
    return sandbox.config.public_base_url or str(request.base_url)


def _route(path: str, method: str, operation: str, handler: Handler, **options: bool) -> Route:
    return operation_route(path, method, operation, handler, error_response, **options)


# --- batch API -------------------------------------------------------------------------------------


def _upload_path(file_id: str) -> str:
    return f"/storage/uploads/{file_id}.jsonl"


def _result_path(file_id: str) -> str:
    return f"/storage/results/{file_id}.jsonl"


async def create_file(request: Request, sandbox: Sandbox) -> Response:
    body = await _parse(request, FileIntentBody)
    record = sandbox.create_file(
        body.file_name, upload_ttl_s=sandbox.faults.upload_url_ttl_s or sandbox.config.upload_url_ttl_s
    )
    url = sandbox.signer.presign(
        _origin(request, sandbox), "PUT", _upload_path(record.file_id), math.ceil(record.upload_deadline)
    )
    return JSONResponse(
        {"file_id": record.file_id, "upload_url": url, "expires_at": rfc3339(record.upload_deadline)},
        status_code=201,
    )


def _start_job(sandbox: Sandbox, body: BatchCreateBody) -> Job:
    """Create a job, or return the one already created with this idempotency key."""
    job = sandbox.ledger.job_with_key(body.request_id)
    if job is None:
        record = sandbox.files.get(body.file_id)
        if record is None:
            raise ApiError(404, f"Input file '{body.file_id}' was not found.")
        if record.size is None:
            raise ApiError(
                400,
                f"Input file '{body.file_id}' has not been uploaded: PUT its bytes to the "
                "upload_url before creating the batch.",
            )
        # another process may have created it since: then that job is the one returned
        job = sandbox.add_job(body, body.file_id, sandbox.config.completion_window_s, key=body.request_id)
    if job.request != body:
        raise ApiError(
            409,
            f"request_id '{body.request_id}' was already used for batch "
            f"{job.batch_id} with a different request body.",
        )
    return job


async def create_batch(request: Request, sandbox: Sandbox) -> Response:
    job = _start_job(sandbox, await _parse(request, BatchCreateBody))
    # An idempotent replay answers 201 too, with the existing job: the spec declares no other success.
    return JSONResponse(
        DIALECTS[sandbox.config.dialect].batch(job, await sandbox.snapshot(job)), status_code=201
    )


def _page_size(raw: str | None) -> int:
    """``limit`` clamped into 1..100 (the spec lists no 400 for it); only a non-integer is refused."""
    if raw is None:
        return DEFAULT_PAGE_SIZE
    try:
        return min(MAX_PAGE_SIZE, max(1, int(raw)))
    except ValueError as exc:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_PAGE_SIZE}") from exc


async def list_batches(request: Request, sandbox: Sandbox) -> Response:
    dialect = DIALECTS[sandbox.config.dialect]
    params = request.query_params
    limit = _page_size(params.get("limit"))
    status = params.get("status")
    if status is not None and status not in dialect.statuses:
        raise ApiError(400, f"status must be one of {', '.join(dialect.statuses)}")
    rows = [row for row in await sandbox.snapshots() if status is None or dialect.status(row[1]) == status]
    if after := params.get("after"):
        try:
            after_seq = dialect.after_seq(after, sandbox.jobs)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        rows = [row for row in rows if row[0].seq < after_seq]
    return JSONResponse(dialect.page(rows[:limit], has_more=len(rows) > limit))


async def get_batch(request: Request, sandbox: Sandbox) -> Response:
    job = sandbox.job(request.path_params["batch_id"])
    return JSONResponse(DIALECTS[sandbox.config.dialect].batch(job, await sandbox.snapshot(job)))


async def cancel_batch(request: Request, sandbox: Sandbox) -> Response:
    job = sandbox.job(request.path_params["batch_id"])
    return JSONResponse(DIALECTS[sandbox.config.dialect].batch(job, await sandbox.cancel(job)))


async def get_results(request: Request, sandbox: Sandbox) -> Response:
    """412 until terminal; a failed job answers 200 with ``result_available: false`` (it never has any)."""
    job = sandbox.job(request.path_params["batch_id"])
    snap = await sandbox.snapshot(job)
    if snap.status not in TERMINAL_STATUSES:
        raise ApiError(412)
    urls = None
    if snap.has_results:
        files = await sandbox.result_files(job, snap)
        expires = math.ceil(sandbox.clock.now() + sandbox.config.download_url_ttl_s)
        origin = _origin(request, sandbox)

        def sign(file_id: str) -> str:
            return sandbox.signer.presign(origin, "GET", _result_path(file_id), expires)

        error_url = sign(job.error_file_id) if job.error_file_id in files else None
        urls = ResultUrls(sign(job.output_file_id), error_url, expires)
    return JSONResponse(DIALECTS[sandbox.config.dialect].results(job, urls))


# --- presigned storage -----------------------------------------------------------------------------


def _signature_refusal(request: Request, sandbox: Sandbox) -> tuple[str, str] | None:
    return sandbox.signer.refusal(request.method, request.url.path, request.query_params, sandbox.clock.now())


async def upload(request: Request, sandbox: Sandbox) -> Response:
    """Stream the body to disk. The signature and the file's own deadline (which a fault may bring
    forward) must both hold."""
    record = sandbox.files.get(request.path_params["file_id"])
    refusal = _signature_refusal(request, sandbox)
    if refusal is not None or record is None or sandbox.clock.now() >= record.upload_deadline:
        await discard_body(request)
        return _storage_refusal(*(refusal or EXPIRED))
    await sandbox.store_upload(record, request.stream())
    return Response(status_code=200)


async def download(request: Request, sandbox: Sandbox) -> Response:
    path = sandbox.result_path(request.path_params["file_id"])
    refusal = _signature_refusal(request, sandbox)
    if refusal is not None or path is None:
        return _storage_refusal(*(refusal or ACCESS_DENIED))
    return FileResponse(path, media_type="application/octet-stream")


# --- admin -----------------------------------------------------------------------------------------


async def expire_upload_urls(request: Request, sandbox: Sandbox) -> Response:
    body = await _parse(request, ExpireUploadsBody)
    sandbox.expire_upload_urls()
    if body.ttl_s is not None:
        sandbox.faults.upload_url_ttl_s = body.ttl_s
    return Response(status_code=204)


# --- assembly --------------------------------------------------------------------------------------


async def _unrouted(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(ApiError(exc.status_code, exc.detail if exc.status_code != 404 else None))


def _routes() -> list[Route]:
    storage = {"authenticated": False, "metered": False}
    return [
        _route("/v1/batches/files", "POST", "create_file", create_file),
        _route("/v1/batches", "POST", "create_batch", create_batch),
        _route("/v1/batches", "GET", "list_batches", list_batches),
        _route("/v1/batches/{batch_id}", "GET", "get_batch", get_batch),
        _route("/v1/batches/{batch_id}/cancel", "POST", "cancel_batch", cancel_batch),
        _route("/v1/batches/{batch_id}/results", "GET", "get_results", get_results),
        _route("/storage/uploads/{file_id}.jsonl", "PUT", "upload", upload, **storage),
        _route("/storage/results/{file_id}.jsonl", "GET", "download", download, **storage),
        *admin_routes(error_response, {("POST", "/_sandbox/expire-upload-urls"): expire_upload_urls}),
    ]


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """A new sandbox (fresh state) as an ASGI app; its state is ``app.state.sandbox``."""
    api = EmulatedApi(OPERATIONS, (DO_MAX_REQUESTS, DO_MAX_BYTES), BatchCreateBody, BatchCreateBody.lines)
    sandbox = Sandbox((config or SandboxConfig()).model_copy(), api)

    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(RateLimitHeaders, sandbox=sandbox, render=digitalocean_headers)],
        exception_handlers={HTTPException: _unrouted},
        lifespan=closing(sandbox),
    )
    app.state.sandbox = sandbox
    return app
