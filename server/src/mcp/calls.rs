//! The governance of one tool call: admitted against the caller's budgets (its price
//! reserved in strict mode, like a model call's worst case), then settled: the cost lands on
//! every budget the caller answers to, a spend record (`call_type: mcp_tool_call`, the
//! server as `deployment`, `<server>-<tool>` as `model`) is written through the ledger, and
//! the Prometheus counters move.

use std::time::Instant;

use chrono::{DateTime, Utc};

use rmcp::model::JsonObject;

use super::names::prefixed;
use crate::config::mcp::McpServerConfig;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::governance::{Caller, budgets};
use crate::limits::rates::{RateScope, RateStatus, Ticket};
use crate::limits::{Remaining, Reservation};
use crate::pricing::Nanos;
use crate::store::{Charge, SpendRecord, SpendStatus};

/// A tool call admitted and under way.
pub struct ToolCall {
    pub id: String,
    /// `<server>-<tool>`, as the client named it.
    name: String,
    /// The tool's own name on its server.
    tool: String,
    server: String,
    /// Kept in the record only where the configuration says so.
    arguments: Option<serde_json::Value>,
    cost: Nanos,
    key_id: String,
    user_id: Option<String>,
    team_id: Option<String>,
    organization_id: Option<String>,
    tags: Vec<String>,
    charges: Vec<Charge>,
    reservation: Option<Reservation>,
    ticket: Option<Ticket>,
    started_at: DateTime<Utc>,
    started: Instant,
}

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The tool answered.
    Ok,
    /// The tool answered with `isError`: it ran, so it is charged.
    ToolError,
    /// The server could not be reached or did not answer: nothing is charged.
    UpstreamError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::UpstreamError => "upstream_error",
        }
    }
}

impl Gateway {
    /// Admits `caller`'s call of `tool` on `server` (named `name` to the client) with
    /// `arguments`, at the tool's price.
    pub async fn begin_tool_call(
        &self,
        caller: &Caller,
        server: &McpServerConfig,
        tool: &str,
        arguments: Option<&JsonObject>,
    ) -> Result<ToolCall, GatewayError> {
        let name = prefixed(&server.name, tool);
        let name = name.as_str();
        let cost = server.cost(tool);
        let keep_arguments = server.log_arguments.unwrap_or(self.config.general.store_prompts_in_spend_logs);
        let server = server.name.as_str();
        let identity = caller.identity();
        let tag_names = crate::governance::tags::merge(identity.into_iter().flat_map(|i| i.tag_lists()))?;
        let mut tags = Vec::with_capacity(tag_names.len());
        for t in tag_names {
            let record = self.tags.get(&t);
            tags.push((t, record));
        }
        let now = Utc::now();
        let mut scopes = budgets::scopes(identity, None, &tags, name, now);
        if let Some(g) = &self.config.global_budget {
            scopes.push(budgets::global(g, now));
        }
        // `mcp_rpm_limit` on the key and its team, per server.
        let mut rate_scopes = Vec::new();
        if let Some(i) = identity {
            let key = budgets::with_tier(&i.key.limits, i.key_tier.as_ref().map(|t| &t.limits));
            if let Some(rpm) = key.mcp_rpm_limit.get(server) {
                let alias = i.key.key_alias.as_deref().unwrap_or(&i.key.key_id);
                rate_scopes.push(RateScope {
                    id: format!("key_mcp:{}:{server}", i.key.key_id),
                    label: format!("key {alias:?} on MCP server {server:?}"),
                    rpm: Some(*rpm),
                    tpm: None,
                    parallel: None,
                });
            }
            if let Some(t) = &i.team
                && let Some(rpm) = t.limits.mcp_rpm_limit.get(server)
            {
                rate_scopes.push(RateScope {
                    id: format!("team_mcp:{}:{server}", t.team_id),
                    label: format!("team {:?} on MCP server {server:?}", t.team_alias.as_deref().unwrap_or(&t.team_id)),
                    rpm: Some(*rpm),
                    tpm: None,
                    parallel: None,
                });
            }
        }
        let (ticket, _rate, reservation, _remaining): (Ticket, RateStatus, Option<Reservation>, Option<Remaining>) =
            self.admit(&rate_scopes, 0, &scopes, cost).await?;
        Ok(ToolCall {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            tool: tool.to_owned(),
            server: server.to_owned(),
            arguments: keep_arguments.then(|| serde_json::Value::Object(arguments.cloned().unwrap_or_default())),
            cost,
            key_id: caller.key_id().to_owned(),
            user_id: identity.and_then(|i| i.key.user_id.clone()),
            team_id: identity.and_then(|i| i.key.team_id.clone()),
            organization_id: identity.and_then(|i| {
                i.key.organization_id.clone().or_else(|| i.org.as_ref().map(|o| o.organization_id.clone()))
            }),
            tags: tags.into_iter().map(|(t, _)| t).collect(),
            charges: scopes.into_iter().map(|s| s.charge).collect(),
            reservation,
            ticket: Some(ticket),
            started_at: now,
            started: Instant::now(),
        })
    }

    /// Settles a tool call: charges it (unless the server never answered), records it (with
    /// `error`, what the tool or the server said went wrong) and counts it. Returns what it
    /// cost.
    pub fn finish_tool_call(&self, mut call: ToolCall, outcome: Outcome, error: Option<String>) -> Nanos {
        let cost = if outcome == Outcome::UpstreamError { Nanos::ZERO } else { call.cost };
        let counted = self.ledger.counters().settle(call.reservation.take().unwrap_or_default(), &call.charges, cost);
        let ended = Utc::now();
        let duration_ms = i64::try_from(call.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        // LiteLLM's shape, so spend-log readers written for it find the tool call.
        let mut meta = serde_json::json!({
            "mcp_server_name": call.server,
            "name": call.tool,
            "namespaced_tool_name": call.name,
            "status": outcome.as_str(),
            "duration_ms": duration_ms,
        });
        if let Some(arguments) = call.arguments.take() {
            meta["arguments"] = arguments;
        }
        if let Some(error) = error {
            // A tool's error text can be long; the record keeps its start.
            meta["error"] = serde_json::Value::String(error.chars().take(1000).collect());
        }
        let seq = self.ledger.record(
            SpendRecord {
                request_id: call.id.clone(),
                call_type: "mcp_tool_call".to_owned(),
                key_id: call.key_id.clone(),
                model: call.name.clone(),
                deployment: call.server.clone(),
                provider: "mcp".to_owned(),
                prompt_tokens: 0,
                completion_tokens: 0,
                total_tokens: 0,
                spend: cost,
                status: if outcome == Outcome::UpstreamError { SpendStatus::Failure } else { SpendStatus::Success },
                error_code: (outcome != Outcome::Ok).then(|| outcome.as_str().to_owned()),
                start_time: call.started_at,
                end_time: ended,
                duration_ms,
                end_user: None,
                user_id: call.user_id.clone(),
                team_id: call.team_id.clone(),
                organization_id: call.organization_id.clone(),
                tags: call.tags.clone(),
                charges: call.charges.clone(),
                cache_hit: false,
                metadata: Some(serde_json::json!({ "mcp_tool_call_metadata": meta })),
            },
            counted,
        );
        if let Some(ticket) = call.ticket.take() {
            self.rates.settle(ticket, 0, cost, seq);
        }
        crate::metrics::mcp_tool_call(&call.server, &call.name, outcome.as_str(), cost);
        cost
    }
}
