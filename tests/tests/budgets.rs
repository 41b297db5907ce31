//! Budgets on every call: strict mode never overspends under concurrency (optimistic mode's
//! overshoot is measured), spend lands exactly on every scope, and periods reset by themselves.

use std::time::{Duration, Instant};

use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, json, openai_error};

/// demo: 150e6 / 600e6 femto-USD per input / output token.
fn config(mode: &str) -> String {
    format!(
        r#"model_list:
  - model_name: demo
    litellm_params:
      model: mock/demo
      mock_response: "ok ok ok ok"
      input_cost_per_token: 0.00000015
      output_cost_per_token: 0.0000006
general_settings:
  master_key: {MASTER_KEY}
  database_url: "{{database_url}}"
  budget_enforcement: {mode}
"#
    )
}

/// One call's real cost: "hello" is 9 prompt tokens by the mock's count, "ok ok ok ok" 3.
const CALL_COST: i64 = (9 * 150_000_000 + 3 * 600_000_000) / 1_000_000;
/// Its worst case as strict mode reserves it: 12 prompt bytes-as-tokens, max_tokens 10.
const CALL_WORST: i64 = (12 * 150_000_000 + 10 * 600_000_000) / 1_000_000;

async fn admin(gw: &Gateway, path: &str, body: Value) -> Value {
    let (s, _, v) = gw.http().post(path, MASTER_KEY, body).await;
    assert_eq!(s, 200, "{path}: {v}");
    v
}

fn call_body(extra: Value) -> Value {
    let mut body = json!({"model": "demo", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

/// Fires `n` calls at once; returns (successes, budget refusals).
async fn burst(gw: &Gateway, key: &str, n: usize) -> (usize, usize) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = gw.http().client.clone();
        let url = format!("{}/v1/chat/completions", gw.url);
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(key)
                .json(&call_body(json!({"mock_latency_ms": 300})))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            400 => {
                assert_eq!(openai_error(&body)["type"], "budget_exceeded", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (ok, refused)
}

async fn concurrent_calls_never_overspend(backend: Backend) {
    let gw = Gateway::start(Options { backend, config: config("strict"), env: vec![] }).await;
    let budget = 20 * CALL_COST;
    let key = admin(&gw, "/key/generate", json!({"max_budget": budget as f64 / 1e9})).await;
    let secret = key["key"].as_str().unwrap();
    let key_id = key["token"].as_str().unwrap();
    // Two bursts of 200: the second finds what the first left.
    let (ok1, refused1) = burst(&gw, secret, 200).await;
    let (ok2, refused2) = burst(&gw, secret, 200).await;
    let ok = ok1 + ok2;
    assert_eq!(ok + refused1 + refused2, 400);
    let logs = gw.spend_logs_until(&format!("api_key={key_id}&page_size=1000"), ok).await;
    assert_eq!(logs.len(), ok);
    let spent: i64 = logs.iter().map(|r| r["spend_nanos"].as_i64().unwrap()).sum();
    assert_eq!(spent, ok as i64 * CALL_COST);
    assert!(spent <= budget, "strict mode overspent: {spent} of {budget} nano-USD");
    assert!(ok >= 1, "something was admitted");
    let info = gw.http().get(&format!("/key/info?key={key_id}"), MASTER_KEY).await.2;
    assert_eq!(info["info"]["spend_nanos"].as_i64().unwrap(), spent);
    eprintln!(
        "strict: {ok} of 400 admitted, spent {spent} of {budget} nano-USD (worst case reserved {CALL_WORST} a call)"
    );
}

#[tokio::test]
async fn strict_budgets_hold_under_concurrency_on_sqlite() {
    concurrent_calls_never_overspend(Backend::Sqlite).await;
}

#[tokio::test]
async fn strict_budgets_hold_under_concurrency_on_postgres() {
    concurrent_calls_never_overspend(Backend::Postgres).await;
}

/// Optimistic mode (LiteLLM's) admits while spend is below the maximum: a burst overshoots.
#[tokio::test]
async fn optimistic_mode_overshoot_is_measured() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: config("optimistic"), env: vec![] }).await;
    let budget = 20 * CALL_COST;
    let key = admin(&gw, "/key/generate", json!({"max_budget": budget as f64 / 1e9})).await;
    let (ok, _) = burst(&gw, key["key"].as_str().unwrap(), 200).await;
    let spent = ok as i64 * CALL_COST;
    eprintln!(
        "optimistic: {ok} of 200 admitted, spent {spent} of {budget} nano-USD ({:.1}x the budget)",
        spent as f64 / budget as f64
    );
    assert!(spent > budget, "a concurrent burst overshoots in optimistic mode");
    // Once over, it refuses.
    let (s, _, body) = gw.http().post("/v1/chat/completions", key["key"].as_str().unwrap(), call_body(json!({}))).await;
    assert_eq!(s, 400, "{body}");
    assert!(openai_error(&body)["message"].as_str().unwrap().starts_with("Budget has been exceeded: key"));
}

/// After mixed calls, every scope's spend is exactly the sum of its calls' costs.
async fn spend_lands_exactly(backend: Backend) {
    let gw = Gateway::start(Options { backend, config: config("strict"), env: vec![] }).await;
    admin(&gw, "/organization/new", json!({"organization_id": "org", "organization_alias": "Org", "max_budget": 100}))
        .await;
    admin(&gw, "/team/new", json!({"team_id": "team", "organization_id": "org", "max_budget": 50})).await;
    admin(&gw, "/user/new", json!({"user_id": "ann", "auto_create_key": false, "max_budget": 10})).await;
    admin(
        &gw,
        "/team/member_add",
        json!({"team_id": "team", "member": {"user_id": "ann", "role": "user"}, "max_budget_in_team": 5}),
    )
    .await;
    admin(&gw, "/tag/new", json!({"name": "blue", "max_budget": 1})).await;
    let team_key =
        admin(&gw, "/key/generate", json!({"team_id": "team", "user_id": "ann", "max_budget": 1, "tags": ["blue"]}))
            .await;
    let personal = admin(&gw, "/key/generate", json!({"user_id": "ann"})).await;
    let http = gw.http();
    for i in 0..24 {
        let key = if i % 3 == 0 { &personal } else { &team_key };
        let customer = ["acme", "globex", "initech"][i % 3];
        let body = call_body(json!({"user": customer, "stream": i % 4 == 0,
            "messages": [{"role": "user", "content": "x".repeat(1 + i * 7)}]}));
        let resp = http
            .client
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(key["key"].as_str().unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.text().await.unwrap();
    }
    let logs = gw.spend_logs_until("page_size=1000", 24).await;
    assert_eq!(logs.len(), 24);
    let sum = |pred: &dyn Fn(&Value) -> bool| -> i64 {
        logs.iter().filter(|r| pred(r)).map(|r| r["spend_nanos"].as_i64().unwrap()).sum()
    };
    let team_key_id = team_key["token"].as_str().unwrap();
    let personal_id = personal["token"].as_str().unwrap();
    let team_sum = sum(&|r| r["api_key"] == team_key_id);
    let personal_sum = sum(&|r| r["api_key"] == personal_id);
    assert!(team_sum > 0 && personal_sum > 0);
    let get = |path: String| {
        let http = gw.http();
        async move { http.get(&path, MASTER_KEY).await.2 }
    };
    assert_eq!(get(format!("/key/info?key={team_key_id}")).await["info"]["spend_nanos"], team_sum);
    assert_eq!(get(format!("/key/info?key={personal_id}")).await["info"]["spend_nanos"], personal_sum);
    assert_eq!(get("/team/info?team_id=team".into()).await["team_info"]["spend_nanos"], team_sum);
    let team = get("/team/info?team_id=team".into()).await;
    assert_eq!(team["team_memberships"][0]["spend_nanos"], team_sum, "the member's spend in the team");
    assert_eq!(get("/user/info?user_id=ann".into()).await["user_info"]["spend_nanos"], team_sum + personal_sum);
    assert_eq!(get("/organization/info?organization_id=org".into()).await["spend_nanos"], team_sum);
    let tags = http.post("/tag/info", MASTER_KEY, json!({"names": ["blue"]})).await.2;
    assert_eq!(tags["blue"]["spend_nanos"], team_sum, "the key's tag");
    for customer in ["acme", "globex", "initech"] {
        let c = get(format!("/customer/info?end_user_id={customer}")).await;
        assert_eq!(
            c["spend_nanos"],
            sum(&|r| r["end_user"] == customer),
            "customer {customer} created on first sight: {c}"
        );
    }
    // Spend records carry who spent, for filters.
    assert_eq!(gw.spend_logs_until("team_id=team&page_size=1000", 16).await.len(), 16);
    assert_eq!(gw.spend_logs_until("user_id=ann&page_size=1000", 24).await.len(), 24);
}

#[tokio::test]
async fn spend_lands_exactly_on_every_scope_on_sqlite() {
    spend_lands_exactly(Backend::Sqlite).await;
}

#[tokio::test]
async fn spend_lands_exactly_on_every_scope_on_postgres() {
    spend_lands_exactly(Backend::Postgres).await;
}

/// A 2-second budget: spent, refused naming the reset, admitted again in the next period.
#[tokio::test]
async fn budget_periods_reset_by_themselves() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: config("strict"), env: vec![] }).await;
    let key =
        admin(&gw, "/key/generate", json!({"max_budget": CALL_WORST as f64 / 1e9, "budget_duration": "2s"})).await;
    let secret = key["key"].as_str().unwrap();
    let key_id = key["token"].as_str().unwrap();
    let http = gw.http();
    // Start at the beginning of a period, so the first two calls share it.
    let info = http.get(&format!("/key/info?key={key_id}"), MASTER_KEY).await.2;
    let reset_at = chrono::DateTime::parse_from_rfc3339(info["info"]["budget_reset_at"].as_str().unwrap()).unwrap();
    let wait = (reset_at.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    let started = Instant::now();
    let (s, headers, _) = http.post("/v1/chat/completions", secret, call_body(json!({}))).await;
    assert_eq!(s, 200);
    assert!(headers.get("x-ferryman-remaining-budget").is_some());
    let (s, _, body) = http.post("/v1/chat/completions", secret, call_body(json!({}))).await;
    assert!(started.elapsed() < Duration::from_millis(1800), "both calls in one period");
    assert_eq!(s, 400, "{body}");
    let message = openai_error(&body)["message"].as_str().unwrap().to_owned();
    assert!(message.contains("this period, resets 20"), "{message}");
    assert!(
        message.contains(&format!("spent {} of {} USD", CALL_COST as f64 / 1e9, CALL_WORST as f64 / 1e9)),
        "{message}"
    );
    let before = http.get(&format!("/key/info?key={key_id}"), MASTER_KEY).await.2["info"]["budget_reset_at"].clone();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, _, body) = http.post("/v1/chat/completions", secret, call_body(json!({}))).await;
    assert_eq!(s, 200, "a new period admits again: {body}");
    let after = http.get(&format!("/key/info?key={key_id}"), MASTER_KEY).await.2["info"]["budget_reset_at"].clone();
    assert_ne!(before, after, "the reset moved budget_reset_at on");
}

/// Blocked customers are refused; customers without a budget get the default one.
#[tokio::test]
async fn customers_are_governed() {
    let mut cfg = config("strict");
    cfg.push_str("litellm_settings:\n  max_end_user_budget: 0.000001\n");
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: cfg, env: vec![] }).await;
    let http = gw.http();
    admin(&gw, "/customer/new", json!({"user_id": "bad", "blocked": true})).await;
    let (s, _, body) = http.post("/v1/chat/completions", MASTER_KEY, call_body(json!({"user": "bad"}))).await;
    assert_eq!(s, 403, "{body}");
    // A new customer gets the default budget of 1000 nano-USD: the worst case (7800) does not fit.
    let (s, _, body) = http.post("/v1/chat/completions", MASTER_KEY, call_body(json!({"user": "fresh"}))).await;
    assert_eq!(s, 400, "{body}");
    assert!(openai_error(&body)["message"].as_str().unwrap().contains("customer \"fresh\""), "{body}");
    // A customer with its own budget is not held to the default; its soft budget warns.
    admin(&gw, "/customer/new", json!({"user_id": "rich", "max_budget": 10, "soft_budget": 0.000001})).await;
    let (s, headers, body) = http.post("/v1/chat/completions", MASTER_KEY, call_body(json!({"user": "rich"}))).await;
    assert_eq!(s, 200, "{body}");
    assert!(headers.get("x-ferryman-soft-budget-exceeded").is_none());
    let (s, headers, _) = http.post("/v1/chat/completions", MASTER_KEY, call_body(json!({"user": "rich"}))).await;
    assert_eq!(s, 200);
    assert_eq!(headers["x-ferryman-soft-budget-exceeded"], "customer rich");
    // A customer's own allow-list applies.
    admin(&gw, "/customer/new", json!({"user_id": "picky", "max_budget": 10, "models": ["other"]})).await;
    let (s, _, body) = http.post("/v1/chat/completions", MASTER_KEY, call_body(json!({"user": "picky"}))).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["type"], "customer_model_access_denied");
}

/// Tags from the key, the team, the body and the header: spend lands on each, a tag's own
/// budget refuses, and no tag reaches the upstream.
#[tokio::test]
async fn tags_collect_spend_and_carry_budgets() {
    let upstream = ferryman_tests::mock_openai::MockOpenAi::start().await;
    let gw = Gateway::start(Options {
        backend: Backend::Sqlite,
        config: ferryman_tests::standard_config(Some(&upstream.base_url)),
        env: vec![("UPSTREAM_KEY".into(), "sk-up".into())],
    })
    .await;
    admin(&gw, "/team/new", json!({"team_id": "t", "tags": ["team-tag"]})).await;
    let key = admin(&gw, "/key/generate", json!({"team_id": "t", "tags": ["key-tag"]})).await;
    let secret = key["key"].as_str().unwrap();
    // gpt-4o-mini: 21 + 7 tokens at 150e6 / 600e6 femto = 7,350 nano-USD a call.
    admin(&gw, "/tag/new", json!({"name": "campaign", "max_budget": 0.00001, "description": "spring"})).await;
    let http = gw.http();
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 5, "tags": ["campaign"], "metadata": {"tags": ["meta-tag"]},
        "messages": [{"role": "user", "content": "hi"}]});
    let resp = http
        .client
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(secret)
        .header("x-ferryman-tags", "hdr-tag")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = &upstream.received()[0].body;
    assert!(sent.get("tags").is_none() && sent.get("metadata").is_none(), "tags never reach the upstream: {sent}");
    let logs = gw.spend_logs_until("page_size=10", 1).await;
    assert_eq!(logs[0]["request_tags"], json!(["key-tag", "team-tag", "campaign", "meta-tag", "hdr-tag"]));
    // The campaign tag's budget (10,000 nano-USD) holds one call's worst case, not two.
    let (s, _, refused) = http.post("/v1/chat/completions", secret, body.clone()).await;
    assert_eq!(s, 400, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("tag \"campaign\""), "{refused}");
    let info = http.post("/tag/info", MASTER_KEY, json!({"names": ["campaign"]})).await.2;
    assert_eq!(info["campaign"]["spend_nanos"], 7_350);
    assert_eq!(info["campaign"]["description"], "spring");
    // Malformed tags are refused naming the field.
    let (s, _, bad) = http
        .post(
            "/v1/chat/completions",
            secret,
            json!({"model": "gpt-4o-mini", "tags": [1],
        "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(bad["error"]["param"], "tags[0]");
}

/// The proxy-wide budget refuses everyone once spent.
#[tokio::test]
async fn the_global_budget_holds() {
    let mut cfg = config("strict");
    cfg.push_str(&format!("litellm_settings:\n  max_budget: {}\n  budget_duration: 1d\n", CALL_WORST as f64 / 1e9));
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: cfg, env: vec![] }).await;
    let http = gw.http();
    assert_eq!(http.post("/v1/chat/completions", MASTER_KEY, call_body(json!({}))).await.0, 200);
    let (s, _, body) = http.post("/v1/chat/completions", MASTER_KEY, call_body(json!({}))).await;
    assert_eq!(s, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("global budget"), "{body}");
}

/// Strict mode reserves every prompt byte as a token; when that bound does not fit, a model
/// with a real tokenizer (OpenAI's) is counted exactly before refusing.
#[tokio::test]
async fn a_real_tokenizer_tightens_the_worst_case() {
    let upstream = ferryman_tests::mock_openai::MockOpenAi::start().await;
    let gw = Gateway::start(Options {
        backend: Backend::Sqlite,
        config: ferryman_tests::standard_config(Some(&upstream.base_url)),
        env: vec![("UPSTREAM_KEY".into(), "sk-up".into())],
    })
    .await;
    // 3,000 bytes but ~500 tokens: the byte bound costs ~451,000 nano-USD, the real count ~82,000.
    let prompt = "hello ".repeat(500);
    let key = admin(&gw, "/key/generate", json!({"max_budget": 0.0002})).await;
    let secret = key["key"].as_str().unwrap();
    let call =
        |model: &str| json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": prompt}]});
    let (s, _, body) = gw.http().post("/v1/chat/completions", secret, call("gpt-4o-mini")).await;
    assert_eq!(s, 200, "counted with o200k_base, the call fits: {body}");
    let (s, _, body) = gw.http().post("/v1/chat/completions", secret, call("demo")).await;
    assert_eq!(s, 400, "the mock has no tokenizer: the byte bound stands: {body}");
}

/// Fires `n` calls at `path` at once, each asking for `choices` choices; returns (successes,
/// budget refusals).
async fn burst_of_choices(gw: &Gateway, path: &str, key: &str, n: usize, choices: u32) -> (usize, usize) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = gw.http().client.clone();
        let url = format!("{}{path}", gw.url);
        let key = key.to_owned();
        let body = if path == "/v1/completions" {
            json!({"model": "demo", "max_tokens": 10, "prompt": "hello", "n": choices, "mock_latency_ms": 300})
        } else {
            call_body(json!({"n": choices, "mock_latency_ms": 300}))
        };
        tasks.push(tokio::spawn(async move {
            let resp = client.post(url).bearer_auth(key).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => {
                assert_eq!(body["choices"].as_array().unwrap().len(), choices as usize, "{body}");
                ok += 1;
            }
            400 => {
                assert_eq!(openai_error(&body)["type"], "budget_exceeded", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (ok, refused)
}

/// `n` choices are billed `n` times: the strict worst case reserves every one, so 400
/// concurrent calls never spend more than the budget, whatever `n` they ask for.
async fn choices_never_overspend(backend: Backend) {
    let gw = Gateway::start(Options { backend, config: config("strict"), env: vec![] }).await;
    let budget = 20 * CALL_COST;
    for (path, choices) in [
        ("/v1/chat/completions", 1),
        ("/v1/chat/completions", 3),
        ("/v1/chat/completions", 10),
        ("/v1/completions", 10),
    ] {
        let key = admin(&gw, "/key/generate", json!({"max_budget": budget as f64 / 1e9})).await;
        let (secret, key_id) = (key["key"].as_str().unwrap(), key["token"].as_str().unwrap());
        let (ok, refused) = burst_of_choices(&gw, path, secret, 400, choices).await;
        assert_eq!(ok + refused, 400);
        let logs = gw.spend_logs_until(&format!("api_key={key_id}&page_size=1000"), ok).await;
        assert_eq!(logs.len(), ok);
        let spent: i64 = logs.iter().map(|r| r["spend_nanos"].as_i64().unwrap()).sum();
        // The mock bills every choice: the completion tokens are the choices' sum.
        assert!(logs.iter().all(|r| r["completion_tokens"].as_u64().unwrap() % u64::from(choices) == 0));
        let ratio = spent as f64 / budget as f64;
        eprintln!(
            "{backend:?} {path} n={choices}: {ok} of 400 admitted, spent {spent} of {budget} nano-USD ({ratio:.3})"
        );
        assert!(ok >= 1, "something was admitted");
        assert!(spent <= budget, "strict mode overspent with n={choices}: {spent} of {budget} nano-USD");
    }
}

#[tokio::test]
async fn choices_never_overspend_a_strict_budget_on_sqlite() {
    choices_never_overspend(Backend::Sqlite).await;
}

/// An absurd `n` is refused naming the field, on every surface that takes one.
#[tokio::test]
async fn an_absurd_n_is_refused_naming_it() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: config("strict"), env: vec![] }).await;
    let http = gw.http();
    for (path, body) in [
        ("/v1/chat/completions", call_body(json!({"n": 1_000_000}))),
        ("/v1/completions", json!({"model": "demo", "prompt": "hi", "n": 1_000_000})),
        ("/v1/chat/completions", call_body(json!({"n": 0}))),
        ("/usage/check", json!({"model": "demo", "input_tokens": 1, "output_tokens": 1, "n": 129})),
    ] {
        let (s, _, v) = http.post(path, MASTER_KEY, body).await;
        assert_eq!(s, 400, "{path}: {v}");
        assert_eq!(openai_error(&v)["param"], "n", "{path}: {v}");
    }
    // The usage check counts the output once per choice.
    let one = http.post("/usage/check", MASTER_KEY, json!({"model": "demo", "output_tokens": 10})).await.2;
    let ten = http.post("/usage/check", MASTER_KEY, json!({"model": "demo", "output_tokens": 10, "n": 10})).await.2;
    assert_eq!(one["estimated_cost_nanos"], 6_000);
    assert_eq!(ten["estimated_cost_nanos"], 60_000);
}

/// A soft budget warns on every scope, with or without a maximum beside it.
#[tokio::test]
async fn a_soft_budget_alone_warns() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: config("strict"), env: vec![] }).await;
    let http = gw.http();
    admin(&gw, "/team/new", json!({"team_id": "soft-team", "soft_budget": CALL_COST as f64 * 1.5 / 1e9})).await;
    for (body, scope) in
        [(json!({"soft_budget": CALL_COST as f64 / 2e9}), "key"), (json!({"team_id": "soft-team"}), "team soft-team")]
    {
        let key = admin(&gw, "/key/generate", body).await;
        let secret = key["key"].as_str().unwrap();
        let mut warned = Vec::new();
        for _ in 0..3 {
            let (s, headers, v) = http.post("/v1/chat/completions", secret, call_body(json!({}))).await;
            assert_eq!(s, 200, "{v}");
            assert!(headers.get("x-ferryman-max-budget").is_none(), "no maximum is set");
            warned.push(headers.get("x-ferryman-soft-budget-exceeded").map(|v| v.to_str().unwrap().to_owned()));
        }
        let label = |s: &str| if s == "key" { format!("key {}", key["token"].as_str().unwrap()) } else { s.to_owned() };
        let expect = if scope == "key" {
            vec![None, Some(label(scope)), Some(label(scope))]
        } else {
            vec![None, None, Some(label(scope))]
        };
        assert_eq!(warned, expect, "{scope}");
    }
}

/// A call without an output cap, on a deployment whose maximum output is unknown: strict mode
/// reserved 4,096 tokens per choice, and sends that cap upstream so the provider cannot
/// generate past the reservation; a caller's own cap goes as given; optimistic mode sends none.
#[tokio::test]
async fn the_reserved_output_cap_is_the_one_the_provider_gets() {
    let mock = ferryman_tests::mock_openai::MockOpenAi::start().await;
    for mode in ["strict", "optimistic"] {
        let cfg = format!(
            r#"model_list:
  - model_name: house-model
    litellm_params:
      model: openai/house-model-unpriced
      api_base: {}
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000001
general_settings:
  master_key: {MASTER_KEY}
  database_url: "{{database_url}}"
  budget_enforcement: {mode}
"#,
            mock.base_url
        );
        let gw = Gateway::start(Options { backend: Backend::Sqlite, config: cfg, env: vec![] }).await;
        let before = mock.received().len();
        for (extra, want) in [
            (json!({}), if mode == "strict" { json!(4096) } else { Value::Null }),
            (json!({"max_tokens": 50}), json!(50)),
        ] {
            let mut body = json!({"model": "house-model", "messages": [{"role": "user", "content": "hi"}]});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            let (s, _, v) = gw.http().post("/v1/chat/completions", MASTER_KEY, body.clone()).await;
            assert_eq!(s, 200, "{v}");
            body["stream"] = json!(true);
            let (s, _, _) = gw.http().stream(MASTER_KEY, body).await;
            assert_eq!(s, 200);
            let got: Vec<Value> =
                mock.received()[before..].iter().rev().take(2).map(|r| r.body["max_tokens"].clone()).collect();
            assert_eq!(got, [want.clone(), want], "{mode}");
        }
    }
}

/// Distinct customers and tags cost the store nothing until a call is admitted: calls refused by
/// a spent budget, each naming a new customer and new tags, leave no customer row, no spend
/// record and no tag behind; the first admitted call writes its customer with its record.
#[tokio::test]
async fn unknown_customers_and_tags_are_written_only_by_admitted_calls() {
    let gw = Gateway::start(Options { backend: Backend::Postgres, config: config("strict"), env: vec![] }).await;
    let broke = admin(&gw, "/key/generate", json!({"max_budget": 0})).await;
    let broke = broke["key"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let (http, key) = (gw.http(), broke.clone());
        let body =
            call_body(json!({"user": format!("drive-by-{i}"), "tags": [format!("t-{i}-a"), format!("t-{i}-b")]}));
        tasks.push(tokio::spawn(async move { http.post("/v1/chat/completions", &key, body).await.0 }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 400, "refused by the spent budget");
    }
    let (_, _, customers) = gw.http().get("/customer/list", MASTER_KEY).await;
    assert_eq!(customers.as_array().map(Vec::len), Some(0), "{customers}");
    let (_, _, tags) = gw.http().get("/tag/list", MASTER_KEY).await;
    assert_eq!(tags.as_array().map(Vec::len), Some(0), "{tags}");
    let (_, _, logs) = gw.http().get("/spend/logs", MASTER_KEY).await;
    assert_eq!(logs.as_array().map(Vec::len), Some(0), "{logs}");
    // An admitted call writes its customer, with its spend record.
    let (s, _, v) = gw.http().post("/v1/chat/completions", MASTER_KEY, call_body(json!({"user": "paying"}))).await;
    assert_eq!(s, 200, "{v}");
    gw.spend_logs_until("end_user=paying", 1).await;
    let (_, _, customers) = gw.http().get("/customer/list", MASTER_KEY).await;
    assert_eq!(customers.as_array().map(|c| c.len()), Some(1), "{customers}");
}

/// The strict worst case counts everything the provider bills: each image at the provider's
/// per-image maximum (a URL is a few bytes, the image thousands of tokens), and the larger of
/// `max_tokens` and `max_completion_tokens` (providers differ in which they honour).
#[tokio::test]
async fn images_and_both_output_caps_are_in_the_worst_case() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: config("strict"), env: vec![] }).await;
    // Room for a few text calls, far from one image's 50,000 tokens (30,000 nano-USD at demo's price).
    let key = admin(&gw, "/key/generate", json!({"max_budget": 0.000_1})).await;
    let secret = key["key"].as_str().unwrap();
    let text = gw.http().post("/v1/chat/completions", secret, call_body(json!({}))).await;
    assert_eq!(text.0, 200, "{}", text.2);
    let image = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    ]}]});
    let (s, _, v) = gw.http().post("/v1/chat/completions", secret, call_body(image)).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(openai_error(&v)["type"], "budget_exceeded", "{v}");
    let both = json!({"max_completion_tokens": 1, "max_tokens": 64_000});
    let (s, _, v) = gw.http().post("/v1/chat/completions", secret, call_body(both)).await;
    assert_eq!(s, 400, "the larger cap is reserved: {v}");
    assert_eq!(openai_error(&v)["type"], "budget_exceeded", "{v}");
}

/// A stream the client leaves before the provider reported usage is charged a bound, never an
/// estimate below the real count: here the prompt's bytes (3 per CJK character, where four
/// characters a token would charge a twelfth).
#[tokio::test]
async fn a_stream_left_before_its_usage_is_charged_a_bound() {
    let cfg = config("strict").replace(
        "      mock_response: \"ok ok ok ok\"\n",
        "      mock_response: \"ok ok ok ok\"\n      mock_chunk_delay_ms: 300\n",
    );
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: cfg, env: vec![] }).await;
    let key = admin(&gw, "/key/generate", json!({})).await;
    let prompt = "你好".repeat(500);
    let body = json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": prompt}]});
    let mut resp = gw
        .http()
        .client
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(key["key"].as_str().unwrap())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap();
    assert!(first.is_some());
    drop(resp);
    let logs = gw.spend_logs_until(&format!("api_key={}", key["token"].as_str().unwrap()), 1).await;
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["error_code"], "CLIENT_DISCONNECTED", "{}", logs[0]);
    let charged = logs[0]["prompt_tokens"].as_u64().unwrap();
    assert!(charged >= prompt.len() as u64, "charged {charged} prompt tokens for {} bytes", prompt.len());
}
