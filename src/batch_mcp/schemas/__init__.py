"""Data shared by every layer above the backends: JSONL line shapes, and what tools hand back."""

from batch_mcp.schemas.lines import (
    CUSTOM_ID_PATTERN,
    OPENAI_ENDPOINTS,
    AnthropicRequestLine,
    OpenAIRequestLine,
    Provider,
    ResultRecord,
    Usage,
)

__all__ = ["CUSTOM_ID_PATTERN", "OPENAI_ENDPOINTS", "AnthropicRequestLine", "OpenAIRequestLine", "Provider",
           "ResultRecord", "Usage"]
