//! Anthropic's Messages API at `POST /v1/messages`, so the official `anthropic` SDKs can point
//! at Ferryman: the request is translated to OpenAI chat, governed and routed like any call (to
//! any provider), and the answer — whole or streamed as Anthropic's events — translated back.
//! Errors come in Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`).

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::extract::{Auth, JsonObject};
use super::openai::RequestStart;
use super::{ApiError, AppState};
use crate::chat::{ChatChunk, ChatRequest, ChatResponse};
use crate::error::{ErrorCode, GatewayError};
use crate::gateway::StreamEvent;

/// Anthropic's error shape and status for a gateway error. The shape has no field for the
/// parameter at fault, so the message names it (as Anthropic's own do: `max_tokens: Field
/// required`).
fn error_response(e: &GatewayError) -> Response {
    let kind = match e.code {
        ErrorCode::InvalidArgument | ErrorCode::BudgetExceeded => "invalid_request_error",
        ErrorCode::Unauthenticated => "authentication_error",
        ErrorCode::PermissionDenied => "permission_error",
        ErrorCode::NotFound => "not_found_error",
        ErrorCode::RateLimited => "rate_limit_error",
        ErrorCode::Unavailable => "overloaded_error",
        _ => "api_error",
    };
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match &e.param {
        Some(param) if !e.message.starts_with(param.as_str()) => format!("{param}: {}", e.message),
        _ => e.message.clone(),
    };
    let mut resp =
        (status, Json(json!({"type": "error", "error": {"type": kind, "message": message}}))).into_response();
    if let Some(after) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn invalid(message: String) -> GatewayError {
    GatewayError::invalid("messages", message)
}

/// A block's text, for tool results given as blocks.
fn blocks_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// An Anthropic image source as an OpenAI image URL.
fn image_url(source: &Value) -> Option<String> {
    match source.get("type").and_then(Value::as_str)? {
        "base64" => Some(format!(
            "data:{};base64,{}",
            source.get("media_type").and_then(Value::as_str)?,
            source.get("data").and_then(Value::as_str)?
        )),
        "url" => source.get("url").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// `max_tokens`: required by the Messages API, a whole number of at least 1.
fn max_tokens(body: &Map<String, Value>) -> Result<u32, GatewayError> {
    let refuse = |why: &str| GatewayError::invalid("max_tokens", format!("max_tokens: {why}"));
    match body.get("max_tokens") {
        None | Some(Value::Null) => {
            Err(refuse("required; the Messages API takes the most tokens to generate, a whole number of at least 1"))
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Err(refuse("must be at least 1")),
            Some(v) => u32::try_from(v).map_err(|_| refuse(&format!("{v} is more than any model generates"))),
            None => Err(refuse("must be a whole number of at least 1")),
        },
        Some(_) => Err(refuse("must be a whole number of at least 1")),
    }
}

/// The OpenAI chat request for an Anthropic Messages request.
pub fn to_openai(mut body: Map<String, Value>) -> Result<Map<String, Value>, GatewayError> {
    let max_tokens = max_tokens(&body)?;
    body.remove("max_tokens");
    let mut messages = Vec::new();
    match body.remove("system") {
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(v @ Value::Array(_)) => messages.push(json!({"role": "system", "content": blocks_text(&v)})),
        _ => {}
    }
    let turns = match body.remove("messages") {
        Some(Value::Array(t)) => t,
        _ => return Err(invalid("messages: required, a list of turns".to_owned())),
    };
    for (i, turn) in turns.iter().enumerate() {
        let role = turn.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(GatewayError::invalid(
                format!("messages[{i}].role"),
                format!("messages[{i}].role: must be user or assistant"),
            ));
        }
        let blocks = match turn.get("content") {
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(b)) => b.clone(),
            _ => return Err(invalid(format!("messages[{i}].content: a string or a list of content blocks"))),
        };
        let (mut parts, mut calls) = (Vec::new(), Vec::new());
        for (j, b) in blocks.iter().enumerate() {
            match b.get("type").and_then(Value::as_str).unwrap_or("") {
                "text" => parts.push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or_default()})),
                "image" => {
                    let url = b.get("source").and_then(image_url).ok_or_else(|| {
                        invalid(format!("messages[{i}].content[{j}]: an image needs a base64 or url source"))
                    })?;
                    parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                }
                "tool_use" => calls.push(json!({
                    "id": b.get("id").cloned().unwrap_or_default(),
                    "type": "function",
                    "function": {
                        "name": b.get("name").cloned().unwrap_or_default(),
                        "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                    },
                })),
                "tool_result" => messages.push(json!({
                    "role": "tool",
                    "tool_call_id": b.get("tool_use_id").cloned().unwrap_or_default(),
                    "content": blocks_text(b.get("content").unwrap_or(&Value::Null)),
                })),
                other => {
                    return Err(invalid(format!("messages[{i}].content[{j}]: block type {other:?} is not supported")));
                }
            }
        }
        if parts.is_empty() && calls.is_empty() {
            continue;
        }
        let mut m = json!({"role": role, "content": if parts.is_empty() { Value::Null } else { Value::Array(parts) }});
        if !calls.is_empty() {
            m["tool_calls"] = Value::Array(calls);
        }
        messages.push(m);
    }
    let mut out = Map::new();
    out.insert("messages".to_owned(), Value::Array(messages));
    out.insert("max_tokens".to_owned(), max_tokens.into());
    for (from, to) in [("model", "model"), ("temperature", "temperature"), ("top_p", "top_p"), ("stream", "stream")] {
        if let Some(v) = body.remove(from) {
            out.insert(to.to_owned(), v);
        }
    }
    if let Some(stop) = body.remove("stop_sequences") {
        out.insert("stop".to_owned(), stop);
    }
    if let Some(Value::Array(tools)) = body.remove("tools") {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.get("name").cloned().unwrap_or_default(),
                    "description": t.get("description").cloned().unwrap_or(Value::Null),
                    "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
                }})
            })
            .collect();
        out.insert("tools".to_owned(), Value::Array(tools));
    }
    if let Some(choice) = body.remove("tool_choice") {
        let kind = choice.get("type").and_then(Value::as_str).unwrap_or("auto");
        let mapped = match kind {
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => {
                json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or_default()}})
            }
            _ => json!("auto"),
        };
        out.insert("tool_choice".to_owned(), mapped);
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            out.insert("parallel_tool_calls".to_owned(), Value::Bool(false));
        }
    }
    if let Some(user) = body.get("metadata").and_then(|m| m.get("user_id")).cloned() {
        out.insert("user".to_owned(), user);
    }
    // Ferryman's own fields (tags) pass through.
    if let Some(tags) = body.remove("tags") {
        out.insert("tags".to_owned(), tags);
    }
    Ok(out)
}

fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// An OpenAI completion as an Anthropic message.
pub fn to_anthropic(r: &ChatResponse, model: &str) -> Value {
    let choice = r.choices.first();
    let mut content = Vec::new();
    if let Some(text) = choice.and_then(|c| c.message.content.as_deref()).filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in choice.and_then(|c| c.message.tool_calls.as_ref()).into_iter().flatten() {
        let input: Value = serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
    }
    let usage = r.usage.unwrap_or_default();
    let cached = usage.cached_tokens();
    json!({
        "id": r.id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.finish_reason.as_deref())),
        "stop_sequence": null,
        "usage": {
            "input_tokens": usage.prompt_tokens.saturating_sub(cached),
            "cache_read_input_tokens": cached,
            "output_tokens": usage.completion_tokens,
        },
    })
}

/// Turns OpenAI chunks into Anthropic stream events.
#[derive(Default)]
struct Events {
    started: bool,
    /// The open content block: its index and whether it is text.
    open: Option<(u32, bool)>,
    next_block: u32,
    stop: Option<String>,
    finished: bool,
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

impl Events {
    fn start(&mut self, out: &mut String, id: &str, model: &str) {
        if !self.started {
            self.started = true;
            out.push_str(&event(
                "message_start",
                json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            ));
        }
    }

    fn close(&mut self, out: &mut String) {
        if let Some((index, _)) = self.open.take() {
            out.push_str(&event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        }
    }

    fn open(&mut self, out: &mut String, text: bool, block: Value) -> u32 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, text));
        out.push_str(&event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn chunk(&mut self, c: &ChatChunk, model: &str) -> String {
        let mut out = String::new();
        self.start(&mut out, &c.id, model);
        for choice in c.choices.iter().filter(|ch| ch.index == 0) {
            if let Some(text) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
                let index = match self.open {
                    Some((i, true)) => i,
                    _ => self.open(&mut out, true, json!({"type": "text", "text": ""})),
                };
                out.push_str(&event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text}}),
                ));
            }
            for call in choice.delta.tool_calls.iter().flatten() {
                let function = call.function.clone().unwrap_or_default();
                let index = match (&call.id, self.open) {
                    (Some(id), _) => self.open(
                        &mut out,
                        false,
                        json!({"type": "tool_use", "id": id,
                        "name": function.name.clone().unwrap_or_default(), "input": {}}),
                    ),
                    (None, Some((i, false))) => i,
                    (None, _) => continue,
                };
                if let Some(args) = function.arguments.filter(|a| !a.is_empty()) {
                    out.push_str(&event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": args}}),
                    ));
                }
            }
            if let Some(f) = &choice.finish_reason {
                self.stop = Some(f.clone());
            }
        }
        if let Some(u) = &c.usage {
            self.finish(&mut out, u.prompt_tokens.saturating_sub(u.cached_tokens()), u.completion_tokens);
        }
        out
    }

    fn finish(&mut self, out: &mut String, input: u64, output: u64) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.close(out);
        out.push_str(&event(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.stop.as_deref()), "stop_sequence": null},
            "usage": {"input_tokens": input, "output_tokens": output}}),
        ));
        out.push_str(&event("message_stop", json!({"type": "message_stop"})));
    }
}

pub async fn messages(
    State(app): State<AppState>,
    Extension(RequestStart(started)): Extension<RequestStart>,
    auth: Result<Auth, ApiError>,
    body: Result<JsonObject, ApiError>,
) -> Response {
    // Even a bad key or body is answered in Anthropic's shape.
    let caller = match auth {
        Ok(Auth(caller)) => caller,
        Err(ApiError(e)) => return error_response(&e),
    };
    let body = match body {
        Ok(JsonObject(b)) => b,
        Err(ApiError(e)) => return error_response(&e),
    };
    let mut openai = match to_openai(body) {
        Ok(o) => o,
        Err(e) => return error_response(&e),
    };
    if openai.get("stream") == Some(&Value::Bool(true)) {
        openai.insert("stream_options".to_owned(), json!({"include_usage": true}));
    }
    let request = match ChatRequest::from_translated_json_object(openai) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let model = request.model.clone();
    if !request.stream {
        return match app.gateway.chat(&caller, request, started).await {
            Ok((response, info)) => {
                let mut resp = Json(to_anthropic(&response, &model)).into_response();
                super::openai::call_headers(resp.headers_mut(), &info);
                resp
            }
            Err(e) => error_response(&e),
        };
    }
    let stream = match app.gateway.chat_stream(&caller, request, started).await {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(stream.call_id()) {
        headers.insert(HeaderName::from_static("x-ferryman-call-id"), v);
    }
    let mut events = Events::default();
    let body = stream.map(move |item| {
        let text = match item {
            Ok(StreamEvent::Chunk(chunk)) => events.chunk(&chunk, &model),
            Ok(StreamEvent::Done(info)) => {
                let mut out = String::new();
                events.start(&mut out, &info.call_id, &model);
                events.finish(&mut out, info.usage.prompt_tokens, info.usage.completion_tokens);
                out
            }
            Err(e) => event("error", json!({"type": "error", "error": {"type": "api_error", "message": e.message}})),
        };
        Ok::<_, std::convert::Infallible>(Bytes::from(text))
    });
    (headers, Body::from_stream(body)).into_response()
}
