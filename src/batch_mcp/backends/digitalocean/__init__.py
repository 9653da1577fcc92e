"""DigitalOcean Batch Inference: presigned uploads, ``request_id`` idempotency, presigned result links."""

from batch_mcp.backends.digitalocean.backend import DigitalOceanBackend
from batch_mcp.backends.digitalocean.capabilities import CAPABILITIES, DigitalOceanSettings

__all__ = ["CAPABILITIES", "DigitalOceanBackend", "DigitalOceanSettings"]
