-- Virtual keys and per-call spend records.
-- Money is BIGINT nano-USD (1e-9 USD); times are BIGINT microseconds since the Unix epoch,
-- the same in both dialects so the store code is shared.

CREATE TABLE keys (
    key_id           TEXT PRIMARY KEY,
    token_hash       TEXT NOT NULL UNIQUE,
    key_name         TEXT NOT NULL,
    key_alias        TEXT UNIQUE,
    models           TEXT NOT NULL DEFAULT '[]',
    max_budget_nanos BIGINT CHECK (max_budget_nanos >= 0),
    spend_nanos      BIGINT NOT NULL DEFAULT 0,
    metadata         TEXT NOT NULL DEFAULT '{}',
    expires_at_us    BIGINT,
    blocked          BOOLEAN NOT NULL DEFAULT 0,
    user_id          TEXT,
    team_id          TEXT,
    created_at_us    BIGINT NOT NULL,
    updated_at_us    BIGINT NOT NULL
);
CREATE INDEX keys_created ON keys (created_at_us DESC, key_id DESC);

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
