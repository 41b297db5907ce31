//! The router through the real binary: retries onto other deployments, fallbacks to other
//! model names (context-window ones included), cooldown then recovery, wildcard names and
//! aliases, and upstream timeouts and malformed bodies as clear errors — never a hang.

use std::time::{Duration, Instant};

use ferryman_tests::mock_openai::{CONTENT, Failure, MockOpenAi};
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, json, openai_error};

fn deployment(name: &str, id: &str, mock: &MockOpenAi, extra: &str) -> String {
    format!(
        "  - model_name: \"{name}\"\n    litellm_params:\n      model: openai/up-{id}\n      api_base: {}\n      api_key: sk-up\n      input_cost_per_token: 0.000001\n      output_cost_per_token: 0.000002\n{extra}    model_info:\n      id: {id}\n",
        mock.base_url
    )
}

async fn start(models: &[String], router: &str) -> Gateway {
    let config = format!(
        "model_list:\n{}router_settings:\n{router}general_settings:\n  master_key: {MASTER_KEY}\n  database_url: \"{{database_url}}\"\n",
        models.concat()
    );
    Gateway::start(Options { backend: Backend::Sqlite, config, env: vec![] }).await
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

fn server_error() -> Failure {
    Failure { status: 500, body: json!({"error": {"message": "boom", "type": "server_error"}}), headers: vec![] }
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn failed_attempts_are_retried_on_the_other_deployment_and_counted() {
    let (a, b) = (MockOpenAi::start().await, MockOpenAi::start().await);
    let gw =
        start(&[deployment("gpt", "dep-a", &a, ""), deployment("gpt", "dep-b", &b, "")], "  num_retries: 2\n").await;
    // Both fail once: the first attempt fails, the retry goes to the other one and fails, the
    // second retry succeeds on whichever is picked.
    a.fail_next(server_error());
    b.fail_next(server_error());
    let (s, h, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("gpt")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], CONTENT);
    assert_eq!(header(&h, "x-ferryman-attempted-retries"), "2");
    assert_eq!(header(&h, "x-litellm-attempted-retries"), "2");
    assert_eq!(header(&h, "x-ferryman-attempted-fallbacks"), "0");
    assert_eq!(a.received().len() + b.received().len(), 3);
    assert_eq!(a.received().len().min(b.received().len()), 1, "the retry went to the deployment not yet tried");
    let answered = header(&h, "x-ferryman-model-id");
    let logs = gw.spend_logs_until("api_key=master", 1).await;
    assert_eq!(logs[0]["model_id"], answered.as_str(), "the spend record names the deployment that answered");

    // Without retries left the failure reaches the caller as a clear 502.
    a.fail_next(server_error());
    b.fail_next(server_error());
    a.fail_next(server_error());
    b.fail_next(server_error());
    let (s, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("gpt")).await;
    assert_eq!(s, 502, "{body}");
    assert!(openai_error(&body)["message"].as_str().unwrap().contains("failed with status 500"), "{body}");
}

#[tokio::test]
async fn failing_deployments_cool_down_then_recover() {
    let (a, b, solo) = (MockOpenAi::start().await, MockOpenAi::start().await, MockOpenAi::start().await);
    let gw = start(
        &[
            deployment("pair", "dep-a", &a, ""),
            deployment("pair", "dep-b", &b, ""),
            deployment("solo", "dep-solo", &solo, ""),
        ],
        "  allowed_fails: 1
  cooldown_time: 2
",
    )
    .await;
    // Each of the pair fails twice within the minute (allowed_fails 1): both are left out.
    for _ in 0..2 {
        a.fail_next(server_error());
        b.fail_next(server_error());
    }
    for _ in 0..4 {
        assert_eq!(gw.http().post("/v1/chat/completions", MASTER_KEY, ask("pair")).await.0, 502);
    }
    let cooled = Instant::now();
    let (s, h, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("pair")).await;
    assert_eq!(s, 429, "{body}");
    assert!(openai_error(&body)["message"].as_str().unwrap().contains("cooling down"), "{body}");
    assert!(header(&h, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(a.received().len() + b.received().len(), 4, "cooling deployments are not called");
    // After the cooldown they serve again.
    loop {
        let (s, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("pair")).await;
        if s == 200 {
            assert_eq!(body["choices"][0]["message"]["content"], CONTENT);
            break;
        }
        assert_eq!(s, 429, "{body}");
        assert!(cooled.elapsed() < Duration::from_secs(4), "no recovery after the 2 s cooldown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cooled.elapsed() >= Duration::from_millis(1500), "recovered before the cooldown ended");

    // A model name's only deployment never cools down: one failure fails one call.
    for _ in 0..3 {
        solo.fail_next(server_error());
    }
    for _ in 0..3 {
        assert_eq!(gw.http().post("/v1/chat/completions", MASTER_KEY, ask("solo")).await.0, 502);
    }
    assert_eq!(gw.http().post("/v1/chat/completions", MASTER_KEY, ask("solo")).await.0, 200);
}

#[tokio::test]
async fn fallbacks_and_context_window_fallbacks_answer_from_other_models() {
    let (small, big, short, long) =
        (MockOpenAi::start().await, MockOpenAi::start().await, MockOpenAi::start().await, MockOpenAi::start().await);
    let gw = start(
        &[
            deployment("small", "dep-small", &small, ""),
            deployment("big", "dep-big", &big, ""),
            deployment("short", "dep-short", &short, ""),
            deployment("long", "dep-long", &long, ""),
        ],
        "  fallbacks: [{\"small\": [\"big\"]}]\n  context_window_fallbacks: [{\"short\": [\"long\"]}]\n",
    )
    .await;
    small.fail_next(server_error());
    let (s, h, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("small")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(header(&h, "x-ferryman-attempted-fallbacks"), "1");
    assert_eq!(header(&h, "x-ferryman-model-id"), "dep-big");
    assert_eq!(big.received()[0].body["model"], "up-dep-big");

    let too_long = Failure {
        status: 400,
        body: json!({"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
            "type": "invalid_request_error", "code": "context_length_exceeded"}}),
        headers: vec![],
    };
    short.fail_next(too_long);
    let (s, h, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("short")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(header(&h, "x-ferryman-model-id"), "dep-long");
    let logs = gw.spend_logs_until("api_key=master", 2).await;
    assert!(logs.iter().any(|r| r["model_id"] == "dep-long" && r["model"] == "short"), "{logs:?}");

    // A plain bad request is the caller's: no fallback, the upstream's message comes back.
    short.fail_next(Failure {
        status: 400,
        body: json!({"error": {"message": "temperature must be at most 2", "type": "invalid_request_error"}}),
        headers: vec![],
    });
    let (s, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("short")).await;
    assert_eq!(s, 400, "{body}");
    assert!(openai_error(&body)["message"].as_str().unwrap().contains("temperature must be at most 2"));
    assert_eq!(long.received().len(), 1, "no fallback for a bad request");
}

#[tokio::test]
async fn timeouts_and_malformed_bodies_are_clear_errors_and_wildcards_pass_names_through() {
    let (slow, odd, any) = (MockOpenAi::start().await, MockOpenAi::start().await, MockOpenAi::start().await);
    let wildcard = format!(
        "  - model_name: \"openai/*\"\n    litellm_params:\n      model: \"openai/*\"\n      api_base: {}\n      api_key: sk-up\n",
        any.base_url
    );
    let gw = start(
        &[
            deployment("slow", "dep-slow", &slow, "      timeout: 1\n"),
            deployment("odd", "dep-odd", &odd, ""),
            wildcard,
        ],
        "  model_group_alias: {\"gpt-4\": \"odd\"}\n",
    )
    .await;
    slow.set_latency(Duration::from_secs(5));
    let started = Instant::now();
    let (s, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("slow")).await;
    assert_eq!(s, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(4), "the 1 s timeout held: {:?}", started.elapsed());
    assert!(openai_error(&body)["message"].as_str().unwrap().contains("did not answer within 1s"), "{body}");

    odd.fail_next(Failure { status: 200, body: json!("this is not a completion"), headers: vec![] });
    let (s, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("gpt-4")).await;
    assert_eq!(s, 502, "{body}");
    assert!(openai_error(&body)["message"].as_str().unwrap().contains("malformed response"), "{body}");
    let (s, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("gpt-4")).await;
    assert_eq!(s, 200, "the alias reaches odd: {body}");

    let (s, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("openai/gpt-4o-mini")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(any.received()[0].body["model"], "gpt-4o-mini", "the wildcard passes the requested name through");
    assert!(!gw.logs().contains("panicked"));
}

#[tokio::test]
async fn strategies_pick_as_documented() {
    // Usage is counted per minute: keep the test inside one.
    ferryman_tests::early_in_a_minute().await;
    // latency-based: after one sample each, the fast deployment takes the calls.
    let (slow, fast) = (MockOpenAi::start().await, MockOpenAi::start().await);
    slow.set_latency(Duration::from_millis(100));
    let gw = start(
        &[deployment("m", "dep-slow", &slow, ""), deployment("m", "dep-fast", &fast, "")],
        "  routing_strategy: latency-based-routing\n",
    )
    .await;
    for _ in 0..10 {
        assert_eq!(gw.http().post("/v1/chat/completions", MASTER_KEY, ask("m")).await.0, 200);
    }
    assert_eq!((slow.received().len(), fast.received().len()), (1, 9), "latency-based");

    // usage-based: the deployment with the most of its rpm left.
    let (small, large) = (MockOpenAi::start().await, MockOpenAi::start().await);
    let gw = start(
        &[
            deployment("u", "dep-small", &small, "      rpm: 2\n"),
            deployment("u", "dep-large", &large, "      rpm: 100\n"),
        ],
        "  routing_strategy: usage-based-routing\n",
    )
    .await;
    for _ in 0..10 {
        assert_eq!(gw.http().post("/v1/chat/completions", MASTER_KEY, ask("u")).await.0, 200);
    }
    assert_eq!((small.received().len(), large.received().len()), (1, 9), "usage-based");
    // ... and the most of its tpm left (each call here settles at 28 tokens).
    let (narrow, wide) = (MockOpenAi::start().await, MockOpenAi::start().await);
    let gw = start(
        &[
            deployment("t", "dep-narrow", &narrow, "      tpm: 2000\n"),
            deployment("t", "dep-wide", &wide, "      tpm: 200000\n"),
        ],
        "  routing_strategy: usage-based-routing\n",
    )
    .await;
    for _ in 0..10 {
        assert_eq!(gw.http().post("/v1/chat/completions", MASTER_KEY, ask("t")).await.0, 200);
    }
    assert_eq!((narrow.received().len(), wide.received().len()), (1, 9), "usage-based by tpm");

    // least-busy: while one deployment holds slow calls, new ones go to the other.
    let (busy, idle) = (MockOpenAi::start().await, MockOpenAi::start().await);
    busy.set_latency(Duration::from_millis(600));
    idle.set_latency(Duration::from_millis(600));
    let gw = start(
        &[deployment("b", "dep-busy", &busy, ""), deployment("b", "dep-idle", &idle, "")],
        "  routing_strategy: least-busy\n",
    )
    .await;
    let mut calls = Vec::new();
    for _ in 0..6 {
        let http = gw.http();
        calls.push(tokio::spawn(async move { http.post("/v1/chat/completions", MASTER_KEY, ask("b")).await.0 }));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    assert_eq!((busy.received().len(), idle.received().len()), (3, 3), "least-busy alternates under equal load");

    // simple-shuffle follows the weights.
    let (light, heavy) = (MockOpenAi::start().await, MockOpenAi::start().await);
    let gw = start(
        &[
            deployment("w", "dep-light", &light, "      weight: 1\n"),
            deployment("w", "dep-heavy", &heavy, "      weight: 9\n"),
        ],
        "",
    )
    .await;
    for _ in 0..200 {
        assert_eq!(gw.http().post("/v1/chat/completions", MASTER_KEY, ask("w")).await.0, 200);
    }
    let light_share = light.received().len();
    assert_eq!(light_share + heavy.received().len(), 200);
    assert!((5..=45).contains(&light_share), "weight 1 of 10 took {light_share} of 200");
}

#[tokio::test]
async fn the_retry_policy_sets_retries_per_kind_of_failure() {
    // One deployment: retries go to it again (and it never cools down).
    let a = MockOpenAi::start().await;
    let gw = start(
        &[deployment("p", "dep-a", &a, "")],
        "  num_retries: 3\n  retry_policy: {InternalServerErrorRetries: 0, RateLimitErrorRetries: 1}\n",
    )
    .await;
    a.fail_next(server_error());
    let (s, _, _) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("p")).await;
    assert_eq!(s, 502, "a 500 is not retried under InternalServerErrorRetries: 0");
    assert_eq!(a.received().len(), 1);
    let limited = || Failure { status: 429, body: json!({"error": {"message": "slow down"}}), headers: vec![] };
    a.fail_next(limited());
    let (s, h, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("p")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(header(&h, "x-ferryman-attempted-retries"), "1");
    assert_eq!(a.received().len(), 3);
    a.fail_next(limited());
    a.fail_next(limited());
    let (s, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("p")).await;
    assert_eq!(s, 429, "one retry, then the 429 reaches the caller: {body}");
    assert_eq!(a.received().len(), 5);
}

#[tokio::test]
async fn fallbacks_respect_access_and_start_when_every_deployment_cools() {
    let (x, y, spare, small) =
        (MockOpenAi::start().await, MockOpenAi::start().await, MockOpenAi::start().await, MockOpenAi::start().await);
    let gw = start(
        &[
            deployment("duo", "dep-x", &x, ""),
            deployment("duo", "dep-y", &y, ""),
            deployment("spare", "dep-spare", &spare, ""),
            deployment("small", "dep-small", &small, ""),
        ],
        "  allowed_fails: 0\n  cooldown_time: 30\n  fallbacks: [{\"duo\": [\"spare\"]}, {\"small\": [\"spare\"]}]\n",
    )
    .await;
    x.fail_next(server_error());
    y.fail_next(server_error());
    for _ in 0..2 {
        let (s, h, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("duo")).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(header(&h, "x-ferryman-model-id"), "dep-spare");
    }
    // Both of duo's deployments are cooling now: calls start on the fallback at once.
    let (s, h, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("duo")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(header(&h, "x-ferryman-attempted-fallbacks"), "1");
    assert_eq!(x.received().len() + y.received().len(), 2, "cooling deployments are not called");

    // A key that may use only `small` never reaches `spare` through a fallback.
    let limited = gw.create_key(json!({"models": ["small"]})).await["key"].as_str().unwrap().to_owned();
    small.fail_next(server_error());
    let (s, _, body) = gw.http().post("/v1/chat/completions", &limited, ask("small")).await;
    assert_eq!(s, 502, "the fallback is a model the key may not use: {body}");
    assert_eq!(spare.received().len(), 3);
}

#[tokio::test]
async fn wildcard_names_must_be_model_names_with_a_price() {
    let any = MockOpenAi::start().await;
    let wildcard = format!(
        "  - model_name: \"openai/*\"\n    litellm_params:\n      model: \"openai/*\"\n      api_base: {}\n      api_key: sk-up\n",
        any.base_url
    );
    let gw = start(&[wildcard], "").await;
    for bad in ["openai/../../admin", "openai/gpt-4o?x=1", "openai/gpt-4o#frag", "openai/"] {
        let (s, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask(bad)).await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert_eq!(openai_error(&body)["param"], "model");
    }
    let (s, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, ask("openai/no-such-model-priced")).await;
    assert_eq!(s, 400, "{body}");
    assert!(openai_error(&body)["message"].as_str().unwrap().contains("no price"), "{body}");
    assert!(any.received().is_empty(), "nothing reached the upstream");
    assert_eq!(gw.http().post("/v1/chat/completions", MASTER_KEY, ask("openai/gpt-4o-mini")).await.0, 200);
}
