-- MCP servers registered through the management API (config.yaml's stay in the file).
CREATE TABLE mcp_servers (
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
