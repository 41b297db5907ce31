//! MCP servers registered through the management API (`/v1/mcp/server`), beside the ones
//! config.yaml declares. Proxy admins register, change and remove them; admins and viewers
//! read them. A server's settings are the mapping config.yaml takes, checked by the same
//! reader; its credentials are stored, used, and never shown, logged or audited.
//!
//! After a change the registry is read again from the database and swapped into the hub, and
//! the other instances are told to do the same.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Ctx, check_etag, load, snapshot};
use crate::config::mcp::{McpAuth, McpServerConfig, McpTransport, SECRET_KEYS, read_one};
use crate::error::{ErrorCode, GatewayError};
use crate::gateway::Gateway;
use crate::store::{Change, PageRequest, RowFilter, Table};
use crate::tenancy::{McpServerRecord, Meta, from_row, to_row};

/// Settings with their secrets replaced by `***`, and a stdio server's environment by its
/// names (its values are often credentials, as the view and `Debug` treat them).
fn redacted(settings: &Map<String, Value>) -> Map<String, Value> {
    let mut out = settings.clone();
    for k in SECRET_KEYS {
        if out.contains_key(*k) {
            out.insert((*k).to_owned(), Value::String("***".to_owned()));
        }
    }
    if let Some(Value::Object(env)) = out.get_mut("env") {
        for v in env.values_mut() {
            *v = Value::String("***".to_owned());
        }
    }
    out
}

/// The audit form of a record: secrets redacted.
fn audited(r: &McpServerRecord) -> Value {
    let mut v = snapshot(r);
    v["settings"] = Value::Object(redacted(&r.settings));
    v
}

fn check(name: &str, settings: &Map<String, Value>) -> Result<McpServerConfig, GatewayError> {
    read_one(name, settings).map_err(|problems| {
        let field = problems.first().and_then(|p| p.split(':').next()).unwrap_or("settings").to_owned();
        GatewayError::invalid(field, problems.join("; "))
    })
}

/// Where a server is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// config.yaml's `mcp_servers`: changed by editing the file.
    Config,
    /// Registered through the management API, stored in the database.
    Api,
}

/// How a server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Http,
    Sse,
    Stdio,
}

/// Which credential Ferryman presents upstream (never the credential itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    None,
    BearerToken,
    ApiKey,
    Basic,
    Oauth2,
    Passthrough,
}

/// The public part of an oauth2 client-credentials setting.
#[derive(Debug, Clone, Serialize)]
pub struct OAuth2View {
    pub token_url: String,
    pub client_id: String,
    pub scopes: Vec<String>,
}

/// What the database keeps about a registered server beside its settings.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    pub created_by: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// The record's version.
    pub etag: i64,
}

/// A server as the API shows it: where it comes from, how it is reached, who may see it, and
/// whether it answers; never its credentials, nor its environment's values. Serialized, it
/// is the HTTP routes' body; the gRPC service converts it field by field.
#[derive(Debug, Clone, Serialize)]
pub struct McpServerView {
    pub server_id: String,
    pub server_name: String,
    pub source: Source,
    pub description: Option<String>,
    pub transport: Transport,
    /// http and sse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// stdio: the command, its arguments and the names of the variables it gets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_keys: Option<Vec<String>>,
    pub auth_type: AuthType,
    /// `auth_type: oauth2`: where tokens come from and as whom (never the client secret).
    #[serde(flatten)]
    pub oauth2: Option<OAuth2View>,
    /// Whether tool calls' arguments are kept in spend records (unset: the general setting).
    pub log_arguments: Option<bool>,
    pub allowed_tools: Vec<String>,
    pub disallowed_tools: Vec<String>,
    pub access_groups: Vec<String>,
    #[serde(serialize_with = "seconds")]
    pub timeout: Duration,
    pub healthy: bool,
    /// Registered servers only.
    #[serde(flatten)]
    pub registration: Option<Registration>,
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339())
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The view of `config`, registered as `record` (or declared in the file without one).
pub fn view(gw: &Gateway, config: &McpServerConfig, record: Option<&McpServerRecord>) -> McpServerView {
    let McpServerConfig {
        name,
        description,
        transport,
        auth,
        allowed_tools,
        disallowed_tools,
        access_groups,
        timeout,
        tool_costs: _,
        default_cost: _,
        log_arguments,
    } = config;
    let (kind, url, command, args, env_keys) = match transport {
        McpTransport::Http { url } => (Transport::Http, Some(url.clone()), None, None, None),
        McpTransport::Sse { url } => (Transport::Sse, Some(url.clone()), None, None, None),
        McpTransport::Stdio { command, args, env } => {
            (Transport::Stdio, None, Some(command.clone()), Some(args.clone()), Some(env.keys().cloned().collect()))
        }
    };
    let auth_type = match auth {
        McpAuth::None => AuthType::None,
        McpAuth::Bearer(_) => AuthType::BearerToken,
        McpAuth::ApiKey(_) => AuthType::ApiKey,
        McpAuth::Basic(_) => AuthType::Basic,
        McpAuth::OAuth2 { .. } => AuthType::Oauth2,
        McpAuth::Passthrough(_) => AuthType::Passthrough,
    };
    let oauth2 = match auth {
        McpAuth::OAuth2 { token_url, client_id, client_secret: _, scopes, method: _ } => {
            Some(OAuth2View { token_url: token_url.clone(), client_id: client_id.clone(), scopes: scopes.clone() })
        }
        _ => None,
    };
    McpServerView {
        server_id: name.clone(),
        server_name: name.clone(),
        source: if record.is_some() { Source::Api } else { Source::Config },
        description: description.clone(),
        transport: kind,
        url,
        command,
        args,
        env_keys,
        auth_type,
        oauth2,
        log_arguments: *log_arguments,
        allowed_tools: allowed_tools.clone(),
        disallowed_tools: disallowed_tools.clone(),
        access_groups: access_groups.clone(),
        timeout: *timeout,
        healthy: gw.mcp.get(name).is_none_or(|u| u.healthy()),
        registration: record.map(|r| Registration {
            created_by: r.created_by.clone(),
            created_at: r.meta.created_at,
            updated_at: r.meta.updated_at,
            etag: r.meta.version,
        }),
    }
}

/// Every registered server's record, from the database.
async fn records(gw: &Gateway) -> Result<Vec<McpServerRecord>, GatewayError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = gw.store.list(Table::McpServers, &RowFilter::default(), &PageRequest { size: 500, token }).await?;
        for row in page.items {
            out.push(from_row(row)?);
        }
        match page.next_token {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

/// Reads the registered servers from the database into the hub.
pub async fn refresh(gw: &Gateway) -> Result<(), GatewayError> {
    let mut registered = Vec::new();
    for r in records(gw).await? {
        match read_one(&r.server_name, &r.settings) {
            Ok(c) => registered.push(c),
            Err(problems) => tracing::error!(
                server = %r.server_name,
                "a registered MCP server cannot be used: {}",
                problems.join("; ")
            ),
        }
    }
    gw.mcp.replace(&gw.mcp.from_file(), &registered);
    Ok(())
}

/// After a change: this instance's hub now, the others' through Redis.
async fn changed(ctx: &Ctx<'_>) -> Result<(), GatewayError> {
    refresh(ctx.gw).await?;
    if let Some(sync) = ctx.gw.sync.get() {
        sync.publish(crate::sync::Invalidation::McpServers);
    }
    Ok(())
}

pub async fn create(ctx: &Ctx<'_>, name: &str, settings: Map<String, Value>) -> Result<McpServerView, GatewayError> {
    ctx.who.require_admin("only proxy admins may register MCP servers")?;
    let config = check(name, &settings)?;
    if ctx.gw.mcp.from_file().iter().any(|c| c.name == name) {
        return Err(GatewayError::new(
            ErrorCode::AlreadyExists,
            format!("MCP server {name:?} is declared in the config file; change it there"),
        ));
    }
    let record = McpServerRecord {
        server_name: name.to_owned(),
        settings,
        created_by: ctx.actor_name(),
        managed_by: None,
        meta: Meta::new(ctx.now),
    };
    let audit = ctx.audit("created", "mcp_server", name, None, Some(audited(&record)));
    ctx.commit(vec![Change::Insert(Table::McpServers, to_row(&record))], vec![audit]).await?;
    changed(ctx).await?;
    Ok(view(ctx.gw, &config, Some(&record)))
}

pub async fn get(ctx: &Ctx<'_>, name: &str) -> Result<McpServerView, GatewayError> {
    ctx.who.require_read_all("only proxy admins and viewers may read MCP servers")?;
    if let Some(c) = ctx.gw.mcp.from_file().into_iter().find(|c| c.name == name) {
        return Ok(view(ctx.gw, &c, None));
    }
    let record: McpServerRecord = load(ctx.gw, name).await?;
    let config = check(name, &record.settings)?;
    Ok(view(ctx.gw, &config, Some(&record)))
}

/// Every server: the file's, then the registered ones.
pub async fn list(ctx: &Ctx<'_>) -> Result<Vec<McpServerView>, GatewayError> {
    ctx.who.require_read_all("only proxy admins and viewers may read MCP servers")?;
    let mut out: Vec<McpServerView> = ctx.gw.mcp.from_file().iter().map(|c| view(ctx.gw, c, None)).collect();
    for r in records(ctx.gw).await? {
        if let Ok(c) = read_one(&r.server_name, &r.settings) {
            out.push(view(ctx.gw, &c, Some(&r)));
        }
    }
    Ok(out)
}

/// Changes settings: a given key replaces the stored one, `null` removes it. With `etag`, the
/// change is refused if the server changed since the caller read that version.
pub async fn update(
    ctx: &Ctx<'_>,
    name: &str,
    changes: Map<String, Value>,
    etag: Option<i64>,
) -> Result<McpServerView, GatewayError> {
    ctx.who.require_admin("only proxy admins may change MCP servers")?;
    if ctx.gw.mcp.from_file().iter().any(|c| c.name == name) {
        return Err(GatewayError::permission_denied(format!(
            "MCP server {name:?} is declared in the config file; change it there"
        ))
        .with_reason("CONFIG_MANAGED"));
    }
    let before: McpServerRecord = load(ctx.gw, name).await?;
    check_etag(etag, before.meta.version, &format!("MCP server {name:?}"))?;
    let mut after = before.clone();
    for (k, v) in changes {
        if v.is_null() {
            after.settings.remove(&k);
        } else {
            after.settings.insert(k, v);
        }
    }
    let config = check(name, &after.settings)?;
    after.meta.version += 1;
    after.meta.updated_at = ctx.now;
    let audit = ctx.audit("updated", "mcp_server", name, Some(audited(&before)), Some(audited(&after)));
    ctx.commit(vec![Change::Update(Table::McpServers, to_row(&after))], vec![audit]).await?;
    changed(ctx).await?;
    Ok(view(ctx.gw, &config, Some(&after)))
}

pub async fn delete(ctx: &Ctx<'_>, name: &str) -> Result<(), GatewayError> {
    ctx.who.require_admin("only proxy admins may remove MCP servers")?;
    if ctx.gw.mcp.from_file().iter().any(|c| c.name == name) {
        return Err(GatewayError::permission_denied(format!(
            "MCP server {name:?} is declared in the config file; remove it there"
        ))
        .with_reason("CONFIG_MANAGED"));
    }
    let before: McpServerRecord = load(ctx.gw, name).await?;
    let audit = ctx.audit("deleted", "mcp_server", name, Some(audited(&before)), None);
    ctx.commit(vec![Change::Delete(Table::McpServers, name.to_owned())], vec![audit]).await?;
    changed(ctx).await
}
