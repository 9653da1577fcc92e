"""Typed errors of the batch API client.

Each carries what an agent needs to decide what to do next: the HTTP status, the API's error id and
message, the API's support correlation id, and (for rate limits) when to come back. Messages never
contain the token or a presigned URL's query string.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True)
class RateLimitInfo:
    """The ``ratelimit-*`` headers of the last API response."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: datetime | None = None

    @classmethod
    def from_headers(cls, headers: object) -> RateLimitInfo | None:
        get = getattr(headers, "get", None)
        if get is None:
            return None
        limit, remaining, reset = (_as_int(get(name)) for name in
                                   ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"))
        if limit is None and remaining is None and reset is None:
            return None
        reset_at = datetime.fromtimestamp(reset, tz=UTC) if reset is not None else None
        return cls(limit=limit, remaining=remaining, reset_at=reset_at)


def _as_int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """A URL without its query string: presigned signatures must never reach logs or messages."""
    parts = urlsplit(str(url))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class BatchAPIError(Exception):
    """Base class: the API (or its storage) answered with an error, or could not be reached."""

    hint = "Check the request and try again."

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        rate_limit: RateLimitInfo | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.rate_limit = rate_limit

    def __str__(self) -> str:
        parts = [self.message.rstrip(".") + "."]
        if self.status_code is not None:
            parts.append(f"(HTTP {self.status_code}{', ' + self.code if self.code else ''})")
        if self.request_id:
            parts.append(f"Support request id: {self.request_id}.")
        return " ".join(parts)


class AuthenticationError(BatchAPIError):
    hint = "Check the API token (MODEL_ACCESS_KEY or DIGITALOCEAN_TOKEN) and restart the server."


class PermissionDeniedError(BatchAPIError):
    hint = "The token lacks access to batch inference; use a model access key with batch permissions."


class NotFoundError(BatchAPIError):
    hint = "Check the id; list_batches shows the jobs this account has."


class ConflictError(BatchAPIError):
    hint = "The job is not in a state that allows this; call get_batch to see its status."


class BadRequestError(BatchAPIError):
    hint = "Fix the request as the message says and call again."


class ResultsNotReadyError(BatchAPIError):
    hint = "Results are not ready yet; wait for a terminal status (wait_for_batch), then fetch results."


class RateLimitedError(BatchAPIError):
    hint = "The API rate limit is spent; wait before calling again."

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        text = super().__str__()
        if self.retry_after_s is not None:
            text += f" Retry after {self.retry_after_s:.0f} s."
        return text


class ServerError(BatchAPIError):
    hint = "The service failed after several retries; try again in a few minutes."


class UploadURLExpiredError(BatchAPIError):
    """Storage refused the presigned upload URL (expired or signature mismatch): get a new intent."""

    hint = "Upload again; a new upload URL is requested automatically."


class DownloadURLExpiredError(BatchAPIError):
    hint = "Fetch fresh result links (get_batch_results) and download again."


class RedirectedError(BatchAPIError):
    """A 3xx: redirects are never followed (a presigned URL is signed for one host), so nothing happened."""

    hint = ("Nothing was transferred, and nothing is recorded as done. The redirect comes from the service's "
            "side (S3 sends it when a bucket is in another region): try again in a few minutes, and report it "
            "to the provider if it persists.")


class APIConnectionError(BatchAPIError):
    hint = "The service could not be reached after several retries; check the network or BATCH_MCP_BASE_URL."


class APITimeoutError(APIConnectionError):
    hint = "The service did not answer in time after several retries; try again later."
