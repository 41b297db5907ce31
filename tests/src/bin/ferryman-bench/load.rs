//! Load generators and what they measure: `wrk` for HTTP, the project's own tonic client for
//! gRPC, a streaming client for time to first token, and `/proc` for a process's CPU and memory.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferryman_proto::v1::inference_service_client::InferenceServiceClient;
use ferryman_proto::v1::{
    ChatCompletionParams, ChatMessage, CreateChatCompletionRequest, Role, SamplingParams, StreamChatCompletionRequest,
    chat_message,
};
use futures_util::StreamExt;

/// One HTTP call as the load sends it.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub key: String,
    /// The JSON body (a chat completion request).
    pub body: serde_json::Value,
}

/// What one load run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub requests: u64,
    pub errors: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub seconds: f64,
}

impl Run {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// Runs wrk (`threads`, `connections`, `seconds`) against `target`; the script posts the body
/// and prints the exact figures wrk keeps.
pub fn wrk(target: &Target, threads: u32, connections: u32, seconds: u32, dir: &Path) -> Result<Run, String> {
    let lua = dir.join(format!("wrk-{}.lua", std::process::id()));
    let body = serde_json::to_string(&target.body).map_err(|e| e.to_string())?;
    let script = format!(
        r#"wrk.method = "POST"
wrk.body = {body:?}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\n", summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), summary.duration))
end
"#,
        key = target.key
    );
    std::fs::write(&lua, script).map_err(|e| format!("cannot write {}: {e}", lua.display()))?;
    let out = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string(), "-d", &format!("{seconds}s")])
        .args(["--timeout", "10s", "-s"])
        .arg(&lua)
        .arg(&target.url)
        .output()
        .map_err(|e| format!("cannot run wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().find(|l| l.starts_with("BENCH ")).ok_or_else(|| format!("wrk printed no figures: {text}"))?;
    let n: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    if n.len() != 5 {
        return Err(format!("wrk printed {line:?}"));
    }
    Ok(Run { requests: n[0] as u64, errors: n[1] as u64, p50_us: n[2], p99_us: n[3], seconds: n[4] / 1e6 })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summarize(mut latencies: Vec<f64>, errors: u64, seconds: f64) -> Run {
    latencies.sort_by(f64::total_cmp);
    Run {
        requests: latencies.len() as u64,
        errors,
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
        seconds,
    }
}

/// Time to the first content chunk of `n` streamed calls, one after the other (µs each).
pub async fn ttft_http(target: &Target, n: usize) -> Result<Run, String> {
    let client = reqwest::Client::builder().tcp_nodelay(true).build().map_err(|e| e.to_string())?;
    let mut body = target.body.clone();
    body["stream"] = serde_json::Value::Bool(true);
    let mut out = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let resp = client
            .post(&target.url)
            .bearer_auth(&target.key)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("stream request failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("stream answered {}: {}", resp.status(), resp.text().await.unwrap_or_default()));
        }
        let mut chunks = resp.bytes_stream();
        let mut first = None;
        let mut seen = String::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| format!("stream broke: {e}"))?;
            if first.is_none() {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains("\"content\"") {
                    first = Some(t.elapsed());
                }
            }
        }
        out.push(first.ok_or("the stream carried no content")?.as_secs_f64() * 1e6);
    }
    Ok(summarize(out, 0, started.elapsed().as_secs_f64()))
}

fn grpc_params(model: &str, extra_user: Option<&str>, tags: &[String]) -> ChatCompletionParams {
    ChatCompletionParams {
        model: model.to_owned(),
        messages: vec![ChatMessage {
            role: Role::User as i32,
            content: Some(chat_message::Content::Text("Say something short about foxes.".to_owned())),
            ..Default::default()
        }],
        sampling: Some(SamplingParams { max_tokens: Some(16), ..Default::default() }),
        user: extra_user.map(str::to_owned),
        tags: tags.to_vec(),
        ..Default::default()
    }
}

/// A gRPC call as the load sends it.
#[derive(Clone, Debug)]
pub struct GrpcTarget {
    pub url: String,
    pub key: String,
    pub model: String,
    pub user: Option<String>,
    pub tags: Vec<String>,
}

fn authorized<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(v) = format!("Bearer {key}").parse() {
        request.metadata_mut().insert("authorization", v);
    }
    request
}

/// `concurrency` callers over one HTTP/2 connection each, for `seconds`.
pub async fn grpc(target: &GrpcTarget, concurrency: usize, seconds: u64) -> Result<Run, String> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let target = Arc::new(target.clone());
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(target.url.clone())
                .map_err(|e| e.to_string())?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| format!("gRPC connect: {e}"))?;
            let mut client = InferenceServiceClient::new(channel);
            let params = grpc_params(&target.model, target.user.as_deref(), &target.tags);
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                let request = authorized(&target.key, CreateChatCompletionRequest { params: Some(params.clone()) });
                match client.create_chat_completion(request).await {
                    Ok(_) => latencies.push(t.elapsed().as_secs_f64() * 1e6),
                    Err(status) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("gRPC call failed: {} {}", status.code(), status.message());
                        }
                    }
                }
            }
            Ok::<_, String>((latencies, errors))
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.map_err(|e| e.to_string())??;
        all.extend(l);
        errors += e;
    }
    Ok(summarize(all, errors, started.elapsed().as_secs_f64()))
}

/// Time to the first content of `n` streamed gRPC calls, one after the other.
pub async fn ttft_grpc(target: &GrpcTarget, n: usize) -> Result<Run, String> {
    let channel = tonic::transport::Endpoint::from_shared(target.url.clone())
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("gRPC connect: {e}"))?;
    let mut client = InferenceServiceClient::new(channel);
    let params = grpc_params(&target.model, target.user.as_deref(), &target.tags);
    let mut out = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let request = authorized(&target.key, StreamChatCompletionRequest { params: Some(params.clone()) });
        let mut stream = client.stream_chat_completion(request).await.map_err(|s| s.message().to_owned())?.into_inner();
        let mut first = None;
        while let Some(message) = stream.next().await {
            let message = message.map_err(|s| s.message().to_owned())?;
            if first.is_none() && !message.choices.is_empty() {
                first = Some(t.elapsed());
            }
        }
        out.push(first.ok_or("the gRPC stream carried no content")?.as_secs_f64() * 1e6);
    }
    Ok(summarize(out, 0, started.elapsed().as_secs_f64()))
}

/// User plus system CPU time a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let hz = clock_ticks();
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz as f64)
}

fn clock_ticks() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// A process's resident memory (MiB).
pub fn rss_mib(pid: u32) -> f64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0.0 };
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
