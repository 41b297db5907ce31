//! The legacy HTTP+SSE client transport (MCP 2024-11-05), which the official SDK no longer
//! ships: a `GET` opens an event stream whose first `endpoint` event names the URL to `POST`
//! messages to; the server's messages come back on the stream as `message` events.
//!
//! A reader task owns the stream and hands each message to the SDK through a channel; when
//! the stream ends the channel closes, the SDK sees the transport closed, and the upstream
//! makes a new connection on its next call.

use std::time::Duration;

use futures_util::StreamExt;
use rmcp::service::{RoleClient, RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::mpsc;

use crate::providers::sse::SseDecoder;

/// Messages buffered between the stream and the SDK.
const BUFFER: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("the server answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the event stream ended before it named its message endpoint")]
    NoEndpoint,
    #[error("the message endpoint {0:?} is not a URL on the same server")]
    BadEndpoint(String),
}

pub struct SseTransport {
    http: reqwest::Client,
    headers: reqwest::header::HeaderMap,
    endpoint: reqwest::Url,
    rx: mpsc::Receiver<RxJsonRpcMessage<RoleClient>>,
    reader: tokio::task::JoinHandle<()>,
}

impl SseTransport {
    /// Opens the event stream and waits (at most `timeout`) for the message endpoint.
    pub async fn connect(
        http: reqwest::Client,
        url: &str,
        headers: reqwest::header::HeaderMap,
        timeout: Duration,
    ) -> Result<Self, SseError> {
        let base = reqwest::Url::parse(url).map_err(|_| SseError::BadEndpoint(url.to_owned()))?;
        let resp = http
            .get(base.clone())
            .headers(headers.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(SseError::Status(resp.status()));
        }
        let mut body = resp.bytes_stream();
        let mut decoder = SseDecoder::default();
        let mut early = Vec::new();
        let endpoint = tokio::time::timeout(timeout, async {
            while let Some(chunk) = body.next().await {
                for e in decoder.push_events(&chunk?) {
                    match e.event.as_deref() {
                        Some("endpoint") => return Ok(e.data),
                        _ => early.push(e.data),
                    }
                }
            }
            Err(SseError::NoEndpoint)
        })
        .await
        .map_err(|_| SseError::NoEndpoint)??;
        let endpoint = base.join(endpoint.trim()).map_err(|_| SseError::BadEndpoint(endpoint.clone()))?;
        // Messages go to the server the stream came from, never elsewhere.
        if endpoint.origin() != base.origin() {
            return Err(SseError::BadEndpoint(endpoint.to_string()));
        }
        let (tx, rx) = mpsc::channel(BUFFER);
        let reader = crate::tasks::spawn("mcp-sse-reader", async move {
            for data in early {
                if !forward(&tx, &data).await {
                    return;
                }
            }
            while let Some(Ok(chunk)) = body.next().await {
                for e in decoder.push_events(&chunk) {
                    if matches!(e.event.as_deref(), None | Some("message")) && !forward(&tx, &e.data).await {
                        return;
                    }
                }
            }
        });
        Ok(Self { http, headers, endpoint, rx, reader })
    }
}

/// Hands one message to the SDK; false once nobody listens.
async fn forward(tx: &mpsc::Sender<RxJsonRpcMessage<RoleClient>>, data: &str) -> bool {
    match serde_json::from_str::<RxJsonRpcMessage<RoleClient>>(data) {
        Ok(m) => tx.send(m).await.is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "an MCP server sent an event that is not a JSON-RPC message; skipped");
            true
        }
    }
}

impl Transport<RoleClient> for SseTransport {
    type Error = SseError;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let request = self.http.post(self.endpoint.clone()).headers(self.headers.clone()).json(&item);
        async move {
            let resp = request.send().await?;
            if resp.status().is_success() { Ok(()) } else { Err(SseError::Status(resp.status())) }
        }
    }

    fn receive(&mut self) -> impl std::future::Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        self.rx.recv()
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        self.rx.close();
        Ok(())
    }
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
