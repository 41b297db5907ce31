//! MCP servers registered through the management API (`/v1/mcp/server`), beside the ones
//! config.yaml declares. Proxy admins register, change and remove them; admins and viewers
//! read them. A server's settings are the mapping config.yaml takes, checked by the same
//! reader; its credentials are stored, used, and never shown, logged or audited.
//!
//! After a change the registry is read again from the database and swapped into the hub, and
//! the other instances are told to do the same.

use serde_json::{Map, Value, json};

use super::{Ctx, load, snapshot};
use crate::config::mcp::{McpAuth, McpServerConfig, McpTransport, SECRET_KEYS, read_one};
use crate::error::{ErrorCode, GatewayError};
use crate::gateway::Gateway;
use crate::store::{Change, PageRequest, RowFilter, Table};
use crate::tenancy::{McpServerRecord, Meta, from_row, to_row};

/// Settings with their secrets replaced by `***`.
fn redacted(settings: &Map<String, Value>) -> Map<String, Value> {
    let mut out = settings.clone();
    for k in SECRET_KEYS {
        if out.contains_key(*k) {
            out.insert((*k).to_owned(), Value::String("***".to_owned()));
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

/// A server as the API shows it: where it comes from, how it is reached, who may see it, and
/// whether it answers; never its credentials.
pub fn view(gw: &Gateway, config: &McpServerConfig, record: Option<&McpServerRecord>) -> Value {
    let (transport, target) = match &config.transport {
        McpTransport::Http { url } => ("http", json!({"url": url})),
        McpTransport::Sse { url } => ("sse", json!({"url": url})),
        McpTransport::Stdio { command, args, env } => {
            ("stdio", json!({"command": command, "args": args, "env_keys": env.keys().collect::<Vec<_>>()}))
        }
    };
    let auth_type = match &config.auth {
        McpAuth::None => "none",
        McpAuth::Bearer(_) => "bearer_token",
        McpAuth::ApiKey(_) => "api_key",
        McpAuth::Basic(_) => "basic",
        McpAuth::OAuth2 { .. } => "oauth2",
        McpAuth::Passthrough(_) => "passthrough",
    };
    let mut v = json!({
        "server_id": config.name,
        "server_name": config.name,
        "source": if record.is_some() { "api" } else { "config" },
        "description": config.description,
        "transport": transport,
        "auth_type": auth_type,
        "allowed_tools": config.allowed_tools,
        "disallowed_tools": config.disallowed_tools,
        "access_groups": config.access_groups,
        "timeout": config.timeout.as_secs_f64(),
        "healthy": gw.mcp.get(&config.name).is_none_or(|u| u.healthy()),
    });
    if let (Value::Object(m), Value::Object(t)) = (&mut v, target) {
        m.extend(t);
    }
    if let McpAuth::OAuth2 { token_url, client_id, scopes, .. } = &config.auth {
        v["token_url"] = json!(token_url);
        v["client_id"] = json!(client_id);
        v["scopes"] = json!(scopes);
    }
    if let Some(r) = record {
        v["created_by"] = json!(r.created_by);
        v["created_at"] = json!(r.meta.created_at.to_rfc3339());
        v["updated_at"] = json!(r.meta.updated_at.to_rfc3339());
        v["etag"] = json!(r.meta.version);
    }
    v
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

pub async fn create(ctx: &Ctx<'_>, name: &str, settings: Map<String, Value>) -> Result<Value, GatewayError> {
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

pub async fn get(ctx: &Ctx<'_>, name: &str) -> Result<Value, GatewayError> {
    ctx.who.require_read_all("only proxy admins and viewers may read MCP servers")?;
    if let Some(c) = ctx.gw.mcp.from_file().into_iter().find(|c| c.name == name) {
        return Ok(view(ctx.gw, &c, None));
    }
    let record: McpServerRecord = load(ctx.gw, name).await?;
    let config = check(name, &record.settings)?;
    Ok(view(ctx.gw, &config, Some(&record)))
}

/// Every server: the file's, then the registered ones.
pub async fn list(ctx: &Ctx<'_>) -> Result<Vec<Value>, GatewayError> {
    ctx.who.require_read_all("only proxy admins and viewers may read MCP servers")?;
    let mut out: Vec<Value> = ctx.gw.mcp.from_file().iter().map(|c| view(ctx.gw, c, None)).collect();
    for r in records(ctx.gw).await? {
        if let Ok(c) = read_one(&r.server_name, &r.settings) {
            out.push(view(ctx.gw, &c, Some(&r)));
        }
    }
    Ok(out)
}

/// Changes settings: a given key replaces the stored one, `null` removes it.
pub async fn update(ctx: &Ctx<'_>, name: &str, changes: Map<String, Value>) -> Result<Value, GatewayError> {
    ctx.who.require_admin("only proxy admins may change MCP servers")?;
    if ctx.gw.mcp.from_file().iter().any(|c| c.name == name) {
        return Err(GatewayError::permission_denied(format!(
            "MCP server {name:?} is declared in the config file; change it there"
        ))
        .with_reason("CONFIG_MANAGED"));
    }
    let before: McpServerRecord = load(ctx.gw, name).await?;
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
