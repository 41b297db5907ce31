//! What a management write may store, on both backends alike: no NUL character anywhere (which
//! PostgreSQL cannot store: it used to answer 503), ids that cannot escape a path, and bounded
//! names, texts, metadata and lists. Each refusal is a 400 naming the field, and nothing of the
//! refused request is written.

use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, Value, json, openai_error, standard_config};

/// The standard config with room for a 1 MB body, so the bounds are the stores' and not the
/// request size limit's.
fn config() -> String {
    standard_config(None).replace("max_request_size_mb: 0.05", "max_request_size_mb: 4")
}

fn refused(reply: &(u16, reqwest::header::HeaderMap, Value), param: &str) {
    let (status, _, body) = reply;
    assert_eq!(*status, 400, "{body}");
    let e = openai_error(body);
    assert_eq!(e["type"], "invalid_request_error", "{body}");
    assert_eq!(e["param"], param, "{body}");
    assert!(e["message"].as_str().unwrap().starts_with(param), "the message names the field: {body}");
}

#[tokio::test]
async fn nul_characters_long_names_and_path_ids_are_refused_naming_the_field() {
    for backend in Backend::ALL {
        let gw = Gateway::start(Options { backend, config: config(), env: vec![] }).await;
        let http = gw.http();
        let cases = [
            ("/team/new", json!({"team_alias": "ops\u{0}"}), "team_alias"),
            ("/user/new", json!({"user_email": "a\u{0}@example.com", "auto_create_key": false}), "user_email"),
            ("/key/generate", json!({"metadata": {"note": ["fine", "nul\u{0}"]}}), "metadata.note[1]"),
            ("/key/generate", json!({"key_alias": "x".repeat(1_000_000)}), "key_alias"),
            ("/key/generate", json!({"models": ["demo", "m".repeat(300)]}), "models[1]"),
            ("/key/generate", json!({"metadata": {"blob": "z".repeat(70_000)}}), "metadata"),
            ("/organization/new", json!({"organization_id": "../etc", "organization_alias": "o"}), "organization_id"),
            ("/team/new", json!({"team_id": "a/b"}), "team_id"),
            ("/user/new", json!({"user_id": "u:1", "auto_create_key": false}), "user_id"),
            ("/customer/new", json!({"user_id": "c/../d"}), "user_id"),
            ("/budget/new", json!({"budget_id": "b\\c", "max_budget": 1}), "budget_id"),
            ("/tag/new", json!({"name": "t\u{0}"}), "name"),
        ];
        for (path, body, param) in cases {
            let reply = http.post(path, MASTER_KEY, body).await;
            refused(&reply, param);
        }
        // Nothing of any refused request was written.
        for (list, field) in [("/team/list", ""), ("/user/list", "users"), ("/customer/list", ""), ("/tag/list", "")] {
            let (s, _, v) = http.get(list, MASTER_KEY).await;
            assert_eq!(s, 200, "{list}: {v}");
            let items = if field.is_empty() { &v } else { &v[field] };
            assert_eq!(items.as_array().map(Vec::len), Some(0), "{backend:?} {list}: {v}");
        }
        let (_, _, keys) = http.get("/key/list", MASTER_KEY).await;
        assert_eq!(keys["keys"].as_array().map(Vec::len), Some(0), "{backend:?}: {keys}");
        // A lookup by such a string finds nothing, on both backends, instead of failing.
        let (s, _, v) = http.get("/team/info?team_id=a%00b", MASTER_KEY).await;
        assert_eq!(s, 404, "{backend:?}: {v}");
        let (s, _, v) = http.get("/spend/logs?user_id=a%00b", MASTER_KEY).await;
        assert_eq!(s, 200, "{backend:?}: {v}");
        // An update is held to the same bounds.
        let (_, _, team) = http.post("/team/new", MASTER_KEY, json!({"team_id": "t", "team_alias": "fine"})).await;
        assert_eq!(team["team_id"], "t", "{team}");
        let reply = http.post("/team/update", MASTER_KEY, json!({"team_id": "t", "metadata": {"k\u{0}": 1}})).await;
        refused(&reply, "metadata.k\u{0}");
        let (_, _, info) = http.get("/team/info?team_id=t", MASTER_KEY).await;
        assert_eq!(info["team_info"]["metadata"], json!({}), "{info}");
        assert!(!gw.logs().contains("database is unavailable"), "{backend:?}: {}", gw.logs());
    }
}
