//! Legacy text completions (`POST /v1/completions`), served through the chat path: OpenAI and
//! Azure deployments receive the prompt at their own completions endpoint (instruct models
//! included); other providers get it as the one user message. The answer (whole or streamed)
//! comes back as `text_completion` objects. Governance, routing, cost and records are the chat
//! call's.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Auth, JsonObject};
use super::openai::{RequestStart, call_headers};
use crate::chat::{ChatChunk, ChatRequest, ChatResponse};
use crate::error::GatewayError;
use crate::gateway::StreamEvent;

/// The chat request for a completions body.
fn to_chat(mut body: Map<String, Value>) -> Result<Map<String, Value>, GatewayError> {
    let prompt = match body.remove("prompt") {
        Some(Value::String(p)) => p,
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_owned()
        }
        Some(Value::Array(_)) => {
            return Err(GatewayError::invalid("prompt", "prompt: one prompt per request (send several requests)"));
        }
        _ => return Err(GatewayError::invalid("prompt", "prompt: required, a string")),
    };
    for unsupported in ["echo", "logprobs", "suffix", "best_of"] {
        if body.get(unsupported).is_some_and(|v| !v.is_null() && *v != Value::Bool(false)) {
            return Err(GatewayError::invalid(
                unsupported,
                format!("{unsupported}: not supported by this gateway's completions"),
            ));
        }
        body.remove(unsupported);
    }
    // The legacy endpoint's default is 16 tokens.
    body.entry("max_tokens").or_insert(json!(16));
    body.insert("messages".to_owned(), json!([{"role": "user", "content": prompt}]));
    Ok(body)
}

fn text_choice(index: u32, text: &str, finish: Option<&str>) -> Value {
    json!({"text": text, "index": index, "logprobs": null, "finish_reason": finish})
}

fn to_completion(r: &ChatResponse) -> Value {
    json!({
        "id": r.id,
        "object": "text_completion",
        "created": r.created,
        "model": r.model,
        "choices": r.choices.iter().map(|c| text_choice(c.index, c.message.content.as_deref().unwrap_or(""), c.finish_reason.as_deref())).collect::<Vec<_>>(),
        "usage": r.usage,
    })
}

fn chunk_to_completion(c: &ChatChunk) -> Value {
    let mut v = json!({
        "id": c.id,
        "object": "text_completion",
        "created": c.created,
        "model": c.model,
        "choices": c.choices.iter().map(|ch| text_choice(ch.index, ch.delta.content.as_deref().unwrap_or(""), ch.finish_reason.as_deref())).collect::<Vec<_>>(),
    });
    if let Some(u) = &c.usage {
        v["usage"] = json!(u);
    }
    v
}

pub async fn completions(
    State(app): State<AppState>,
    Extension(RequestStart(started)): Extension<RequestStart>,
    Auth(caller): Auth,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let chat = to_chat(body)?;
    let prompt = chat["messages"][0]["content"].as_str().map(str::to_owned);
    let mut request = ChatRequest::from_json_object(chat)?;
    request.legacy_prompt = prompt;
    if !request.stream {
        let (response, info) = app.gateway.chat(&caller, request, started).await?;
        let mut resp = Json(to_completion(&response)).into_response();
        call_headers(resp.headers_mut(), &info);
        return Ok(resp);
    }
    let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let stream = app.gateway.chat_stream(&caller, request, started).await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let body = stream.filter_map(move |event| async move {
        let text = match event {
            Ok(StreamEvent::Chunk(chunk)) => {
                if chunk.choices.is_empty() && (chunk.usage.is_none() || !include_usage) {
                    return None;
                }
                // The role-only opening chunk carries no text: skip it.
                if chunk.usage.is_none()
                    && chunk
                        .choices
                        .iter()
                        .all(|c| c.delta.content.as_deref().unwrap_or("").is_empty() && c.finish_reason.is_none())
                {
                    return None;
                }
                format!("data: {}\n\n", chunk_to_completion(&chunk))
            }
            Ok(StreamEvent::Done(_)) => "data: [DONE]\n\n".to_owned(),
            Err(e) => format!("data: {}\n\n", json!({"error": {"message": e.message, "type": e.openai_type()}})),
        };
        Some(Ok::<_, std::convert::Infallible>(Bytes::from(text)))
    });
    Ok((headers, Body::from_stream(body)).into_response())
}
