//! The benchmark's upstream: an OpenAI Chat Completions server that does as little as it can.
//!
//! It answers a fixed completion after `latency` (zero for the added-latency runs, e.g. 20 ms
//! for the throughput runs), and a streamed request with a paced SSE stream: the first chunk at
//! once, then one every `chunk` interval, then usage when asked for, then `[DONE]`. Every
//! accepted connection has TCP_NODELAY set. It reads the body only to find `"stream":true`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use axum::serve::ListenerExt;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":6,"total_tokens":18}}"#;
/// Chunks of the paced stream.
pub const STREAM_CHUNKS: usize = 10;

#[derive(Clone, Copy)]
struct Pace {
    latency: Duration,
    chunk: Duration,
}

pub async fn serve(port: u16, latency: Duration, chunk: Duration) -> std::io::Result<()> {
    let pace = Pace { latency, chunk };
    let handler = move |body: Bytes| answer(pace, body);
    let app = Router::new().route("/v1/chat/completions", post(handler)).route("/chat/completions", post(handler));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

async fn answer(pace: Pace, body: Bytes) -> Response {
    if !pace.latency.is_zero() {
        tokio::time::sleep(pace.latency).await;
    }
    let text = std::str::from_utf8(&body).unwrap_or("");
    let stream = text.contains("\"stream\":true") || text.contains("\"stream\": true");
    if !stream {
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Body::from(COMPLETION))
            .unwrap_or_default();
    }
    let usage = text.contains("include_usage");
    let chunk = pace.chunk;
    let events = futures_util::stream::unfold(0usize, move |i| async move {
        if i > STREAM_CHUNKS + 1 {
            return None;
        }
        if i > 0 && i < STREAM_CHUNKS {
            tokio::time::sleep(chunk).await;
        }
        let event = if i < STREAM_CHUNKS {
            let finish = if i + 1 == STREAM_CHUNKS { r#""stop""# } else { "null" };
            format!(
                "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}},\"finish_reason\":{finish}}}]}}\n\n"
            )
        } else if i == STREAM_CHUNKS && usage {
            "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":10,\"total_tokens\":22}}\n\n".to_owned()
        } else if i == STREAM_CHUNKS {
            String::new()
        } else {
            "data: [DONE]\n\n".to_owned()
        };
        Some((Ok::<_, Infallible>(Bytes::from(event)), i + 1))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"))
        .body(Body::from_stream(events))
        .unwrap_or_default()
}
