"""DigitalOcean Batch Inference: presigned uploads, ``request_id`` idempotency, presigned result links."""

from __future__ import annotations

from typing import Any

from batch_mcp.backends.digitalocean.capabilities import CAPABILITIES, DigitalOceanSettings

__all__ = ["CAPABILITIES", "DigitalOceanBackend", "DigitalOceanSettings"]


def __getattr__(name: str) -> Any:
    """The backend is loaded on first use: it brings the HTTP stack, which the preflight (facts only) avoids."""
    if name == "DigitalOceanBackend":
        from batch_mcp.backends.digitalocean.backend import DigitalOceanBackend

        return DigitalOceanBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
