//! Server-Sent Events as providers stream them: a small incremental decoder, and the one
//! reading loop every adapter's stream shares (idle timeout, transport errors, the end).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;

use super::{ChunkStream, upstream_transport_error};
use crate::chat::ChatChunk;
use crate::config::DeploymentConfig;
use crate::error::{ErrorCode, GatewayError};

/// Feeds bytes in, gets complete events' `data` out. Handles events split across reads,
/// `\r\n` line ends, multi-line data and comments.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    data: Option<String>,
    event: Option<String>,
}

/// One complete event: its `event:` name (if it had one) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseDecoder {
    /// Adds bytes; returns the data of every event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.push_events(bytes).into_iter().map(|e| e.data).collect()
    }

    /// Adds bytes; returns every event they complete, with its name.
    pub fn push_events(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                let event = self.event.take();
                if let Some(data) = self.data.take() {
                    events.push(SseEvent { event, data });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                },
                "event" => self.event = Some(value.to_owned()),
                _ => {}
            }
        }
        events
    }

    /// Call at the end of the stream: a final event not followed by a blank line.
    pub fn finish(&mut self) -> Option<String> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let mut events = self.push(&rest);
            events.extend(self.push(b"\n\n"));
            return events.pop();
        }
        self.data.take()
    }
}

/// Turns one provider's stream events into OpenAI chunks.
pub trait Translate: Send + 'static {
    /// The chunks one event's `data` makes, and whether the stream is complete after it.
    fn event(&mut self, deployment: &DeploymentConfig, data: &str) -> Result<(Vec<ChatChunk>, bool), GatewayError>;

    /// Chunks once the upstream has closed the stream (e.g. usage held back until the end).
    fn end(&mut self, _deployment: &DeploymentConfig) -> Vec<ChatChunk> {
        Vec::new()
    }
}

/// Sends a streaming request: the upstream must answer (headers) within `timeout`, and an
/// error status is mapped by `error`.
pub async fn connect<F, Fut>(
    request: reqwest::RequestBuilder,
    deployment: &DeploymentConfig,
    timeout: Duration,
    error: F,
) -> Result<reqwest::Response, GatewayError>
where
    F: FnOnce(reqwest::Response) -> Fut,
    Fut: std::future::Future<Output = GatewayError>,
{
    let resp = match tokio::time::timeout(timeout, request.send()).await {
        Ok(r) => r.map_err(|e| upstream_transport_error(deployment, &e))?,
        Err(_) => {
            return Err(GatewayError::new(
                ErrorCode::UpstreamTimeout,
                format!(
                    "upstream {} (deployment {}) did not answer within {}s",
                    deployment.provider.as_str(),
                    deployment.id,
                    timeout.as_secs_f64()
                ),
            ));
        }
    };
    if !resp.status().is_success() {
        return Err(error(resp).await);
    }
    Ok(resp)
}

/// An upstream's SSE body as OpenAI chunks, never buffered: each read waits at most `idle`
/// (so a long but live stream is never cut, and a stalled one is).
pub fn chunks(
    resp: reqwest::Response,
    deployment: &DeploymentConfig,
    idle: Duration,
    translator: impl Translate,
) -> ChunkStream {
    struct State<T> {
        body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
        decoder: SseDecoder,
        events: VecDeque<String>,
        ready: VecDeque<ChatChunk>,
        translator: T,
        ended: bool,
        done: bool,
        deployment: DeploymentConfig,
    }
    let state = State {
        body: resp.bytes_stream().boxed(),
        decoder: SseDecoder::default(),
        events: VecDeque::new(),
        ready: VecDeque::new(),
        translator,
        ended: false,
        done: false,
        deployment: deployment.clone(),
    };
    let stream = futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(chunk) = st.ready.pop_front() {
                return Some((Ok(chunk), st));
            }
            if st.done {
                return None;
            }
            if let Some(data) = st.events.pop_front() {
                match st.translator.event(&st.deployment, &data) {
                    Ok((chunks, complete)) => {
                        st.ready.extend(chunks);
                        st.done = complete;
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
                continue;
            }
            if st.ended {
                // What arrived stands (the gateway settles on it), plus what the end adds.
                st.done = true;
                let last = st.translator.end(&st.deployment);
                st.ready.extend(last);
                continue;
            }
            match tokio::time::timeout(idle, st.body.next()).await {
                Ok(Some(Ok(bytes))) => st.events.extend(st.decoder.push(&bytes)),
                Ok(Some(Err(e))) => {
                    st.done = true;
                    return Some((Err(upstream_transport_error(&st.deployment, &e)), st));
                }
                Ok(None) => {
                    if let Some(last) = st.decoder.finish() {
                        st.events.push_back(last);
                    }
                    st.ended = true;
                }
                Err(_) => {
                    st.done = true;
                    let err = GatewayError::new(
                        ErrorCode::UpstreamTimeout,
                        format!(
                            "upstream {} (deployment {}) stalled mid-stream for {}s",
                            st.deployment.provider.as_str(),
                            st.deployment.id,
                            idle.as_secs_f64()
                        ),
                    );
                    return Some((Err(err), st));
                }
            }
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_events_split_across_reads() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: {\"a\"").is_empty());
        assert_eq!(d.push(b":1}\r\n\r\n: comment\n\ndata: [DONE]\n\n"), vec!["{\"a\":1}", "[DONE]"]);
    }

    #[test]
    fn joins_multiline_data_and_flushes_at_the_end() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"event: x\ndata: one\ndata: two\n").is_empty());
        assert_eq!(d.finish().as_deref(), Some("one\ntwo"));
    }
}
