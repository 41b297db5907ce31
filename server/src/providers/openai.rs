//! OpenAI and any OpenAI-compatible upstream (`openai/<model>` with an optional `api_base`), and
//! Azure OpenAI (`azure/<deployment>`: the deployment in the path, `api-version` in the query,
//! the key in the `api-key` header).
//!
//! The request is forwarded as OpenAI JSON with the model renamed to the deployment's
//! upstream model; unknown parameters pass through. Streams always ask for
//! `stream_options.include_usage`, so the last chunk carries the usage to settle on.

use serde_json::{Value, json};

use super::sse::{self, Translate};
use super::{ChunkStream, ProviderKind, malformed, upstream_status_error};
use crate::chat::{ChatChunk, ChatRequest, ChatResponse};
use crate::config::DeploymentConfig;
use crate::error::GatewayError;

const DEFAULT_BASE: &str = "https://api.openai.com/v1";

/// Azure's API version when the deployment names none.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

fn endpoint(deployment: &DeploymentConfig, legacy: bool) -> String {
    let base = deployment.api_base.as_deref().unwrap_or(DEFAULT_BASE).trim_end_matches('/');
    let path = if legacy { "completions" } else { "chat/completions" };
    if deployment.provider == ProviderKind::Azure {
        let version = deployment.api_version.as_deref().unwrap_or(DEFAULT_AZURE_API_VERSION);
        return format!("{base}/openai/deployments/{}/{path}?api-version={version}", deployment.upstream_model);
    }
    format!("{base}/{path}")
}

fn body(deployment: &DeploymentConfig, request: &ChatRequest, stream: bool) -> Value {
    let mut body = request.to_json();
    if let Value::Object(map) = &mut body {
        if let Some(prompt) = &request.legacy_prompt {
            map.remove("messages");
            map.insert("prompt".to_owned(), Value::String(prompt.clone()));
        }
        map.insert("model".to_owned(), Value::String(deployment.upstream_model.clone()));
        if stream {
            map.insert("stream".to_owned(), Value::Bool(true));
            map.insert("stream_options".to_owned(), json!({"include_usage": true}));
        } else {
            map.remove("stream");
            map.remove("stream_options");
        }
    }
    body
}

fn post(http: &reqwest::Client, deployment: &DeploymentConfig, body: &Value, legacy: bool) -> reqwest::RequestBuilder {
    let mut req = http.post(endpoint(deployment, legacy)).json(body);
    if let Some(key) = &deployment.api_key {
        req = match deployment.provider {
            ProviderKind::Azure => req.header("api-key", key.expose()),
            _ => req.bearer_auth(key.expose()),
        };
    }
    req
}

async fn error_from(deployment: &DeploymentConfig, resp: reqwest::Response) -> GatewayError {
    let (status, retry_after, bytes) = super::error_body(deployment, resp).await;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    upstream_status_error(deployment, status, Some(&super::error_message(&body, &bytes)), retry_after)
}

pub async fn chat(
    http: &reqwest::Client,
    deployment: &DeploymentConfig,
    request: &ChatRequest,
) -> Result<ChatResponse, GatewayError> {
    let legacy = request.legacy_prompt.is_some();
    let send = post(http, deployment, &body(deployment, request, false), legacy);
    let v = super::send_json(send, deployment, |r| error_from(deployment, r)).await?;
    let v = if legacy { completion_as_chat(v, false) } else { v };
    serde_json::from_value(v).map_err(|e| malformed(deployment, e))
}

/// A `text_completion` (or one of its stream chunks) in chat's shape: each choice's `text`
/// becomes the message (or the delta).
fn completion_as_chat(mut v: Value, chunk: bool) -> Value {
    let object = if chunk { "chat.completion.chunk" } else { "chat.completion" };
    if let Value::Object(m) = &mut v {
        m.insert("object".to_owned(), json!(object));
        if let Some(Value::Array(choices)) = m.get_mut("choices") {
            for c in choices.iter_mut() {
                let text = c.get("text").cloned().unwrap_or(json!(""));
                let body = json!({"role": "assistant", "content": text});
                if let Value::Object(cm) = c {
                    cm.remove("text");
                    cm.remove("logprobs");
                    cm.insert(if chunk { "delta" } else { "message" }.to_owned(), body);
                }
            }
        }
    }
    v
}

/// OpenAI's stream: chunks as they are (legacy completions' turned into chat's), until
/// `[DONE]`.
struct Events {
    legacy: bool,
}

impl Translate for Events {
    fn event(&mut self, deployment: &DeploymentConfig, data: &str) -> Result<(Vec<ChatChunk>, bool), GatewayError> {
        if data.trim() == "[DONE]" {
            return Ok((Vec::new(), true));
        }
        let chunk = if self.legacy {
            serde_json::from_str::<Value>(data).and_then(|v| serde_json::from_value(completion_as_chat(v, true)))
        } else {
            serde_json::from_str::<ChatChunk>(data)
        };
        Ok((vec![chunk.map_err(|e| malformed(deployment, e))?], false))
    }
}

pub async fn chat_stream(
    http: &reqwest::Client,
    deployment: &DeploymentConfig,
    request: &ChatRequest,
) -> Result<ChunkStream, GatewayError> {
    let timeout = deployment.stream_timeout.unwrap_or(deployment.timeout);
    let legacy = request.legacy_prompt.is_some();
    let send = post(http, deployment, &body(deployment, request, true), legacy);
    let resp = sse::connect(send, deployment, timeout, |r| error_from(deployment, r)).await?;
    Ok(sse::chunks(resp, deployment, timeout, Events { legacy }))
}

/// Embeddings, forwarded in OpenAI's shape with the model renamed.
pub async fn embeddings(
    http: &reqwest::Client,
    deployment: &DeploymentConfig,
    request: &crate::embeddings::EmbeddingRequest,
) -> Result<Value, GatewayError> {
    let base = deployment.api_base.as_deref().unwrap_or(DEFAULT_BASE).trim_end_matches('/');
    let url = if deployment.provider == ProviderKind::Azure {
        let version = deployment.api_version.as_deref().unwrap_or(DEFAULT_AZURE_API_VERSION);
        format!("{base}/openai/deployments/{}/embeddings?api-version={version}", deployment.upstream_model)
    } else {
        format!("{base}/embeddings")
    };
    let mut body = request.raw.clone();
    body.insert("model".to_owned(), Value::String(deployment.upstream_model.clone()));
    let mut req = http.post(url).json(&body);
    if let Some(key) = &deployment.api_key {
        req = match deployment.provider {
            ProviderKind::Azure => req.header("api-key", key.expose()),
            _ => req.bearer_auth(key.expose()),
        };
    }
    let v = super::send_json(req, deployment, |r| error_from(deployment, r)).await?;
    if !v.get("data").is_some_and(Value::is_array) {
        return Err(malformed(deployment, "no data"));
    }
    Ok(v)
}
