-- Ferryman's schema. Money is BIGINT nano-USD (1e-9 USD); times are BIGINT microseconds since
-- the Unix epoch; the same in both dialects so the store's SQL is shared. (This is the SQLite
-- dialect: JSON is TEXT, and each table is spelled out.)
--
-- Every managed resource lives in a table of the same shape: an `id`, the relation columns
-- the gateway filters and joins on (NULL where they do not apply), the resource's settings
-- as one JSON document (`data`), its spend, and a `version` for optimistic concurrency
-- (the API's etag).

CREATE TABLE organizations (
    id              TEXT PRIMARY KEY,
    alias           TEXT,
    organization_id TEXT,
    team_id         TEXT,
    user_id         TEXT,
    token_hash      TEXT,
    data            TEXT NOT NULL,
    spend_nanos     BIGINT NOT NULL DEFAULT 0,
    version         BIGINT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    updated_at_us   BIGINT NOT NULL
);

CREATE TABLE teams (
    id              TEXT PRIMARY KEY,
    alias           TEXT,
    organization_id TEXT,
    team_id         TEXT,
    user_id         TEXT,
    token_hash      TEXT,
    data            TEXT NOT NULL,
    spend_nanos     BIGINT NOT NULL DEFAULT 0,
    version         BIGINT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    updated_at_us   BIGINT NOT NULL
);
CREATE INDEX teams_org ON teams (organization_id);
CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    alias           TEXT,
    organization_id TEXT,
    team_id         TEXT,
    user_id         TEXT,
    token_hash      TEXT,
    data            TEXT NOT NULL,
    spend_nanos     BIGINT NOT NULL DEFAULT 0,
    version         BIGINT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    updated_at_us   BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (alias);
CREATE TABLE customers (
    id              TEXT PRIMARY KEY,
    alias           TEXT,
    organization_id TEXT,
    team_id         TEXT,
    user_id         TEXT,
    token_hash      TEXT,
    data            TEXT NOT NULL,
    spend_nanos     BIGINT NOT NULL DEFAULT 0,
    version         BIGINT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    updated_at_us   BIGINT NOT NULL
);
CREATE TABLE budgets (
    id              TEXT PRIMARY KEY,
    alias           TEXT,
    organization_id TEXT,
    team_id         TEXT,
    user_id         TEXT,
    token_hash      TEXT,
    data            TEXT NOT NULL,
    spend_nanos     BIGINT NOT NULL DEFAULT 0,
    version         BIGINT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    updated_at_us   BIGINT NOT NULL
);
CREATE TABLE keys (
    id              TEXT PRIMARY KEY,
    alias           TEXT,
    organization_id TEXT,
    team_id         TEXT,
    user_id         TEXT,
    token_hash      TEXT,
    data            TEXT NOT NULL,
    spend_nanos     BIGINT NOT NULL DEFAULT 0,
    version         BIGINT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    updated_at_us   BIGINT NOT NULL
);
CREATE UNIQUE INDEX keys_token ON keys (token_hash);
CREATE UNIQUE INDEX keys_alias ON keys (alias);
CREATE INDEX keys_user ON keys (user_id);
CREATE INDEX keys_team ON keys (team_id);
CREATE INDEX keys_org ON keys (organization_id);

-- Users' roles in teams and organizations: `scope` is 'team' or 'org'.
CREATE TABLE memberships (
    scope         TEXT NOT NULL,
    scope_id      TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    role          TEXT NOT NULL,
    data          TEXT NOT NULL,
    spend_nanos   BIGINT NOT NULL DEFAULT 0,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (scope, scope_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

-- Old secrets of regenerated keys, valid until revoke_at.
CREATE TABLE key_grace (
    token_hash   TEXT PRIMARY KEY,
    key_id       TEXT NOT NULL,
    revoke_at_us BIGINT NOT NULL
);
CREATE INDEX key_grace_key ON key_grace (key_id);

CREATE TABLE spend_logs (
    request_id        TEXT PRIMARY KEY,
    call_type         TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    model             TEXT NOT NULL,
    deployment        TEXT NOT NULL,
    provider          TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens      BIGINT NOT NULL,
    spend_nanos       BIGINT NOT NULL,
    status            TEXT NOT NULL,
    error_code        TEXT,
    start_time_us     BIGINT NOT NULL,
    end_time_us       BIGINT NOT NULL,
    duration_ms       BIGINT NOT NULL,
    end_user          TEXT
);
CREATE INDEX spend_logs_start ON spend_logs (start_time_us DESC, request_id DESC);
CREATE INDEX spend_logs_key_start ON spend_logs (key_id, start_time_us DESC);
CREATE INDEX spend_logs_end_user ON spend_logs (end_user, start_time_us DESC);

-- The audit log: append-only, hash-chained (each entry's hash covers the previous hash).
CREATE TABLE audit_log (
    seq           BIGINT PRIMARY KEY,
    entry_id      TEXT NOT NULL UNIQUE,
    at_us         BIGINT NOT NULL,
    actor_user_id TEXT,
    actor_key_id  TEXT,
    actor_role    TEXT NOT NULL,
    action        TEXT NOT NULL,
    object_type   TEXT NOT NULL,
    object_id     TEXT NOT NULL,
    before_value  TEXT,
    after_value   TEXT,
    request_id    TEXT,
    source_addr   TEXT,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
CREATE INDEX audit_object ON audit_log (object_type, object_id);
CREATE INDEX audit_at ON audit_log (at_us);

-- The chain's head: one row, locked by every writer.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');
