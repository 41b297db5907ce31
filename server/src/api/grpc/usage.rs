//! `UsageService` over gRPC.

use tonic::{Request, Response, Status};

use ferryman_proto::v1 as pb;
use pb::usage_service_server::UsageService;

use super::convert::{from_timestamp, timestamp};
use super::services::Services;
use super::status::to_status;
use crate::pricing::{TokenCounts, format_usd};
use crate::usage::RecordInput;

#[tonic::async_trait]
impl UsageService for Services {
    async fn check(&self, req: Request<pb::CheckRequest>) -> Result<Response<pb::CheckResponse>, Status> {
        let caller = self.caller(&req).await?;
        let pb::CheckRequest { model, customer, input_tokens, output_tokens, tags, n } = req.into_inner();
        let ask = crate::usage::CheckInput { model, customer, tags, input_tokens, output_tokens, n };
        let r = self.gateway.check(&caller, &ask).await.map_err(to_status)?;
        Ok(Response::new(pb::CheckResponse {
            allowed: r.refusal.is_none(),
            reason: r.refusal.as_ref().map(|e| e.reason_str().to_owned()).unwrap_or_default(),
            message: r.refusal.map(|e| e.message).unwrap_or_default(),
            estimated_cost_nanos: r.estimate.0,
            budgets: r
                .budgets
                .iter()
                .map(|b| pb::BudgetStatus {
                    scope: b.scope.charge.scope.clone(),
                    scope_id: b.scope.charge.scope_id.clone(),
                    label: b.scope.label.clone(),
                    max_budget_nanos: b.scope.max.map(|m| m.0),
                    spent_nanos: b.spent.0,
                    reserved_nanos: b.reserved.0,
                    resets_at: b.scope.resets_at.map(timestamp),
                    enforced: b.scope.enforce,
                })
                .collect(),
            limits: r
                .limits
                .iter()
                .map(|(s, (requests, tokens, in_flight))| pb::RateLimitStatus {
                    scope_id: s.id.clone(),
                    label: s.label.clone(),
                    rpm_limit: s.rpm,
                    requests: *requests,
                    tpm_limit: s.tpm,
                    tokens: *tokens,
                    max_parallel_requests: s.parallel,
                    in_flight: *in_flight,
                })
                .collect(),
        }))
    }

    async fn record(&self, req: Request<pb::RecordRequest>) -> Result<Response<pb::RecordResponse>, Status> {
        let caller = self.caller(&req).await?;
        let pb::RecordRequest {
            request_id,
            model,
            customer,
            input_tokens,
            output_tokens,
            cached_input_tokens,
            start_time,
            end_time,
            tags,
        } = req.into_inner();
        let input = RecordInput {
            request_id,
            model,
            customer,
            tags,
            tokens: TokenCounts { prompt: input_tokens, completion: output_tokens, cached_prompt: cached_input_tokens },
            start: start_time.map(|t| from_timestamp("start_time", t)).transpose().map_err(to_status)?,
            end: end_time.map(|t| from_timestamp("end_time", t)).transpose().map_err(to_status)?,
        };
        let r = self.gateway.record(&caller, input).await.map_err(to_status)?;
        Ok(Response::new(pb::RecordResponse {
            cost_nanos: r.cost.0,
            cost_usd: format_usd(r.cost),
            duplicate: r.duplicate,
            spend_log_request_id: r.request_id,
        }))
    }
}
