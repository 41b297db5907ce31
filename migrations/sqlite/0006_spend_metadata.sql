-- What a call recorded beyond its columns, as JSON (an MCP tool call's server, tool, outcome
-- and, if configured, its arguments: LiteLLM's metadata.mcp_tool_call_metadata).
ALTER TABLE spend_logs ADD COLUMN metadata TEXT;
