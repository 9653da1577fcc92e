"""The job store: what the server remembers of uploads, submissions, batches and groups (see :mod:`.jobs`)."""

from batch_mcp.store.claims import CLAIM_LEASE, Claim, ClaimLost
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
    "CLAIM_LEASE",
    "DEFAULT_UPLOAD_MAX_AGE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STORE_FILENAME",
    "Claim",
    "ClaimLost",
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
