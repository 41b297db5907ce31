-- MCP servers registered through the management API (config.yaml's stay in the file).
CREATE TABLE mcp_servers (LIKE organizations INCLUDING ALL);
