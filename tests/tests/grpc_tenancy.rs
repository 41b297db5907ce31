//! The tenancy services over gRPC, on SQLite and PostgreSQL: the same operations as the
//! LiteLLM routes, with field masks, etags, members, and the audit log.

use ferryman_proto::v1 as pb;
use ferryman_tests::{Backend, Gateway, MASTER_KEY, Options, standard_config};
use prost_types::FieldMask;
use tonic_types::StatusExt;

fn authed<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

async fn tenancy_over_grpc(backend: Backend) {
    let gw = Gateway::start(Options { backend, config: standard_config(None), env: vec![] }).await;
    let ch = gw.channel().await;
    let mut orgs = pb::organization_service_client::OrganizationServiceClient::new(ch.clone());
    let mut teams = pb::team_service_client::TeamServiceClient::new(ch.clone());
    let mut users = pb::user_service_client::UserServiceClient::new(ch.clone());
    let mut customers = pb::customer_service_client::CustomerServiceClient::new(ch.clone());
    let mut budgets = pb::budget_service_client::BudgetServiceClient::new(ch.clone());
    let mut keys = pb::key_service_client::KeyServiceClient::new(ch.clone());
    let mut audit = pb::audit_service_client::AuditServiceClient::new(ch.clone());
    let m = MASTER_KEY;

    let org = orgs
        .create_organization(authed(
            m,
            pb::CreateOrganizationRequest {
                organization: Some(pb::Organization {
                    organization_id: "acme".into(),
                    organization_alias: "Acme".into(),
                    limits: Some(pb::Limits { max_budget_nanos: Some(1_000_000_000_000), ..Default::default() }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(org.limits.unwrap().max_budget_nanos, Some(1_000_000_000_000));

    let created = users
        .create_user(authed(
            m,
            pb::CreateUserRequest {
                user: Some(pb::User { user_id: "ann".into(), user_role: "internal_user".into(), ..Default::default() }),
                create_key: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.key_secret.starts_with("sk-"));
    let ann_key = created.key_secret;

    let team = teams
        .create_team(authed(
            m,
            pb::CreateTeamRequest {
                team: Some(pb::Team {
                    team_id: "search".into(),
                    organization_id: Some("acme".into()),
                    limits: Some(pb::Limits {
                        max_budget_nanos: Some(5_000_000_000),
                        budget_duration: Some("30d".into()),
                        model_max_budget: [(
                            "demo".to_string(),
                            pb::ModelBudget { budget_limit_nanos: 1_000_000_000, time_period: Some("1d".into()) },
                        )]
                        .into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                members: vec![pb::Member {
                    user_id: "ann".into(),
                    role: "admin".into(),
                    max_budget_in_team_nanos: Some(2_000_000_000),
                    ..Default::default()
                }],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap();
    assert_eq!(team.etag, "1");
    let got = teams.get_team(authed(m, pb::GetTeamRequest { team_id: "search".into() })).await.unwrap().into_inner();
    assert_eq!(got.members[0].max_budget_in_team_nanos, Some(2_000_000_000));
    assert_eq!(got.team.unwrap().limits.unwrap().model_max_budget["demo"].budget_limit_nanos, 1_000_000_000);

    // Update only what the mask names; the rest stays.
    let updated = teams
        .update_team(authed(
            m,
            pb::UpdateTeamRequest {
                team: Some(pb::Team {
                    team_id: "search".into(),
                    team_alias: Some("Search".into()),
                    etag: "1".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["team_alias"]),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap();
    assert_eq!(updated.team_alias.as_deref(), Some("Search"));
    assert_eq!(updated.limits.as_ref().unwrap().max_budget_nanos, Some(5_000_000_000), "unmasked fields are kept");
    // A masked optional left unset is cleared.
    let cleared = teams
        .update_team(authed(
            m,
            pb::UpdateTeamRequest {
                team: Some(pb::Team { team_id: "search".into(), ..Default::default() }),
                update_mask: mask(&["limits.max_budget_nanos"]),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap();
    assert_eq!(cleared.limits.unwrap().max_budget_nanos, None);
    // A stale etag and a bad mask are refused.
    let err = teams
        .update_team(authed(
            m,
            pb::UpdateTeamRequest {
                team: Some(pb::Team { team_id: "search".into(), etag: "1".into(), ..Default::default() }),
                update_mask: mask(&["tags"]),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let err = teams
        .update_team(authed(
            m,
            pb::UpdateTeamRequest {
                team: Some(pb::Team { team_id: "search".into(), ..Default::default() }),
                update_mask: mask(&["spend"]),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.get_error_details().bad_request().unwrap().field_violations[0].field, "update_mask");

    // Keys: a team key, updated, regenerated, blocked.
    let key = keys
        .create_key(authed(
            m,
            pb::CreateKeyRequest {
                key: Some(pb::Key {
                    team_id: Some("search".into()),
                    key_alias: Some("svc".into()),
                    ..Default::default()
                }),
                duration: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let k = key.key.unwrap();
    assert_eq!(k.organization_id.as_deref(), Some("acme"));
    let k2 = keys
        .update_key(authed(
            m,
            pb::UpdateKeyRequest {
                key: Some(pb::Key { key_id: k.key_id.clone(), max_budget_nanos: Some(3), ..Default::default() }),
                update_mask: mask(&["max_budget_nanos"]),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(k2.max_budget_nanos, Some(3));
    assert_eq!(k2.key_alias.as_deref(), Some("svc"));
    let regen = keys
        .regenerate_key(authed(m, pb::RegenerateKeyRequest { key_id: k.key_id.clone(), grace_period: None }))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(regen.secret, key.secret);
    keys.block_key(authed(m, pb::BlockKeyRequest { key_id: k.key_id.clone() })).await.unwrap();
    keys.unblock_key(authed(m, pb::UnblockKeyRequest { key_id: k.key_id.clone() })).await.unwrap();

    // Members, blocking, listing.
    teams
        .update_team_member(authed(
            m,
            pb::UpdateTeamMemberRequest {
                team_id: "search".into(),
                member: Some(pb::Member { user_id: "ann".into(), role: "user".into(), ..Default::default() }),
            },
        ))
        .await
        .unwrap();
    teams.block_team(authed(m, pb::BlockTeamRequest { team_id: "search".into() })).await.unwrap();
    teams.unblock_team(authed(m, pb::UnblockTeamRequest { team_id: "search".into() })).await.unwrap();
    let list = teams
        .list_teams(authed(m, pb::ListTeamsRequest { organization_id: Some("acme".into()), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.teams.len(), 1);
    orgs.add_organization_members(authed(
        m,
        pb::AddOrganizationMembersRequest {
            organization_id: "acme".into(),
            members: vec![pb::Member {
                user_email: "new@acme.test".into(),
                role: "internal_user".into(),
                ..Default::default()
            }],
        },
    ))
    .await
    .unwrap();
    let members = orgs
        .get_organization(authed(m, pb::GetOrganizationRequest { organization_id: "acme".into() }))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), 1);

    // Customers and budgets.
    budgets
        .create_budget(authed(
            m,
            pb::CreateBudgetRequest {
                budget: Some(pb::Budget {
                    budget_id: "tier".into(),
                    limits: Some(pb::Limits { rpm_limit: Some(5), ..Default::default() }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    customers
        .create_customer(authed(
            m,
            pb::CreateCustomerRequest {
                customer: Some(pb::Customer {
                    customer_id: "cust".into(),
                    budget_id: Some("tier".into()),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    let c = customers
        .update_customer(authed(
            m,
            pb::UpdateCustomerRequest {
                customer: Some(pb::Customer {
                    customer_id: "cust".into(),
                    alias: Some("Cust Inc".into()),
                    ..Default::default()
                }),
                update_mask: mask(&["alias"]),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!((c.alias.as_deref(), c.budget_id.as_deref()), (Some("Cust Inc"), Some("tier")));
    let blocked = customers
        .block_customer(authed(m, pb::BlockCustomerRequest { customer_id: "cust".into() }))
        .await
        .unwrap()
        .into_inner();
    assert!(blocked.customer.unwrap().blocked);
    let err = budgets.delete_budget(authed(m, pb::DeleteBudgetRequest { budget_id: "tier".into() })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    customers.delete_customer(authed(m, pb::DeleteCustomerRequest { customer_id: "cust".into() })).await.unwrap();
    budgets.delete_budget(authed(m, pb::DeleteBudgetRequest { budget_id: "tier".into() })).await.unwrap();
    let err =
        customers.get_customer(authed(m, pb::GetCustomerRequest { customer_id: "cust".into() })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Scope: ann (now an ordinary member) may read her team but not change it or read the log.
    let err = teams.block_team(authed(&ann_key, pb::BlockTeamRequest { team_id: "search".into() })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    teams.get_team(authed(&ann_key, pb::GetTeamRequest { team_id: "search".into() })).await.unwrap();
    let err = audit.list_audit_entries(authed(&ann_key, pb::ListAuditEntriesRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // The audit log over gRPC, and its verification.
    let entries = audit
        .list_audit_entries(authed(
            m,
            pb::ListAuditEntriesRequest {
                object_type: Some("team".into()),
                object_id: Some("search".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actions: Vec<&str> = entries.iter().rev().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["created", "updated", "updated", "member_updated", "blocked", "unblocked"]);
    let v = audit.verify_audit_log(authed(m, pb::VerifyAuditLogRequest {})).await.unwrap().into_inner();
    assert!(v.intact, "{v:?}");
    assert!(v.entries_checked >= 15, "{v:?}");

    // Deleting: the organization refuses while its team exists.
    let err = orgs
        .delete_organization(authed(m, pb::DeleteOrganizationRequest { organization_id: "acme".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    teams.delete_team(authed(m, pb::DeleteTeamRequest { team_id: "search".into() })).await.unwrap();
    orgs.delete_organization(authed(m, pb::DeleteOrganizationRequest { organization_id: "acme".into() }))
        .await
        .unwrap();
    users.delete_user(authed(m, pb::DeleteUserRequest { user_id: "ann".into() })).await.unwrap();
    let err = users.get_user(authed(m, pb::GetUserRequest { user_id: "ann".into() })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn tenancy_over_grpc_on_sqlite() {
    tenancy_over_grpc(Backend::Sqlite).await;
}

#[tokio::test]
async fn tenancy_over_grpc_on_postgres() {
    tenancy_over_grpc(Backend::Postgres).await;
}
