"""The batch APIs behind one protocol: ``base`` (the seam), ``http`` (the one request loop), one package per API."""

from batch_mcp.backends.base import (
    Backend,
    BackendError,
    Capabilities,
    CreateNotConfirmed,
    NotConfigured,
    OutcomeUnknown,
    RecoveryInconclusive,
)

__all__ = ["Backend", "BackendError", "Capabilities", "CreateNotConfirmed", "NotConfigured", "OutcomeUnknown",
           "RecoveryInconclusive"]
