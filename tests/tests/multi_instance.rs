//! Several instances on one PostgreSQL (and one Redis) behave as one: a change made through
//! one instance is refused by the others on their next request with Redis, and within the
//! audit feed's bound without it (or while it is down).

use std::time::{Duration, Instant};

use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, early_in_a_minute, json, standard_config};

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

async fn three_instances(extra: &str) -> (Gateway, Gateway, Gateway) {
    three_on(&format!("test-{}", uuid::Uuid::new_v4().simple()), extra).await
}

/// Three instances sharing the Redis key prefix `prefix`.
async fn three_on(prefix: &str, extra: &str) -> (Gateway, Gateway, Gateway) {
    let mut config = standard_config(None);
    config.push_str(&format!("  redis_url: {}\n  redis_key_prefix: {prefix}\n{extra}", redis_url()));
    let a = Gateway::start(Options { backend: Backend::Postgres, config, env: vec![] }).await;
    let b = a.another_instance().await;
    let c = a.another_instance().await;
    (a, b, c)
}

fn call(extra: serde_json::Value) -> serde_json::Value {
    let mut b = json!({"model": "demo", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]});
    if let (serde_json::Value::Object(b), serde_json::Value::Object(e)) = (&mut b, extra) {
        b.extend(e);
    }
    b
}

/// `n` concurrent calls spread round-robin over the instances; the statuses.
async fn spread(instances: &[&Gateway], key: &str, n: usize, extra: serde_json::Value) -> Vec<u16> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let http = instances[i % instances.len()].http();
        let (key, body) = (key.to_owned(), call(extra.clone()));
        tasks.push(tokio::spawn(async move { http.post("/v1/chat/completions", &key, body).await.0 }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// A call the mock answers after `ms`, in the background; it fails if its instance is killed,
/// which is what the tests using it do.
fn slow_call(gw: &Gateway, key: &str, ms: u64) -> tokio::task::JoinHandle<Result<reqwest::StatusCode, reqwest::Error>> {
    let http = gw.http();
    let request = http
        .client
        .post(format!("{}/v1/chat/completions", http.base))
        .bearer_auth(key)
        .json(&call(json!({"mock_latency_ms": ms})));
    tokio::spawn(async move { request.send().await.map(|r| r.status()) })
}

/// Limits held in Redis are exact across three instances: requests per minute, tokens per
/// minute and requests in flight; a killed instance's slots free themselves within the lease.
#[tokio::test]
async fn limits_are_exact_across_three_instances() {
    let (a, b, mut c) = three_instances("  redis_lease_seconds: 2\n").await;
    early_in_a_minute().await;
    let key = |body| {
        let a = &a;
        async move {
            let (s, _, v) = a.http().post("/key/generate", MASTER_KEY, body).await;
            assert_eq!(s, 200, "{v}");
            v["key"].as_str().unwrap().to_owned()
        }
    };

    // RPM 6 under 18 concurrent calls over three instances: exactly 6.
    let rpm = key(json!({"rpm_limit": 6})).await;
    let statuses = spread(&[&a, &b, &c], &rpm, 18, json!({})).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 6, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    let (s, h, _) = b.http().post("/v1/chat/completions", &rpm, call(json!({}))).await;
    assert_eq!(s, 429);
    assert!(h.contains_key("retry-after"));
    // The usage API reads the shared counters without taking from them.
    let (_, _, check) = b.http().post("/usage/check", &rpm, json!({"model": "demo"})).await;
    assert_eq!(check["reason"], "RATE_LIMITED", "{check}");
    assert_eq!(check["limits"][0]["requests"], 6, "{check}");
    let two = key(json!({"rpm_limit": 2})).await;
    for gw in [&a, &b, &c] {
        let (_, _, check) = gw.http().post("/usage/check", &two, json!({"model": "demo"})).await;
        assert_eq!(check["allowed"], true, "{check}");
    }
    let statuses = spread(&[&a, &b, &c], &two, 4, json!({})).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2, "checks took nothing: {statuses:?}");

    // TPM 100; a call is reserved at its prompt estimate + max_tokens 10 (between 17 and 20
    // tokens) and settles at the mock's 14. Reservations and settled counts together never pass
    // the limit: at least 5 calls fit on estimates, at most 7 once some have settled
    // (7 × 14 = 98 ≤ 100) — the limit holds within one request's tokens.
    let tpm = key(json!({"tpm_limit": 100})).await;
    let statuses = spread(&[&a, &b, &c], &tpm, 12, json!({})).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!((5..=7).contains(&admitted), "{admitted} admitted under tpm 100: {statuses:?}");

    // Two in flight at most, across the instances.
    let par = key(json!({"max_parallel_requests": 2})).await;
    let statuses = spread(&[&a, &b, &c], &par, 9, json!({"mock_latency_ms": 800})).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2, "{statuses:?}");
    assert_eq!(a.http().post("/v1/chat/completions", &par, call(json!({}))).await.0, 200, "slots freed");

    // A call in flight on C holds the only slot; C dies; the lease lapses and A admits again.
    let one = key(json!({"max_parallel_requests": 1})).await;
    let held = slow_call(&c, &one, 20_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "the slow call was refused");
    assert_eq!(a.http().post("/v1/chat/completions", &one, call(json!({}))).await.0, 429, "C holds the slot");
    c.kill();
    let killed = Instant::now();
    loop {
        let (s, _, _) = a.http().post("/v1/chat/completions", &one, call(json!({}))).await;
        if s == 200 {
            break;
        }
        assert_eq!(s, 429);
        assert!(killed.elapsed() < Duration::from_secs(4), "the dead instance's slot outlived its 2 s lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    held.abort();
}

/// A strict call's worst case as reserved (nano-USD): "hello" as 12 prompt bytes-as-tokens and
/// max_tokens 10, at demo's 150e6 and 600e6 femto-USD per input and output token.
const CALL_WORST: i64 = (12 * 150_000_000 + 10 * 600_000_000) / 1_000_000;

fn redis_cli(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli").arg("-u").arg(url).args(args).output().expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The spend Redis holds for a key's lifetime budget, once it equals `want` (or what it is
/// after two seconds).
async fn redis_spend(url: &str, prefix: &str, key_id: &str, want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let v = redis_cli(url, &["HGET", &format!("{prefix}:b:key|{key_id}|0"), "s"]).parse().unwrap_or(-1);
        if v == want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The spend of a key's calls as stored, once `n` are.
async fn stored_spend(gw: &Gateway, key_id: &str, n: usize) -> i64 {
    let logs = gw.spend_logs_until(&format!("api_key={key_id}&page_size=1000"), n).await;
    assert_eq!(logs.len(), n, "every admitted call is recorded once");
    logs.iter().map(|r| r["spend_nanos"].as_i64().unwrap()).sum()
}

/// Strict budgets across three instances under 300 concurrent calls: never over, and the spend
/// exact everywhere (the records, the key's spend, the Redis counter) — also after Redis loses
/// its counters and they are rebuilt from the database.
#[tokio::test]
async fn strict_budgets_hold_across_three_instances() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let (a, b, c) = three_on(&prefix, "").await;
    let budget = 30 * CALL_WORST;
    let key = a.create_key(json!({"max_budget": budget as f64 / 1e9})).await;
    let (secret, key_id) = (key["key"].as_str().unwrap(), key["token"].as_str().unwrap());

    let first = spread(&[&a, &b, &c], secret, 300, json!({"mock_latency_ms": 300})).await;
    assert!(first.iter().all(|s| *s == 200 || *s == 400), "{first:?}");
    let ok1 = first.iter().filter(|s| **s == 200).count();
    assert!(ok1 >= 30, "at least budget / worst case fit at once: {ok1}");
    let spent1 = stored_spend(&a, key_id, ok1).await;
    assert!(spent1 <= budget, "strict budgets overspent across instances: {spent1} of {budget}");
    assert_eq!(redis_spend(&redis_url(), &prefix, key_id, spent1).await, spent1, "Redis holds what was stored");

    // Redis loses the counters: the next admissions rebuild them from the database.
    let counters = redis_cli(&redis_url(), &["--scan", "--pattern", &format!("{prefix}:b:*")]);
    for k in counters.lines() {
        redis_cli(&redis_url(), &["DEL", k]);
    }
    let second = spread(&[&a, &b, &c], secret, 300, json!({"mock_latency_ms": 300})).await;
    let ok2 = second.iter().filter(|s| **s == 200).count();
    assert!(ok2 >= 1, "what the first burst left is used: {second:?}");
    let spent = stored_spend(&b, key_id, ok1 + ok2).await;
    assert!(spent <= budget, "overspent after a rebuild: {spent} of {budget}");
    assert!(budget - spent < CALL_WORST, "the budget is used up to one worst case: {spent} of {budget}");
    let info = c.http().get(&format!("/key/info?key={key_id}"), MASTER_KEY).await.2;
    assert_eq!(info["info"]["spend_nanos"].as_i64().unwrap(), spent);
    assert_eq!(redis_spend(&redis_url(), &prefix, key_id, spent).await, spent);
    let (s, _, v) = a.http().post("/v1/chat/completions", secret, call(json!({}))).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("Budget"), "{v}");
    eprintln!("strict across three: {ok1} + {ok2} of 600 admitted, spent {spent} of {budget} nano-USD");
}

/// `n` choices across three instances on PostgreSQL + Redis: 400 concurrent calls per value
/// of `n` never spend more than a budget that covers 20 single calls.
#[tokio::test]
async fn choices_never_overspend_across_three_instances() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let (a, b, c) = three_on(&prefix, "").await;
    // One single call's cost, as the mock bills it.
    let probe = a.create_key(json!({})).await;
    assert_eq!(a.http().post("/v1/chat/completions", probe["key"].as_str().unwrap(), call(json!({}))).await.0, 200);
    let single = stored_spend(&a, probe["token"].as_str().unwrap(), 1).await;
    let budget = 20 * single;
    for choices in [1, 4, 10] {
        let key = a.create_key(json!({"max_budget": budget as f64 / 1e9})).await;
        let (secret, key_id) = (key["key"].as_str().unwrap(), key["token"].as_str().unwrap());
        let statuses = spread(&[&a, &b, &c], secret, 400, json!({"n": choices, "mock_latency_ms": 300})).await;
        assert!(statuses.iter().all(|s| *s == 200 || *s == 400), "{statuses:?}");
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert!(ok >= 1, "something was admitted");
        let spent = stored_spend(&b, key_id, ok).await;
        let ratio = spent as f64 / budget as f64;
        eprintln!(
            "three instances, n={choices}: {ok} of 400 admitted, spent {spent} of {budget} nano-USD ({ratio:.3})"
        );
        assert!(spent <= budget, "overspent with n={choices}: {spent} of {budget}");
    }
}

/// A strict reservation held by an instance that dies lapses with its lease, like a slot.
#[tokio::test]
async fn a_dead_instances_budget_reservation_lapses() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let (a, _b, mut c) = three_on(&prefix, "  redis_lease_seconds: 2\n").await;
    let key = a.create_key(json!({"max_budget": CALL_WORST as f64 / 1e9})).await;
    let (secret, key_id) = (key["key"].as_str().unwrap().to_owned(), key["token"].as_str().unwrap());
    let held = slow_call(&c, &secret, 30_000);
    // Wait until c's reservation is in Redis.
    let reservations = format!("{prefix}:bres:key|{key_id}|0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_cli(&redis_url(), &["ZCARD", &reservations]) != "1" {
        assert!(Instant::now() < deadline, "c's call never reserved its worst case");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, _, v) = a.http().post("/v1/chat/completions", &secret, call(json!({}))).await;
    assert_eq!(s, 400, "the budget is held by the call on c: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("held by calls in flight"), "{v}");
    c.kill();
    let killed = Instant::now();
    until_status(&a, &secret, 200, Duration::from_secs(4)).await;
    eprintln!("a dead instance's reservation lapsed after {:?}", killed.elapsed());
    held.abort();
}

/// A Redis of the test's own, on a free port, that the test may kill and restart.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Self { port, child: None };
        r.restart().await;
        r
    }

    async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn on_own_redis(redis: &OwnRedis, policy: &str) -> (Gateway, Gateway) {
    let mut config = standard_config(None);
    config.push_str(&format!(
        "  redis_url: redis://127.0.0.1:{}\n  redis_failure_policy: {policy}\n  redis_lease_seconds: 2\n",
        redis.port
    ));
    let a = Gateway::start(Options { backend: Backend::Postgres, config, env: vec![] }).await;
    let b = a.another_instance().await;
    // Let both see each other (the share of each limit under fail_open).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (a, b)
}

async fn until_status(gw: &Gateway, key: &str, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (s, _, v) = gw.http().post("/v1/chat/completions", key, call(json!({}))).await;
        if s == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {s} after {within:?}, wanted {want}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis killed under fail_closed: limited calls get a clear 503 (unlimited ones pass), and
/// limits resume when Redis returns.
#[tokio::test]
async fn redis_loss_under_fail_closed_refuses_limited_calls() {
    let mut redis = OwnRedis::start().await;
    let (a, _b) = on_own_redis(&redis, "fail_closed").await;
    let limited = a.create_key(json!({"rpm_limit": 1000})).await["key"].as_str().unwrap().to_owned();
    let free = a.create_key(json!({})).await["key"].as_str().unwrap().to_owned();
    assert_eq!(a.http().post("/v1/chat/completions", &limited, call(json!({}))).await.0, 200);

    redis.kill();
    let (s, _, v) = a.http().post("/v1/chat/completions", &limited, call(json!({}))).await;
    assert_eq!(s, 503, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("redis_failure_policy is fail_closed"), "{message}");
    assert!(!message.contains("redis://"), "no Redis URL in errors: {message}");
    assert_eq!(a.http().post("/v1/chat/completions", &free, call(json!({}))).await.0, 200, "unlimited keys pass");
    for _ in 0..5 {
        assert_eq!(a.http().post("/v1/chat/completions", &limited, call(json!({}))).await.0, 503);
    }
    assert_eq!(a.logs().matches("Redis is unavailable for shared rate limits and budgets").count(), 1, "alerted once");

    redis.restart().await;
    until_status(&a, &limited, 200, Duration::from_secs(5)).await;
    assert!(a.logs().contains("Redis is reachable again"));
    assert!(!a.logs().contains("panicked"));
}

/// Redis killed mid-load under fail_open: calls keep flowing, each instance admitting its share
/// of each limit (here half of 6 per minute); shared limits resume when Redis returns.
#[tokio::test]
async fn redis_loss_under_fail_open_falls_back_to_a_share() {
    early_in_a_minute().await;
    let mut redis = OwnRedis::start().await;
    let (a, b) = on_own_redis(&redis, "fail_open").await;
    let busy = a.create_key(json!({"rpm_limit": 100_000})).await["key"].as_str().unwrap().to_owned();
    let small = a.create_key(json!({"rpm_limit": 6})).await["key"].as_str().unwrap().to_owned();

    // Load on both instances while Redis dies.
    let load = {
        let (ha, hb, busy) = (a.http(), b.http(), busy.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..60 {
                let http = if i % 2 == 0 { &ha } else { &hb };
                statuses.push(http.post("/v1/chat/completions", &busy, call(json!({}))).await.0);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.kill();
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "fail_open keeps serving: {statuses:?}");

    // While Redis is away, each of the two instances admits 6 / 2 = 3 on its own counters.
    let mut admitted = 0;
    for _ in 0..5 {
        if a.http().post("/v1/chat/completions", &small, call(json!({}))).await.0 == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
    assert_eq!(a.logs().matches("Redis is unavailable for shared rate limits and budgets").count(), 1, "alerted once");

    // Budgets too: each instance spends at most its half of what the database says is left.
    let budget = 10 * CALL_WORST;
    let key = a.create_key(json!({"max_budget": budget as f64 / 1e9})).await;
    let (secret, key_id) = (key["key"].as_str().unwrap().to_owned(), key["token"].as_str().unwrap().to_owned());
    let mut on_a = 0;
    loop {
        let (s, _, v) = a.http().post("/v1/chat/completions", &secret, call(json!({}))).await;
        if s != 200 {
            assert_eq!(s, 400, "{v}");
            break;
        }
        on_a += 1;
        assert!(on_a < 100, "never refused");
    }
    let spent_a = stored_spend(&a, &key_id, on_a).await;
    assert!(spent_a <= budget / 2 && budget / 2 - spent_a < CALL_WORST, "half of {budget}: {spent_a}");

    redis.restart().await;
    let fresh = a.create_key(json!({"max_parallel_requests": 1})).await["key"].as_str().unwrap().to_owned();
    until_status(&b, &fresh, 200, Duration::from_secs(5)).await;
    // Both instances back on Redis (each notices on its own, within a renewal interval).
    let deadline = Instant::now() + Duration::from_secs(5);
    for gw in [&a, &b] {
        while !gw.logs().contains("Redis is reachable again") {
            assert!(Instant::now() < deadline, "no recovery logged: {}", gw.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Redis came back empty: the budget's counter is rebuilt from the database, and the two
    // instances together spend what is left, never more.
    let mut after = 0;
    for i in 0..100 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let (s, _, v) = gw.http().post("/v1/chat/completions", &secret, call(json!({}))).await;
        if s != 200 {
            assert_eq!(s, 400, "{v}");
            break;
        }
        after += 1;
    }
    let spent = stored_spend(&a, &key_id, on_a + after).await;
    assert!(after >= 1 && spent <= budget && budget - spent < CALL_WORST, "{after} more, spent {spent} of {budget}");
    assert!(!a.logs().contains("panicked") && !b.logs().contains("panicked"));
}

/// Redis unreachable but not emptied (paused): under fail_open each instance spends its share
/// of what is left on local counters; when Redis answers again, the counters that missed that
/// spend are rebuilt from the database, so together the instances never go over.
#[tokio::test]
async fn counters_that_missed_spend_are_rebuilt_after_an_outage() {
    let redis = OwnRedis::start().await;
    let (a, b) = on_own_redis(&redis, "fail_open").await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let budget = 10 * CALL_WORST;
    let key = a.create_key(json!({"max_budget": budget as f64 / 1e9})).await;
    let (secret, key_id) = (key["key"].as_str().unwrap().to_owned(), key["token"].as_str().unwrap().to_owned());
    // One call through Redis creates the counter there.
    assert_eq!(a.http().post("/v1/chat/completions", &secret, call(json!({}))).await.0, 200);

    redis_cli(&url, &["CLIENT", "PAUSE", "4000", "ALL"]);
    let mut during = 0;
    for _ in 0..20 {
        let (s, _, v) = a.http().post("/v1/chat/completions", &secret, call(json!({}))).await;
        if s != 200 {
            assert_eq!(s, 400, "{v}");
            break;
        }
        during += 1;
    }
    assert!(during >= 1, "fail_open admits a share while Redis is away");
    // Wait out the pause and the next renewal (which rebuilds the counters).
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.logs().contains("rebuilt from the database") {
        assert!(Instant::now() < deadline, "the counter that missed spend was not rebuilt: {}", a.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut after = 0;
    for i in 0..40 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let (s, _, v) = gw.http().post("/v1/chat/completions", &secret, call(json!({}))).await;
        if s != 200 {
            assert_eq!(s, 400, "{v}");
            break;
        }
        after += 1;
    }
    let spent = stored_spend(&a, &key_id, 1 + during + after).await;
    assert!(spent <= budget && budget - spent < CALL_WORST, "1 + {during} + {after} calls spent {spent} of {budget}");
    assert_eq!(redis_spend(&url, "ferryman", &key_id, spent).await, spent, "Redis's counter matches the database");
}

/// The backstop: a change whose message never arrived (made by an instance publishing under
/// another prefix) is picked up once the published version shows a message went missing.
/// Redis delivers nothing between these two (different key prefixes): the audit log does.
#[tokio::test]
async fn a_change_redis_never_delivered_is_caught_by_the_audit_feed() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let mut config = standard_config(None);
    config.push_str(&format!("  redis_url: {}\n  redis_key_prefix: {prefix}\n", redis_url()));
    let a = Gateway::start(Options { backend: Backend::Postgres, config, env: vec![] }).await;
    let deaf = a.another_instance_with(&[("FERRYMAN__GENERAL_SETTINGS__REDIS_KEY_PREFIX", "elsewhere")]).await;
    let key = a.create_key(json!({})).await;
    let secret = key["key"].as_str().unwrap();
    assert_eq!(a.http().post("/v1/chat/completions", secret, call(json!({}))).await.0, 200);
    let (s, _, _) = deaf.http().post("/key/block", MASTER_KEY, json!({"key": key["token"]})).await;
    assert_eq!(s, 200);
    let took = until_refused(&a, secret, 401, FEED_BOUND).await;
    eprintln!("a block Redis never delivered was honoured after {took:?}");
}

/// The bound the README promises for a change to reach every instance through the audit log
/// (a poll a second, plus slack for a loaded machine).
const FEED_BOUND: Duration = Duration::from_secs(4);

/// Calls until `secret` is refused with `status`; how long that took.
async fn until_refused(gw: &Gateway, secret: &str, status: u16, within: Duration) -> Duration {
    let since = Instant::now();
    loop {
        let (s, _, v) = gw.http().post("/v1/chat/completions", secret, call(json!({}))).await;
        if s == status {
            return since.elapsed();
        }
        assert!(since.elapsed() < within, "still {s} after {within:?}, wanted {status}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Without Redis, instances on one database notice each other's changes by themselves: a key
/// deleted, a key, team, user or organization blocked, an old secret replaced — each refused
/// on the other instance within the bound, and an unblock admitted again.
#[tokio::test]
async fn revocations_reach_other_instances_without_redis() {
    let a = Gateway::start(Options { backend: Backend::Postgres, config: standard_config(None), env: vec![] }).await;
    let b = a.another_instance().await;
    for (path, body) in [
        ("/organization/new", json!({"organization_id": "o", "organization_alias": "o"})),
        ("/team/new", json!({"team_id": "t", "organization_id": "o"})),
        ("/user/new", json!({"user_id": "u", "auto_create_key": false})),
    ] {
        let (s, _, v) = a.http().post(path, MASTER_KEY, body).await;
        assert_eq!(s, 200, "{path}: {v}");
    }
    let key = a.create_key(json!({"team_id": "t", "user_id": "u"})).await;
    let secret = key["key"].as_str().unwrap().to_owned();
    let ok = |gw: &Gateway| {
        let (http, secret) = (gw.http(), secret.clone());
        async move { http.post("/v1/chat/completions", &secret, call(json!({}))).await.0 }
    };
    assert_eq!((ok(&a).await, ok(&b).await), (200, 200), "cached on both");
    let mut figures = Vec::new();
    for (block, unblock, body, status) in [
        ("/key/block", "/key/unblock", json!({"key": key["token"]}), 401),
        ("/team/block", "/team/unblock", json!({"team_id": "t"}), 403),
        ("/user/update", "/user/update", json!({"user_id": "u"}), 403),
        ("/organization/update", "/organization/update", json!({"organization_id": "o"}), 403),
    ] {
        let (on, off) = match block {
            "/user/update" | "/organization/update" => {
                let mut on = body.clone();
                on["blocked"] = json!(true);
                let mut off = body.clone();
                off["blocked"] = json!(false);
                (on, off)
            }
            _ => (body.clone(), body.clone()),
        };
        let (s, _, v) = a.http().post(block, MASTER_KEY, on).await;
        assert_eq!(s, 200, "{block}: {v}");
        figures.push((block, until_refused(&b, &secret, status, FEED_BOUND).await));
        let (s, _, v) = a.http().post(unblock, MASTER_KEY, off).await;
        assert_eq!(s, 200, "{unblock}: {v}");
        let since = Instant::now();
        while ok(&b).await != 200 {
            assert!(since.elapsed() < FEED_BOUND, "{unblock} not seen on b");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A regenerated secret: the old one stops on b.
    let (s, _, v) = a.http().post("/key/regenerate", MASTER_KEY, json!({"key": key["token"]})).await;
    assert_eq!(s, 200, "{v}");
    figures.push(("/key/regenerate", until_refused(&b, &secret, 401, FEED_BOUND).await));
    let fresh = v["key"].as_str().unwrap().to_owned();
    assert_eq!(b.http().post("/v1/chat/completions", &fresh, call(json!({}))).await.0, 200);
    // Deleted on b: a refuses.
    let (s, _, _) = b.http().post("/key/delete", MASTER_KEY, json!({"keys": [key["token"]]})).await;
    assert_eq!(s, 200);
    figures.push(("/key/delete", until_refused(&a, &fresh, 401, FEED_BOUND).await));
    eprintln!("refused on the other instance after: {figures:?}");
}

/// With Redis down, a change still reaches the other instance through the audit log, and
/// after Redis returns both paths agree.
#[tokio::test]
async fn a_change_made_while_redis_is_down_is_honoured_within_the_bound() {
    let mut redis = OwnRedis::start().await;
    let (a, b) = on_own_redis(&redis, "fail_open").await;
    let key = a.create_key(json!({})).await;
    let secret = key["key"].as_str().unwrap();
    assert_eq!(b.http().post("/v1/chat/completions", secret, call(json!({}))).await.0, 200);
    redis.kill();
    let (s, _, v) = a.http().post("/key/block", MASTER_KEY, json!({"key": key["token"]})).await;
    assert_eq!(s, 200, "{v}");
    let took = until_refused(&b, secret, 401, FEED_BOUND).await;
    eprintln!("blocked while Redis was down: refused on the other instance after {took:?}");
    redis.restart().await;
    let (s, _, _) = a.http().post("/key/unblock", MASTER_KEY, json!({"key": key["token"]})).await;
    assert_eq!(s, 200);
    until_status(&b, secret, 200, FEED_BOUND).await;
}
