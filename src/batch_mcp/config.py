"""Settings, read from the environment (and overridden by CLI flags).

The token is a ``SecretStr``: it prints as ``**********`` in reprs, logs and errors, and is revealed
only where the API client builds its Authorization header.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from batch_mcp.backends.http import check_base_url
from batch_mcp.backends.http import is_loopback as is_loopback  # re-exported: server.py checks bind hosts
from batch_mcp.client import DEFAULT_BASE_URL

TOKEN_VARIABLES = ("MODEL_ACCESS_KEY", "DIGITALOCEAN_TOKEN")


def default_state_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("batch-mcp", appauthor=False))


class Settings(BaseSettings):
    """Everything the server needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix="BATCH_MCP_", extra="ignore", populate_by_name=True)

    token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(*TOKEN_VARIABLES, "token"),
        description="API token: MODEL_ACCESS_KEY, else DIGITALOCEAN_TOKEN.",
    )
    base_url: str = Field(default=DEFAULT_BASE_URL, description="Batch API base URL.")
    allowed_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description=f"Folders the tools may read and write ({os.pathsep}-separated); default: the working directory.",
    )
    state_dir: Path = Field(default_factory=default_state_dir, description="Where the job store lives.")
    sandbox: bool = Field(default=False, description="Run against the embedded sandbox instead of the real API.")
    auth_token: SecretStr | None = Field(default=None, description="Bearer token required on HTTP transports.")
    max_requests: int = Field(default=50_000, ge=1, description="Requests allowed in one batch file.")
    max_bytes: int = Field(default=200_000_000, ge=1, description="Bytes allowed in one batch file.")
    poll_interval_s: float = Field(default=5.0, gt=0, description="Default wait_for_batch poll interval.")
    max_attempts: int = Field(default=5, ge=1, description="Attempts per API call before a fault is reported.")
    retry_base_delay_s: float = Field(default=0.5, ge=0, description="First backoff between attempts (doubles).")
    timeout_s: float = Field(default=60.0, gt=0, description="Seconds to wait for an API answer before retrying.")

    @field_validator("base_url")
    @classmethod
    def _https_beyond_loopback(cls, url: str) -> str:
        """The token travels in every API request: never in clear text beyond this machine."""
        return check_base_url(url, "BATCH_MCP_BASE_URL")

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


def environment_variables() -> dict[str, FieldInfo]:
    """Every environment variable ``Settings`` reads, with the field it sets.

    server.json and the MCPB manifest are checked against this, so a new setting cannot be left out of them.
    A field's own name among its aliases only lets code pass it by name: it is not an environment variable.
    """
    prefix = Settings.model_config.get("env_prefix", "")
    variables: dict[str, FieldInfo] = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names = [choice for choice in alias.choices if isinstance(choice, str) and choice != name]
        else:
            names = [alias if isinstance(alias, str) else f"{prefix}{name}".upper()]
        variables.update(dict.fromkeys(names, field))
    return variables
