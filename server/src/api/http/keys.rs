//! LiteLLM's key routes: `/key/generate`, `/key/info`, `/key/list`, `/key/delete`.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Number, Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Auth, JsonObject};
use crate::admin::keys::{self, NewKey};
use crate::error::GatewayError;
use crate::pricing::Nanos;
use crate::store::{KeyRecord, PageRequest};

/// The fields of `/key/generate` this version supports; any other field is refused by name
/// rather than silently ignored (a limit that is not applied must not look applied).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateBody {
    key_alias: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    max_budget: Option<Number>,
    #[serde(default)]
    metadata: Map<String, Value>,
    duration: Option<String>,
    expires: Option<DateTime<Utc>>,
    user_id: Option<String>,
    team_id: Option<String>,
    key: Option<String>,
    #[serde(default)]
    blocked: bool,
}

/// Parses a typed body from a JSON object, naming the failing field.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: Map<String, Value>) -> Result<T, GatewayError> {
    serde_path_to_error::deserialize(Value::Object(body)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = if path == "." { inner.split('`').nth(1).unwrap_or("").to_owned() } else { path };
        GatewayError::invalid(field.clone(), format!("{field}: {inner}"))
    })
}

/// A USD amount from JSON, exactly; negative amounts are refused.
pub fn usd(field: &str, n: &Number) -> Result<Nanos, GatewayError> {
    Nanos::parse_usd(&n.to_string()).ok_or_else(|| {
        GatewayError::invalid(
            field,
            format!("{field}: must be a non-negative USD amount with at most 9 decimals, got {n}"),
        )
    })
}

/// A key in LiteLLM's response shape, plus Ferryman's exact figures.
pub fn key_json(k: &KeyRecord) -> Value {
    json!({
        "token": k.key_id,
        "key_id": k.key_id,
        "key_name": k.key_name,
        "key_alias": k.key_alias,
        "models": k.models,
        "max_budget": k.max_budget.map(Nanos::as_usd_f64),
        "max_budget_nanos": k.max_budget.map(|n| n.0),
        "spend": k.spend.as_usd_f64(),
        "spend_nanos": k.spend.0,
        "metadata": k.metadata,
        "expires": k.expires_at.map(|t| t.to_rfc3339()),
        "blocked": k.blocked,
        "user_id": k.user_id,
        "team_id": k.team_id,
        "created_at": k.created_at.to_rfc3339(),
        "updated_at": k.updated_at.to_rfc3339(),
    })
}

pub async fn generate(
    State(app): State<AppState>,
    Auth(caller): Auth,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let b: GenerateBody = parse_body(body)?;
    let new = NewKey {
        alias: b.key_alias,
        models: b.models,
        max_budget: b.max_budget.as_ref().map(|n| usd("max_budget", n)).transpose()?,
        metadata: b.metadata,
        duration: b.duration,
        expires_at: b.expires,
        user_id: b.user_id,
        team_id: b.team_id,
        blocked: b.blocked,
        secret: b.key,
    };
    let (record, secret) = keys::create(&app.gateway, &caller, new).await?;
    let mut out = key_json(&record);
    if let Value::Object(map) = &mut out {
        map.insert("key".to_owned(), Value::String(secret));
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfoQuery {
    key: Option<String>,
}

pub async fn info(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<InfoQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = q.key.ok_or_else(|| GatewayError::invalid("key", "key: give the key id or the key itself"))?;
    let record = keys::find(&app.gateway, &caller, &key).await?;
    Ok(Json(json!({"key": record.key_id, "info": key_json(&record)})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    size: u32,
    page_token: Option<String>,
}

pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = keys::list(&app.gateway, &caller, &PageRequest::new(q.size, q.page_token)).await?;
    Ok(Json(json!({
        "keys": page.items.iter().map(key_json).collect::<Vec<_>>(),
        "next_page_token": page.next_token,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    keys: Vec<String>,
}

/// Deletes every key named, or none: all are found first.
pub async fn delete(
    State(app): State<AppState>,
    Auth(caller): Auth,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let b: DeleteBody = parse_body(body)?;
    if b.keys.is_empty() {
        return Err(GatewayError::invalid("keys", "keys: name at least one key").into());
    }
    let mut ids = Vec::with_capacity(b.keys.len());
    for k in &b.keys {
        ids.push(keys::find(&app.gateway, &caller, k).await?.key_id);
    }
    for id in &ids {
        keys::delete(&app.gateway, &caller, id).await?;
    }
    Ok(Json(json!({"deleted_keys": b.keys})))
}
