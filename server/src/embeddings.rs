//! Embedding requests (`POST /v1/embeddings`, OpenAI's shape) and their translation for each
//! provider that has embeddings: OpenAI and Azure (forwarded as they are), Gemini
//! (`batchEmbedContents`), Vertex AI (`predict`) and the built-in mock. Answers come back in
//! OpenAI's shape; where a provider reports no token count, the prompt is estimated.

use serde_json::{Map, Value, json};

use crate::error::GatewayError;

/// What is embedded: texts, or (OpenAI only) token arrays.
#[derive(Debug, Clone)]
pub enum Input {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u64>>),
}

#[derive(Debug, Clone)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: Input,
    pub dimensions: Option<u64>,
    pub user: Option<String>,
    pub tags: Vec<String>,
    /// The body as sent, for providers that take OpenAI's shape.
    pub raw: Map<String, Value>,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid("input", message)
}

/// The most inputs one request may embed: the limit OpenAI documents for the API this route
/// speaks ("any array must be 2048 dimensions or less"). A provider with a smaller batch limit
/// refuses more itself. Their total size needs no cap of its own: the request body limit
/// (`general_settings.max_request_size_mb`) already bounds it.
pub const MAX_INPUTS: usize = 2048;

impl EmbeddingRequest {
    pub fn from_json_object(mut body: Map<String, Value>) -> Result<Self, GatewayError> {
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
            _ => return Err(GatewayError::invalid("model", "model: required, the name of an embedding model")),
        };
        let input = match body.get("input") {
            Some(Value::String(s)) => Input::Texts(vec![s.clone()]),
            Some(Value::Array(items)) if items.is_empty() => return Err(invalid("input: must not be empty")),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                Input::Texts(items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            }
            Some(Value::Array(items)) if items.iter().all(Value::is_u64) => {
                Input::Tokens(vec![items.iter().filter_map(Value::as_u64).collect()])
            }
            Some(Value::Array(items))
                if items.iter().all(|i| i.as_array().is_some_and(|a| a.iter().all(Value::is_u64))) =>
            {
                Input::Tokens(
                    items
                        .iter()
                        .map(|i| i.as_array().into_iter().flatten().filter_map(Value::as_u64).collect())
                        .collect(),
                )
            }
            _ => {
                return Err(invalid(
                    "input: a string, a list of strings, a list of token ids, or a list of token id lists",
                ));
            }
        };
        let count = match &input {
            Input::Texts(t) => t.len(),
            Input::Tokens(t) => t.len(),
        };
        if count > MAX_INPUTS {
            return Err(invalid(format!(
                "input: {count} inputs is more than the {MAX_INPUTS} one request may embed; send them in batches"
            )));
        }
        let dimensions = match body.get("dimensions") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|d| *d > 0)
                    .ok_or_else(|| GatewayError::invalid("dimensions", "dimensions: a positive whole number"))?,
            ),
        };
        let user = body.get("user").and_then(Value::as_str).map(str::to_owned);
        let tags = crate::governance::tags::from_request(&body, None)?;
        body.remove("tags");
        if let Some(Value::Object(meta)) = body.get_mut("metadata") {
            meta.remove("tags");
            if meta.is_empty() {
                body.remove("metadata");
            }
        }
        Ok(Self { model, input, dimensions, user, tags, raw: body })
    }

    /// The texts, or an error naming the provider that cannot take token ids.
    pub fn texts(&self, provider: &str) -> Result<&[String], GatewayError> {
        match &self.input {
            Input::Texts(t) => Ok(t),
            Input::Tokens(_) => Err(invalid(format!("input: provider {provider} embeds text only, not token ids"))),
        }
    }

    /// A token estimate (and, as the bound, every byte a token).
    pub fn estimate(&self) -> (u64, u64) {
        match &self.input {
            Input::Texts(t) => {
                (t.iter().map(|s| crate::tokens::estimate_text(s)).sum(), t.iter().map(|s| s.len() as u64).sum())
            }
            Input::Tokens(t) => {
                let n = t.iter().map(|v| v.len() as u64).sum();
                (n, n)
            }
        }
    }
}

/// OpenAI's list shape for embedding vectors.
pub fn openai_shape(model: &str, vectors: Vec<Value>, prompt_tokens: u64) -> Value {
    json!({
        "object": "list",
        "data": vectors.into_iter().enumerate().map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v})).collect::<Vec<_>>(),
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}
