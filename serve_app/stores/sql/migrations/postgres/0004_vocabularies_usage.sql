-- issue 15: per-tenant vocabularies and durable usage metering.
CREATE TABLE vocabularies (
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    name       text NOT NULL,
    body       jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL
);
CREATE INDEX vocabularies_tenant_idx ON vocabularies (tenant, created_at);

CREATE TABLE usage_daily (
    tenant   text NOT NULL,
    key_id   text NOT NULL,
    day      text NOT NULL,
    model    text NOT NULL,
    source   text NOT NULL,
    seconds  double precision NOT NULL DEFAULT 0,
    requests bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, key_id, day, model, source)
);
CREATE INDEX usage_daily_key_idx ON usage_daily (key_id, day);

ALTER TABLE jobs ADD COLUMN key_id text; -- the API key that submitted the job (usage)
