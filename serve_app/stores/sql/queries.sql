-- Named queries shared by the SQLite and Postgres job stores.
--
-- A block starts with `-- name: <name>`; `-- name: <name> (<dialect>)` is used instead of the
-- plain block on that dialect. Parameters are `:name` (SQLite style); the Postgres store rewrites
-- them to `%(name)s`. Optional text parameters are wrapped in CAST(... AS TEXT) because Postgres
-- cannot infer the type of a bare `$1 IS NULL`. All timestamps come from the application clock.

-- name: create_schema_migrations (postgres)
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL
);

-- name: create_schema_migrations (sqlite)
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

-- name: lock_migrations (postgres)
-- Serialises migrate() across processes until the transaction ends.
SELECT pg_advisory_xact_lock(:lock_key);

-- name: lock_migrations (sqlite)
-- BEGIN IMMEDIATE already holds the database write lock.
SELECT 1;

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :now);

-- name: insert_job
INSERT INTO jobs (
    id, tenant, status, priority, model, options, options_hash, audio_key, audio_sha256,
    idempotency_key, request_hash, total_chunks, max_attempts, webhook_url, metadata,
    weight, key_id, created_at, updated_at
) VALUES (
    :id, :tenant, 'queued', :priority, :model, :options, :options_hash, :audio_key, :audio_sha256,
    :idempotency_key, :request_hash, :total_chunks, :max_attempts, :webhook_url, :metadata,
    :weight, :key_id, :now, :now
)
ON CONFLICT (tenant, idempotency_key) DO NOTHING
RETURNING *;

-- name: get_job_by_idempotency_key
SELECT * FROM jobs WHERE tenant = :tenant AND idempotency_key = :idempotency_key;

-- name: get_job
SELECT * FROM jobs WHERE id = :id AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant);

-- name: list_jobs
-- Keyset pagination: `after` is the id of the last job of the previous page.
SELECT * FROM jobs
WHERE tenant = :tenant
  AND (CAST(:status AS TEXT) IS NULL OR status = :status)
  AND (CAST(:after AS TEXT) IS NULL OR (created_at, id) < (
        SELECT created_at, id FROM jobs WHERE id = :after AND tenant = :tenant))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: find_succeeded_by_audio
SELECT * FROM jobs
WHERE tenant = :tenant AND audio_sha256 = :audio_sha256 AND options_hash = :options_hash
  AND status = 'succeeded'
ORDER BY finished_at DESC
LIMIT 1;

-- name: lease_next (postgres)
-- SKIP LOCKED lets concurrent workers pass over a row another worker is leasing right now.
UPDATE jobs SET
    status = 'running', lease_owner = :owner, lease_expires_at = :lease_expires_at,
    started_at = COALESCE(started_at, :now), attempts = attempts + 1, updated_at = :now
WHERE id = (
    SELECT id FROM jobs
    WHERE (status = 'queued' OR (status = 'running' AND lease_expires_at <= :now))
      AND (next_attempt_at IS NULL OR next_attempt_at <= :now)
    ORDER BY priority DESC, created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING *;

-- name: lease_next (sqlite)
-- Runs inside BEGIN IMMEDIATE, which already excludes every other writer.
UPDATE jobs SET
    status = 'running', lease_owner = :owner, lease_expires_at = :lease_expires_at,
    started_at = COALESCE(started_at, :now), attempts = attempts + 1, updated_at = :now
WHERE id = (
    SELECT id FROM jobs
    WHERE (status = 'queued' OR (status = 'running' AND lease_expires_at <= :now))
      AND (next_attempt_at IS NULL OR next_attempt_at <= :now)
    ORDER BY priority DESC, created_at, id
    LIMIT 1
)
RETURNING *;

-- name: renew_lease
UPDATE jobs SET lease_expires_at = :lease_expires_at, updated_at = :now
WHERE id = :id AND status = 'running' AND lease_owner = :owner
RETURNING id;

-- name: release_lease
-- A graceful hand-back does not count as an attempt.
UPDATE jobs SET
    status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
    attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = :now
WHERE id = :id AND status = 'running' AND lease_owner = :owner
RETURNING id;

-- name: set_total_chunks
UPDATE jobs SET total_chunks = :total_chunks, updated_at = :now WHERE id = :id RETURNING id;

-- name: lock_job (postgres)
-- Serialises checkpoint writers of one job so the chunk count below sees all of them.
SELECT id FROM jobs WHERE id = :id FOR UPDATE;

-- name: lock_job (sqlite)
SELECT id FROM jobs WHERE id = :id;

-- name: insert_checkpoint
INSERT INTO chunk_checkpoints (job_id, chunk_index, result, computed_by, created_at)
VALUES (:id, :chunk_index, :result, :computed_by, :now)
ON CONFLICT (job_id, chunk_index) DO NOTHING
RETURNING chunk_index;

-- name: refresh_done_chunks
UPDATE jobs SET
    done_chunks = (SELECT count(*) FROM chunk_checkpoints WHERE job_id = :id), updated_at = :now
WHERE id = :id;

-- name: load_checkpoints
SELECT * FROM chunk_checkpoints WHERE job_id = :id ORDER BY chunk_index;

-- name: complete_job
UPDATE jobs SET
    status = 'succeeded', result_key = :result_key, error = NULL, finished_at = :now,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id = :id AND status = 'running' AND lease_owner = :owner
RETURNING *;

-- name: fail_job
UPDATE jobs SET
    status = 'failed', error = :error, finished_at = :now,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id = :id AND status = 'running' AND lease_owner = :owner
RETURNING *;

-- name: retry_job
UPDATE jobs SET
    status = 'queued', error = :error, next_attempt_at = :retry_at,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id = :id AND status = 'running' AND lease_owner = :owner
RETURNING *;

-- name: cancel_job
UPDATE jobs SET
    status = 'cancelled', finished_at = :now,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id = :id AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)
  AND status IN ('queued', 'running')
RETURNING *;

-- name: insert_webhook_delivery
INSERT INTO webhook_deliveries (job_id, attempt, status_code, ok, error, created_at)
VALUES (:id, :attempt, :status_code, :ok, :error, :now)
RETURNING *;

-- name: list_webhook_deliveries
SELECT * FROM webhook_deliveries WHERE job_id = :id ORDER BY attempt, id;

-- name: count_by_status
SELECT status, count(*) AS n FROM jobs GROUP BY status;

-- name: insert_api_key
INSERT INTO api_keys (id, tenant, name, key_sha256, created_at)
VALUES (:id, :tenant, :name, :key_sha256, :now)
RETURNING *;

-- name: get_active_api_key_by_hash
SELECT * FROM api_keys WHERE key_sha256 = :key_sha256 AND revoked_at IS NULL;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = :now
WHERE id = :id AND tenant = :tenant AND revoked_at IS NULL
RETURNING id;

-- name: list_api_keys
SELECT * FROM api_keys WHERE tenant = :tenant ORDER BY created_at, id;

-- ---- issue 18: weighted fair share across tenants ------------------------------------------

-- name: tenant_queues
-- Runnable work per tenant and priority: a running job whose lease expired counts as queued
-- (the next lease takes it); `due` leaves out retries that wait for next_attempt_at.
SELECT
    tenant,
    priority,
    SUM(CASE WHEN status = 'running' AND lease_expires_at > :now THEN 1 ELSE 0 END) AS running,
    SUM(CASE WHEN status = 'queued' OR lease_expires_at <= :now THEN 1 ELSE 0 END) AS queued,
    SUM(CASE WHEN (status = 'queued' OR lease_expires_at <= :now)
              AND (next_attempt_at IS NULL OR next_attempt_at <= :now) THEN 1 ELSE 0 END) AS due,
    MAX(weight) AS weight,
    MIN(CASE WHEN status = 'queued' OR lease_expires_at <= :now THEN created_at END)
        AS oldest_queued_at
FROM jobs
WHERE status IN ('queued', 'running') AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)
GROUP BY tenant, priority
ORDER BY tenant, priority DESC;

-- name: lease_next_for_tenant (postgres)
-- lease_next restricted to one tenant: the fair-share scheduler picked the tenant.
UPDATE jobs SET
    status = 'running', lease_owner = :owner, lease_expires_at = :lease_expires_at,
    started_at = COALESCE(started_at, :now), attempts = attempts + 1, updated_at = :now
WHERE id = (
    SELECT id FROM jobs
    WHERE tenant = :tenant
      AND (status = 'queued' OR (status = 'running' AND lease_expires_at <= :now))
      AND (next_attempt_at IS NULL OR next_attempt_at <= :now)
    ORDER BY priority DESC, created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING *;

-- name: lease_next_for_tenant (sqlite)
UPDATE jobs SET
    status = 'running', lease_owner = :owner, lease_expires_at = :lease_expires_at,
    started_at = COALESCE(started_at, :now), attempts = attempts + 1, updated_at = :now
WHERE id = (
    SELECT id FROM jobs
    WHERE tenant = :tenant
      AND (status = 'queued' OR (status = 'running' AND lease_expires_at <= :now))
      AND (next_attempt_at IS NULL OR next_attempt_at <= :now)
    ORDER BY priority DESC, created_at, id
    LIMIT 1
)
RETURNING *;

-- ---- issue 17: retention sweeps, purges (DELETE /v1/jobs/{id}) and dedupe of kept results ----

-- name: find_expired (sqlite)
-- Ended jobs past `cutoff` that still hold what `kind` deletes (audio, result, or the row).
-- `excluded` is a JSON array of tenants that have a policy of their own.
SELECT * FROM jobs
WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at <= :cutoff
  AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)
  AND tenant NOT IN (SELECT value FROM json_each(:excluded))
  AND (CAST(:kind AS TEXT) = 'job'
       OR (CAST(:kind AS TEXT) = 'audio' AND audio_key IS NOT NULL)
       OR (CAST(:kind AS TEXT) = 'result' AND (result_key IS NOT NULL
           OR EXISTS (SELECT 1 FROM chunk_checkpoints c WHERE c.job_id = jobs.id))))
ORDER BY finished_at, id
LIMIT :limit;

-- name: find_expired (postgres)
SELECT * FROM jobs
WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at <= :cutoff
  AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)
  AND tenant NOT IN (SELECT jsonb_array_elements_text(CAST(:excluded AS jsonb)))
  AND (CAST(:kind AS TEXT) = 'job'
       OR (CAST(:kind AS TEXT) = 'audio' AND audio_key IS NOT NULL)
       OR (CAST(:kind AS TEXT) = 'result' AND (result_key IS NOT NULL
           OR EXISTS (SELECT 1 FROM chunk_checkpoints c WHERE c.job_id = jobs.id))))
ORDER BY finished_at, id
LIMIT :limit;

-- name: count_audio_references
SELECT count(*) AS n FROM jobs WHERE audio_key = :audio_key AND id <> :id;

-- name: clear_audio
UPDATE jobs SET audio_key = NULL, updated_at = :now WHERE id = :id RETURNING id;

-- name: clear_result
UPDATE jobs SET result_key = NULL, updated_at = :now WHERE id = :id RETURNING id;

-- name: delete_checkpoints
DELETE FROM chunk_checkpoints WHERE job_id = :id;

-- name: delete_job
-- Only ended jobs: a queued or running one is cancelled first. Cascades to checkpoints
-- and webhook deliveries.
DELETE FROM jobs WHERE id = :id AND status IN ('succeeded', 'failed', 'cancelled')
RETURNING id;

-- name: find_kept_result_by_audio
-- Dedupe: like find_succeeded_by_audio, but never a job whose result was deleted.
SELECT * FROM jobs
WHERE tenant = :tenant AND audio_sha256 = :audio_sha256 AND options_hash = :options_hash
  AND status = 'succeeded' AND result_key IS NOT NULL
ORDER BY finished_at DESC
LIMIT 1;

-- ---- issue 15: vocabularies and usage metering -------------------------------------------

-- name: insert_vocabulary
INSERT INTO vocabularies (id, tenant, name, body, created_at)
VALUES (:id, :tenant, :name, :body, :now)
RETURNING *;

-- name: get_vocabulary
SELECT * FROM vocabularies WHERE id = :id AND tenant = :tenant;

-- name: list_vocabularies
SELECT * FROM vocabularies WHERE tenant = :tenant ORDER BY created_at, id;

-- name: delete_vocabulary
DELETE FROM vocabularies WHERE id = :id AND tenant = :tenant RETURNING id;

-- name: add_usage
INSERT INTO usage_daily (tenant, key_id, day, model, source, seconds, requests)
VALUES (:tenant, :key_id, :day, :model, :source, :seconds, 1)
ON CONFLICT (tenant, key_id, day, model, source)
DO UPDATE SET seconds = usage_daily.seconds + excluded.seconds,
              requests = usage_daily.requests + 1
RETURNING *;

-- name: usage_between
SELECT * FROM usage_daily
WHERE tenant = :tenant AND day >= :from_day AND day <= :to_day
ORDER BY day, key_id, model, source;

-- name: key_usage_on
SELECT COALESCE(SUM(seconds), 0) AS seconds FROM usage_daily
WHERE key_id = :key_id AND day = :day;

-- ---- issue 14: job stages (diarization) checkpointed once -----------------------------------

-- name: insert_stage
INSERT INTO job_stages (job_id, stage, result, computed_by, created_at)
VALUES (:id, :stage, :result, :computed_by, :now)
ON CONFLICT (job_id, stage) DO NOTHING
RETURNING stage;

-- name: load_stages
SELECT * FROM job_stages WHERE job_id = :id ORDER BY created_at, stage;

-- name: delete_stages
DELETE FROM job_stages WHERE job_id = :id;
