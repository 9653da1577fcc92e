"""Settings of the sandbox: which API it emulates, its wire dialect, lifecycle pace, limits and storage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

Backend = Literal["digitalocean", "openai", "deepinfra", "groq", "anthropic"]
Dialect = Literal["openapi", "godo"]
#: DigitalOcean's documented per-file limits.
DO_MAX_REQUESTS = 50_000
DO_MAX_BYTES = 200 * 1000 * 1000


class SandboxConfig(BaseModel):
    """Everything that shapes one sandbox instance.

    The pace fields are seconds spent in each lifecycle phase; ``in_progress`` lasts
    ``lines / requests_per_s``. Tests shrink them (or advance the sandbox clock) to stay fast.
    """

    token: str = "sandbox-token"
    #: The API emulated: DigitalOcean's, the OpenAI Batch API as OpenAI, DeepInfra or Groq serve it, or
    #: Anthropic's Message Batches.
    backend: Backend = "digitalocean"
    #: DigitalOcean only: ``openapi`` answers as its published spec; ``godo`` as the Go client parses.
    dialect: Dialect = "openapi"
    validating_s: float = Field(default=0.3, ge=0)
    queued_s: float = Field(default=0.3, ge=0)
    requests_per_s: float = Field(default=500.0, gt=0)
    finalizing_s: float = Field(default=0.3, ge=0)
    cancelling_s: float = Field(default=0.3, ge=0)
    failure_rate: float = Field(default=0.03, ge=0, le=1)
    upload_url_ttl_s: float = Field(default=900, gt=0)
    download_url_ttl_s: float = Field(default=3600, gt=0)
    #: Length of a 24-hour completion window; longer windows (Groq's up to 7d) scale from it.
    completion_window_s: float = Field(default=86400, gt=0)
    #: Requests allowed per rolling minute on the API before it answers 429.
    rate_limit_per_minute: int = Field(default=250, ge=1)
    #: Per-file limits; ``None`` uses the emulated service's own.
    max_requests: int | None = Field(default=None, ge=1)
    max_bytes: int | None = Field(default=None, ge=1)
    #: Where the account lives (its ledger, uploads and results), for as long as the folder does and for every
    #: sandbox that uses it; ``None`` means a temporary directory removed on close.
    storage_dir: Path | None = None
    #: Origin used in presigned URLs (``http://host:port``); ``None`` derives it from each request.
    public_base_url: str | None = None
