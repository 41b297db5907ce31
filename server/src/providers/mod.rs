//! Provider adapters: one file per upstream wire format, plus the built-in `mock`.
//!
//! The gateway speaks [`crate::chat`] types to every adapter; each adapter translates to its
//! provider's format and maps the provider's failures onto [`GatewayError`] codes. Streams are
//! passed through chunk by chunk, never buffered; every adapter reports usage on the stream's
//! last chunk (asking the provider for it where needed) so the gateway can settle the cost.

pub mod anthropic;
pub mod gemini;
pub mod mock;
pub mod openai;
pub mod sse;
pub mod vertex;

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use crate::chat::{ChatChunk, ChatRequest, ChatResponse};
use crate::config::DeploymentConfig;
use crate::error::{ErrorCode, GatewayError};

/// A stream of chunks from an upstream.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, GatewayError>> + Send>>;

/// Which wire format a deployment speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI, or any OpenAI-compatible server at `api_base`.
    OpenAi,
    /// Azure OpenAI: `azure/<deployment>` at `api_base`, with `api_version` and the `api-key`
    /// header.
    Azure,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (an API key).
    Gemini,
    /// Google's Vertex AI (a service account's OAuth2 token).
    Vertex,
    /// The built-in mock: deterministic answers, no network.
    Mock,
}

impl ProviderKind {
    pub const ALL: &[ProviderKind] = &[
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Vertex,
        ProviderKind::Mock,
    ];

    /// The most prompt tokens one image can cost, whatever its size: an image's tokens do not
    /// follow its bytes (a URL is short). Anthropic scales images down to about 1,600 tokens;
    /// OpenAI's dearest (gpt-4o-mini at high detail) reaches about 48,200; Gemini tiles large
    /// images without a documented ceiling, so it gets OpenAI's.
    pub fn max_image_tokens(self) -> u64 {
        match self {
            Self::Anthropic => 1_700,
            _ => 50_000,
        }
    }

    /// Whether the provider receives the request's unmodelled parameters (`extra`) as they
    /// are: OpenAI-shaped upstreams do; the others get only what their adapter translates.
    pub fn forwards_extra(self) -> bool {
        matches!(self, Self::OpenAi | Self::Azure)
    }

    pub fn parse(prefix: &str) -> Option<Self> {
        match prefix {
            "openai" => Some(Self::OpenAi),
            "azure" => Some(Self::Azure),
            "anthropic" => Some(Self::Anthropic),
            "gemini" => Some(Self::Gemini),
            "vertex_ai" => Some(Self::Vertex),
            "mock" => Some(Self::Mock),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Vertex => "vertex_ai",
            Self::Mock => "mock",
        }
    }
}

/// What every adapter shares: the pooled HTTP client.
#[derive(Clone)]
pub struct Upstreams {
    http: reqwest::Client,
    /// Vertex AI access tokens, per credentials file.
    google: std::sync::Arc<vertex::Tokens>,
}

impl Upstreams {
    pub fn new() -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| GatewayError::internal(format!("cannot build the upstream HTTP client: {e}")))?;
        Ok(Self { http, google: Default::default() })
    }

    /// One whole completion from `deployment`.
    pub async fn chat(
        &self,
        deployment: &DeploymentConfig,
        request: &ChatRequest,
    ) -> Result<ChatResponse, GatewayError> {
        match deployment.provider {
            ProviderKind::Mock => mock::chat(deployment, request).await,
            ProviderKind::OpenAi | ProviderKind::Azure => openai::chat(&self.http, deployment, request).await,
            ProviderKind::Anthropic => anthropic::chat(&self.http, deployment, request).await,
            ProviderKind::Gemini => gemini::chat(&self.http, deployment, request).await,
            ProviderKind::Vertex => vertex::chat(&self.http, &self.google, deployment, request).await,
        }
    }

    /// A streamed completion from `deployment`; the last chunk carries usage.
    pub async fn chat_stream(
        &self,
        deployment: &DeploymentConfig,
        request: &ChatRequest,
    ) -> Result<ChunkStream, GatewayError> {
        match deployment.provider {
            ProviderKind::Mock => mock::chat_stream(deployment, request).await,
            ProviderKind::OpenAi | ProviderKind::Azure => openai::chat_stream(&self.http, deployment, request).await,
            ProviderKind::Anthropic => anthropic::chat_stream(&self.http, deployment, request).await,
            ProviderKind::Gemini => gemini::chat_stream(&self.http, deployment, request).await,
            ProviderKind::Vertex => vertex::chat_stream(&self.http, &self.google, deployment, request).await,
        }
    }
}

impl Upstreams {
    /// Embeddings from `deployment`, in OpenAI's shape (with usage).
    pub async fn embeddings(
        &self,
        deployment: &DeploymentConfig,
        request: &crate::embeddings::EmbeddingRequest,
    ) -> Result<serde_json::Value, GatewayError> {
        match deployment.provider {
            ProviderKind::Mock => mock::embeddings(deployment, request),
            ProviderKind::OpenAi | ProviderKind::Azure => openai::embeddings(&self.http, deployment, request).await,
            ProviderKind::Gemini => gemini::embeddings(&self.http, deployment, request).await,
            ProviderKind::Vertex => vertex::embeddings(&self.http, &self.google, deployment, request).await,
            ProviderKind::Anthropic => Err(GatewayError::invalid(
                "model",
                format!("model: deployment {} is on anthropic, which has no embeddings", deployment.id),
            )),
        }
    }
}

/// The most of an error body read from an upstream.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// An upstream's error response: its status, `Retry-After`, and body (at most
/// [`MAX_ERROR_BODY`], and no longer than the deployment's timeout to arrive: a body that
/// stalls is cut, what arrived is the message).
pub async fn error_body(deployment: &DeploymentConfig, resp: reqwest::Response) -> (u16, Option<Duration>, Vec<u8>) {
    use futures_util::StreamExt;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut bytes = Vec::new();
    let mut stream = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + deployment.timeout;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
        bytes.extend_from_slice(&chunk);
        if bytes.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    (status, retry_after, bytes)
}

/// Sends a whole (non-streamed) request within the deployment's timeout and reads its JSON
/// answer; an error status is mapped by `error`, a body that is not JSON is a malformed answer.
pub async fn send_json<F, Fut>(
    request: reqwest::RequestBuilder,
    deployment: &DeploymentConfig,
    error: F,
) -> Result<serde_json::Value, GatewayError>
where
    F: FnOnce(reqwest::Response) -> Fut,
    Fut: std::future::Future<Output = GatewayError>,
{
    let resp =
        request.timeout(deployment.timeout).send().await.map_err(|e| upstream_transport_error(deployment, &e))?;
    if !resp.status().is_success() {
        return Err(error(resp).await);
    }
    let bytes = resp.bytes().await.map_err(|e| upstream_transport_error(deployment, &e))?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(deployment, e))
}

/// An upstream answer that does not have the provider's shape.
pub fn malformed(deployment: &DeploymentConfig, what: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(
        ErrorCode::UpstreamError,
        format!(
            "upstream {} (deployment {}) sent a malformed response: {what}",
            deployment.provider.as_str(),
            deployment.id
        ),
    )
}

/// A base64 data URL's media type and data (`None` for any other URL); `provider` names who
/// cannot take other data URLs, for the error.
pub fn data_url<'a>(url: &'a str, provider: &str) -> Result<Option<(&'a str, &'a str)>, GatewayError> {
    let Some(rest) = url.strip_prefix("data:") else { return Ok(None) };
    let invalid = |m: String| GatewayError::invalid("messages", m);
    let (meta, data) =
        rest.split_once(',').ok_or_else(|| invalid("image_url: a data URL needs a ',' before its data".to_owned()))?;
    let media_type = meta
        .strip_suffix(";base64")
        .ok_or_else(|| invalid(format!("image_url: only base64 data URLs can be sent to {provider}")))?;
    Ok(Some((media_type, data)))
}

/// The provider's message in an error body shaped `{"error": {"message": ...}}` (OpenAI,
/// Anthropic, Google), else the body's text.
pub fn error_message(body: &serde_json::Value, bytes: &[u8]) -> String {
    body.get("error")
        .and_then(|e| e.get("message"))
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| String::from_utf8_lossy(bytes).into_owned(), str::to_owned)
}

/// Maps an upstream HTTP failure to the gateway's codes. The provider's own message is kept
/// for request errors, but never for credential errors (providers echo part of the key).
pub fn upstream_status_error(
    deployment: &DeploymentConfig,
    status: u16,
    provider_message: Option<&str>,
    retry_after: Option<Duration>,
) -> GatewayError {
    let id = &deployment.id;
    let provider = deployment.provider.as_str();
    let detail = provider_message.map(|m| truncate(m, 500)).unwrap_or_default();
    match status {
        400 | 413 | 422 => GatewayError::new(
            ErrorCode::InvalidArgument,
            format!("upstream {provider} (deployment {id}) rejected the request: {detail}"),
        )
        .with_reason("UPSTREAM_BAD_REQUEST"),
        401 | 403 => GatewayError::new(
            ErrorCode::UpstreamError,
            format!(
                "upstream {provider} (deployment {id}) refused the gateway's credentials ({status}); ask the gateway's admin to check the deployment's api_key"
            ),
        )
        .with_reason("UPSTREAM_AUTH"),
        408 | 504 => GatewayError::new(
            ErrorCode::UpstreamTimeout,
            format!("upstream {provider} (deployment {id}) timed out ({status})"),
        ),
        429 => GatewayError {
            retry_after,
            ..GatewayError::new(
                ErrorCode::RateLimited,
                format!("upstream {provider} (deployment {id}) is rate limiting the gateway: {detail}"),
            )
            .with_reason("UPSTREAM_RATE_LIMITED")
        },
        _ => GatewayError::new(
            ErrorCode::UpstreamError,
            format!("upstream {provider} (deployment {id}) failed with status {status}: {detail}"),
        ),
    }
}

/// Maps a transport failure (connect, timeout, broken body).
pub fn upstream_transport_error(deployment: &DeploymentConfig, err: &reqwest::Error) -> GatewayError {
    let id = &deployment.id;
    let provider = deployment.provider.as_str();
    if err.is_timeout() {
        GatewayError::new(
            ErrorCode::UpstreamTimeout,
            format!(
                "upstream {provider} (deployment {id}) did not answer within {}s",
                deployment.timeout.as_secs_f64()
            ),
        )
    } else if err.is_connect() {
        GatewayError::new(ErrorCode::UpstreamError, format!("cannot connect to upstream {provider} (deployment {id})"))
    } else {
        GatewayError::new(
            ErrorCode::UpstreamError,
            format!("upstream {provider} (deployment {id}) failed: {}", without_url(err)),
        )
    }
}

/// reqwest errors name the URL, which may carry a key in its query; drop it.
fn without_url(err: &reqwest::Error) -> String {
    let mut owned = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        owned = e.to_string();
        source = e.source();
    }
    truncate(&owned, 300)
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
