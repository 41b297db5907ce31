//! Vertex AI (`vertex_ai/<model>`): Gemini's wire format at the project's regional endpoint,
//! authenticated with an OAuth2 access token that a service account's key obtains by the JWT
//! bearer grant (RFC 7523): an RS256-signed assertion posted to the key's `token_uri`. Tokens
//! are cached per credentials file and refreshed five minutes before they expire; the key
//! itself never leaves the process and never appears in an error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::ChunkStream;
use super::gemini::{self, Target};
use crate::chat::{ChatRequest, ChatResponse};
use crate::config::DeploymentConfig;
use crate::error::{ErrorCode, GatewayError};

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// Access tokens per credentials file: (token, when it stops being used). Each file has its
/// own lock, so one slow token endpoint holds up only the deployments that use that key.
#[derive(Default)]
pub struct Tokens {
    cache: std::sync::Mutex<HashMap<String, Arc<Slot>>>,
}

/// One credentials file's token and when it stops being used.
type Slot = Mutex<Option<(String, Instant)>>;

fn auth_error(deployment: &DeploymentConfig, what: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(
        ErrorCode::UpstreamError,
        format!("vertex_ai deployment {}: cannot obtain an access token: {what}", deployment.id),
    )
    .with_reason("UPSTREAM_AUTH")
}

/// The RS256 assertion for a service account key.
fn assertion(key: &Value, now: u64) -> Result<String, String> {
    let email = key.get("client_email").and_then(Value::as_str).ok_or("the key has no client_email")?;
    let token_uri = key.get("token_uri").and_then(Value::as_str).unwrap_or("https://oauth2.googleapis.com/token");
    let pem = key.get("private_key").and_then(Value::as_str).ok_or("the key has no private_key")?;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let der = STANDARD.decode(body).map_err(|_| "private_key is not PEM")?;
    let pair =
        aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der).map_err(|_| "private_key is not an RSA PKCS#8 key")?;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = json!({"iss": email, "scope": SCOPE, "aud": token_uri, "iat": now, "exp": now + 3600});
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "signing failed")?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

impl Tokens {
    /// A live access token for the deployment's credentials.
    async fn token(&self, http: &reqwest::Client, deployment: &DeploymentConfig) -> Result<String, GatewayError> {
        let path = deployment
            .vertex_credentials
            .clone()
            .ok_or_else(|| auth_error(deployment, "no vertex_credentials (or GOOGLE_APPLICATION_CREDENTIALS)"))?;
        let entry = match self.cache.lock() {
            Ok(mut map) => map.entry(path.clone()).or_default().clone(),
            Err(_) => return Err(auth_error(deployment, "token cache poisoned")),
        };
        // Waiting for another call's fetch, and fetching, are bounded by the deployment's timeout.
        let fetched = tokio::time::timeout(deployment.timeout, async {
            let mut slot = entry.lock().await;
            if let Some((token, until)) = slot.as_ref()
                && Instant::now() < *until
            {
                return Ok(token.clone());
            }
            let (token, until) = self.fetch(http, deployment, &path).await?;
            *slot = Some((token.clone(), until));
            Ok(token)
        })
        .await;
        fetched.unwrap_or_else(|_| Err(auth_error(deployment, "the token endpoint did not answer in time")))
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
        deployment: &DeploymentConfig,
        path: &str,
    ) -> Result<(String, Instant), GatewayError> {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| auth_error(deployment, format!("cannot read the credentials file ({})", e.kind())))?;
        let key: Value =
            serde_json::from_str(&text).map_err(|_| auth_error(deployment, "the credentials file is not JSON"))?;
        let token_uri = key.get("token_uri").and_then(Value::as_str).unwrap_or("https://oauth2.googleapis.com/token");
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let jwt = assertion(&key, now).map_err(|e| auth_error(deployment, e))?;
        let resp = http
            .post(token_uri)
            // The assertion is base64url and dots: nothing in it needs escaping.
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| {
                auth_error(
                    deployment,
                    format!(
                        "the token endpoint is unreachable ({})",
                        if e.is_timeout() { "timeout" } else { "connection" }
                    ),
                )
            })?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let token = v.get("access_token").and_then(Value::as_str).filter(|_| status.is_success()).ok_or_else(|| {
            let why = v
                .get("error_description")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no access_token");
            auth_error(deployment, format!("the token endpoint answered {status}: {why}"))
        })?;
        let lifetime = Duration::from_secs(v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600));
        let until = Instant::now() + lifetime.saturating_sub(REFRESH_BEFORE);
        Ok((token.to_owned(), until))
    }
}

fn endpoint(deployment: &DeploymentConfig, stream: bool) -> Result<String, GatewayError> {
    let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    let project = deployment.vertex_project.as_deref().ok_or_else(|| {
        GatewayError::new(
            ErrorCode::UpstreamError,
            format!("vertex_ai deployment {} has no vertex_project", deployment.id),
        )
    })?;
    let location = deployment.vertex_location.as_deref().unwrap_or("us-central1");
    let base = match &deployment.api_base {
        Some(b) => b.trim_end_matches('/').to_owned(),
        None if location == "global" => "https://aiplatform.googleapis.com/v1".to_owned(),
        None => format!("https://{location}-aiplatform.googleapis.com/v1"),
    };
    Ok(format!(
        "{base}/projects/{project}/locations/{location}/publishers/google/models/{}:{action}",
        deployment.upstream_model
    ))
}

async fn target(
    http: &reqwest::Client,
    tokens: &Tokens,
    deployment: &DeploymentConfig,
    stream: bool,
) -> Result<Target, GatewayError> {
    let token = tokens.token(http, deployment).await?;
    Ok(Target { url: endpoint(deployment, stream)?, auth: Some(("authorization", format!("Bearer {token}"))) })
}

pub async fn chat(
    http: &reqwest::Client,
    tokens: &Tokens,
    deployment: &DeploymentConfig,
    request: &ChatRequest,
) -> Result<ChatResponse, GatewayError> {
    let t = target(http, tokens, deployment, false).await?;
    gemini::chat_at(http, deployment, request, &t).await
}

pub async fn chat_stream(
    http: &reqwest::Client,
    tokens: &Tokens,
    deployment: &DeploymentConfig,
    request: &ChatRequest,
) -> Result<ChunkStream, GatewayError> {
    let t = target(http, tokens, deployment, true).await?;
    gemini::stream_at(http, deployment, request, &t).await
}

/// Embeddings by `predict` (texts only), with the token counts Vertex AI reports.
pub async fn embeddings(
    http: &reqwest::Client,
    tokens: &Tokens,
    deployment: &DeploymentConfig,
    request: &crate::embeddings::EmbeddingRequest,
) -> Result<Value, GatewayError> {
    let texts = request.texts("vertex_ai")?;
    let mut t = target(http, tokens, deployment, false).await?;
    t.url = t.url.replace(":generateContent", ":predict");
    let mut body = json!({"instances": texts.iter().map(|t| json!({"content": t})).collect::<Vec<_>>()});
    if let Some(d) = request.dimensions {
        body["parameters"] = json!({"outputDimensionality": d});
    }
    let v = gemini::call_json(http, deployment, &t, &body).await?;
    let predictions = v.get("predictions").and_then(Value::as_array).ok_or_else(|| {
        GatewayError::new(
            ErrorCode::UpstreamError,
            format!("upstream vertex_ai (deployment {}) sent a malformed response: no predictions", deployment.id),
        )
    })?;
    let mut counted = 0;
    let vectors = predictions
        .iter()
        .map(|p| {
            let e = p.get("embeddings").cloned().unwrap_or_default();
            counted += e.get("statistics").and_then(|s| s.get("token_count")).and_then(Value::as_u64).unwrap_or(0);
            e.get("values").cloned().unwrap_or_default()
        })
        .collect();
    let prompt = if counted > 0 { counted } else { request.estimate().0 };
    Ok(crate::embeddings::openai_shape(&deployment.upstream_model, vectors, prompt))
}
