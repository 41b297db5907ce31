//! OAuth 2 client credentials (RFC 6749 §4.4) for upstream MCP servers with
//! `auth_type: oauth2`: Ferryman asks the server's `token_url` for an access token with its
//! own client id and secret, presents it as `Authorization: Bearer`, reuses it until shortly
//! before it expires, and asks again when the upstream stops accepting it.
//!
//! The client authenticates to the token endpoint as `token_endpoint_auth_method` says:
//! `client_secret_post` (the id and secret in the form body, the default, as LiteLLM sends
//! them) or `client_secret_basic` (HTTP Basic). The secret and the token never appear in an
//! error or a log line.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::mcp::{McpAuth, TokenAuthMethod};

/// A token is not used in its last minute (or last tenth, for short-lived ones).
const REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// How long a token whose answer gave no `expires_in` is kept.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// One server's cached access token.
#[derive(Default)]
pub struct Tokens {
    slot: Mutex<Option<(String, Instant)>>,
}

impl Tokens {
    /// A live access token, fetched if there is none. Concurrent callers wait for one fetch.
    pub async fn token(&self, http: &reqwest::Client, auth: &McpAuth, timeout: Duration) -> Result<String, String> {
        let McpAuth::OAuth2 { token_url, client_id, client_secret, scopes, method } = auth else {
            return Err("the server is not configured for oauth2".to_owned());
        };
        let mut slot = self.slot.lock().await;
        if let Some((token, until)) = slot.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let (body, basic) = form(client_id, client_secret.expose(), scopes, *method);
        let mut request = http.post(token_url).header("accept", "application/json").timeout(timeout);
        if let Some(basic) = basic {
            let mut value = http::HeaderValue::from_str(&basic)
                .map_err(|_| "the client credentials are not a valid header value".to_owned())?;
            value.set_sensitive(true);
            request = request.header(http::header::AUTHORIZATION, value);
        }
        let response =
            request.header("content-type", "application/x-www-form-urlencoded").body(body).send().await.map_err(
                |e| {
                    let why = if e.is_timeout() { "it did not answer in time" } else { "it is unreachable" };
                    format!("cannot obtain an oauth2 token from {token_url}: {why}")
                },
            )?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| status.is_success() && !t.is_empty())
            .ok_or_else(|| {
                let said = |k: &str| body.get(k).and_then(Value::as_str);
                let why = match (said("error"), said("error_description")) {
                    (Some(e), Some(d)) => format!("{e}: {d}"),
                    (Some(e), None) | (None, Some(e)) => e.to_owned(),
                    (None, None) => "no access_token in the answer".to_owned(),
                };
                // The endpoint's own words, cut short: they never hold our secret, but keep
                // the message readable.
                let why: String = why.chars().take(200).collect();
                format!("the oauth2 token endpoint {token_url} answered {status}: {why}")
            })?
            .to_owned();
        let lifetime = body
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let until = Instant::now() + lifetime.saturating_sub(REFRESH_BEFORE.min(lifetime / 10));
        *slot = Some((token.clone(), until));
        Ok(token)
    }

    /// Forgets the token, so the next connection asks for a new one (the upstream refused it,
    /// or the connection that used it broke).
    pub async fn forget(&self) {
        *self.slot.lock().await = None;
    }

    /// When the cached token should no longer be used.
    pub async fn valid_until(&self) -> Option<Instant> {
        self.slot.lock().await.as_ref().map(|(_, until)| *until)
    }
}

/// The token request's form body, and the `Authorization` value when the client authenticates
/// with HTTP Basic (RFC 6749 §2.3.1: each part form-encoded, then joined and base64-encoded).
fn form(client_id: &str, secret: &str, scopes: &[String], method: TokenAuthMethod) -> (String, Option<String>) {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if !scopes.is_empty() {
        form.append_pair("scope", &scopes.join(" "));
    }
    let basic = match method {
        TokenAuthMethod::Post => {
            form.append_pair("client_id", client_id);
            form.append_pair("client_secret", secret);
            None
        }
        TokenAuthMethod::Basic => {
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(client_id), enc(secret));
            Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
        }
    };
    (form.finish(), basic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_request_carries_the_client_as_configured() {
        let scopes = vec!["read:jira".to_owned(), "write".to_owned()];
        let (body, basic) = form("ferry man", "s3cr&t=", &scopes, TokenAuthMethod::Post);
        assert_eq!(
            body,
            "grant_type=client_credentials&scope=read%3Ajira+write&client_id=ferry+man&client_secret=s3cr%26t%3D"
        );
        assert_eq!(basic, None);
        let (body, basic) = form("ferry man", "s3cr&t=", &[], TokenAuthMethod::Basic);
        assert_eq!(body, "grant_type=client_credentials");
        // base64("ferry+man:s3cr%26t%3D")
        assert_eq!(basic.as_deref(), Some("Basic ZmVycnkrbWFuOnMzY3IlMjZ0JTNE"));
    }
}
