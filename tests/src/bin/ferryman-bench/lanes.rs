//! The lanes: what sits between the load and the mock upstream, started fresh for each run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options};
use serde_json::{Value, json};

use crate::load::{GrpcTarget, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The load straight at the mock: the baseline every other lane is measured against.
    Direct,
    /// Ferryman with the master key: no limits, no budgets (spend records still written).
    Plain,
    /// Ferryman on SQLite with a virtual key in a team in an organization, a customer, tags,
    /// strict budgets on each, and rpm/tpm/parallel limits on key, team and customer.
    GovernedSqlite,
    /// The same governance on PostgreSQL with Redis (one Redis round trip per call).
    GovernedRedis,
    /// The governed SQLite lane over gRPC, driven by the project's own tonic client.
    GovernedGrpc,
    /// LiteLLM's proxy with its master key (no database).
    LitellmMaster,
    /// LiteLLM's proxy with a virtual key on PostgreSQL.
    LitellmVirtual,
}

impl Lane {
    pub const ALL: [Lane; 7] = [
        Lane::Direct,
        Lane::Plain,
        Lane::GovernedSqlite,
        Lane::GovernedRedis,
        Lane::GovernedGrpc,
        Lane::LitellmMaster,
        Lane::LitellmVirtual,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Lane::Direct => "direct",
            Lane::Plain => "plain",
            Lane::GovernedSqlite => "governed-sqlite",
            Lane::GovernedRedis => "governed-redis",
            Lane::GovernedGrpc => "governed-grpc",
            Lane::LitellmMaster => "litellm-master",
            Lane::LitellmVirtual => "litellm-virtual",
        }
    }

    pub fn parse(name: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// Where the mocks listen.
#[derive(Debug, Clone, Copy)]
pub struct Mocks {
    /// No added latency (added-latency and streaming runs).
    pub fast: u16,
    /// A fixed latency (the throughput runs).
    pub slow: u16,
}

/// What the harness needs from outside.
#[derive(Debug, Clone)]
pub struct Setup {
    pub litellm: Option<PathBuf>,
    pub postgres: String,
    pub redis: String,
    pub work: PathBuf,
}

/// A started lane: the calls to load it with, and the process to watch.
pub struct Running {
    pub fast: Target,
    pub slow: Target,
    pub grpc: Option<(GrpcTarget, GrpcTarget)>,
    pub pid: Option<u32>,
    /// Keeps the processes alive until dropped.
    _gateway: Option<Gateway>,
    _child: Option<ChildGuard>,
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const TAGS: [&str; 2] = ["bench-product", "bench-feature"];
const CUSTOMER: &str = "bench-customer";

fn body(model: &str, governed: bool) -> Value {
    let mut b = json!({
        "model": model,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say something short about foxes."}],
    });
    if governed {
        b["user"] = json!(CUSTOMER);
        b["tags"] = json!(TAGS);
    }
    b
}

fn ferryman_config(mocks: Mocks, extra: &str) -> String {
    let mut config = String::from("model_list:\n");
    for (name, port) in [("bench-fast", mocks.fast), ("bench-slow", mocks.slow)] {
        config.push_str(&format!(
            "  - model_name: {name}\n    litellm_params:\n      model: openai/bench\n      api_base: http://127.0.0.1:{port}/v1\n      api_key: sk-upstream\n      input_cost_per_token: 0.00000015\n      output_cost_per_token: 0.0000006\n"
        ));
    }
    config.push_str(&format!(
        "general_settings:\n  master_key: {MASTER_KEY}\n  database_url: \"{{database_url}}\"\n  budget_enforcement: strict\n{extra}"
    ));
    config
}

async fn admin(gw: &Gateway, path: &str, body: Value) -> Result<Value, String> {
    let (s, _, v) = gw.http().post(path, MASTER_KEY, body).await;
    if s == 200 { Ok(v) } else { Err(format!("{path} answered {s}: {v}")) }
}

/// An organization, a team in it, a user in the team and a key of theirs, a customer and two
/// tags: strict budgets on each (large enough never to run out), rate limits on key, team and
/// customer (high enough never to refuse, but counted). Returns the key.
async fn govern(gw: &Gateway) -> Result<String, String> {
    let budget = 1_000_000.0;
    let limits = json!({"rpm_limit": 100_000_000u64, "tpm_limit": 100_000_000_000u64, "max_parallel_requests": 10_000});
    let with = |mut v: Value| {
        if let (Value::Object(v), Value::Object(l)) = (&mut v, limits.clone()) {
            v.extend(l);
        }
        v
    };
    admin(
        gw,
        "/organization/new",
        json!({"organization_id": "bench-org", "organization_alias": "Bench", "max_budget": budget}),
    )
    .await?;
    admin(
        gw,
        "/team/new",
        with(json!({"team_id": "bench-team", "organization_id": "bench-org", "max_budget": budget})),
    )
    .await?;
    admin(gw, "/user/new", json!({"user_id": "bench-user", "auto_create_key": false, "max_budget": budget})).await?;
    admin(
        gw,
        "/team/member_add",
        json!({"team_id": "bench-team", "member": {"user_id": "bench-user", "role": "user"}, "max_budget_in_team": budget}),
    )
    .await?;
    for tag in TAGS {
        admin(gw, "/tag/new", json!({"name": tag, "max_budget": budget})).await?;
    }
    admin(gw, "/customer/new", with(json!({"user_id": CUSTOMER, "max_budget": budget}))).await?;
    let key = admin(
        gw,
        "/key/generate",
        with(json!({"team_id": "bench-team", "user_id": "bench-user", "max_budget": budget, "budget_duration": "30d"})),
    )
    .await?;
    key["key"].as_str().map(str::to_owned).ok_or_else(|| format!("/key/generate answered {key}"))
}

/// A Ferryman process on a fresh database (the test library's launcher; FERRYMAN_BIN names
/// the release binary).
async fn start_ferryman(backend: Backend, extra: &str, mocks: Mocks) -> Gateway {
    Gateway::start(Options { backend, config: ferryman_config(mocks, extra), env: vec![] }).await
}

pub async fn start(lane: Lane, setup: &Setup, mocks: Mocks) -> Result<Running, String> {
    let direct = |port: u16| format!("http://127.0.0.1:{port}/v1/chat/completions");
    match lane {
        Lane::Direct => Ok(Running {
            fast: Target { url: direct(mocks.fast), key: "sk-upstream".into(), body: body("bench", false) },
            slow: Target { url: direct(mocks.slow), key: "sk-upstream".into(), body: body("bench", false) },
            grpc: None,
            pid: None,
            _gateway: None,
            _child: None,
        }),
        Lane::Plain | Lane::GovernedSqlite | Lane::GovernedRedis | Lane::GovernedGrpc => {
            let (backend, extra) = match lane {
                Lane::GovernedRedis => (
                    Backend::Postgres,
                    format!(
                        "  redis_url: {}\n  redis_key_prefix: bench-{}\n",
                        setup.redis,
                        uuid::Uuid::new_v4().simple()
                    ),
                ),
                _ => (Backend::Sqlite, String::new()),
            };
            let gw = start_ferryman(backend, &extra, mocks).await;
            let governed = lane != Lane::Plain;
            let key = if governed { govern(&gw).await? } else { MASTER_KEY.to_owned() };
            let url = format!("{}/v1/chat/completions", gw.url);
            let grpc = (lane == Lane::GovernedGrpc).then(|| {
                let target = |model: &str| GrpcTarget {
                    url: gw.url.clone(),
                    key: key.clone(),
                    model: model.to_owned(),
                    user: Some(CUSTOMER.to_owned()),
                    tags: TAGS.iter().map(|t| (*t).to_owned()).collect(),
                };
                (target("bench-fast"), target("bench-slow"))
            });
            Ok(Running {
                fast: Target { url: url.clone(), key: key.clone(), body: body("bench-fast", governed) },
                slow: Target { url, key, body: body("bench-slow", governed) },
                grpc,
                pid: Some(gw.pid()),
                _gateway: Some(gw),
                _child: None,
            })
        }
        Lane::LitellmMaster | Lane::LitellmVirtual => start_litellm(lane, setup, mocks).await,
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

async fn start_litellm(lane: Lane, setup: &Setup, mocks: Mocks) -> Result<Running, String> {
    let bin = setup.litellm.clone().ok_or("LiteLLM is not installed (tests/bench/run.sh installs it)")?;
    let dir = setup.work.join(format!("litellm-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut config = String::from("model_list:\n");
    for (name, port) in [("bench-fast", mocks.fast), ("bench-slow", mocks.slow)] {
        config.push_str(&format!(
            "  - model_name: {name}\n    litellm_params:\n      model: openai/bench\n      api_base: http://127.0.0.1:{port}/v1\n      api_key: sk-upstream\n"
        ));
    }
    config.push_str(&format!("general_settings:\n  master_key: {MASTER_KEY}\n"));
    if lane == Lane::LitellmVirtual {
        config.push_str("  database_url: os.environ/DATABASE_URL\n");
    }
    config.push_str("litellm_settings:\n  telemetry: false\n  turn_off_message_logging: true\n");
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("litellm.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&bin);
    cmd.args(["--config"])
        .arg(&path)
        .args(["--port", &port.to_string(), "--host", "127.0.0.1", "--num_workers", "1"])
        .current_dir(&dir)
        .env("LITELLM_LOG", "ERROR")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let db = if lane == Lane::LitellmVirtual {
        let db = litellm_database(&setup.postgres).await?;
        cmd.env("DATABASE_URL", &db);
        Some(db)
    } else {
        None
    };
    let mut child = ChildGuard(cmd.spawn().map_err(|e| format!("cannot start LiteLLM: {e}"))?);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &mut child.0, &dir.join("litellm.log"), Duration::from_secs(180)).await?;
    let key = match db {
        None => MASTER_KEY.to_owned(),
        Some(_) => {
            let client = reqwest::Client::new();
            let v: Value = client
                .post(format!("{base}/key/generate"))
                .bearer_auth(MASTER_KEY)
                .json(&json!({"models": ["bench-fast", "bench-slow"], "max_budget": 1_000_000}))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            v["key"].as_str().map(str::to_owned).ok_or_else(|| format!("LiteLLM /key/generate answered {v}"))?
        }
    };
    let url = format!("{base}/v1/chat/completions");
    Ok(Running {
        fast: Target { url: url.clone(), key: key.clone(), body: body("bench-fast", false) },
        slow: Target { url, key, body: body("bench-slow", false) },
        grpc: None,
        pid: Some(child.0.id()),
        _gateway: None,
        _child: Some(child),
    })
}

/// A fresh PostgreSQL database for LiteLLM (left behind: LiteLLM owns its schema).
async fn litellm_database(base: &str) -> Result<String, String> {
    use sqlx::Connection;
    let name = format!("litellm_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&format!("{base}/postgres")).await.map_err(|e| e.to_string())?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("{base}/{name}"))
}

/// Waits for LiteLLM's liveness route; if the process exits or the time runs out, the error
/// carries the last lines of its log (the first line says why, for the table).
async fn wait_ready(base: &str, child: &mut Child, log: &Path, within: Duration) -> Result<(), String> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    let tail = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let reason = lines
            .iter()
            .rev()
            .find(|l| l.contains("rror") || l.contains("failed") || l.contains("cannot"))
            .map_or("", |l| l.trim());
        format!("{reason}\n{}", lines[lines.len().saturating_sub(15)..].join("\n"))
    };
    loop {
        if let Ok(r) = client.get(format!("{base}/health/liveliness")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("LiteLLM exited ({status}): {}", tail()));
        }
        if Instant::now() > deadline {
            return Err(format!("LiteLLM did not become ready within {within:?}: {}", tail()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
