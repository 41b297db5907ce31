//! MCP management over gRPC, on SQLite and PostgreSQL: `McpServerService` registers, reads,
//! changes and removes servers as `/v1/mcp/server` does (credentials stored, never shown or
//! audited; config.yaml's servers refused), the change reaches `/mcp` at once, and
//! `object_permission` on keys, teams and organizations keeps "unset" (no restriction) apart
//! from "empty" (nothing). No MCP upstream runs: registration connects lazily.

use ferryman_proto::v1 as pb;
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, standard_config};
use prost_types::value::Kind;
use prost_types::{FieldMask, Struct};
use tonic_types::StatusExt;

const TOKEN: &str = "dyn-secret-token-5b1f";
const ROTATED: &str = "rotated-secret-token-9c2e";
const ENV_SECRET: &str = "env-secret-value-77a0";
const OAUTH_SECRET: &str = "oauth-client-secret-41d3";

fn authed<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

/// A `Struct` from JSON, as a gRPC client in any language would build it.
fn settings(v: serde_json::Value) -> Option<Struct> {
    fn value(v: &serde_json::Value) -> prost_types::Value {
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(*b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
            serde_json::Value::String(s) => Kind::StringValue(s.clone()),
            serde_json::Value::Array(a) => {
                Kind::ListValue(prost_types::ListValue { values: a.iter().map(value).collect() })
            }
            serde_json::Value::Object(o) => {
                Kind::StructValue(Struct { fields: o.iter().map(|(k, v)| (k.clone(), value(v))).collect() })
            }
        };
        prost_types::Value { kind: Some(kind) }
    }
    match value(&v).kind {
        Some(Kind::StructValue(s)) => Some(s),
        _ => panic!("settings must be an object"),
    }
}

fn list(values: &[&str]) -> Option<pb::StringList> {
    Some(pb::StringList { values: values.iter().map(|s| s.to_string()).collect() })
}

fn field_of(err: &tonic::Status) -> String {
    err.get_error_details().bad_request().expect("field violations").field_violations[0].field.clone()
}

fn reason_of(err: &tonic::Status) -> String {
    err.get_error_details().error_info().expect("error info").reason.clone()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [TOKEN, ROTATED, ENV_SECRET, OAUTH_SECRET] {
        assert!(!text.contains(secret), "{what} shows a credential ({secret}):\n{text}");
    }
}

fn config() -> String {
    let mut cfg = standard_config(None);
    cfg.push_str("mcp_servers:\n  legacy:\n    url: http://127.0.0.1:9/mcp\n    access_groups: [dev]\n");
    cfg
}

async fn mcp_servers_over_grpc(backend: Backend) {
    let gw = Gateway::start(Options { backend, config: config(), env: vec![] }).await;
    let ch = gw.channel().await;
    let mut servers = pb::mcp_server_service_client::McpServerServiceClient::new(ch.clone());
    let mut keys = pb::key_service_client::KeyServiceClient::new(ch.clone());
    let mut audit = pb::audit_service_client::AuditServiceClient::new(ch.clone());
    let m = MASTER_KEY;
    let mut shown = String::new();

    // A key that may use every server, and one that may use none.
    let mint = |op: Option<pb::ObjectPermission>| pb::CreateKeyRequest {
        key: Some(pb::Key { object_permission: op, ..Default::default() }),
        duration: None,
    };
    let any_key = keys.create_key(authed(m, mint(None))).await.unwrap().into_inner().secret;
    let no_mcp_key = keys
        .create_key(authed(m, mint(Some(pb::ObjectPermission { mcp_servers: list(&[]), ..Default::default() }))))
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert_eq!(gw.mcp_initialize("dyn", &any_key).await, 404, "no server is named dyn yet");

    // Create: settings in config.yaml's shape, credentials write-only.
    let created = servers
        .create_mcp_server(authed(
            m,
            pb::CreateMcpServerRequest {
                server_name: "dyn".into(),
                settings: settings(serde_json::json!({
                    "url": "http://127.0.0.1:9/mcp",
                    "auth_type": "bearer_token",
                    "authentication_token": TOKEN,
                    "description": "registered over gRPC",
                    "allowed_tools": ["search", "get_issue"],
                    "access_groups": ["dev"],
                    "timeout": 12.5,
                })),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    shown.push_str(&format!("{created:?}"));
    let s = created.mcp_server.unwrap();
    assert_eq!(s.server_name, "dyn");
    assert_eq!(s.source(), pb::McpServerSource::Api);
    assert_eq!(s.transport(), pb::McpTransport::Http);
    assert_eq!(s.auth_type(), pb::McpAuthType::BearerToken);
    assert_eq!(s.url.as_deref(), Some("http://127.0.0.1:9/mcp"));
    assert_eq!(s.description.as_deref(), Some("registered over gRPC"));
    assert_eq!(s.allowed_tools, ["search", "get_issue"]);
    assert_eq!(s.access_groups, ["dev"]);
    assert_eq!(s.timeout, Some(prost_types::Duration { seconds: 12, nanos: 500_000_000 }));
    assert!(s.healthy);
    assert_eq!(s.etag, "1");
    assert!(s.create_time.is_some() && s.update_time.is_some());

    // A stdio server: its environment is shown by name only.
    let tools = servers
        .create_mcp_server(authed(
            m,
            pb::CreateMcpServerRequest {
                server_name: "tools".into(),
                settings: settings(serde_json::json!({
                    "transport": "stdio",
                    "command": "uvx",
                    "args": ["mcp-server-time"],
                    "env": {"API_TOKEN": ENV_SECRET},
                })),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    shown.push_str(&format!("{tools:?}"));
    let t = tools.mcp_server.unwrap();
    assert_eq!(
        (t.transport(), t.command.as_deref(), t.args.as_slice()),
        (pb::McpTransport::Stdio, Some("uvx"), &["mcp-server-time".to_owned()][..])
    );
    assert_eq!(t.env_keys, ["API_TOKEN"]);
    assert_eq!(t.auth_type(), pb::McpAuthType::None);

    // The change reaches /mcp at once, governed by the keys' object_permission.
    assert_eq!(gw.mcp_initialize("dyn", &any_key).await, 200);
    assert_eq!(gw.mcp_initialize("dyn", &no_mcp_key).await, 403, "object_permission mcp_servers: [] allows nothing");

    // Get, and list a page at a time in name order: config.yaml's server too.
    let got = servers
        .get_mcp_server(authed(m, pb::GetMcpServerRequest { server_name: "dyn".into() }))
        .await
        .unwrap()
        .into_inner();
    shown.push_str(&format!("{got:?}"));
    assert_eq!(got.mcp_server.unwrap().etag, "1");
    let legacy = servers
        .get_mcp_server(authed(m, pb::GetMcpServerRequest { server_name: "legacy".into() }))
        .await
        .unwrap()
        .into_inner()
        .mcp_server
        .unwrap();
    assert_eq!((legacy.source(), legacy.etag.as_str()), (pb::McpServerSource::Config, ""));
    let (mut names, mut token) = (Vec::new(), String::new());
    loop {
        let page = servers
            .list_mcp_servers(authed(m, pb::ListMcpServersRequest { page_size: 2, page_token: token }))
            .await
            .unwrap()
            .into_inner();
        shown.push_str(&format!("{page:?}"));
        assert!(page.mcp_servers.len() <= 2);
        names.extend(page.mcp_servers.iter().map(|s| (s.server_name.clone(), s.source())));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        names,
        [
            ("dyn".to_owned(), pb::McpServerSource::Api),
            ("legacy".to_owned(), pb::McpServerSource::Config),
            ("tools".to_owned(), pb::McpServerSource::Api),
        ]
    );

    // Update only the masked settings: rotate the credential, narrow the tools, and remove the
    // description (masked, left out of settings).
    let updated = servers
        .update_mcp_server(authed(
            m,
            pb::UpdateMcpServerRequest {
                server_name: "dyn".into(),
                settings: settings(serde_json::json!({
                    "authentication_token": ROTATED,
                    "allowed_tools": ["search"],
                    "url": "http://ignored.invalid/mcp",
                })),
                update_mask: mask(&["authentication_token", "allowed_tools", "description"]),
                etag: "1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    shown.push_str(&format!("{updated:?}"));
    let u = updated.mcp_server.unwrap();
    assert_eq!(u.allowed_tools, ["search"]);
    assert_eq!(u.description, None);
    assert_eq!(u.url.as_deref(), Some("http://127.0.0.1:9/mcp"), "an unmasked setting is kept");
    assert_eq!((u.auth_type(), u.etag.as_str()), (pb::McpAuthType::BearerToken, "2"));
    // A stale etag, a mask naming no setting, and no mask are refused.
    let stale = pb::UpdateMcpServerRequest {
        server_name: "dyn".into(),
        settings: settings(serde_json::json!({"timeout": 5})),
        update_mask: mask(&["timeout"]),
        etag: "1".into(),
    };
    let err = servers.update_mcp_server(authed(m, stale.clone())).await.unwrap_err();
    assert_eq!((err.code(), reason_of(&err).as_str()), (tonic::Code::AlreadyExists, "ETAG_MISMATCH"));
    let err = servers
        .update_mcp_server(authed(m, pb::UpdateMcpServerRequest { update_mask: mask(&["colour"]), ..stale.clone() }))
        .await
        .unwrap_err();
    assert_eq!((err.code(), field_of(&err).as_str()), (tonic::Code::InvalidArgument, "update_mask"));
    let err = servers
        .update_mcp_server(authed(m, pb::UpdateMcpServerRequest { update_mask: None, ..stale.clone() }))
        .await
        .unwrap_err();
    assert_eq!((err.code(), field_of(&err).as_str()), (tonic::Code::InvalidArgument, "update_mask"));

    // OAuth 2: the client secret is as write-only as a token.
    let oauth = servers
        .update_mcp_server(authed(
            m,
            pb::UpdateMcpServerRequest {
                server_name: "dyn".into(),
                settings: settings(serde_json::json!({
                    "auth_type": "oauth2",
                    "token_url": "http://127.0.0.1:9/token",
                    "client_id": "ferryman",
                    "client_secret": OAUTH_SECRET,
                })),
                update_mask: mask(&["auth_type", "token_url", "client_id", "client_secret", "authentication_token"]),
                etag: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    shown.push_str(&format!("{oauth:?}"));
    assert_eq!(oauth.mcp_server.unwrap().auth_type(), pb::McpAuthType::Oauth2);

    // Invalid settings: INVALID_ARGUMENT naming the field; nothing is written.
    let bad = |name: &str, v: serde_json::Value| pb::CreateMcpServerRequest {
        server_name: name.into(),
        settings: settings(v),
    };
    let err = servers
        .create_mcp_server(authed(m, bad("bad", serde_json::json!({"transport": "carrier-pigeon"}))))
        .await
        .unwrap_err();
    assert_eq!((err.code(), field_of(&err).as_str()), (tonic::Code::InvalidArgument, "settings.transport"));
    assert!(err.message().contains("transport"), "{}", err.message());
    let err = servers
        .create_mcp_server(authed(m, bad("bad", serde_json::json!({"url": "ftp://example.com"}))))
        .await
        .unwrap_err();
    assert_eq!((err.code(), field_of(&err).as_str()), (tonic::Code::InvalidArgument, "settings.url"));
    let err = servers
        .create_mcp_server(authed(m, bad("bad", serde_json::json!({"url": "http://x.test", "colour": "blue"}))))
        .await
        .unwrap_err();
    assert_eq!((err.code(), field_of(&err).as_str()), (tonic::Code::InvalidArgument, "settings.colour"));
    let err = servers
        .create_mcp_server(authed(m, bad("no spaces", serde_json::json!({"url": "http://x.test"}))))
        .await
        .unwrap_err();
    assert_eq!((err.code(), field_of(&err).as_str()), (tonic::Code::InvalidArgument, "server_name"));
    let err =
        servers.get_mcp_server(authed(m, pb::GetMcpServerRequest { server_name: "bad".into() })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "a refused server is not half-written");

    // config.yaml's server: not registered over it, not changed, not removed.
    let err = servers
        .create_mcp_server(authed(m, bad("legacy", serde_json::json!({"url": "http://x.test"}))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let err = servers
        .update_mcp_server(authed(
            m,
            pb::UpdateMcpServerRequest { server_name: "legacy".into(), etag: String::new(), ..stale.clone() },
        ))
        .await
        .unwrap_err();
    assert_eq!((err.code(), reason_of(&err).as_str()), (tonic::Code::PermissionDenied, "CONFIG_MANAGED"));
    let err = servers
        .delete_mcp_server(authed(m, pb::DeleteMcpServerRequest { server_name: "legacy".into() }))
        .await
        .unwrap_err();
    assert_eq!((err.code(), reason_of(&err).as_str()), (tonic::Code::PermissionDenied, "CONFIG_MANAGED"));

    // Only proxy admins write; keys that are not admins or viewers do not read either.
    let err = servers
        .create_mcp_server(authed(&any_key, bad("mine", serde_json::json!({"url": "http://x.test"}))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = servers
        .update_mcp_server(authed(&any_key, pb::UpdateMcpServerRequest { etag: String::new(), ..stale.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = servers
        .delete_mcp_server(authed(&any_key, pb::DeleteMcpServerRequest { server_name: "dyn".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = servers.list_mcp_servers(authed(&any_key, pb::ListMcpServersRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // Delete: gone from the API and from /mcp.
    servers.delete_mcp_server(authed(m, pb::DeleteMcpServerRequest { server_name: "dyn".into() })).await.unwrap();
    let err =
        servers.get_mcp_server(authed(m, pb::GetMcpServerRequest { server_name: "dyn".into() })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(gw.mcp_initialize("dyn", &any_key).await, 404);

    // No response showed a credential, and neither does the audit log, which has every change.
    assert_no_secret("a response", &shown);
    let entries = audit
        .list_audit_entries(authed(
            m,
            pb::ListAuditEntriesRequest { object_type: Some("mcp_server".into()), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actions: Vec<(&str, &str)> = entries.iter().map(|e| (e.object_id.as_str(), e.action.as_str())).collect();
    for want in [("dyn", "created"), ("tools", "created"), ("dyn", "updated"), ("dyn", "deleted")] {
        assert!(actions.contains(&want), "{want:?} not audited: {actions:?}");
    }
    assert_eq!(actions.iter().filter(|(id, a)| *id == "dyn" && *a == "updated").count(), 2);
    let audited = format!("{entries:?}");
    assert_no_secret("the audit log", &audited);
    assert!(audited.contains("API_TOKEN"), "the env's names are audited");
}

async fn object_permission_over_grpc(backend: Backend) {
    let gw = Gateway::start(Options { backend, config: config(), env: vec![] }).await;
    let ch = gw.channel().await;
    let mut keys = pb::key_service_client::KeyServiceClient::new(ch.clone());
    let mut teams = pb::team_service_client::TeamServiceClient::new(ch.clone());
    let mut orgs = pb::organization_service_client::OrganizationServiceClient::new(ch.clone());
    let m = MASTER_KEY;
    let tool_perms = |server: &str, tools: &[&str]| {
        Some(pb::McpToolPermissions { servers: [(server.to_owned(), list(tools).unwrap())].into() })
    };

    // Organization: created with "no access group" (empty) and nothing else (unset).
    let org = orgs
        .create_organization(authed(
            m,
            pb::CreateOrganizationRequest {
                organization: Some(pb::Organization {
                    organization_id: "acme".into(),
                    organization_alias: "Acme".into(),
                    object_permission: Some(pb::ObjectPermission {
                        mcp_access_groups: list(&[]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    let op = org.object_permission.unwrap();
    assert_eq!(op.mcp_access_groups, list(&[]), "empty stays empty");
    assert_eq!((op.mcp_servers, op.mcp_tool_permissions), (None, None), "unset stays unset");
    // Update one field: the others are kept.
    let org = orgs
        .update_organization(authed(
            m,
            pb::UpdateOrganizationRequest {
                organization: Some(pb::Organization {
                    organization_id: "acme".into(),
                    object_permission: Some(pb::ObjectPermission {
                        mcp_servers: list(&["legacy"]),
                        mcp_access_groups: list(&["ignored: not masked"]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: mask(&["object_permission.mcp_servers"]),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    let op = org.object_permission.unwrap();
    assert_eq!((op.mcp_servers, op.mcp_access_groups, op.mcp_tool_permissions), (list(&["legacy"]), list(&[]), None));
    let got = orgs
        .get_organization(authed(m, pb::GetOrganizationRequest { organization_id: "acme".into() }))
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(got.object_permission.unwrap().mcp_servers, list(&["legacy"]));

    // Team: created with servers and tools; `object_permission` masks all three fields.
    let team = teams
        .create_team(authed(
            m,
            pb::CreateTeamRequest {
                team: Some(pb::Team {
                    team_id: "search".into(),
                    organization_id: Some("acme".into()),
                    object_permission: Some(pb::ObjectPermission {
                        mcp_servers: list(&["legacy", "other"]),
                        mcp_tool_permissions: tool_perms("legacy", &["search"]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                members: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap();
    let op = team.object_permission.unwrap();
    assert_eq!(op.mcp_servers, list(&["legacy", "other"]));
    assert_eq!(op.mcp_access_groups, None);
    assert_eq!(op.mcp_tool_permissions, tool_perms("legacy", &["search"]));
    let team = teams
        .update_team(authed(
            m,
            pb::UpdateTeamRequest {
                team: Some(pb::Team {
                    team_id: "search".into(),
                    object_permission: Some(pb::ObjectPermission {
                        mcp_access_groups: list(&[]),
                        ..Default::default()
                    }),
                    limits: Some(pb::Limits { mcp_rpm_limit: [("legacy".to_owned(), 7)].into(), ..Default::default() }),
                    ..Default::default()
                }),
                update_mask: mask(&["object_permission", "limits.mcp_rpm_limit"]),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap();
    let op = team.object_permission.unwrap();
    assert_eq!((op.mcp_servers, op.mcp_access_groups, op.mcp_tool_permissions), (None, list(&[]), None));
    assert_eq!(team.limits.unwrap().mcp_rpm_limit["legacy"], 7);
    // A bad server name names the entry.
    let err = teams
        .update_team(authed(
            m,
            pb::UpdateTeamRequest {
                team: Some(pb::Team {
                    team_id: "search".into(),
                    object_permission: Some(pb::ObjectPermission {
                        mcp_servers: list(&["no spaces"]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: mask(&["object_permission.mcp_servers"]),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), field_of(&err).as_str()),
        (tonic::Code::InvalidArgument, "object_permission.mcp_servers[0]")
    );
    let err = teams
        .update_team(authed(
            m,
            pb::UpdateTeamRequest {
                team: Some(pb::Team { team_id: "search".into(), ..Default::default() }),
                update_mask: mask(&["object_permission.mcp_nonsense"]),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!((err.code(), field_of(&err).as_str()), (tonic::Code::InvalidArgument, "update_mask"));

    // Key: empty servers, unset groups, tools on one server.
    let created = keys
        .create_key(authed(
            m,
            pb::CreateKeyRequest {
                key: Some(pb::Key {
                    object_permission: Some(pb::ObjectPermission {
                        mcp_servers: list(&[]),
                        mcp_tool_permissions: tool_perms("legacy", &["legacy-search"]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                duration: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let key = created.key.unwrap();
    let op = key.object_permission.clone().unwrap();
    assert_eq!((op.mcp_servers, op.mcp_access_groups), (list(&[]), None));
    assert_eq!(op.mcp_tool_permissions, tool_perms("legacy", &["legacy-search"]));
    assert_eq!(gw.mcp_initialize("legacy", &created.secret).await, 403, "mcp_servers: [] on the key");
    // Unset servers (masked, left unset), set groups: now the key may use the dev group.
    let update = |op: Option<pb::ObjectPermission>, paths: &[&str]| pb::UpdateKeyRequest {
        key: Some(pb::Key { key_id: key.key_id.clone(), object_permission: op, ..Default::default() }),
        update_mask: mask(paths),
    };
    let k = keys
        .update_key(authed(
            m,
            update(
                Some(pb::ObjectPermission { mcp_access_groups: list(&["dev"]), ..Default::default() }),
                &["object_permission.mcp_servers", "object_permission.mcp_access_groups"],
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let op = k.object_permission.unwrap();
    assert_eq!((op.mcp_servers, op.mcp_access_groups), (None, list(&["dev"])));
    assert_eq!(op.mcp_tool_permissions, tool_perms("legacy", &["legacy-search"]), "unmasked: kept");
    assert_eq!(gw.mcp_initialize("legacy", &created.secret).await, 200, "legacy is in the dev group");
    let got = keys.get_key(authed(m, pb::GetKeyRequest { key_id: key.key_id.clone() })).await.unwrap().into_inner();
    assert_eq!(got.key.unwrap().object_permission.unwrap().mcp_access_groups, list(&["dev"]));
    // Masking the whole object with none given unsets everything.
    let k = keys.update_key(authed(m, update(None, &["object_permission"]))).await.unwrap().into_inner().key.unwrap();
    assert_eq!(k.object_permission.unwrap(), pb::ObjectPermission::default());
    // A bad server name, on create and on update.
    let bad = Some(pb::ObjectPermission { mcp_servers: list(&["no spaces allowed"]), ..Default::default() });
    let err = keys
        .create_key(authed(
            m,
            pb::CreateKeyRequest {
                key: Some(pb::Key { object_permission: bad.clone(), ..Default::default() }),
                duration: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), field_of(&err).as_str()),
        (tonic::Code::InvalidArgument, "object_permission.mcp_servers[0]")
    );
    assert!(err.message().contains("object_permission.mcp_servers[0]"), "{}", err.message());
    let err = keys.update_key(authed(m, update(bad, &["object_permission"]))).await.unwrap_err();
    assert_eq!(
        (err.code(), field_of(&err).as_str()),
        (tonic::Code::InvalidArgument, "object_permission.mcp_servers[0]")
    );
}

#[tokio::test]
async fn mcp_servers_over_grpc_on_sqlite() {
    mcp_servers_over_grpc(Backend::Sqlite).await;
}

#[tokio::test]
async fn mcp_servers_over_grpc_on_postgres() {
    mcp_servers_over_grpc(Backend::Postgres).await;
}

#[tokio::test]
async fn object_permission_over_grpc_on_sqlite() {
    object_permission_over_grpc(Backend::Sqlite).await;
}

#[tokio::test]
async fn object_permission_over_grpc_on_postgres() {
    object_permission_over_grpc(Backend::Postgres).await;
}
