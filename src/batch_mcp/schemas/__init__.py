"""Data shared by every layer: API objects and JSONL line shapes. Depends on nothing else here."""

from batch_mcp.schemas.api import (
    OPENAI_ENDPOINTS,
    RESULT_STATUSES,
    TERMINAL_STATUSES,
    ApiErrorBody,
    Batch,
    BatchErrorItem,
    BatchPage,
    BatchStatus,
    CreateBatchRequest,
    FileIntent,
    OpenAIEndpoint,
    Provider,
    RequestCounts,
    ResultLinks,
    is_terminal,
    parse_timestamp,
)
from batch_mcp.schemas.lines import (
    CUSTOM_ID_PATTERN,
    AnthropicRequestLine,
    OpenAIRequestLine,
    ResultRecord,
    Usage,
)

__all__ = [
    "CUSTOM_ID_PATTERN", "OPENAI_ENDPOINTS", "RESULT_STATUSES",
    "TERMINAL_STATUSES", "AnthropicRequestLine", "ApiErrorBody", "Batch", "BatchErrorItem", "BatchPage",
    "BatchStatus", "CreateBatchRequest", "FileIntent", "OpenAIEndpoint", "OpenAIRequestLine", "Provider",
    "RequestCounts", "ResultLinks", "ResultRecord", "Usage", "is_terminal", "parse_timestamp",
]
