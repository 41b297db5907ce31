//! A mock OpenAI upstream speaking the real Chat Completions wire format (JSON and SSE,
//! errors included). It records every request it receives and answers with fixed usage
//! (21 prompt, 7 completion tokens), so tests can assert exact translation and exact cost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const PROMPT_TOKENS: u64 = 21;
pub const COMPLETION_TOKENS: u64 = 7;
pub const CONTENT: &str = "Hello from upstream";

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
    /// The path and query it was sent to.
    pub uri: String,
}

/// A scripted failure, answered to the next request instead of a completion.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Default)]
struct MockState {
    received: Mutex<Vec<Received>>,
    failures: Mutex<VecDeque<Failure>>,
    latency: Mutex<std::time::Duration>,
}

pub struct MockOpenAi {
    /// The `api_base` to configure: `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    state: Arc<MockState>,
    server: tokio::task::JoinHandle<()>,
}

impl MockOpenAi {
    pub async fn start() -> MockOpenAi {
        let state = Arc::new(MockState::default());
        // Azure OpenAI's path too: the deployment in the path, api-version in the query.
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/openai/deployments/{deployment}/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/completions", post(completions))
            .route("/openai/deployments/{deployment}/completions", post(completions))
            .route("/openai/deployments/{deployment}/embeddings", post(embeddings))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockOpenAi { base_url: format!("http://{addr}/v1"), state, server }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Answers the next request with this failure.
    pub fn fail_next(&self, failure: Failure) {
        self.state.failures.lock().unwrap().push_back(failure);
    }

    /// Waits this long before answering every request from now on.
    pub fn set_latency(&self, latency: std::time::Duration) {
        *self.state.latency.lock().unwrap() = latency;
    }
}

impl Drop for MockOpenAi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn chat(State(state): State<Arc<MockState>>, uri: axum::http::Uri, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let uri = uri.path_and_query().map_or_else(String::new, |p| p.as_str().to_owned());
    state.received.lock().unwrap().push(Received { headers, body: body.clone(), uri });
    let latency = *state.latency.lock().unwrap();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(f) = state.failures.lock().unwrap().pop_front() {
        let mut resp = (StatusCode::from_u16(f.status).unwrap(), axum::Json(f.body)).into_response();
        for (k, v) in f.headers {
            resp.headers_mut().insert(k, v.parse().unwrap());
        }
        return resp;
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    // Like OpenAI, `n` choices are generated and every one is billed.
    let n = choices(&body);
    let usage = json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS * n,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS * n});
    if body["stream"] == json!(true) {
        let include_usage = body["stream_options"]["include_usage"] == json!(true);
        let chunk = |index: u64, delta: Value, finish: Value| {
            json!({"id": "chatcmpl-up-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": model, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})
        };
        let mut events: Vec<Value> =
            (0..n).map(|i| chunk(i, json!({"role": "assistant", "content": ""}), Value::Null)).collect();
        for word in ["Hello", " from", " upstream"] {
            events.extend((0..n).map(|i| chunk(i, json!({"content": word}), Value::Null)));
        }
        events.extend((0..n).map(|i| chunk(i, json!({}), json!("stop"))));
        if include_usage {
            events.push(json!({"id": "chatcmpl-up-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": model, "choices": [], "usage": usage}));
        }
        let mut text = String::new();
        for e in events {
            text.push_str(&format!("data: {e}\n\n"));
        }
        text.push_str("data: [DONE]\n\n");
        return Response::builder().header("content-type", "text/event-stream").body(Body::from(text)).unwrap();
    }
    axum::Json(json!({
        "id": "chatcmpl-up-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": (0..n).map(|i| json!({"index": i, "message": {"role": "assistant", "content": CONTENT}, "finish_reason": "stop"})).collect::<Vec<_>>(),
        "usage": usage,
    }))
    .into_response()
}

/// The choices a request asks for (`n`, 1 when unset).
fn choices(body: &Value) -> u64 {
    body["n"].as_u64().unwrap_or(1).max(1)
}

/// Embedding tokens the mock reports per input.
pub const EMBEDDING_TOKENS_PER_INPUT: u64 = 5;

async fn embeddings(
    State(state): State<Arc<MockState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let uri = uri.path_and_query().map_or_else(String::new, |p| p.as_str().to_owned());
    state.received.lock().unwrap().push(Received { headers, body: body.clone(), uri });
    if let Some(f) = state.failures.lock().unwrap().pop_front() {
        return (StatusCode::from_u16(f.status).unwrap(), axum::Json(f.body)).into_response();
    }
    let n = match &body["input"] {
        Value::Array(items) if items.iter().all(Value::is_string) => items.len(),
        _ => 1,
    };
    let data: Vec<Value> =
        (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, i as f64]})).collect();
    let tokens = EMBEDDING_TOKENS_PER_INPUT * n as u64;
    axum::Json(json!({"object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    .into_response()
}

/// Legacy text completions: `text_completion` objects, streamed as SSE when asked (usage last
/// with `stream_options.include_usage`).
async fn completions(
    State(state): State<Arc<MockState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let uri = uri.path_and_query().map_or_else(String::new, |p| p.as_str().to_owned());
    state.received.lock().unwrap().push(Received { headers, body: body.clone(), uri });
    let n = choices(&body);
    let usage = json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS * n,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS * n});
    let model = body["model"].clone();
    if body["stream"] == json!(true) {
        let chunk = |text: &str, finish: Value| {
            json!({"id": "cmpl-up-1", "object": "text_completion", "created": 1_700_000_000,
            "model": model, "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]})
        };
        let mut events =
            vec![chunk("Once", Value::Null), chunk(" upon", Value::Null), chunk(" a time", json!("length"))];
        if body["stream_options"]["include_usage"] == json!(true) {
            events
                .push(json!({"id": "cmpl-up-1", "object": "text_completion", "created": 1_700_000_000, "model": model,
                "choices": [], "usage": usage}));
        }
        let mut text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        text.push_str("data: [DONE]\n\n");
        return Response::builder().header("content-type", "text/event-stream").body(Body::from(text)).unwrap();
    }
    axum::Json(json!({"id": "cmpl-up-1", "object": "text_completion", "created": 1_700_000_000, "model": model,
        "choices": (0..n).map(|i| json!({"text": "Once upon a time", "index": i, "logprobs": null, "finish_reason": "length"})).collect::<Vec<_>>(), "usage": usage}))
    .into_response()
}
