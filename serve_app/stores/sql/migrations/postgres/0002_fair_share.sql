-- Issue 18: weighted fair sharing across tenants at lease time (Postgres).
-- `weight` is the submitting key's share weight (`RateLimitSettings.weight`), kept on the row
-- so that the tracker needs no key lookups; a tenant's weight is the largest among its
-- queued and running jobs.

ALTER TABLE jobs ADD COLUMN weight double precision NOT NULL DEFAULT 1.0 CHECK (weight > 0);

-- lease_next for one tenant (priority, then FIFO) and the per-tenant queue summary.
CREATE INDEX jobs_tenant_runnable_idx ON jobs (tenant, priority DESC, created_at, id)
    WHERE status IN ('queued', 'running');
