"""OpenAI itself: the reference shape of the protocol."""

from __future__ import annotations

from batch_mcp.backends.base import Capabilities, MetadataLimits, Windows
from batch_mcp.backends.openai_compat.variant import Variant

CAPABILITIES = Capabilities(
    name="openai",
    label="OpenAI",
    token_env=("OPENAI_API_KEY",),
    base_url_env="OPENAI_BASE_URL",
    default_base_url="https://api.openai.com/v1",
    line_formats=("openai",),
    endpoints=("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions", "/v1/moderations"),
    max_requests=50_000,
    max_bytes=200_000_000,
    windows=Windows("24h", "24h"),
    discount=0.5,
    mixed_models=False,
    metadata=MetadataLimits(max_pairs=16, key_chars=64, value_chars=512),
    retention_days=30,
    input_retention_days=30,
)


VARIANT = Variant(CAPABILITIES)
