//! Durable state: the [`Store`] trait and its PostgreSQL and SQLite implementations.
//!
//! Both backends share one schema (two dialects under `migrations/`) and one body of SQL
//! ([`sql`]): money is BIGINT nano-USD and times are BIGINT microseconds in both, so the
//! conformance suite holds them to identical behaviour. The hot path never reads the store in
//! steady state: identities are cached in `governance`, spend records are written in batches
//! by `ledger`.

pub mod bounds;
mod postgres;
mod sql;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

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
    /// A value neither backend stores (a NUL character), named by its field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("migration failed: {0}")]
    Migrate(String),
}

/// A table of managed resources. They all have the same shape (see the migration): an id,
/// relation columns, a JSON document, spend, a version and two times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Organizations,
    Teams,
    Users,
    Customers,
    Budgets,
    Keys,
    Tags,
    McpServers,
}

impl Table {
    pub const ALL: [Table; 8] = [
        Table::Organizations,
        Table::Teams,
        Table::Users,
        Table::Customers,
        Table::Budgets,
        Table::Keys,
        Table::Tags,
        Table::McpServers,
    ];

    /// The SQL table name (a fixed identifier, never caller input).
    pub fn name(self) -> &'static str {
        match self {
            Table::Organizations => "organizations",
            Table::Teams => "teams",
            Table::Users => "users",
            Table::Customers => "customers",
            Table::Budgets => "budgets",
            Table::Keys => "keys",
            Table::Tags => "tags",
            Table::McpServers => "mcp_servers",
        }
    }

    /// The object type in audit entries and messages.
    pub fn object_type(self) -> &'static str {
        match self {
            Table::Organizations => "organization",
            Table::Teams => "team",
            Table::Users => "user",
            Table::Customers => "customer",
            Table::Budgets => "budget",
            Table::Keys => "key",
            Table::Tags => "tag",
            Table::McpServers => "mcp_server",
        }
    }
}

/// One stored resource. `alias` is the table's unique-ish human name: organization_alias,
/// team_alias, user_email (unique), key_alias (unique), customer alias.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub alias: Option<String>,
    pub organization_id: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub token_hash: Option<String>,
    /// The resource's settings, a JSON object.
    pub data: Value,
    pub spend: Nanos,
    /// Starts at 1; every update adds 1.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A key found by a secret's hash; `grace_until` is set when the secret is an old one in its
/// grace period, and says when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyMatch {
    pub row: Row,
    pub grace_until: Option<DateTime<Utc>>,
}

/// Which rows a list returns; unset filters match everything.
#[derive(Debug, Clone, Default)]
pub struct RowFilter {
    pub organization_id: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub alias: Option<String>,
}

/// What a membership is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Team,
    Org,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Team => "team",
            Scope::Org => "org",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "team" => Some(Scope::Team),
            "org" => Some(Scope::Org),
            _ => None,
        }
    }
}

/// A user's role in a team or an organization.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub scope: Scope,
    pub scope_id: String,
    pub user_id: String,
    pub role: String,
    /// Per-membership settings (e.g. `max_budget_in_team`).
    pub data: Value,
    pub spend: Nanos,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which memberships to read.
#[derive(Debug, Clone, Default)]
pub struct MembershipFilter {
    pub scope: Option<Scope>,
    pub scope_id: Option<String>,
    pub user_id: Option<String>,
}

/// One write of a [`Store::commit`]; all of a commit's changes and audit entries land
/// together or not at all.
#[derive(Debug, Clone)]
pub enum Change {
    /// A new row; an existing id or a taken unique alias/token is a conflict.
    Insert(Table, Row),
    /// Replaces a row's columns and data if its stored version is `row.version - 1`
    /// (otherwise a conflict: someone changed it meanwhile). Spend is not touched.
    Update(Table, Row),
    /// Removes a row; a missing row is not found.
    Delete(Table, String),
    /// Creates or replaces a membership (spend and creation time are kept).
    PutMembership(Membership),
    DeleteMembership {
        scope: Scope,
        scope_id: String,
        user_id: String,
    },
    /// Removes every membership of a team or organization.
    DeleteMembershipsOfScope {
        scope: Scope,
        scope_id: String,
    },
    /// Removes every membership of a user.
    DeleteMembershipsOfUser(String),
    /// Keeps an old key secret valid until `revoke_at`.
    AddKeyGrace {
        token_hash: String,
        key_id: String,
        revoke_at: DateTime<Utc>,
    },
    /// Forgets every old secret of a key.
    DeleteKeyGrace(String),
}

/// Who did something, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Actor {
    pub user_id: Option<String>,
    pub key_id: Option<String>,
    pub role: String,
}

/// An audit entry before the store numbers and chains it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditDraft {
    pub at: DateTime<Utc>,
    pub actor: Actor,
    /// `created`, `updated`, `deleted`, `blocked`, `unblocked`, `rotated`, `member_added`, …
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: Option<String>,
    pub source_addr: Option<String>,
}

/// A stored audit entry: its place in the chain and its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub seq: i64,
    pub entry_id: String,
    pub draft: AuditDraft,
    pub prev_hash: String,
    pub hash: String,
}

/// Filters of an audit query; unset filters match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor_user_id: Option<String>,
    pub actor_key_id: Option<String>,
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// The chain's head as stored: the last entry's number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
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
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub organization_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The budget scopes and periods this call's spend lands on.
    #[serde(default)]
    pub charges: Vec<Charge>,
    /// Answered from the response cache (and so free).
    #[serde(default)]
    pub cache_hit: bool,
    /// What else the call recorded (an MCP tool call's `mcp_tool_call_metadata`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// One budget scope and period a call's spend is added to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Charge {
    /// `key`, `user`, `team`, `team_member`, `org`, `customer`, `tag`, `global`, or a
    /// per-model scope (`key_model`, `user_model`, `team_model`).
    pub scope: String,
    /// The scope's id (`team:user` for a team member, `id:model` for per-model scopes).
    pub scope_id: String,
    /// Microseconds; 0 for a budget without a duration.
    pub period_start_us: i64,
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
    pub user_id: Option<String>,
    pub team_id: Option<String>,
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

    async fn get(&self, table: Table, id: &str) -> Result<Option<Row>, StoreError>;
    /// Newest first.
    async fn list(&self, table: Table, filter: &RowFilter, page: &PageRequest) -> Result<Page<Row>, StoreError>;
    /// The key a secret's hash names: its current secret, or an old one still in its grace
    /// period at `now`.
    async fn key_by_hash(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<KeyMatch>, StoreError>;
    async fn memberships(&self, filter: &MembershipFilter) -> Result<Vec<Membership>, StoreError>;
    /// Applies `changes` and appends `audit` (numbered and hash-chained) in one transaction.
    async fn commit(&self, changes: &[Change], audit: &[AuditDraft]) -> Result<Vec<AuditEntry>, StoreError>;
    /// Oldest first within the page order (newest first across pages).
    async fn list_audit(&self, query: &AuditQuery, page: &PageRequest) -> Result<Page<AuditEntry>, StoreError>;
    /// Entries with `seq > after`, in order, at most `limit`: for verifying the chain.
    async fn scan_audit(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
    async fn audit_head(&self) -> Result<AuditHead, StoreError>;

    /// Appends spend records and adds their spend to their keys, in one transaction.
    /// Idempotent by `request_id`: a record already stored is skipped and not counted again.
    /// Returns how many were new.
    async fn insert_spend(&self, records: &[SpendRecord]) -> Result<u64, StoreError>;
    /// Newest first.
    async fn list_spend(&self, query: &SpendQuery, page: &PageRequest) -> Result<Page<SpendRecord>, StoreError>;
    /// The stored spend of each scope and period (0 where none).
    async fn period_spend(&self, charges: &[Charge]) -> Result<Vec<Nanos>, StoreError>;
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

/// Audit pages are keyed by sequence number.
fn encode_seq_token(seq: i64) -> String {
    hex::encode(format!("{seq}:"))
}

fn decode_token(token: &str) -> Result<(i64, String), StoreError> {
    let bad = || StoreError::InvalidPageToken;
    let raw = String::from_utf8(hex::decode(token).map_err(|_| bad())?).map_err(|_| bad())?;
    let (us, id) = raw.split_once(':').ok_or_else(bad)?;
    Ok((us.parse().map_err(|_| bad())?, id.to_owned()))
}
