//! The OpenAI error shape for every HTTP failure, malformed bodies included.

use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::GatewayError;

/// A [`GatewayError`] answered as `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError(pub GatewayError);

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        Self(e)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self(e.into())
    }
}

/// The OpenAI `code` field: the specific reason, lowercased.
pub fn openai_code(e: &GatewayError) -> String {
    e.reason_str().to_ascii_lowercase()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({
            "error": {
                "message": e.message,
                "type": e.openai_type(),
                "param": e.param,
                "code": openai_code(&e),
            }
        });
        let mut resp = (status, Json(body)).into_response();
        if let Some(after) = e.retry_after {
            let secs = after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// A known route called with a method it does not serve: 405 (the router adds `Allow`) in the
/// OpenAI shape, as OpenAI answers it, instead of axum's empty body.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let e = GatewayError::invalid(
        "",
        format!("invalid method for this route ({method} {}); see the Allow header", uri.path()),
    )
    .with_reason("method_not_allowed");
    let mut resp = ApiError(e).into_response();
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp
}
