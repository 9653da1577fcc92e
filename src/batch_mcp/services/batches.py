"""The batch workflow: validate, upload, submit, wait, fetch, one facade over the parts that do each.

This is where the product's promises are kept: a file is checked before anything leaves the
machine, a submission is recorded before the API sees it (so a retry or a restart re-sends the same
idempotency key instead of creating a second job), and every job the server created stays listed.
Each job of the workflow lives in its own module; :class:`BatchService` composes them.
"""

from __future__ import annotations

from batch_mcp.services.deletions import Deletions
from batch_mcp.services.downloads import Downloads
from batch_mcp.services.groups import Groups
from batch_mcp.services.jobs import Jobs
from batch_mcp.services.local import LocalChecks
from batch_mcp.services.retry import Retrying
from batch_mcp.services.submit import Submitting


class BatchService(Submitting, Groups, Jobs, Deletions, Downloads, Retrying, LocalChecks):
    """Everything the tools call; each method lives in the part named after its job."""
