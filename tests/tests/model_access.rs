//! Model access through every level: key, team, user, organization; wildcards, exclusions,
//! access groups, team aliases, and the special values; `/v1/models` per caller.

use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, json};

const CONFIG: &str = r#"
model_list:
  - model_name: demo
    litellm_params: {model: mock/demo}
  - model_name: openai/gpt-4o
    litellm_params: {model: mock/gpt-4o}
  - model_name: openai/o1-mini
    litellm_params: {model: mock/o1-mini}
  - model_name: openai/o1-preview
    litellm_params: {model: mock/o1-preview}
  - model_name: beta-model
    litellm_params: {model: mock/beta}
    model_info: {access_groups: [beta]}
general_settings:
  master_key: sk-test-master-key-0123456789
  database_url: "{database_url}"
"#;

const MODELS: [&str; 5] = ["demo", "openai/gpt-4o", "openai/o1-mini", "openai/o1-preview", "beta-model"];

async fn admin(gw: &Gateway, path: &str, body: Value) -> Value {
    let (s, _, v) = gw.http().post(path, MASTER_KEY, body).await;
    assert_eq!(s, 200, "{path}: {v}");
    v
}

async fn key(gw: &Gateway, body: Value) -> String {
    admin(gw, "/key/generate", body).await["key"].as_str().unwrap().to_owned()
}

/// The outcome of calling `model` with `key`: "ok" or the error type.
async fn outcome(gw: &Gateway, key: &str, model: &str) -> String {
    let (s, _, v) = gw
        .http()
        .post("/v1/chat/completions", key, json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    if s == 200 {
        "ok".into()
    } else {
        assert_eq!(s, 403, "{v}");
        assert_eq!(v["error"]["param"], "model");
        v["error"]["type"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn model_access_matrix() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: CONFIG.into(), env: vec![] }).await;
    admin(&gw, "/organization/new", json!({"organization_id": "O", "organization_alias": "o", "models": ["demo"]}))
        .await;
    admin(
        &gw,
        "/team/new",
        json!({"team_id": "T", "models": ["openai/*", "!openai/o1-*", "beta"],
        "model_aliases": {"smart": "openai/gpt-4o"}}),
    )
    .await;
    admin(&gw, "/team/new", json!({"team_id": "T2", "organization_id": "O"})).await;
    admin(&gw, "/user/new", json!({"user_id": "nodefault", "models": ["no-default-models"], "auto_create_key": false}))
        .await;
    admin(&gw, "/user/new", json!({"user_id": "plain", "auto_create_key": false})).await;

    let keys = [
        ("team key", key(&gw, json!({"team_id": "T"})).await),
        ("narrow team key", key(&gw, json!({"team_id": "T", "models": ["openai/gpt-4o"]})).await),
        ("all-team-models key", key(&gw, json!({"team_id": "T", "models": ["all-team-models"]})).await),
        ("no-default-models user", key(&gw, json!({"user_id": "nodefault"})).await),
        ("no-default-models user, team key", key(&gw, json!({"user_id": "nodefault", "team_id": "T"})).await),
        ("plain user", key(&gw, json!({"user_id": "plain"})).await),
        ("all-proxy-models key", key(&gw, json!({"models": ["all-proxy-models", "!demo"]})).await),
        ("org team key", key(&gw, json!({"team_id": "T2"})).await),
    ];
    // One row per key, one column per model in MODELS order.
    let expected: [[&str; 5]; 8] = [
        ["team_model_access_denied", "ok", "team_model_access_denied", "team_model_access_denied", "ok"],
        [
            "key_model_access_denied",
            "ok",
            "key_model_access_denied",
            "key_model_access_denied",
            "key_model_access_denied",
        ],
        ["team_model_access_denied", "ok", "team_model_access_denied", "team_model_access_denied", "ok"],
        ["user_model_access_denied"; 5],
        ["team_model_access_denied", "ok", "team_model_access_denied", "team_model_access_denied", "ok"],
        ["ok"; 5],
        ["key_model_access_denied", "ok", "ok", "ok", "ok"],
        [
            "ok",
            "org_model_access_denied",
            "org_model_access_denied",
            "org_model_access_denied",
            "org_model_access_denied",
        ],
    ];
    let mut wrong = Vec::new();
    for ((who, secret), row) in keys.iter().zip(expected) {
        for (model, want) in MODELS.iter().zip(row) {
            let got = outcome(&gw, secret, model).await;
            if got != want {
                wrong.push(format!("{who} → {model}: want {want}, got {got}"));
            }
        }
        // /v1/models lists exactly what the caller may use.
        let (_, _, list) = gw.http().get("/v1/models", secret).await;
        let listed: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        let allowed: Vec<&str> = MODELS.iter().zip(row).filter(|(_, w)| *w == "ok").map(|(m, _)| *m).collect();
        if listed != allowed {
            wrong.push(format!("{who}: /v1/models lists {listed:?}, may use {allowed:?}"));
        }
        // /v1/models/{id} answers for exactly those, and 404 for the rest.
        for (model, want) in MODELS.iter().zip(row) {
            let (status, _, one) = gw.http().get(&format!("/v1/models/{model}"), secret).await;
            let expected = if want == "ok" { 200 } else { 404 };
            if status != expected || (status == 200 && one["id"] != *model) {
                wrong.push(format!("{who}: /v1/models/{model} answered {status} {one}, want {expected}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A team alias resolves before access is checked.
    assert_eq!(outcome(&gw, &keys[0].1, "smart").await, "ok");
    let (_, headers, _) = gw
        .http()
        .post(
            "/v1/chat/completions",
            &keys[0].1,
            json!({"model": "smart", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert!(headers.get("x-ferryman-model-id").is_some());
    // Unknown models are still 404, whatever the lists say.
    let (s, _, _) = gw
        .http()
        .post(
            "/v1/chat/completions",
            &keys[5].1,
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(s, 404);
}

/// An access group grants the deployments it holds: a name its wildcard matches but that the
/// router sends to a more specific deployment in another group is not granted, at any level
/// (key, team, user, organization, customer) and on fallbacks.
#[tokio::test]
async fn a_group_wildcard_does_not_reach_a_more_specific_deployment() {
    const GROUPS: &str = r#"
model_list:
  - model_name: openai/*
    litellm_params: {model: mock/*, input_cost_per_token: 0.000001, output_cost_per_token: 0.000001}
    model_info: {access_groups: [default-models]}
  - model_name: openai/o1-*
    litellm_params: {model: mock/o1-*, input_cost_per_token: 0.00001, output_cost_per_token: 0.00001}
    model_info: {access_groups: [restricted-models]}
  - model_name: cheap
    litellm_params: {model: mock/cheap, mock_response: "x", input_cost_per_token: 0.000001, output_cost_per_token: 0.000001}
    model_info: {access_groups: [default-models]}
router_settings:
  fallbacks: [{cheap: ["openai/o1-2024-12-17"]}]
general_settings:
  master_key: sk-test-master-key-0123456789
  database_url: "{database_url}"
"#;
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: GROUPS.into(), env: vec![] }).await;
    admin(
        &gw,
        "/organization/new",
        json!({"organization_id": "O", "organization_alias": "o", "models": ["default-models"]}),
    )
    .await;
    admin(&gw, "/team/new", json!({"team_id": "T", "models": ["default-models"]})).await;
    admin(&gw, "/team/new", json!({"team_id": "OT", "organization_id": "O"})).await;
    admin(&gw, "/user/new", json!({"user_id": "u", "models": ["default-models"], "auto_create_key": false})).await;
    let levels = [
        ("key", key(&gw, json!({"models": ["default-models"]})).await, "key_model_access_denied"),
        ("team", key(&gw, json!({"team_id": "T"})).await, "team_model_access_denied"),
        ("user", key(&gw, json!({"user_id": "u"})).await, "user_model_access_denied"),
        ("organization", key(&gw, json!({"team_id": "OT"})).await, "org_model_access_denied"),
    ];
    for (level, k, denied) in &levels {
        assert_eq!(outcome(&gw, k, "openai/gpt-4o").await, "ok", "{level}");
        assert_eq!(outcome(&gw, k, "openai/o1-2024-12-17").await, *denied, "{level}");
    }
    // A customer limited to the group.
    admin(&gw, "/customer/new", json!({"user_id": "c", "models": ["default-models"]})).await;
    let (s, _, v) = gw
        .http()
        .post(
            "/v1/chat/completions",
            MASTER_KEY,
            json!({"model": "openai/o1-2024-12-17", "user": "c", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["type"], "customer_model_access_denied");
    // The restricted group grants it.
    let restricted = key(&gw, json!({"models": ["restricted-models"]})).await;
    assert_eq!(outcome(&gw, &restricted, "openai/o1-2024-12-17").await, "ok");
    // A fallback into the restricted deployment is skipped: the call fails as cheap failed.
    let (s, headers, v) = gw
        .http()
        .post(
            "/v1/chat/completions",
            &levels[0].1,
            json!({"model": "cheap", "mock_error": 500, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_ne!(s, 200, "{v}");
    assert!(headers.get("x-ferryman-model-id").is_none(), "no fallback answered: {v}");
    assert!(!gw.logs().contains("falling back"), "the fallback the key may not use was not tried:\n{}", gw.logs());
    // The usage check decides the same way.
    let (_, _, v) = gw
        .http()
        .post("/usage/check", &levels[0].1, json!({"model": "openai/o1-2024-12-17", "output_tokens": 1}))
        .await;
    assert_eq!(v["allowed"], false, "{v}");
    assert_eq!(v["reason"], "key_model_access_denied", "{v}");
}
