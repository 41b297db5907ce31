//! Hostile and broken callers get nothing: the listening port bounds connections, slow
//! heads, slow bodies and HTTP/2 streams, through the real binary and raw sockets.
//!
//! Each test starts its own gateway with small limits in its config; the bounds asserted are
//! generous multiples of the configured deadlines, never exact timings.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, json, openai_error, standard_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WARNING: &str = "connection limit reached";
const ENDED: &str = "connection limit no longer reached";

async fn gateway(extra_general: &str) -> Gateway {
    let config = format!("{}{extra_general}", standard_config(None));
    Gateway::start(Options { backend: Backend::Sqlite, config, env: vec![] }).await
}

/// Reads until the server closes the connection (EOF or reset); panics if it stays open
/// longer than `within`. Returns what was read and how long the close took.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = within.checked_sub(start.elapsed()).unwrap_or_default();
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open past {within:?}; read so far: {:?}", text(&out)),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, start.elapsed()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One HTTP/1.1 response: status, headers (names lowercased), body as JSON (or a string).
fn parse_response(bytes: &[u8]) -> (u16, HashMap<String, String>, Value) {
    let raw = text(bytes);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers.get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, headers, value)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Sends one request head (and body) on a fresh connection and reads the whole answer; the
/// request says `connection: close`, so the answer ends with the connection.
async fn one_request(gw: &Gateway, request: &str, within: Duration) -> (u16, HashMap<String, String>, Value, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let (bytes, _) = read_until_closed(&mut s, within).await;
    let (status, headers, body) = parse_response(&bytes);
    (status, headers, body, start.elapsed())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {MASTER_KEY}\r\nconnection: close\r\n\r\n")
}

async fn idle_connections(gw: &Gateway, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    out
}

fn chat() -> Value {
    json!({"model": "demo", "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn past_max_connections_new_connections_are_shed_with_503_and_health_still_answers() {
    // The idle connections must outlive the test's steps: a long first-request deadline.
    let gw = gateway("  max_connections: 50\n  request_header_timeout: 60\n").await;
    assert_eq!(gw.http().get("/v1/models", MASTER_KEY).await.0, 200);

    // 60 idle connections that never send a byte: the first 50 take every slot, the other
    // 10 land in the reserve.
    let mut held = idle_connections(&gw, 60).await;

    // A request on a new connection is answered 503 in the OpenAI shape, and the connection
    // closed.
    let (status, headers, body, took) = one_request(&gw, &get("/v1/models"), Duration::from_secs(10)).await;
    assert_eq!(status, 503, "{body}");
    let e = openai_error(&body);
    assert_eq!(e["type"], "service_unavailable", "{body}");
    assert_eq!(e["code"], "unavailable", "{body}");
    assert_eq!(e["param"], Value::Null, "{body}");
    assert!(e["message"].as_str().unwrap().contains("max_connections"), "{body}");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"), "{headers:?}");
    eprintln!("shed request over the cap: {status} in {took:?}");

    // Liveness on a fresh connection still answers, promptly, from the reserve.
    let (status, _, body, took) = one_request(&gw, &get("/health/liveness"), Duration::from_secs(10)).await;
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(3), "liveness took {took:?} under overload");
    eprintln!("liveness under overload: {status} in {took:?}");

    // Past the reserve (32 slots) a fixed 503 is written at once, before any request.
    held.extend(idle_connections(&gw, 40).await);
    let mut fresh = TcpStream::connect(gw.addr).await.unwrap();
    let (bytes, took) = read_until_closed(&mut fresh, Duration::from_secs(5)).await;
    let (status, _, body) = parse_response(&bytes);
    assert_eq!(status, 503, "{}", text(&bytes));
    assert_eq!(openai_error(&body)["type"], "service_unavailable");
    eprintln!("past the reserve: {status} written unasked in {took:?}");

    // One warning for the whole episode, not one per shed connection.
    assert_eq!(gw.logs().matches(WARNING).count(), 1, "{}", gw.logs());

    // Releasing some idle connections frees slots: ordinary requests are served again.
    held.truncate(40);
    let start = Instant::now();
    loop {
        let (status, _, body) = gw.http().get("/v1/models", MASTER_KEY).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(start.elapsed() < Duration::from_secs(15), "no slot came free after releasing connections");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("served again {:?} after releasing 60 of 100 idle connections", start.elapsed());

    // Once they are all gone and nothing is shed for a while, the episode ends, once.
    drop(held);
    gw.log_count_reaches(ENDED, 1).await;
    let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, chat()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.logs().matches(WARNING).count(), 1, "{}", gw.logs());
    assert_eq!(gw.logs().matches(ENDED).count(), 1, "{}", gw.logs());
}

#[tokio::test]
async fn a_connection_that_never_completes_its_first_request_is_closed_at_the_header_deadline() {
    let gw = gateway("  request_header_timeout: 1\n").await;

    // Half a request head, half an HTTP/2 preface, and nothing at all.
    for (what, sent) in [
        ("half an HTTP/1 head", "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-ty"),
        ("half an HTTP/2 preface", "PRI * HTTP/2.0\r\n"),
        ("nothing", ""),
    ] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(sent.as_bytes()).await.unwrap();
        let (bytes, took) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(!text(&bytes).contains(" 200 "), "{what}: {}", text(&bytes));
        assert!(took >= Duration::from_millis(500), "{what}: closed after {took:?}, before the deadline");
        eprintln!("{what}: closed after {took:?} (request_header_timeout 1s)");
    }

    // A connection that sent its first request in time stays open between requests (for
    // keepalive_timeout, 75 s by default), past the first-request deadline.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let request = "GET /health/liveness HTTP/1.1\r\nhost: gw\r\n\r\n";
    for round in 0..2 {
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(text(&buf[..n]).starts_with("HTTP/1.1 200"), "round {round}: {:?}", text(&buf[..n]));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    // And the gateway serves as usual.
    let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, chat()).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_refused_at_the_body_deadline_and_its_connection_freed() {
    let gw = gateway("  request_body_timeout: 2\n").await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {MASTER_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );

    // Content-Length 1000, and only 10 bytes of it.
    let start = Instant::now();
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(format!("{head}{{\"model\":\"").as_bytes()).await.unwrap();
    let (bytes, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    let took = start.elapsed();
    let (status, _, body) = parse_response(&bytes);
    assert_eq!(status, 400, "{}", text(&bytes));
    let e = openai_error(&body);
    assert_eq!(e["type"], "invalid_request_error", "{body}");
    assert_eq!(e["code"], "request_body_timeout", "{body}");
    assert!(e["message"].as_str().unwrap().contains("general_settings.request_body_timeout"), "{body}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(8), "answered after {took:?}");
    eprintln!("short body: {status} after {took:?} (request_body_timeout 2s), connection closed");

    // A body dripping a byte every 300 ms never completes: the deadline is on the whole body,
    // not between bytes.
    let start = Instant::now();
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = s.into_split();
    let drip = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut bytes)).await;
    assert!(read.is_ok(), "the dripping body was never refused: {:?}", text(&bytes));
    let took = start.elapsed();
    drip.abort();
    let (status, _, body) = parse_response(&bytes);
    assert_eq!(status, 400, "{}", text(&bytes));
    assert_eq!(openai_error(&body)["code"], "request_body_timeout", "{body}");
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    eprintln!("dripping body: {status} after {took:?}");

    // The deadline is on the upload only: a slow answer and a slow stream finish.
    let slow = json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}], "mock_latency_ms": 3000});
    let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, slow.clone()).await;
    assert_eq!(status, 200, "{body}");
    let mut stream = slow;
    stream["stream"] = json!(true);
    let (status, _, events) = gw.http().stream(MASTER_KEY, stream).await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");

    // An MCP Streamable HTTP session's SSE GET has no body: it stays open past the deadline.
    let client = reqwest::Client::new();
    let mcp = format!("{}/mcp", gw.url);
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "connections-test", "version": "1"}}});
    let init = client
        .post(&mcp)
        .bearer_auth(MASTER_KEY)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = init.text().await;
    let initialized = client
        .post(&mcp)
        .bearer_auth(MASTER_KEY)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert!(initialized.status().is_success(), "{}", initialized.status());
    let mut sse = client
        .get(&mcp)
        .bearer_auth(MASTER_KEY)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let open_until = Instant::now() + Duration::from_secs(3);
    while let Some(left) = open_until.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, sse.chunk()).await {
            Err(_) | Ok(Ok(Some(_))) => {}
            Ok(ended) => panic!("the SSE stream ended within the body deadline: {ended:?}"),
        }
    }

    // And the gateway keeps serving.
    let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, chat()).await;
    assert_eq!(status, 200, "{body}");
}

// HTTP/2 frames, written by hand so the client can ignore the server's limits as a hostile
// one would.
const H2_HEADERS: u8 = 0x1;
const H2_RST_STREAM: u8 = 0x3;
const H2_SETTINGS: u8 = 0x4;
const H2_END_HEADERS: u8 = 0x4;
const H2_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const H2_REFUSED_STREAM: u32 = 0x7;

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK: a header with an indexed name and a literal value, not indexed.
fn hpack_literal(out: &mut Vec<u8>, name_index: u8, value: &str) {
    if name_index < 15 {
        out.push(name_index);
    } else {
        out.extend_from_slice(&[0x0f, name_index - 15]);
    }
    out.push(u8::try_from(value.len()).unwrap());
    out.extend_from_slice(value.as_bytes());
}

/// A chat POST whose body never comes (no END_STREAM): the stream stays open.
fn h2_open_chat(stream: u32) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    hpack_literal(&mut block, 4, "/v1/chat/completions"); // :path
    hpack_literal(&mut block, 1, "gw"); // :authority
    hpack_literal(&mut block, 31, "application/json"); // content-type
    hpack_literal(&mut block, 23, &format!("Bearer {MASTER_KEY}")); // authorization
    h2_frame(H2_HEADERS, H2_END_HEADERS, stream, &block)
}

#[tokio::test]
async fn an_http2_client_gets_at_most_the_configured_concurrent_streams() {
    let gw = gateway("  http2_max_concurrent_streams: 4\n  request_body_timeout: 30\n").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(H2_SETTINGS, 0, 0, &[]));
    // Six streams at once, ignoring the server's limit of four.
    let streams: Vec<u32> = (0..6).map(|i| 1 + 2 * i).collect();
    for id in &streams {
        out.extend(h2_open_chat(*id));
    }
    s.write_all(&out).await.unwrap();

    // Read frames for a while: the server's SETTINGS, and how each stream fared.
    let mut advertised = None;
    let mut reset: HashMap<u32, u32> = HashMap::new();
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut chunk = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            if kind == H2_SETTINGS && flags & 0x1 == 0 {
                for setting in payload.chunks_exact(6) {
                    if u16::from_be_bytes([setting[0], setting[1]]) == H2_MAX_CONCURRENT_STREAMS {
                        advertised = Some(u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]));
                    }
                }
            }
            if kind == H2_RST_STREAM && payload.len() == 4 {
                reset.insert(stream, u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]));
            }
        }
    }
    assert_eq!(advertised, Some(4), "SETTINGS_MAX_CONCURRENT_STREAMS");
    // The two streams past the limit are refused; the four within it stay open, waiting
    // for their bodies.
    for id in &streams[4..] {
        assert_eq!(reset.get(id), Some(&H2_REFUSED_STREAM), "stream {id}: {reset:?}");
    }
    for id in &streams[..4] {
        assert_eq!(reset.get(id), None, "stream {id} within the limit was reset: {reset:?}");
    }
    eprintln!("h2: advertised {advertised:?} streams; refused {:?}", reset.keys().collect::<Vec<_>>());

    // gRPC, on its own HTTP/2 connection, is served as usual.
    let mut health = tonic_health::pb::health_client::HealthClient::new(gw.channel().await);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest { service: "ferryman.v1.InferenceService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

/// An HTTP/2 connection with nothing in flight is closed once idle for `keepalive_timeout`,
/// however it keeps itself alive otherwise, so idle clients cannot hold every slot — even one
/// that never answers the goodbye ping; one with a request in flight is not.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_keepalive_timeout() {
    let gw = gateway("  keepalive_timeout: 2\n  http2_keepalive_interval: 600\n  request_body_timeout: 60\n").await;
    let preface = || {
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(h2_frame(H2_SETTINGS, 0, 0, &[]));
        out
    };
    // One finished request (a health check, END_STREAM on its headers), then silence.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    let mut out = preface();
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    hpack_literal(&mut block, 4, "/health/liveness");
    hpack_literal(&mut block, 1, "gw");
    out.extend(h2_frame(H2_HEADERS, H2_END_HEADERS | 0x1, 1, &block));
    idle.write_all(&out).await.unwrap();
    // One with a request still in flight (its body never comes).
    let mut busy = TcpStream::connect(gw.addr).await.unwrap();
    let mut out = preface();
    out.extend(h2_open_chat(1));
    busy.write_all(&out).await.unwrap();

    let (_, took) = read_until_closed(&mut idle, Duration::from_secs(8)).await;
    assert!(took >= Duration::from_millis(1500), "closed after {took:?}, before it was idle for 2 s");
    eprintln!("an idle HTTP/2 connection was closed after {took:?}");
    // The busy one is still open (reads would wait, not end).
    let mut buf = [0u8; 4096];
    let open = loop {
        match tokio::time::timeout(Duration::from_millis(500), busy.read(&mut buf)).await {
            Err(_) => break true,
            Ok(Ok(0)) | Ok(Err(_)) => break false,
            Ok(Ok(_)) => continue,
        }
    };
    assert!(open, "a connection with a request in flight was closed as idle");
}
