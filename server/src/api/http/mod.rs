//! The HTTP shim: the OpenAI API and LiteLLM's management routes. This file only lists
//! routes; handlers live one file per area.

mod completions;
mod error;
mod extract;
mod health;
mod keys;
mod messages;
mod mgmt;
mod openai;
mod spend;
mod usage;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, patch, post};

pub use error::ApiError;
pub use extract::presented_secret;
pub use openai::RequestStart;

use crate::gateway::Gateway;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        // OpenAI-compatible inference.
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/chat/completions", post(openai::chat_completions))
        .route("/v1/messages", post(messages::messages))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/completions", post(completions::completions))
        .route("/completions", post(completions::completions))
        .route("/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*id}", get(openai::get_model))
        .route("/models/{*id}", get(openai::get_model))
        .route("/models", get(openai::list_models))
        // LiteLLM-compatible management: keys.
        .route("/key/generate", post(keys::generate))
        .route("/key/update", post(keys::update))
        .route("/key/info", get(keys::info))
        .route("/key/list", get(keys::list))
        .route("/key/delete", post(keys::delete))
        .route("/key/regenerate", post(keys::regenerate))
        .route("/key/{key}/regenerate", post(keys::regenerate_path))
        .route("/key/block", post(keys::block))
        .route("/key/unblock", post(keys::unblock))
        // Organizations (LiteLLM uses PATCH and DELETE here; POST is accepted too).
        .route("/organization/new", post(mgmt::org_new))
        .route("/organization/update", patch(mgmt::org_update).post(mgmt::org_update))
        .route("/organization/delete", delete(mgmt::org_delete).post(mgmt::org_delete))
        .route("/organization/info", get(mgmt::org_info))
        .route("/organization/list", get(mgmt::org_list))
        .route("/organization/member_add", post(mgmt::org_member_add))
        .route("/organization/member_update", patch(mgmt::org_member_update).post(mgmt::org_member_update))
        .route("/organization/member_delete", delete(mgmt::org_member_delete).post(mgmt::org_member_delete))
        // Teams.
        .route("/team/new", post(mgmt::team_new))
        .route("/team/update", post(mgmt::team_update))
        .route("/team/delete", post(mgmt::team_delete))
        .route("/team/info", get(mgmt::team_info))
        .route("/team/list", get(mgmt::team_list))
        .route("/team/member_add", post(mgmt::team_member_add))
        .route("/team/member_update", post(mgmt::team_member_update))
        .route("/team/member_delete", post(mgmt::team_member_delete))
        .route("/team/block", post(mgmt::team_block))
        .route("/team/unblock", post(mgmt::team_unblock))
        // Internal users.
        .route("/user/new", post(mgmt::user_new))
        .route("/user/update", post(mgmt::user_update))
        .route("/user/delete", post(mgmt::user_delete))
        .route("/user/info", get(mgmt::user_info))
        .route("/user/list", get(mgmt::user_list))
        // Customers, also as LiteLLM's /end_user aliases.
        .route("/customer/new", post(mgmt::customer_new))
        .route("/customer/update", post(mgmt::customer_update))
        .route("/customer/delete", post(mgmt::customer_delete))
        .route("/customer/info", get(mgmt::customer_info))
        .route("/customer/list", get(mgmt::customer_list))
        .route("/customer/block", post(mgmt::customer_block))
        .route("/customer/unblock", post(mgmt::customer_unblock))
        .route("/end_user/new", post(mgmt::customer_new))
        .route("/end_user/update", post(mgmt::customer_update))
        .route("/end_user/delete", post(mgmt::customer_delete))
        .route("/end_user/info", get(mgmt::customer_info))
        .route("/end_user/list", get(mgmt::customer_list))
        .route("/end_user/block", post(mgmt::customer_block))
        .route("/end_user/unblock", post(mgmt::customer_unblock))
        // Tags with budgets.
        .route("/tag/new", post(mgmt::tag_new))
        .route("/tag/update", post(mgmt::tag_update))
        .route("/tag/delete", post(mgmt::tag_delete))
        .route("/tag/info", post(mgmt::tag_info))
        .route("/tag/list", get(mgmt::tag_list))
        // Budget tiers.
        .route("/budget/new", post(mgmt::budget_new))
        .route("/budget/update", post(mgmt::budget_update))
        .route("/budget/delete", post(mgmt::budget_delete))
        .route("/budget/info", post(mgmt::budget_info))
        .route("/budget/list", get(mgmt::budget_list))
        // Governance as a service: check before a call made elsewhere, record it after.
        .route("/usage/check", post(usage::check))
        .route("/usage/record", post(usage::record))
        // Spend and audit.
        .route("/spend/logs", get(spend::logs))
        .route("/config/reload", post(mgmt::config_reload))
        .route("/v1/mcp/server", get(mgmt::mcp_server_list).post(mgmt::mcp_server_new).put(mgmt::mcp_server_update))
        .route("/v1/mcp/server/{id}", get(mgmt::mcp_server_get).delete(mgmt::mcp_server_delete))
        .route("/audit", get(mgmt::audit_list))
        .route("/audit/{id}", get(mgmt::audit_get))
        // Health.
        .route("/health/liveness", get(health::liveness))
        .route("/health/liveliness", get(health::liveness))
        .route("/health/readiness", get(health::readiness))
        // Prometheus (no tenant data in it, so no key is asked for).
        .route("/metrics", get(health::metrics))
        // Every route above: a method it does not serve gets the OpenAI error shape.
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}
