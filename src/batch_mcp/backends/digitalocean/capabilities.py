"""DigitalOcean Batch Inference's facts (do-batch-api.md) and the settings read from its variables."""

from __future__ import annotations

from batch_mcp.backends.base import Capabilities, MetadataLimits, Windows
from batch_mcp.backends.settings import settings_for

CAPABILITIES = Capabilities(
    name="digitalocean",
    label="DigitalOcean",
    token_env=("MODEL_ACCESS_KEY", "DIGITALOCEAN_TOKEN"),
    base_url_env="BATCH_MCP_BASE_URL",
    default_base_url="https://inference.do-ai.run",
    line_formats=("openai", "anthropic"),
    endpoints=("/v1/chat/completions", "/v1/responses"),
    max_requests=50_000,
    max_bytes=200_000_000,
    windows=Windows("24h", "24h"),
    discount=0.5,
    mixed_models=False,
    metadata=MetadataLimits(),  # string values; no limits documented
    upload="presigned",
    idempotency="request_id",
    results="output+errors",
    shareable_result_links=True,
    retention_days=30,  # "up to 30 days" after the job completes
    input_retention_days=None,  # "29-30 days" only in a low-trust how-to
    status_filter=True,
)


DigitalOceanSettings = settings_for(CAPABILITIES)
