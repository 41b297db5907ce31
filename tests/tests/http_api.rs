//! The walking skeleton over HTTP, on SQLite and on PostgreSQL: mint a key, call a model
//! (whole and streamed), read the spend records, delete the key.

use ferryman_tests::mock_openai::{self, MockOpenAi};
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, expected_cost_nanos, json, openai_error, standard_config};

/// Prices of the `demo` deployment and of gpt-4o-mini in the built-in table, femto-USD/token.
const DEMO_IN: i128 = 150_000_000;
const DEMO_OUT: i128 = 600_000_000;

async fn start(backend: Backend, upstream: &MockOpenAi) -> Gateway {
    Gateway::start(Options {
        backend,
        config: standard_config(Some(&upstream.base_url)),
        env: vec![("UPSTREAM_KEY".into(), "sk-upstream-secret".into())],
    })
    .await
}

async fn skeleton(backend: Backend) {
    let upstream = MockOpenAi::start().await;
    let gw = start(backend, &upstream).await;
    let http = gw.http();

    // Mint a key with LiteLLM's request and response shape.
    let created = gw
        .create_key(json!({"key_alias": "svc-a", "models": ["demo", "gpt-4o-mini"], "max_budget": 12.5,
            "metadata": {"team": "search"}, "duration": "30d"}))
        .await;
    let secret = created["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-") && secret.len() > 40, "{created}");
    assert_eq!(created["key_alias"], "svc-a");
    assert_eq!(created["key_name"], format!("sk-...{}", &secret[secret.len() - 4..]));
    assert_eq!(created["max_budget"], 12.5);
    assert_eq!(created["max_budget_nanos"], 12_500_000_000i64);
    assert_eq!(created["metadata"]["team"], "search");
    assert!(created["expires"].is_string());
    let key_id = created["token"].as_str().unwrap().to_owned();

    // A whole completion on the mock provider.
    let (status, headers, body) = http
        .post(
            "/v1/chat/completions",
            &secret,
            json!({"model": "demo", "user": "customer-7",
            "messages": [{"role": "user", "content": "hello there"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    let usage = &body["usage"];
    let (p, c) = (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + c);
    let demo_cost = expected_cost_nanos(p, c, DEMO_IN, DEMO_OUT);
    let cost_header = headers["x-ferryman-response-cost"].to_str().unwrap();
    assert_eq!(cost_header, format!("0.{:09}", demo_cost).trim_end_matches('0'));
    assert_eq!(headers["x-ferryman-model-id"], "demo-mock-1");
    let call_id = headers["x-ferryman-call-id"].to_str().unwrap().to_owned();
    let overhead: f64 = headers["x-ferryman-overhead-duration-ms"].to_str().unwrap().parse().unwrap();
    assert!(overhead >= 0.0);

    // The same path without /v1, on the OpenAI-compatible upstream, priced by the table.
    let (status, headers, body) = http
        .post(
            "/chat/completions",
            &secret,
            json!({"model": "gpt-4o-mini", "temperature": 0.2, "logprobs": true,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], mock_openai::CONTENT);
    let mini_cost = expected_cost_nanos(mock_openai::PROMPT_TOKENS, mock_openai::COMPLETION_TOKENS, DEMO_IN, DEMO_OUT);
    assert_eq!(mini_cost, 7350);
    assert_eq!(headers["x-ferryman-response-cost"], "0.00000735");
    assert_eq!(headers["x-ferryman-model-id"], "openai-mini-1");
    // What the upstream received: the upstream model, the gateway's key (never the caller's),
    // and the unknown parameter passed through.
    let got = upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["model"], "gpt-4o-mini");
    assert_eq!(got[0].body["temperature"], 0.2);
    assert_eq!(got[0].body["logprobs"], true);
    assert_eq!(got[0].body["messages"][0], json!({"role": "system", "content": "be brief"}));
    assert!(got[0].body.get("stream").is_none());
    assert_eq!(got[0].headers["authorization"], "Bearer sk-upstream-secret");

    // Streamed, with usage asked for: chunks, a usage chunk, then [DONE].
    let (status, headers, events) = http
        .stream(
            &secret,
            json!({"model": "demo", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "stream please"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["x-ferryman-model-id"], "demo-mock-1");
    let stream_call_id = headers["x-ferryman-call-id"].to_str().unwrap().to_owned();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<serde_json::Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.contains("stream please"), "{text}");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    let stream_usage = usage_chunk["usage"].clone();
    // Streamed without usage asked for: no usage chunk.
    let (_, _, events) = http
        .stream(
            &secret,
            json!({"model": "gpt-4o-mini", "stream": true,
            "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert!(events.iter().all(|e| !e.contains("\"usage\"")), "{events:?}");
    let upstream_stream = &upstream.received()[1].body;
    assert_eq!(upstream_stream["stream"], true);
    assert_eq!(upstream_stream["stream_options"], json!({"include_usage": true}), "the gateway always asks for usage");

    // Every call left a spend record, with the cost, the tokens and the end user.
    let logs = gw.spend_logs_until(&format!("api_key={key_id}"), 4).await;
    assert_eq!(logs.len(), 4, "{logs:#?}");
    let by_id = |id: &str| logs.iter().find(|r| r["request_id"] == id).cloned().unwrap();
    let first = by_id(&call_id);
    assert_eq!(first["api_key"], key_id.as_str());
    assert_eq!(first["model"], "demo");
    assert_eq!(first["model_id"], "demo-mock-1");
    assert_eq!(first["custom_llm_provider"], "mock");
    assert_eq!(first["prompt_tokens"].as_u64().unwrap(), p);
    assert_eq!(first["completion_tokens"].as_u64().unwrap(), c);
    assert_eq!(first["spend_nanos"].as_i64().unwrap(), demo_cost);
    assert_eq!(first["end_user"], "customer-7");
    assert_eq!(first["status"], "success");
    assert_eq!(first["call_type"], "chat_completion");
    let streamed = by_id(&stream_call_id);
    assert_eq!(streamed["call_type"], "stream_chat_completion");
    assert_eq!(streamed["prompt_tokens"], stream_usage["prompt_tokens"]);
    assert_eq!(streamed["completion_tokens"], stream_usage["completion_tokens"]);
    let total: i64 = logs.iter().map(|r| r["spend_nanos"].as_i64().unwrap()).sum();

    // Filters: by request id, by end user; the key's spend is the exact sum.
    let one = gw.spend_logs_until(&format!("request_id={call_id}"), 1).await;
    assert_eq!(one.len(), 1);
    let cust = gw.spend_logs_until("end_user=customer-7", 1).await;
    assert_eq!(cust.len(), 1);
    let (status, _, info) = http.get(&format!("/key/info?key={key_id}"), MASTER_KEY).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["info"]["spend_nanos"].as_i64().unwrap(), total);

    // Lists show the alias and the masked key, never the secret.
    let (status, _, list) = http.get("/key/list?return_full_object=true", MASTER_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(list["keys"][0]["key_alias"], "svc-a");
    assert!(!list.to_string().contains(&secret));

    // A deleted key stops working at once.
    let (status, _, del) = http.post("/key/delete", MASTER_KEY, json!({"keys": [key_id]})).await;
    assert_eq!(status, 200, "{del}");
    assert_eq!(del["deleted_keys"], json!([key_id]));
    let (status, _, body) = http
        .post("/v1/chat/completions", &secret, json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(openai_error(&body)["type"], "authentication_error");
    assert!(!body.to_string().contains(&secret));
}

#[tokio::test]
async fn skeleton_on_sqlite() {
    skeleton(Backend::Sqlite).await;
}

#[tokio::test]
async fn skeleton_on_postgres() {
    skeleton(Backend::Postgres).await;
}

#[tokio::test]
async fn the_master_key_calls_models_and_health_answers() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: standard_config(None), env: vec![] }).await;
    let http = gw.http();
    let (status, _, body) = http
        .post(
            "/v1/chat/completions",
            MASTER_KEY,
            json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = http.get("/health/liveness", "").await;
    assert_eq!((status, body), (200, json!("I'm alive!")));
    let (status, _, body) = http.get("/health/readiness", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["db"], "connected");
    let (status, _, body) = http.get("/v1/models", MASTER_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["id"], "demo");
    let logs = gw.spend_logs_until("api_key=master", 1).await;
    assert_eq!(logs[0]["api_key"], "master");
    // The overhead histogram counts the call, in Prometheus's text format, without a key.
    let (status, headers, body) = http.get("/metrics", "").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = body.as_str().unwrap();
    assert!(text.contains("# TYPE ferryman_overhead_seconds histogram"), "{text}");
    assert!(text.contains("ferryman_overhead_seconds_count{kind=\"call\"} 1\n"), "{text}");
    assert!(text.contains("ferryman_overhead_seconds_bucket{kind=\"call\",le=\"+Inf\"} 1\n"), "{text}");
    assert!(text.contains("ferryman_calls_total{status=\"success\"} 1\n"), "{text}");
}

#[tokio::test]
async fn upstream_failures_map_to_clear_errors_without_leaking_secrets() {
    let upstream = MockOpenAi::start().await;
    let gw = start(Backend::Sqlite, &upstream).await;
    let http = gw.http();
    let call = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]});

    upstream.fail_next(mock_openai::Failure {
        status: 429,
        body: json!({"error": {"message": "slow down", "type": "rate_limit_error"}}),
        headers: vec![("retry-after", "7".into())],
    });
    let (status, headers, body) = http.post("/v1/chat/completions", MASTER_KEY, call.clone()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(openai_error(&body)["type"], "rate_limit_error");

    upstream.fail_next(mock_openai::Failure {
        status: 401,
        body: json!({"error": {"message": "Incorrect API key provided: sk-upst****cret"}}),
        headers: vec![],
    });
    let (status, _, body) = http.post("/v1/chat/completions", MASTER_KEY, call.clone()).await;
    assert_eq!(status, 502, "{body}");
    let e = openai_error(&body);
    assert_eq!(e["type"], "api_error");
    assert!(!body.to_string().contains("sk-upst"), "the provider's message echoes the key: {body}");

    upstream.fail_next(mock_openai::Failure { status: 500, body: json!("boom"), headers: vec![] });
    let (status, _, body) = http.post("/v1/chat/completions", MASTER_KEY, call.clone()).await;
    assert_eq!(status, 502, "{body}");

    // The mock provider fails on request, too.
    let (status, _, body) = http
        .post(
            "/v1/chat/completions",
            MASTER_KEY,
            json!({"model": "demo", "mock_error": 503,
            "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 502, "{body}");

    // Failed calls are recorded with their error and no cost.
    let logs = gw.spend_logs_until("api_key=master", 4).await;
    assert_eq!(logs.len(), 4);
    assert!(logs.iter().all(|r| r["status"] == "failure" && r["spend_nanos"] == 0), "{logs:#?}");
    assert!(!gw.logs().contains("sk-upstream-secret"));
}

/// Steady state reads no database: a change made behind the gateway's back (straight in the
/// database) is not seen, while the same change through the API is seen at once.
#[tokio::test]
async fn identities_come_from_the_cache_and_api_changes_invalidate_it() {
    use sqlx::Connection;
    let gw = Gateway::start(Options { backend: Backend::Postgres, config: standard_config(None), env: vec![] }).await;
    let http = gw.http();
    let call = json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]});
    let key = gw.create_key(json!({})).await;
    let secret = key["key"].as_str().unwrap();
    assert_eq!(http.post("/v1/chat/completions", secret, call.clone()).await.0, 200);

    let mut db = sqlx::PgConnection::connect(&gw.db.url).await.unwrap();
    sqlx::query("DELETE FROM keys").execute(&mut db).await.unwrap();
    for _ in 0..3 {
        assert_eq!(http.post("/v1/chat/completions", secret, call.clone()).await.0, 200, "served from the cache");
    }

    let other = gw.create_key(json!({})).await;
    let other_secret = other["key"].as_str().unwrap();
    assert_eq!(http.post("/v1/chat/completions", other_secret, call.clone()).await.0, 200);
    let (status, _, _) = http.post("/key/delete", MASTER_KEY, json!({"keys": [other["token"]]})).await;
    assert_eq!(status, 200);
    assert_eq!(http.post("/v1/chat/completions", other_secret, call.clone()).await.0, 401);
}
