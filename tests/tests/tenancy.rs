//! LiteLLM's management API, written from its documented routes and shapes, against the
//! real binary on SQLite and PostgreSQL: organizations, teams and members, users, keys
//! (update, block, regenerate with grace), customers, budget tiers; every mutation on the
//! audit log, which `ferryman audit verify` checks and which detects tampering.

use std::process::Command;

use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, ferryman_bin, json, openai_error, standard_config};

async fn start(backend: Backend) -> Gateway {
    Gateway::start(Options { backend, config: standard_config(None), env: vec![] }).await
}

/// POST with the master key, asserting 200.
async fn ok(gw: &Gateway, path: &str, body: Value) -> Value {
    let (status, _, v) = gw.http().post(path, MASTER_KEY, body).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

async fn get_ok(gw: &Gateway, path: &str) -> Value {
    let (status, _, v) = gw.http().get(path, MASTER_KEY).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

async fn patch(gw: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let http = gw.http();
    let resp =
        http.client.patch(format!("{}{path}", http.base)).bearer_auth(MASTER_KEY).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn chat(gw: &Gateway, key: &str) -> (u16, Value) {
    let (s, _, v) = gw
        .http()
        .post("/v1/chat/completions", key, json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    (s, v)
}

async fn audit(gw: &Gateway, query: &str) -> Vec<Value> {
    let v = get_ok(gw, &format!("/audit?{query}")).await;
    let mut entries = v["audit_logs"].as_array().cloned().unwrap();
    entries.reverse(); // oldest first
    entries
}

fn actions(entries: &[Value]) -> Vec<String> {
    entries.iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
}

fn verify(gw: &Gateway) -> (bool, String) {
    let out = Command::new(ferryman_bin())
        .args(["audit", "verify"])
        .env("DATABASE_URL", &gw.db.url)
        .env("NO_COLOR", "1")
        .current_dir(gw.dir.path())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn litellm_management_api(backend: Backend) {
    let gw = start(backend).await;

    // Organizations.
    let org = ok(
        &gw,
        "/organization/new",
        json!({"organization_alias": "acme", "max_budget": 1000, "budget_duration": "30d",
        "models": ["demo"], "metadata": {"cost_center": "42"}}),
    )
    .await;
    let org_id = org["organization_id"].as_str().unwrap().to_owned();
    assert_eq!(org["max_budget"], 1000.0);
    assert_eq!(org["max_budget_nanos"], 1_000_000_000_000i64);
    assert_eq!(org["budget_duration"], "30d");
    let (s, v) =
        patch(&gw, "/organization/update", json!({"organization_id": org_id, "organization_alias": "acme-corp"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["organization_alias"], "acme-corp");
    assert_eq!(v["etag"], 2);
    let list = get_ok(&gw, "/organization/list").await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Budget tiers.
    let tier = ok(
        &gw,
        "/budget/new",
        json!({"budget_id": "free-tier", "max_budget": 5, "rpm_limit": 10, "budget_duration": "1mo"}),
    )
    .await;
    assert_eq!(tier["max_budget"], 5.0);
    let tier = ok(&gw, "/budget/update", json!({"budget_id": "free-tier", "max_budget": 7.25})).await;
    assert_eq!(tier["max_budget_nanos"], 7_250_000_000i64);
    let infos = ok(&gw, "/budget/info", json!({"budgets": ["free-tier"]})).await;
    assert_eq!(infos[0]["budget_id"], "free-tier");
    assert_eq!(get_ok(&gw, "/budget/list").await.as_array().unwrap().len(), 1);

    // Users: one with a first key (LiteLLM's default), one without.
    let bob =
        ok(&gw, "/user/new", json!({"user_id": "bob", "user_email": "bob@acme.test", "user_role": "internal_user"}))
            .await;
    let bob_key = bob["key"].as_str().unwrap().to_owned();
    assert_eq!(chat(&gw, &bob_key).await.0, 200);
    let alice = ok(
        &gw,
        "/user/new",
        json!({"user_id": "alice", "user_email": "alice@acme.test", "user_role": "org_admin",
        "auto_create_key": false, "max_budget": 50}),
    )
    .await;
    assert!(alice.get("key").is_none());
    let added = ok(
        &gw,
        "/organization/member_add",
        json!({"organization_id": org_id, "member": {"user_id": "alice", "role": "org_admin"}}),
    )
    .await;
    assert_eq!(added["updated_organization_memberships"][0]["role"], "org_admin");

    // Teams with members; an unknown email creates the user (as LiteLLM does).
    let team = ok(&gw, "/team/new", json!({"team_alias": "search", "organization_id": org_id, "max_budget": 100,
        "tpm_limit": 1000, "rpm_limit": 100, "models": ["demo"], "model_aliases": {"cheap": "demo"},
        "team_member_permissions": ["/key/generate"],
        "members_with_roles": [{"role": "admin", "user_id": "alice"}, {"role": "user", "user_email": "carol@acme.test"}]})).await;
    let team_id = team["team_id"].as_str().unwrap().to_owned();
    assert_eq!(team["members_with_roles"].as_array().unwrap().len(), 2);
    let carol = ok(&gw, "/user/new", json!({"user_email": "dup@acme.test", "auto_create_key": false})).await;
    let _ = carol;
    let info = get_ok(&gw, &format!("/team/info?team_id={team_id}")).await;
    assert_eq!(info["team_info"]["team_alias"], "search");
    let carol_id =
        info["team_memberships"].as_array().unwrap().iter().find(|m| m["role"] == "user").unwrap()["user_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let m = ok(&gw, "/team/member_update", json!({"team_id": team_id, "user_id": carol_id, "max_budget_in_team": 7.5}))
        .await;
    assert_eq!(m["max_budget_in_team"], 7.5);
    ok(
        &gw,
        "/team/member_add",
        json!({"team_id": team_id, "member": [{"role": "user", "user_id": "bob"}], "max_budget_in_team": 3}),
    )
    .await;
    let updated =
        ok(&gw, "/team/update", json!({"team_id": team_id, "max_budget": 150, "metadata": {"slack": "#search"}})).await;
    assert_eq!(updated["max_budget"], 150.0);
    assert_eq!(get_ok(&gw, &format!("/team/list?organization_id={org_id}")).await.as_array().unwrap().len(), 1);

    // Keys: every LiteLLM field this version supports, stored and returned.
    let key = ok(&gw, "/key/generate", json!({"team_id": team_id, "user_id": carol_id, "key_alias": "carol-key",
        "max_budget": 2, "soft_budget": 1.5, "budget_duration": "1d", "tpm_limit": 100000, "rpm_limit": 100,
        "max_parallel_requests": 2, "model_max_budget": {"demo": {"budget_limit": 1, "time_period": "1d"}},
        "model_rpm_limit": {"demo": 50}, "model_tpm_limit": {"demo": 50000}, "tags": ["search"], "metadata": {"env": "prod"},
        "budget_id": "free-tier", "duration": "30d"})).await;
    let key_id = key["token"].as_str().unwrap().to_owned();
    let secret = key["key"].as_str().unwrap().to_owned();
    assert_eq!(key["organization_id"], org_id.as_str(), "a team key belongs to the team's organization");
    assert_eq!(key["model_max_budget"]["demo"]["budget_limit"], 1.0);
    assert_eq!(key["soft_budget"], 1.5);
    assert_eq!(key["tags"], json!(["search"]));
    assert_eq!(chat(&gw, &secret).await.0, 200);
    let info = get_ok(&gw, &format!("/key/info?key={key_id}")).await;
    assert_eq!(info["info"]["key_alias"], "carol-key");
    assert!(!info.to_string().contains(&secret) && !info.to_string().contains("token_hash"));
    let upd = ok(&gw, "/key/update", json!({"key": key_id, "key_alias": "carol-main", "etag": 1})).await;
    assert_eq!(upd["etag"], 2);
    let (s, _, v) =
        gw.http().post("/key/update", MASTER_KEY, json!({"key": key_id, "key_alias": "x", "etag": 1})).await;
    assert_eq!(s, 409, "a stale etag is refused: {v}");
    let ids = get_ok(&gw, &format!("/key/list?team_id={team_id}")).await;
    assert_eq!(ids["keys"], json!([key_id]));

    // Blocking: the key, then its team, each refused on the very next request.
    ok(&gw, "/key/block", json!({"key": key_id})).await;
    assert_eq!(chat(&gw, &secret).await.0, 401);
    ok(&gw, "/key/unblock", json!({"key": key_id})).await;
    assert_eq!(chat(&gw, &secret).await.0, 200);
    ok(&gw, "/team/block", json!({"team_id": team_id})).await;
    let (s, v) = chat(&gw, &secret).await;
    assert_eq!(s, 403, "{v}");
    assert!(openai_error(&v)["message"].as_str().unwrap().contains("blocked"));
    ok(&gw, "/team/unblock", json!({"team_id": team_id})).await;
    assert_eq!(chat(&gw, &secret).await.0, 200);

    // Regeneration with a grace period: both secrets work, then only the new one.
    let regen = ok(&gw, &format!("/key/{key_id}/regenerate"), json!({"grace_period": "2s"})).await;
    let new_secret = regen["key"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(regen["token"], key_id.as_str(), "the key id is stable across regeneration");
    assert_eq!(chat(&gw, &new_secret).await.0, 200);
    assert_eq!(chat(&gw, &secret).await.0, 200, "the old secret works during the grace period");
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(chat(&gw, &secret).await.0, 401, "and stops after it");
    assert_eq!(chat(&gw, &new_secret).await.0, 200);
    let again = ok(&gw, "/key/regenerate", json!({"key": new_secret})).await;
    assert_eq!(chat(&gw, &new_secret).await.0, 401, "without a grace period the old secret stops at once");
    let latest = again["key"].as_str().unwrap().to_owned();

    // Customers, and the /end_user aliases.
    let c = ok(
        &gw,
        "/customer/new",
        json!({"user_id": "cust-1", "alias": "Globex", "budget_id": "free-tier",
        "allowed_model_region": "eu", "default_model": "demo"}),
    )
    .await;
    assert_eq!(c["budget_id"], "free-tier");
    assert_eq!(get_ok(&gw, "/end_user/info?end_user_id=cust-1").await["alias"], "Globex");
    ok(&gw, "/customer/block", json!({"user_ids": ["cust-1"]})).await;
    assert_eq!(get_ok(&gw, "/customer/info?end_user_id=cust-1").await["blocked"], true);
    ok(&gw, "/end_user/unblock", json!({"user_ids": ["cust-1"]})).await;
    ok(&gw, "/customer/update", json!({"user_id": "cust-1", "alias": "Globex Corp"})).await;
    assert_eq!(get_ok(&gw, "/customer/list").await.as_array().unwrap().len(), 1);
    let (s, _, v) = gw.http().post("/budget/delete", MASTER_KEY, json!({"id": "free-tier"})).await;
    assert_eq!(s, 400, "a linked budget is not deleted: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("still linked"));
    ok(&gw, "/customer/delete", json!({"user_ids": ["cust-1"]})).await;
    let (s, _, _) = gw.http().get("/customer/info?end_user_id=cust-1", MASTER_KEY).await;
    assert_eq!(s, 404);

    // Users: info with keys, teams and organizations; update; delete (their keys go too).
    let info = get_ok(&gw, "/user/info?user_id=alice").await;
    assert_eq!(info["user_info"]["max_budget"], 50.0);
    assert_eq!(info["organizations"][0]["role"], "org_admin");
    assert_eq!(info["teams"][0]["role"], "admin");
    ok(&gw, "/user/update", json!({"user_id": "alice", "user_alias": "Alice A."})).await;
    assert!(get_ok(&gw, "/user/list").await["users"].as_array().unwrap().len() >= 3);
    ok(&gw, "/user/delete", json!({"user_ids": ["bob"]})).await;
    assert_eq!(chat(&gw, &bob_key).await.0, 401, "a deleted user's keys stop at once");

    // Members out; a team with keys cannot outlive its deletion; an organization with teams
    // cannot be deleted.
    ok(&gw, "/team/member_delete", json!({"team_id": team_id, "user_id": carol_id})).await;
    let http = gw.http();
    let resp = http
        .client
        .delete(format!("{}/organization/delete", http.base))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"organization_ids": [org_id]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "an organization with teams is not deleted");
    ok(&gw, "/team/delete", json!({"team_ids": [team_id]})).await;
    assert_eq!(chat(&gw, &latest).await.0, 401, "the team's keys went with it");
    let resp = http
        .client
        .delete(format!("{}/organization/delete", http.base))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"organization_ids": [org_id]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    ok(&gw, "/budget/delete", json!({"id": "free-tier"})).await;

    // The audit log: one entry per mutation, with before and after.
    let team_log = audit(&gw, &format!("object_type=team&object_id={team_id}")).await;
    assert_eq!(
        actions(&team_log),
        ["created", "member_updated", "member_added", "updated", "blocked", "unblocked", "member_removed", "deleted"]
    );
    assert!(team_log[0]["before_value"].is_null());
    assert_eq!(team_log[0]["updated_values"]["team_alias"], "search");
    assert_eq!(team_log[3]["before_value"]["max_budget"], 100_000_000_000i64);
    assert_eq!(team_log[3]["updated_values"]["max_budget"], 150_000_000_000i64);
    assert_eq!(team_log[4]["updated_values"]["blocked"], true);
    assert!(team_log[7]["updated_values"].is_null());
    assert_eq!(team_log[0]["changed_by_api_key"], "master");
    assert_eq!(team_log[0]["actor_role"], "proxy_admin");
    assert!(team_log[0]["source_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(team_log[0]["request_id"].is_string());

    let key_log = audit(&gw, &format!("object_type=key&object_id={key_id}")).await;
    assert_eq!(actions(&key_log), ["created", "updated", "blocked", "unblocked", "rotated", "rotated", "deleted"]);
    let all = audit(&gw, "page_size=1000").await;
    assert!(!serde_json::to_string(&all).unwrap().contains(&secret), "no secret in the audit log");
    for e in &all {
        for side in ["before_value", "updated_values"] {
            if let Some(h) = e[side].get("token_hash") {
                assert_eq!(h, "***", "token hashes are redacted");
            }
        }
    }
    let org_log = audit(&gw, &format!("object_type=organization&object_id={org_id}")).await;
    assert_eq!(actions(&org_log), ["created", "updated", "member_added", "deleted"]);

    // The chain verifies; changing a stored entry by hand breaks it, naming the entry.
    let (intact, out) = verify(&gw);
    assert!(intact, "{out}");
    assert!(out.contains(&format!("audit log intact: {} entries verified", all.len())), "{out}");
    let victim = team_log[3]["seq"].as_i64().unwrap();
    tamper(&gw, backend, victim).await;
    let (intact, out) = verify(&gw);
    assert!(!intact);
    assert!(out.contains(&format!("BROKEN at entry {victim}")), "{out}");
    assert!(out.contains("changed after it was written"), "{out}");
}

async fn tamper(gw: &Gateway, backend: Backend, seq: i64) {
    use sqlx::Connection;
    let sql = format!("UPDATE audit_log SET after_value = '{{\"max_budget\":999999000000000}}' WHERE seq = {seq}");
    match backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&gw.db.url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.unwrap();
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&gw.db.url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.unwrap();
        }
    }
}

#[tokio::test]
async fn litellm_management_api_on_sqlite() {
    litellm_management_api(Backend::Sqlite).await;
}

#[tokio::test]
async fn litellm_management_api_on_postgres() {
    litellm_management_api(Backend::Postgres).await;
}

/// Refused requests name the problem and write nothing.
async fn bad_management_input(backend: Backend) {
    let gw = start(backend).await;
    let http = gw.http();
    ok(&gw, "/organization/new", json!({"organization_id": "o1", "organization_alias": "one"})).await;
    ok(&gw, "/team/new", json!({"team_id": "t1", "organization_id": "o1"})).await;
    ok(&gw, "/user/new", json!({"user_id": "u1", "user_email": "u1@x.test", "auto_create_key": false})).await;
    ok(&gw, "/key/generate", json!({"key_alias": "k1"})).await;
    ok(&gw, "/customer/new", json!({"user_id": "c1"})).await;
    ok(&gw, "/budget/new", json!({"budget_id": "b1", "max_budget": 1})).await;
    ok(&gw, "/team/member_add", json!({"team_id": "t1", "member": {"user_id": "u1", "role": "user"}})).await;
    let before = audit(&gw, "page_size=1000").await.len();

    let expect = |reply: (u16, reqwest::header::HeaderMap, Value), status: u16, param: Value, words: &str| {
        let (got, _, body) = reply;
        assert_eq!(got, status, "{body}");
        let e = openai_error(&body);
        assert_eq!(e["param"], param, "{body}");
        assert!(e["message"].as_str().unwrap().contains(words), "{body} lacks {words:?}");
    };

    // Unknown ids → 404.
    expect(http.get("/team/info?team_id=nope", MASTER_KEY).await, 404, Value::Null, "no team with id \"nope\"");
    expect(http.get("/organization/info?organization_id=nope", MASTER_KEY).await, 404, Value::Null, "no organization");
    expect(http.get("/user/info?user_id=nope", MASTER_KEY).await, 404, Value::Null, "no user");
    expect(http.get("/key/info?key=nope", MASTER_KEY).await, 404, Value::Null, "no such key");
    expect(http.get("/customer/info?end_user_id=nope", MASTER_KEY).await, 404, Value::Null, "no customer");
    expect(
        http.post("/budget/update", MASTER_KEY, json!({"budget_id": "nope", "max_budget": 1})).await,
        404,
        Value::Null,
        "no budget",
    );
    expect(
        http.post("/team/delete", MASTER_KEY, json!({"team_ids": ["t1", "nope"]})).await,
        404,
        Value::Null,
        "no team",
    );
    expect(
        http.post("/team/member_delete", MASTER_KEY, json!({"team_id": "t1", "user_id": "nope"})).await,
        404,
        Value::Null,
        "not a member",
    );
    expect(http.post("/key/delete", MASTER_KEY, json!({"keys": ["nope"]})).await, 404, Value::Null, "no such key");

    // Duplicates → 409.
    expect(
        http.post("/organization/new", MASTER_KEY, json!({"organization_id": "o1", "organization_alias": "x"})).await,
        409,
        Value::Null,
        "already exists",
    );
    expect(http.post("/team/new", MASTER_KEY, json!({"team_id": "t1"})).await, 409, Value::Null, "already exists");
    expect(
        http.post("/user/new", MASTER_KEY, json!({"user_email": "u1@x.test", "auto_create_key": false})).await,
        409,
        Value::Null,
        "already exists",
    );
    expect(
        http.post("/key/generate", MASTER_KEY, json!({"key_alias": "k1"})).await,
        409,
        Value::Null,
        "\"k1\" already exists",
    );
    expect(http.post("/customer/new", MASTER_KEY, json!({"user_id": "c1"})).await, 409, Value::Null, "already exists");
    expect(http.post("/budget/new", MASTER_KEY, json!({"budget_id": "b1"})).await, 409, Value::Null, "already exists");
    expect(
        http.post("/team/member_add", MASTER_KEY, json!({"team_id": "t1", "member": {"user_id": "u1"}})).await,
        409,
        Value::Null,
        "already a member",
    );

    // Invalid values, unknown fields, unknown parents → 400 naming the field.
    expect(
        http.post("/team/new", MASTER_KEY, json!({"budget_duration": "1 day"})).await,
        400,
        json!("budget_duration"),
        "invalid duration",
    );
    expect(
        http.post("/key/generate", MASTER_KEY, json!({"duration": "forever"})).await,
        400,
        json!("duration"),
        "invalid duration",
    );
    expect(
        http.post("/team/new", MASTER_KEY, json!({"max_budget": -5})).await,
        400,
        json!("max_budget"),
        "non-negative",
    );
    expect(
        http.post("/customer/new", MASTER_KEY, json!({"user_id": "c2", "soft_budget": -1})).await,
        400,
        json!("soft_budget"),
        "non-negative",
    );
    expect(
        http.post("/key/generate", MASTER_KEY, json!({"model_max_budget": {"demo": {"budget_limit": -1}}})).await,
        400,
        json!("model_max_budget.demo.budget_limit"),
        "non-negative",
    );
    expect(
        http.post("/team/new", MASTER_KEY, json!({"team_alias": "x", "colour": "blue"})).await,
        400,
        json!("colour"),
        "unknown field",
    );
    expect(
        http.post("/organization/new", MASTER_KEY, json!({"organization_alias": "x", "tpm_limit": "lots"})).await,
        400,
        json!("tpm_limit"),
        "invalid type",
    );
    expect(
        http.post("/team/new", MASTER_KEY, json!({"organization_id": "nope"})).await,
        400,
        json!("organization_id"),
        "no organization with id \"nope\"",
    );
    expect(
        http.post("/key/generate", MASTER_KEY, json!({"team_id": "nope"})).await,
        400,
        json!("team_id"),
        "no team with id",
    );
    expect(
        http.post("/key/generate", MASTER_KEY, json!({"user_id": "nope"})).await,
        400,
        json!("user_id"),
        "no user with id",
    );
    expect(
        http.post("/customer/new", MASTER_KEY, json!({"user_id": "c3", "budget_id": "nope"})).await,
        400,
        json!("budget_id"),
        "no budget with id",
    );
    expect(
        http.post("/customer/new", MASTER_KEY, json!({"user_id": "c3", "budget_id": "b1", "max_budget": 3})).await,
        400,
        json!("budget_id"),
        "not both",
    );
    expect(
        http.post("/team/member_add", MASTER_KEY, json!({"team_id": "t1", "member": {"user_id": "nope"}})).await,
        400,
        json!("member[0].user_id"),
        "no user",
    );
    expect(
        http.post(
            "/team/member_add",
            MASTER_KEY,
            json!({"team_id": "t1", "member": {"user_id": "u1", "role": "boss"}}),
        )
        .await,
        400,
        json!("member[0].role"),
        "not a team role",
    );
    expect(
        http.post("/user/new", MASTER_KEY, json!({"user_role": "wizard"})).await,
        400,
        json!("user_role"),
        "not a role",
    );
    expect(
        http.post("/team/new", MASTER_KEY, json!({"team_member_permissions": ["/team/delete"]})).await,
        400,
        json!("team_member_permissions[0]"),
        "not a grantable route",
    );
    expect(
        http.post("/team/new", MASTER_KEY, json!({"max_budget": 1, "soft_budget": 2})).await,
        400,
        json!("soft_budget"),
        "above max_budget",
    );
    expect(
        http.post("/team/update", MASTER_KEY, json!({"max_budget": 1})).await,
        400,
        json!("team_id"),
        "team_id: required",
    );

    // Nothing was half-written: no entity and no audit entry came of any of it.
    assert_eq!(audit(&gw, "page_size=1000").await.len(), before);
    assert_eq!(get_ok(&gw, "/team/list").await.as_array().unwrap().len(), 1);
    assert_eq!(get_ok(&gw, "/customer/list").await.as_array().unwrap().len(), 1);
    assert_eq!(get_ok(&gw, "/key/list").await["keys"].as_array().unwrap().len(), 1);
    assert_eq!(get_ok(&gw, "/user/list").await["users"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_management_input_on_sqlite() {
    bad_management_input(Backend::Sqlite).await;
}

#[tokio::test]
async fn bad_management_input_on_postgres() {
    bad_management_input(Backend::Postgres).await;
}
