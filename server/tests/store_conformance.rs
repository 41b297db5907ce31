//! One conformance suite, run against both store backends: SQLite (a temporary file) and
//! PostgreSQL (a fresh database on the local server).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers report failure by panicking")]

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use ferryman_server::audit::Verdict;
use ferryman_server::pricing::Nanos;
use ferryman_server::store::{
    self, Actor, AuditDraft, AuditQuery, Change, Charge, Membership, MembershipFilter, PageRequest, Row, RowFilter,
    Scope, SpendQuery, SpendRecord, SpendStatus, Store, StoreError, Table,
};
use serde_json::json;
use sqlx::Connection;

struct Db {
    store: Arc<dyn Store>,
    cleanup: Option<String>,
    dir: std::path::PathBuf,
}

fn pg_base() -> String {
    std::env::var("FERRYMAN_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

async fn open(backend: &str) -> Db {
    let dir = std::env::temp_dir().join(format!("ferryman-store-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (url, cleanup) = if backend == "postgres" {
        let name = format!("ferryman_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base())).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
        (format!("{}/{name}", pg_base()), Some(name))
    } else {
        (format!("sqlite://{}", dir.join("t.db").display()), None)
    };
    let store = store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrations are idempotent");
    assert_eq!(store.backend(), backend);
    Db { store, cleanup, dir }
}

impl Db {
    async fn close(self) {
        drop(self.store);
        if let Some(name) = self.cleanup {
            let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base())).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

fn at(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + secs, 123_456_000).unwrap()
}

fn key_row(id: &str, alias: Option<&str>, created_secs: i64) -> Row {
    Row {
        id: id.into(),
        alias: alias.map(Into::into),
        organization_id: Some("org-1".into()),
        team_id: Some("team-1".into()),
        user_id: Some("u1".into()),
        token_hash: Some(format!("hash-{id}")),
        data: json!({"key_id": id, "models": ["demo"], "max_budget": 2_500_000_000i64, "metadata": {"n": 1}}),
        spend: Nanos::ZERO,
        version: 1,
        created_at: at(created_secs),
        updated_at: at(created_secs),
    }
}

fn draft(action: &str, object_id: &str) -> AuditDraft {
    AuditDraft {
        at: at(0),
        actor: Actor { user_id: Some("admin".into()), key_id: Some("k-admin".into()), role: "proxy_admin".into() },
        action: action.into(),
        object_type: "key".into(),
        object_id: object_id.into(),
        before: None,
        after: Some(json!({"key_alias": "x", "max_budget": 1})),
        request_id: Some("req-1".into()),
        source_addr: Some("127.0.0.1:1".into()),
    }
}

fn spend(request_id: &str, key_id: &str, nanos: i64, start_secs: i64, end_user: Option<&str>) -> SpendRecord {
    let start = Utc.timestamp_opt(1_790_000_000 + start_secs, 5_000).unwrap();
    SpendRecord {
        request_id: request_id.into(),
        call_type: "chat_completion".into(),
        key_id: key_id.into(),
        model: "demo".into(),
        deployment: "dep-1".into(),
        provider: "mock".into(),
        prompt_tokens: 10,
        completion_tokens: 5,
        total_tokens: 15,
        spend: Nanos(nanos),
        status: SpendStatus::Success,
        error_code: None,
        start_time: start,
        end_time: start + Duration::milliseconds(250),
        duration_ms: 250,
        end_user: end_user.map(Into::into),
        user_id: Some("u1".into()),
        team_id: Some("team-1".into()),
        organization_id: None,
        tags: vec![],
        charges: vec![],
        cache_hit: false,
        metadata: Some(json!({"mcp_tool_call_metadata": {"name": "echo", "arguments": {"text": "ünïcode"}}})),
    }
}

async fn rows_round_trip(s: &dyn Store) {
    let k = key_row("k1", Some("alpha"), 0);
    s.commit(&[Change::Insert(Table::Keys, k.clone())], &[]).await.unwrap();
    assert_eq!(s.get(Table::Keys, "k1").await.unwrap(), Some(k.clone()), "every column round-trips");
    assert_eq!(s.key_by_hash("hash-k1", at(0)).await.unwrap().map(|m| m.row), Some(k.clone()));
    assert_eq!(s.key_by_hash("nope", at(0)).await.unwrap(), None);
    assert_eq!(s.get(Table::Keys, "nope").await.unwrap(), None);

    // A taken alias is a conflict naming it, and the whole commit writes nothing.
    let mut dup = key_row("k2", Some("alpha"), 1);
    dup.token_hash = Some("hash-k2".into());
    let err = s.commit(&[Change::Insert(Table::Keys, dup)], &[draft("created", "k2")]).await.unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("alpha")), "{err:?}");
    assert_eq!(s.get(Table::Keys, "k2").await.unwrap(), None);
    assert_eq!(s.audit_head().await.unwrap().seq, 0, "no audit entry for a failed commit");

    // Rows without an alias do not conflict with each other.
    for i in 2..7 {
        s.commit(&[Change::Insert(Table::Keys, key_row(&format!("k{i}"), None, i))], &[]).await.unwrap();
    }
    // Newest first, two a page, every row once.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = s.list(Table::Keys, &RowFilter::default(), &PageRequest::new(2, token)).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|k| k.id.clone()));
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, ["k6", "k5", "k4", "k3", "k2", "k1"]);
    let by_alias = s
        .list(Table::Keys, &RowFilter { alias: Some("alpha".into()), ..Default::default() }, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(by_alias.items.len(), 1);
    let by_team = s
        .list(Table::Keys, &RowFilter { team_id: Some("team-1".into()), ..Default::default() }, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(by_team.items.len(), 6);
    assert!(matches!(
        s.list(Table::Keys, &RowFilter::default(), &PageRequest::new(2, Some("zz".into()))).await,
        Err(StoreError::InvalidPageToken)
    ));

    // Updates are optimistic: the stored version must be the one before.
    let mut v2 = k.clone();
    v2.version = 2;
    v2.alias = Some("beta".into());
    s.commit(&[Change::Update(Table::Keys, v2.clone())], &[]).await.unwrap();
    assert_eq!(s.get(Table::Keys, "k1").await.unwrap().unwrap().alias.as_deref(), Some("beta"));
    let stale = s.commit(&[Change::Update(Table::Keys, v2.clone())], &[]).await.unwrap_err();
    assert!(matches!(&stale, StoreError::Conflict(m) if m.contains("changed by someone else")), "{stale:?}");
    let mut ghost = key_row("ghost", None, 9);
    ghost.version = 2;
    assert!(matches!(s.commit(&[Change::Update(Table::Keys, ghost)], &[]).await, Err(StoreError::NotFound(_))));

    // Old secrets in their grace period still find the key; expired ones do not.
    s.commit(&[Change::AddKeyGrace { token_hash: "old-k1".into(), key_id: "k1".into(), revoke_at: at(100) }], &[])
        .await
        .unwrap();
    let old = s.key_by_hash("old-k1", at(50)).await.unwrap().unwrap();
    assert_eq!((old.row.id.as_str(), old.grace_until), ("k1", Some(at(100))));
    assert_eq!(s.key_by_hash("hash-k1", at(50)).await.unwrap().unwrap().grace_until, None);
    assert_eq!(s.key_by_hash("old-k1", at(100)).await.unwrap(), None);

    s.commit(&[Change::Delete(Table::Keys, "k3".into())], &[]).await.unwrap();
    assert!(matches!(s.commit(&[Change::Delete(Table::Keys, "k3".into())], &[]).await, Err(StoreError::NotFound(_))));
}

async fn memberships_round_trip(s: &dyn Store) {
    let m = |scope, scope_id: &str, user: &str, role: &str| Membership {
        scope,
        scope_id: scope_id.into(),
        user_id: user.into(),
        role: role.into(),
        data: json!({"max_budget_in_team": 5}),
        spend: Nanos::ZERO,
        created_at: at(0),
        updated_at: at(0),
    };
    s.commit(
        &[
            Change::PutMembership(m(Scope::Team, "t1", "u1", "admin")),
            Change::PutMembership(m(Scope::Team, "t1", "u2", "user")),
            Change::PutMembership(m(Scope::Org, "o1", "u1", "org_admin")),
        ],
        &[],
    )
    .await
    .unwrap();
    let of_u1 = s.memberships(&MembershipFilter { user_id: Some("u1".into()), ..Default::default() }).await.unwrap();
    assert_eq!(of_u1.len(), 2);
    let team = s
        .memberships(&MembershipFilter { scope: Some(Scope::Team), scope_id: Some("t1".into()), user_id: None })
        .await
        .unwrap();
    assert_eq!(team, vec![m(Scope::Team, "t1", "u1", "admin"), m(Scope::Team, "t1", "u2", "user")]);
    // Put replaces the role.
    s.commit(&[Change::PutMembership(m(Scope::Team, "t1", "u2", "admin"))], &[]).await.unwrap();
    let u2 = s.memberships(&MembershipFilter { user_id: Some("u2".into()), ..Default::default() }).await.unwrap();
    assert_eq!(u2[0].role, "admin");
    assert!(matches!(
        s.commit(&[Change::DeleteMembership { scope: Scope::Team, scope_id: "t1".into(), user_id: "zz".into() }], &[])
            .await,
        Err(StoreError::NotFound(_))
    ));
    s.commit(&[Change::DeleteMembershipsOfScope { scope: Scope::Team, scope_id: "t1".into() }], &[]).await.unwrap();
    s.commit(&[Change::DeleteMembershipsOfUser("u1".into())], &[]).await.unwrap();
    assert!(s.memberships(&MembershipFilter::default()).await.unwrap().is_empty());
}

async fn audit_is_a_verifiable_chain(s: &dyn Store) {
    let entries = s.commit(&[], &[draft("created", "a"), draft("updated", "a")]).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(entries[1].prev_hash, entries[0].hash);
    s.commit(&[], &[draft("deleted", "a")]).await.unwrap();
    assert_eq!(ferryman_server::audit::verify(s).await.unwrap(), Verdict::Intact { entries: 3 });
    let page = s
        .list_audit(&AuditQuery { action: Some("updated".into()), ..Default::default() }, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].draft, draft("updated", "a"), "every field round-trips");
    let all = s.list_audit(&AuditQuery::default(), &PageRequest::new(2, None)).await.unwrap();
    assert_eq!(all.items.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2]);
    let rest = s.list_audit(&AuditQuery::default(), &PageRequest::new(2, all.next_token)).await.unwrap();
    assert_eq!(rest.items.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
}

async fn spend_is_exact_and_idempotent(s: &dyn Store) {
    let mut payer = key_row("payer", None, 0);
    payer.token_hash = Some("hash-payer".into());
    s.commit(&[Change::Insert(Table::Keys, payer)], &[]).await.unwrap();
    let batch: Vec<_> = (0..10).map(|i| spend(&format!("r{i}"), "payer", 1_000_000_007 + i, i, Some("cust"))).collect();
    assert_eq!(s.insert_spend(&batch).await.unwrap(), 10);
    // Replaying the same records (a retry after a lost acknowledgement) counts nothing twice.
    assert_eq!(s.insert_spend(&batch[5..]).await.unwrap(), 0);
    let expected: i64 = (0..10).map(|i| 1_000_000_007 + i).sum();
    assert_eq!(s.get(Table::Keys, "payer").await.unwrap().unwrap().spend, Nanos(expected));

    // Records of the master key (no key row) are stored too.
    s.insert_spend(&[spend("m1", "master", 5, 100, None)]).await.unwrap();

    let all = s.list_spend(&SpendQuery::default(), &PageRequest::default()).await.unwrap();
    assert_eq!(all.items.len(), 11);
    assert_eq!(all.items[0].request_id, "m1", "newest first");
    let r3 = s
        .list_spend(&SpendQuery { request_id: Some("r3".into()), ..Default::default() }, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(r3.items, vec![batch[3].clone()], "every field round-trips");

    let by_key = SpendQuery { key_id: Some("payer".into()), ..Default::default() };
    assert_eq!(s.list_spend(&by_key, &PageRequest::default()).await.unwrap().items.len(), 10);
    let by_user = SpendQuery { end_user: Some("cust".into()), ..Default::default() };
    assert_eq!(s.list_spend(&by_user, &PageRequest::default()).await.unwrap().items.len(), 10);
    let window = SpendQuery {
        start: Some(Utc.timestamp_opt(1_790_000_002, 0).unwrap()),
        end: Some(Utc.timestamp_opt(1_790_000_005, 0).unwrap()),
        ..Default::default()
    };
    let ids: Vec<_> =
        s.list_spend(&window, &PageRequest::default()).await.unwrap().items.into_iter().map(|r| r.request_id).collect();
    assert_eq!(ids, ["r4", "r3", "r2"]);

    let mut token = None;
    let mut count = 0;
    loop {
        let page = s.list_spend(&by_key, &PageRequest::new(3, token)).await.unwrap();
        count += page.items.len();
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(count, 10);
}

fn charge(scope: &str, id: &str, period: i64) -> Charge {
    Charge { scope: scope.into(), scope_id: id.into(), period_start_us: period }
}

async fn spend_lands_on_every_scope(s: &dyn Store) {
    let mut team = key_row("team-x", None, 0);
    team.token_hash = None;
    team.data = json!({"team_id": "team-x"});
    s.commit(&[Change::Insert(Table::Teams, team)], &[]).await.unwrap();
    let charges = vec![charge("team", "team-x", 0), charge("team", "team-x", 1_000), charge("customer", "new-cust", 0)];
    let mut records = Vec::new();
    for i in 0..4 {
        let mut r = spend(&format!("c{i}"), "master", 7 + i, 200 + i, Some("new-cust"));
        r.charges = charges.clone();
        r.tags = vec!["a".into(), "b".into()];
        records.push(r);
    }
    assert_eq!(s.insert_spend(&records).await.unwrap(), 4);
    assert_eq!(s.insert_spend(&records).await.unwrap(), 0, "replays count nothing");
    let total = Nanos(7 + 8 + 9 + 10);
    assert_eq!(s.period_spend(&charges).await.unwrap(), vec![total, total, total]);
    assert_eq!(s.period_spend(&[charge("team", "team-x", 2_000)]).await.unwrap(), vec![Nanos::ZERO]);
    assert_eq!(s.get(Table::Teams, "team-x").await.unwrap().unwrap().spend, total, "lifetime once per record");
    let customer = s.get(Table::Customers, "new-cust").await.unwrap().expect("created with its first record");
    assert_eq!(customer.spend, total);
    let by_team = s
        .list_spend(&SpendQuery { team_id: Some("team-1".into()), ..Default::default() }, &PageRequest::default())
        .await
        .unwrap();
    assert!(by_team.items.iter().any(|r| r.request_id == "c0" && r.tags == ["a", "b"]));
}

async fn conformance(backend: &str) {
    let db = open(backend).await;
    db.store.ping().await.unwrap();
    rows_round_trip(db.store.as_ref()).await;
    memberships_round_trip(db.store.as_ref()).await;
    audit_is_a_verifiable_chain(db.store.as_ref()).await;
    spend_is_exact_and_idempotent(db.store.as_ref()).await;
    spend_lands_on_every_scope(db.store.as_ref()).await;
    db.close().await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    conformance("sqlite").await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    conformance("postgres").await;
}
