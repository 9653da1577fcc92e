"""Anthropic Message Batches' facts (other-batch-apis.md §2) and the settings read from its variables."""

from __future__ import annotations

from batch_mcp.backends.base import Capabilities, Windows
from batch_mcp.backends.settings import settings_for

CAPABILITIES = Capabilities(
    name="anthropic",
    label="Anthropic",
    token_env=("ANTHROPIC_API_KEY",),
    base_url_env="ANTHROPIC_BASE_URL",
    default_base_url="https://api.anthropic.com",  # the API's paths start with /v1 themselves
    line_formats=("anthropic",),
    endpoints=(),  # every request is a Messages request; the lines name no endpoint
    max_requests=100_000,
    max_bytes=256_000_000,  # of the create body, which holds the requests inline
    windows=Windows("24h", "24h"),
    discount=0.5,
    custom_id="anthropic",
    mixed_models=True,  # "Requests may mix models and features"
    metadata=None,
    upload="inline",
    idempotency="none",
    results="combined",
    shareable_result_links=False,
    retention_days=29,  # results stay downloadable 29 days from created_at
    input_retention_days=None,  # nothing is uploaded: the input stays on the local disk
    status_filter=False,
    deletes=True,  # DELETE /v1/messages/batches/{id}, ended batches only
)


AnthropicSettings = settings_for(CAPABILITIES)
