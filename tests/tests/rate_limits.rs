//! Rate limits on the embedded backend (one instance): requests per minute, tokens per
//! minute, requests in flight; on keys, teams and deployments; the 429s and the headers.

use std::time::Duration;

use ferryman_proto::v1 as pb;
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, early_in_a_minute, json, openai_error};
use tonic_types::StatusExt;

fn config() -> String {
    format!(
        r#"model_list:
  - model_name: demo
    litellm_params:
      model: mock/demo
      mock_response: "ok ok ok ok"
      input_cost_per_token: 0.00000015
      output_cost_per_token: 0.0000006
  - model_name: slow-deployment
    litellm_params:
      model: mock/limited
      rpm: 2
general_settings:
  master_key: {MASTER_KEY}
  database_url: "{{database_url}}"
"#
    )
}

async fn admin(gw: &Gateway, path: &str, body: Value) -> Value {
    let (s, _, v) = gw.http().post(path, MASTER_KEY, body).await;
    assert_eq!(s, 200, "{path}: {v}");
    v
}

fn body(extra: Value) -> Value {
    let mut b = json!({"model": "demo", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]});
    if let (Value::Object(b), Value::Object(e)) = (&mut b, extra) {
        b.extend(e);
    }
    b
}

async fn concurrent(gw: &Gateway, key: &str, n: usize, extra: Value) -> Vec<(u16, reqwest::header::HeaderMap, Value)> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let client = gw.http().client.clone();
        let url = format!("{}/v1/chat/completions", gw.url);
        let (key, b) = (key.to_owned(), body(extra.clone()));
        tasks.push(tokio::spawn(async move {
            let resp = client.post(url).bearer_auth(key).json(&b).send().await.unwrap();
            let (s, h) = (resp.status().as_u16(), resp.headers().clone());
            (s, h, resp.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn requests_tokens_and_slots_are_limited() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: config(), env: vec![] }).await;
    early_in_a_minute().await;

    // RPM 5: of 20 concurrent calls, exactly 5 pass; the rest get OpenAI's 429.
    let rpm_key = admin(&gw, "/key/generate", json!({"key_alias": "rpm", "rpm_limit": 5})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let results = concurrent(&gw, &rpm_key, 20, json!({})).await;
    assert_eq!(results.iter().filter(|r| r.0 == 200).count(), 5);
    let refused = results.iter().find(|r| r.0 == 429).unwrap();
    let e = openai_error(&refused.2);
    assert_eq!(e["type"], "rate_limit_error");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("key \"rpm\": requests per minute limit 5 reached"), "{message}");
    let retry: u64 = refused.1["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let ok = results
        .iter()
        .filter(|r| r.0 == 200)
        .map(|r| r.1["x-ratelimit-remaining-requests"].to_str().unwrap().parse::<u64>().unwrap());
    let mut remaining: Vec<u64> = ok.collect();
    remaining.sort();
    assert_eq!(remaining, [0, 1, 2, 3, 4]);

    // TPM 100: each call reserves 9 prompt + 10 max_tokens = 19 and settles at 9 + 3 = 12, so
    // calls one after another fit while 12 x (n - 1) + 19 <= 100: seven.
    let tpm_key = admin(&gw, "/key/generate", json!({"tpm_limit": 100})).await["key"].as_str().unwrap().to_owned();
    let mut admitted = 0;
    for _ in 0..10 {
        let (s, h, _) = gw.http().post("/v1/chat/completions", &tpm_key, body(json!({}))).await;
        if s == 200 {
            admitted += 1;
            assert_eq!(h["x-ratelimit-limit-tokens"], "100");
        }
    }
    assert_eq!(admitted, 7);

    // Two in flight at most: of 6 slow concurrent calls 2 pass; afterwards the slots are free.
    let par_key =
        admin(&gw, "/key/generate", json!({"max_parallel_requests": 2})).await["key"].as_str().unwrap().to_owned();
    let results = concurrent(&gw, &par_key, 6, json!({"mock_latency_ms": 400})).await;
    assert_eq!(results.iter().filter(|r| r.0 == 200).count(), 2);
    let refused = results.iter().find(|r| r.0 == 429).unwrap();
    assert!(openai_error(&refused.2)["message"].as_str().unwrap().contains("max_parallel_requests limit 2"));
    assert_eq!(gw.http().post("/v1/chat/completions", &par_key, body(json!({}))).await.0, 200);

    // A team's limit covers all its keys together.
    admin(&gw, "/team/new", json!({"team_id": "t", "rpm_limit": 3})).await;
    let a = admin(&gw, "/key/generate", json!({"team_id": "t"})).await["key"].as_str().unwrap().to_owned();
    let b = admin(&gw, "/key/generate", json!({"team_id": "t"})).await["key"].as_str().unwrap().to_owned();
    let mut passed = 0;
    for key in [&a, &b, &a, &b, &a] {
        if gw.http().post("/v1/chat/completions", key, body(json!({}))).await.0 == 200 {
            passed += 1;
        }
    }
    assert_eq!(passed, 3);

    // A deployment's rpm (litellm_params.rpm).
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                gw.http().post("/v1/chat/completions", MASTER_KEY, body(json!({"model": "slow-deployment"}))).await.0,
            );
        }
        v
    };
    assert_eq!(statuses, [200, 200, 429]);

    // A call refused by its budget consumes nothing from its rate limits.
    let k = admin(&gw, "/key/generate", json!({"key_alias": "poor", "rpm_limit": 1, "max_budget": 0.000000001})).await;
    let secret = k["key"].as_str().unwrap();
    assert_eq!(gw.http().post("/v1/chat/completions", secret, body(json!({}))).await.0, 400);
    admin(&gw, "/key/update", json!({"key": k["token"], "max_budget": 1})).await;
    assert_eq!(
        gw.http().post("/v1/chat/completions", secret, body(json!({}))).await.0,
        200,
        "the refused call took no request"
    );

    // gRPC: RESOURCE_EXHAUSTED with RATE_LIMITED and RetryInfo.
    let mut inference = pb::inference_service_client::InferenceServiceClient::new(gw.channel().await);
    let mut req = tonic::Request::new(pb::CreateChatCompletionRequest {
        params: Some(pb::ChatCompletionParams {
            model: "demo".into(),
            messages: vec![pb::ChatMessage {
                role: pb::Role::User.into(),
                content: Some(pb::chat_message::Content::Text("hi".into())),
                ..Default::default()
            }],
            ..Default::default()
        }),
    });
    req.metadata_mut().insert("authorization", format!("Bearer {rpm_key}").parse().unwrap());
    let err = inference.create_chat_completion(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let details = err.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "RATE_LIMITED");
    assert!(details.retry_info().is_some());
}

/// A client that hangs up mid-call still has its call settled: its slot is freed and its
/// spend recorded.
#[tokio::test]
async fn a_client_that_hangs_up_frees_its_slot_and_pays() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: config(), env: vec![] }).await;
    let key = admin(&gw, "/key/generate", json!({"max_parallel_requests": 1, "max_budget": 1})).await;
    let secret = key["key"].as_str().unwrap();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(150)).build().unwrap();
    let gone = impatient
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(secret)
        .json(&body(json!({"mock_latency_ms": 600})))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up");
    // While the abandoned call runs upstream it holds the slot; afterwards it is free.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (s, _, b) = gw.http().post("/v1/chat/completions", secret, body(json!({}))).await;
    assert_eq!(s, 200, "{b}");
    let logs = gw.spend_logs_until(&format!("api_key={}", key["token"].as_str().unwrap()), 2).await;
    assert_eq!(logs.len(), 2, "the abandoned call was recorded too");
    assert!(logs.iter().all(|l| l["status"] == "success" && l["spend_nanos"].as_i64().unwrap() > 0));
}
