//! The chat completion types every surface converts to and from.
//!
//! They follow OpenAI's Chat Completions wire format exactly (so the HTTP shim and the
//! OpenAI-compatible provider serialize them directly); the gRPC API converts its typed
//! messages into them. Parameters the gateway does not model travel in `extra`, untouched.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// A chat completion request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Every other field of the request, passed to OpenAI-compatible upstreams unchanged.
    #[serde(skip)]
    pub extra: Map<String, Value>,
    /// Tags the request names (`tags`, `metadata.tags`, the tags header); taken out of the
    /// body so they never reach the upstream.
    #[serde(skip)]
    pub tags: Vec<String>,
    /// Set for a legacy text completion (`/v1/completions`): the prompt, which OpenAI-shaped
    /// upstreams receive at their own completions endpoint (other providers get it as the one
    /// user message).
    #[serde(skip)]
    pub legacy_prompt: Option<String>,
}

/// The most choices (`n`) one call may ask for (OpenAI's own maximum).
pub const MAX_CHOICES: u32 = 128;

/// The most stop sequences one call may give: OpenAI documents "up to 4 sequences".
pub const MAX_STOP_SEQUENCES: usize = 4;

/// The most tools one call may offer: OpenAI documents "a max of 128 functions".
pub const MAX_TOOLS: usize = 128;

/// The names of [`ChatRequest`]'s typed fields; everything else goes to `extra`.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

/// One message of the conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// Message content: plain text or typed parts.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Content::Text(s)),
            Value::Array(items) => {
                let mut parts = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let part =
                        serde_json::from_value(item).map_err(|e| D::Error::custom(format!("content part {i}: {e}")))?;
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
            other => Err(D::Error::custom(format!(
                "expected a string or a list of content parts, found {}",
                json_type(&other)
            ))),
        }
    }
}

impl Content {
    /// The text of the content (parts' text joined), for counting and echoing.
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
    InputAudio { input_audio: InputAudio },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputAudio {
    pub data: String,
    pub format: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionDef,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// Token usage as OpenAI reports it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            ..Default::default()
        }
    }

    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
    }
}

/// A whole chat completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

fn completion_object() -> String {
    "chat.completion".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The assistant's message in a response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseMessage {
    #[serde(default = "assistant_role")]
    pub role: Role,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

fn assistant_role() -> Role {
    Role::Assistant
}

/// One streamed chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatChunk {
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    pub created: i64,
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl ChatRequest {
    /// Parses an OpenAI request body: typed fields are checked with the failing field named
    /// (`messages[0].role: unknown variant ...`), the rest kept in `extra`; then [`Self::validate`].
    pub fn from_json_object(object: Map<String, Value>) -> Result<Self, GatewayError> {
        let request = Self::parse_object(object)?;
        request.validate()?;
        Ok(request)
    }

    /// [`Self::from_json_object`] for a body translated into OpenAI's shape from another API
    /// (Anthropic's Messages): checks what holds whatever the API, not the caps only OpenAI's
    /// documents ([`Self::validate_openai_caps`]), which that API's clients were never held to.
    pub fn from_translated_json_object(object: Map<String, Value>) -> Result<Self, GatewayError> {
        let request = Self::parse_object(object)?;
        request.validate_common()?;
        Ok(request)
    }

    fn parse_object(mut object: Map<String, Value>) -> Result<Self, GatewayError> {
        let mut known = Map::new();
        for name in KNOWN_FIELDS {
            if let Some(v) = object.remove(*name) {
                // An explicit null means "not set", as OpenAI treats it.
                if !v.is_null() {
                    known.insert((*name).to_owned(), v);
                }
            }
        }
        let mut request: ChatRequest = serde_path_to_error::deserialize(Value::Object(known)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                // A missing required field: name it.
                let field = inner.split('`').nth(1).unwrap_or("").to_owned();
                GatewayError::invalid(field.clone(), format!("{field}: {inner}"))
            } else {
                GatewayError::invalid(path.clone(), format!("{path}: {inner}"))
            }
        })?;
        request.tags = crate::governance::tags::from_request(&object, None)?;
        object.remove("tags");
        if let Some(Value::Object(meta)) = object.get_mut("metadata") {
            meta.remove("tags");
            if meta.is_empty() {
                object.remove("metadata");
            }
        }
        request.extra = object;
        Ok(request)
    }

    /// Checks a request in OpenAI's Chat Completions API (the HTTP shim's chat and completions,
    /// gRPC's `ChatCompletionParams`): [`Self::validate_common`] and the API's documented caps.
    pub fn validate(&self) -> Result<(), GatewayError> {
        self.validate_common()?;
        self.validate_openai_caps()
    }

    /// The list lengths OpenAI's API documents a cap for.
    pub fn validate_openai_caps(&self) -> Result<(), GatewayError> {
        let stops = match &self.stop {
            Some(Stop::Many(v)) => v.len(),
            Some(Stop::One(_)) | None => 0,
        };
        if stops > MAX_STOP_SEQUENCES {
            return Err(GatewayError::invalid(
                "stop",
                format!("stop: {stops} stop sequences is more than the {MAX_STOP_SEQUENCES} one call may give"),
            ));
        }
        let tools = self.tools.as_ref().map_or(0, Vec::len);
        if tools > MAX_TOOLS {
            return Err(GatewayError::invalid(
                "tools",
                format!("tools: {tools} tools is more than the {MAX_TOOLS} one call may offer"),
            ));
        }
        Ok(())
    }

    /// Checks what types alone cannot, whatever the API the request came in: required and
    /// non-empty fields, ranges.
    pub fn validate_common(&self) -> Result<(), GatewayError> {
        if self.model.trim().is_empty() {
            return Err(GatewayError::invalid("model", "model: must name a model"));
        }
        if self.messages.is_empty() {
            return Err(GatewayError::invalid("messages", "messages: must contain at least one message"));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(GatewayError::invalid("temperature", format!("temperature: {t} is outside 0 to 2")));
        }
        if let Some(p) = self.top_p
            && !(0.0..=1.0).contains(&p)
        {
            return Err(GatewayError::invalid("top_p", format!("top_p: {p} is outside 0 to 1")));
        }
        if let Some(n) = self.n
            && !(1..=MAX_CHOICES).contains(&n)
        {
            return Err(GatewayError::invalid("n", format!("n: {n} is outside 1 to {MAX_CHOICES} choices")));
        }
        if self.max_tokens == Some(0) {
            return Err(GatewayError::invalid("max_tokens", "max_tokens: must be at least 1"));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.role == Role::Tool && m.tool_call_id.is_none() {
                return Err(GatewayError::invalid(
                    format!("messages[{i}].tool_call_id"),
                    format!("messages[{i}].tool_call_id: a tool message must name the call it answers"),
                ));
            }
        }
        Ok(())
    }

    /// The request as an OpenAI JSON body, `extra` included.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            for (k, x) in &self.extra {
                map.entry(k.clone()).or_insert_with(|| x.clone());
            }
        }
        v
    }

    /// How many choices the provider generates (and bills): every one may reach the output cap.
    pub fn choices(&self) -> u64 {
        u64::from(self.n.unwrap_or(1))
    }

    /// The output token cap the caller asked for, if any. Given both `max_tokens` and
    /// `max_completion_tokens`, the larger: providers differ in which one they honour, so only
    /// the larger bounds what any of them generates.
    pub fn max_output_tokens(&self) -> Option<u32> {
        match (self.max_completion_tokens, self.max_tokens) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn parse(v: Value) -> Result<ChatRequest, GatewayError> {
        let Value::Object(map) = v else { panic!("object") };
        ChatRequest::from_json_object(map)
    }

    #[test]
    fn unknown_fields_are_kept_in_extra() {
        let r =
            parse(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": true})).unwrap();
        assert_eq!(r.extra.get("logprobs"), Some(&json!(true)));
        assert_eq!(r.to_json()["logprobs"], json!(true));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = parse(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = parse(json!({"model": "m", "messages": [{"role": "wizard", "content": "hi"}]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = parse(json!({"model": "m", "messages": [{"role": "user", "content": 5}]})).unwrap_err();
        assert!(e.message.contains("messages[0].content"), "{}", e.message);
    }

    #[test]
    fn missing_and_empty_fields_are_refused() {
        let e = parse(json!({"messages": [{"role": "user", "content": "hi"}]})).unwrap_err();
        assert!(e.message.contains("model"), "{}", e.message);
        let e = parse(json!({"model": "m", "messages": []})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
    }

    #[test]
    fn openai_caps_on_stop_and_tools_name_the_field() {
        let hi = json!([{"role": "user", "content": "hi"}]);
        let tool = json!({"type": "function", "function": {"name": "f"}});
        assert!(parse(json!({"model": "m", "messages": hi, "stop": ["a", "b", "c", "d"]})).is_ok());
        let e = parse(json!({"model": "m", "messages": hi, "stop": ["a", "b", "c", "d", "e"]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stop"));
        assert!(e.message.contains("more than the 4"), "{}", e.message);
        assert!(parse(json!({"model": "m", "messages": hi, "tools": vec![tool.clone(); 128]})).is_ok());
        let e = parse(json!({"model": "m", "messages": hi, "tools": vec![tool.clone(); 129]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools"));
        // A body translated from Anthropic's API is not held to OpenAI's caps.
        let Value::Object(map) = json!({"model": "m", "messages": hi, "stop": ["a", "b", "c", "d", "e"]}) else {
            panic!("object")
        };
        assert!(ChatRequest::from_translated_json_object(map).is_ok());
    }

    #[test]
    fn multipart_content_round_trips() {
        let r = parse(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}
        ]}]}))
        .unwrap();
        assert_eq!(r.messages[0].content.as_ref().unwrap().text(), "what is");
        assert_eq!(r.to_json()["messages"][0]["content"][1]["image_url"]["url"], json!("data:image/png;base64,AAA"));
    }
}
