"""The job store: what the server remembers of uploads, submissions, batches and groups (see :mod:`.jobs`)."""

from batch_mcp.store.file import STORE_FILENAME, StoreUnavailable, StoreVersionError
from batch_mcp.store.jobs import DEFAULT_UPLOAD_MAX_AGE, MIGRATIONS, SCHEMA_VERSION, JobStore
from batch_mcp.store.records import (
    JobGroup,
    JobRecord,
    PreparedFile,
    Submission,
    UploadRecord,
    submission_fingerprint,
)

__all__ = [
    "DEFAULT_UPLOAD_MAX_AGE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STORE_FILENAME",
    "JobGroup",
    "JobRecord",
    "JobStore",
    "PreparedFile",
    "StoreUnavailable",
    "StoreVersionError",
    "Submission",
    "UploadRecord",
    "submission_fingerprint",
]
