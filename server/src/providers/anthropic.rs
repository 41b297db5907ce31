//! Anthropic's Messages API (`anthropic/<model>`), translated from and to OpenAI chat.
//!
//! Requests: system and developer messages become `system`; user and assistant turns become
//! `messages` (consecutive turns of one role merged, as the API wants them alternating); text and
//! image parts become content blocks (data URLs as base64 sources, other URLs as url sources);
//! an assistant's tool calls become `tool_use` blocks and tool messages `tool_result` blocks in a
//! user turn; `tools`, `tool_choice` (with `parallel_tool_calls: false` as
//! `disable_parallel_tool_use`), `stop` → `stop_sequences`, `temperature`, `top_p`, `user` →
//! `metadata.user_id`; `max_tokens` defaults to the model's maximum output or 4,096 (the API
//! requires it). Answers and stream events (`message_start`, `content_block_start`,
//! `content_block_delta` with text and tool-input deltas, `message_delta` with the stop reason
//! and usage) come back as OpenAI completions and chunks; the last chunk carries usage.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::sse::{self, Translate};
use super::{ChunkStream, malformed, upstream_status_error};
use crate::chat::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, ContentPart, Delta, FunctionCall,
    FunctionCallDelta, PromptTokensDetails, ResponseMessage, Role, ToolCall, ToolCallDelta, Usage,
};
use crate::config::DeploymentConfig;
use crate::error::GatewayError;

const DEFAULT_BASE: &str = "https://api.anthropic.com";
const VERSION: &str = "2023-06-01";
/// What `max_tokens` is when neither the caller nor the model's info says.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn endpoint(deployment: &DeploymentConfig) -> String {
    let base = deployment.api_base.as_deref().unwrap_or(DEFAULT_BASE).trim_end_matches('/');
    if base.ends_with("/v1/messages") {
        base.to_owned()
    } else if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    }
}

fn invalid(message: String) -> GatewayError {
    GatewayError::invalid("messages", message)
}

/// An OpenAI image part as an Anthropic image block.
fn image_block(url: &str) -> Result<Value, GatewayError> {
    Ok(match super::data_url(url, "Anthropic")? {
        Some((media_type, data)) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    })
}

fn content_blocks(content: &Content) -> Result<Vec<Value>, GatewayError> {
    match content {
        Content::Text(t) => Ok(vec![json!({"type": "text", "text": t})]),
        Content::Parts(parts) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => Ok(json!({"type": "text", "text": text})),
                ContentPart::ImageUrl { image_url } => image_block(&image_url.url),
                ContentPart::InputAudio { .. } => {
                    Err(invalid("input_audio parts cannot be sent to Anthropic's Messages API".to_owned()))
                }
            })
            .collect(),
    }
}

/// Appends blocks to the conversation, merging into the last turn when it has the same role.
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    match turns.last_mut() {
        Some((r, b)) if *r == role => b.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

fn tool_choice(choice: &Value, parallel: Option<bool>) -> Option<Value> {
    let mut out = match choice {
        Value::String(s) if s == "auto" => json!({"type": "auto"}),
        Value::String(s) if s == "required" => json!({"type": "any"}),
        Value::String(s) if s == "none" => json!({"type": "none"}),
        Value::Object(o) => {
            let name = o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str)?;
            json!({"type": "tool", "name": name})
        }
        _ => return None,
    };
    if parallel == Some(false)
        && let Value::Object(m) = &mut out
        && m.get("type").and_then(Value::as_str) != Some("none")
    {
        m.insert("disable_parallel_tool_use".to_owned(), Value::Bool(true));
    }
    Some(out)
}

/// The Messages request for an OpenAI chat request.
pub fn request_body(deployment: &DeploymentConfig, request: &ChatRequest, stream: bool) -> Result<Value, GatewayError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in request.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                if let Some(c) = &m.content {
                    system.push(c.text());
                }
            }
            Role::User => {
                let blocks = match &m.content {
                    Some(c) => content_blocks(c)?,
                    None => return Err(invalid(format!("messages[{i}]: a user message needs content"))),
                };
                push_turn(&mut turns, "user", blocks);
            }
            Role::Assistant => {
                let mut blocks = match &m.content {
                    Some(c) if !c.text().is_empty() => content_blocks(c)?,
                    _ => Vec::new(),
                };
                for call in m.tool_calls.iter().flatten() {
                    let input: Value = if call.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&call.function.arguments).map_err(|e| {
                            invalid(format!("messages[{i}].tool_calls: arguments of {:?} are not JSON: {e}", call.id))
                        })?
                    };
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            Role::Tool => {
                let id = m
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| invalid(format!("messages[{i}]: a tool message needs tool_call_id")))?;
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                push_turn(&mut turns, "user", vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})]);
            }
        }
    }
    let max_tokens = request
        .max_tokens
        .or(request.max_completion_tokens)
        .map(u64::from)
        .or(deployment.max_output_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let mut body = Map::new();
    body.insert("model".to_owned(), Value::String(deployment.upstream_model.clone()));
    body.insert("max_tokens".to_owned(), json!(max_tokens));
    if !system.is_empty() {
        body.insert("system".to_owned(), Value::String(system.join("\n")));
    }
    body.insert(
        "messages".to_owned(),
        Value::Array(turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect()),
    );
    if let Some(stop) = &request.stop {
        body.insert("stop_sequences".to_owned(), json!(stop.to_vec()));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".to_owned(), json!(t));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".to_owned(), json!(p));
    }
    if let Some(tools) = &request.tools {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut tool = json!({
                    "name": t.function.name,
                    "input_schema": t.function.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(d) = &t.function.description {
                    tool["description"] = Value::String(d.clone());
                }
                tool
            })
            .collect();
        body.insert("tools".to_owned(), Value::Array(tools));
    }
    if let Some(choice) = request.tool_choice.as_ref().and_then(|c| tool_choice(c, request.parallel_tool_calls)) {
        body.insert("tool_choice".to_owned(), choice);
    }
    if let Some(user) = &request.user {
        body.insert("metadata".to_owned(), json!({"user_id": user}));
    }
    if stream {
        body.insert("stream".to_owned(), Value::Bool(true));
    }
    Ok(Value::Object(body))
}

fn post(http: &reqwest::Client, deployment: &DeploymentConfig, body: &Value) -> reqwest::RequestBuilder {
    let mut req = http.post(endpoint(deployment)).header("anthropic-version", VERSION).json(body);
    if let Some(key) = &deployment.api_key {
        req = req.header("x-api-key", key.expose());
    }
    req
}

/// Anthropic's stop reasons as OpenAI's finish reasons.
fn finish_reason(stop: &str) -> String {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
    .to_owned()
}

fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    // OpenAI's prompt_tokens count every input token, cached or written to the cache.
    let prompt = n("input_tokens") + cached + n("cache_creation_input_tokens");
    let mut usage = Usage::new(prompt, n("output_tokens"));
    if cached > 0 {
        usage.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: cached });
    }
    usage
}

/// An Anthropic error (HTTP status and body, or a stream's `error` event) as a gateway error.
fn error(deployment: &DeploymentConfig, status: u16, body: &Value, retry_after: Option<Duration>) -> GatewayError {
    let message = body.get("error").and_then(|e| e.get("message")).and_then(Value::as_str);
    let kind = body.get("error").and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or("");
    if status == 529 || kind == "overloaded_error" {
        return GatewayError {
            retry_after,
            ..GatewayError::unavailable(format!(
                "upstream anthropic (deployment {}) is overloaded (529): {}",
                deployment.id,
                message.unwrap_or("try again shortly")
            ))
            .with_reason("UPSTREAM_OVERLOADED")
        };
    }
    upstream_status_error(deployment, status, message, retry_after)
}

async fn error_from(deployment: &DeploymentConfig, resp: reqwest::Response) -> GatewayError {
    let (status, retry_after, bytes) = super::error_body(deployment, resp).await;
    let body = serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|_| json!({"error": {"message": String::from_utf8_lossy(&bytes)}}));
    error(deployment, status, &body, retry_after)
}

/// An Anthropic message as an OpenAI completion.
pub fn response(deployment: &DeploymentConfig, v: &Value) -> Result<ChatResponse, GatewayError> {
    let blocks = v.get("content").and_then(Value::as_array).ok_or_else(|| malformed(deployment, "no content"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(ToolCall {
                id: b.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: b.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    arguments: b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            }),
            _ => {}
        }
    }
    let stop = v.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn");
    Ok(ChatResponse {
        id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        object: "chat.completion".to_owned(),
        created: chrono::Utc::now().timestamp(),
        model: v.get("model").and_then(Value::as_str).unwrap_or(&deployment.upstream_model).to_owned(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content: (!text.is_empty() || calls.is_empty()).then_some(text),
                tool_calls: (!calls.is_empty()).then_some(calls),
                refusal: None,
            },
            finish_reason: Some(finish_reason(stop)),
        }],
        usage: v.get("usage").map(usage),
        system_fingerprint: None,
    })
}

pub async fn chat(
    http: &reqwest::Client,
    deployment: &DeploymentConfig,
    request: &ChatRequest,
) -> Result<ChatResponse, GatewayError> {
    let body = request_body(deployment, request, false)?;
    let v = super::send_json(post(http, deployment, &body), deployment, |r| error_from(deployment, r)).await?;
    response(deployment, &v)
}

/// Turns Anthropic stream events into OpenAI chunks.
#[derive(Debug, Default)]
pub struct EventTranslator {
    id: String,
    model: String,
    created: i64,
    input: Value,
    output_tokens: u64,
    /// Content block index → tool call index, for tool-input deltas.
    tools: HashMap<u64, u32>,
    finished: bool,
}

impl EventTranslator {
    fn chunk(&self, delta: Delta, finish: Option<String>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice { index: 0, delta, finish_reason: finish }],
            usage: None,
            system_fingerprint: None,
        }
    }

    /// The chunks one event's data makes (none for pings and block stops); an `error` event is
    /// an error.
    pub fn event(&mut self, deployment: &DeploymentConfig, data: &str) -> Result<Vec<ChatChunk>, GatewayError> {
        let v: Value = serde_json::from_str(data).map_err(|e| malformed(deployment, e))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        Ok(match kind {
            "message_start" => {
                let m = v.get("message").cloned().unwrap_or_default();
                self.id = m.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                self.model = m.get("model").and_then(Value::as_str).unwrap_or(&deployment.upstream_model).to_owned();
                self.created = chrono::Utc::now().timestamp();
                self.input = m.get("usage").cloned().unwrap_or_default();
                vec![self.chunk(
                    Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Default::default() },
                    None,
                )]
            }
            "content_block_start" => {
                let block = v.get("content_block").cloned().unwrap_or_default();
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return Ok(Vec::new());
                }
                let index = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                self.tools.insert(v.get("index").and_then(Value::as_u64).unwrap_or(0), index);
                let call = ToolCallDelta {
                    index,
                    id: block.get("id").and_then(Value::as_str).map(str::to_owned),
                    kind: Some("function".to_owned()),
                    function: Some(FunctionCallDelta {
                        name: block.get("name").and_then(Value::as_str).map(str::to_owned),
                        arguments: Some(String::new()),
                    }),
                };
                vec![self.chunk(Delta { tool_calls: Some(vec![call]), ..Default::default() }, None)]
            }
            "content_block_delta" => {
                let d = v.get("delta").cloned().unwrap_or_default();
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = d.get("text").and_then(Value::as_str).unwrap_or("").to_owned();
                        vec![self.chunk(Delta { content: Some(text), ..Default::default() }, None)]
                    }
                    Some("input_json_delta") => {
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let index = self.tools.get(&block).copied().unwrap_or(0);
                        let call = ToolCallDelta {
                            index,
                            function: Some(FunctionCallDelta {
                                name: None,
                                arguments: Some(d.get("partial_json").and_then(Value::as_str).unwrap_or("").to_owned()),
                            }),
                            ..Default::default()
                        };
                        vec![self.chunk(Delta { tool_calls: Some(vec![call]), ..Default::default() }, None)]
                    }
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                if let Some(n) = v.get("usage").and_then(|u| u.get("output_tokens")).and_then(Value::as_u64) {
                    self.output_tokens = n;
                }
                match v.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str) {
                    Some(stop) => vec![self.chunk(Delta::default(), Some(finish_reason(stop)))],
                    None => Vec::new(),
                }
            }
            "message_stop" => {
                self.finished = true;
                let mut u = self.input.clone();
                if let Value::Object(m) = &mut u {
                    m.insert("output_tokens".to_owned(), json!(self.output_tokens));
                }
                let mut last = self.chunk(Delta::default(), None);
                last.choices.clear();
                last.usage = Some(usage(&u));
                vec![last]
            }
            "error" => return Err(error(deployment, 500, &v, None)),
            _ => Vec::new(),
        })
    }
}

impl Translate for EventTranslator {
    fn event(&mut self, deployment: &DeploymentConfig, data: &str) -> Result<(Vec<ChatChunk>, bool), GatewayError> {
        let chunks = EventTranslator::event(self, deployment, data)?;
        Ok((chunks, self.finished))
    }
}

pub async fn chat_stream(
    http: &reqwest::Client,
    deployment: &DeploymentConfig,
    request: &ChatRequest,
) -> Result<ChunkStream, GatewayError> {
    let body = request_body(deployment, request, true)?;
    let timeout = deployment.stream_timeout.unwrap_or(deployment.timeout);
    let resp = sse::connect(post(http, deployment, &body), deployment, timeout, |r| error_from(deployment, r)).await?;
    Ok(sse::chunks(resp, deployment, timeout, EventTranslator::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> DeploymentConfig {
        DeploymentConfig {
            id: "claude-1".into(),
            model_name: "claude".into(),
            provider: super::super::ProviderKind::Anthropic,
            upstream_model: "claude-sonnet-4-5".into(),
            api_base: None,
            api_key: None,
            api_version: None,
            vertex_project: None,
            vertex_location: None,
            vertex_credentials: None,
            weight: 1,
            stream_timeout: None,
            rpm: None,
            tpm: None,
            input_cost_per_token: None,
            output_cost_per_token: None,
            timeout: Duration::from_secs(5),
            mock: Default::default(),
            max_output_tokens: None,
            access_groups: Vec::new(),
        }
    }

    #[test]
    fn a_stream_of_events_becomes_openai_chunks_with_usage_last() {
        let d = deployment();
        let mut t = EventTranslator::default();
        let events = [
            r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-sonnet-4-5","usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":17}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let chunks: Vec<ChatChunk> = events.iter().flat_map(|e| t.event(&d, e).unwrap()).collect();
        assert_eq!(chunks.len(), 7);
        assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(chunks[1].choices[0].delta.content.as_deref(), Some("Hi"));
        let start = &chunks[2].choices[0].delta.tool_calls.as_ref().unwrap()[0];
        assert_eq!((start.index, start.id.as_deref()), (0, Some("toolu_1")));
        let args: String = chunks[3..5]
            .iter()
            .map(|c| {
                c.choices[0].delta.tool_calls.as_ref().unwrap()[0].function.as_ref().unwrap().arguments.clone().unwrap()
            })
            .collect();
        assert_eq!(args, r#"{"city":"Paris"}"#);
        assert_eq!(chunks[5].choices[0].finish_reason.as_deref(), Some("tool_calls"));
        let u = chunks[6].usage.as_ref().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.cached_tokens()), (30, 17, 5));
        assert!(chunks[6].choices.is_empty());
        assert!(t.event(&d, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#).is_err());
    }
}
