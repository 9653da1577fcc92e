"""Anthropic Message Batches: inline create, combined results, ``ended`` refined from counts and cancel time."""

from batch_mcp.backends.anthropic.backend import AnthropicBackend
from batch_mcp.backends.anthropic.capabilities import CAPABILITIES, AnthropicSettings

__all__ = ["CAPABILITIES", "AnthropicBackend", "AnthropicSettings"]
