//! The permission matrix: every management operation, as every role, inside and outside the
//! caller's scope, on SQLite and PostgreSQL. Allowed operations answer 200; refused ones 403
//! (`permission_error`) with a message naming the rule.

use ferryman_proto::v1 as pb;
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, json, openai_error, standard_config};

const ROLES: [&str; 8] = [
    "master",
    "proxy_admin",
    "proxy_admin_viewer",
    "org_admin",
    "team_admin",
    "team_member",
    "internal_user",
    "internal_user_viewer",
];

struct World {
    secrets: Vec<String>,
    k_t1: String,
    k_t2: String,
    n: std::sync::atomic::AtomicUsize,
}

impl World {
    fn fresh(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

async fn post(gw: &Gateway, key: &str, path: &str, body: Value) -> (u16, Value) {
    let (s, _, v) = gw.http().post(path, key, body).await;
    (s, v)
}

async fn get(gw: &Gateway, key: &str, path: &str) -> (u16, Value) {
    let (s, _, v) = gw.http().get(path, key).await;
    (s, v)
}

async fn send(gw: &Gateway, key: &str, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let http = gw.http();
    let resp =
        http.client.request(method, format!("{}{path}", http.base)).bearer_auth(key).json(&body).send().await.unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

async fn admin(gw: &Gateway, path: &str, body: Value) -> Value {
    let (s, v) = post(gw, MASTER_KEY, path, body).await;
    assert_eq!(s, 200, "setup {path}: {v}");
    v
}

async fn setup(gw: &Gateway) -> World {
    admin(gw, "/organization/new", json!({"organization_id": "O1", "organization_alias": "one"})).await;
    admin(gw, "/organization/new", json!({"organization_id": "O2", "organization_alias": "two"})).await;
    admin(
        gw,
        "/team/new",
        json!({"team_id": "T1", "organization_id": "O1", "team_member_permissions": ["/key/generate"]}),
    )
    .await;
    admin(gw, "/team/new", json!({"team_id": "T2", "organization_id": "O2"})).await;
    let mut secrets = vec![MASTER_KEY.to_owned()];
    for (id, role) in [
        ("pa", "proxy_admin"),
        ("pav", "proxy_admin_viewer"),
        ("alice", "org_admin"),
        ("tom", "internal_user"),
        ("mia", "internal_user"),
        ("iu", "internal_user"),
        ("iuv", "internal_user_viewer"),
    ] {
        let u = admin(gw, "/user/new", json!({"user_id": id, "user_role": role})).await;
        secrets.push(u["key"].as_str().unwrap().to_owned());
    }
    admin(
        gw,
        "/organization/member_add",
        json!({"organization_id": "O1", "member": {"user_id": "alice", "role": "org_admin"}}),
    )
    .await;
    admin(
        gw,
        "/team/member_add",
        json!({"team_id": "T1", "member": [
        {"user_id": "tom", "role": "admin"}, {"user_id": "mia", "role": "user"}, {"user_id": "iuv", "role": "user"}]}),
    )
    .await;
    let k_t1 = admin(gw, "/key/generate", json!({"team_id": "T1", "user_id": "mia"})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let k_t2 = admin(gw, "/key/generate", json!({"team_id": "T2"})).await["token"].as_str().unwrap().to_owned();
    admin(gw, "/customer/new", json!({"user_id": "c1"})).await;
    World { secrets, k_t1, k_t2, n: Default::default() }
}

/// Runs one operation as the holder of `key`; returns the status and body of the call that
/// decides (setup and cleanup calls use the master key).
async fn attempt(gw: &Gateway, w: &World, op: &str, key: &str) -> (u16, Value) {
    use reqwest::Method;
    match op {
        "org_new" => post(gw, key, "/organization/new", json!({"organization_alias": w.fresh("org")})).await,
        "org_update_own" => send(gw, key, Method::PATCH, "/organization/update", json!({"organization_id": "O1", "organization_alias": "one"})).await,
        "org_update_other" => send(gw, key, Method::PATCH, "/organization/update", json!({"organization_id": "O2", "organization_alias": "two"})).await,
        "org_info_own" => get(gw, key, "/organization/info?organization_id=O1").await,
        "org_info_other" => get(gw, key, "/organization/info?organization_id=O2").await,
        "org_member_add_own" => post(gw, key, "/organization/member_add", json!({"organization_id": "O1", "member": {"user_email": format!("{}@x.test", w.fresh("m")), "role": "internal_user"}})).await,
        "org_member_add_other" => post(gw, key, "/organization/member_add", json!({"organization_id": "O2", "member": {"user_email": format!("{}@x.test", w.fresh("m")), "role": "internal_user"}})).await,
        "org_delete" => {
            let id = w.fresh("scratch-org");
            admin(gw, "/organization/new", json!({"organization_id": id, "organization_alias": "s"})).await;
            send(gw, key, Method::DELETE, "/organization/delete", json!({"organization_ids": [id]})).await
        }
        "team_new_own_org" => post(gw, key, "/team/new", json!({"organization_id": "O1", "team_alias": w.fresh("t")})).await,
        "team_new_other_org" => post(gw, key, "/team/new", json!({"organization_id": "O2", "team_alias": w.fresh("t")})).await,
        "team_update_alias_own" => post(gw, key, "/team/update", json!({"team_id": "T1", "team_alias": "one"})).await,
        "team_update_alias_other" => post(gw, key, "/team/update", json!({"team_id": "T2", "team_alias": "two"})).await,
        "team_update_budget_own" => post(gw, key, "/team/update", json!({"team_id": "T1", "max_budget": 100})).await,
        "team_info_own" => get(gw, key, "/team/info?team_id=T1").await,
        "team_info_other" => get(gw, key, "/team/info?team_id=T2").await,
        "team_member_add_own" => post(gw, key, "/team/member_add", json!({"team_id": "T1", "member": {"user_email": format!("{}@x.test", w.fresh("m"))}})).await,
        "team_member_add_other" => post(gw, key, "/team/member_add", json!({"team_id": "T2", "member": {"user_email": format!("{}@x.test", w.fresh("m"))}})).await,
        "team_block_own" => {
            let r = post(gw, key, "/team/block", json!({"team_id": "T1"})).await;
            if r.0 == 200 {
                admin(gw, "/team/unblock", json!({"team_id": "T1"})).await;
            }
            r
        }
        "team_delete_in_own_org" => {
            let id = w.fresh("scratch-team");
            admin(gw, "/team/new", json!({"team_id": id, "organization_id": "O1"})).await;
            post(gw, key, "/team/delete", json!({"team_ids": [id]})).await
        }
        "key_gen_own_team" => post(gw, key, "/key/generate", json!({"team_id": "T1"})).await,
        "key_gen_other_team" => post(gw, key, "/key/generate", json!({"team_id": "T2"})).await,
        "key_gen_personal" => post(gw, key, "/key/generate", json!({"key_alias": w.fresh("personal")})).await,
        "key_info_own_team" => get(gw, key, &format!("/key/info?key={}", w.k_t1)).await,
        "key_info_other_team" => get(gw, key, &format!("/key/info?key={}", w.k_t2)).await,
        "key_update_own_team" => post(gw, key, "/key/update", json!({"key": w.k_t1, "metadata": {"touched": true}})).await,
        "key_update_other_team" => post(gw, key, "/key/update", json!({"key": w.k_t2, "metadata": {"touched": true}})).await,
        "key_block_own_team" => {
            let r = post(gw, key, "/key/block", json!({"key": w.k_t1})).await;
            if r.0 == 200 {
                admin(gw, "/key/unblock", json!({"key": w.k_t1})).await;
            }
            r
        }
        "key_delete_own_team" => {
            let id = admin(gw, "/key/generate", json!({"team_id": "T1"})).await["token"].as_str().unwrap().to_owned();
            post(gw, key, "/key/delete", json!({"keys": [id]})).await
        }
        "user_new" => post(gw, key, "/user/new", json!({"user_id": w.fresh("u"), "auto_create_key": false})).await,
        "user_new_in_own_org" => post(gw, key, "/user/new", json!({"user_id": w.fresh("u"), "organization_id": "O1", "auto_create_key": false})).await,
        "user_info_tom" => get(gw, key, "/user/info?user_id=tom").await,
        "user_info_other" => get(gw, key, "/user/info?user_id=pa").await,
        "user_update_role" => {
            let id = w.fresh("scratch-user");
            admin(gw, "/user/new", json!({"user_id": id, "auto_create_key": false})).await;
            post(gw, key, "/user/update", json!({"user_id": id, "user_role": "proxy_admin"})).await
        }
        "user_delete" => {
            let id = w.fresh("scratch-user");
            admin(gw, "/user/new", json!({"user_id": id, "auto_create_key": false})).await;
            post(gw, key, "/user/delete", json!({"user_ids": [id]})).await
        }
        "customer_new" => post(gw, key, "/customer/new", json!({"user_id": w.fresh("c")})).await,
        "customer_info" => get(gw, key, "/customer/info?end_user_id=c1").await,
        "customer_block" => post(gw, key, "/customer/block", json!({"user_ids": ["c1"]})).await,
        "budget_new" => post(gw, key, "/budget/new", json!({"budget_id": w.fresh("b"), "max_budget": 1})).await,
        "budget_list" => get(gw, key, "/budget/list").await,
        "audit_list" => get(gw, key, "/audit").await,
        "spend_logs_all" => get(gw, key, "/spend/logs").await,
        other => panic!("unknown operation {other}"),
    }
}

/// Expected outcome per role, in [`ROLES`] order: `Y` allowed, `-` refused.
const MATRIX: &[(&str, &str)] = &[
    //                          m pa pav org tadm tmem iu iuv
    ("org_new", "YY------"),
    ("org_update_own", "YY-Y----"),
    ("org_update_other", "YY------"),
    ("org_info_own", "YYYY----"),
    ("org_info_other", "YYY-----"),
    ("org_member_add_own", "YY-Y----"),
    ("org_member_add_other", "YY------"),
    ("org_delete", "YY------"),
    ("team_new_own_org", "YY-Y----"),
    ("team_new_other_org", "YY------"),
    ("team_update_alias_own", "YY-YY---"),
    ("team_update_alias_other", "YY------"),
    ("team_update_budget_own", "YY-Y----"),
    ("team_info_own", "YYYYYY-Y"),
    ("team_info_other", "YYY-----"),
    ("team_member_add_own", "YY-YY---"),
    ("team_member_add_other", "YY------"),
    ("team_block_own", "YY-Y----"),
    ("team_delete_in_own_org", "YY-Y----"),
    ("key_gen_own_team", "YY-YYY--"),
    ("key_gen_other_team", "YY------"),
    ("key_gen_personal", "YY-YYYY-"),
    ("key_info_own_team", "YYYYYY-Y"),
    ("key_info_other_team", "YYY-----"),
    ("key_update_own_team", "YY-YY---"),
    ("key_update_other_team", "YY------"),
    ("key_block_own_team", "YY-YY---"),
    ("key_delete_own_team", "YY-YY---"),
    ("user_new", "YY------"),
    ("user_new_in_own_org", "YY-Y----"),
    ("user_info_tom", "YYY-Y---"),
    ("user_info_other", "YYY-----"),
    ("user_update_role", "YY------"),
    ("user_delete", "YY------"),
    ("customer_new", "YY------"),
    ("customer_info", "YYY-----"),
    ("customer_block", "YY------"),
    ("budget_new", "YY------"),
    ("budget_list", "YYY-----"),
    ("audit_list", "YYY-----"),
    ("spend_logs_all", "YYY-----"),
];

async fn matrix(backend: Backend) {
    let gw = Gateway::start(Options { backend, config: standard_config(None), env: vec![] }).await;
    let w = setup(&gw).await;
    let mut failures = Vec::new();
    for (op, expect) in MATRIX {
        for (i, role) in ROLES.iter().enumerate() {
            let allowed = expect.as_bytes()[i] == b'Y';
            let (status, body) = attempt(&gw, &w, op, &w.secrets[i]).await;
            let ok = if allowed {
                status == 200
            } else {
                status == 403 && {
                    let e = openai_error(&body);
                    e["type"] == "permission_error"
                        && e["message"].as_str().unwrap_or("").starts_with("permission denied: ")
                }
            };
            if !ok {
                failures.push(format!(
                    "{op} as {role}: expected {}, got {status} {body}",
                    if allowed { "200" } else { "403" }
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} cells wrong:\n{}", failures.len(), failures.join("\n"));

    // The same rules over gRPC: a viewer may read keys but not create them.
    let mut keys = pb::key_service_client::KeyServiceClient::new(gw.channel().await);
    let mut req = tonic::Request::new(pb::CreateKeyRequest { key: Some(pb::Key::default()), duration: None });
    req.metadata_mut().insert("authorization", format!("Bearer {}", w.secrets[2]).parse().unwrap());
    let err = keys.create_key(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("viewers"), "{}", err.message());
    let mut req = tonic::Request::new(pb::GetKeyRequest { key_id: w.k_t2.clone() });
    req.metadata_mut().insert("authorization", format!("Bearer {}", w.secrets[4]).parse().unwrap());
    assert_eq!(keys.get_key(req).await.unwrap_err().code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn permission_matrix_on_sqlite() {
    matrix(Backend::Sqlite).await;
}

#[tokio::test]
async fn permission_matrix_on_postgres() {
    matrix(Backend::Postgres).await;
}

/// Attempts to borrow someone else's identity or escape a budget, each refused.
#[tokio::test]
async fn escalations_are_refused() {
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: standard_config(None), env: vec![] }).await;
    let w = setup(&gw).await;
    let (alice, tom, mia, iu) = (&w.secrets[3], &w.secrets[4], &w.secrets[5], &w.secrets[6]);
    let refused = |r: (u16, Value), what: &str| {
        assert_eq!(r.0, 403, "{what}: {}", r.1);
        assert!(r.1["error"]["message"].as_str().unwrap().starts_with("permission denied: "), "{what}: {}", r.1);
    };
    // A team admin cannot mint a key that acts as a proxy admin.
    refused(post(&gw, tom, "/key/generate", json!({"team_id": "T1", "user_id": "pa"})).await, "key for another user");
    // Nor regenerate a teammate's key to take its secret.
    let mia_key = admin(&gw, "/key/generate", json!({"team_id": "T1", "user_id": "mia"})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(post(&gw, tom, "/key/regenerate", json!({"key": mia_key})).await, "regenerate another's key");
    // Nor move a key out of its team (and its budget), nor unblock their own key.
    let tom_key = admin(&gw, "/key/generate", json!({"team_id": "T1", "user_id": "tom"})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(
        post(&gw, tom, "/key/update", json!({"key": tom_key, "team_id": null})).await,
        "move a key out of its team",
    );
    admin(&gw, "/key/block", json!({"key": tom_key})).await;
    refused(post(&gw, tom, "/key/unblock", json!({"key": tom_key})).await, "owner unblocks own key");
    refused(
        post(&gw, tom, "/key/update", json!({"key": tom_key, "blocked": false})).await,
        "owner unblocks via update",
    );
    // An owner may narrow a new key's MCP servers, but not lift the restriction an admin put
    // on their key.
    let iu_key = admin(&gw, "/key/generate", json!({"user_id": "iu", "object_permission": {"mcp_servers": ["time"]}}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(
        post(&gw, iu, "/key/update", json!({"key": iu_key, "object_permission": {"mcp_servers": null}})).await,
        "owner lifts an MCP restriction",
    );
    let renamed = post(&gw, iu, "/key/update", json!({"key": iu_key, "key_alias": "iu-mcp"})).await;
    assert_eq!(renamed.0, 200, "the owner may change the rest: {}", renamed.1);
    let narrowed = post(&gw, iu, "/key/generate", json!({"object_permission": {"mcp_servers": ["time"]}})).await;
    assert_eq!(narrowed.0, 200, "{}", narrowed.1);
    // Nor raise their own member budget.
    refused(
        post(&gw, tom, "/team/member_update", json!({"team_id": "T1", "user_id": "tom", "max_budget_in_team": 1000}))
            .await,
        "own member budget",
    );
    // An internal user cannot charge a key to someone else's organization.
    refused(post(&gw, iu, "/key/generate", json!({"organization_id": "O2"})).await, "charge another org");
    // An org admin cannot put a new user into another organization's team...
    refused(post(&gw, alice, "/user/new", json!({"organization_id": "O1", "teams": ["T2"]})).await, "team elsewhere");
    // ...nor, having added a proxy admin to their organization, block or demote them.
    admin(
        &gw,
        "/organization/member_add",
        json!({"organization_id": "O1", "member": {"user_id": "pa", "role": "internal_user"}}),
    )
    .await;
    refused(post(&gw, alice, "/user/update", json!({"user_id": "pa", "blocked": true})).await, "block a proxy admin");
    refused(
        post(&gw, alice, "/user/update", json!({"user_id": "pa", "user_role": "internal_user"})).await,
        "demote a proxy admin",
    );
    // ...nor give themselves models or budgets.
    refused(
        post(&gw, alice, "/user/update", json!({"user_id": "alice", "models": ["all-proxy-models"]})).await,
        "own models",
    );
    // A member with /key/generate still mints keys only for themselves.
    refused(
        post(&gw, mia, "/key/generate", json!({"team_id": "T1", "user_id": "tom"})).await,
        "member mints for another",
    );
    // Ids that would collide in scope ids are refused.
    let (s, _, v) = gw.http().post("/team/new", MASTER_KEY, json!({"team_id": "a:b"})).await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("team_id")));
}

/// One organization's admin cannot take over another organization's users (by id or by
/// email), hijack an invitation by registering its email first, or change the global role of
/// someone another organization also holds; an owner cannot widen what an admin narrowed on
/// their key, and their new keys are bounded by what the admin set on the user.
#[tokio::test]
async fn tenants_cannot_take_over_users_or_widen_what_an_admin_set() {
    let mut config = standard_config(None);
    config.push_str(
        "mcp_servers:\n  time:\n    url: http://127.0.0.1:9/mcp\n  files:\n    url: http://127.0.0.1:9/mcp\n",
    );
    let gw = Gateway::start(Options { backend: Backend::Postgres, config, env: vec![] }).await;
    let w = setup(&gw).await;
    let (alice, iu) = (&w.secrets[3], &w.secrets[6]);
    let refused = |r: (u16, Value), what: &str| {
        assert_eq!(r.0, 403, "{what}: {}", r.1);
        assert!(r.1["error"]["message"].as_str().unwrap().starts_with("permission denied: "), "{what}: {}", r.1);
    };
    // bob administers O2 (and its team T2).
    let bob = admin(&gw, "/user/new", json!({"user_id": "bob", "user_email": "bob@two.test"})).await;
    let bob = bob["key"].as_str().unwrap().to_owned();
    admin(
        &gw,
        "/organization/member_add",
        json!({"organization_id": "O2", "member": {"user_id": "bob", "role": "org_admin"}}),
    )
    .await;
    admin(&gw, "/team/member_add", json!({"team_id": "T2", "member": {"user_id": "bob", "role": "admin"}})).await;

    // alice cannot pull bob into O1, by id or by email, nor into an O1 team.
    for member in [
        json!({"user_id": "bob", "role": "internal_user"}),
        json!({"user_email": "bob@two.test", "role": "internal_user"}),
    ] {
        refused(
            post(&gw, alice, "/organization/member_add", json!({"organization_id": "O1", "member": member.clone()}))
                .await,
            "org admin adds another org's admin",
        );
        let mut as_team_member = member;
        as_team_member["role"] = json!("user");
        refused(
            post(&gw, alice, "/team/member_add", json!({"team_id": "T1", "member": as_team_member})).await,
            "into a team",
        );
    }
    let (_, info) = get(&gw, MASTER_KEY, "/user/info?user_id=bob").await;
    assert_eq!(info["user_info"]["user_role"], "internal_user", "{info}");
    let (_, bob_orgs) = get(&gw, MASTER_KEY, "/organization/info?organization_id=O2").await;
    assert!(bob_orgs.to_string().contains("\"org_admin\""), "bob is still O2's admin: {bob_orgs}");

    // alice registers an email first; O2's invitation of it is refused, not bound to her user.
    let (s, v) = post(
        &gw,
        alice,
        "/user/new",
        json!({"user_id": "planted", "user_email": "eve@two.test", "organization_id": "O1", "auto_create_key": false}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let invite = json!({"team_id": "T2", "member": {"user_email": "eve@two.test", "role": "user"}});
    let (s, v) = post(&gw, &bob, "/team/member_add", invite.clone()).await;
    assert_eq!(s, 403, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("outside organization \"O2\"") && !message.contains("O1"),
        "says no more than needed: {message}"
    );
    let (_, t2) = get(&gw, MASTER_KEY, "/team/info?team_id=T2").await;
    assert!(!t2.to_string().contains("planted"), "the planted user did not join: {t2}");
    // A proxy admin may still bind it, deliberately.
    assert_eq!(post(&gw, MASTER_KEY, "/team/member_add", invite).await.0, 200);

    // A user in O1 and O2: alice may not change their (global) role.
    admin(&gw, "/user/new", json!({"user_id": "dual", "auto_create_key": false})).await;
    for org in ["O1", "O2"] {
        admin(
            &gw,
            "/organization/member_add",
            json!({"organization_id": org, "member": {"user_id": "dual", "role": "internal_user"}}),
        )
        .await;
    }
    refused(
        post(&gw, alice, "/user/update", json!({"user_id": "dual", "user_role": "internal_user_viewer"})).await,
        "role of a user another organization holds",
    );
    // ...but may of a user wholly hers.
    admin(&gw, "/user/new", json!({"user_id": "mine", "auto_create_key": false})).await;
    admin(
        &gw,
        "/organization/member_add",
        json!({"organization_id": "O1", "member": {"user_id": "mine", "role": "internal_user"}}),
    )
    .await;
    let r = post(&gw, alice, "/user/update", json!({"user_id": "mine", "user_role": "internal_user_viewer"})).await;
    assert_eq!(r.0, 200, "{}", r.1);

    // What an admin narrowed on iu's key, iu may narrow further but not widen.
    let k = admin(
        &gw,
        "/key/generate",
        json!({"user_id": "iu", "models": ["demo"], "tags": ["billing"], "duration": "1d"}),
    )
    .await;
    let k = k["token"].as_str().unwrap().to_owned();
    for (body, what) in [
        (json!({"models": ["demo", "gpt-4o-mini"]}), "a model added"),
        (json!({"models": []}), "models emptied (all models)"),
        (json!({"tags": []}), "a tag removed"),
        (json!({"duration": "30d"}), "a later expiry"),
        (json!({"duration": null}), "no expiry"),
    ] {
        let mut body = body;
        body["key"] = json!(k);
        refused(post(&gw, iu, "/key/update", body).await, what);
    }
    let r = post(
        &gw,
        iu,
        "/key/update",
        json!({"key": k, "models": ["demo", "!demo"], "tags": ["billing", "more"], "duration": "1h"}),
    )
    .await;
    assert_eq!(r.0, 200, "narrowing is fine: {}", r.1);

    // An admin bounds iu's MCP access on the user: iu cannot lift it, and every new personal key
    // of theirs is held to it (team keys answer to their team).
    admin(&gw, "/user/update", json!({"user_id": "iu", "object_permission": {"mcp_servers": ["time"]}})).await;
    refused(
        post(&gw, iu, "/user/update", json!({"user_id": "iu", "object_permission": {"mcp_servers": null}})).await,
        "own MCP bound",
    );
    let (s, fresh) = post(&gw, iu, "/key/generate", json!({})).await;
    assert_eq!(s, 200, "{fresh}");
    let fresh = fresh["key"].as_str().unwrap();
    assert_eq!(gw.mcp_initialize("time", fresh).await, 200);
    assert_eq!(gw.mcp_initialize("files", fresh).await, 403, "the user's bound holds on a new key");
    let (_, info) = get(&gw, MASTER_KEY, "/user/info?user_id=iu").await;
    assert_eq!(info["user_info"]["object_permission"]["mcp_servers"], json!(["time"]), "{info}");

    // Tags an admin puts on the user ride on every personal key's calls (a tag can carry a
    // budget), and the user cannot drop them.
    admin(&gw, "/tag/new", json!({"name": "iu-cap", "max_budget": 0})).await;
    admin(&gw, "/user/update", json!({"user_id": "iu", "tags": ["iu-cap"]})).await;
    refused(post(&gw, iu, "/user/update", json!({"user_id": "iu", "tags": []})).await, "own tags dropped");
    let call = json!({"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let (s, v) = post(&gw, fresh, "/v1/chat/completions", call).await;
    assert_eq!(s, 400, "the user's tag budget governs a new personal key: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("iu-cap"), "{v}");

    // No oracle for secrets: only proxy admins choose one (a conflict would say it is taken),
    // and someone else's secret is answered exactly like one that names no key.
    refused(post(&gw, iu, "/key/generate", json!({"key": "sk-guessed-secret-0001"})).await, "choose a secret");
    admin(&gw, "/key/generate", json!({"user_id": "bob", "key": "sk-bobs-own-secret-42"})).await;
    let theirs = get(&gw, iu, "/key/info?key=sk-bobs-own-secret-42").await;
    let nobody = get(&gw, iu, "/key/info?key=sk-nobodys-secret-4242").await;
    assert_eq!(theirs.0, 404, "{}", theirs.1);
    assert_eq!(theirs, nobody, "a working secret and a made-up one answer alike");
    let (s, _) = post(&gw, iu, "/key/delete", json!({"keys": ["sk-bobs-own-secret-42"]})).await;
    assert_eq!(s, 404);
    let (s, _) = post(&gw, iu, "/key/regenerate", json!({"key": "sk-bobs-own-secret-42"})).await;
    assert_eq!(s, 404);
}
