//! Several instances on one PostgreSQL and one Redis behave as one: a change made through one
//! instance is refused by the others on their next request.

use std::time::{Duration, Instant};

use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, json, standard_config};

fn redis_url() -> String {
    std::env::var("FERRYMAN_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[tokio::test]
async fn a_block_on_one_instance_is_seen_by_the_others_within_a_second() {
    let mut config = standard_config(None);
    config.push_str(&format!(
        "  redis_url: {}\n  redis_key_prefix: test-{}\n",
        redis_url(),
        uuid::Uuid::new_v4().simple()
    ));
    let a = Gateway::start(Options { backend: Backend::Postgres, config, env: vec![] }).await;
    let b = a.another_instance().await;
    let c = a.another_instance().await;
    for gw in [&a, &b, &c] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gw.logs().contains("subscribed to cache invalidations") {
            assert!(Instant::now() < deadline, "no subscription: {}", gw.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (s, _, _) = b.http().post("/team/new", MASTER_KEY, json!({"team_id": "t"})).await;
    assert_eq!(s, 200);
    let (_, _, key) = b.http().post("/key/generate", MASTER_KEY, json!({"team_id": "t"})).await;
    let secret = key["key"].as_str().unwrap();
    let call = json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]});
    // Every instance has the key cached.
    for gw in [&a, &b, &c] {
        assert_eq!(gw.http().post("/v1/chat/completions", secret, call.clone()).await.0, 200);
    }
    // Block the team on B: A and C refuse within a second.
    let (s, _, _) = b.http().post("/team/block", MASTER_KEY, json!({"team_id": "t"})).await;
    assert_eq!(s, 200);
    let blocked_at = Instant::now();
    for gw in [&a, &c] {
        loop {
            let (s, _, _) = gw.http().post("/v1/chat/completions", secret, call.clone()).await;
            if s == 403 {
                break;
            }
            assert!(blocked_at.elapsed() < Duration::from_secs(1), "still admitted after a second: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // And the key itself, deleted on C, stops on A and B.
    let (s, _, _) = c.http().post("/team/unblock", MASTER_KEY, json!({"team_id": "t"})).await;
    assert_eq!(s, 200);
    let deadline = Instant::now() + Duration::from_secs(1);
    while a.http().post("/v1/chat/completions", secret, call.clone()).await.0 != 200 {
        assert!(Instant::now() < deadline, "unblock not seen on A");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, _, _) = c.http().post("/key/delete", MASTER_KEY, json!({"keys": [key["token"]]})).await;
    assert_eq!(s, 200);
    let deleted_at = Instant::now();
    for gw in [&a, &b] {
        while gw.http().post("/v1/chat/completions", secret, call.clone()).await.0 != 401 {
            assert!(deleted_at.elapsed() < Duration::from_secs(1), "deleted key still admitted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
