//! Provider adapters through the real binary: the exact request each upstream received (the
//! translation) and the OpenAI-shaped answer the client got, streaming and not, tools included;
//! each provider's errors as OpenAI errors.

use std::time::{Duration, Instant};

use ferryman_tests::mock_anthropic::{self, MockAnthropic};
use ferryman_tests::mock_openai::{Failure, MockOpenAi};
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, json, openai_error};
use futures_util::StreamExt;

/// claude: 3e-6 / 15e-6 USD per input / output token (3,000,000,000 / 15,000,000,000 femto-USD).
async fn gateway(anthropic: &MockAnthropic, openai: Option<&MockOpenAi>) -> Gateway {
    let mut config = format!(
        r#"model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {}
      api_key: os.environ/ANTHROPIC_KEY
      input_cost_per_token: 0.000003
      output_cost_per_token: 0.000015
"#,
        anthropic.base_url
    );
    if let Some(o) = openai {
        let root = o.base_url.trim_end_matches("/v1");
        config.push_str(&format!(
            r#"  - model_name: azure-gpt
    litellm_params:
      model: azure/prod-gpt-4o
      api_base: {root}
      api_key: os.environ/AZURE_KEY
      api_version: "2024-10-21"
"#
        ));
    }
    config.push_str(&format!("general_settings:\n  master_key: {MASTER_KEY}\n  database_url: \"{{database_url}}\"\n"));
    let env = vec![
        ("ANTHROPIC_KEY".to_owned(), "sk-ant-upstream-secret".to_owned()),
        ("AZURE_KEY".to_owned(), "azure-upstream-secret".to_owned()),
    ];
    Gateway::start(Options { backend: Backend::Sqlite, config, env }).await
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

#[tokio::test]
async fn anthropic_requests_and_answers_are_translated_exactly() {
    let upstream = MockAnthropic::start().await;
    let gw = gateway(&upstream, None).await;
    let request = json!({
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Lyon\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_a", "content": "Sunny, 21C"},
            {"role": "user", "content": "And in Paris?"}
        ],
        "tools": [weather_tool()],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "stop": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 300,
        "user": "customer-7",
    });
    let (status, headers, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, request).await;
    assert_eq!(status, 200, "{body}");
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    let sent = &received[0];
    assert_eq!(sent.headers["x-api-key"], "sk-ant-upstream-secret");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(sent.headers.get("authorization").is_none(), "the caller's key never goes upstream");
    assert_eq!(
        sent.body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 300,
            "system": "Be brief.\nAnswer in French.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this picture, and the weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Lyon"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "Sunny, 21C"},
                    {"type": "text", "text": "And in Paris?"}
                ]}
            ],
            "stop_sequences": ["END"],
            "temperature": 0.2,
            "top_p": 0.9,
            "tools": [{"name": "get_weather", "description": "Weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "customer-7"}
        })
    );
    // The answer, in OpenAI's shape: text, the tool call, the finish reason and usage.
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], "msg_mock_1");
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], mock_anthropic::TEXT);
    assert_eq!(message["tool_calls"][0]["id"], "toolu_mock_1");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let prompt = mock_anthropic::INPUT_TOKENS + mock_anthropic::CACHE_READ_TOKENS;
    assert_eq!(body["usage"]["prompt_tokens"], prompt);
    assert_eq!(body["usage"]["completion_tokens"], mock_anthropic::OUTPUT_TOKENS);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], mock_anthropic::CACHE_READ_TOKENS);
    // The cost: 35 × 3e-6 + 9 × 15e-6 USD = 240,000 nano-USD.
    let cost = (prompt * 3_000 + mock_anthropic::OUTPUT_TOKENS * 15_000) as i64;
    assert_eq!(headers["x-ferryman-response-cost"].to_str().unwrap(), "0.00024");
    let logs = gw.spend_logs_until("api_key=master", 1).await;
    assert_eq!(logs[0]["spend_nanos"], cost);
    assert_eq!(logs[0]["custom_llm_provider"], "anthropic");

    // Defaults: max_tokens 4096 when the caller gives none; a plain string stays one text block.
    let (status, _, body) = gw
        .http()
        .post(
            "/v1/chat/completions",
            MASTER_KEY,
            json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
    let sent = &upstream.received()[1].body;
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(sent["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]));
    assert!(sent.get("system").is_none());
}

#[tokio::test]
async fn anthropic_streams_arrive_as_openai_chunks_without_buffering() {
    let upstream = MockAnthropic::start().await;
    let gw = gateway(&upstream, None).await;
    upstream.pace(Duration::from_millis(150));
    let started = Instant::now();
    let resp = gw
        .http()
        .client
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [weather_tool()]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let (mut text, mut first_at, mut all) = (String::new(), None, String::new());
    while let Some(bytes) = body.next().await {
        let bytes = bytes.unwrap();
        let s = String::from_utf8_lossy(&bytes);
        if first_at.is_none() && s.contains("Bonjour") {
            first_at = Some(started.elapsed());
        }
        all.push_str(&s);
    }
    let total = started.elapsed();
    // 13 events 150 ms apart: the first words arrive long before the upstream finishes.
    let first_at = first_at.expect("the text arrived");
    assert!(total >= Duration::from_millis(1500), "{total:?}");
    assert!(first_at + Duration::from_millis(900) < total, "first words at {first_at:?} of {total:?}: buffered");
    let chunks: Vec<Value> = all
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(all.trim_end().ends_with("data: [DONE]"));
    for c in &chunks {
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert_eq!(text, mock_anthropic::TEXT);
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert_eq!(calls[0]["id"], "toolu_mock_1");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(args, "{\"city\": \"Paris\"}");
    let finish: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["tool_calls"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], mock_anthropic::INPUT_TOKENS + mock_anthropic::CACHE_READ_TOKENS);
    assert_eq!(usage["completion_tokens"], mock_anthropic::OUTPUT_TOKENS);
    assert_eq!(upstream.received()[0].body["stream"], true);
    let logs = gw.spend_logs_until("api_key=master", 1).await;
    assert_eq!(logs[0]["completion_tokens"], mock_anthropic::OUTPUT_TOKENS);
}

#[tokio::test]
async fn anthropic_errors_become_openai_errors() {
    let upstream = MockAnthropic::start().await;
    let gw = gateway(&upstream, None).await;
    let call = json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]});
    let anthropic_error =
        |kind: &str, message: &str| json!({"type": "error", "error": {"type": kind, "message": message}});

    upstream.fail_next(Failure {
        status: 529,
        body: anthropic_error("overloaded_error", "Overloaded"),
        headers: vec![],
    });
    let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, call.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert!(openai_error(&body)["message"].as_str().unwrap().contains("overloaded"), "{body}");

    upstream.fail_next(Failure {
        status: 429,
        body: anthropic_error("rate_limit_error", "Number of requests has exceeded your rate limit"),
        headers: vec![("retry-after", "7".into())],
    });
    let (status, headers, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, call.clone()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(openai_error(&body)["type"], "rate_limit_error");
    assert_eq!(headers["retry-after"], "7");

    upstream.fail_next(Failure {
        status: 400,
        body: anthropic_error("invalid_request_error", "messages: roles must alternate"),
        headers: vec![],
    });
    let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, call.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(openai_error(&body)["message"].as_str().unwrap().contains("roles must alternate"), "{body}");

    upstream.fail_next(Failure {
        status: 401,
        body: anthropic_error("authentication_error", "invalid x-api-key sk-ant-upstream-sec***"),
        headers: vec![],
    });
    let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, call.clone()).await;
    assert_eq!(status, 502, "{body}");
    assert!(!body.to_string().contains("sk-ant"), "no upstream key fragment reaches the caller: {body}");

    // A stream whose upstream refuses before it starts: the same error, before any chunk.
    upstream.fail_next(Failure {
        status: 529,
        body: anthropic_error("overloaded_error", "Overloaded"),
        headers: vec![],
    });
    let mut streamed = call.clone();
    streamed["stream"] = json!(true);
    let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, streamed).await;
    assert_eq!(status, 503, "{body}");
    assert!(!gw.logs().contains("panicked"));
}

#[tokio::test]
async fn azure_deployments_use_the_deployment_path_api_version_and_api_key() {
    let anthropic = MockAnthropic::start().await;
    let upstream = MockOpenAi::start().await;
    let gw = gateway(&anthropic, Some(&upstream)).await;
    let (status, _, body) = gw
        .http()
        .post(
            "/v1/chat/completions",
            MASTER_KEY,
            json!({"model": "azure-gpt", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], ferryman_tests::mock_openai::CONTENT);
    let sent = &upstream.received()[0];
    assert_eq!(sent.uri, "/openai/deployments/prod-gpt-4o/chat/completions?api-version=2024-10-21");
    assert_eq!(sent.headers["api-key"], "azure-upstream-secret");
    assert!(sent.headers.get("authorization").is_none());
    // Streaming through Azure asks for usage like OpenAI.
    let (status, _, lines) = gw
        .http()
        .stream(
            MASTER_KEY,
            json!({"model": "azure-gpt", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(lines.iter().any(|l| l.contains("Hello")), "{lines:?}");
    assert_eq!(upstream.received()[1].body["stream_options"]["include_usage"], true);
}

async fn gemini_gateway(upstream: &ferryman_tests::mock_gemini::MockGemini) -> Gateway {
    let config = format!(
        r#"model_list:
  - model_name: gemini
    litellm_params:
      model: gemini/gemini-2.5-flash
      api_base: {}
      api_key: os.environ/GEMINI_KEY
      input_cost_per_token: 0.0000003
      output_cost_per_token: 0.0000025
general_settings:
  master_key: {MASTER_KEY}
  database_url: "{{database_url}}"
"#,
        upstream.base_url
    );
    let env = vec![("GEMINI_KEY".to_owned(), "gemini-upstream-secret".to_owned())];
    Gateway::start(Options { backend: Backend::Sqlite, config, env }).await
}

#[tokio::test]
async fn gemini_requests_answers_and_streams_are_translated_exactly() {
    use ferryman_tests::mock_gemini::{self, MockGemini};
    let upstream = MockGemini::start().await;
    let gw = gemini_gateway(&upstream).await;
    let request = json!({
        "model": "gemini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather where this photo was taken?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Lyon\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_x", "content": "{\"forecast\":\"sunny\"}"},
            {"role": "user", "content": "And Paris?"}
        ],
        "tools": [weather_tool()],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0.5,
        "max_tokens": 200,
        "stop": "END",
    });
    let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, request).await;
    assert_eq!(status, 200, "{body}");
    let sent = &upstream.received()[0];
    assert_eq!(sent.uri, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(sent.headers["x-goog-api-key"], "gemini-upstream-secret");
    assert!(sent.headers.get("authorization").is_none());
    assert_eq!(
        sent.body,
        json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather where this photo was taken?"},
                    {"inline_data": {"mime_type": "image/jpeg", "data": "/9j/4AAQ"}}
                ]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Lyon"}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"forecast": "sunny"}}},
                    {"text": "And Paris?"}
                ]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"temperature": 0.5, "maxOutputTokens": 200, "stopSequences": ["END"]},
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
        })
    );
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], mock_gemini::TEXT);
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"]["prompt_tokens"], mock_gemini::PROMPT_TOKENS);
    assert_eq!(body["usage"]["completion_tokens"], mock_gemini::CANDIDATE_TOKENS + mock_gemini::THOUGHT_TOKENS);

    // Streamed: text in pieces, the call, the finish reason, then usage.
    let (status, _, events) = gw
        .http()
        .stream(
            MASTER_KEY,
            json!({"model": "gemini", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [weather_tool()]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(upstream.received()[1].uri, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
    let chunks: Vec<Value> =
        events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, mock_gemini::TEXT);
    let call = chunks.iter().find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).unwrap();
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    let finish: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["tool_calls"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], mock_gemini::CANDIDATE_TOKENS + mock_gemini::THOUGHT_TOKENS);
    assert_eq!(events.last().unwrap(), "[DONE]");

    // Google's errors: 429 RESOURCE_EXHAUSTED → 429; 400 INVALID_ARGUMENT → 400 with its message.
    upstream.fail_next(Failure {
        status: 429,
        body: json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}),
        headers: vec![],
    });
    let call = json!({"model": "gemini", "messages": [{"role": "user", "content": "Hi"}]});
    let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, call.clone()).await;
    assert_eq!(status, 429, "{body}");
    upstream.fail_next(Failure {
        status: 400,
        body: json!({"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}),
        headers: vec![],
    });
    let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, call).await;
    assert_eq!(status, 400, "{body}");
    assert!(openai_error(&body)["message"].as_str().unwrap().contains("Invalid JSON payload"), "{body}");
}

#[tokio::test]
async fn vertex_ai_gets_a_token_by_the_jwt_bearer_grant_and_reuses_it() {
    use ferryman_tests::mock_gemini::{self, MockGemini};
    let upstream = MockGemini::start().await;
    let root = upstream.base_url.trim_end_matches("/v1beta").to_owned();
    let dir = ferryman_tests::TempDir::new();
    let key_path = dir.path().join("key.pem");
    let made = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&key_path)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let pem = std::fs::read_to_string(&key_path).unwrap();
    upstream.trust_key(&pem);
    let credentials = dir.path().join("service-account.json");
    std::fs::write(
        &credentials,
        json!({"type": "service_account", "project_id": "acme-prod", "client_email": "ferryman@acme-prod.iam.gserviceaccount.com",
            "private_key_id": "k1", "private_key": pem, "token_uri": format!("{root}/token")})
        .to_string(),
    )
    .unwrap();
    let config = format!(
        r#"model_list:
  - model_name: vertex-gemini
    litellm_params:
      model: vertex_ai/gemini-2.5-pro
      vertex_project: acme-prod
      vertex_location: europe-west4
      vertex_credentials: {}
      api_base: {root}/v1
  - model_name: vertex-embed
    litellm_params:
      model: vertex_ai/text-embedding-005
      vertex_project: acme-prod
      vertex_location: europe-west4
      vertex_credentials: {}
      api_base: {root}/v1
      input_cost_per_token: 0.000001
general_settings:
  master_key: {MASTER_KEY}
  database_url: "{{database_url}}"
"#,
        credentials.display(),
        credentials.display()
    );
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config, env: vec![] }).await;
    let call = json!({"model": "vertex-gemini", "messages": [{"role": "user", "content": "Hi"}]});
    for _ in 0..2 {
        let (status, _, body) = gw.http().post("/v1/chat/completions", MASTER_KEY, call.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], mock_gemini::TEXT);
    }
    let (status, _, events) = gw
        .http()
        .stream(
            MASTER_KEY,
            json!({"model": "vertex-gemini", "stream": true,
        "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(events.iter().any(|e| e.contains("Hola")), "{events:?}");
    let received: Vec<_> = upstream.received().into_iter().take(3).collect();
    assert_eq!(
        received[0].uri,
        "/v1/projects/acme-prod/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent"
    );
    assert!(received[2].uri.ends_with("gemini-2.5-pro:streamGenerateContent?alt=sse"), "{}", received[2].uri);
    for r in &received {
        assert_eq!(r.headers["authorization"], "Bearer ya29.mock-access-token");
    }
    // Embeddings by predict, with the token counts Vertex reports (3 per text here).
    let (status, h, v) = gw
        .http()
        .post("/v1/embeddings", MASTER_KEY, json!({"model": "vertex-embed", "input": ["a", "b"], "dimensions": 2}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    assert_eq!(h["x-ferryman-response-cost"], "0.000006");
    let sent = upstream.received().pop().unwrap();
    assert!(sent.uri.ends_with("/models/text-embedding-005:predict"), "{}", sent.uri);
    assert_eq!(
        sent.body,
        json!({"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 2}})
    );
    // One signed assertion for every call: the token is cached until shortly before it expires.
    let assertions = upstream.assertions();
    assert_eq!(assertions.len(), 1, "{assertions:?}");
    assert_eq!(assertions[0]["iss"], "ferryman@acme-prod.iam.gserviceaccount.com");
    assert_eq!(assertions[0]["scope"], "https://www.googleapis.com/auth/cloud-platform");
    assert_eq!(assertions[0]["aud"], format!("{root}/token"));
    assert_eq!(assertions[0]["exp"].as_u64().unwrap() - assertions[0]["iat"].as_u64().unwrap(), 3600);
    assert!(!gw.logs().contains("PRIVATE KEY"), "the key never reaches a log");
}

#[tokio::test]
async fn embeddings_are_governed_priced_and_translated_for_each_provider() {
    use ferryman_tests::mock_gemini::MockGemini;
    let (openai, gemini) = (MockOpenAi::start().await, MockGemini::start().await);
    let config = format!(
        r#"model_list:
  - model_name: embed-openai
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: {}
      api_key: sk-up
      input_cost_per_token: 0.00000002
  - model_name: embed-azure
    litellm_params:
      model: azure/prod-embed
      api_base: {}
      api_key: azure-key
  - model_name: embed-gemini
    litellm_params:
      model: gemini/text-embedding-004
      api_base: {}
      api_key: gem-key
  - model_name: embed-mock
    litellm_params:
      model: mock/embed
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_key: x
general_settings:
  master_key: {MASTER_KEY}
  database_url: "{{database_url}}"
"#,
        openai.base_url,
        openai.base_url.trim_end_matches("/v1"),
        gemini.base_url
    );
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config, env: vec![] }).await;
    let key = gw.create_key(json!({"max_budget": 1})).await;
    let secret = key["key"].as_str().unwrap();
    let post = |body: Value| {
        let http = gw.http();
        let secret = secret.to_owned();
        async move { http.post("/v1/embeddings", &secret, body).await }
    };
    let (s, h, v) =
        post(json!({"model": "embed-openai", "input": ["a", "b"], "dimensions": 256, "user": "cust-e"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][1]["embedding"], json!([0.1, 0.2, 1.0]));
    let sent = &openai.received()[0];
    assert_eq!(sent.uri, "/v1/embeddings");
    assert_eq!(
        sent.body,
        json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 256, "user": "cust-e"})
    );
    // 10 tokens × 2e-8 USD = 200 nano-USD, on the key's spend.
    assert_eq!(h["x-ferryman-response-cost"], "0.0000002");
    let logs = gw.spend_logs_until(&format!("api_key={}", key["token"].as_str().unwrap()), 1).await;
    assert_eq!((logs[0]["call_type"].as_str(), logs[0]["spend_nanos"].as_i64()), (Some("embedding"), Some(200)));
    assert_eq!(logs[0]["end_user"], "cust-e");

    let (s, _, v) = post(json!({"model": "embed-azure", "input": "hi"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(openai.received()[1].uri, "/openai/deployments/prod-embed/embeddings?api-version=2024-10-21");
    assert_eq!(openai.received()[1].headers["api-key"], "azure-key");

    let (s, _, v) = post(json!({"model": "embed-gemini", "input": ["x", "y"], "dimensions": 64})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][1]["embedding"], json!([0.5, -0.5, 1.0]));
    let sent = &gemini.received()[0];
    assert_eq!(sent.uri, "/v1beta/models/text-embedding-004:batchEmbedContents");
    assert_eq!(
        sent.body["requests"][0],
        json!({"model": "models/text-embedding-004",
        "content": {"parts": [{"text": "x"}]}, "outputDimensionality": 64})
    );

    let (s, _, v) = post(json!({"model": "embed-mock", "input": "deterministic"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);

    // What cannot work says so: token ids to Gemini, embeddings from Anthropic, a bad input.
    let (s, _, v) = post(json!({"model": "embed-gemini", "input": [1, 2, 3]})).await;
    assert_eq!(s, 400, "{v}");
    assert!(openai_error(&v)["message"].as_str().unwrap().contains("text only"), "{v}");
    let (s, _, v) = post(json!({"model": "claude", "input": "x"})).await;
    assert_eq!(s, 400, "{v}");
    let (s, _, v) = post(json!({"model": "embed-openai", "input": {"no": "thanks"}})).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(openai_error(&v)["param"], "input");
}

#[tokio::test]
async fn legacy_completions_reach_openai_at_its_completions_endpoint() {
    let (anthropic, openai) = (MockAnthropic::start().await, MockOpenAi::start().await);
    let mut config = format!(
        "model_list:\n  - model_name: instruct\n    litellm_params:\n      model: openai/gpt-3.5-turbo-instruct\n      api_base: {}\n      api_key: sk-up\n",
        openai.base_url
    );
    config.push_str(&format!(
        "  - model_name: claude\n    litellm_params:\n      model: anthropic/claude-sonnet-4-5\n      api_base: {}\n      api_key: x\n      input_cost_per_token: 0.000003\n      output_cost_per_token: 0.000015\n",
        anthropic.base_url
    ));
    config.push_str(&format!("general_settings:\n  master_key: {MASTER_KEY}\n  database_url: \"{{database_url}}\"\n"));
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config, env: vec![] }).await;
    let (s, h, v) = gw
        .http()
        .post(
            "/v1/completions",
            MASTER_KEY,
            json!({"model": "instruct", "prompt": "Once", "max_tokens": 5, "temperature": 0}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Once upon a time");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], ferryman_tests::mock_openai::COMPLETION_TOKENS);
    let sent = &openai.received()[0];
    assert_eq!(sent.uri, "/v1/completions");
    assert_eq!(
        sent.body,
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once", "max_tokens": 5, "temperature": 0.0})
    );
    assert!(h.get("x-ferryman-response-cost").is_some());

    let resp = gw
        .http()
        .client
        .post(format!("{}/v1/completions", gw.url))
        .bearer_auth(MASTER_KEY)
        .json(
            &json!({"model": "instruct", "prompt": "Once", "stream": true, "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(streamed, "Once upon a time");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], ferryman_tests::mock_openai::PROMPT_TOKENS);
    assert_eq!(openai.received()[1].body["stream_options"]["include_usage"], true);

    // Another provider gets the prompt as its one user message.
    let (s, _, v) = gw.http().post("/v1/completions", MASTER_KEY, json!({"model": "claude", "prompt": "Say hi"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], mock_anthropic::TEXT);
    assert_eq!(
        anthropic.received()[0].body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}])
    );
    assert_eq!(anthropic.received()[0].body["max_tokens"], 16, "the legacy default");
}
