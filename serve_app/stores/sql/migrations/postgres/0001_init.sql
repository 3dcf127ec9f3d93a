-- Jobs, chunk checkpoints, webhook deliveries and API keys (Postgres).
-- Timestamps are timestamptz written by the application clock, so both dialects agree.

CREATE TABLE jobs (
    id               text PRIMARY KEY,
    tenant           text NOT NULL,
    status           text NOT NULL
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         integer NOT NULL DEFAULT 0,
    model            text NOT NULL,
    options          jsonb NOT NULL DEFAULT '{}',
    options_hash     text NOT NULL,
    audio_key        text,
    audio_sha256     text,
    idempotency_key  text,
    request_hash     text,
    total_chunks     integer CHECK (total_chunks >= 0),
    done_chunks      integer NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    error            text,
    result_key       text,
    webhook_url      text,
    metadata         jsonb NOT NULL DEFAULT '{}',
    lease_owner      text,
    lease_expires_at timestamptz,
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL,
    -- NULL keys never collide, so jobs without an Idempotency-Key are unconstrained.
    UNIQUE (tenant, idempotency_key)
);

-- lease_next walks runnable jobs in this order; the partial index keeps finished jobs out.
CREATE INDEX jobs_runnable_idx ON jobs (priority DESC, created_at, id)
    WHERE status IN ('queued', 'running');
CREATE INDEX jobs_tenant_created_idx ON jobs (tenant, created_at DESC, id DESC);
CREATE INDEX jobs_dedupe_idx ON jobs (tenant, audio_sha256, options_hash)
    WHERE status = 'succeeded';

CREATE TABLE chunk_checkpoints (
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    chunk_index integer NOT NULL CHECK (chunk_index >= 0),
    result      jsonb NOT NULL,
    computed_by text,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (job_id, chunk_index)
);

CREATE TABLE webhook_deliveries (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    status_code integer,
    ok          boolean NOT NULL,
    error       text,
    created_at  timestamptz NOT NULL
);
CREATE INDEX webhook_deliveries_job_idx ON webhook_deliveries (job_id, attempt);

CREATE TABLE api_keys (
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    name       text NOT NULL,
    key_sha256 text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant);
