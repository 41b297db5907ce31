//! The embedded backend: one SQLite file in WAL mode.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqlSafeStr, SqlitePool};

use super::StoreError;

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the file a `sqlite:` URL names.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        Ok(Self { pool })
    }

    fn migrator() -> Migrator {
        Migrator::with_migrations(vec![
            Migration::new(
                1,
                "initial".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/sqlite/0001_initial.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                2,
                "budget spend".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/sqlite/0002_budget_spend.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                3,
                "tags".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/sqlite/0003_tags.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                4,
                "cache hit".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/sqlite/0004_cache_hit.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                5,
                "mcp servers".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/sqlite/0005_mcp_servers.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                6,
                "spend metadata".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/sqlite/0006_spend_metadata.sql").into_sql_str(),
                false,
            ),
        ])
    }
}

// SQLite: a writing transaction takes the write lock up front (no upgrade deadlocks); that
// lock alone serializes audit appends.
super::sql::impl_store!(
    SqliteStore,
    sqlx::Sqlite,
    "sqlite",
    begin_write: "BEGIN IMMEDIATE",
    lock_head: "SELECT seq, hash FROM audit_head WHERE id = 1"
);
