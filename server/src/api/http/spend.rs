//! `GET /spend/logs` with LiteLLM's query parameters.

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{Mgmt, Query};
use crate::admin::keys;
use crate::error::GatewayError;
use crate::store::{PageRequest, SpendQuery, SpendRecord};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// A key id or a key secret.
    api_key: Option<String>,
    request_id: Option<String>,
    /// `YYYY-MM-DD` (UTC) or RFC 3339.
    start_date: Option<String>,
    end_date: Option<String>,
    end_user: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    summarize: Option<bool>,
    #[serde(default)]
    page_size: u32,
    page_token: Option<String>,
}

pub fn parse_time(field: &str, text: &str, end_of_day: bool) -> Result<DateTime<Utc>, GatewayError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        GatewayError::invalid(field, format!("{field}: {text:?} is neither YYYY-MM-DD nor an RFC 3339 time"))
    })?;
    // LiteLLM's end_date includes the whole day.
    let day = if end_of_day { day.succ_opt().unwrap_or(day) } else { day };
    Ok(day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_default())
}

pub fn log_json(r: &SpendRecord) -> Value {
    json!({
        "request_id": r.request_id,
        "call_type": r.call_type,
        "api_key": r.key_id,
        "spend": r.spend.as_usd_f64(),
        "spend_nanos": r.spend.0,
        "total_tokens": r.total_tokens,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "startTime": r.start_time.to_rfc3339(),
        "endTime": r.end_time.to_rfc3339(),
        "request_duration_ms": r.duration_ms,
        "model": r.model,
        "model_group": r.model,
        "model_id": r.deployment,
        "cache_hit": r.cache_hit,
        "custom_llm_provider": r.provider,
        "end_user": r.end_user,
        "user": r.user_id,
        "team_id": r.team_id,
        "organization_id": r.organization_id,
        "request_tags": r.tags,
        "status": r.status.as_str(),
        "error_code": r.error_code,
        "mcp_namespaced_tool_name": (r.call_type == "mcp_tool_call").then_some(&r.model),
        "metadata": r.metadata.clone().unwrap_or_else(|| json!({})),
    })
}

/// Proxy admins and viewers read every record; anyone else must name (with `api_key`) a key
/// they may read, and sees its records.
pub async fn logs(m: Mgmt, Query(q): Query<LogsQuery>) -> Result<impl IntoResponse, ApiError> {
    let ctx = m.ctx().await?;
    if !ctx.who.reads_all() && q.api_key.is_none() {
        return Err(crate::admin::deny(
            &ctx.who,
            "only proxy admins and viewers read all spend logs; pass api_key for a key you may read",
        )
        .into());
    }
    if q.summarize == Some(true) {
        return Err(GatewayError::invalid("summarize", "summarize: summaries are not supported yet; omit it").into());
    }
    let key_id = match q.api_key {
        Some(k) if ctx.who.reads_all() => Some(keys::find(&ctx, &k).await.map(|r| r.key_id).or_else(|e| {
            // The master key's calls are recorded under "master"; unknown ids simply match nothing.
            if e.code == crate::error::ErrorCode::NotFound && !k.starts_with("sk-") { Ok(k) } else { Err(e) }
        })?),
        Some(k) => Some(keys::get(&ctx, &k).await?.key_id),
        None => None,
    };
    let query = SpendQuery {
        key_id,
        user_id: q.user_id,
        team_id: q.team_id,
        request_id: q.request_id,
        end_user: q.end_user,
        start: q.start_date.as_deref().map(|t| parse_time("start_date", t, false)).transpose()?,
        end: q.end_date.as_deref().map(|t| parse_time("end_date", t, true)).transpose()?,
    };
    let page = m.app.gateway.store.list_spend(&query, &PageRequest::new(q.page_size, q.page_token)).await?;
    let mut headers = HeaderMap::new();
    if let Some(next) = page.next_token.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(HeaderName::from_static("x-next-page-token"), next);
    }
    Ok((headers, Json(Value::Array(page.items.iter().map(log_json).collect()))))
}
