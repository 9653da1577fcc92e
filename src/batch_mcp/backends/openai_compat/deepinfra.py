"""DeepInfra: OpenAI's protocol under /v1/openai, fewer endpoints, a smaller discount."""

from __future__ import annotations

from batch_mcp.backends.base import Capabilities, MetadataLimits, Windows
from batch_mcp.backends.openai_compat.variant import Variant

CAPABILITIES = Capabilities(
    name="deepinfra",
    label="DeepInfra",
    # DEEPINFRA_TOKEN is the name DeepInfra's own docs use; DEEPINFRA_API_KEY is accepted too.
    token_env=("DEEPINFRA_TOKEN", "DEEPINFRA_API_KEY"),
    base_url_env="DEEPINFRA_BASE_URL",
    default_base_url="https://api.deepinfra.com/v1/openai",
    line_formats=("openai",),
    endpoints=("/v1/chat/completions", "/v1/completions", "/v1/embeddings"),
    max_requests=50_000,
    max_bytes=200_000_000,
    windows=Windows("24h", "24h"),
    discount=0.2,  # "20% less than real-time pricing" (DeepInfra's launch post, 2026-06-19)
    mixed_models=False,
    metadata=MetadataLimits(max_pairs=16, key_chars=64, value_chars=512),
    retention_days=30,
    input_retention_days=30,
)


VARIANT = Variant(CAPABILITIES)
