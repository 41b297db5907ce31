//! `POST /usage/check` and `POST /usage/record`: the usage API over HTTP.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Auth, JsonObject};
use crate::admin::fields::{field_names, reject_unknown, typed};
use crate::limits::rates::RateScope;
use crate::pricing::{TokenCounts, format_usd};
use crate::usage::{BudgetStatus, CheckInput, RecordInput};

#[derive(Deserialize)]
struct CheckBody {
    model: String,
    customer: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    n: Option<u32>,
}

#[derive(Deserialize)]
struct RecordBody {
    request_id: String,
    model: String,
    customer: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cached_input_tokens: u64,
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
}

fn budget_json(b: &BudgetStatus) -> Value {
    json!({
        "scope": b.scope.charge.scope,
        "scope_id": b.scope.charge.scope_id,
        "label": b.scope.label,
        "max_budget": b.scope.max.map(|m| m.as_usd_f64()),
        "max_budget_nanos": b.scope.max.map(|m| m.0),
        "spent_nanos": b.spent.0,
        "reserved_nanos": b.reserved.0,
        "resets_at": b.scope.resets_at.map(|t| t.to_rfc3339()),
        "enforced": b.scope.enforce,
    })
}

fn limit_json(s: &RateScope, (requests, tokens, in_flight): (u64, u64, u64)) -> Value {
    json!({
        "scope_id": s.id,
        "label": s.label,
        "rpm_limit": s.rpm,
        "requests": requests,
        "tpm_limit": s.tpm,
        "tokens": tokens,
        "max_parallel_requests": s.parallel,
        "in_flight": in_flight,
    })
}

pub async fn check(
    State(app): State<AppState>,
    Auth(caller): Auth,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    reject_unknown(&body, &[field_names::<CheckBody>()])?;
    let b: CheckBody = typed(&body)?;
    let CheckBody { model, customer, tags, input_tokens, output_tokens, n } = b;
    let ask = CheckInput { model, customer, tags, input_tokens, output_tokens, n };
    let r = app.gateway.check(&caller, &ask).await?;
    Ok(Json(json!({
        "allowed": r.refusal.is_none(),
        "reason": r.refusal.as_ref().map(|e| e.reason_str()),
        "message": r.refusal.as_ref().map(|e| e.message.clone()),
        "estimated_cost": format_usd(r.estimate),
        "estimated_cost_nanos": r.estimate.0,
        "budgets": r.budgets.iter().map(budget_json).collect::<Vec<_>>(),
        "limits": r.limits.iter().map(|(s, used)| limit_json(s, *used)).collect::<Vec<_>>(),
    })))
}

pub async fn record(
    State(app): State<AppState>,
    Auth(caller): Auth,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    reject_unknown(&body, &[field_names::<RecordBody>()])?;
    let b: RecordBody = typed(&body)?;
    let input = RecordInput {
        request_id: b.request_id,
        model: b.model,
        customer: b.customer,
        tags: b.tags,
        tokens: TokenCounts {
            prompt: b.input_tokens,
            completion: b.output_tokens,
            cached_prompt: b.cached_input_tokens,
        },
        start: b.start_time,
        end: b.end_time,
    };
    let r = app.gateway.record(&caller, input).await?;
    Ok(Json(json!({
        "cost": format_usd(r.cost),
        "cost_nanos": r.cost.0,
        "duplicate": r.duplicate,
        "spend_log_request_id": r.request_id,
    })))
}
