-- issue 15: per-tenant vocabularies and durable usage metering.
CREATE TABLE vocabularies (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(body)),
    created_at TEXT NOT NULL
);
CREATE INDEX vocabularies_tenant_idx ON vocabularies (tenant, created_at);

CREATE TABLE usage_daily (
    tenant   TEXT NOT NULL,
    key_id   TEXT NOT NULL,
    day      TEXT NOT NULL,
    model    TEXT NOT NULL,
    source   TEXT NOT NULL,
    seconds  REAL NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, key_id, day, model, source)
);
CREATE INDEX usage_daily_key_idx ON usage_daily (key_id, day);

ALTER TABLE jobs ADD COLUMN key_id TEXT; -- the API key that submitted the job (usage)
