"""The job store: what the server remembers of uploads, submissions, batches and groups (see :mod:`.jobs`)."""

from batch_mcp.store.claims import CLAIM_LEASE, Claim, ClaimLost
from batch_mcp.store.coordination import Link
from batch_mcp.store.database import Database, SqliteDatabase
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
from batch_mcp.store.scope import LOCAL_ACCOUNT, NoAccount

__all__ = [
    "CLAIM_LEASE",
    "LOCAL_ACCOUNT",
    "DEFAULT_UPLOAD_MAX_AGE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STORE_FILENAME",
    "Claim",
    "ClaimLost",
    "Database",
    "JobGroup",
    "JobRecord",
    "JobStore",
    "Link",
    "NoAccount",
    "PreparedFile",
    "SqliteDatabase",
    "StoreUnavailable",
    "StoreVersionError",
    "Submission",
    "UploadRecord",
    "submission_fingerprint",
]
