//! Google's Gemini API (`gemini/<model>`, an API key in `x-goog-api-key`): generateContent and
//! streamGenerateContent (`alt=sse`), translated from and to OpenAI chat.
//!
//! System and developer messages become `systemInstruction`; user and assistant turns become
//! `contents` with roles `user` and `model` (consecutive turns of one role merged); text parts,
//! images (data URLs as `inline_data`, other URLs as `file_data`), an assistant's tool calls as
//! `functionCall` parts and tool messages as `functionResponse` parts (named after the call they
//! answer); `tools` as `functionDeclarations` and `tool_choice` as `toolConfig`; sampling settings
//! in `generationConfig`. `usageMetadata` becomes `usage` (thinking tokens count as output).

use serde_json::{Map, Value, json};

use super::sse::{self, Translate};
use super::{ChunkStream, malformed, upstream_status_error};
use crate::chat::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, ContentPart, Delta, FunctionCall,
    FunctionCallDelta, PromptTokensDetails, ResponseMessage, Role, ToolCall, ToolCallDelta, Usage,
};
use crate::config::DeploymentConfig;
use crate::error::GatewayError;

const DEFAULT_BASE: &str = "https://generativelanguage.googleapis.com/v1beta";

fn endpoint(deployment: &DeploymentConfig, stream: bool) -> String {
    let base = deployment.api_base.as_deref().unwrap_or(DEFAULT_BASE).trim_end_matches('/');
    let model = &deployment.upstream_model;
    if stream {
        format!("{base}/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("{base}/models/{model}:generateContent")
    }
}

fn invalid(message: String) -> GatewayError {
    GatewayError::invalid("messages", message)
}

fn image_part(url: &str) -> Result<Value, GatewayError> {
    if let Some((mime, data)) = super::data_url(url, "Gemini")? {
        return Ok(json!({"inline_data": {"mime_type": mime, "data": data}}));
    }
    let mime = match url.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        _ => "image/jpeg",
    };
    Ok(json!({"file_data": {"mime_type": mime, "file_uri": url}}))
}

fn parts(content: &Content) -> Result<Vec<Value>, GatewayError> {
    match content {
        Content::Text(t) => Ok(vec![json!({"text": t})]),
        Content::Parts(ps) => ps
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => Ok(json!({"text": text})),
                ContentPart::ImageUrl { image_url } => image_part(&image_url.url),
                ContentPart::InputAudio { input_audio } => Ok(json!({"inline_data": {
                    "mime_type": format!("audio/{}", input_audio.format), "data": input_audio.data}})),
            })
            .collect(),
    }
}

fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, new: Vec<Value>) {
    match turns.last_mut() {
        Some((r, p)) if *r == role => p.extend(new),
        _ => turns.push((role, new)),
    }
}

/// The generateContent request for an OpenAI chat request.
pub fn request_body(request: &ChatRequest) -> Result<Value, GatewayError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Tool call id → function name, for the responses that answer them.
    let mut names = std::collections::HashMap::new();
    for (i, m) in request.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                if let Some(c) = &m.content {
                    system.push(json!({"text": c.text()}));
                }
            }
            Role::User => {
                let c = m
                    .content
                    .as_ref()
                    .ok_or_else(|| invalid(format!("messages[{i}]: a user message needs content")))?;
                push_turn(&mut turns, "user", parts(c)?);
            }
            Role::Assistant => {
                let mut p = match &m.content {
                    Some(c) if !c.text().is_empty() => parts(c)?,
                    _ => Vec::new(),
                };
                for call in m.tool_calls.iter().flatten() {
                    let args: Value = if call.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&call.function.arguments).map_err(|e| {
                            invalid(format!("messages[{i}].tool_calls: arguments of {:?} are not JSON: {e}", call.id))
                        })?
                    };
                    names.insert(call.id.clone(), call.function.name.clone());
                    p.push(json!({"functionCall": {"name": call.function.name, "args": args}}));
                }
                push_turn(&mut turns, "model", p);
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or("");
                let name = names.get(id).cloned().ok_or_else(|| {
                    invalid(format!("messages[{i}]: tool_call_id {id:?} answers no earlier tool call"))
                })?;
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": text}),
                };
                push_turn(&mut turns, "user", vec![json!({"functionResponse": {"name": name, "response": response}})]);
            }
        }
    }
    let mut body = Map::new();
    body.insert(
        "contents".to_owned(),
        Value::Array(turns.into_iter().map(|(role, p)| json!({"role": role, "parts": p})).collect()),
    );
    if !system.is_empty() {
        body.insert("systemInstruction".to_owned(), json!({"parts": system}));
    }
    let mut config = Map::new();
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            config.insert(k.to_owned(), v);
        }
    };
    set("temperature", request.temperature.map(|v| json!(v)));
    set("topP", request.top_p.map(|v| json!(v)));
    set("maxOutputTokens", request.max_tokens.or(request.max_completion_tokens).map(|v| json!(v)));
    set("stopSequences", request.stop.as_ref().map(|s| json!(s.to_vec())));
    set("candidateCount", request.n.map(|v| json!(v)));
    set("presencePenalty", request.presence_penalty.map(|v| json!(v)));
    set("frequencyPenalty", request.frequency_penalty.map(|v| json!(v)));
    set("seed", request.seed.map(|v| json!(v)));
    if request.response_format.as_ref().and_then(|f| f.get("type")).and_then(Value::as_str).is_some_and(|t| t != "text")
    {
        set("responseMimeType", Some(json!("application/json")));
    }
    if !config.is_empty() {
        body.insert("generationConfig".to_owned(), Value::Object(config));
    }
    if let Some(tools) = &request.tools {
        let decls: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.function.name});
                if let Some(desc) = &t.function.description {
                    d["description"] = json!(desc);
                }
                if let Some(p) = &t.function.parameters {
                    d["parameters"] = gemini_schema(p);
                }
                d
            })
            .collect();
        body.insert("tools".to_owned(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(choice) = &request.tool_choice {
        let config = match choice {
            Value::String(s) if s == "none" => Some(json!({"mode": "NONE"})),
            Value::String(s) if s == "required" => Some(json!({"mode": "ANY"})),
            Value::String(s) if s == "auto" => Some(json!({"mode": "AUTO"})),
            Value::Object(o) => o
                .get("function")
                .and_then(|f| f.get("name"))
                .map(|name| json!({"mode": "ANY", "allowedFunctionNames": [name]})),
            _ => None,
        };
        if let Some(c) = config {
            body.insert("toolConfig".to_owned(), json!({"functionCallingConfig": c}));
        }
    }
    Ok(Value::Object(body))
}

/// Where a call goes and how it authenticates: Gemini's API key, or Vertex AI's token.
pub struct Target {
    pub url: String,
    pub auth: Option<(&'static str, String)>,
}

/// A JSON schema without the keys Gemini's schema subset refuses (`additionalProperties`,
/// `$schema`, `strict`), recursively.
fn gemini_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "additionalProperties" | "$schema" | "strict"))
                .map(|(k, v)| (k.clone(), gemini_schema(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(gemini_schema).collect()),
        other => other.clone(),
    }
}

/// A tool call id unique across responses (Gemini gives none; other providers in the same
/// model group need them unique).
fn call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

fn post(http: &reqwest::Client, target: &Target, body: &Value) -> reqwest::RequestBuilder {
    let mut req = http.post(&target.url).json(body);
    if let Some((name, value)) = &target.auth {
        req = req.header(*name, value);
    }
    req
}

fn gemini_target(deployment: &DeploymentConfig, stream: bool) -> Target {
    Target {
        url: endpoint(deployment, stream),
        auth: deployment.api_key.as_ref().map(|k| ("x-goog-api-key", k.expose().to_owned())),
    }
}

fn finish_reason(reason: &str, called: bool) -> String {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if called => "tool_calls",
        _ => "stop",
    }
    .to_owned()
}

fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut usage = Usage::new(n("promptTokenCount"), n("candidatesTokenCount") + n("thoughtsTokenCount"));
    let cached = n("cachedContentTokenCount");
    if cached > 0 {
        usage.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: cached });
    }
    usage
}

async fn error_from(deployment: &DeploymentConfig, resp: reqwest::Response) -> GatewayError {
    let (status, retry_after, bytes) = super::error_body(deployment, resp).await;
    // Gemini's errors are a list of one object on the streaming endpoint, an object otherwise.
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let v = v.as_array().and_then(|a| a.first().cloned()).unwrap_or(v);
    upstream_status_error(deployment, status, Some(&super::error_message(&v, &bytes)), retry_after)
}

/// The text and function calls of a candidate's parts.
fn candidate_parts(c: &Value) -> (String, Vec<(String, String)>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in c.get("content").and_then(|c| c.get("parts")).and_then(Value::as_array).into_iter().flatten() {
        if p.get("thought") == Some(&Value::Bool(true)) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(f) = p.get("functionCall") {
            let name = f.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            calls.push((name, f.get("args").map_or_else(|| "{}".to_owned(), Value::to_string)));
        }
    }
    (text, calls)
}

/// A generateContent answer as an OpenAI completion.
pub fn response(deployment: &DeploymentConfig, v: &Value) -> Result<ChatResponse, GatewayError> {
    let candidates = v.get("candidates").and_then(Value::as_array).ok_or_else(|| {
        let blocked = v.get("promptFeedback").and_then(|f| f.get("blockReason")).and_then(Value::as_str);
        match blocked {
            Some(reason) => GatewayError::invalid(
                "messages",
                format!(
                    "upstream {} (deployment {}) blocked the prompt: {reason} (content_policy)",
                    deployment.provider.as_str(),
                    deployment.id
                ),
            ),
            None => malformed(deployment, "no candidates"),
        }
    })?;
    let mut choices = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let (text, calls) = candidate_parts(c);
        let calls: Vec<ToolCall> = calls
            .into_iter()
            .map(|(name, arguments)| ToolCall {
                id: call_id(),
                kind: "function".to_owned(),
                function: FunctionCall { name, arguments },
            })
            .collect();
        let reason = c.get("finishReason").and_then(Value::as_str).unwrap_or("STOP");
        choices.push(Choice {
            index: u32::try_from(i).unwrap_or(0),
            finish_reason: Some(finish_reason(reason, !calls.is_empty())),
            message: ResponseMessage {
                role: Role::Assistant,
                content: (!text.is_empty() || calls.is_empty()).then_some(text),
                tool_calls: (!calls.is_empty()).then_some(calls),
                refusal: None,
            },
        });
    }
    Ok(ChatResponse {
        id: v
            .get("responseId")
            .and_then(Value::as_str)
            .map_or_else(|| format!("gemini-{}", uuid::Uuid::new_v4().simple()), str::to_owned),
        object: "chat.completion".to_owned(),
        created: chrono::Utc::now().timestamp(),
        model: v.get("modelVersion").and_then(Value::as_str).unwrap_or(&deployment.upstream_model).to_owned(),
        choices,
        usage: v.get("usageMetadata").map(usage),
        system_fingerprint: None,
    })
}

pub async fn chat(
    http: &reqwest::Client,
    deployment: &DeploymentConfig,
    request: &ChatRequest,
) -> Result<ChatResponse, GatewayError> {
    chat_at(http, deployment, request, &gemini_target(deployment, false)).await
}

/// A whole generateContent call to `target` (Gemini's or Vertex AI's).
pub async fn chat_at(
    http: &reqwest::Client,
    deployment: &DeploymentConfig,
    request: &ChatRequest,
    target: &Target,
) -> Result<ChatResponse, GatewayError> {
    let body = request_body(request)?;
    let v = super::send_json(post(http, target, &body), deployment, |r| error_from(deployment, r)).await?;
    response(deployment, &v)
}

/// Turns streamed generateContent answers into OpenAI chunks.
#[derive(Debug, Default)]
pub struct ChunkTranslator {
    id: String,
    created: i64,
    started: bool,
    calls: u32,
    usage: Option<Usage>,
}

impl ChunkTranslator {
    pub fn chunk(&mut self, deployment: &DeploymentConfig, data: &str) -> Result<Vec<ChatChunk>, GatewayError> {
        let v: Value = serde_json::from_str(data).map_err(|e| malformed(deployment, e))?;
        if let Some(e) = v.get("error") {
            let message = e.get("message").and_then(Value::as_str);
            let status = e.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()).unwrap_or(500);
            return Err(upstream_status_error(deployment, status, message, None));
        }
        if !self.started {
            self.started = true;
            self.created = chrono::Utc::now().timestamp();
            self.id = v
                .get("responseId")
                .and_then(Value::as_str)
                .map_or_else(|| format!("gemini-{}", uuid::Uuid::new_v4().simple()), str::to_owned);
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(usage(u));
        }
        let model = v.get("modelVersion").and_then(Value::as_str).unwrap_or(&deployment.upstream_model).to_owned();
        let mut out = Vec::new();
        for (i, c) in v.get("candidates").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let (text, calls) = candidate_parts(c);
            let index = u32::try_from(i).unwrap_or(0);
            let mut delta = Delta::default();
            if !text.is_empty() {
                delta.content = Some(text);
            }
            if !calls.is_empty() {
                let deltas = calls
                    .into_iter()
                    .map(|(name, arguments)| {
                        let n = self.calls;
                        self.calls += 1;
                        ToolCallDelta {
                            index: n,
                            id: Some(call_id()),
                            kind: Some("function".to_owned()),
                            function: Some(FunctionCallDelta { name: Some(name), arguments: Some(arguments) }),
                        }
                    })
                    .collect();
                delta.tool_calls = Some(deltas);
            }
            let finish = c.get("finishReason").and_then(Value::as_str).map(|r| finish_reason(r, self.calls > 0));
            if delta.content.is_none() && delta.tool_calls.is_none() && finish.is_none() {
                continue;
            }
            out.push(ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".to_owned(),
                created: self.created,
                model: model.clone(),
                choices: vec![ChunkChoice { index, delta, finish_reason: finish }],
                usage: None,
                system_fingerprint: None,
            });
        }
        Ok(out)
    }

    /// The usage chunk, once the stream has ended.
    pub fn finish(&mut self, deployment: &DeploymentConfig) -> Option<ChatChunk> {
        let usage = self.usage.take()?;
        Some(ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: deployment.upstream_model.clone(),
            choices: Vec::new(),
            usage: Some(usage),
            system_fingerprint: None,
        })
    }
}

pub async fn chat_stream(
    http: &reqwest::Client,
    deployment: &DeploymentConfig,
    request: &ChatRequest,
) -> Result<ChunkStream, GatewayError> {
    stream_at(http, deployment, request, &gemini_target(deployment, true)).await
}

impl Translate for ChunkTranslator {
    fn event(&mut self, deployment: &DeploymentConfig, data: &str) -> Result<(Vec<ChatChunk>, bool), GatewayError> {
        Ok((self.chunk(deployment, data)?, false))
    }

    fn end(&mut self, deployment: &DeploymentConfig) -> Vec<ChatChunk> {
        self.finish(deployment).into_iter().collect()
    }
}

/// A streamGenerateContent call to `target` (Gemini's or Vertex AI's).
pub async fn stream_at(
    http: &reqwest::Client,
    deployment: &DeploymentConfig,
    request: &ChatRequest,
    target: &Target,
) -> Result<ChunkStream, GatewayError> {
    let body = request_body(request)?;
    let timeout = deployment.stream_timeout.unwrap_or(deployment.timeout);
    let resp = sse::connect(post(http, target, &body), deployment, timeout, |r| error_from(deployment, r)).await?;
    Ok(sse::chunks(resp, deployment, timeout, ChunkTranslator::default()))
}

/// Embeddings by `batchEmbedContents` (texts only); Gemini reports no token count.
pub async fn embeddings(
    http: &reqwest::Client,
    deployment: &DeploymentConfig,
    request: &crate::embeddings::EmbeddingRequest,
) -> Result<Value, GatewayError> {
    let texts = request.texts("gemini")?;
    let base = deployment.api_base.as_deref().unwrap_or(DEFAULT_BASE).trim_end_matches('/');
    let model = &deployment.upstream_model;
    let requests: Vec<Value> = texts
        .iter()
        .map(|t| {
            let mut r = json!({"model": format!("models/{model}"), "content": {"parts": [{"text": t}]}});
            if let Some(d) = request.dimensions {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    let target = Target {
        url: format!("{base}/models/{model}:batchEmbedContents"),
        auth: deployment.api_key.as_ref().map(|k| ("x-goog-api-key", k.expose().to_owned())),
    };
    let v = call_json(http, deployment, &target, &json!({"requests": requests})).await?;
    let vectors: Vec<Value> = v
        .get("embeddings")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(deployment, "no embeddings"))?
        .iter()
        .map(|e| e.get("values").cloned().unwrap_or_default())
        .collect();
    Ok(crate::embeddings::openai_shape(model, vectors, request.estimate().0))
}

/// One JSON call to `target` (errors mapped like generateContent's).
pub async fn call_json(
    http: &reqwest::Client,
    deployment: &DeploymentConfig,
    target: &Target,
    body: &Value,
) -> Result<Value, GatewayError> {
    super::send_json(post(http, target, body), deployment, |r| error_from(deployment, r)).await
}
