-- Jobs, chunk checkpoints, webhook deliveries and API keys (SQLite).
-- JSON is TEXT (checked with json_valid); timestamps are fixed-width ISO-8601 UTC text,
-- so comparing and ordering them as strings is chronological.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    model            TEXT NOT NULL,
    options          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(options)),
    options_hash     TEXT NOT NULL,
    audio_key        TEXT,
    audio_sha256     TEXT,
    idempotency_key  TEXT,
    request_hash     TEXT,
    total_chunks     INTEGER CHECK (total_chunks >= 0),
    done_chunks      INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    error            TEXT,
    result_key       TEXT,
    webhook_url      TEXT,
    metadata         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    lease_owner      TEXT,
    lease_expires_at TEXT,
    next_attempt_at  TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    updated_at       TEXT NOT NULL,
    -- NULL keys never collide, so jobs without an Idempotency-Key are unconstrained.
    UNIQUE (tenant, idempotency_key)
);

CREATE INDEX jobs_runnable_idx ON jobs (priority DESC, created_at, id)
    WHERE status IN ('queued', 'running');
CREATE INDEX jobs_tenant_created_idx ON jobs (tenant, created_at DESC, id DESC);
CREATE INDEX jobs_dedupe_idx ON jobs (tenant, audio_sha256, options_hash)
    WHERE status = 'succeeded';

CREATE TABLE chunk_checkpoints (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL CHECK (chunk_index >= 0),
    result      TEXT NOT NULL CHECK (json_valid(result)),
    computed_by TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (job_id, chunk_index)
);

CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    status_code INTEGER,
    ok          INTEGER NOT NULL,
    error       TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_job_idx ON webhook_deliveries (job_id, attempt);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    name       TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant);
