//! Check and Record for applications that call providers themselves, over HTTP and gRPC: a
//! recorded call lands on every scope like a proxied one, and a repeated request id counts
//! once.

use ferryman_proto::v1 as pb;
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, json, standard_config};

async fn admin(gw: &Gateway, path: &str, body: Value) -> Value {
    let (s, _, v) = gw.http().post(path, MASTER_KEY, body).await;
    assert_eq!(s, 200, "{path}: {v}");
    v
}

fn authed<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

async fn check_and_record(backend: Backend) {
    let gw = Gateway::start(Options { backend, config: standard_config(None), env: vec![] }).await;
    admin(&gw, "/team/new", json!({"team_id": "apps", "max_budget": 1})).await;
    // demo costs 150e6 / 600e6 femto-USD per input / output token.
    let key =
        admin(&gw, "/key/generate", json!({"team_id": "apps", "max_budget": 0.01, "models": ["demo", "gpt-4o"]})).await;
    let secret = key["key"].as_str().unwrap().to_owned();
    let key_id = key["token"].as_str().unwrap().to_owned();
    let http = gw.http();

    let (s, _, ok) = http
        .post(
            "/usage/check",
            &secret,
            json!({"model": "demo", "customer": "shop-1", "input_tokens": 1000, "output_tokens": 500}),
        )
        .await;
    assert_eq!(s, 200, "{ok}");
    assert_eq!(ok["allowed"], true);
    assert_eq!(ok["estimated_cost_nanos"], 450_000);
    let scopes: Vec<&str> = ok["budgets"].as_array().unwrap().iter().map(|b| b["scope"].as_str().unwrap()).collect();
    assert_eq!(scopes, ["key", "team", "customer"]);
    let (_, _, no) = http
        .post("/usage/check", &secret, json!({"model": "demo", "input_tokens": 100_000_000, "output_tokens": 0}))
        .await;
    assert_eq!(no["allowed"], false);
    assert_eq!(no["reason"], "BUDGET_EXCEEDED");
    assert!(no["message"].as_str().unwrap().contains("key"), "{no}");
    let (_, _, denied) = http.post("/usage/check", &secret, json!({"model": "other", "input_tokens": 1})).await;
    assert_eq!(denied["error"]["param"], "model", "unknown models are refused by name: {denied}");

    // Record: priced by the deployment (demo) or by the price table (gpt-4o).
    let (s, _, r) = http
        .post(
            "/usage/record",
            &secret,
            json!({"request_id": "app-1", "model": "demo", "customer": "shop-1",
        "input_tokens": 1000, "output_tokens": 500}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!((r["cost_nanos"].as_i64(), r["duplicate"].as_bool()), (Some(450_000), Some(false)));
    let (_, _, again) = http
        .post(
            "/usage/record",
            &secret,
            json!({"request_id": "app-1", "model": "demo", "input_tokens": 1000, "output_tokens": 500}),
        )
        .await;
    assert_eq!(again["duplicate"], true);
    let (_, _, table) = http
        .post(
            "/usage/record",
            &secret,
            json!({"request_id": "app-2", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 500}),
        )
        .await;
    assert_eq!(table["cost_nanos"], 7_500_000, "1000 x 2.5e-6 + 500 x 1e-5 USD");

    // Concurrent repeats of one id: exactly one is recorded.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = http.client.clone();
        let url = format!("{}/usage/record", gw.url);
        let secret = secret.clone();
        tasks.push(tokio::spawn(async move {
            let v: Value = client
                .post(url)
                .bearer_auth(secret)
                .json(&json!({"request_id": "app-3", "model": "demo", "input_tokens": 10}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["duplicate"].as_bool().unwrap()
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        if !t.await.unwrap() {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1);

    // gRPC: the same service.
    let mut usage = pb::usage_service_client::UsageServiceClient::new(gw.channel().await);
    let c = usage
        .check(authed(
            &secret,
            pb::CheckRequest {
                model: "demo".into(),
                customer: None,
                input_tokens: 10,
                output_tokens: 10,
                tags: vec![],
                n: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(c.allowed);
    assert_eq!(c.budgets[0].max_budget_nanos, Some(10_000_000));
    let r = usage
        .record(authed(
            &secret,
            pb::RecordRequest {
                request_id: "grpc-1".into(),
                model: "demo".into(),
                input_tokens: 100,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.cost_nanos, r.duplicate), (15_000, false));
    let r = usage
        .record(authed(
            &secret,
            pb::RecordRequest {
                request_id: "grpc-1".into(),
                model: "demo".into(),
                input_tokens: 100,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.duplicate);

    // Every record landed once, on the key, the team and the customer.
    let expected = 450_000 + 7_500_000 + 1_500 + 15_000;
    let logs = gw.spend_logs_until(&format!("api_key={key_id}&page_size=100"), 4).await;
    assert_eq!(logs.len(), 4);
    assert!(logs.iter().all(|l| l["call_type"] == "record"));
    assert_eq!(logs.iter().map(|l| l["spend_nanos"].as_i64().unwrap()).sum::<i64>(), expected);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let info = http.get(&format!("/key/info?key={key_id}"), MASTER_KEY).await.2;
        if info["info"]["spend_nanos"] == expected || std::time::Instant::now() > deadline {
            assert_eq!(info["info"]["spend_nanos"], expected);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(http.get("/team/info?team_id=apps", MASTER_KEY).await.2["team_info"]["spend_nanos"], expected);
    assert_eq!(http.get("/customer/info?end_user_id=shop-1", MASTER_KEY).await.2["spend_nanos"], 450_000);
    // Check now sees the recorded spend.
    let c = usage
        .check(authed(
            &secret,
            pb::CheckRequest {
                model: "demo".into(),
                customer: None,
                input_tokens: 1,
                output_tokens: 0,
                tags: vec![],
                n: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.budgets[0].spent_nanos, expected);
}

#[tokio::test]
async fn check_and_record_on_sqlite() {
    check_and_record(Backend::Sqlite).await;
}

#[tokio::test]
async fn check_and_record_on_postgres() {
    check_and_record(Backend::Postgres).await;
}

/// Check reports each rate-limited scope with its use this minute, and a tag's budget; Record
/// lands spend on the tags it names.
#[tokio::test]
async fn check_reports_limits_and_tags() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: standard_config(None), env: vec![] }).await;
    admin(&gw, "/tag/new", json!({"name": "campaign", "max_budget": 0.001})).await;
    let key =
        admin(&gw, "/key/generate", json!({"rpm_limit": 10, "tpm_limit": 1_000_000u64, "models": ["demo"]})).await;
    let secret = key["key"].as_str().unwrap().to_owned();
    let key_id = key["token"].as_str().unwrap().to_owned();
    let http = gw.http();

    let (s, _, c) =
        http.post("/usage/check", &secret, json!({"model": "demo", "tags": ["campaign"], "input_tokens": 100})).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["allowed"], true);
    let limit = &c["limits"][0];
    assert_eq!(limit["scope_id"], format!("key:{key_id}"), "{c}");
    assert_eq!((limit["rpm_limit"].as_u64(), limit["tpm_limit"].as_u64()), (Some(10), Some(1_000_000)));
    assert_eq!((limit["requests"].as_u64(), limit["tokens"].as_u64()), (Some(0), Some(0)), "Check counts nothing");
    let tag = c["budgets"].as_array().unwrap().iter().find(|b| b["scope"] == "tag").expect("the tag's budget");
    assert_eq!(tag["max_budget_nanos"], 1_000_000);

    // A check bigger than the tag's budget is refused by the tag.
    let (_, _, no) = http
        .post("/usage/check", &secret, json!({"model": "demo", "tags": ["campaign"], "input_tokens": 100_000}))
        .await;
    assert_eq!(no["allowed"], false, "{no}");
    assert!(no["message"].as_str().unwrap().contains("tag \"campaign\""), "{no}");

    // Record with the tag: the spend lands on it and in the log.
    let (s, _, r) = http
        .post(
            "/usage/record",
            &secret,
            json!({"request_id": "t-1", "model": "demo", "tags": ["campaign"], "input_tokens": 1000}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["cost_nanos"], 150_000);
    let logs = gw.spend_logs_until(&format!("api_key={key_id}"), 1).await;
    assert_eq!(logs[0]["request_tags"], json!(["campaign"]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let info = http.post("/tag/info", MASTER_KEY, json!({"names": ["campaign"]})).await.2;
        if info["campaign"]["spend_nanos"] == 150_000 || std::time::Instant::now() > deadline {
            assert_eq!(info["campaign"]["spend_nanos"], 150_000, "{info}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Bad tags are refused by name.
    let (s, _, bad) = http.post("/usage/check", &secret, json!({"model": "demo", "tags": [1]})).await;
    assert_eq!(s, 400, "{bad}");
    // A check that would pass the minute's token limit is refused by the key's limit.
    let (_, _, limited) = http.post("/usage/check", &secret, json!({"model": "demo", "input_tokens": 2_000_000})).await;
    assert_eq!(limited["reason"], "RATE_LIMITED", "{limited}");
}

/// Record's idempotency is each key's own: another tenant's record of the same request id is
/// another call (stored, charged, and nothing about the first revealed); a repeat by the same
/// key counts once. Times are checked, naming the field.
#[tokio::test]
async fn request_ids_are_idempotent_per_key_and_times_are_checked() {
    for backend in Backend::ALL {
        let gw = Gateway::start(Options { backend, config: standard_config(None), env: vec![] }).await;
        admin(&gw, "/team/new", json!({"team_id": "a"})).await;
        admin(&gw, "/team/new", json!({"team_id": "b"})).await;
        let a = admin(&gw, "/key/generate", json!({"team_id": "a"})).await;
        let b = admin(&gw, "/key/generate", json!({"team_id": "b"})).await;
        let http = gw.http();
        let record = json!({"request_id": "shared-1", "model": "demo", "input_tokens": 1000});
        let mut ids = Vec::new();
        for (key, repeat) in [(&a, false), (&b, false), (&b, true), (&a, true)] {
            let (s, _, r) = http.post("/usage/record", key["key"].as_str().unwrap(), record.clone()).await;
            assert_eq!(s, 200, "{r}");
            assert_eq!(r["duplicate"], repeat, "{backend:?}: {r}");
            assert_eq!(r["cost_nanos"], 150_000);
            ids.push(r["spend_log_request_id"].as_str().unwrap().to_owned());
        }
        assert_eq!(ids[0], format!("{}/shared-1", a["token"].as_str().unwrap()));
        assert_eq!((ids[1] == ids[2], ids[0] == ids[3], ids[0] == ids[1]), (true, true, false));
        // Both calls are stored and charged, each to its own team.
        for (key, team) in [(&a, "a"), (&b, "b")] {
            let logs = gw.spend_logs_until(&format!("api_key={}", key["token"].as_str().unwrap()), 1).await;
            assert_eq!(logs.len(), 1, "{logs:?}");
            assert_eq!(logs[0]["team_id"], team);
        }
        // Another instance (without this one's memory of recent ids) answers from the store.
        let gw2 = gw.another_instance().await;
        let (_, _, r) = gw2.http().post("/usage/record", b["key"].as_str().unwrap(), record.clone()).await;
        assert_eq!(r["duplicate"], true, "{r}");

        let secret = a["key"].as_str().unwrap();
        let bad = [
            (json!({"start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}), "end_time"),
            (json!({"start_time": "2999-01-01T00:00:00Z"}), "start_time"),
            (json!({"end_time": "2999-01-01T00:00:00Z"}), "end_time"),
        ];
        for (times, field) in bad {
            let mut body = json!({"request_id": format!("t-{field}"), "model": "demo", "input_tokens": 1});
            body.as_object_mut().unwrap().extend(times.as_object().unwrap().clone());
            let (s, _, v) = http.post("/usage/record", secret, body).await;
            assert_eq!((s, v["error"]["param"].as_str()), (400, Some(field)), "{v}");
        }
        // Refused records wrote nothing.
        let logs = gw.spend_logs_until(&format!("api_key={}", a["token"].as_str().unwrap()), 1).await;
        assert_eq!(logs.len(), 1);
    }
}
