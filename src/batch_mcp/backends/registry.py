"""Which backends exist, which are configured, which one is the default, and which one an id belongs to."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from batch_mcp.backends import anthropic, digitalocean
from batch_mcp.backends.base import Backend, Capabilities, NotConfigured
from batch_mcp.backends.digitalocean import DigitalOceanBackend
from batch_mcp.backends.http import HttpOptions
from batch_mcp.backends.openai_compat import VARIANTS, OpenAICompatBackend
from batch_mcp.backends.settings import BackendSettings, settings_for
from batch_mcp.domain import Ref

log = logging.getLogger(__name__)

#: The backend a legacy bare id and an unconfigured server fall back to.
FALLBACK_BACKEND = "digitalocean"

Opener = Callable[[BackendSettings, HttpOptions], Backend]
#: How a user gives a backend its key, for the message of a call to one without: the environment variable here.
Setup = Callable[[Capabilities], str]


def set_variable(capabilities: Capabilities) -> str:
    return f"set {' or '.join(capabilities.token_env)}"


@dataclass(frozen=True)
class Entry:
    capabilities: Capabilities
    #: None while the backend is listed but not yet served through this seam.
    open: Opener | None


def _compat_opener(name: str) -> Opener:
    return lambda settings, options: OpenAICompatBackend.from_settings(VARIANTS[name], settings, options)


CATALOG: dict[str, Entry] = {
    FALLBACK_BACKEND: Entry(digitalocean.CAPABILITIES, DigitalOceanBackend.from_settings),
    **{name: Entry(variant.capabilities, _compat_opener(name)) for name, variant in VARIANTS.items()},
    anthropic.CAPABILITIES.name: Entry(anthropic.CAPABILITIES, anthropic.AnthropicBackend.from_settings),
}


class _Choice(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCH_MCP_", extra="ignore", env_ignore_empty=True)

    backend: str | None = Field(default=None, description="The default backend (BATCH_MCP_BACKEND).")


def default_backend(configured: list[str], requested: str | None = None) -> str:
    """The one asked for (flag or BATCH_MCP_BACKEND); else the only configured one; else DigitalOcean."""
    choice = requested or _Choice().backend
    if choice is not None:
        if choice not in CATALOG:
            raise ValueError(f"unknown backend {choice!r}; choose one of {', '.join(CATALOG)}")
        return choice
    return configured[0] if len(configured) == 1 else FALLBACK_BACKEND


class Registry:
    """The configured backends by name, opened once and closed together."""

    def __init__(self, backends: Mapping[str, Backend], *, default: str, configured: tuple[str, ...] = (),
                 setup: Setup = set_variable) -> None:
        self._backends = dict(backends)
        self.default = default
        #: Backends with a key, including those not yet served through the seam.
        self.configured = configured or tuple(self._backends)
        self._setup = setup

    @classmethod
    def open(cls, options: HttpOptions, *, default: str | None = None,
             settings: Mapping[str, BackendSettings] | None = None, setup: Setup = set_variable) -> Registry:
        """Every backend whose key is set: read from the environment, or only those ``settings`` names."""
        if settings is None:
            settings = {name: settings_for(entry.capabilities)() for name, entry in CATALOG.items()}
        configured = {name: read for name, read in settings.items() if read.api_key_value() is not None}
        backends = {name: entry.open(configured[name], options) for name, entry in CATALOG.items()
                    if name in configured and entry.open is not None}
        return cls(backends, default=default_backend(list(configured), default), configured=tuple(configured),
                   setup=setup)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._backends)

    def capabilities(self) -> list[tuple[Capabilities, bool]]:
        """Every known backend's facts, and whether it is configured here."""
        return [(entry.capabilities, name in self.configured) for name, entry in CATALOG.items()]

    def get(self, name: str | None = None) -> Backend:
        """The backend called ``name`` (the default when None), or why it cannot be used."""
        name = name or self.default
        if name in self._backends:
            return self._backends[name]
        entry = CATALOG.get(name)
        if entry is None:
            raise NotConfigured(f"there is no backend called {name!r}; known: {', '.join(CATALOG)}",
                                backend=name, code="unknown_backend")
        if name in self.configured:
            raise NotConfigured(f"{entry.capabilities.label} is configured but not served through this registry "
                                "yet", backend=name, code="backend_unavailable")
        raise NotConfigured(f"{entry.capabilities.label} is not configured: {self._setup(entry.capabilities)}",
                            backend=name, code="not_configured")

    def resolve(self, text: str) -> tuple[Backend, str]:
        """The backend and native id for ``backend:native``, or for a bare id when only one backend is here.

        A bare id with several backends is refused rather than guessed; callers that remember the
        id (the job store) resolve it themselves first.
        """
        ref = Ref.parse(text)
        if ref.backend is not None:
            return self.get(ref.backend), ref.native
        if len(self._backends) == 1:
            return next(iter(self._backends.values())), ref.native
        raise NotConfigured(f"id {ref.native!r} names no backend; pass it as <backend>:{ref.native} "
                            f"with one of {', '.join(self.names) or 'the configured backends'}",
                            code="ambiguous_id")

    async def aclose(self) -> None:
        for name, backend in self._backends.items():
            try:
                await backend.aclose()
            except Exception as exc:  # one stuck pool must not keep the others open
                log.warning("closing backend %s failed: %s", name, exc)
