//! OpenAI-compatible inference routes: `/v1/chat/completions` (and `/chat/completions`),
//! `/v1/models`.

use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;

use super::AppState;
use super::error::{ApiError, openai_code};
use super::extract::{Auth, JsonObject, Path};
use crate::chat::ChatRequest;
use crate::error::{ErrorCode, GatewayError};
use crate::gateway::{CallInfo, StreamEvent};
use crate::governance::access::Target;
use crate::pricing::format_usd;

/// When the request reached the gateway, stamped by the outermost layer.
#[derive(Clone, Copy)]
pub struct RequestStart(pub Instant);

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn overhead_ms(d: std::time::Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// The headers every finished call carries.
pub(super) fn call_headers(headers: &mut HeaderMap, info: &CallInfo) {
    headers.insert(HeaderName::from_static("x-ferryman-response-cost"), header_value(&format_usd(info.cost)));
    headers.insert(HeaderName::from_static("x-ferryman-call-id"), header_value(&info.call_id));
    headers.insert(HeaderName::from_static("x-ferryman-model-id"), header_value(&info.deployment));
    headers
        .insert(HeaderName::from_static("x-ferryman-overhead-duration-ms"), header_value(&overhead_ms(info.overhead)));
    remaining_headers(headers, info.remaining.as_ref());
    rate_headers(headers, Some(&info.rate));
    routing_headers(headers, &info.deployment, info.retries, info.fallbacks);
    if info.cache_hit {
        headers.insert(HeaderName::from_static("x-ferryman-cache-hit"), HeaderValue::from_static("true"));
        headers.insert(HeaderName::from_static("x-litellm-cache-hit"), HeaderValue::from_static("True"));
    }
}

/// Which deployment answered and what it took to get there, under Ferryman's and LiteLLM's
/// names.
fn routing_headers(headers: &mut HeaderMap, deployment: &str, retries: u32, fallbacks: u32) {
    headers.insert(HeaderName::from_static("x-litellm-model-id"), header_value(deployment));
    for (name, n) in [
        ("x-ferryman-attempted-retries", retries),
        ("x-litellm-attempted-retries", retries),
        ("x-ferryman-attempted-fallbacks", fallbacks),
        ("x-litellm-attempted-fallbacks", fallbacks),
    ] {
        headers.insert(HeaderName::from_static(name), header_value(&n.to_string()));
    }
}

/// OpenAI's rate-limit headers, for the most constraining scope.
fn rate_headers(headers: &mut HeaderMap, rate: Option<&crate::limits::rates::RateStatus>) {
    let Some(rate) = rate else { return };
    if let Some((limit, left)) = rate.requests {
        headers.insert(HeaderName::from_static("x-ratelimit-limit-requests"), header_value(&limit.to_string()));
        headers.insert(HeaderName::from_static("x-ratelimit-remaining-requests"), header_value(&left.to_string()));
    }
    if let Some((limit, left)) = rate.tokens {
        headers.insert(HeaderName::from_static("x-ratelimit-limit-tokens"), header_value(&limit.to_string()));
        headers.insert(HeaderName::from_static("x-ratelimit-remaining-tokens"), header_value(&left.to_string()));
    }
}

/// The tightest budget at admission (what is left of it and whose it is), and the first soft
/// budget already spent.
fn remaining_headers(headers: &mut HeaderMap, remaining: Option<&crate::limits::Remaining>) {
    let Some(r) = remaining else { return };
    if let Some(t) = &r.tightest {
        headers.insert(HeaderName::from_static("x-ferryman-remaining-budget"), header_value(&format_usd(t.remaining)));
        headers.insert(HeaderName::from_static("x-ferryman-max-budget"), header_value(&format_usd(t.max)));
        headers.insert(HeaderName::from_static("x-ferryman-budget-scope"), header_value(&t.label.replace('"', "")));
    }
    if let Some(soft) = &r.soft_exceeded {
        headers
            .insert(HeaderName::from_static("x-ferryman-soft-budget-exceeded"), header_value(&soft.replace('"', "")));
    }
}

pub async fn chat_completions(
    State(app): State<AppState>,
    Extension(RequestStart(started)): Extension<RequestStart>,
    Auth(caller): Auth,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let mut request = ChatRequest::from_json_object(body)?;
    let header = headers.get("x-ferryman-tags").or_else(|| headers.get("x-litellm-tags")).and_then(|v| v.to_str().ok());
    if header.is_some() {
        request.tags.extend(crate::governance::tags::from_request(&Default::default(), header)?);
    }
    if !request.stream {
        let (response, info) = app.gateway.chat(&caller, request, started).await?;
        let mut resp = Json(response).into_response();
        call_headers(resp.headers_mut(), &info);
        return Ok(resp);
    }

    let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let stream = app.gateway.chat_stream(&caller, request, started).await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(HeaderName::from_static("x-ferryman-call-id"), header_value(stream.call_id()));
    headers.insert(HeaderName::from_static("x-ferryman-model-id"), header_value(stream.deployment_id()));
    headers.insert(
        HeaderName::from_static("x-ferryman-overhead-duration-ms"),
        header_value(&overhead_ms(stream.overhead_before_upstream())),
    );
    remaining_headers(&mut headers, stream.remaining());
    rate_headers(&mut headers, stream.rate());
    let (retries, fallbacks) = stream.attempts();
    routing_headers(&mut headers, stream.deployment_id(), retries, fallbacks);
    let body = stream.filter_map(move |event| async move {
        let bytes = match event {
            Ok(StreamEvent::Chunk(chunk)) => {
                // The usage-only chunk goes out only to callers who asked for it.
                if chunk.choices.is_empty() && chunk.usage.is_some() && !include_usage {
                    return None;
                }
                let json = serde_json::to_string(&chunk).ok()?;
                format!("data: {json}\n\n")
            }
            Ok(StreamEvent::Done(_)) => "data: [DONE]\n\n".to_owned(),
            Err(e) => {
                let err = json!({"error": {
                    "message": e.message, "type": e.openai_type(), "param": e.param, "code": openai_code(&e),
                }});
                format!("data: {err}\n\n")
            }
        };
        Some(Ok::<_, std::convert::Infallible>(Bytes::from(bytes)))
    });
    Ok((headers, Body::from_stream(body)).into_response())
}

/// `POST /v1/embeddings`: governed, routed, priced and recorded like a chat call.
pub async fn embeddings(
    State(app): State<AppState>,
    Extension(RequestStart(started)): Extension<RequestStart>,
    Auth(caller): Auth,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let mut request = crate::embeddings::EmbeddingRequest::from_json_object(body)?;
    let header = headers.get("x-ferryman-tags").or_else(|| headers.get("x-litellm-tags")).and_then(|v| v.to_str().ok());
    if header.is_some() {
        request.tags.extend(crate::governance::tags::from_request(&Default::default(), header)?);
    }
    let (response, info) = app.gateway.embeddings(&caller, request, started).await?;
    let mut resp = Json(response).into_response();
    call_headers(resp.headers_mut(), &info);
    Ok(resp)
}

/// The models the caller may use, in OpenAI's list shape.
pub async fn list_models(State(app): State<AppState>, Auth(caller): Auth) -> Json<serde_json::Value> {
    let models = app.gateway.models();
    let groups = models.access_groups();
    let data: Vec<_> = models
        .names()
        .iter()
        .filter(|name| crate::governance::admit(&caller, &Target::listed(name), groups).is_ok())
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "ferryman"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// One model, if it exists and the caller may use it (a 404 either way otherwise, so a caller
/// learns nothing about models it may not use).
pub async fn get_model(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let models = app.gateway.models();
    let groups = models.access_groups();
    let known = models.names().contains(&id);
    if known && crate::governance::admit(&caller, &Target::listed(&id), groups).is_ok() {
        return Ok(Json(json!({"id": id, "object": "model", "created": 0, "owned_by": "ferryman"})));
    }
    Err(ApiError(
        GatewayError::new(ErrorCode::NotFound, format!("model {id:?} does not exist or you may not use it"))
            .with_reason("model_not_found")
            .with_param("model"),
    ))
}
