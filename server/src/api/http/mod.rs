//! The HTTP shim: the OpenAI API and LiteLLM's management routes. This file only lists
//! routes; handlers live one file per area.

mod error;
mod extract;
mod health;
mod keys;
mod openai;
mod spend;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

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
        .route("/v1/models", get(openai::list_models))
        .route("/models", get(openai::list_models))
        // LiteLLM-compatible management.
        .route("/key/generate", post(keys::generate))
        .route("/key/info", get(keys::info))
        .route("/key/list", get(keys::list))
        .route("/key/delete", post(keys::delete))
        .route("/spend/logs", get(spend::logs))
        // Health.
        .route("/health/liveness", get(health::liveness))
        .route("/health/liveliness", get(health::liveness))
        .route("/health/readiness", get(health::readiness))
        .with_state(state)
}
