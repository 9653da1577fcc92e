"""What makes one OpenAI-compatible service differ from another: its capabilities record.

Behavioural drift (DeepInfra's file object without ``status``, null counts while validating) is
absorbed by the tolerant wire models; a service that needs more would get a hook here.
"""

from __future__ import annotations

from dataclasses import dataclass

from batch_mcp.backends.base import Capabilities
from batch_mcp.backends.settings import BackendSettings, settings_for


@dataclass(frozen=True)
class Variant:
    capabilities: Capabilities

    @property
    def settings(self) -> type[BackendSettings]:
        return settings_for(self.capabilities)
