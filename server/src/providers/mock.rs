//! The built-in `mock` provider: deterministic answers with no network, for demos, tests and
//! benchmarks.
//!
//! The answer is `mock_response` (from the request, else the deployment), or an echo of the
//! last user message. Usage is computed from the request with [`crate::tokens`]. A request
//! can ask for a failure with `mock_error` (an HTTP status, or `{"status", "message"}`) and
//! for latency with `mock_latency_ms`; the deployment's `mock_latency_ms` and
//! `mock_chunk_delay_ms` pace answers and streams.

use std::time::Duration;

use futures_util::stream;
use serde_json::Value;

use super::{ChunkStream, upstream_status_error};
use crate::chat::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Delta, FunctionCall, FunctionCallDelta, ResponseMessage,
    Role, ToolCall, ToolCallDelta, Usage,
};
use crate::config::DeploymentConfig;
use crate::error::GatewayError;
use crate::tokens;

struct Plan {
    content: Option<String>,
    tool_call: Option<ToolCall>,
    finish_reason: &'static str,
    usage: Usage,
    latency: Duration,
}

fn plan(deployment: &DeploymentConfig, request: &ChatRequest) -> Result<Plan, GatewayError> {
    if let Some(err) = request.extra.get("mock_error") {
        let (status, message) = match err {
            Value::Number(n) => (n.as_u64().unwrap_or(500), "mock error".to_owned()),
            Value::Object(o) => (
                o.get("status").and_then(Value::as_u64).unwrap_or(500),
                o.get("message").and_then(Value::as_str).unwrap_or("mock error").to_owned(),
            ),
            _ => (500, "mock error".to_owned()),
        };
        let status = u16::try_from(status).unwrap_or(500);
        return Err(upstream_status_error(deployment, status, Some(&message), Some(Duration::from_secs(1))));
    }
    let latency = request
        .extra
        .get("mock_latency_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .unwrap_or(deployment.mock.latency);

    let forced_tool = forced_tool(request);
    let text = request
        .extra
        .get("mock_response")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| deployment.mock.response.clone())
        .unwrap_or_else(|| {
            let last_user = request
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .and_then(|m| m.content.as_ref())
                .map(|c| c.text())
                .unwrap_or_default();
            format!("This is a mock response from {}. You said: {}", request.model, super::truncate(&last_user, 200))
        });

    let prompt = tokens::estimate_prompt(request);
    if let Some(name) = forced_tool {
        let call = ToolCall {
            id: format!("call_mock_{}", prompt),
            kind: "function".to_owned(),
            function: FunctionCall { name, arguments: "{}".to_owned() },
        };
        let completion = tokens::estimate_text(&call.function.name) + 1;
        return Ok(Plan {
            content: None,
            tool_call: Some(call),
            finish_reason: "tool_calls",
            usage: Usage::new(prompt, completion),
            latency,
        });
    }
    let (text, finish_reason) = match request.max_output_tokens() {
        Some(max) if tokens::estimate_text(&text) > u64::from(max) => {
            let keep: String =
                text.chars().take(usize::try_from(max).unwrap_or(usize::MAX).saturating_mul(4)).collect();
            (keep, "length")
        }
        _ => (text, "stop"),
    };
    // Every choice (`n`) is generated, and billed, in full.
    let completion = tokens::estimate_text(&text).saturating_mul(request.choices());
    Ok(Plan { content: Some(text), tool_call: None, finish_reason, usage: Usage::new(prompt, completion), latency })
}

/// The function the request forces, if `tool_choice` names one or is `required`.
fn forced_tool(request: &ChatRequest) -> Option<String> {
    let tools = request.tools.as_ref()?;
    match request.tool_choice.as_ref()? {
        Value::String(s) if s == "required" => tools.first().map(|t| t.function.name.clone()),
        Value::Object(o) => o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The choices a text answer comes in (`n`; a forced tool call is one).
fn choice_count(request: &ChatRequest) -> u32 {
    request.n.unwrap_or(1).max(1)
}

fn call_id(request: &ChatRequest) -> String {
    format!("chatcmpl-mock-{}", tokens::estimate_prompt(request))
}

pub async fn chat(deployment: &DeploymentConfig, request: &ChatRequest) -> Result<ChatResponse, GatewayError> {
    let plan = plan(deployment, request)?;
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    Ok(ChatResponse {
        id: call_id(request),
        object: "chat.completion".to_owned(),
        created: chrono::Utc::now().timestamp(),
        model: deployment.upstream_model.clone(),
        choices: (0..if plan.content.is_some() { choice_count(request) } else { 1 })
            .map(|index| Choice {
                index,
                message: ResponseMessage {
                    role: Role::Assistant,
                    content: plan.content.clone(),
                    tool_calls: plan.tool_call.clone().map(|c| vec![c]),
                    refusal: None,
                },
                finish_reason: Some(plan.finish_reason.to_owned()),
            })
            .collect(),
        usage: Some(plan.usage),
        system_fingerprint: None,
    })
}

pub async fn chat_stream(deployment: &DeploymentConfig, request: &ChatRequest) -> Result<ChunkStream, GatewayError> {
    let plan = plan(deployment, request)?;
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    let id = call_id(request);
    let created = chrono::Utc::now().timestamp();
    let model = deployment.upstream_model.clone();
    let n = if plan.content.is_some() { choice_count(request) } else { 1 };
    let chunk_of = |index: u32, delta: Delta, finish: Option<&str>| ChatChunk {
        id: id.clone(),
        object: "chat.completion.chunk".to_owned(),
        created,
        model: model.clone(),
        choices: vec![ChunkChoice { index, delta, finish_reason: finish.map(str::to_owned) }],
        usage: None,
        system_fingerprint: None,
    };
    let chunk = |delta: Delta, finish: Option<&str>| chunk_of(0, delta, finish);
    let mut chunks: Vec<ChatChunk> = (0..n)
        .map(|i| {
            chunk_of(i, Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Default::default() }, None)
        })
        .collect();
    if let Some(text) = &plan.content {
        // One chunk per word and choice, keeping the spaces, so each choice's joined deltas
        // equal the content.
        let mut words = Vec::new();
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if c == ' ' && i > start {
                words.push(&text[start..i]);
                start = i;
            }
        }
        if start < text.len() {
            words.push(&text[start..]);
        }
        for word in words {
            for i in 0..n {
                chunks.push(chunk_of(i, Delta { content: Some(word.to_owned()), ..Default::default() }, None));
            }
        }
    }
    if let Some(call) = &plan.tool_call {
        chunks.push(chunk(
            Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index: 0,
                    id: Some(call.id.clone()),
                    kind: Some("function".to_owned()),
                    function: Some(FunctionCallDelta {
                        name: Some(call.function.name.clone()),
                        arguments: Some(call.function.arguments.clone()),
                    }),
                }]),
                ..Default::default()
            },
            None,
        ));
    }
    for i in 0..n {
        chunks.push(chunk_of(i, Delta::default(), Some(plan.finish_reason)));
    }
    let mut last = chunk(Delta::default(), None);
    last.choices.clear();
    last.usage = Some(plan.usage);
    chunks.push(last);

    let delay = deployment.mock.chunk_delay;
    let s = stream::unfold((chunks.into_iter(), true), move |(mut it, first)| async move {
        let next = it.next()?;
        if !first && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok(next), (it, false)))
    });
    Ok(Box::pin(s))
}

/// Deterministic embeddings: eight numbers from each text's SHA-256.
pub fn embeddings(
    deployment: &DeploymentConfig,
    request: &crate::embeddings::EmbeddingRequest,
) -> Result<serde_json::Value, GatewayError> {
    use sha2::Digest as _;
    let texts = request.texts("mock")?;
    let vectors = texts
        .iter()
        .map(|t| {
            let digest = sha2::Sha256::digest(t.as_bytes());
            serde_json::Value::Array(
                digest.iter().take(8).map(|b| serde_json::json!((f64::from(*b) / 255.0 * 2.0 - 1.0))).collect(),
            )
        })
        .collect();
    Ok(crate::embeddings::openai_shape(&deployment.upstream_model, vectors, request.estimate().0))
}
