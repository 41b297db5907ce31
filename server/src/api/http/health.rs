//! `/health/liveness` (the process answers), `/health/readiness` (it can serve: the database
//! answers) and `/metrics` (Prometheus).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

pub async fn metrics(State(app): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let mut text = crate::metrics::render();
    let servers: Vec<(String, bool)> =
        app.gateway.mcp.all().iter().map(|u| (u.name().to_owned(), u.healthy())).collect();
    crate::metrics::render_mcp_servers(&mut text, &servers);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

pub async fn liveness() -> &'static str {
    "I'm alive!"
}

pub async fn readiness(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = &app.gateway.store;
    match store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(
                json!({"status": "healthy", "db": "connected", "db_backend": store.backend(), "version": env!("CARGO_PKG_VERSION")}),
            ),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database ping failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unhealthy", "db": "disconnected", "db_backend": store.backend()})),
            )
        }
    }
}
