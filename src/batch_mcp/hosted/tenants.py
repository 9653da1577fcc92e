"""Hosted mode's tenants: each MCP request brings its caller's provider keys, and is served by a service made
for them (their backends, their view of the store, their folders) for as long as the request lasts.

The keys come in ``X-Api-Key-<Backend>`` headers (tools/errors.py ``key_header``), one per backend; the
``Authorization`` header stays the service's own (its bearer token). A backend whose header is absent is not
configured for that call; the server's own environment keys are never used in hosted mode. A key lives in
the request's backend object only, which is closed when the request ends: it is never logged, stored or sent
anywhere but its backend's API host. The store sees accounts only (``services/links.py`` ``account_of``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import INVALID_PARAMS
from pydantic import BaseModel

from batch_mcp.backends.base import Capabilities
from batch_mcp.backends.http import HttpOptions
from batch_mcp.backends.registry import CATALOG, Registry
from batch_mcp.backends.settings import BackendSettings, settings_for
from batch_mcp.services.batches import BatchService
from batch_mcp.services.links import Links, account_of
from batch_mcp.services.workspace import Workspace
from batch_mcp.tools.errors import HOSTED_CALL, key_header

log = logging.getLogger(__name__)
#: The MCP methods that reach a tenant's jobs: they get a tenant; every other method needs none.
TENANT_METHODS = frozenset({"tools/call", "resources/read", "resources/subscribe", "subscriptions/listen"})


class KeyRefused(ValueError):
    """A key header that no API key can be; the message names the header, never its value."""


def key_setup(capabilities: Capabilities) -> str:
    return f"send your key in the {key_header(capabilities)} header"


def provider_keys(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The keys a request carries, by backend (an empty header counts as absent)."""
    keys: dict[str, str] = {}
    for name, entry in CATALOG.items():
        header = key_header(entry.capabilities)
        value = (headers or {}).get(header.lower(), "").strip()
        if not value:
            continue
        if not all(char.isascii() and char.isprintable() and char != " " for char in value):
            raise KeyRefused(f"The {header} header holds a character no API key has (a space, a control or a "
                             "non-ASCII character): send the key exactly as the provider issued it.")
        keys[name] = value
    return keys


@dataclass
class Tenant:
    """Whoever sent this request: an account per backend it sent a key for, and the service that serves it."""

    accounts: dict[str, str]
    service: BatchService
    #: Where this service is reached from the caller's side (``https://host``), for the links it hands out.
    origin: str = field(default="")


@dataclass
class Endpoint:
    """Where a backend's API is, and which key goes there: the caller's, or the sandbox's own emulator token."""

    base_url: str
    sandbox_token: str | None = None

    def settings(self, name: str, key: str) -> BackendSettings:
        token = self.sandbox_token or key  # a caller's key never reaches an emulator
        return settings_for(CATALOG[name].capabilities).given(token, self.base_url)


class Hosting:
    """Makes each request's tenant, and knows the current one."""

    def __init__(self, base: BatchService, links: Links, *, secret: bytes, options: HttpOptions,
                 endpoints: Mapping[str, Endpoint], default: str | None, public_url: str | None,
                 max_upload_bytes: int) -> None:
        self.base, self.links, self.max_upload_bytes = base, links, max_upload_bytes
        self._secret, self._options, self._endpoints = secret, options, dict(endpoints)
        self._default, self.public_url = default, public_url
        self._current: ContextVar[Tenant | None] = ContextVar("tenant", default=None)

    def current(self) -> Tenant:
        tenant = self._current.get()
        if tenant is None:  # only a method outside TENANT_METHODS could get here: a wiring fault, not a user's
            raise RuntimeError("no tenant for this request")
        return tenant

    @asynccontextmanager
    async def tenant(self, keys: Mapping[str, str], origin: str = "") -> AsyncIterator[Tenant]:
        """The tenant holding these keys (by backend), its backends open until the block ends."""
        accounts = {name: self.account(name, key) for name, key in keys.items()}
        settings = {name: self._endpoints[name].settings(name, key) for name, key in keys.items()}
        registry = Registry.open(self._options, default=self._default, settings=settings, setup=key_setup)
        try:
            folders = [self.links.account_folder(account) for account in accounts.values()]
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
            service = self.base.for_tenant(registry, self.base.store.scoped(accounts), Workspace(folders))
            yield Tenant(accounts, service, self.public_url or origin)
        finally:
            await registry.aclose()

    def account(self, backend: str, key: str) -> str:
        return account_of(self._secret, backend, key)

    async def middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Serve a tool call or resource read as its caller's tenant."""
        if ctx.method not in TENANT_METHODS:
            return await call_next(ctx)
        request = ctx.request  # a starlette Request over HTTP; None in memory (no keys: no backend)
        headers = getattr(request, "headers", None)
        origin = str(request.base_url).rstrip("/") if request is not None else ""
        try:
            keys = provider_keys(headers)
        except KeyRefused as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        async with self.tenant(keys, origin) as tenant:
            log.debug("serving %s for %s", ctx.method,
                      ", ".join(f"{name} account {account[:12]}" for name, account in tenant.accounts.items())
                      or "a caller without keys")
            current, hosted = self._current.set(tenant), HOSTED_CALL.set(True)
            try:
                return self._without_server_paths(await call_next(ctx), tenant)
            finally:
                HOSTED_CALL.reset(hosted)
                self._current.reset(current)

    def _without_server_paths(self, result: HandlerResult, tenant: Tenant) -> HandlerResult:
        """The answer with this server's folders cut from every path in it: a remote caller gets the names of
        its files in its own folders (``uploads/upload-….jsonl``, ``results/…``), not where the server keeps
        them (results come as download links; see tools/hosted_tools.py)."""
        root = f"{self.links.root}/"
        if isinstance(result, BaseModel):
            text, back = result.model_dump_json(by_alias=True), type(result).model_validate_json
        elif isinstance(result, dict):  # what the SDK's handlers answer
            text, back = json.dumps(result, ensure_ascii=False), json.loads
        else:
            return result
        if root not in text:
            return result
        for account in tenant.accounts.values():
            text = text.replace(f"{root}{account}/", "")
        return back(text.replace(root, ""))
