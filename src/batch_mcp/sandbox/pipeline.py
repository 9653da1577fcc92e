"""The request pipeline every emulated API shares: log, authenticate, meter, inject faults, answer.

Each API supplies its handlers, how it renders an :class:`ApiError` and which rate-limit headers it
sends; the order of the checks and the fault kinds are written once here.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batch_mcp.sandbox.faults import RequestRecord
from batch_mcp.sandbox.ledger import new_id
from batch_mcp.sandbox.ratelimit import Budget
from batch_mcp.sandbox.state import ApiError, Sandbox
from batch_mcp.sandbox.validation import describe

#: What the faults that answer with an error status answer.
_FAULT_STATUS = {"server_error": 500, "conflict": 409, "overloaded": 529}

#: How much of a request body a ``drop`` fault reads before closing the connection.
DROP_AFTER_BYTES = 64 * 1024
#: Where a ``redirect`` fault sends the client: a name that never resolves, so following it fails loudly.
REDIRECT_HOST = "storage.eu-west-1.sandbox.invalid"

Handler = Callable[[Request, Sandbox], Awaitable[Response]]
ErrorRenderer = Callable[[ApiError], Response]
Body = TypeVar("Body", bound=BaseModel)
HeaderRenderer = Callable[[Budget, float], dict[str, str]]
#: Raises the API's 401 (or another refusal) unless the request carries the sandbox token as the API expects.
Authenticator = Callable[[Request, str], None]


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


def _storage_redirect(request: Request) -> Response:
    """A 307 as S3 sends it for a bucket in another region: the same path and query on another host."""
    location = request.url.replace(netloc=REDIRECT_HOST)
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>TemporaryRedirect</Code>'
        f"<Message>Please re-send this request to the specified temporary endpoint.</Message>"
        f"<Endpoint>{REDIRECT_HOST}</Endpoint><RequestId>{new_id()}</RequestId></Error>"
    )
    return Response(xml, status_code=307, media_type="application/xml", headers={"location": str(location)})


async def _read_some(request: Request) -> None:
    """Consume the start of the body, so a drop during an upload happens mid-transfer."""
    read = 0
    async for chunk in request.stream():
        read += len(chunk)
        if read >= DROP_AFTER_BYTES:
            return


async def discard_body(request: Request) -> None:
    """Drain an unread body so a large upload refused early still gets its answer, not a reset."""
    try:
        async for _ in request.stream():
            pass
    except RuntimeError:  # Starlette's "Stream consumed": the handler already read it to the end
        pass


def bearer_token(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def is_token(sent: str | None, token: str) -> bool:
    return sent is not None and hmac.compare_digest(sent.encode(), token.encode())


def authenticate(request: Request, token: str) -> None:
    """``Authorization: Bearer <token>``: how every API but Anthropic's (and every admin route) is called."""
    if not is_token(bearer_token(request), token):
        raise ApiError(401)


def first_field(error: ValidationError) -> str | None:
    """The top-level field pydantic complained about (an OpenAI error's ``param``)."""
    loc = error.errors()[0]["loc"]
    return str(loc[0]) if loc else None


async def parse_json(request: Request, model: type[Body], *, invalid_status: int) -> Body:
    """The JSON body as ``model``: 400 if it is not JSON, ``invalid_status`` if it breaks the schema."""
    try:
        return model.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise ApiError(400, "error parsing request body: it is not valid JSON") from exc
        raise ApiError(
            invalid_status, f"request payload validation failed: {describe(exc)}", param=first_field(exc)
        ) from exc


def operation_route(
    path: str,
    method: str,
    operation: str,
    handler: Handler,
    render_error: ErrorRenderer,
    *,
    authenticated: bool = True,
    metered: bool = True,
    check_auth: Authenticator = authenticate,
) -> Route:
    """A route whose handler runs behind logging, auth, the rate budget and fault injection."""

    async def endpoint(request: Request) -> Response:
        sandbox: Sandbox = request.app.state.sandbox
        sandbox.requests.append(
            RequestRecord(
                operation,
                request.method,
                request.url.path,
                "authorization" in request.headers or "x-api-key" in request.headers,
                request.headers.get("host", ""),
            )
        )
        try:
            if authenticated:
                check_auth(request, sandbox.config.token)
            if metered and (wait := sandbox.limiter.acquire(sandbox.clock.now())) is not None:
                raise ApiError(429, retry_after_s=wait)
            if delay := sandbox.faults.delay(operation):
                await anyio.sleep(delay)
            fault = sandbox.faults.take(operation)
            if fault is not None and fault.kind == "drop":
                await _read_some(request)
                return DroppedConnection()
            if fault is not None and fault.kind == "redirect":
                await discard_body(request)
                return _storage_redirect(request)
            if fault is not None and fault.kind in ("server_error", "conflict", "overloaded"):
                raise ApiError(_FAULT_STATUS[fault.kind])
            if fault is not None and fault.kind == "rate_limit":
                raise ApiError(429, retry_after_s=fault.retry_after_s)
            response = await handler(request, sandbox)
            return DroppedConnection() if fault is not None else response  # lost_answer: done, unheard
        except ApiError as error:
            await discard_body(request)
            return render_error(error)
        except ClientDisconnect:  # e.g. an upload aborted by the client: nobody is left to answer
            return Response(status_code=400)

    return Route(path, endpoint, methods=[method])


def unrouted(render_error: ErrorRenderer) -> Callable[[Request, Exception], Awaitable[Response]]:
    """Starlette's own refusals (no such route, wrong method), answered in the API's error body."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return render_error(ApiError(exc.status_code))

    return handler


def closing(sandbox: Sandbox) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """An app lifespan that closes the sandbox's account (its files) when the server stops."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            sandbox.close()

    return lifespan


#: The id of the request being answered, for error bodies that repeat it (Anthropic's).
REQUEST_ID: ContextVar[str] = ContextVar("sandbox_request_id", default="")


class RequestIds:
    """Every answer carries a request id in the API's own header, as the SDKs report it on errors."""

    def __init__(self, app: ASGIApp, header: str = "x-request-id") -> None:
        self.app = app
        self.header = header.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex}"
        REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((self.header, request_id.encode()))
            await send(message)

        await self.app(scope, receive, send_with_id)


class RateLimitHeaders:
    """Adds the API's rate-limit headers to every response, errors included."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox, render: HeaderRenderer) -> None:
        self.app = app
        self.sandbox = sandbox
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                now = self.sandbox.clock.now()
                for name, value in self.render(self.sandbox.limiter.budget(now), now).items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
