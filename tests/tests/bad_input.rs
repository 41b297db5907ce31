//! Bad input, each answered with the OpenAI error shape (HTTP) or the right status and
//! details (gRPC), naming the problem; and bad keys of every kind.

use ferryman_proto::v1 as pb;
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, json, openai_error, standard_config};
use tonic_types::StatusExt;

async fn gateway() -> Gateway {
    Gateway::start(Options { backend: Backend::Sqlite, config: standard_config(None), env: vec![] }).await
}

fn msg() -> Value {
    json!([{"role": "user", "content": "hello"}])
}

/// Asserts an OpenAI-shaped error: status, type, param, and words in the message.
fn assert_error(reply: &(u16, reqwest::header::HeaderMap, Value), status: u16, kind: &str, param: Value, words: &str) {
    let (got, _, body) = reply;
    assert_eq!(*got, status, "{:.2000}", body.to_string());
    let e = openai_error(body);
    assert_eq!(e["type"], kind, "{body}");
    assert_eq!(e["param"], param, "{body}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(words), "message {message:?} lacks {words:?}");
}

#[tokio::test]
async fn malformed_requests_get_openai_errors_naming_the_problem() {
    let gw = gateway().await;
    let http = gw.http();
    let path = "/v1/chat/completions";

    let r = http.post_raw(path, Some(MASTER_KEY), "{\"model\": \"demo\", \"messages\": [").await;
    assert_error(&r, 400, "invalid_request_error", Value::Null, "not valid JSON");
    let r = http.post_raw(path, Some(MASTER_KEY), "[1, 2]").await;
    assert_error(&r, 400, "invalid_request_error", Value::Null, "must be a JSON object");
    let r = http.post_raw(path, Some(MASTER_KEY), "").await;
    assert_error(&r, 400, "invalid_request_error", Value::Null, "empty");

    let r = http.post(path, MASTER_KEY, json!({"messages": msg()})).await;
    assert_error(&r, 400, "invalid_request_error", json!("model"), "missing field `model`");
    let r = http.post(path, MASTER_KEY, json!({"model": "no-such-model", "messages": msg()})).await;
    assert_error(&r, 404, "not_found_error", json!("model"), "model \"no-such-model\" does not exist");
    assert_eq!(r.2["error"]["code"], "model_not_found");
    let r = http.post(path, MASTER_KEY, json!({"model": "demo", "messages": []})).await;
    assert_error(&r, 400, "invalid_request_error", json!("messages"), "at least one message");
    let r = http.post(path, MASTER_KEY, json!({"model": "demo"})).await;
    assert_error(&r, 400, "invalid_request_error", json!("messages"), "missing field `messages`");

    // Wrong field types, named with their path.
    let r = http.post(path, MASTER_KEY, json!({"model": "demo", "messages": msg(), "temperature": "hot"})).await;
    assert_error(&r, 400, "invalid_request_error", json!("temperature"), "invalid type");
    let r = http.post(path, MASTER_KEY, json!({"model": 7, "messages": msg()})).await;
    assert_error(&r, 400, "invalid_request_error", json!("model"), "invalid type");
    let r = http.post(path, MASTER_KEY, json!({"model": "demo", "messages": "hi"})).await;
    assert_error(&r, 400, "invalid_request_error", json!("messages"), "invalid type");
    let r =
        http.post(path, MASTER_KEY, json!({"model": "demo", "messages": [{"role": "wizard", "content": "x"}]})).await;
    assert_error(&r, 400, "invalid_request_error", json!("messages[0].role"), "unknown variant");
    let r = http.post(path, MASTER_KEY, json!({"model": "demo", "messages": [{"role": "user", "content": 5}]})).await;
    assert_error(&r, 400, "invalid_request_error", json!("messages[0].content"), "a string or a list");
    let r = http.post(path, MASTER_KEY, json!({"model": "demo", "messages": msg(), "max_tokens": -1})).await;
    assert_error(&r, 400, "invalid_request_error", json!("max_tokens"), "invalid value");
    let r = http.post(path, MASTER_KEY, json!({"model": "demo", "messages": msg(), "temperature": 3})).await;
    assert_error(&r, 400, "invalid_request_error", json!("temperature"), "outside 0 to 2");

    // Over the size limit (the test config sets 0.05 MB).
    let big = "x".repeat(60_000);
    let r = http.post(path, MASTER_KEY, json!({"model": "demo", "messages": [{"role": "user", "content": big}]})).await;
    assert_error(&r, 400, "invalid_request_error", Value::Null, "larger than the gateway's limit of 52428 bytes");
    assert_eq!(r.2["error"]["code"], "request_too_large");

    // Unknown routes and management fields.
    let r = http.post("/v1/nowhere", MASTER_KEY, json!({})).await;
    assert_error(&r, 404, "not_found_error", Value::Null, "no route POST /v1/nowhere");
    let r = http.post("/key/generate", MASTER_KEY, json!({"guardrails": ["pii"]})).await;
    assert_error(&r, 400, "invalid_request_error", json!("guardrails"), "guardrails: unknown field");
    let r = http.post("/key/generate", MASTER_KEY, json!({"max_budget": -1})).await;
    assert_error(&r, 400, "invalid_request_error", json!("max_budget"), "non-negative");
    let r = http.post("/key/generate", MASTER_KEY, json!({"duration": "forever"})).await;
    assert_error(&r, 400, "invalid_request_error", json!("duration"), "invalid duration");
    let r = http.post("/key/generate", MASTER_KEY, json!({"key": "short"})).await;
    assert_error(&r, 400, "invalid_request_error", json!("key"), "must start with");
    let r = http.get("/spend/logs?start_date=yesterday", MASTER_KEY).await;
    assert_error(&r, 400, "invalid_request_error", json!("start_date"), "YYYY-MM-DD");
    let r = http.get("/spend/logs?page_token=zz", MASTER_KEY).await;
    assert_error(&r, 400, "invalid_request_error", json!("page_token"), "not a token");

    // Control characters in ids that reach the database are refused up front (PostgreSQL
    // would refuse a NUL in the spend record later).
    let r = http.post(path, MASTER_KEY, json!({"model": "demo", "messages": msg(), "user": "evil\u{0}id"})).await;
    assert_error(&r, 400, "invalid_request_error", json!("user"), "control characters");
    let r = http.post(path, MASTER_KEY, json!({"model": "demo", "messages": msg(), "tags": ["a\nb"]})).await;
    assert_error(&r, 400, "invalid_request_error", json!("tags[0]"), "control characters");
    let r = http.post("/usage/record", MASTER_KEY, json!({"request_id": "x\u{1}", "model": "demo"})).await;
    assert_error(&r, 400, "invalid_request_error", json!("request_id"), "control characters");

    // Nothing half-written: none of the refused key requests left a key.
    let (_, _, list) = http.get("/key/list?return_full_object=true", MASTER_KEY).await;
    assert_eq!(list["keys"], json!([]));
}

#[tokio::test]
async fn bad_keys_get_401_without_echoing_the_key() {
    let gw = gateway().await;
    let http = gw.http();
    let call = json!({"model": "demo", "messages": msg()});
    let path = "/v1/chat/completions";

    let r = http.post_raw(path, None, call.to_string()).await;
    assert_error(&r, 401, "authentication_error", Value::Null, "missing API key");
    let r = http.post(path, "not-a-key with spaces", call.clone()).await;
    assert_error(&r, 401, "authentication_error", Value::Null, "malformed API key");
    let unknown = "sk-unknown-0123456789abcdef";
    let r = http.post(path, unknown, call.clone()).await;
    assert_error(&r, 401, "authentication_error", Value::Null, "invalid API key");
    assert!(!r.2.to_string().contains(unknown));

    let expired = gw.create_key(json!({"expires": "2020-01-01T00:00:00Z"})).await;
    let r = http.post(path, expired["key"].as_str().unwrap(), call.clone()).await;
    assert_error(&r, 401, "authentication_error", Value::Null, "expired at 2020-01-01T00:00:00Z");
    assert_eq!(r.2["error"]["code"], "key_expired");

    let blocked = gw.create_key(json!({"blocked": true})).await;
    let r = http.post(path, blocked["key"].as_str().unwrap(), call.clone()).await;
    assert_error(&r, 401, "authentication_error", Value::Null, "is blocked");

    // The other headers SDKs send keys in.
    let key = gw.create_key(json!({})).await;
    let secret = key["key"].as_str().unwrap();
    for header in ["x-api-key", "api-key", "x-goog-api-key"] {
        let resp =
            http.client.post(format!("{}{path}", http.base)).header(header, secret).json(&call).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{header}");
    }

    // A virtual key may call models, not manage keys.
    let r = http.post("/key/generate", secret, json!({})).await;
    assert_error(&r, 403, "permission_error", Value::Null, "keys without a user may not change keys");
    // A key limited to some models may not call others.
    let limited = gw.create_key(json!({"models": ["gpt-4o"]})).await;
    let r = http.post(path, limited["key"].as_str().unwrap(), call.clone()).await;
    assert_error(&r, 403, "key_model_access_denied", json!("model"), "may not use model \"demo\"");
    assert_eq!(r.2["error"]["code"], "key_model_access_denied");
}

fn authed<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

#[tokio::test]
async fn grpc_bad_input_gets_the_right_status_and_details() {
    let gw = gateway().await;
    let mut client = pb::inference_service_client::InferenceServiceClient::new(gw.channel().await);
    let params = |model: &str, messages: Vec<pb::ChatMessage>| pb::CreateChatCompletionRequest {
        params: Some(pb::ChatCompletionParams { model: model.into(), messages, ..Default::default() }),
    };
    let hello = || pb::ChatMessage {
        role: pb::Role::User.into(),
        content: Some(pb::chat_message::Content::Text("hello".into())),
        ..Default::default()
    };

    let err = client.create_chat_completion(tonic::Request::new(params("demo", vec![hello()]))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("missing API key"));
    let err =
        client.create_chat_completion(authed("sk-nope-0123456789", params("demo", vec![hello()]))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let err = client.create_chat_completion(authed(MASTER_KEY, params("nope", vec![hello()]))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let info = err.get_error_details().error_info().cloned().unwrap();
    assert_eq!((info.reason.as_str(), info.domain.as_str()), ("model_not_found", "ferryman"));

    let err = client.create_chat_completion(authed(MASTER_KEY, params("demo", vec![]))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let details = err.get_error_details();
    let violation = &details.bad_request().unwrap().field_violations[0];
    assert_eq!(violation.field, "params.messages");

    let err = client
        .create_chat_completion(authed(MASTER_KEY, params("demo", vec![pb::ChatMessage::default()])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("params.messages[0].role"), "{}", err.message());

    let err = client
        .create_chat_completion(authed(MASTER_KEY, pb::CreateChatCompletionRequest { params: None }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let err = client
        .create_chat_completion(authed(
            MASTER_KEY,
            pb::CreateChatCompletionRequest {
                params: Some(pb::ChatCompletionParams {
                    model: "demo".into(),
                    messages: vec![hello()],
                    extra: Some(prost_types::Struct {
                        fields: [(
                            "mock_error".to_owned(),
                            prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(429.0)) },
                        )]
                        .into(),
                    }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let details = err.get_error_details();
    assert!(details.retry_info().is_some());

    let mut keys = pb::key_service_client::KeyServiceClient::new(gw.channel().await);
    let err = keys
        .create_key(authed(
            MASTER_KEY,
            pb::CreateKeyRequest { key: Some(pb::Key::default()), duration: Some("10 days".into()) },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.get_error_details().bad_request().unwrap().field_violations[0].field, "duration");
    let err = keys.get_key(authed(MASTER_KEY, pb::GetKeyRequest { key_id: "nope".into() })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn query_strings_path_parameters_and_methods_get_openai_errors_naming_them() {
    let gw = gateway().await;
    let http = gw.http();

    // A bad value, an unknown parameter, a missing or repeated one: each named in `param`.
    let r = http.get("/key/list?size=abc", MASTER_KEY).await;
    assert_error(&r, 400, "invalid_request_error", json!("size"), "size: invalid digit");
    let r = http.get("/key/list?page_size=abc", MASTER_KEY).await;
    assert_error(&r, 400, "invalid_request_error", json!("page_size"), "unknown field `page_size`");
    let r = http.get("/key/list?return_full_object=maybe", MASTER_KEY).await;
    assert_error(&r, 400, "invalid_request_error", json!("return_full_object"), "not `true` or `false`");
    let r = http.get("/team/info", MASTER_KEY).await;
    assert_error(&r, 400, "invalid_request_error", json!("team_id"), "missing field `team_id`");
    let r = http.get("/spend/logs?page_size=1&page_size=2", MASTER_KEY).await;
    assert_error(&r, 400, "invalid_request_error", json!("page_size"), "duplicate field `page_size`");
    let r = http.get("/spend/logs?start_date=notadate", MASTER_KEY).await;
    assert_error(&r, 400, "invalid_request_error", json!("start_date"), "YYYY-MM-DD");
    let r = http.get("/audit?page_size=-1", MASTER_KEY).await;
    assert_error(&r, 400, "invalid_request_error", json!("page_size"), "page_size:");
    let r = http.get("/user/list?page_size=99999999999", MASTER_KEY).await;
    assert_error(&r, 400, "invalid_request_error", json!("page_size"), "page_size:");

    // Path parameters that are not UTF-8 once percent-decoded.
    let r = http.get("/v1/models/%ff", MASTER_KEY).await;
    assert_error(&r, 400, "invalid_request_error", json!("id"), "not valid UTF-8");
    let r = http.post_raw("/key/%ff/regenerate", Some(MASTER_KEY), "").await;
    assert_error(&r, 400, "invalid_request_error", json!("key"), "not valid UTF-8");
    // The optional body of the path form is read like any other.
    let r = http.post_raw("/key/sk-whatever/regenerate", Some(MASTER_KEY), "x".repeat(60_000)).await;
    assert_error(&r, 400, "invalid_request_error", Value::Null, "larger than the gateway's limit");

    // Whatever the content type claims, a body is read as JSON and refused as not JSON.
    let resp = http
        .client
        .post(format!("{}/v1/chat/completions", http.base))
        .bearer_auth(MASTER_KEY)
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ndemo\r\n--x--\r\n")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_error(&(status, Default::default(), body), 400, "invalid_request_error", Value::Null, "not valid JSON");

    // A method a route does not serve: 405 with Allow, in the same shape.
    let (status, headers, body) = http.get("/v1/chat/completions", MASTER_KEY).await;
    assert_eq!(headers["allow"], "POST");
    assert_error(&(status, headers, body), 405, "invalid_request_error", Value::Null, "GET /v1/chat/completions");
}

/// A gRPC message frame: the compressed flag, the declared length, the bytes.
fn frame(compressed: u8, declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![compressed];
    out.extend_from_slice(&declared.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn undecodable_grpc_requests_are_invalid_argument_not_internal() {
    let gw = gateway().await;
    let list_keys = "/ferryman.v1.KeyService/ListKeys";
    let garbage = [0xff_u8; 4];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage bytes in a valid frame", frame(0, 4, &garbage), "not a valid protobuf encoding"),
        ("a length prefix past the body", frame(0, 100, b"\x0a"), "length prefix"),
        ("a compressed flag without grpc-encoding", frame(1, 0, b""), "no grpc-encoding"),
        ("a compressed flag of 2", frame(2, 0, b""), "neither 0 nor 1"),
        ("no message at all", Vec::new(), "no message"),
    ];
    for content_type in ["application/grpc", "application/grpc-web+proto"] {
        for (what, body, words) in &cases {
            let (status, headers) = gw.grpc_raw(list_keys, MASTER_KEY, content_type, body.clone()).await;
            assert_eq!(status, 200, "{content_type}, {what}");
            let s = tonic::Status::from_header_map(&headers).unwrap_or_else(|| panic!("no grpc-status: {headers:?}"));
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{content_type}, {what}: {}", s.message());
            assert!(s.message().contains(words), "{content_type}, {what}: {}", s.message());
            assert!(!s.message().contains("Protobuf") && !s.message().contains("EOF"), "{}", s.message());
            let info = s.get_error_details().error_info().cloned().unwrap();
            assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INVALID_ARGUMENT", "ferryman"));
        }
    }
    // gRPC-web text that is not base64.
    let (_, headers) = gw.grpc_raw(list_keys, MASTER_KEY, "application/grpc-web-text", b"!!!!".to_vec()).await;
    let s = tonic::Status::from_header_map(&headers).unwrap();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{}", s.message());
    assert!(s.message().contains("not valid base64"), "{}", s.message());
    // A message over the size limit (the test config sets 52428 bytes): the reason says so.
    let big = vec![0_u8; 60_000];
    let (_, headers) = gw.grpc_raw(list_keys, MASTER_KEY, "application/grpc", frame(0, 60_000, &big)).await;
    let s = tonic::Status::from_header_map(&headers).unwrap();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{}", s.message());
    assert!(s.message().contains("limit of 52428 bytes"), "{}", s.message());
    assert_eq!(s.get_error_details().error_info().unwrap().reason, "request_too_large");
    // Every service, not one: the same for inference and health.
    for method in ["/ferryman.v1.InferenceService/CreateChatCompletion", "/grpc.health.v1.Health/Check"] {
        let (_, headers) = gw.grpc_raw(method, MASTER_KEY, "application/grpc", frame(0, 4, &garbage)).await;
        assert_eq!(tonic::Status::from_header_map(&headers).unwrap().code(), tonic::Code::InvalidArgument, "{method}");
    }
    // What a handler answers is left as it is, and a well-formed request still succeeds.
    let get_key = frame(0, 6, b"\x0a\x04nope");
    let (_, headers) = gw.grpc_raw("/ferryman.v1.KeyService/GetKey", MASTER_KEY, "application/grpc", get_key).await;
    let s = tonic::Status::from_header_map(&headers).unwrap();
    assert_eq!(s.code(), tonic::Code::NotFound, "{}", s.message());
    assert_eq!(s.get_error_details().error_info().unwrap().reason, "NOT_FOUND");
    let (status, headers) = gw.grpc_raw(list_keys, MASTER_KEY, "application/grpc", frame(0, 0, b"")).await;
    assert_eq!(status, 200);
    assert!(headers.get("grpc-status").is_none(), "a success's status is in its trailers: {headers:?}");
}

/// Asserts Anthropic's error shape: status, type, and words in the message.
fn assert_anthropic_error(reply: &(u16, reqwest::header::HeaderMap, Value), status: u16, kind: &str, words: &str) {
    let (got, _, body) = reply;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(words), "message {message:?} lacks {words:?}");
}

#[tokio::test]
async fn anthropic_messages_require_max_tokens_and_answer_in_anthropic_shape() {
    let gw = gateway().await;
    let http = gw.http();
    let call = |extra: Value| {
        let mut body = json!({"model": "demo", "messages": [{"role": "user", "content": "hello"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };

    let r = http.post("/v1/messages", MASTER_KEY, call(json!({}))).await;
    assert_anthropic_error(&r, 400, "invalid_request_error", "max_tokens: required");
    for (bad, words) in [
        (json!(0), "max_tokens: must be at least 1"),
        (json!(-5), "max_tokens: must be a whole number"),
        (json!(2.5), "max_tokens: must be a whole number"),
        (json!("100"), "max_tokens: must be a whole number"),
        (json!(5_000_000_000_u64), "max_tokens: 5000000000 is more than"),
        (Value::Null, "max_tokens: required"),
    ] {
        let r = http.post("/v1/messages", MASTER_KEY, call(json!({"max_tokens": bad}))).await;
        assert_anthropic_error(&r, 400, "invalid_request_error", words);
    }
    let (status, _, body) = http.post("/v1/messages", MASTER_KEY, call(json!({"max_tokens": 64}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "message");

    // Errors found after translation name the field too, and a bad key is Anthropic-shaped.
    let r = http.post("/v1/messages", MASTER_KEY, call(json!({"max_tokens": 64, "temperature": "hot"}))).await;
    assert_anthropic_error(&r, 400, "invalid_request_error", "temperature:");
    let r = http.post("/v1/messages", "sk-unknown-0123456789abcdef", call(json!({"max_tokens": 64}))).await;
    assert_anthropic_error(&r, 401, "authentication_error", "invalid API key");
    // OpenAI's caps on stop sequences are not Anthropic's: five are accepted here.
    let stops = json!({"max_tokens": 64, "stop_sequences": ["a", "b", "c", "d", "e"]});
    let (status, _, body) = http.post("/v1/messages", MASTER_KEY, call(stops)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn request_lists_over_the_providers_documented_caps_are_refused_by_name() {
    // A body limit big enough for 100,000 inputs, so the cap and not the size refuses them.
    let config = standard_config(None).replace("max_request_size_mb: 0.05", "max_request_size_mb: 2");
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config, env: vec![] }).await;
    let http = gw.http();

    let r = http.post("/v1/embeddings", MASTER_KEY, json!({"model": "demo", "input": vec!["a"; 100_000]})).await;
    assert_error(&r, 400, "invalid_request_error", json!("input"), "100000 inputs is more than the 2048");
    let r = http.post("/v1/embeddings", MASTER_KEY, json!({"model": "demo", "input": vec![vec![1]; 2049]})).await;
    assert_error(&r, 400, "invalid_request_error", json!("input"), "2049 inputs is more than the 2048");
    let (status, _, body) =
        http.post("/v1/embeddings", MASTER_KEY, json!({"model": "demo", "input": vec!["a"; 2048]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 2048);

    // OpenAI's chat caps: 4 stop sequences, 128 tools (also on the legacy completions).
    let msg = json!([{"role": "user", "content": "hello"}]);
    let tool = json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}});
    let path = "/v1/chat/completions";
    let r =
        http.post(path, MASTER_KEY, json!({"model": "demo", "messages": msg, "stop": ["a", "b", "c", "d", "e"]})).await;
    assert_error(&r, 400, "invalid_request_error", json!("stop"), "5 stop sequences is more than the 4");
    let r =
        http.post(path, MASTER_KEY, json!({"model": "demo", "messages": msg, "tools": vec![tool.clone(); 129]})).await;
    assert_error(&r, 400, "invalid_request_error", json!("tools"), "129 tools is more than the 128");
    let ok = json!({"model": "demo", "messages": msg, "stop": ["a", "b", "c", "d"], "tools": vec![tool; 128]});
    let (status, _, body) = http.post(path, MASTER_KEY, ok).await;
    assert_eq!(status, 200, "{body}");
    let r =
        http.post("/v1/completions", MASTER_KEY, json!({"model": "demo", "prompt": "hi", "stop": vec!["x"; 5]})).await;
    assert_error(&r, 400, "invalid_request_error", json!("stop"), "more than the 4");

    // gRPC names the field at its proto path.
    let mut client = pb::inference_service_client::InferenceServiceClient::new(gw.channel().await);
    let params = pb::ChatCompletionParams {
        model: "demo".into(),
        messages: vec![pb::ChatMessage {
            role: pb::Role::User.into(),
            content: Some(pb::chat_message::Content::Text("hello".into())),
            ..Default::default()
        }],
        sampling: Some(pb::SamplingParams { stop: vec!["x".into(); 5], ..Default::default() }),
        ..Default::default()
    };
    let err = client
        .create_chat_completion(authed(MASTER_KEY, pb::CreateChatCompletionRequest { params: Some(params) }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.get_error_details().bad_request().unwrap().field_violations[0].field, "params.sampling.stop");
    let err = client
        .create_embeddings(authed(
            MASTER_KEY,
            pb::CreateEmbeddingsRequest { model: "demo".into(), input: vec!["a".into(); 2049], ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.get_error_details().bad_request().unwrap().field_violations[0].field, "input");
}
