//! The tenancy model: organizations, teams, users, virtual keys, customers and budget tiers,
//! and the memberships between them.
//!
//! Each resource is a plain struct whose settings serialize into its row's JSON document;
//! the row's relation columns are derived from the struct every time it is written, so they
//! always agree. [`Meta`] (spend, version, times) comes from the row's own columns.

mod model;

pub use model::*;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::pricing::Nanos;
use crate::store::{Row, StoreError, Table};

/// What the store keeps beside a resource's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub spend: Nanos,
    /// The optimistic-concurrency version; the API's etag.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Meta {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self { spend: Nanos::ZERO, version: 1, created_at: now, updated_at: now }
    }
}

impl Default for Meta {
    fn default() -> Self {
        Self::new(DateTime::<Utc>::UNIX_EPOCH)
    }
}

/// The relation columns of a row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub alias: Option<String>,
    pub organization_id: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub token_hash: Option<String>,
}

/// A managed resource stored in a [`Table`].
pub trait Resource: Serialize + DeserializeOwned + Clone + Send + Sync {
    const TABLE: Table;
    fn id(&self) -> &str;
    fn columns(&self) -> Columns;
    fn meta(&self) -> &Meta;
    /// Who owns the resource's settings besides the API: `config` when config.yaml declares it.
    fn managed_by(&self) -> Option<&str>;
    fn meta_mut(&mut self) -> &mut Meta;
}

/// The row a resource is stored as.
pub fn to_row<R: Resource>(r: &R) -> Row {
    let Columns { alias, organization_id, team_id, user_id, token_hash } = r.columns();
    let m = r.meta();
    Row {
        id: r.id().to_owned(),
        alias,
        organization_id,
        team_id,
        user_id,
        token_hash,
        data: serde_json::to_value(r).unwrap_or(Value::Null),
        spend: m.spend,
        version: m.version,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

/// The resource a row holds.
pub fn from_row<R: Resource>(row: Row) -> Result<R, StoreError> {
    let mut r: R = serde_json::from_value(row.data)
        .map_err(|e| StoreError::Corrupt(format!("{} {}: {e}", R::TABLE.object_type(), row.id)))?;
    *r.meta_mut() =
        Meta { spend: row.spend, version: row.version, created_at: row.created_at, updated_at: row.updated_at };
    Ok(r)
}
