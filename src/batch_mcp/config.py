"""Settings, read from the environment (and overridden by CLI flags).

The token is a ``SecretStr``: it prints as ``**********`` in reprs, logs and errors, and is revealed
only where the API client builds its Authorization header.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from batch_mcp.backends import digitalocean
from batch_mcp.backends.http import check_base_url
from batch_mcp.backends.http import is_loopback as is_loopback  # re-exported: server.py checks bind hosts
from batch_mcp.backends.registry import CATALOG

_DO = digitalocean.CAPABILITIES


def default_state_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("batch-mcp", appauthor=False))


class Settings(BaseSettings):
    """Everything the server needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix="BATCH_MCP_", extra="ignore", populate_by_name=True)

    token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(*_DO.token_env, "token"),
        description=f"DigitalOcean's API token: {', else '.join(_DO.token_env)}.",
    )
    base_url: str = Field(default=_DO.default_base_url, description="DigitalOcean's batch API base URL.")
    backend: str | None = Field(default=None, description="The default backend (BATCH_MCP_BACKEND, serve --backend); "
                                                          "else the only configured one, else digitalocean.")
    allowed_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description=f"Folders the tools may read and write ({os.pathsep}-separated); default: the working directory.",
    )
    state_dir: Path = Field(default_factory=default_state_dir, description="Where the job store lives.")
    sandbox: bool = Field(default=False, description="Run against the embedded sandbox instead of the real API.")
    auth_token: SecretStr | None = Field(default=None, description="Bearer token required on HTTP transports.")
    max_requests: int | None = Field(default=None, ge=1, description="Requests allowed in one batch file "
                                                                     "(default: the backend's own limit).")
    max_bytes: int | None = Field(default=None, ge=1, description="Bytes allowed in one batch file (default: the "
                                                                  "backend's own limit).")
    poll_interval_s: float = Field(default=5.0, gt=0, description="Default wait_for_batch poll interval.")
    max_attempts: int = Field(default=5, ge=1, description="Attempts per API call before a fault is reported.")
    retry_base_delay_s: float = Field(default=0.5, ge=0, description="First backoff between attempts (doubles).")
    timeout_s: float = Field(default=60.0, gt=0, description="Seconds to wait for an API answer before retrying.")

    @field_validator("base_url")
    @classmethod
    def _https_beyond_loopback(cls, url: str) -> str:
        """The token travels in every API request: never in clear text beyond this machine."""
        return check_base_url(url, "BATCH_MCP_BASE_URL")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str | None) -> str | None:
        if not name:  # an empty variable counts as unset
            return None
        if name not in CATALOG:
            raise ValueError(f"unknown backend {name!r} (BATCH_MCP_BACKEND or --backend); choose one of "
                             f"{', '.join(CATALOG)}")
        return name

    @field_validator("allowed_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    @field_validator("allowed_dirs")
    @classmethod
    def _resolve_dirs(cls, dirs: list[Path]) -> list[Path]:
        return [d.expanduser().resolve() for d in dirs]

    def effective_allowed_dirs(self) -> list[Path]:
        return self.allowed_dirs or [Path.cwd().resolve()]

    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token else None
