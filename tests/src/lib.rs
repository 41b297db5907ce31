//! End-to-end test support: start the real `ferryman` binary on a fresh database, and a mock
//! OpenAI upstream that records what it receives.
//!
//! Every suite in `tests/` builds on [`Gateway::start`]. Databases are unique per test
//! (`ferryman_test_<uuid>` on the local PostgreSQL, or a file in a temporary directory) and
//! removed afterwards.

pub mod mock_anthropic;
pub mod mock_gemini;
pub mod mock_openai;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use serde_json::{Value, json};

/// The master key every test gateway uses.
pub const MASTER_KEY: &str = "sk-test-master-key-0123456789";

/// The database behind a test gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];
}

/// The PostgreSQL server tests use (trust auth), without a database name.
pub fn postgres_base_url() -> String {
    std::env::var("FERRYMAN_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The `ferryman` binary, built once per test process (a no-op when it is fresh).
pub fn ferryman_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("FERRYMAN_BIN") {
            // Absolute: gateways run in their own working directories.
            return std::fs::canonicalize(&path).unwrap_or_else(|_| PathBuf::from(path));
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "ferryman-server", "--bin", "ferryman"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the ferryman binary failed");
        let target =
            std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace_root().join("target"));
        target.join("debug").join("ferryman")
    })
    .clone()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("ferryman-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A database for one test: a SQLite file in `dir`, or a fresh PostgreSQL database dropped
/// when this is dropped.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn create(backend: Backend, dir: &Path) -> Self {
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.join("ferryman.db").display());
                TestDb { backend, url, pg_name: None }
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let name = format!("ferryman_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", postgres_base_url()))
                    .await
                    .expect("connect to the test PostgreSQL (is it running?)");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let url = format!("{}/{name}", postgres_base_url());
                TestDb { backend, url, pg_name: Some(name) }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        let base = postgres_base_url();
        // Drop runs outside any runtime guarantee: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// What a test gateway runs with.
pub struct Options {
    pub backend: Backend,
    /// The config file's text; `{database_url}` is replaced with the test database.
    pub config: String,
    pub env: Vec<(String, String)>,
}

/// The config most suites use: the mock `demo` model (priced), and `gpt-4o-mini` on an
/// OpenAI-compatible upstream when one is given.
pub fn standard_config(openai_base: Option<&str>) -> String {
    let mut cfg = String::from(
        r#"model_list:
  - model_name: demo
    litellm_params:
      model: mock/demo
      input_cost_per_token: 0.00000015
      output_cost_per_token: 0.0000006
    model_info:
      id: demo-mock-1
"#,
    );
    if let Some(base) = openai_base {
        cfg.push_str(&format!(
            r#"  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}
      api_key: os.environ/UPSTREAM_KEY
    model_info:
      id: openai-mini-1
"#
        ));
    }
    cfg.push_str(&format!(
        "general_settings:\n  master_key: {MASTER_KEY}\n  database_url: \"{{database_url}}\"\n  max_request_size_mb: 0.05\n"
    ));
    cfg
}

/// A running `ferryman serve` process.
pub struct Gateway {
    pub addr: SocketAddr,
    pub url: String,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub db: Arc<TestDb>,
    pub dir: Arc<TempDir>,
    config_path: PathBuf,
    env: Vec<(String, String)>,
}

impl Gateway {
    /// Starts a gateway on a fresh database.
    pub async fn start(opts: Options) -> Gateway {
        let dir = Arc::new(TempDir::new());
        let db = Arc::new(TestDb::create(opts.backend, dir.path()).await);
        let config = opts.config.replace("{database_url}", &db.url);
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).expect("write config");
        Self::spawn(db, dir, config_path, opts.env).await
    }

    /// Starts another instance beside this one: same config and database, its own working
    /// directory (and so its own spool).
    pub async fn another_instance(&self) -> Gateway {
        let dir = Arc::new(TempDir::new());
        Self::spawn(self.db.clone(), dir, self.config_path.clone(), self.env.clone()).await
    }

    /// Another instance beside this one with extra environment (e.g. a config override).
    pub async fn another_instance_with(&self, extra: &[(&str, &str)]) -> Gateway {
        let dir = Arc::new(TempDir::new());
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Self::spawn(self.db.clone(), dir, self.config_path.clone(), env).await
    }

    /// Starts another gateway process on the same database and config (after a restart).
    pub async fn restart_on_same_db(&self) -> Gateway {
        Self::spawn(self.db.clone(), self.dir.clone(), self.config_path.clone(), self.env.clone()).await
    }

    async fn spawn(db: Arc<TestDb>, dir: Arc<TempDir>, config_path: PathBuf, env: Vec<(String, String)>) -> Gateway {
        let bin = ferryman_bin();
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--host", "127.0.0.1", "--port", "0", "--config"])
            .arg(&config_path)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("FERRYMAN_MASTER_KEY")
            .env("FERRYMAN_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ferryman");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                    sent = true;
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("ferryman did not start; its log:\n{}", logs.lock().unwrap().join("\n"))
            });
        let addr: SocketAddr = addr.parse().expect("listening address");
        Gateway { addr, url: format!("http://{addr}"), child, logs, db, dir, config_path, env }
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "ferryman did not exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id (for /proc figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The config file the process was started with (tests rewrite it, then reload).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Sends SIGHUP: reload the config file.
    pub fn signal_hangup(&self) {
        let _ = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status();
    }

    /// Waits until the log has `needle` at least `count` times.
    pub async fn log_count_reaches(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.logs().matches(needle).count() < count {
            assert!(Instant::now() < deadline, "log never showed {needle:?} {count} time(s):\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_terminate(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    /// Waits for an exit already under way.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "ferryman did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn http(&self) -> Http {
        Http { base: self.url.clone(), client: reqwest::Client::new() }
    }

    /// A gRPC channel to the gateway.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.url.clone()).unwrap().connect().await.expect("grpc connect")
    }

    /// Posts raw bytes to a gRPC method path, for requests no generated client would send:
    /// over HTTP/2 (prior knowledge) for `application/grpc`, over HTTP/1.1 for gRPC-web content
    /// types. Answers the HTTP status and headers; an error answered before any message
    /// (trailers-only) carries its `grpc-status` there.
    pub async fn grpc_raw(
        &self,
        method: &str,
        key: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap) {
        let builder = reqwest::Client::builder();
        let client = if content_type.starts_with("application/grpc-web") {
            builder.http1_only()
        } else {
            builder.http2_prior_knowledge()
        }
        .build()
        .expect("http client");
        let resp = client
            .post(format!("{}{method}", self.url))
            .header("content-type", content_type)
            .header("te", "trailers")
            .bearer_auth(key)
            .body(body)
            .send()
            .await
            .expect("grpc raw request");
        (resp.status().as_u16(), resp.headers().clone())
    }

    /// Mints a virtual key with the master key over HTTP; returns the response body.
    /// `initialize` on `/mcp/<path>` with `key`: the status the gateway answers with.
    pub async fn mcp_initialize(&self, path: &str, key: &str) -> u16 {
        let body = json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "ferryman-tests", "version": "1"}},
        });
        let r = reqwest::Client::new()
            .post(format!("{}/mcp/{path}", self.url))
            .bearer_auth(key)
            .header("accept", "application/json, text/event-stream")
            .json(&body)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    pub async fn create_key(&self, body: Value) -> Value {
        let (status, _, v) = self.http().post("/key/generate", MASTER_KEY, body).await;
        assert_eq!(status, 200, "key/generate failed: {v}");
        v
    }

    /// Spend records, polled until `want` are there (the ledger writes in the background).
    pub async fn spend_logs_until(&self, query: &str, want: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _, v) = self.http().get(&format!("/spend/logs?{query}"), MASTER_KEY).await;
            assert_eq!(status, 200, "spend/logs failed: {v}");
            let rows = v.as_array().cloned().unwrap_or_default();
            if rows.len() >= want || Instant::now() > deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small JSON HTTP client for the gateway.
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

pub type Reply = (u16, reqwest::header::HeaderMap, Value);

impl Http {
    async fn finish(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, v)
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        let resp = self.client.post(format!("{}{path}", self.base)).bearer_auth(key).json(&body).send().await.unwrap();
        Self::finish(resp).await
    }

    pub async fn post_raw(&self, path: &str, key: Option<&str>, body: impl Into<reqwest::Body>) -> Reply {
        let mut req = self.client.post(format!("{}{path}", self.base)).header("content-type", "application/json");
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        Self::finish(req.body(body).send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        let resp = self.client.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        Self::finish(resp).await
    }

    /// A streamed chat call: the response headers and every SSE `data:` payload.
    pub async fn stream(&self, key: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Vec<String>) {
        let resp = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let events = text.split("\n\n").filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_owned)).collect();
        (status, headers, events)
    }
}

/// The OpenAI error body's `error` object, asserting the shape.
/// Waits until at least 15 s remain in the current minute, so a test's calls share one
/// rate-limit window.
pub async fn early_in_a_minute() {
    let secs = chrono::Utc::now().timestamp() % 60;
    if secs > 45 {
        tokio::time::sleep(Duration::from_secs((61 - secs) as u64)).await;
    }
}

pub fn openai_error(v: &Value) -> &serde_json::Map<String, Value> {
    let e = v.get("error").and_then(Value::as_object).unwrap_or_else(|| panic!("not an OpenAI error body: {v}"));
    for field in ["message", "type", "param", "code"] {
        assert!(e.contains_key(field), "error body lacks {field}: {v}");
    }
    e
}

/// Cost in nano-USD of a call at femto-USD prices, rounded half up once, as the gateway does.
pub fn expected_cost_nanos(prompt: u64, completion: u64, input_femto: i128, output_femto: i128) -> i64 {
    let femto = i128::from(prompt) * input_femto + i128::from(completion) * output_femto;
    i64::try_from((femto + 500_000) / 1_000_000).unwrap()
}
