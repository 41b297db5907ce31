//! The same skeleton over gRPC (and gRPC-web), on SQLite and PostgreSQL: KeyService,
//! InferenceService unary and streaming, SpendService, grpc.health.v1.

use std::time::{Duration, Instant};

use ferryman_proto::v1 as pb;
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, standard_config};
use prost::Message;

fn authed<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

fn text(role: pb::Role, s: &str) -> pb::ChatMessage {
    pb::ChatMessage {
        role: role.into(),
        content: Some(pb::chat_message::Content::Text(s.into())),
        ..Default::default()
    }
}

async fn grpc_skeleton(backend: Backend) {
    let gw = Gateway::start(Options { backend, config: standard_config(None), env: vec![] }).await;
    let channel = gw.channel().await;
    let mut keys = pb::key_service_client::KeyServiceClient::new(channel.clone());
    let mut inference = pb::inference_service_client::InferenceServiceClient::new(channel.clone());
    let mut spend = pb::spend_service_client::SpendServiceClient::new(channel.clone());

    let created = keys
        .create_key(authed(
            MASTER_KEY,
            pb::CreateKeyRequest {
                key: Some(pb::Key {
                    key_alias: Some("grpc-app".into()),
                    models: vec!["demo".into()],
                    max_budget_nanos: Some(5_000_000_000),
                    ..Default::default()
                }),
                duration: Some("1h".into()),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let key = created.key.unwrap();
    let secret = created.secret;
    assert!(secret.starts_with("sk-"));
    assert_eq!(key.key_name, format!("sk-...{}", &secret[secret.len() - 4..]));
    assert_eq!(key.max_budget_nanos, Some(5_000_000_000));
    assert!(key.expire_time.is_some());

    // Unary, with typed messages, tools and sampling.
    let params = pb::ChatCompletionParams {
        model: "demo".into(),
        messages: vec![text(pb::Role::System, "be kind"), text(pb::Role::User, "hello over grpc")],
        sampling: Some(pb::SamplingParams { temperature: Some(0.5), max_tokens: Some(100), ..Default::default() }),
        user: Some("cust-grpc".into()),
        ..Default::default()
    };
    let resp = inference
        .create_chat_completion(authed(&secret, pb::CreateChatCompletionRequest { params: Some(params.clone()) }))
        .await
        .unwrap();
    let md = resp.metadata().clone();
    let resp = resp.into_inner();
    let call = resp.call.clone().unwrap();
    let usage = resp.usage.unwrap();
    let content = match resp.choices[0].message.as_ref().unwrap().content.as_ref().unwrap() {
        pb::chat_message::Content::Text(t) => t.clone(),
        other => panic!("{other:?}"),
    };
    assert!(content.contains("hello over grpc"), "{content}");
    assert_eq!(call.deployment, "demo-mock-1");
    let expected =
        ferryman_tests::expected_cost_nanos(usage.prompt_tokens, usage.completion_tokens, 150_000_000, 600_000_000);
    assert_eq!(call.cost_nanos, expected);
    assert_eq!(md.get("x-ferryman-call-id").unwrap().to_str().unwrap(), call.call_id);
    assert_eq!(md.get("x-ferryman-response-cost").unwrap().to_str().unwrap(), call.cost_usd);

    // Tools: the mock calls the function the request forces.
    let tool_params = pb::ChatCompletionParams {
        tools: vec![pb::Tool {
            function: Some(pb::FunctionDefinition { name: "get_weather".into(), ..Default::default() }),
        }],
        tool_choice: Some(pb::ToolChoice { choice: Some(pb::tool_choice::Choice::FunctionName("get_weather".into())) }),
        ..params.clone()
    };
    let resp = inference
        .create_chat_completion(authed(&secret, pb::CreateChatCompletionRequest { params: Some(tool_params) }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.choices[0].finish_reason, "tool_calls");
    assert_eq!(resp.choices[0].message.as_ref().unwrap().tool_calls[0].function.as_ref().unwrap().name, "get_weather");

    // Streaming: deltas, then a last message with usage and the cost.
    let mut stream = inference
        .stream_chat_completion(authed(&secret, pb::StreamChatCompletionRequest { params: Some(params.clone()) }))
        .await
        .unwrap()
        .into_inner();
    let mut streamed = String::new();
    let mut last = None;
    while let Some(msg) = stream.message().await.unwrap() {
        for c in &msg.choices {
            streamed.push_str(c.delta.as_ref().and_then(|d| d.content.as_deref()).unwrap_or(""));
        }
        last = Some(msg);
    }
    assert_eq!(streamed, content);
    let last = last.unwrap();
    assert!(last.choices.is_empty());
    let stream_call = last.call.unwrap();
    assert_eq!(last.usage.unwrap(), usage);
    assert_eq!(stream_call.cost_nanos, expected);

    // Spend records for all three calls, filterable by key and end user.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let page = spend
            .list_spend_logs(authed(
                MASTER_KEY,
                pb::ListSpendLogsRequest { key_id: Some(key.key_id.clone()), ..Default::default() },
            ))
            .await
            .unwrap()
            .into_inner();
        if page.spend_logs.len() >= 3 || Instant::now() > deadline {
            break page.spend_logs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(logs.len(), 3);
    let first = logs.iter().find(|l| l.request_id == call.call_id).unwrap();
    assert_eq!(first.spend_nanos, expected);
    assert_eq!(first.end_user.as_deref(), Some("cust-grpc"));
    assert_eq!(first.deployment, "demo-mock-1");
    assert!(logs.iter().any(|l| l.request_id == stream_call.call_id && l.call_type == "stream_chat_completion"));
    // Paging: one at a time.
    let page = spend
        .list_spend_logs(authed(MASTER_KEY, pb::ListSpendLogsRequest { page_size: 1, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.spend_logs.len(), 1);
    let page2 = spend
        .list_spend_logs(authed(
            MASTER_KEY,
            pb::ListSpendLogsRequest { page_size: 1, page_token: page.next_page_token, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.spend_logs.len(), 1);
    assert_ne!(page2.spend_logs[0].request_id, page.spend_logs[0].request_id);

    // Keys: get, list, delete; the deleted key stops at once.
    let got = keys.get_key(authed(MASTER_KEY, pb::GetKeyRequest { key_id: key.key_id.clone() })).await.unwrap();
    assert_eq!(got.into_inner().key.unwrap().key_alias.as_deref(), Some("grpc-app"));
    let list = keys.list_keys(authed(MASTER_KEY, pb::ListKeysRequest::default())).await.unwrap().into_inner();
    assert_eq!(list.keys.len(), 1);
    // A key that belongs to no user sees only itself, and may not delete keys.
    let own = keys.list_keys(authed(&secret, pb::ListKeysRequest::default())).await.unwrap().into_inner();
    assert_eq!(own.keys.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(), [key.key_id.as_str()]);
    let err = keys.delete_key(authed(&secret, pb::DeleteKeyRequest { key_id: key.key_id.clone() })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    keys.delete_key(authed(MASTER_KEY, pb::DeleteKeyRequest { key_id: key.key_id.clone() })).await.unwrap();
    let err = inference
        .create_chat_completion(authed(&secret, pb::CreateChatCompletionRequest { params: Some(params) }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // grpc.health.v1 says serving.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest { service: "ferryman.v1.InferenceService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
}

#[tokio::test]
async fn grpc_on_sqlite() {
    grpc_skeleton(Backend::Sqlite).await;
}

#[tokio::test]
async fn grpc_on_postgres() {
    grpc_skeleton(Backend::Postgres).await;
}

/// gRPC-web on the same port: a framed protobuf body over HTTP/1.1, trailers in the body.
#[tokio::test]
async fn grpc_web_answers_on_the_same_port() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: standard_config(None), env: vec![] }).await;
    let request = pb::CreateChatCompletionRequest {
        params: Some(pb::ChatCompletionParams {
            model: "demo".into(),
            messages: vec![text(pb::Role::User, "via grpc-web")],
            ..Default::default()
        }),
    };
    let payload = request.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&payload);
    let resp = reqwest::Client::new()
        .post(format!("{}/ferryman.v1.InferenceService/CreateChatCompletion", gw.url))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {MASTER_KEY}"))
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc-web+proto");
    let body = resp.bytes().await.unwrap();
    assert_eq!(body[0], 0, "first frame is data");
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let msg = pb::CreateChatCompletionResponse::decode(&body[5..5 + len]).unwrap();
    assert_eq!(msg.call.unwrap().deployment, "demo-mock-1");
    let trailers = &body[5 + len..];
    assert_eq!(trailers[0], 0x80, "then the trailer frame");
    assert!(String::from_utf8_lossy(&trailers[5..]).contains("grpc-status:0"));
}

/// Embeddings and the model list over gRPC, with the same governance as HTTP.
#[tokio::test]
async fn grpc_embeddings_and_models() {
    let mut config = standard_config(None);
    config = config.replace(
        "general_settings:",
        "  - model_name: embed\n    litellm_params:\n      model: mock/embed\n      input_cost_per_token: 0.0000001\ngeneral_settings:",
    );
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config, env: vec![] }).await;
    let channel = gw.channel().await;
    let mut inference = pb::inference_service_client::InferenceServiceClient::new(channel.clone());
    let secret = gw.create_key(serde_json::json!({"models": ["embed"]})).await["key"].as_str().unwrap().to_owned();

    let resp = inference
        .create_embeddings(authed(
            &secret,
            pb::CreateEmbeddingsRequest {
                model: "embed".into(),
                input: vec!["first text".into(), "second".into()],
                user: Some("cust-grpc".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.data.len(), 2);
    assert_eq!(resp.data[1].index, 1);
    assert_eq!(resp.data[0].vector.len(), 8);
    let usage = resp.usage.unwrap();
    assert_eq!(usage.completion_tokens, 0);
    assert_eq!(resp.call.unwrap().cost_nanos, (usage.prompt_tokens * 100) as i64);

    // The key may use `embed` only: that is all it lists, and `demo` is NOT_FOUND for it.
    let models = inference.list_models(authed(&secret, pb::ListModelsRequest {})).await.unwrap().into_inner().models;
    assert_eq!(models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["embed"]);
    let one = inference.get_model(authed(&secret, pb::GetModelRequest { id: "embed".into() })).await.unwrap();
    assert_eq!(one.into_inner().model.unwrap().id, "embed");
    let err = inference.get_model(authed(&secret, pb::GetModelRequest { id: "demo".into() })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = inference
        .create_embeddings(authed(&secret, pb::CreateEmbeddingsRequest { model: "embed".into(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}
