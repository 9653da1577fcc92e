"""How OpenAI, DeepInfra and Groq each serve the OpenAI Batch API: their deviations, as data.

Sources: other-batch-apis.md §1 (OpenAI), §3.1 (DeepInfra), §3.4 (Groq). Where a vendor documents
nothing, the variant keeps OpenAI's rule (the conservative choice for an emulator).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from batch_mcp.sandbox.openai.lines import OpenAILineFormat

MB = 1000 * 1000
HOUR_S = 3600
_WINDOW = re.compile(r"^([1-9][0-9]{0,3})([hd])$")


@dataclass(frozen=True)
class Variant:
    name: str
    #: The API base the SDK's ``base_url`` names, below the origin.
    base_path: str
    endpoints: tuple[str, ...]
    max_requests: int
    #: Largest input file a batch accepts (checked while validating).
    max_batch_bytes: int
    #: Largest file ``POST /files`` accepts.
    max_upload_bytes: int
    min_window_h: int = 24
    max_window_h: int = 24
    #: Total embedding inputs one batch file may ask for (``None``: no such cap documented).
    max_embedding_inputs: int | None = 50_000
    #: The FileObject carries the (deprecated) ``status`` field.
    file_status: bool = True
    #: ``request_counts`` is an object from creation on (DeepInfra: ``null`` while validating).
    counts_while_validating: bool = True
    #: ``expires_at`` is set at creation (DeepInfra: ``null`` until the batch expires).
    expires_at_upfront: bool = True
    #: A failed request's line: ``response`` (a non-200 response with an error body, as OpenAI's guide
    #: shows) or ``error`` (``response: null``, ``error: {code, message}``, as DeepInfra documents).
    failure_style: Literal["response", "error"] = "response"
    #: Result lines' ``response`` carries ``request_id`` (DeepInfra's documented line has none).
    request_ids: bool = True

    def lines(self, endpoint: str) -> OpenAILineFormat:
        return OpenAILineFormat(
            endpoint,
            failure_style=self.failure_style,
            request_ids=self.request_ids,
            max_embedding_inputs=self.max_embedding_inputs,
        )

    def window_hours(self, window: str) -> int | None:
        """Hours in a ``completion_window`` such as ``24h`` or ``7d``; ``None`` if this vendor refuses it."""
        match = _WINDOW.fullmatch(window)
        if match is None:
            return None
        hours = int(match[1]) * (24 if match[2] == "d" else 1)
        return hours if self.min_window_h <= hours <= self.max_window_h else None

    def window_rule(self) -> str:
        if self.min_window_h == self.max_window_h:
            return f"'{self.min_window_h}h'"
        return f"from '{self.min_window_h}h' to '{self.max_window_h // 24}d' (e.g. '48h', '3d')"


OPENAI = Variant(
    name="openai",
    base_path="/v1",
    endpoints=("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions", "/v1/moderations"),
    max_requests=50_000,
    max_batch_bytes=200 * MB,
    max_upload_bytes=512 * MB,
)
DEEPINFRA = Variant(
    name="deepinfra",
    base_path="/v1/openai",
    endpoints=("/v1/chat/completions", "/v1/completions", "/v1/embeddings"),
    max_requests=50_000,
    max_batch_bytes=200 * MB,
    max_upload_bytes=512 * MB,
    file_status=False,
    counts_while_validating=False,
    expires_at_upfront=False,
    failure_style="error",
    request_ids=False,
)
GROQ = Variant(
    name="groq",
    base_path="/openai/v1",
    endpoints=("/v1/chat/completions",),
    max_requests=50_000,
    max_batch_bytes=100 * MB,
    max_upload_bytes=100 * MB,
    max_window_h=7 * 24,
    max_embedding_inputs=None,
)
VARIANTS: dict[str, Variant] = {variant.name: variant for variant in (OPENAI, DEEPINFRA, GROQ)}
