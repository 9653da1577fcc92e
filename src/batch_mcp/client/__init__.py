"""HTTP client for batch APIs: typed results, typed errors, and the one place that retries."""

from batch_mcp.client.digitalocean import DEFAULT_BASE_URL, DigitalOceanBatchClient, Progress, timeouts
from batch_mcp.client.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BatchAPIError,
    ConflictError,
    DownloadURLExpiredError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RateLimitInfo,
    RedirectedError,
    ResultsNotReadyError,
    ServerError,
    UploadURLExpiredError,
    redact_url,
)
from batch_mcp.client.retry import RetryPolicy

__all__ = [
    "DEFAULT_BASE_URL", "APIConnectionError", "APITimeoutError", "AuthenticationError", "BadRequestError",
    "BatchAPIError", "ConflictError", "DigitalOceanBatchClient", "DownloadURLExpiredError", "NotFoundError",
    "PermissionDeniedError", "Progress", "RateLimitInfo", "RateLimitedError", "RedirectedError",
    "ResultsNotReadyError", "RetryPolicy", "ServerError", "UploadURLExpiredError", "redact_url", "timeouts",
]
