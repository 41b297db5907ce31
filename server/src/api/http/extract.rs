//! Extractors that fail with the OpenAI error shape: the JSON body and the caller.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use super::AppState;
use super::error::ApiError;
use crate::error::GatewayError;
use crate::governance::Caller;

/// A JSON object body. Malformed JSON, a non-object, or a body over the size limit get a 400
/// or 413 that says what is wrong.
pub struct JsonObject(pub Map<String, Value>);

impl<S> FromRequest<S> for JsonObject
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = AppState::from_ref(state).gateway.config.general.max_request_size_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|r| body_error(r, limit))?;
        if bytes.is_empty() {
            return Err(GatewayError::invalid("", "the request body is empty; send a JSON object").into());
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(GatewayError::invalid("", "the request body must be a JSON object").into()),
            Err(e) => Err(GatewayError::invalid("", format!("the request body is not valid JSON: {e}")).into()),
        }
    }
}

fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let mut e = GatewayError::invalid(
            "",
            format!(
                "the request body is larger than the gateway's limit of {limit} bytes (general_settings.max_request_size_mb)"
            ),
        );
        e.reason = Some("request_too_large");
        return ApiError(e);
    }
    ApiError(GatewayError::invalid("", format!("cannot read the request body: {rejection}")))
}

/// The secret a request presents, wherever its SDK puts it.
pub fn presented_secret(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let auth = auth.trim();
        return Some(auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")).unwrap_or(auth));
    }
    ["x-api-key", "api-key", "x-goog-api-key", "x-litellm-api-key"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
}

/// The authenticated caller.
pub struct Auth(pub Caller);

impl<S> FromRequestParts<S> for Auth
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let caller = app.gateway.authenticate(presented_secret(&parts.headers)).await?;
        Ok(Auth(caller))
    }
}

/// What every management handler needs: the app, the authenticated caller, and where the call
/// came from (for the audit log).
pub struct Mgmt {
    pub app: AppState,
    pub caller: Caller,
    pub addr: std::net::SocketAddr,
}

impl<S> FromRequestParts<S> for Mgmt
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Auth(caller) = Auth::from_request_parts(parts, state).await?;
        let addr = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
        Ok(Mgmt { app: AppState::from_ref(state), caller, addr })
    }
}

impl Mgmt {
    /// The management call's context: the caller's role and scopes, and its address.
    pub async fn ctx(&self) -> Result<crate::admin::Ctx<'_>, ApiError> {
        Ok(crate::admin::Ctx::new(&self.app.gateway, &self.caller, Some(self.addr.to_string())).await?)
    }
}
