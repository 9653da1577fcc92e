"""The store's schema, as an append-only list of migrations: every older store can still be opened."""

from __future__ import annotations

#: Ordered schema migrations; migration ``n`` (1-based) upgrades a store at version ``n - 1``.
#: Released migrations are never edited, only appended to, so every older store can be opened.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE uploads (
            file_id TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            line_count INTEGER NOT NULL,
            intent_expires_at TEXT,
            created_at TEXT NOT NULL,
            completed_at TEXT
        )""",
        "CREATE INDEX uploads_by_sha256 ON uploads (sha256, created_at)",
        """CREATE TABLE submissions (
            request_id TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            path TEXT,
            file_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            endpoint TEXT,
            metadata TEXT,
            batch_id TEXT UNIQUE,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX submissions_by_fingerprint ON submissions (fingerprint, created_at)",
        """CREATE TABLE batches (
            batch_id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            total_count INTEGER NOT NULL,
            completed_count INTEGER NOT NULL,
            failed_count INTEGER NOT NULL,
            last_seen TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            output_path TEXT,
            error_path TEXT
        )""",
        "CREATE INDEX batches_by_created_at ON batches (created_at)",
    ),
    (  # room for job groups and retries of failed requests, so those features need no rewrite
        "ALTER TABLE submissions ADD COLUMN group_id TEXT",
        "ALTER TABLE submissions ADD COLUMN parent_batch_id TEXT",
    ),
    (  # merged results tables with their token usage; request files made from records; job groups
        "ALTER TABLE batches ADD COLUMN table_path TEXT",
        "ALTER TABLE batches ADD COLUMN usage TEXT",
        """CREATE TABLE prepared_files (
            path TEXT PRIMARY KEY,
            source_path TEXT NOT NULL,
            source_format TEXT NOT NULL,
            id_column TEXT,
            source_sha256 TEXT,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE job_groups (
            group_id TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            parts INTEGER NOT NULL,
            sha256 TEXT,
            parent_batch_id TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX submissions_by_group ON submissions (group_id)",
    ),
    (  # how often a create was answered 409, so a key the API keeps refusing stops being re-sent
        "ALTER TABLE submissions ADD COLUMN conflicts INTEGER NOT NULL DEFAULT 0",
    ),
    (  # which process may make a submission's job, so two servers on one state folder make it once
        """CREATE TABLE claims (
            fingerprint TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            expires_at TEXT NOT NULL
        )""",
    ),
    (  # several batch APIs: every id belongs to a backend, and the same id may exist on two of them.
        # SQLite cannot change a primary key in place, so uploads, submissions and batches are rebuilt,
        # their rows copied; what was stored before belongs to DigitalOcean, the only backend there was.
        """CREATE TABLE uploads_v6 (
            backend TEXT NOT NULL DEFAULT 'digitalocean',
            file_id TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            line_count INTEGER NOT NULL,
            intent_expires_at TEXT,
            created_at TEXT NOT NULL,
            completed_at TEXT,
            PRIMARY KEY (backend, file_id)
        )""",
        """INSERT INTO uploads_v6 (file_id, path, sha256, size_bytes, line_count, intent_expires_at, created_at,
                                  completed_at)
           SELECT file_id, path, sha256, size_bytes, line_count, intent_expires_at, created_at, completed_at
           FROM uploads""",
        "DROP TABLE uploads",
        "ALTER TABLE uploads_v6 RENAME TO uploads",
        "CREATE INDEX uploads_by_sha256 ON uploads (backend, sha256, created_at)",
        # request_id is our submission token: the idempotency key on DigitalOcean, a metadata tag elsewhere
        """CREATE TABLE submissions_v6 (
            request_id TEXT PRIMARY KEY,
            backend TEXT NOT NULL DEFAULT 'digitalocean',
            fingerprint TEXT NOT NULL,
            path TEXT,
            file_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            endpoint TEXT,
            completion_window TEXT NOT NULL DEFAULT '24h',
            metadata TEXT,
            batch_id TEXT,
            created_at TEXT NOT NULL,
            group_id TEXT,
            parent_batch_id TEXT,
            conflicts INTEGER NOT NULL DEFAULT 0,
            UNIQUE (backend, batch_id)
        )""",
        """INSERT INTO submissions_v6 (request_id, fingerprint, path, file_id, provider, endpoint, metadata, batch_id,
                                      created_at, group_id, parent_batch_id, conflicts)
           SELECT request_id, fingerprint, path, file_id, provider, endpoint, metadata, batch_id, created_at,
                  group_id, parent_batch_id, conflicts
           FROM submissions""",
        "DROP TABLE submissions",
        "ALTER TABLE submissions_v6 RENAME TO submissions",
        "CREATE INDEX submissions_by_fingerprint ON submissions (fingerprint, created_at)",
        "CREATE INDEX submissions_by_group ON submissions (group_id)",
        """CREATE TABLE batches_v6 (
            backend TEXT NOT NULL DEFAULT 'digitalocean',
            batch_id TEXT NOT NULL,
            status TEXT NOT NULL,
            total_count INTEGER NOT NULL,
            completed_count INTEGER NOT NULL,
            failed_count INTEGER NOT NULL,
            last_seen TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            output_path TEXT,
            error_path TEXT,
            table_path TEXT,
            usage TEXT,
            PRIMARY KEY (backend, batch_id)
        )""",
        """INSERT INTO batches_v6 (batch_id, status, total_count, completed_count, failed_count, last_seen,
                                  created_at, updated_at, output_path, error_path, table_path, usage)
           SELECT batch_id, status, total_count, completed_count, failed_count, last_seen, created_at,
                  updated_at, output_path, error_path, table_path, usage
           FROM batches""",
        "DROP TABLE batches",
        "ALTER TABLE batches_v6 RENAME TO batches",
        "CREATE INDEX batches_by_created_at ON batches (created_at)",
        "CREATE INDEX batches_by_id ON batches (batch_id)",
        # a group never spans backends: its row says which one runs every part
        "ALTER TABLE job_groups ADD COLUMN backend TEXT NOT NULL DEFAULT 'digitalocean'",
    ),
    (  # tenants: every row belongs to an account (an opaque fingerprint of a backend's key, 'local' for a
        # single-user install), and what was unique is unique per account: one file sent by two tenants is two
        # jobs. Rebuilt as in v6 (primary keys change); one-time links and leases for a replicated service.
        """CREATE TABLE uploads_v7 (
            account TEXT NOT NULL DEFAULT 'local',
            backend TEXT NOT NULL,
            file_id TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            line_count INTEGER NOT NULL,
            intent_expires_at TEXT,
            created_at TEXT NOT NULL,
            completed_at TEXT,
            PRIMARY KEY (account, backend, file_id)
        )""",
        """INSERT INTO uploads_v7 (backend, file_id, path, sha256, size_bytes, line_count, intent_expires_at,
                                  created_at, completed_at)
           SELECT backend, file_id, path, sha256, size_bytes, line_count, intent_expires_at, created_at, completed_at
           FROM uploads""",
        "DROP TABLE uploads",
        "ALTER TABLE uploads_v7 RENAME TO uploads",
        "CREATE INDEX uploads_by_sha256 ON uploads (account, backend, sha256, created_at)",
        """CREATE TABLE submissions_v7 (
            request_id TEXT PRIMARY KEY,
            account TEXT NOT NULL DEFAULT 'local',
            backend TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            path TEXT,
            file_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            endpoint TEXT,
            completion_window TEXT NOT NULL DEFAULT '24h',
            metadata TEXT,
            batch_id TEXT,
            created_at TEXT NOT NULL,
            group_id TEXT,
            parent_batch_id TEXT,
            conflicts INTEGER NOT NULL DEFAULT 0,
            UNIQUE (account, backend, batch_id)
        )""",
        """INSERT INTO submissions_v7 (request_id, backend, fingerprint, path, file_id, provider, endpoint,
                                      completion_window, metadata, batch_id, created_at, group_id, parent_batch_id,
                                      conflicts)
           SELECT request_id, backend, fingerprint, path, file_id, provider, endpoint, completion_window, metadata,
                  batch_id, created_at, group_id, parent_batch_id, conflicts
           FROM submissions""",
        "DROP TABLE submissions",
        "ALTER TABLE submissions_v7 RENAME TO submissions",
        "CREATE INDEX submissions_by_fingerprint ON submissions (account, fingerprint, created_at)",
        "CREATE INDEX submissions_by_group ON submissions (group_id)",
        "CREATE INDEX submissions_pending ON submissions (created_at) WHERE batch_id IS NULL",
        """CREATE TABLE batches_v7 (
            account TEXT NOT NULL DEFAULT 'local',
            backend TEXT NOT NULL,
            batch_id TEXT NOT NULL,
            status TEXT NOT NULL,
            total_count INTEGER NOT NULL,
            completed_count INTEGER NOT NULL,
            failed_count INTEGER NOT NULL,
            last_seen TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            output_path TEXT,
            error_path TEXT,
            table_path TEXT,
            usage TEXT,
            PRIMARY KEY (account, backend, batch_id)
        )""",
        """INSERT INTO batches_v7 (backend, batch_id, status, total_count, completed_count, failed_count, last_seen,
                                  created_at, updated_at, output_path, error_path, table_path, usage)
           SELECT backend, batch_id, status, total_count, completed_count, failed_count, last_seen, created_at,
                  updated_at, output_path, error_path, table_path, usage
           FROM batches""",
        "DROP TABLE batches",
        "ALTER TABLE batches_v7 RENAME TO batches",
        "CREATE INDEX batches_by_created_at ON batches (account, created_at)",
        "CREATE INDEX batches_by_id ON batches (batch_id)",
        # a claim is per account: the same submission in two accounts is two jobs, each made once
        """CREATE TABLE claims_v7 (
            account TEXT NOT NULL DEFAULT 'local',
            fingerprint TEXT NOT NULL,
            holder TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            expires_at TEXT NOT NULL,
            PRIMARY KEY (account, fingerprint)
        )""",
        """INSERT INTO claims_v7 (fingerprint, holder, host, pid, expires_at)
           SELECT fingerprint, holder, host, pid, expires_at FROM claims""",
        "DROP TABLE claims",
        "ALTER TABLE claims_v7 RENAME TO claims",
        # a prepared file has no backend: it belongs to the account of whoever made it (see store/scope.py)
        """CREATE TABLE prepared_files_v7 (
            account TEXT NOT NULL DEFAULT 'local',
            path TEXT NOT NULL,
            source_path TEXT NOT NULL,
            source_format TEXT NOT NULL,
            id_column TEXT,
            source_sha256 TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (account, path)
        )""",
        """INSERT INTO prepared_files_v7 (path, source_path, source_format, id_column, source_sha256, created_at)
           SELECT path, source_path, source_format, id_column, source_sha256, created_at FROM prepared_files""",
        "DROP TABLE prepared_files",
        "ALTER TABLE prepared_files_v7 RENAME TO prepared_files",
        "ALTER TABLE job_groups ADD COLUMN account TEXT NOT NULL DEFAULT 'local'",
        "CREATE INDEX job_groups_by_fingerprint ON job_groups (account, fingerprint, created_at)",
        # one-time, expiring links (only a hash of the token is kept) and leases on work done once per service
        """CREATE TABLE links (
            token_hash TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            used_at TEXT
        )""",
        """CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
