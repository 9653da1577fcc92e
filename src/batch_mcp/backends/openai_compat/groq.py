"""Groq: chat only, files up to 100 MB, completion windows from 24 hours to 7 days."""

from __future__ import annotations

from batch_mcp.backends.base import Capabilities, MetadataLimits, Windows
from batch_mcp.backends.openai_compat.variant import Variant

CAPABILITIES = Capabilities(
    name="groq",
    label="Groq",
    token_env=("GROQ_API_KEY",),
    base_url_env="GROQ_BASE_URL",
    default_base_url="https://api.groq.com/openai/v1",
    line_formats=("openai",),
    endpoints=("/v1/chat/completions",),
    max_requests=None,  # no request cap documented
    max_bytes=100_000_000,
    windows=Windows("24h", "7d"),
    discount=None,  # sources disagree (25 % in Groq's guide, 50 % in a third-party summary): unconfirmed
    mixed_models=None,
    metadata=MetadataLimits(),  # a plain object; no limits documented
    retention_days=None,
    input_retention_days=None,
)


VARIANT = Variant(CAPABILITIES)
