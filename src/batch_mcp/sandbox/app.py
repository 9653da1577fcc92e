"""The sandbox's HTTP surface: DigitalOcean's batch API, its presigned storage, and admin routes.

Every route runs through one pipeline (:func:`_operation`): log the request, check the bearer token
(API and admin only; storage URLs are presigned), spend the rate budget (API only), apply injected
delays and faults, then answer. Errors always use the API's ``{id, message, request_id}`` body,
except storage refusals, which answer like S3 with XML.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any, Literal, TypeVar
from xml.sax.saxutils import escape

import anyio
from pydantic import BaseModel, Field, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batch_mcp.sandbox.config import SandboxConfig
from batch_mcp.sandbox.dialects import DIALECTS, ResultUrls, rfc3339
from batch_mcp.sandbox.faults import Fault, FaultKind, Operation, RequestRecord
from batch_mcp.sandbox.state import ApiError, Sandbox, new_id
from batch_mcp.sandbox.validation import describe
from batch_mcp.schemas import TERMINAL_STATUSES, CreateBatchRequest

FILE_NAME_PATTERN = r".+\.[Jj][Ss][Oo][Nn][Ll]$"
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
#: How much of a request body a ``drop`` fault reads before closing the connection.
DROP_AFTER_BYTES = 64 * 1024
#: S3's answers for an expired URL, and for a signed URL whose object is gone.
EXPIRED = ("AccessDenied", "Request has expired.")
ACCESS_DENIED = ("AccessDenied", "Access Denied")
#: Where a ``redirect`` fault sends the client: a name that never resolves, so following it fails loudly.
REDIRECT_HOST = "storage.eu-west-1.sandbox.invalid"

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


class BatchCreateBody(CreateBatchRequest):
    """The shared request model held to the contract: every field the spec requires is required, and
    ``endpoint`` is present exactly when the provider is openai."""

    completion_window: Literal["24h"]
    request_id: str = Field(min_length=1)

    @model_validator(mode="after")
    def _endpoint_fits_provider(self) -> BatchCreateBody:
        if self.provider == "openai" and self.endpoint is None:
            raise ValueError("endpoint is required when provider is openai")
        if self.provider == "anthropic" and self.endpoint is not None:
            raise ValueError("endpoint must be omitted when provider is anthropic")
        return self


class FaultBody(BaseModel):
    operation: Operation
    kind: FaultKind = "server_error"
    times: int = Field(default=1, ge=1)
    retry_after_s: int = Field(default=1, ge=0)


class SlowBody(BaseModel):
    operation: Operation
    seconds: float = Field(ge=0)


class ExpireUploadsBody(BaseModel):
    #: Also give upload URLs created from now on this lifetime.
    ttl_s: float | None = Field(default=None, gt=0)


class AdvanceClockBody(BaseModel):
    seconds: float = Field(ge=0)


Body = TypeVar("Body", bound=BaseModel)


async def _parse(request: Request, model: type[Body]) -> Body:
    """The JSON body as ``model``: 400 if it is not JSON, 422 if it breaks the schema."""
    try:
        return model.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise ApiError(400, "error parsing request body: it is not valid JSON") from exc
        raise ApiError(422, f"request payload validation failed: {describe(exc)}") from exc


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


def _storage_redirect(request: Request) -> Response:
    """A 307 as S3 sends it for a bucket in another region: the same path and query on another host."""
    location = request.url.replace(netloc=REDIRECT_HOST)
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>TemporaryRedirect</Code>'
        f"<Message>Please re-send this request to the specified temporary endpoint.</Message>"
        f"<Endpoint>{REDIRECT_HOST}</Endpoint><RequestId>{new_id()}</RequestId></Error>"
    )
    return Response(xml, status_code=307, media_type="application/xml", headers={"location": str(location)})


class ConnectionDropped(Exception):
    """Raised mid-response so the server closes the connection: the injected ``drop`` fault."""


class DroppedConnection(Response):
    """Promise a body, send a fragment of it, then abort: the client sees a protocol error."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"', "more_body": True})
        raise ConnectionDropped


async def _read_some(request: Request) -> None:
    """Consume the start of the body, so a drop during an upload happens mid-transfer."""
    read = 0
    async for chunk in request.stream():
        read += len(chunk)
        if read >= DROP_AFTER_BYTES:
            return


async def _discard_body(request: Request) -> None:
    """Drain an unread body so a large upload refused early still gets its answer, not a reset."""
    async for _ in request.stream():
        pass


def _origin(request: Request, sandbox: Sandbox) -> str:
    return sandbox.config.public_base_url or str(request.base_url)


# --- the pipeline ----------------------------------------------------------------------------------

Handler = Callable[[Request, Sandbox], Awaitable[Response]]


def _operation(
    path: str,
    method: str,
    operation: str,
    handler: Handler,
    *,
    authenticated: bool = True,
    metered: bool = True,
) -> Route:
    """A route whose handler runs behind logging, auth, the rate budget and fault injection."""

    async def endpoint(request: Request) -> Response:
        sandbox: Sandbox = request.app.state.sandbox
        sandbox.requests.append(
            RequestRecord(
                operation,
                request.method,
                request.url.path,
                "authorization" in request.headers,
                request.headers.get("host", ""),
            )
        )
        try:
            if authenticated:
                _authenticate(request, sandbox.config.token)
            if metered and (wait := sandbox.limiter.acquire(sandbox.clock.now())) is not None:
                raise ApiError(429, retry_after_s=wait)
            if delay := sandbox.faults.delay(operation):
                await anyio.sleep(delay)
            fault = sandbox.faults.take(operation)
            if fault is not None and fault.kind == "drop":
                await _read_some(request)
                return DroppedConnection()
            if fault is not None and fault.kind == "redirect":
                await _discard_body(request)
                return _storage_redirect(request)
            if fault is not None:
                raise _injected_error(fault)
            return await handler(request, sandbox)
        except ApiError as error:
            await _discard_body(request)
            return error_response(error)
        except ClientDisconnect:  # e.g. an upload aborted by the client: nobody is left to answer
            return Response(status_code=400)

    return Route(path, endpoint, methods=[method])


def _injected_error(fault: Fault) -> ApiError:
    if fault.kind == "rate_limit":
        return ApiError(429, retry_after_s=fault.retry_after_s)
    return ApiError(409 if fault.kind == "conflict" else 500)


def _authenticate(request: Request, token: str) -> None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        raise ApiError(401)


# --- batch API -------------------------------------------------------------------------------------


def _upload_path(file_id: str) -> str:
    return f"/storage/uploads/{file_id}.jsonl"


def _result_path(file_id: str) -> str:
    return f"/storage/results/{file_id}.jsonl"


async def create_file(request: Request, sandbox: Sandbox) -> Response:
    body = await _parse(request, FileIntentBody)
    record = sandbox.create_file(body.file_name)
    url = sandbox.signer.presign(
        _origin(request, sandbox), "PUT", _upload_path(record.file_id), math.ceil(record.upload_deadline)
    )
    return JSONResponse(
        {"file_id": record.file_id, "upload_url": url, "expires_at": rfc3339(record.upload_deadline)},
        status_code=201,
    )


async def create_batch(request: Request, sandbox: Sandbox) -> Response:
    job = sandbox.create_batch(await _parse(request, BatchCreateBody))
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
        await _discard_body(request)
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


async def arm_fault(request: Request, sandbox: Sandbox) -> Response:
    body = await _parse(request, FaultBody)
    sandbox.faults.fail_next(body.operation, body.kind, body.times, body.retry_after_s)
    return Response(status_code=204)


async def slow_down(request: Request, sandbox: Sandbox) -> Response:
    body = await _parse(request, SlowBody)
    sandbox.faults.slow(body.operation, body.seconds)
    return Response(status_code=204)


async def expire_upload_urls(request: Request, sandbox: Sandbox) -> Response:
    body = await _parse(request, ExpireUploadsBody)
    sandbox.expire_upload_urls()
    if body.ttl_s is not None:
        sandbox.faults.upload_url_ttl_s = body.ttl_s
    return Response(status_code=204)


async def advance_clock(request: Request, sandbox: Sandbox) -> Response:
    sandbox.clock.advance((await _parse(request, AdvanceClockBody)).seconds)
    return Response(status_code=204)


async def reset_faults(request: Request, sandbox: Sandbox) -> Response:
    sandbox.faults.reset()
    return Response(status_code=204)


async def stats(request: Request, sandbox: Sandbox) -> Response:
    return JSONResponse(sandbox.stats())


async def request_log(request: Request, sandbox: Sandbox) -> Response:
    return JSONResponse([asdict(record) for record in sandbox.requests])


# --- assembly --------------------------------------------------------------------------------------


class RateLimitHeaders:
    """Adds the ``ratelimit-*`` headers to every response, storage and errors included."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.sandbox.limiter.headers(self.sandbox.clock.now()).items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _unrouted(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(ApiError(exc.status_code, exc.detail if exc.status_code != 404 else None))


def _routes() -> list[Route]:
    admin: dict[str, Any] = {"authenticated": True, "metered": False}
    storage: dict[str, Any] = {"authenticated": False, "metered": False}
    return [
        _operation("/v1/batches/files", "POST", "create_file", create_file),
        _operation("/v1/batches", "POST", "create_batch", create_batch),
        _operation("/v1/batches", "GET", "list_batches", list_batches),
        _operation("/v1/batches/{batch_id}", "GET", "get_batch", get_batch),
        _operation("/v1/batches/{batch_id}/cancel", "POST", "cancel_batch", cancel_batch),
        _operation("/v1/batches/{batch_id}/results", "GET", "get_results", get_results),
        _operation("/storage/uploads/{file_id}.jsonl", "PUT", "upload", upload, **storage),
        _operation("/storage/results/{file_id}.jsonl", "GET", "download", download, **storage),
        _operation("/_sandbox/faults", "POST", "admin", arm_fault, **admin),
        _operation("/_sandbox/slow", "POST", "admin", slow_down, **admin),
        _operation("/_sandbox/expire-upload-urls", "POST", "admin", expire_upload_urls, **admin),
        _operation("/_sandbox/advance-clock", "POST", "admin", advance_clock, **admin),
        _operation("/_sandbox/reset-faults", "POST", "admin", reset_faults, **admin),
        _operation("/_sandbox/stats", "GET", "admin", stats, **admin),
        _operation("/_sandbox/requests", "GET", "admin", request_log, **admin),
    ]


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """A new sandbox (fresh state) as an ASGI app; its state is ``app.state.sandbox``."""
    sandbox = Sandbox((config or SandboxConfig()).model_copy())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            sandbox.close()

    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(RateLimitHeaders, sandbox=sandbox)],
        exception_handlers={HTTPException: _unrouted},
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    return app
