//! Durable state: the [`Store`] trait and its PostgreSQL and SQLite implementations.
//!
//! Both backends share one schema (two dialects under `migrations/`) and one body of SQL
//! ([`sql`]): money is BIGINT nano-USD and times are BIGINT microseconds in both, so the
//! conformance suite holds them to identical behaviour. The hot path never reads the store in
//! steady state: identities are cached in `governance`, spend records are written in batches
//! by `ledger`.

mod postgres;
mod sql;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::pricing::Nanos;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("invalid page token")]
    InvalidPageToken,
    #[error("migration failed: {0}")]
    Migrate(String),
}

/// A virtual key as stored (its secret is never stored; only its SHA-256).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub key_id: String,
    pub token_hash: String,
    /// The masked secret, `sk-...abcd`.
    pub key_name: String,
    pub key_alias: Option<String>,
    pub models: Vec<String>,
    pub max_budget: Option<Nanos>,
    pub spend: Nanos,
    pub metadata: Map<String, Value>,
    pub expires_at: Option<DateTime<Utc>>,
    pub blocked: bool,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One call's spend record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpendRecord {
    pub request_id: String,
    pub call_type: String,
    pub key_id: String,
    pub model: String,
    pub deployment: String,
    pub provider: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub spend: Nanos,
    pub status: SpendStatus,
    pub error_code: Option<String>,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub duration_ms: i64,
    pub end_user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpendStatus {
    Success,
    Failure,
}

impl SpendStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            _ => None,
        }
    }
}

/// Filters of a spend query; unset filters match everything.
#[derive(Debug, Clone, Default)]
pub struct SpendQuery {
    pub key_id: Option<String>,
    pub request_id: Option<String>,
    pub end_user: Option<String>,
    /// Start time at or after.
    pub start: Option<DateTime<Utc>>,
    /// Start time before.
    pub end: Option<DateTime<Utc>>,
}

/// A page request: at most `size` items after the opaque `token`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub size: u32,
    pub token: Option<String>,
}

/// A page of results and the token of the next, if there is one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 1000;

impl PageRequest {
    pub fn new(size: u32, token: Option<String>) -> Self {
        Self { size, token }
    }

    /// The size to use: the default for 0, capped at the maximum.
    pub fn effective_size(&self) -> u32 {
        match self.size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        }
    }
}

/// Durable state behind the gateway.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Fails if the database cannot be reached.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Inserts a key; a duplicate alias is a [`StoreError::Conflict`].
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    async fn key_by_hash(&self, token_hash: &str) -> Result<Option<KeyRecord>, StoreError>;
    async fn get_key(&self, key_id: &str) -> Result<KeyRecord, StoreError>;
    /// Newest first.
    async fn list_keys(&self, page: &PageRequest) -> Result<Page<KeyRecord>, StoreError>;
    /// Deletes a key and returns what it was.
    async fn delete_key(&self, key_id: &str) -> Result<KeyRecord, StoreError>;

    /// Appends spend records and adds their spend to their keys, in one transaction.
    /// Idempotent by `request_id`: a record already stored is skipped and not counted again.
    /// Returns how many were new.
    async fn insert_spend(&self, records: &[SpendRecord]) -> Result<u64, StoreError>;
    /// Newest first.
    async fn list_spend(&self, query: &SpendQuery, page: &PageRequest) -> Result<Page<SpendRecord>, StoreError>;
}

/// Opens the store a URL names (`postgres://`, `postgresql://` or `sqlite:`), without
/// migrating.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    }
}

/// The default embedded database: `ferryman.db` in the working directory.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://ferryman.db";

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

/// Page tokens are `<micros>:<id>` of the last item, hex-encoded so callers treat them as
/// opaque.
fn encode_token(at: DateTime<Utc>, id: &str) -> String {
    hex::encode(format!("{}:{id}", micros(at)))
}

fn decode_token(token: &str) -> Result<(i64, String), StoreError> {
    let bad = || StoreError::InvalidPageToken;
    let raw = String::from_utf8(hex::decode(token).map_err(|_| bad())?).map_err(|_| bad())?;
    let (us, id) = raw.split_once(':').ok_or_else(bad)?;
    Ok((us.parse().map_err(|_| bad())?, id.to_owned()))
}
