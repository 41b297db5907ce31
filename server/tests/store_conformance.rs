//! One conformance suite, run against both store backends: SQLite (a temporary file) and
//! PostgreSQL (a fresh database on the local server).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers report failure by panicking")]

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use ferryman_server::pricing::Nanos;
use ferryman_server::store::{self, KeyRecord, PageRequest, SpendQuery, SpendRecord, SpendStatus, Store, StoreError};
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

fn key(id: &str, alias: Option<&str>, created_secs: i64) -> KeyRecord {
    let at = Utc.timestamp_opt(1_790_000_000 + created_secs, 123_456_000).unwrap();
    KeyRecord {
        key_id: id.into(),
        token_hash: format!("hash-{id}"),
        key_name: "sk-...abcd".into(),
        key_alias: alias.map(Into::into),
        models: vec!["demo".into(), "gpt-4o".into()],
        max_budget: Some(Nanos(2_500_000_000)),
        spend: Nanos::ZERO,
        metadata: json!({"team": "x", "n": 1}).as_object().unwrap().clone(),
        expires_at: Some(at + Duration::days(30)),
        blocked: false,
        user_id: Some("u1".into()),
        team_id: None,
        created_at: at,
        updated_at: at,
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
    }
}

async fn keys_round_trip(s: &dyn Store) {
    let k = key("k1", Some("alpha"), 0);
    s.create_key(&k).await.unwrap();
    assert_eq!(s.get_key("k1").await.unwrap(), k, "every field round-trips, microsecond times included");
    assert_eq!(s.key_by_hash("hash-k1").await.unwrap(), Some(k.clone()));
    assert_eq!(s.key_by_hash("nope").await.unwrap(), None);
    assert!(matches!(s.get_key("nope").await, Err(StoreError::NotFound(_))));

    // A duplicate alias is a conflict, and writes nothing.
    let mut dup = key("k2", Some("alpha"), 1);
    dup.token_hash = "hash-k2".into();
    assert!(matches!(s.create_key(&dup).await, Err(StoreError::Conflict(m)) if m.contains("alpha")));
    assert!(matches!(s.get_key("k2").await, Err(StoreError::NotFound(_))));

    // Keys without an alias do not conflict with each other.
    for i in 2..7 {
        s.create_key(&key(&format!("k{i}"), None, i)).await.unwrap();
    }
    // Newest first, two a page, every key once.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = s.list_keys(&PageRequest::new(2, token)).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|k| k.key_id.clone()));
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, ["k6", "k5", "k4", "k3", "k2", "k1"]);
    assert!(matches!(s.list_keys(&PageRequest::new(2, Some("zz".into()))).await, Err(StoreError::InvalidPageToken)));

    let deleted = s.delete_key("k3").await.unwrap();
    assert_eq!(deleted.key_id, "k3");
    assert!(matches!(s.delete_key("k3").await, Err(StoreError::NotFound(_))));
    assert_eq!(s.key_by_hash("hash-k3").await.unwrap(), None);
}

async fn spend_is_exact_and_idempotent(s: &dyn Store) {
    s.create_key(&key("payer", None, 0)).await.unwrap();
    let batch: Vec<_> = (0..10).map(|i| spend(&format!("r{i}"), "payer", 1_000_000_007 + i, i, Some("cust"))).collect();
    assert_eq!(s.insert_spend(&batch).await.unwrap(), 10);
    // Replaying the same records (a retry after a lost acknowledgement) counts nothing twice.
    assert_eq!(s.insert_spend(&batch[5..]).await.unwrap(), 0);
    let expected: i64 = (0..10).map(|i| 1_000_000_007 + i).sum();
    assert_eq!(s.get_key("payer").await.unwrap().spend, Nanos(expected));

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

async fn conformance(backend: &str) {
    let db = open(backend).await;
    db.store.ping().await.unwrap();
    keys_round_trip(db.store.as_ref()).await;
    spend_is_exact_and_idempotent(db.store.as_ref()).await;
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
