"""The OpenAI Batch protocol family: one backend, one variant record per service that speaks it."""

from batch_mcp.backends.openai_compat import deepinfra, groq, openai
from batch_mcp.backends.openai_compat.backend import OpenAICompatBackend
from batch_mcp.backends.openai_compat.variant import Variant

VARIANTS: dict[str, Variant] = {v.capabilities.name: v for v in (openai.VARIANT, deepinfra.VARIANT, groq.VARIANT)}

__all__ = ["VARIANTS", "OpenAICompatBackend", "Variant"]
