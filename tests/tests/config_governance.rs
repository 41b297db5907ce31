//! Governance as code, through the real binary: organizations, teams, users and keys declared
//! in config.yaml become the running state at start; a changed file is shown by `config diff`
//! and applied on SIGHUP with spend intact, audited by `config`; API changes to
//! config-managed resources are refused naming the file; `config apply` reloads the models
//! without dropping a call in flight; a file with five errors is refused whole.

use std::process::Command;

use ferryman_proto::v1 as pb;
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, TempDir, Value, ferryman_bin, json, openai_error};
use tonic_types::StatusExt;

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {MASTER_KEY}").parse().unwrap());
    req
}

const MARKETING_KEY: &str = "sk-marketing-from-env-0123456789";
const RESEARCH_KEY: &str = "sk-research-plain-in-file-0123";
const CAROL_KEY: &str = "sk-carol-given-as-hash-0123456789";

fn sha256_hex(s: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn models(extra: &str) -> String {
    format!(
        r#"model_list:
  - model_name: demo
    litellm_params:
      model: mock/demo
      input_cost_per_token: 0.00000015
      output_cost_per_token: 0.0000006
  - model_name: slow
    litellm_params:
      model: mock/slow
      mock_latency_ms: 1500
      input_cost_per_token: 0.00000015
      output_cost_per_token: 0.0000006
{extra}general_settings:
  master_key: {MASTER_KEY}
  database_url: "{{database_url}}"
"#
    )
}

/// The first file: an organization, two teams with budgets and members, three keys (one from
/// the environment, one plain in the file, one as a hash).
fn first_file() -> String {
    let carol_hash = sha256_hex(CAROL_KEY);
    models("")
        + &format!(
            r#"organizations:
  - organization_id: acme
    max_budget: 1000
    members:
      - user_id: alice
        role: org_admin
users:
  - user_id: alice
    user_email: alice@acme.test
  - user_id: bob
  - user_id: carol
teams:
  - team_id: marketing-team
    organization_id: acme
    max_budget: 100.0
    budget_duration: 30d
    members_with_roles:
      - user_id: alice
        role: admin
      - user_id: bob
        max_budget_in_team: 10
  - team_id: research
    organization_id: acme
    max_budget: 50
virtual_keys:
  - api_key: os.environ/MARKETING_KEY
    key_alias: marketing
    team_id: marketing-team
    tpm: 100000
    rpm: 100
    max_parallel_requests: 25
  - api_key: {RESEARCH_KEY}
    key_id: research-key
    team_id: research
    rpm: 2
  - api_key: sha256:{carol_hash}
    key_id: carol-key
    user_id: carol
    max_budget: 0.000001
"#
        )
}

/// The second file: marketing's budget raised, the research key removed, a sales team added.
fn second_file() -> String {
    first_file()
        .replace("    max_budget: 100.0\n", "    max_budget: 150.0\n")
        .replace(
            &format!("  - api_key: {RESEARCH_KEY}\n    key_id: research-key\n    team_id: research\n    rpm: 2\n"),
            "",
        )
        .replace(
            "virtual_keys:\n",
            "  - team_id: sales\n    organization_id: acme\n    max_budget: 20\nvirtual_keys:\n",
        )
}

fn write_config(gw: &Gateway, text: &str) {
    std::fs::write(gw.config_path(), text.replace("{database_url}", &gw.db.url)).unwrap();
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(ferryman_bin());
    cmd.args(args).env("NO_COLOR", "1").env_remove("DATABASE_URL").env_remove("FERRYMAN_MASTER_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn chat(gw: &Gateway, key: &str, model: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    gw.http()
        .post("/v1/chat/completions", key, json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .await
}

async fn team_info(gw: &Gateway, team: &str) -> Value {
    let (status, _, body) = gw.http().get(&format!("/team/info?team_id={team}"), MASTER_KEY).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The audit entries written by `config`, oldest first, as `action object_type object_id`.
async fn config_audit(gw: &Gateway) -> Vec<String> {
    let (status, _, body) = gw.http().get("/audit?changed_by_api_key=config&page_size=200", MASTER_KEY).await;
    assert_eq!(status, 200, "{body}");
    let mut entries: Vec<(i64, String)> = body["audit_logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["actor_role"], "config");
            let line = format!(
                "{} {} {}",
                e["action"].as_str().unwrap(),
                e["object_type"].as_str().unwrap(),
                e["object_id"].as_str().unwrap()
            );
            (e["seq"].as_i64().unwrap(), line)
        })
        .collect();
    entries.sort();
    entries.into_iter().map(|(_, l)| l).collect()
}

async fn declared_governance_follows_the_file(backend: Backend) {
    let env = vec![("MARKETING_KEY".to_owned(), MARKETING_KEY.to_owned())];
    let gw = Gateway::start(Options { backend, config: first_file(), env }).await;
    let logs = gw.logs();
    let line = first_file().lines().position(|l| l.contains(RESEARCH_KEY)).unwrap() + 1;
    assert!(
        logs.contains(&format!("virtual_keys[1].api_key: line {line}: a plain secret in the file")),
        "the plain secret is warned about by line:\n{logs}"
    );
    assert!(!logs.contains(RESEARCH_KEY), "a secret reached the log");

    // The declared keys work, with the declared limits.
    let (status, headers, body) = chat(&gw, MARKETING_KEY, "demo").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-ratelimit-limit-requests"], "100");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "100000");
    assert_eq!(chat(&gw, MARKETING_KEY, "demo").await.0, 200);
    assert_eq!(chat(&gw, RESEARCH_KEY, "demo").await.0, 200);
    assert_eq!(chat(&gw, RESEARCH_KEY, "demo").await.0, 200);
    let (status, _, body) = chat(&gw, RESEARCH_KEY, "demo").await;
    assert_eq!(status, 429, "rpm 2 is the research key's declared limit: {body}");
    let (status, _, body) = chat(&gw, CAROL_KEY, "demo").await;
    assert_eq!(status, 400, "carol's key has a declared budget of 0.000001 USD: {body}");
    assert_eq!(openai_error(&body)["type"], "budget_exceeded");

    // The declared structure: members with roles, the key's organization from its team.
    let info = team_info(&gw, "marketing-team").await;
    assert_eq!(info["team_info"]["max_budget"], json!(100.0));
    assert_eq!(info["team_info"]["managed_by"], "config");
    let mut members: Vec<String> = info["team_memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {}", m["user_id"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    members.sort();
    assert_eq!(members, ["alice admin", "bob user"]);
    let marketing_key = &info["keys"][0];
    assert_eq!(marketing_key["organization_id"], "acme");

    // API changes to config-managed resources are refused naming the file; API-made
    // resources beside them are the API's.
    let file_name = gw.config_path().file_name().unwrap().to_str().unwrap().to_owned();
    let (status, _, body) =
        gw.http().post("/team/update", MASTER_KEY, json!({"team_id": "marketing-team", "max_budget": 5})).await;
    assert_eq!(status, 403, "{body}");
    let err = openai_error(&body);
    assert_eq!(err["code"], "config_managed");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("team \"marketing-team\" is declared in {file_name} and managed from there")),
        "{body}"
    );
    assert!(!message.contains("/tmp/"), "the API names the file, not where it is: {body}");
    let (status, _, body) = gw.http().post("/key/delete", MASTER_KEY, json!({"keys": ["research-key"]})).await;
    assert_eq!(status, 403, "{body}");
    // The same over gRPC: the state says who manages the team, and an update is refused.
    let mut teams = pb::team_service_client::TeamServiceClient::new(gw.channel().await);
    let got = teams.get_team(authed(pb::GetTeamRequest { team_id: "marketing-team".into() })).await.unwrap();
    let team = got.into_inner().team.unwrap();
    assert_eq!(team.state.unwrap().managed_by.as_deref(), Some("config"));
    let refused = teams
        .update_team(authed(pb::UpdateTeamRequest {
            team: Some(pb::Team { team_id: "marketing-team".into(), blocked: true, ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["blocked".into()] }),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let info = refused.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "CONFIG_MANAGED");
    let api_key = gw.create_key(json!({"team_id": "marketing-team", "key_alias": "made-by-api"})).await;
    let api_secret = api_key["key"].as_str().unwrap().to_owned();
    assert_eq!(chat(&gw, &api_secret, "demo").await.0, 200);

    // Spend so far, once the ledger has it.
    gw.spend_logs_until("", 5).await;
    let spend_before = team_info(&gw, "marketing-team").await["team_info"]["spend_nanos"].as_i64().unwrap();
    assert!(spend_before > 0);
    let audit_at_start = config_audit(&gw).await;
    let marketing_id = format!("config-{}", &sha256_hex(MARKETING_KEY)[..16]);
    assert_eq!(
        audit_at_start,
        [
            "created organization acme".to_owned(),
            "created user alice".to_owned(),
            "created user bob".to_owned(),
            "created user carol".to_owned(),
            "created team marketing-team".to_owned(),
            "created team research".to_owned(),
            "member_added organization acme".to_owned(),
            "member_added team marketing-team".to_owned(),
            "member_added team marketing-team".to_owned(),
            format!("created key {marketing_id}"),
            "created key research-key".to_owned(),
            "created key carol-key".to_owned(),
        ]
    );

    // Change the file: `config diff` shows exactly what a reload will do, and does nothing.
    write_config(&gw, &second_file());
    let file = gw.config_path().to_str().unwrap().to_owned();
    let (ok, diff, stderr) = cli(&["config", "diff", &file], &[("MARKETING_KEY", MARKETING_KEY)]);
    assert!(ok, "{diff}{stderr}");
    let diff: Vec<&str> = diff.lines().collect();
    assert_eq!(diff, ["- key research-key", "~ team marketing-team: max_budget 100 → 150", "+ team sales"]);
    assert_eq!(chat(&gw, RESEARCH_KEY, "demo").await.0, 429, "diff changed nothing");

    // SIGHUP applies it.
    gw.signal_hangup();
    gw.log_count_reaches("configuration reloaded", 1).await;
    let (status, _, body) = chat(&gw, RESEARCH_KEY, "demo").await;
    assert_eq!(status, 401, "the removed key is refused: {body}");
    let info = team_info(&gw, "marketing-team").await;
    assert_eq!(info["team_info"]["max_budget"], json!(150.0));
    assert_eq!(info["team_info"]["spend_nanos"].as_i64().unwrap(), spend_before, "spend survives the reconcile");
    assert_eq!(team_info(&gw, "sales").await["team_info"]["organization_id"], "acme");
    assert_eq!(chat(&gw, MARKETING_KEY, "demo").await.0, 200);
    assert_eq!(chat(&gw, &api_secret, "demo").await.0, 200, "the API-made key is untouched");
    let audit = config_audit(&gw).await;
    assert_eq!(
        audit[audit_at_start.len()..],
        ["deleted key research-key", "updated team marketing-team", "created team sales"]
    );

    // `config apply` asks the running gateway to reload: nothing left to change, and a model
    // added to model_list is served, while a call already in flight finishes.
    let (ok, stdout, stderr) = cli(&["config", "apply", "--url", &gw.url], &[("FERRYMAN_MASTER_KEY", MASTER_KEY)]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("no changes"), "{stdout}");
    let third = second_file().replace(
        "general_settings:",
        "  - model_name: demo-2\n    litellm_params:\n      model: mock/demo-2\n      input_cost_per_token: 0.0000001\n      output_cost_per_token: 0.0000002\ngeneral_settings:",
    );
    write_config(&gw, &third.replace("  - model_name: slow\n    litellm_params:\n      model: mock/slow\n      mock_latency_ms: 1500\n      input_cost_per_token: 0.00000015\n      output_cost_per_token: 0.0000006\n", ""));
    assert_eq!(chat(&gw, MARKETING_KEY, "demo-2").await.0, 404);
    let in_flight = {
        let http = gw.http();
        tokio::spawn(async move {
            http.post(
                "/v1/chat/completions",
                MARKETING_KEY,
                json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (ok, stdout, stderr) = cli(&["config", "apply", "--url", &gw.url], &[("FERRYMAN_MASTER_KEY", MASTER_KEY)]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("reloaded: 2 model name(s)"), "{stdout}");
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the call in flight during the reload finished: {body}");
    let (status, _, body) = chat(&gw, MARKETING_KEY, "demo-2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(chat(&gw, MARKETING_KEY, "slow").await.0, 404, "the removed model is gone");

    // A file with a problem changes nothing and says why.
    write_config(&gw, &second_file().replace("max_budget: 150.0", "max_budget: lots"));
    let (ok, _, stderr) = cli(&["config", "apply", "--url", &gw.url], &[("FERRYMAN_MASTER_KEY", MASTER_KEY)]);
    assert!(!ok);
    assert!(stderr.contains("teams[0].max_budget: expected a non-negative number"), "{stderr}");
    assert_eq!(team_info(&gw, "marketing-team").await["team_info"]["max_budget"], json!(150.0));
    gw.terminate().await;
}

#[tokio::test]
async fn declared_governance_follows_the_file_on_sqlite() {
    declared_governance_follows_the_file(Backend::Sqlite).await;
}

#[tokio::test]
async fn declared_governance_follows_the_file_on_postgres() {
    declared_governance_follows_the_file(Backend::Postgres).await;
}

const FIVE_ERRORS: &str = r#"
general_settings:
  master_key: sk-test-master-key-0123456789
  database_url: "sqlite://never-created.db"
users:
  - user_id: alice
teams:
  - team_id: t1
    budget_duration: 30 days
    max_budgt: 10
    members_with_roles:
      - user_id: mallory
        role: owner
virtual_keys:
  - api_key: sk-a-plain-test-secret-123
    team_id: no-such-team
"#;

#[test]
fn a_file_with_five_errors_is_refused_at_start_with_all_five() {
    let dir = TempDir::new();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, FIVE_ERRORS).unwrap();
    let expected = [
        "teams[0].max_budgt: unknown field",
        "teams[0].budget_duration: invalid duration \"30 days\"",
        "teams[0].members_with_roles[0].role: \"owner\" is not a team role",
        "teams[0].members_with_roles[0].user_id: no user \"mallory\" is declared in this file",
        "virtual_keys[0].team_id: no team \"no-such-team\" is declared in this file",
    ];
    let out = Command::new(ferryman_bin())
        .args(["serve", "--port", "0", "--config"])
        .arg(&file)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for e in expected {
        assert!(stderr.contains(e), "missing {e:?} in:\n{stderr}");
    }
    assert!(stderr.contains("the configuration has 5 problem(s); nothing was started"), "{stderr}");
    assert!(!dir.path().join("never-created.db").exists());
    let (ok, stdout, _) = cli(&["config", "check", file.to_str().unwrap()], &[]);
    assert!(!ok);
    assert_eq!(stdout.lines().filter(|l| l.starts_with("error: ")).count(), 5, "{stdout}");
    for e in expected {
        assert!(stdout.contains(&format!("error: {e}")), "missing {e:?} in:\n{stdout}");
    }
    assert!(stdout.contains("warning: virtual_keys[0].api_key: line 15: a plain secret"), "{stdout}");
}

/// `config_prune: false` keeps (and reports) what the file dropped; `config_managed_fields:
/// advisory` lets the API change a declared team until the next apply puts the file back; a
/// declared id that an API-made resource already has is refused, changing nothing.
#[tokio::test]
async fn prune_off_advisory_fields_and_api_made_conflicts() {
    let file = |teams: &str| {
        let general = "  database_url: \"{database_url}\"\n";
        models("").replace(general, &format!("{general}  config_prune: false\n  config_managed_fields: advisory\n"))
            + "teams:\n"
            + teams
    };
    let two = "  - team_id: blue\n    max_budget: 10\n  - team_id: green\n    max_budget: 20\n";
    let gw = Gateway::start(Options { backend: Backend::Sqlite, config: file(two), env: vec![] }).await;
    let apply = || cli(&["config", "apply", "--url", &gw.url], &[("FERRYMAN_MASTER_KEY", MASTER_KEY)]);

    let (status, _, body) =
        gw.http().post("/team/update", MASTER_KEY, json!({"team_id": "blue", "max_budget": 11})).await;
    assert_eq!(status, 200, "advisory: the API may change a declared team: {body}");
    assert_eq!(team_info(&gw, "blue").await["team_info"]["max_budget"], json!(11.0));

    write_config(&gw, &file("  - team_id: blue\n    max_budget: 10\n"));
    let (ok, stdout, stderr) = apply();
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "~ team blue: max_budget 11 → 10",
            "team green is no longer in the file; kept (config_prune: false)",
            "reloaded: 2 model name(s)"
        ]
    );
    assert_eq!(team_info(&gw, "blue").await["team_info"]["max_budget"], json!(10.0));
    assert_eq!(team_info(&gw, "green").await["team_id"], "green");

    let (status, _, body) = gw.http().post("/team/new", MASTER_KEY, json!({"team_id": "red", "max_budget": 1})).await;
    assert_eq!(status, 200, "{body}");
    write_config(&gw, &file("  - team_id: blue\n    max_budget: 12\n  - team_id: red\n    max_budget: 99\n"));
    let (ok, _, stderr) = apply();
    assert!(!ok);
    assert!(stderr.contains("team \"red\" already exists and was made through the API"), "{stderr}");
    assert_eq!(team_info(&gw, "blue").await["team_info"]["max_budget"], json!(10.0), "nothing was applied");
    assert_eq!(team_info(&gw, "red").await["team_info"]["max_budget"], json!(1.0));
    assert!(team_info(&gw, "red").await["team_info"].get("managed_by").is_none());
    gw.terminate().await;
}

/// Two declared keys may trade their aliases and secrets in one apply: unique columns are let
/// go before they are taken.
#[tokio::test]
async fn declared_keys_may_trade_aliases_and_secrets() {
    let (s1, s2) = ("sk-first-secret-0123456789", "sk-second-secret-0123456789");
    let keys = |a: &str, b: &str| {
        format!(
            "virtual_keys:\n  - {{api_key: \"sha256:{}\", key_id: k1, key_alias: {a}}}\n  - {{api_key: \"sha256:{}\", key_id: k2, key_alias: {b}}}\n",
            sha256_hex(if a == "one" { s1 } else { s2 }),
            sha256_hex(if a == "one" { s2 } else { s1 }),
        )
    };
    let gw =
        Gateway::start(Options { backend: Backend::Sqlite, config: models("") + &keys("one", "two"), env: vec![] })
            .await;
    let key_of = |secret: &'static str| {
        let http = gw.http();
        async move {
            let (status, _, body) = http.get(&format!("/key/info?key={secret}"), MASTER_KEY).await;
            assert_eq!(status, 200, "{body}");
            format!("{} {}", body["key"].as_str().unwrap(), body["info"]["key_alias"].as_str().unwrap())
        }
    };
    assert_eq!(key_of(s1).await, "k1 one");
    write_config(&gw, &(models("") + &keys("two", "one")));
    let (ok, stdout, stderr) = cli(&["config", "apply", "--url", &gw.url], &[("FERRYMAN_MASTER_KEY", MASTER_KEY)]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("~ key ")).count(), 2, "{stdout}");
    assert_eq!(key_of(s1).await, "k2 one", "the first secret and its alias moved to k2");
    assert_eq!(key_of(s2).await, "k1 two");
    assert_eq!(chat(&gw, s1, "demo").await.0, 200);
    gw.terminate().await;
}

/// With Redis, one `config apply` through one instance reaches every instance: the others drop
/// the removed key at once and serve the new model list from their own copy of the file.
#[tokio::test]
async fn a_reload_through_one_instance_reaches_every_instance() {
    let redis = std::env::var("FERRYMAN_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let general = "  database_url: \"{database_url}\"\n";
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let file = models("").replace(general, &format!("{general}  redis_url: {redis}\n  redis_key_prefix: {prefix}\n"))
        + "teams:\n  - team_id: t1\nvirtual_keys:\n  - api_key: os.environ/MARKETING_KEY\n    team_id: t1\n";
    let env = vec![("MARKETING_KEY".to_owned(), MARKETING_KEY.to_owned())];
    let a = Gateway::start(Options { backend: Backend::Postgres, config: file.clone(), env }).await;
    let b = a.another_instance().await;
    assert_eq!(chat(&b, MARKETING_KEY, "demo").await.0, 200);
    assert_eq!(chat(&b, MARKETING_KEY, "demo-2").await.0, 404);

    let second = file.replace("virtual_keys:\n  - api_key: os.environ/MARKETING_KEY\n    team_id: t1\n", "").replace(
        "general_settings:",
        "  - model_name: demo-2\n    litellm_params:\n      model: mock/demo-2\n      input_cost_per_token: 0.0000001\n      output_cost_per_token: 0.0000002\ngeneral_settings:",
    );
    write_config(&a, &second);
    let (ok, stdout, stderr) = cli(&["config", "apply", "--url", &a.url], &[("FERRYMAN_MASTER_KEY", MASTER_KEY)]);
    assert!(ok, "{stderr}");
    let key_id = format!("config-{}", &sha256_hex(MARKETING_KEY)[..16]);
    assert!(stdout.contains(&format!("- key {key_id}")), "{stdout}");

    b.log_count_reaches("models reloaded: another instance reloaded its configuration", 1).await;
    assert_eq!(chat(&b, MARKETING_KEY, "demo").await.0, 401, "the removed key is refused on the other instance");
    let (status, _, body) = b
        .http()
        .post(
            "/v1/chat/completions",
            MASTER_KEY,
            json!({"model": "demo-2", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "the other instance serves the new model: {body}");
    b.terminate().await;
    a.terminate().await;
}
