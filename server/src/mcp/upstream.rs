//! One upstream MCP server: its connection (Streamable HTTP or a stdio child process), made
//! on first use with the credential Ferryman holds for it, and made again when it breaks.
//!
//! Every call is bounded by the server's `timeout`. A call that fails because the connection
//! is gone (a stale session answered 400 or 404, a child process that exited, a dropped
//! stream) reconnects and is tried once more; a tool's own error is returned as it is.
//! The tool list is cached for a short time so listing does not cost an upstream round trip
//! per client request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject, ProtocolVersion, Tool};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RoleClient, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use tokio::sync::Mutex;

use crate::config::mcp::{McpAuth, McpServerConfig, McpTransport};

/// How long a listed catalog is reused.
const CATALOG_TTL: Duration = Duration::from_secs(30);

type Client = RunningService<RoleClient, ()>;

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("MCP server {server:?} did not answer within {} s", timeout.as_secs_f64())]
    Timeout { server: String, timeout: Duration },
    #[error("MCP server {server:?} is unreachable: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("MCP server {server:?} refused the call: {reason}")]
    Refused { server: String, reason: String },
}

pub struct Upstream {
    pub config: Arc<McpServerConfig>,
    pub origin: super::Origin,
    /// The settings it was made from, credentials included (hashed), to tell a change.
    pub fingerprint: String,
    http: reqwest::Client,
    /// The connection, and when the oauth2 token it was made with must be renewed.
    conn: Mutex<Option<(Arc<Client>, Option<Instant>)>>,
    /// The access token for `auth_type: oauth2`.
    oauth: super::oauth::Tokens,
    catalog: std::sync::Mutex<Option<(Instant, Arc<Vec<Tool>>)>>,
    healthy: AtomicBool,
}

impl Upstream {
    pub fn new(
        config: Arc<McpServerConfig>,
        http: reqwest::Client,
        origin: super::Origin,
        fingerprint: String,
    ) -> Self {
        Self {
            config,
            origin,
            fingerprint,
            http,
            conn: Mutex::new(None),
            oauth: Default::default(),
            catalog: std::sync::Mutex::new(None),
            healthy: AtomicBool::new(true),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the last attempt to reach it worked.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::Unreachable { server: self.config.name.clone(), reason: reason.to_string() }
    }

    async fn connect(&self) -> Result<Client, UpstreamError> {
        let lifecycle = ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: Some(ProtocolVersion::V_2025_11_25),
        };
        let connecting = async {
            match &self.config.transport {
                McpTransport::Http { url } => {
                    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                    cfg.custom_headers =
                        self.credential().await?.into_iter().filter_map(|(k, v)| Some((k?, v))).collect();
                    let transport = StreamableHttpClientTransport::with_client(
                        super::http_client::UpstreamHttp(self.http.clone()),
                        cfg,
                    );
                    ().serve_with_lifecycle(transport, lifecycle).await.map_err(|e| self.unreachable(e))
                }
                McpTransport::Sse { url } => {
                    let transport = super::sse::SseTransport::connect(
                        self.http.clone(),
                        url,
                        self.credential().await?,
                        self.config.timeout,
                    )
                    .await
                    .map_err(|e| self.unreachable(e))?;
                    // The legacy transport predates server/discover: initialize directly.
                    ().serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
                        .await
                        .map_err(|e| self.unreachable(e))
                }
                McpTransport::Stdio { command, args, env } => {
                    let mut cmd = tokio::process::Command::new(command);
                    // A sandboxed environment: what the config gives, and PATH to find programs.
                    cmd.args(args).env_clear().envs(env);
                    if let Some(path) = std::env::var_os("PATH")
                        && !env.contains_key("PATH")
                    {
                        cmd.env("PATH", path);
                    }
                    let (transport, stderr) = TokioChildProcess::builder(cmd)
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .map_err(|e| self.unreachable(format!("cannot start {command:?}: {e}")))?;
                    if let Some(stderr) = stderr {
                        log_stderr(self.config.name.clone(), stderr);
                    }
                    ().serve_with_lifecycle(transport, lifecycle).await.map_err(|e| self.unreachable(e))
                }
            }
        };
        match tokio::time::timeout(self.config.timeout, connecting).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout { server: self.config.name.clone(), timeout: self.config.timeout }),
        }
    }

    /// The headers that carry Ferryman's credential for this server.
    async fn credential(&self) -> Result<http::HeaderMap, UpstreamError> {
        let header = |v: String| {
            let mut v = http::HeaderValue::from_str(&v)
                .map_err(|_| self.unreachable("its credential is not a valid header value"))?;
            v.set_sensitive(true);
            Ok(v)
        };
        let mut headers = http::HeaderMap::new();
        match &self.config.auth {
            McpAuth::None => {}
            McpAuth::Bearer(t) => {
                headers.insert(http::header::AUTHORIZATION, header(format!("Bearer {}", t.expose()))?);
            }
            McpAuth::ApiKey(t) => {
                headers.insert(http::HeaderName::from_static("x-api-key"), header(t.expose().to_owned())?);
            }
            McpAuth::Basic(t) => {
                let raw = t.expose();
                // `user:password` is encoded here; anything else is taken as already encoded.
                let encoded = if raw.contains(':') {
                    base64::engine::general_purpose::STANDARD.encode(raw)
                } else {
                    raw.to_owned()
                };
                headers.insert(http::header::AUTHORIZATION, header(format!("Basic {encoded}"))?);
            }
            McpAuth::Passthrough(t) => {
                headers.insert(http::header::AUTHORIZATION, header(t.expose().to_owned())?);
            }
            McpAuth::OAuth2 { .. } => {
                let token = self
                    .oauth
                    .token(&self.http, &self.config.auth, self.config.timeout)
                    .await
                    .map_err(|reason| UpstreamError::Refused { server: self.config.name.clone(), reason })?;
                headers.insert(http::header::AUTHORIZATION, header(format!("Bearer {token}"))?);
            }
        }
        Ok(headers)
    }

    /// The live connection, made if there is none.
    async fn client(&self) -> Result<Arc<Client>, UpstreamError> {
        let mut conn = self.conn.lock().await;
        if let Some((c, renew)) = conn.as_ref()
            && !c.is_closed()
            && renew.is_none_or(|at| Instant::now() < at)
        {
            return Ok(c.clone());
        }
        // Closed, or made with an oauth2 token that is now due: made again (with a new token).
        match self.connect().await {
            Ok(c) => {
                let c = Arc::new(c);
                *conn = Some((c.clone(), self.oauth.valid_until().await));
                self.mark(true);
                Ok(c)
            }
            Err(e) => {
                *conn = None;
                self.mark(false);
                Err(e)
            }
        }
    }

    fn mark(&self, healthy: bool) {
        if !healthy {
            // Its tools are not offered until it answers a listing again.
            if let Ok(mut c) = self.catalog.lock() {
                *c = None;
            }
        }
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                tracing::info!(server = %self.config.name, alert = "mcp_server_recovered", "MCP server reachable again");
            } else {
                tracing::error!(server = %self.config.name, alert = "mcp_server_unhealthy", "MCP server unreachable");
            }
        }
    }

    /// Forgets a connection that failed, so the next call makes a new one.
    async fn drop_client(&self, failed: &Arc<Client>) {
        let mut conn = self.conn.lock().await;
        if conn.as_ref().is_some_and(|(c, _)| Arc::ptr_eq(c, failed)) {
            *conn = None;
            // An upstream that stopped accepting the token answers like a broken connection:
            // the next connection asks for a new token.
            self.oauth.forget().await;
        }
    }

    /// Runs `op` on the connection within the timeout; a broken connection is made again and
    /// `op` tried once more.
    async fn with_client<T, F, Fut>(&self, op: F) -> Result<T, UpstreamError>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ServiceError>>,
    {
        let timeout = self.config.timeout;
        for attempt in 0..2 {
            let client = self.client().await?;
            match tokio::time::timeout(timeout, op(client.clone())).await {
                Err(_) => {
                    // Whatever the server does with the request now, this connection is suspect.
                    self.drop_client(&client).await;
                    self.mark(false);
                    return Err(UpstreamError::Timeout { server: self.config.name.clone(), timeout });
                }
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(ServiceError::McpError(e))) => {
                    return Err(UpstreamError::Refused {
                        server: self.config.name.clone(),
                        reason: e.message.to_string(),
                    });
                }
                Ok(Err(e)) => {
                    self.drop_client(&client).await;
                    if attempt == 1 {
                        self.mark(false);
                        return Err(self.unreachable(e));
                    }
                    tracing::info!(server = %self.config.name, error = %e, "MCP connection broke; reconnecting");
                }
            }
        }
        Err(self.unreachable("no connection"))
    }

    /// Every tool the server offers (all pages), before any filtering.
    pub async fn tools(&self) -> Result<Arc<Vec<Tool>>, UpstreamError> {
        if let Ok(c) = self.catalog.lock()
            && let Some((at, tools)) = c.as_ref()
            && at.elapsed() < CATALOG_TTL
        {
            return Ok(tools.clone());
        }
        let tools = Arc::new(self.with_client(|c| async move { c.peer().list_all_tools().await }).await?);
        if let Ok(mut c) = self.catalog.lock() {
            *c = Some((Instant::now(), tools.clone()));
        }
        Ok(tools)
    }

    /// Calls one tool by its upstream name.
    pub async fn call(&self, tool: &str, arguments: Option<JsonObject>) -> Result<CallToolResult, UpstreamError> {
        self.with_client(|c| {
            let mut params = CallToolRequestParams::new(tool.to_owned());
            params.arguments = arguments.clone();
            async move { c.peer().call_tool(params).await }
        })
        .await
    }
}

/// Logs what a stdio server writes to stderr, a line at a time.
fn log_stderr(server: String, stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    crate::tasks::spawn("mcp-stderr", async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(server = %server, "stderr: {line}");
        }
    });
}
