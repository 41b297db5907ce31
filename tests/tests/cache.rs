//! The response cache through the real binary: exact-match hits cost nothing and are marked,
//! tenants never share entries (by default a team's keys do), per-request controls, ttl, and the
//! same behaviour with the entries in Redis.

use std::time::Duration;

use ferryman_tests::mock_openai::MockOpenAi;
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, json};

async fn start(upstream: &MockOpenAi, cache_params: &str, general: &str) -> Gateway {
    let config = format!(
        r#"model_list:
  - model_name: gpt
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {}
      api_key: sk-up
litellm_settings:
  cache: true
  cache_params:
{cache_params}general_settings:
  master_key: {MASTER_KEY}
  database_url: "{{database_url}}"
{general}"#,
        upstream.base_url
    );
    Gateway::start(Options { backend: Backend::Sqlite, config, env: vec![] }).await
}

fn ask(extra: Value) -> Value {
    let mut b = json!({"model": "gpt", "messages": [{"role": "user", "content": "What is 2+2?"}], "temperature": 0});
    if let (Value::Object(b), Value::Object(e)) = (&mut b, extra) {
        b.extend(e);
    }
    b
}

async fn key_in(gw: &Gateway, team: &str) -> String {
    let (s, _, _) = gw.http().post("/team/new", MASTER_KEY, json!({"team_id": team})).await;
    assert!(s == 200 || s == 409);
    gw.create_key(json!({"team_id": team})).await["key"].as_str().unwrap().to_owned()
}

async fn exercise(gw: &Gateway, upstream: &MockOpenAi) {
    let (a, b, c) = (key_in(gw, "red").await, key_in(gw, "blue").await, key_in(gw, "red").await);
    let call = |key: String, body: Value| async move { gw.http().post("/v1/chat/completions", &key, body).await };
    let (s, h, first) = call(a.clone(), ask(json!({}))).await;
    assert_eq!(s, 200, "{first}");
    assert!(h.get("x-ferryman-cache-hit").is_none());
    // The same request again, with a different end customer: a hit, free, marked.
    let (s, h, second) = call(a.clone(), ask(json!({"user": "someone-else"}))).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-ferryman-cache-hit"], "true");
    assert_eq!(h["x-ferryman-response-cost"], "0");
    assert_eq!(second["choices"], first["choices"]);
    assert_eq!(upstream.received().len(), 1);
    // Another team's key misses; a key of the same team hits.
    assert!(call(b.clone(), ask(json!({}))).await.1.get("x-ferryman-cache-hit").is_none());
    assert_eq!(upstream.received().len(), 2);
    assert_eq!(call(c.clone(), ask(json!({}))).await.1["x-ferryman-cache-hit"], "true");
    // A different request misses.
    assert!(call(a.clone(), ask(json!({"temperature": 1}))).await.1.get("x-ferryman-cache-hit").is_none());
    assert_eq!(upstream.received().len(), 3);
    // no-cache skips the lookup (and the controls never reach the upstream); no-store keeps the
    // answer out; ttl sets the entry's lifetime.
    let (_, h, _) = call(a.clone(), ask(json!({"cache": {"no-cache": true}}))).await;
    assert!(h.get("x-ferryman-cache-hit").is_none());
    assert_eq!(upstream.received().len(), 4);
    assert!(upstream.received()[3].body.get("cache").is_none(), "cache controls stay in the gateway");
    let fresh = ask(json!({"seed": 7}));
    call(
        a.clone(),
        json!({"cache": {"no-store": true}}).as_object().unwrap().clone().into_iter().fold(
            fresh.clone(),
            |mut b, (k, v)| {
                b[k] = v;
                b
            },
        ),
    )
    .await;
    assert!(call(a.clone(), fresh.clone()).await.1.get("x-ferryman-cache-hit").is_none(), "no-store stored nothing");
    let short = ask(json!({"seed": 8, "cache": {"ttl": 1}}));
    call(a.clone(), short.clone()).await;
    assert_eq!(call(a.clone(), short.clone()).await.1["x-ferryman-cache-hit"], "true");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(call(a.clone(), short).await.1.get("x-ferryman-cache-hit").is_none(), "expired after its ttl");
    // Hits are in the spend log: free and marked.
    let logs = gw.spend_logs_until("page_size=100", 11).await;
    let hits: Vec<&Value> = logs.iter().filter(|r| r["cache_hit"] == true).collect();
    assert_eq!(hits.len(), 3, "{logs:?}");
    assert!(hits.iter().all(|r| r["spend_nanos"] == 0));
}

#[tokio::test]
async fn local_cache_hits_are_free_and_scoped_to_the_team() {
    let upstream = MockOpenAi::start().await;
    let gw = start(&upstream, "    type: local\n    ttl: 600\n", "").await;
    exercise(&gw, &upstream).await;
}

#[tokio::test]
async fn redis_cache_behaves_the_same() {
    let upstream = MockOpenAi::start().await;
    let url = std::env::var("FERRYMAN_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    // Entries live under the deployment's key prefix: this test's own.
    let general = format!("  redis_key_prefix: {prefix}\n");
    let gw = start(&upstream, &format!("    type: redis\n    url: {url}\n    ttl: 600\n"), &general).await;
    exercise(&gw, &upstream).await;
    // Clean up this test's entries.
    let keys = std::process::Command::new("redis-cli")
        .args(["-u", &url, "--scan", "--pattern", &format!("{prefix}:*")])
        .output()
        .unwrap();
    for key in String::from_utf8_lossy(&keys.stdout).lines() {
        std::process::Command::new("redis-cli").args(["-u", &url, "DEL", key]).output().unwrap();
    }
}
