//! The production backend: PostgreSQL, shared by every instance.

use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, SqlSafeStr};

use super::StoreError;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool =
            PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(5)).connect(url).await?;
        Ok(Self { pool })
    }

    fn migrator() -> Migrator {
        Migrator::with_migrations(vec![
            Migration::new(
                1,
                "initial".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/postgres/0001_initial.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                2,
                "budget spend".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/postgres/0002_budget_spend.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                3,
                "tags".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/postgres/0003_tags.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                4,
                "cache hit".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/postgres/0004_cache_hit.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                5,
                "mcp servers".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/postgres/0005_mcp_servers.sql").into_sql_str(),
                false,
            ),
            Migration::new(
                6,
                "spend metadata".into(),
                MigrationType::Simple,
                include_str!("../../../migrations/postgres/0006_spend_metadata.sql").into_sql_str(),
                false,
            ),
        ])
    }
}

// PostgreSQL: writers lock the audit chain's head row, so entries are numbered and chained
// in commit order.
super::sql::impl_store!(
    PgStore,
    sqlx::Postgres,
    "postgres",
    begin_write: "BEGIN",
    lock_head: "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
);
