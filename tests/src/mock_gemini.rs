//! A mock Gemini API upstream: `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`, Google's JSON and error shapes. It records every request,
//! calls the first declared function when the last turn is a user question, and otherwise answers
//! text; the stream sends the text in two chunks, then the finish reason with usage.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::mock_openai::{Failure, Received};

pub const PROMPT_TOKENS: u64 = 17;
pub const CANDIDATE_TOKENS: u64 = 6;
pub const THOUGHT_TOKENS: u64 = 2;
pub const TEXT: &str = "Hola from Gemini";

#[derive(Default)]
struct MockState {
    received: Mutex<Vec<Received>>,
    failures: Mutex<VecDeque<Failure>>,
    /// Vertex AI's token endpoint: the public key assertions must be signed with (PKCS#1 DER),
    /// and the claims of each assertion it accepted.
    signer: Mutex<Option<Vec<u8>>>,
    assertions: Mutex<Vec<Value>>,
}

pub struct MockGemini {
    /// The `api_base` to configure: `http://127.0.0.1:PORT/v1beta`.
    pub base_url: String,
    state: Arc<MockState>,
    server: tokio::task::JoinHandle<()>,
}

impl MockGemini {
    pub async fn start() -> MockGemini {
        let state = Arc::new(MockState::default());
        let app = Router::new()
            .route("/v1beta/models/{call}", post(generate))
            .route("/v1/projects/{project}/locations/{location}/publishers/google/models/{call}", post(vertex))
            .route("/token", post(token))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockGemini { base_url: format!("http://{addr}/v1beta"), state, server }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn fail_next(&self, failure: Failure) {
        self.state.failures.lock().unwrap().push_back(failure);
    }

    /// The token endpoint accepts assertions signed by this PKCS#8 private key (PEM).
    pub fn trust_key(&self, pem: &str) {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
        let pair = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        use aws_lc_rs::signature::KeyPair as _;
        *self.state.signer.lock().unwrap() = Some(pair.public_key().as_ref().to_vec());
    }

    /// The claims of every assertion the token endpoint accepted.
    pub fn assertions(&self) -> Vec<Value> {
        self.state.assertions.lock().unwrap().clone()
    }
}

/// Google's OAuth2 token endpoint for the JWT bearer grant: checks the grant type and the
/// assertion's RS256 signature, and hands out a token.
async fn token(State(state): State<Arc<MockState>>, body: String) -> Response {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let form: std::collections::HashMap<&str, &str> = body.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let refuse = |why: &str| {
        (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant", "error_description": why})))
            .into_response()
    };
    if form.get("grant_type") != Some(&"urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return refuse("unsupported grant_type");
    }
    let jwt = form.get("assertion").copied().unwrap_or("");
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return refuse("malformed assertion");
    }
    let Some(public) = state.signer.lock().unwrap().clone() else { return refuse("no key trusted") };
    let signed = format!("{}.{}", parts[0], parts[1]);
    let signature = b64.decode(parts[2]).unwrap_or_default();
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, public);
    if key.verify(signed.as_bytes(), &signature).is_err() {
        return refuse("bad signature");
    }
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap_or_default()).unwrap_or(Value::Null);
    state.assertions.lock().unwrap().push(claims);
    axum::Json(json!({"access_token": "ya29.mock-access-token", "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

async fn vertex(
    state: State<Arc<MockState>>,
    Path((_project, _location, call)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    generate(state, Path(call), uri, headers, body).await
}

impl Drop for MockGemini {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn generate(
    State(state): State<Arc<MockState>>,
    Path(call): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let uri = uri.path_and_query().map_or_else(String::new, |p| p.as_str().to_owned());
    state.received.lock().unwrap().push(Received { headers, body: body.clone(), uri });
    if let Some(f) = state.failures.lock().unwrap().pop_front() {
        return (StatusCode::from_u16(f.status).unwrap(), axum::Json(f.body)).into_response();
    }
    let (model, action) = call.split_once(':').unwrap_or((&call, ""));
    if action == "batchEmbedContents" {
        let n = body["requests"].as_array().map_or(0, Vec::len);
        let embeddings: Vec<Value> = (0..n).map(|i| json!({"values": [0.5, -0.5, i as f64]})).collect();
        return axum::Json(json!({"embeddings": embeddings})).into_response();
    }
    if action == "predict" {
        let n = body["instances"].as_array().map_or(0, Vec::len);
        let predictions: Vec<Value> = (0..n)
            .map(|i| json!({"embeddings": {"values": [0.25, i as f64], "statistics": {"token_count": 3, "truncated": false}}}))
            .collect();
        return axum::Json(json!({"predictions": predictions})).into_response();
    }
    let last_is_question = body["contents"].as_array().and_then(|c| c.last()).is_some_and(|turn| {
        turn["role"] == "user" && turn["parts"].as_array().is_some_and(|p| p.iter().any(|p| p.get("text").is_some()))
    });
    let function = body["tools"][0]["functionDeclarations"][0]["name"].as_str().filter(|_| last_is_question);
    let usage = json!({"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": CANDIDATE_TOKENS,
        "thoughtsTokenCount": THOUGHT_TOKENS, "totalTokenCount": PROMPT_TOKENS + CANDIDATE_TOKENS + THOUGHT_TOKENS});
    let mut parts = vec![json!({"text": TEXT})];
    if let Some(name) = function {
        parts.push(json!({"functionCall": {"name": name, "args": {"city": "Paris"}}}));
    }
    if action == "generateContent" {
        return axum::Json(json!({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": model, "responseId": "gem-resp-1",
        }))
        .into_response();
    }
    let mut events = vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hola"}]}, "index": 0}],
            "modelVersion": model, "responseId": "gem-resp-1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": " from Gemini"}]}, "index": 0}],
            "modelVersion": model, "responseId": "gem-resp-1"}),
    ];
    let mut last_parts = Vec::new();
    if let Some(name) = function {
        last_parts.push(json!({"functionCall": {"name": name, "args": {"city": "Paris"}}}));
    }
    events.push(
        json!({"candidates": [{"content": {"role": "model", "parts": last_parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage, "modelVersion": model, "responseId": "gem-resp-1"}),
    );
    let text: String = events.iter().map(|e| format!("data: {e}\r\n\r\n")).collect();
    Response::builder().header("content-type", "text/event-stream").body(Body::from(text)).unwrap()
}
