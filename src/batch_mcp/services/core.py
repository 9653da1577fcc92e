"""The state the workflow parts share, and the checks they all make before touching the API."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple, Self

import anyio

from batch_mcp.backends.base import Backend, Capabilities, NotConfigured, NotFoundError
from batch_mcp.backends.registry import CATALOG, FALLBACK_BACKEND, Registry
from batch_mcp.domain import Job, Ref
from batch_mcp.schemas.preflight import PreflightReport
from batch_mcp.services.cost import PriceTable
from batch_mcp.services.errors import FileChanged, InvalidBatchFile
from batch_mcp.services.lineage import Lineage
from batch_mcp.services.preflight import Limits, preflight
from batch_mcp.services.workspace import Workspace
from batch_mcp.store import (
    Claim,
    JobStore,
    StoreUnavailable,
    submission_fingerprint,
)

log = logging.getLogger(__name__)

StatusListener = Callable[[Job], Awaitable[None]]


class Fingerprint(NamedTuple):
    """What makes two submissions the same: content (or file_id), line format, endpoint, metadata, and
    where and how it runs (backend, completion window)."""

    content: str
    provider: str
    endpoint: str | None
    metadata: dict[str, str] | None
    backend: str = FALLBACK_BACKEND
    window: str = "24h"

    @property
    def digest(self) -> str:
        return submission_fingerprint(self.content, self.provider, self.endpoint, self.metadata,
                                      backend=self.backend, completion_window=self.window)


#: Statuses after which submitting the same file again makes a new job rather than returning the old one.
RESUBMITTABLE = frozenset({"failed", "cancelled", "expired"})
#: How often a server waiting for another process's submission looks whether it is done.
_CLAIM_POLL_S = 0.2


class ServiceCore:
    """What every part of the workflow shares: backends, store, workspace, limits, prices, listeners."""

    def __init__(
        self,
        *,
        registry: Registry,
        store: JobStore,
        workspace: Workspace,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        default_poll_interval_s: float = 5.0,
        prices: PriceTable | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.workspace = workspace
        #: The user's overrides of one batch's limits (settings, flags); None keeps each backend's own.
        self._max_requests, self._max_bytes = max_requests, max_bytes
        self.default_poll_interval_s = default_poll_interval_s
        self.prices = prices or PriceTable.load()
        self.lineage = Lineage(store)
        self.status_listeners: list[StatusListener] = []
        #: One lock per submission fingerprint: identical calls arriving together find one job, not make two.
        self._submitting: dict[str, anyio.Lock] = {}
        #: Hosted mode: reach only the jobs recorded in this (tenant's) store, never one named by a guessed id.
        self.recorded_only = False

    def for_tenant(self, registry: Registry, store: JobStore, workspace: Workspace) -> Self:
        """This service on one tenant's backends, store view and folders, sharing the locks, prices and
        listeners (hosted mode makes one per call)."""
        tenant = copy.copy(self)
        tenant.registry, tenant.store, tenant.workspace = registry, store, workspace
        tenant.lineage = Lineage(store)
        tenant.recorded_only = True
        return tenant

    @asynccontextmanager
    async def _claimed(self, key: Fingerprint) -> AsyncIterator[Claim]:
        """Be the only one making this submission: among this server's tasks (a lock), and among every
        server on the state folder (a claim in the store, renewed while held). A waiter then finds the job
        the holder made, or takes over once the holder is gone."""
        fingerprint = key.digest
        async with self._submitting.setdefault(fingerprint, anyio.Lock()):
            while (claim := self.store.claim(fingerprint, backend=key.backend)) is None:
                await anyio.sleep(_CLAIM_POLL_S)
            try:
                with self.store.keeping(claim):
                    yield claim
            finally:
                try:
                    self.store.release_claim(claim)
                except StoreUnavailable as exc:  # the outcome stands; the lease expires on its own
                    log.warning("could not release a submission claim: %s", exc)

    def backend_name(self, backend: str | None) -> str:
        """The backend a call that starts work uses: the one named, else the registry's default."""
        name = backend or self.registry.default
        if name not in CATALOG:
            raise NotConfigured(f"There is no backend called {name!r}; use one of {', '.join(CATALOG)}",
                                backend=name, code="unknown_backend")
        return name

    def capabilities(self, backend: str | None) -> Capabilities:
        """A backend's facts, also when it has no key: checking a file or its cost needs no API."""
        return CATALOG[self.backend_name(backend)].capabilities

    def limits_for(self, backend: str | None) -> Limits:
        """One batch's limits on ``backend``: its own, unless the user's settings override them."""
        return Limits.of(self.capabilities(backend), max_requests=self._max_requests, max_bytes=self._max_bytes)

    def backend_for(self, backend: str | None) -> Backend:
        """The configured backend that does work on ``backend`` (the default when None), or why there is none."""
        return self.registry.get(self.backend_name(backend))

    def resolve(self, job_id: str) -> tuple[str, str]:
        """The backend and native id of a job: a namespaced id names its backend; a bare one belongs where the
        store recorded it, else where the registry's rule puts it (the only backend; refused among several)."""
        ref = Ref.parse(job_id)
        if self.recorded_only:
            if (record := self.store.get_job(job_id)) is None:
                raise NotFoundError(f"No batch job {job_id!r} was submitted through this service with your key; "
                                    "list_batches shows yours", backend=ref.backend, code="not_found")
            return record.backend, ref.native
        if ref.backend is not None:
            return self.backend_name(ref.backend), ref.native
        if (record := self.store.get_job(ref.native)) is not None:
            return record.backend, ref.native
        if len(self.registry.names) <= 1:  # one backend, or none (then using it says which key to set)
            return self.registry.names[0] if self.registry.names else self.registry.default, ref.native
        backend, native = self.registry.resolve(ref.native)
        return backend.name, native

    def job_backend(self, job_id: str) -> tuple[Backend, str]:
        """The backend that holds ``job_id``, and the id it knows the job by."""
        name, native = self.resolve(job_id)
        return self.backend_for(name), native

    async def _seen(self, job: Job) -> None:
        """Record the latest state; tell listeners (resource subscribers) when the status changed."""
        previous = self.store.get_job(job.ref)
        if previous is not None and previous.last_seen == job:
            return  # a poll that changed nothing costs no durable write
        self.store.upsert_batch(job)
        if previous is None or previous.status != job.status:
            for listener in self.status_listeners:
                await listener(job)

    async def validate(self, path: str, provider: str | None = None, endpoint: str | None = None,
                       workspace: Workspace | None = None, *, backend: str | None = None) -> PreflightReport:
        real = (workspace or self.workspace).input_file(path)
        limits = self.limits_for(backend)
        checked = real.stat().st_mtime_ns  # before reading: a change made while checking is noticed too
        report = await anyio.to_thread.run_sync(lambda: preflight(real, provider, endpoint, limits))
        return report.model_copy(update={"mtime_ns": checked})

    async def _checked(self, path: str, provider: str | None, endpoint: str | None,
                       workspace: Workspace | None, backend: str | None) -> PreflightReport:
        report = await self.validate(path, provider, endpoint, workspace, backend=backend)
        if not report.valid:
            raise InvalidBatchFile(report)
        return report


def unchanged_since_check(report: PreflightReport) -> None:
    """What was uploaded (or split into parts) is the file as checked, not a later edit of it."""
    now = Path(report.path).stat()
    if report.mtime_ns is not None and (now.st_mtime_ns, now.st_size) != (report.mtime_ns, report.bytes):
        raise FileChanged(f"{report.path} changed after it was checked, so what was sent may not be what was "
                          "validated; nothing was submitted. Call the tool again to check and send its "
                          "current content.")


def limits_text(limits: Limits) -> str:
    """One batch's limits as a message names them; a limit the backend does not document is left out."""
    parts = [f"{limits.max_requests:,} requests" if limits.max_requests is not None else None,
             f"{limits.max_bytes:,} bytes" if limits.max_bytes is not None else None]
    return ", ".join(part for part in parts if part) or "none documented"


def file_stem(job_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)
