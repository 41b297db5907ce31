//! The command line: `config check`, a refused start, `migrate`, and `keys create|list|delete`
//! against a running gateway; and graceful shutdown that drains and flushes.

use std::process::Command;

use ferryman_tests::{
    Backend, Gateway, MASTER_KEY, Options, TempDir, TestDb, Value, ferryman_bin, json, standard_config,
};

fn run(args: &[&str], dir: &std::path::Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(ferryman_bin());
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1").env_remove("DATABASE_URL").env_remove("FERRYMAN_MASTER_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BAD_CONFIG: &str = r#"
model_list:
  - model_name: demo
    litellm_params:
      model: mock/demo
      rpm: lots
  - model_name: ""
    litellm_params:
      model: bedrock/claude
  - litellm_params:
      model: openai/gpt-4o
      api_base: not a url
general_settings:
  master_key: os.environ/FERRYMAN_TEST_UNSET_VAR
  database_url: mysql://nope
  alerting: ["slack"]
router_settings:
  routing_strategy: fastest
  enable_pre_call_checks: true
"#;

#[test]
fn config_check_lists_every_problem_and_warning() {
    let dir = TempDir::new();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, BAD_CONFIG).unwrap();
    let (ok, stdout, _) = run(&["config", "check", bad.to_str().unwrap()], dir.path(), &[]);
    assert!(!ok);
    for expected in [
        "error: model_list[0].litellm_params.rpm: expected a non-negative whole number, found \"lots\"",
        "error: model_list[1].model_name: must not be empty",
        "error: model_list[1].litellm_params.model: provider \"bedrock\" is not supported",
        "error: model_list[2].model_name: is required",
        "error: model_list[2].litellm_params.api_base: \"not a url\" is not an http(s) URL",
        "error: general_settings.master_key: environment variable FERRYMAN_TEST_UNSET_VAR is not set",
        "error: general_settings.database_url: must start with postgresql://",
        "warning: general_settings.alerting: not supported by this version",
        "error: router_settings.routing_strategy: \"fastest\" is not a routing strategy",
        "warning: router_settings.enable_pre_call_checks: not supported by this version",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert_eq!(stdout.lines().filter(|l| l.starts_with("error: ")).count(), 8, "{stdout}");
    assert!(!stdout.contains("mysql://nope"), "a database URL may hold a password: never print it");

    // A start with the same file refuses with the same problems.
    let (ok, _, stderr) = run(&["serve", "--port", "0", "--config", bad.to_str().unwrap()], dir.path(), &[]);
    assert!(!ok);
    assert!(stderr.contains("model_list[1].model_name: must not be empty"), "{stderr}");
    assert!(stderr.contains("the configuration has 8 problem(s); nothing was started"), "{stderr}");

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "model_list:\n  - model_name: m\n    litellm_params:\n      model: mock/m\nlitellm_settings:\n  drop_params: true\n").unwrap();
    let (ok, stdout, _) = run(&["config", "check", good.to_str().unwrap()], dir.path(), &[]);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("warning: litellm_settings.drop_params"), "{stdout}");
    assert!(stdout.contains("OK (1 deployment(s), 0 organization(s), 0 team(s), 0 user(s), 0 key(s)"), "{stdout}");
    assert!(stdout.contains(", 1 warning(s))"), "{stdout}");

    let (ok, _, stderr) = run(&["config", "check", "/nonexistent.yaml"], dir.path(), &[]);
    assert!(!ok);
    assert!(stderr.contains("1 problem(s)"), "{stderr}");
}

#[tokio::test]
async fn migrate_creates_the_schema_on_both_backends() {
    for backend in Backend::ALL {
        let dir = TempDir::new();
        let db = TestDb::create(backend, dir.path()).await;
        let (ok, stdout, stderr) = run(&["migrate"], dir.path(), &[("DATABASE_URL", &db.url)]);
        assert!(ok, "{backend:?}: {stderr}");
        assert!(stdout.contains("migrations applied"), "{stdout}");
        // Idempotent.
        let (ok, _, stderr) = run(&["migrate"], dir.path(), &[("DATABASE_URL", &db.url)]);
        assert!(ok, "{stderr}");
        if backend == Backend::Sqlite {
            assert!(dir.path().join("ferryman.db").exists());
        }
    }
    // With no database configured, migrate creates ferryman.db in the working directory.
    let dir = TempDir::new();
    let (ok, stdout, _) = run(&["migrate"], dir.path(), &[]);
    assert!(ok);
    assert!(stdout.contains("sqlite://ferryman.db"), "{stdout}");
    assert!(dir.path().join("ferryman.db").exists());
}

#[tokio::test]
async fn keys_cli_creates_lists_and_deletes_through_the_running_gateway() {
    let gw = Gateway::start(Options { backend: Backend::Postgres, config: standard_config(None), env: vec![] }).await;
    let env = [("FERRYMAN_URL", gw.url.as_str()), ("FERRYMAN_MASTER_KEY", MASTER_KEY)];
    let dir = TempDir::new();

    let (ok, stdout, stderr) =
        run(&["keys", "create", "--alias", "cli-key", "--models", "demo", "--max-budget", "2.5"], dir.path(), &env);
    assert!(ok, "{stderr}");
    let created: Value = serde_json::from_str(&stdout).unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    assert_eq!(created["max_budget_usd"], "2.5");
    assert_eq!(created["models"], json!(["demo"]));

    // The key works.
    let (status, _, _) = gw
        .http()
        .post("/v1/chat/completions", &secret, json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(status, 200);

    let (ok, stdout, _) = run(&["keys", "list"], dir.path(), &env);
    assert!(ok);
    let list: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list[0]["key_alias"], "cli-key");
    assert!(!stdout.contains(&secret), "list shows the secret");

    let (ok, stdout, _) = run(&["keys", "delete", &key_id], dir.path(), &env);
    assert!(ok);
    assert!(stdout.contains("deleted key"));
    let (status, _, _) = gw
        .http()
        .post("/v1/chat/completions", &secret, json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(status, 401);

    // A wrong master key is refused with the gateway's message.
    let (ok, _, stderr) = run(
        &["keys", "list"],
        dir.path(),
        &[("FERRYMAN_URL", gw.url.as_str()), ("FERRYMAN_MASTER_KEY", "sk-wrong-0000000000")],
    );
    assert!(!ok);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
}

/// SIGTERM while calls are in flight: they all complete, and every spend record is in the
/// database when the process exits (checked by a second process on the same database).
async fn graceful_shutdown(backend: Backend) {
    let gw = Gateway::start(Options { backend, config: standard_config(None), env: vec![] }).await;
    let http = gw.http();
    let mut calls = Vec::new();
    for i in 0..20 {
        let client = http.client.clone();
        let url = format!("{}/v1/chat/completions", gw.url);
        let stream = i % 2 == 1;
        calls.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(MASTER_KEY)
                .json(&json!({"model": "demo", "mock_latency_ms": 700, "stream": stream,
                    "messages": [{"role": "user", "content": format!("call {i}")}]}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            (status, if stream { body.contains("data: [DONE]") } else { body.contains("mock response") }, body)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    gw.signal_terminate();
    for c in calls {
        let (status, complete, body) = c.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(complete, "cut short: {body}");
    }
    let mut gw = gw;
    let status = gw.wait_exit().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(gw.logs().contains("spend records flushed"), "{}", gw.logs());
    let next = gw.restart_on_same_db().await;
    let logs = next.spend_logs_until("page_size=100", 20).await;
    assert_eq!(logs.len(), 20);
}

#[tokio::test]
async fn graceful_shutdown_drains_and_flushes_on_sqlite() {
    graceful_shutdown(Backend::Sqlite).await;
}

#[tokio::test]
async fn graceful_shutdown_drains_and_flushes_on_postgres() {
    graceful_shutdown(Backend::Postgres).await;
}

/// Holds the database's write lock on spend records, so the gateway's writer cannot store
/// any: calls must still succeed (no database on the hot path), and the records must wait in
/// the spool.
async fn block_spend_writes(backend: Backend, url: &str) -> Box<dyn std::any::Any + Send> {
    use sqlx::Connection;
    match backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query("LOCK TABLE spend_logs IN ACCESS EXCLUSIVE MODE").execute(&mut conn).await.unwrap();
            Box::new(conn)
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await.unwrap();
            Box::new(conn)
        }
    }
}

/// SIGKILL right after the responses: every call's spend record is in the database after a
/// restart (replayed from the spool), each counted once.
async fn killed_gateway_loses_no_spend_record(backend: Backend) {
    let mut gw = Gateway::start(Options { backend, config: standard_config(None), env: vec![] }).await;
    let key = gw.create_key(json!({"key_alias": "kill-test"})).await;
    let secret = key["key"].as_str().unwrap().to_owned();
    let lock = block_spend_writes(backend, &gw.db.url).await;
    let http = gw.http();
    let mut expected = 0i64;
    for i in 0..25 {
        let (status, headers, body) = http
            .post(
                "/v1/chat/completions",
                &secret,
                json!({"model": "demo", "user": "victim",
                "messages": [{"role": "user", "content": format!("call number {i}")}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let cost = headers["x-ferryman-response-cost"].to_str().unwrap();
        expected += (cost.parse::<f64>().unwrap() * 1e9).round() as i64;
    }
    gw.kill();
    drop(lock);
    let next = gw.restart_on_same_db().await;
    assert!(next.logs().contains("replayed spend records"), "{}", next.logs());
    let logs = next.spend_logs_until("end_user=victim&page_size=100", 25).await;
    assert_eq!(logs.len(), 25);
    let (status, _, info) =
        next.http().get(&format!("/key/info?key={}", key["token"].as_str().unwrap()), MASTER_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(info["info"]["spend_nanos"].as_i64().unwrap(), expected, "each record counted exactly once");
}

#[tokio::test]
async fn killed_gateway_loses_no_spend_record_on_sqlite() {
    killed_gateway_loses_no_spend_record(Backend::Sqlite).await;
}

#[tokio::test]
async fn killed_gateway_loses_no_spend_record_on_postgres() {
    killed_gateway_loses_no_spend_record(Backend::Postgres).await;
}
