"""What the workflow refuses or cannot confirm, each saying what the agent should do next."""

from __future__ import annotations

from batch_mcp.backends.base import BackendError
from batch_mcp.schemas.preflight import PreflightReport


class InvalidBatchFile(Exception):
    """The preflight check found errors; nothing was uploaded."""

    def __init__(self, report: PreflightReport) -> None:
        self.report = report
        problems = "; ".join(
            (f"line {p.line}: " if p.line else "") + p.message for p in report.problems if p.severity == "error"
        )
        more = report.error_count - sum(1 for p in report.problems if p.severity == "error")
        super().__init__(
            f"{report.path} has {report.error_count} error(s); nothing was uploaded. {problems}"
            + (f" (and {more} more)" if more > 0 else "")
            + ". Fix the file (validate_batch_file lists the problems) and try again."
        )


class OverBatchLimits(Exception):
    """A single-batch tool was given a file that only a job group can hold; nothing was sent."""


class FileChanged(Exception):
    """The file was modified between its check and its upload; nothing was submitted."""


class JobHasNoResults(Exception):
    """A terminal job without results (it failed before running): waiting will not help."""


class JobStillRunning(Exception):
    """The job cannot be retried yet (or its input is gone); the message says what to do."""


class NotDeletable(Exception):
    """A delete that cannot be done (the job still runs, is a group, or its backend cannot delete); nothing changed."""


class ResultsExist(Exception):
    """A download would overwrite files the user already has."""


class IncompleteDownload(Exception):
    """Storage sent empty result files for a job that reports finished requests; nothing was kept."""


class CreateConflicted(BackendError):
    """The API keeps answering 409 to a create's idempotency key: sending it again cannot succeed."""

    hint = ("This submission is no longer sent, on calls or on restart. If list_batches shows a job made from "
            "this file, use that one; otherwise call the same tool with new=true to create it with a fresh key.")
