//! A mock Anthropic upstream speaking the real Messages API wire format: JSON answers, SSE
//! event streams (`message_start` … `message_stop`, tool-input deltas included) and Anthropic's
//! error bodies. It records every request, answers a tool call when the request offers tools
//! and its last turn ends with a question, and paces its stream events when asked.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::mock_openai::{Failure, Received};

pub const INPUT_TOKENS: u64 = 31;
pub const CACHE_READ_TOKENS: u64 = 4;
pub const OUTPUT_TOKENS: u64 = 9;
pub const TEXT: &str = "Bonjour from Claude";

#[derive(Default)]
struct MockState {
    received: Mutex<Vec<Received>>,
    failures: Mutex<VecDeque<Failure>>,
    pace: Mutex<Duration>,
}

pub struct MockAnthropic {
    /// The `api_base` to configure: `http://127.0.0.1:PORT`.
    pub base_url: String,
    state: Arc<MockState>,
    server: tokio::task::JoinHandle<()>,
}

impl MockAnthropic {
    pub async fn start() -> MockAnthropic {
        let state = Arc::new(MockState::default());
        let app = Router::new().route("/v1/messages", post(messages)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockAnthropic { base_url: format!("http://{addr}"), state, server }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Answers the next request with this failure.
    pub fn fail_next(&self, failure: Failure) {
        self.state.failures.lock().unwrap().push_back(failure);
    }

    /// Waits this long before each stream event after the first.
    pub fn pace(&self, every: Duration) {
        *self.state.pace.lock().unwrap() = every;
    }
}

impl Drop for MockAnthropic {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Whether the request offers tools and its last turn ends with a question (text, not a tool
/// result): then the mock calls the first tool.
fn wants_tool(body: &Value) -> Option<String> {
    let tool = body["tools"].as_array()?.first()?["name"].as_str()?.to_owned();
    let last = body["messages"].as_array()?.last()?["content"].as_array()?.last()?.clone();
    (last["type"] == "text").then_some(tool)
}

async fn messages(State(state): State<Arc<MockState>>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    state.received.lock().unwrap().push(Received { headers, body: body.clone(), uri: "/v1/messages".into() });
    if let Some(f) = state.failures.lock().unwrap().pop_front() {
        let mut resp = (StatusCode::from_u16(f.status).unwrap(), axum::Json(f.body)).into_response();
        for (k, v) in f.headers {
            resp.headers_mut().insert(k, v.parse().unwrap());
        }
        return resp;
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let tool = wants_tool(&body);
    let usage = json!({"input_tokens": INPUT_TOKENS, "cache_read_input_tokens": CACHE_READ_TOKENS,
        "cache_creation_input_tokens": 0, "output_tokens": OUTPUT_TOKENS});
    if body["stream"] != json!(true) {
        let mut content = vec![json!({"type": "text", "text": TEXT})];
        if let Some(name) = &tool {
            content.push(json!({"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {"city": "Paris"}}));
        }
        return axum::Json(json!({
            "id": "msg_mock_1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null, "usage": usage,
        }))
        .into_response();
    }
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock_1", "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "usage": {"input_tokens": INPUT_TOKENS, "cache_read_input_tokens": CACHE_READ_TOKENS, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    for word in ["Bonjour", " from", " Claude"] {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}),
        ));
    }
    events.push(("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    if let Some(name) = &tool {
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {}}}),
        ));
        for part in ["{\"city\":", " \"Paris\"}"] {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        events.push(("content_block_stop", json!({"type": "content_block_stop", "index": 1})));
    }
    let stop = if tool.is_some() { "tool_use" } else { "end_turn" };
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": OUTPUT_TOKENS}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    let pace = *state.pace.lock().unwrap();
    let stream = futures_util::stream::unfold((events.into_iter(), true), move |(mut rest, first)| async move {
        let (name, data) = rest.next()?;
        if !first && !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        Some((Ok::<_, Infallible>(Bytes::from(format!("event: {name}\ndata: {data}\n\n"))), (rest, false)))
    });
    Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(stream)).unwrap()
}
