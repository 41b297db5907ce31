//! Extractors that fail with the OpenAI error shape: the JSON body, the query string, path
//! parameters and the caller. Handlers use these, never axum's own `Json`, `Query` or `Path`,
//! whose rejections are plain text.

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
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
        let bytes = body_bytes(req, state).await?;
        if bytes.is_empty() {
            return Err(GatewayError::invalid("", "the request body is empty; send a JSON object").into());
        }
        Ok(JsonObject(json_object(&bytes)?))
    }
}

/// A JSON object body that may be left out: an empty (or all-whitespace) body is an empty
/// object; anything else is read as [`JsonObject`] reads it.
pub struct OptionalJsonObject(pub Map<String, Value>);

impl<S> FromRequest<S> for OptionalJsonObject
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonObject(Map::new()));
        }
        Ok(OptionalJsonObject(json_object(&bytes)?))
    }
}

/// The whole body, within the configured size limit. The content type is not looked at: a body
/// is read as JSON whatever it claims to be (as `curl -d` sends form-encoded), and what is not
/// JSON is refused as such.
async fn body_bytes<S>(req: Request, state: &S) -> Result<Bytes, ApiError>
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    let limit = AppState::from_ref(state).gateway.config.general.max_request_size_bytes;
    Bytes::from_request(req, state).await.map_err(|r| body_error(r, limit))
}

fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(GatewayError::invalid("", "the request body must be a JSON object")),
        Err(e) => Err(GatewayError::invalid("", format!("the request body is not valid JSON: {e}"))),
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

/// Query parameters. A parameter that is unknown, missing, repeated or of the wrong type gets a
/// 400 whose `param` names it.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Query(parse_query(parts.uri.query().unwrap_or_default())?))
    }
}

/// Deserializes a query string, naming the parameter at fault: serde's path names it for a bad
/// value or an unknown parameter; for a missing or repeated one (reported at the root) serde's
/// message quotes it in backticks.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, GatewayError> {
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let param =
            if path == "." || path.is_empty() { inner.split('`').nth(1).unwrap_or("").to_owned() } else { path };
        if param.is_empty() {
            GatewayError::invalid("", format!("the query string is not valid: {inner}"))
        } else {
            GatewayError::invalid(param.clone(), format!("{param}: {inner}"))
        }
    })
}

/// Path parameters. A segment that is not valid UTF-8 once percent-decoded, or does not parse as
/// the route's type, gets a 400 whose `param` names it.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError(path_error(rejection))),
        }
    }
}

fn path_error(rejection: PathRejection) -> GatewayError {
    let PathRejection::FailedToDeserializePathParams(e) = rejection else {
        // A route declared without the parameters its handler asks for: our bug, not the caller's.
        tracing::error!(error = %rejection, "path parameters missing from the route");
        return GatewayError::internal("internal error reading the request path");
    };
    if e.status().is_server_error() {
        tracing::error!(error = %e.body_text(), "path parameters cannot be deserialized");
        return GatewayError::internal("internal error reading the request path");
    }
    match e.into_kind() {
        ErrorKind::InvalidUtf8InPathParam { key } => {
            GatewayError::invalid(key.clone(), format!("{key}: not valid UTF-8 once percent-decoded"))
        }
        ErrorKind::ParseErrorAtKey { key, expected_type, .. } => {
            GatewayError::invalid(key.clone(), format!("{key}: must be {expected_type}"))
        }
        ErrorKind::DeserializeError { key, message, .. } => {
            GatewayError::invalid(key.clone(), format!("{key}: {message}"))
        }
        other => GatewayError::invalid("", format!("the request path is not valid: {other}")),
    }
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
