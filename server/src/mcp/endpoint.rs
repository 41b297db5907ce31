//! `/mcp` and `/mcp/<servers>`: Streamable HTTP, served by the official SDK's
//! `StreamableHttpService` on one POST endpoint for both protocol generations (the
//! `initialize`/session one, 2025-11-25 and earlier, and the stateless 2026-07-28 one).
//!
//! A middleware in front authenticates every request with the caller's virtual key and works
//! out the servers it addresses (the path's comma list of servers and access groups, narrowed
//! by `x-mcp-servers`); the SDK hands the request's parts to [`Aggregator`] with each
//! message, so every message is answered for the key that sent it, whichever session it
//! belongs to.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::ErrorData as McpError;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::Upstream;
use super::calls::Outcome;
use super::names::prefixed;
use crate::api::http::ApiError;
use crate::api::http::presented_secret;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::governance::Caller;

/// Tools per `tools/list` page.
const PAGE_SIZE: usize = 100;

/// Who is calling and which servers the request addresses, as the middleware found them.
#[derive(Clone)]
pub struct McpCall {
    pub caller: Caller,
    pub servers: Vec<Arc<Upstream>>,
    pub access: super::Access,
}

/// The routes: `/mcp` (every server the caller may use) and `/mcp/{servers}`.
pub fn routes(gateway: Arc<Gateway>) -> axum::Router {
    let config = StreamableHttpServerConfig::default()
        // Every request carries a virtual key, so a rebinding page cannot use the endpoint;
        // the gateway runs behind names the SDK cannot know.
        .disable_allowed_hosts()
        .with_legacy_session_mode(true);
    let gw = gateway.clone();
    let service = StreamableHttpService::new(
        move || Ok(Aggregator { gateway: gw.clone() }),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    axum::Router::new().nest_service("/mcp", service).layer(axum::middleware::from_fn_with_state(gateway, authenticate))
}

/// Authenticates the key and resolves the addressed servers before the SDK sees the request.
async fn authenticate(State(gw): State<Arc<Gateway>>, mut req: Request, next: Next) -> Response {
    let (headers, path) = (req.headers().clone(), req.uri().path().to_owned());
    match addressed(&gw, &headers, &path).await {
        Ok(call) => {
            req.extensions_mut().insert(call);
            next.run(req).await
        }
        Err(e) => ApiError(e).into_response(),
    }
}

async fn addressed(gw: &Gateway, headers: &http::HeaderMap, path: &str) -> Result<McpCall, GatewayError> {
    let caller = gw.authenticate(presented_secret(headers)).await?;
    let access = gw.mcp.access(&caller, gw.config.general.mcp_default_none);
    let path = path.trim_start_matches("/mcp").trim_matches('/');
    let mut servers: Vec<Arc<Upstream>> = if path.is_empty() {
        gw.mcp.all()
    } else {
        let decoded = percent_decode(path);
        let selected = gw.mcp.select(&decoded).map_err(GatewayError::not_found)?;
        // A server named outright that the key may not use is refused, not silently dropped.
        for name in decoded.split(',').map(str::trim) {
            if selected.iter().any(|s| s.name() == name) && !access.server(name) {
                return Err(GatewayError::permission_denied(format!(
                    "this key may not use MCP server {name:?} (object_permission of its key, user, team or organization)"
                ))
                .with_reason("MCP_SERVER_NOT_ALLOWED"));
            }
        }
        selected
    };
    servers.retain(|s| access.server(s.name()));
    // A caller's own credential for a server replaces Ferryman's on its calls.
    for s in &mut servers {
        let header = format!("x-mcp-{}-authorization", s.name().to_ascii_lowercase());
        if let Some(v) = headers.get(header.as_str()).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()) {
            *s = gw.mcp.with_credential(s, v);
        }
    }
    // The header narrows; it never widens.
    if let Some(header) = headers.get("x-mcp-servers").and_then(|v| v.to_str().ok()) {
        let named = gw.mcp.select(header).map_err(|m| GatewayError::invalid("x-mcp-servers", m))?;
        servers.retain(|s| named.iter().any(|n| Arc::ptr_eq(n, s)));
    }
    Ok(McpCall { caller, servers, access })
}

/// `%2C` and friends in a path segment.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The MCP server clients talk to: the tools of every addressed server, renamed, and calls
/// routed back to their servers.
#[derive(Clone)]
pub struct Aggregator {
    gateway: Arc<Gateway>,
}

fn call_of(ctx: &RequestContext<RoleServer>) -> Result<McpCall, McpError> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<McpCall>())
        .cloned()
        .ok_or_else(|| McpError::internal_error("the request reached the MCP handler unauthenticated", None))
}

/// The tools of `servers` that the servers' own filters offer, renamed; servers that fail are
/// left out (and reported in the second list, with why).
async fn catalog(
    servers: &[Arc<Upstream>],
    access: &super::Access,
) -> (Vec<(Arc<Upstream>, Tool)>, Vec<(String, super::UpstreamError)>) {
    let listed =
        futures_util::future::join_all(servers.iter().map(|s| async move { (s.clone(), s.tools().await) })).await;
    let mut tools = Vec::new();
    let mut failed = Vec::new();
    for (server, result) in listed {
        match result {
            Ok(list) => {
                for t in list.iter().filter(|t| server.config.offers(&t.name) && access.tool(server.name(), &t.name)) {
                    tools.push((server.clone(), t.clone()));
                }
            }
            Err(e) => {
                tracing::warn!(server = %server.name(), error = %e, "MCP server left out of the tool list");
                failed.push((server.name().to_owned(), e));
            }
        }
    }
    (tools, failed)
}

/// The text of a tool's answer (what an error says).
fn text_of(result: &CallToolResult) -> String {
    result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.as_str())).collect::<Vec<_>>().join("\n")
}

/// A tool as clients see it: prefixed, with upstream `_meta` replaced by Ferryman's.
fn presented(server: &Upstream, tool: &Tool) -> Tool {
    let mut t = tool.clone();
    t.name = prefixed(server.name(), &tool.name).into();
    let mut meta = rmcp::model::MetaObject::new();
    meta.insert("io.ferryman/server".to_owned(), serde_json::Value::String(server.name().to_owned()));
    t.meta = Some(meta);
    t
}

impl ServerHandler for Aggregator {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("ferryman", env!("CARGO_PKG_VERSION")))
            .with_instructions("Ferryman: the tools of the MCP servers your key may use, named <server>-<tool>.")
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let call = call_of(&ctx)?;
        if call.servers.is_empty() {
            return Err(McpError::invalid_request("this key may use no MCP server here", None));
        }
        let (tools, failed) = catalog(&call.servers, &call.access).await;
        if tools.is_empty() {
            let message = if failed.len() == call.servers.len() {
                let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
                format!("no MCP server answered ({})", names.join(", "))
            } else {
                "the MCP servers this key may use offer it no tools".to_owned()
            };
            return Err(McpError::invalid_request(message, None));
        }
        let mut all: Vec<Tool> = tools.iter().map(|(s, t)| presented(s, t)).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let start = match request.and_then(|r| r.cursor) {
            None => 0,
            Some(c) => {
                c.parse::<usize>().map_err(|_| McpError::invalid_params("cursor: not one this server gave", None))?
            }
        };
        let page: Vec<Tool> = all.iter().skip(start).take(PAGE_SIZE).cloned().collect();
        let mut result = ListToolsResult::with_all_items(page);
        if start + PAGE_SIZE < all.len() {
            result.next_cursor = Some((start + PAGE_SIZE).to_string());
        }
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let call = call_of(&ctx)?;
        let name = request.name.to_string();
        let candidates: Vec<Arc<Upstream>> =
            call.servers.iter().filter(|s| name.starts_with(&format!("{}-", s.name()))).cloned().collect();
        let (tools, failed) = catalog(&candidates, &call.access).await;
        let Some((server, tool)) = tools.into_iter().find(|(s, t)| prefixed(s.name(), &t.name) == name) else {
            // The tool may be on a server that is not answering: say that, as the tool's answer.
            if let Some((_, e)) = failed.first() {
                return Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]).into());
            }
            return Err(McpError::invalid_params(format!("unknown tool {name:?}"), None));
        };
        let admitted = match self
            .gateway
            .begin_tool_call(&call.caller, &server.config, &tool.name, request.arguments.as_ref())
            .await
        {
            Ok(a) => a,
            // The caller (a model, often) reads a tool error; a protocol error would hide why.
            Err(e) => return Ok(CallToolResult::error(vec![ContentBlock::text(e.message)]).into()),
        };
        let started = std::time::Instant::now();
        let outcome = server.call(&tool.name, request.arguments).await;
        let (status, error) = match &outcome {
            Ok(r) if r.is_error == Some(true) => (Outcome::ToolError, Some(text_of(r))),
            Ok(_) => (Outcome::Ok, None),
            Err(e) => (Outcome::UpstreamError, Some(e.to_string())),
        };
        let call_id = admitted.id.clone();
        let charged = self.gateway.finish_tool_call(admitted, status, error);
        tracing::info!(
            call_id = %call_id,
            server = %server.name(),
            tool = %tool.name,
            status = status.as_str(),
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            cost_usd = %charged,
            key_id = call.caller.key_id(),
            "mcp tool call"
        );
        match outcome {
            Ok(result) => Ok(result.into()),
            // The caller (a model, often) reads this; a protocol error would hide it.
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]).into()),
        }
    }
}
