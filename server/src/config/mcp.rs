//! `mcp_servers`: the MCP tool servers Ferryman fronts, as LiteLLM's config.yaml declares them
//! (a mapping from server name to its settings).
//!
//! ```yaml
//! mcp_servers:
//!   github:
//!     url: https://mcp.example.com/mcp
//!     transport: http                    # http (default with url) | sse | stdio
//!     auth_type: bearer_token            # none | bearer_token | api_key | basic | oauth2
//!     authentication_token: os.environ/GITHUB_MCP_TOKEN
//!     allowed_tools: [search, get_issue]
//!     access_groups: [dev-tools]
//!     mcp_info:
//!       mcp_server_cost_info: {default_cost_per_query: 0.001, tool_name_to_cost_per_query: {search: 0.01}}
//!   jira:
//!     url: https://jira-mcp.example.com/mcp
//!     auth_type: oauth2                  # client credentials: a token from token_url
//!     token_url: https://auth.example.com/oauth/token
//!     client_id: ferryman
//!     client_secret: os.environ/JIRA_MCP_CLIENT_SECRET
//!     scopes: [read:jira-work]
//!   time:
//!     transport: stdio
//!     command: uvx
//!     args: [mcp-server-time]
//!     env: {TZ: UTC}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use super::Secret;
use super::reader::{Reader, join};
use crate::pricing::Nanos;

/// How long an upstream call may take unless the server says otherwise (`timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One MCP server.
#[derive(Debug, Clone)]
pub struct McpServerConfig {
    /// The name clients see and tool names are prefixed with.
    pub name: String,
    pub description: Option<String>,
    pub transport: McpTransport,
    pub auth: McpAuth,
    /// Only these tools are offered (empty: all).
    pub allowed_tools: Vec<String>,
    /// These tools are never offered.
    pub disallowed_tools: Vec<String>,
    pub access_groups: Vec<String>,
    /// Each upstream call's limit.
    pub timeout: Duration,
    /// What a call costs, by tool, and otherwise.
    pub tool_costs: BTreeMap<String, Nanos>,
    pub default_cost: Nanos,
    /// Whether a tool call's arguments are kept in its spend record (`log_arguments`); unset
    /// follows `general_settings.store_prompts_in_spend_logs`.
    pub log_arguments: Option<bool>,
}

impl McpServerConfig {
    /// Whether the server's own filter offers `tool`.
    pub fn offers(&self, tool: &str) -> bool {
        (self.allowed_tools.is_empty() || self.allowed_tools.iter().any(|t| t == tool))
            && !self.disallowed_tools.iter().any(|t| t == tool)
    }

    /// Everything the server was configured with, credentials included (hashed): equal
    /// fingerprints mean an unchanged server.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut secret = match &self.auth {
            McpAuth::None => String::new(),
            McpAuth::Bearer(t) | McpAuth::ApiKey(t) | McpAuth::Basic(t) | McpAuth::Passthrough(t) => {
                t.expose().to_owned()
            }
            McpAuth::OAuth2 { client_secret, .. } => client_secret.expose().to_owned(),
        };
        if let McpTransport::Stdio { env, .. } = &self.transport {
            for (k, v) in env {
                secret.push_str(&format!("|{k}={v}"));
            }
        }
        let text = format!("{self:?}|{}", hex::encode(sha2::Sha256::digest(secret.as_bytes())));
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }

    /// What one call of `tool` costs.
    pub fn cost(&self, tool: &str) -> Nanos {
        self.tool_costs.get(tool).copied().unwrap_or(self.default_cost)
    }
}

#[derive(Clone)]
pub enum McpTransport {
    /// Streamable HTTP.
    Http { url: String },
    /// The legacy HTTP+SSE transport (2024-11-05).
    Sse { url: String },
    /// A child process speaking JSON-RPC on stdin/stdout. It gets only `env` (and `PATH`),
    /// never the gateway's own environment.
    Stdio { command: String, args: Vec<String>, env: BTreeMap<String, String> },
}

/// Shows a stdio server's environment by name only: its values are often credentials.
impl std::fmt::Debug for McpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McpTransport::Http { url } => f.debug_struct("Http").field("url", url).finish(),
            McpTransport::Sse { url } => f.debug_struct("Sse").field("url", url).finish(),
            McpTransport::Stdio { command, args, env } => f
                .debug_struct("Stdio")
                .field("command", command)
                .field("args", args)
                .field("env", &env.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// The credential Ferryman presents upstream. Clients' own tokens are never forwarded.
#[derive(Debug, Clone)]
pub enum McpAuth {
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `X-API-Key: <token>`.
    ApiKey(Secret),
    /// `Authorization: Basic <base64(user:password)>`.
    Basic(Secret),
    /// A caller's own credential for this server (`x-mcp-<server>-authorization`), sent as the
    /// `Authorization` header exactly as given.
    Passthrough(Secret),
    /// OAuth 2 client credentials: a token from `token_url`, renewed before it expires.
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        scopes: Vec<String>,
        method: TokenAuthMethod,
    },
}

/// How Ferryman authenticates to an oauth2 token endpoint (`token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuthMethod {
    /// `client_id` and `client_secret` in the form body (the default).
    Post,
    /// HTTP Basic with the client id and secret.
    Basic,
}

const SERVER_KEYS: &[&str] = &[
    "url",
    "transport",
    "command",
    "args",
    "env",
    "description",
    "alias",
    "auth_type",
    "authentication_token",
    "auth_value",
    "client_id",
    "client_secret",
    "token_url",
    "scopes",
    "token_endpoint_auth_method",
    "allowed_tools",
    "disallowed_tools",
    "access_groups",
    "timeout",
    "log_arguments",
    "mcp_info",
];

/// A server name: what SEP-986 allows in a tool name's first part, at most 32 characters so
/// prefixed tool names keep room for the tool's own name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 {
        return Err(format!("{name:?} must be 1 to 32 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
        return Err(format!(
            "{name:?} may contain only letters, digits, '_' and '.' ('-' joins a server's name to its tools')"
        ));
    }
    Ok(())
}

/// The settings a server's mapping may hold.
pub fn keys() -> &'static [&'static str] {
    SERVER_KEYS
}

/// Settings that hold a secret: never shown back, never logged.
pub const SECRET_KEYS: &[&str] = &["authentication_token", "auth_value", "client_secret"];

/// Reads one server's mapping (from the management API), with every problem it has.
pub fn read_one(name: &str, settings: &Map<String, Value>) -> Result<McpServerConfig, Vec<String>> {
    let mut r = Reader::default();
    if let Err(e) = check_name(name) {
        r.problem("server_name", e);
    }
    for key in settings.keys() {
        if !SERVER_KEYS.contains(&key.as_str()) {
            r.problem(key.as_str(), "unknown field; this version of Ferryman does not support it");
        }
    }
    let mut resolved = Value::Object(settings.clone());
    super::resolve_env_refs(&mut resolved, "", &super::ProcessEnv, &Default::default(), &mut r);
    let server = resolved.as_object().and_then(|m| read_server("", name, m, &mut r));
    match server {
        Some(s) if r.problems.is_empty() => Ok(s),
        _ => Err(r.problems.iter().map(ToString::to_string).collect()),
    }
}

/// Reads `mcp_servers`.
pub fn read(root: &Map<String, Value>, r: &mut Reader) -> Vec<McpServerConfig> {
    let Some(section) = root.get("mcp_servers") else { return Vec::new() };
    let Some(map) = r.object("mcp_servers", section) else { return Vec::new() };
    let mut out = Vec::new();
    for (name, entry) in map {
        let path = join("mcp_servers", name);
        if let Err(e) = check_name(name) {
            r.problem(&path, e);
        }
        let Some(m) = r.object(&path, entry) else { continue };
        r.unknown_keys(&path, m, SERVER_KEYS);
        if let Some(s) = read_server(&path, name, m, r) {
            out.push(s);
        }
    }
    out
}

fn strings(path: &str, map: &Map<String, Value>, key: &str, r: &mut Reader) -> Vec<String> {
    let p = join(path, key);
    let Some(items) = map.get(key).and_then(|v| r.list(&p, v)) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if !s.is_empty() => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            _ => r.problem(format!("{p}[{i}]"), "expected a non-empty string"),
        }
    }
    out
}

fn usd(path: &str, map: &Map<String, Value>, key: &str, r: &mut Reader) -> Option<Nanos> {
    r.decimal(path, map, key, 9).and_then(|n| i64::try_from(n).ok()).map(Nanos)
}

fn read_server(path: &str, name: &str, m: &Map<String, Value>, r: &mut Reader) -> Option<McpServerConfig> {
    let url = r.string(path, m, "url");
    if let Some(u) = &url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        r.problem(join(path, "url"), format!("{u:?} is not an http(s) URL"));
    }
    let kind =
        r.string(path, m, "transport").unwrap_or_else(|| if url.is_some() { "http" } else { "stdio" }.to_owned());
    let transport = match kind.as_str() {
        "http" | "streamable_http" | "streamable-http" | "sse" => match url {
            Some(url) if kind == "sse" => McpTransport::Sse { url },
            Some(url) => McpTransport::Http { url },
            None => {
                r.problem(join(path, "url"), format!("is required for transport {kind}"));
                return None;
            }
        },
        "stdio" => {
            let command = r.required_string(path, m, "command")?;
            let ep = join(path, "env");
            let mut env = BTreeMap::new();
            if let Some(e) = m.get("env").and_then(|v| r.object(&ep, v)) {
                for k in e.keys() {
                    if let Some(v) = r.string(&ep, e, k) {
                        env.insert(k.clone(), v);
                    }
                }
            }
            McpTransport::Stdio { command, args: strings(path, m, "args", r), env }
        }
        other => {
            r.problem(join(path, "transport"), format!("{other:?} is not an MCP transport (http, sse, stdio)"));
            return None;
        }
    };
    let token = r.string(path, m, "authentication_token").or_else(|| r.string(path, m, "auth_value"));
    let needs_token = |r: &mut Reader, kind: &str| {
        if token.is_none() {
            r.problem(join(path, "authentication_token"), format!("is required for auth_type {kind}"));
        }
    };
    let auth = match r.string(path, m, "auth_type").as_deref().unwrap_or("none") {
        "none" => McpAuth::None,
        "bearer_token" | "token" | "authorization" => {
            needs_token(r, "bearer_token");
            McpAuth::Bearer(Secret::new(token.clone().unwrap_or_default()))
        }
        "api_key" => {
            needs_token(r, "api_key");
            McpAuth::ApiKey(Secret::new(token.clone().unwrap_or_default()))
        }
        "basic" => {
            needs_token(r, "basic");
            McpAuth::Basic(Secret::new(token.clone().unwrap_or_default()))
        }
        "oauth2" => {
            let token_url = r.required_string(path, m, "token_url").unwrap_or_default();
            let client_id = r.required_string(path, m, "client_id").unwrap_or_default();
            let client_secret = Secret::new(r.required_string(path, m, "client_secret").unwrap_or_default());
            if !(token_url.is_empty() || token_url.starts_with("http://") || token_url.starts_with("https://")) {
                r.problem(join(path, "token_url"), format!("{token_url:?} is not an http(s) URL"));
            }
            let method = match r.string(path, m, "token_endpoint_auth_method").as_deref() {
                None | Some("client_secret_post") => TokenAuthMethod::Post,
                Some("client_secret_basic") => TokenAuthMethod::Basic,
                Some(other) => {
                    r.problem(
                        join(path, "token_endpoint_auth_method"),
                        format!("{other:?} is not supported (client_secret_post, client_secret_basic)"),
                    );
                    TokenAuthMethod::Post
                }
            };
            McpAuth::OAuth2 { token_url, client_id, client_secret, scopes: strings(path, m, "scopes", r), method }
        }
        other => {
            r.problem(
                join(path, "auth_type"),
                format!("{other:?} is not supported (none, bearer_token, api_key, basic, oauth2)"),
            );
            McpAuth::None
        }
    };
    if matches!(transport, McpTransport::Stdio { .. }) && !matches!(auth, McpAuth::None) {
        r.problem(join(path, "auth_type"), "a stdio server takes its credentials in env, not auth_type");
    }
    let mut tool_costs = BTreeMap::new();
    let mut default_cost = Nanos::ZERO;
    let info_path = join(path, "mcp_info");
    if let Some(info) = m.get("mcp_info").and_then(|v| r.object(&info_path, v)) {
        let cost_path = join(&info_path, "mcp_server_cost_info");
        if let Some(c) = info.get("mcp_server_cost_info").and_then(|v| r.object(&cost_path, v)) {
            default_cost = usd(&cost_path, c, "default_cost_per_query", r).unwrap_or_default();
            let tp = join(&cost_path, "tool_name_to_cost_per_query");
            if let Some(t) = c.get("tool_name_to_cost_per_query").and_then(|v| r.object(&tp, v)) {
                for tool in t.keys() {
                    if let Some(n) = usd(&tp, t, tool, r) {
                        tool_costs.insert(tool.clone(), n);
                    }
                }
            }
        }
    }
    Some(McpServerConfig {
        name: name.to_owned(),
        description: r.string(path, m, "description").or_else(|| r.string(path, m, "alias")),
        transport,
        auth,
        allowed_tools: strings(path, m, "allowed_tools", r),
        disallowed_tools: strings(path, m, "disallowed_tools", r),
        access_groups: strings(path, m, "access_groups", r),
        timeout: r.seconds(path, m, "timeout").unwrap_or(DEFAULT_TIMEOUT),
        tool_costs,
        default_cost,
        log_arguments: r.bool(path, m, "log_arguments"),
    })
}
