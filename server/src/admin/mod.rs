//! Management operations, shared by the gRPC services and the LiteLLM-compatible routes so
//! both check, validate, audit and invalidate the same way. The API layers only translate.
//!
//! Every operation: resolve the caller ([`access::principal`]), check the rule, validate the
//! input (naming the field), then write the change and its audit entry in one store commit —
//! so a refused or invalid request writes nothing — and finally tell the identity cache.

pub mod access;
pub mod budgets;
pub mod customers;
pub mod fields;
pub mod keys;
pub mod mcp;
pub mod orgs;
pub mod reconcile;
pub mod tags;
pub mod teams;
pub mod users;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::governance::Caller;
use crate::store::{AuditDraft, Change, Table};
use crate::tenancy::{Resource, from_row};
pub use access::{Principal, deny, principal};

/// One management call: who, and where from.
pub struct Ctx<'a> {
    pub gw: &'a Gateway,
    pub who: Principal,
    pub request_id: String,
    pub source: Option<String>,
    pub now: DateTime<Utc>,
}

impl<'a> Ctx<'a> {
    pub async fn new(gw: &'a Gateway, caller: &Caller, source: Option<String>) -> Result<Ctx<'a>, GatewayError> {
        Ok(Ctx {
            gw,
            who: principal(gw, caller).await?,
            request_id: uuid::Uuid::new_v4().to_string(),
            source,
            now: Utc::now(),
        })
    }

    /// An audit entry for this call.
    pub fn audit(
        &self,
        action: &str,
        object_type: &str,
        object_id: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> AuditDraft {
        AuditDraft {
            at: self.now,
            actor: self.who.actor.clone(),
            action: action.to_owned(),
            object_type: object_type.to_owned(),
            object_id: object_id.to_owned(),
            before,
            after,
            request_id: Some(self.request_id.clone()),
            source_addr: self.source.clone(),
        }
    }

    /// Writes the changes and their audit entries together.
    pub async fn commit(&self, changes: Vec<Change>, audit: Vec<AuditDraft>) -> Result<(), GatewayError> {
        self.gw.store.commit(&changes, &audit).await?;
        Ok(())
    }

    /// Who to record as creator or updater.
    pub fn actor_name(&self) -> Option<String> {
        self.who
            .user_id
            .clone()
            .or_else(|| self.who.key_id.clone())
            .or_else(|| Some(access::MASTER_KEY_ACTOR.to_owned()))
    }
}

/// Refuses an API change to a resource config.yaml declares, naming the file; with
/// `general_settings.config_managed_fields: advisory` the change is allowed (and the next
/// apply puts the file's settings back).
pub fn check_managed<R: Resource>(ctx: &Ctx<'_>, r: &R) -> Result<(), GatewayError> {
    use crate::config::governance::MANAGED_BY;
    use crate::config::governance::ManagedFields;
    if r.managed_by() != Some(MANAGED_BY) || ctx.gw.managed_fields() == ManagedFields::Advisory {
        return Ok(());
    }
    // The file's name, not its path: the caller may not be one who should learn the layout of
    // the gateway's disk.
    let file = ctx
        .gw
        .config
        .source
        .as_ref()
        .and_then(|p| p.file_name())
        .map_or_else(|| "the config file".to_owned(), |n| n.to_string_lossy().into_owned());
    Err(GatewayError::new(
        crate::error::ErrorCode::PermissionDenied,
        format!(
            "{} {:?} is declared in {file} and managed from there; change it in the file and reload \
             (SIGHUP or `ferryman config apply`), or set general_settings.config_managed_fields: advisory",
            R::TABLE.object_type(),
            r.id()
        ),
    )
    .with_reason("CONFIG_MANAGED"))
}

/// A resource as the audit log records it: its settings and version, secrets redacted.
pub fn snapshot<R: Resource>(r: &R) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        for secret in ["token_hash", "key", "api_key", "secret"] {
            if map.contains_key(secret) {
                map.insert(secret.to_owned(), Value::String("***".to_owned()));
            }
        }
        map.insert("version".to_owned(), Value::from(r.meta().version));
    }
    v
}

/// Loads a resource or answers not found.
pub async fn load<R: Resource>(gw: &Gateway, id: &str) -> Result<R, GatewayError> {
    match gw.store.get(R::TABLE, id).await? {
        Some(row) => Ok(from_row(row)?),
        None => Err(not_found(R::TABLE, id)),
    }
}

/// Loads a resource a request refers to; a missing one is the request's fault (400 naming
/// the field).
pub async fn load_ref<R: Resource>(gw: &Gateway, field: &str, id: &str) -> Result<R, GatewayError> {
    match gw.store.get(R::TABLE, id).await? {
        Some(row) => Ok(from_row(row)?),
        None => Err(GatewayError::invalid(field, format!("{field}: no {} with id {id:?}", R::TABLE.object_type()))),
    }
}

/// A page of a table's resources.
pub async fn list_rows<R: Resource>(
    gw: &Gateway,
    filter: &crate::store::RowFilter,
    page: &crate::store::PageRequest,
) -> Result<crate::store::Page<R>, GatewayError> {
    let rows = gw.store.list(R::TABLE, filter, page).await?;
    let items = rows.items.into_iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(crate::store::Page { items, next_token: rows.next_token })
}

/// The resources with these ids that exist, in id order, each once.
pub async fn load_many<R: Resource>(gw: &Gateway, mut ids: Vec<String>) -> Result<Vec<R>, GatewayError> {
    ids.sort();
    ids.dedup();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = gw.store.get(R::TABLE, &id).await? {
            out.push(from_row(row)?);
        }
    }
    Ok(out)
}

pub fn not_found(table: Table, id: &str) -> GatewayError {
    GatewayError::not_found(format!("no {} with id {id:?}", table.object_type()))
}

/// Checks an `etag` the caller sent against the stored version.
pub fn check_etag(field_version: Option<i64>, stored: i64, what: &str) -> Result<(), GatewayError> {
    match field_version {
        Some(v) if v != stored => Err(GatewayError::new(
            crate::error::ErrorCode::AlreadyExists,
            format!("{what} has changed since you read it (your etag {v}, now {stored}); read it again and retry"),
        )
        .with_reason("ETAG_MISMATCH")),
        _ => Ok(()),
    }
}

/// A fresh id for a resource created without one.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Refuses empty strings in an id or name field.
pub fn non_empty(field: &str, value: &str) -> Result<(), GatewayError> {
    if value.trim().is_empty() {
        Err(GatewayError::invalid(field, format!("{field}: must not be empty")))
    } else if value.len() > 256 {
        Err(GatewayError::invalid(field, format!("{field}: at most 256 characters")))
    } else {
        Ok(())
    }
}

/// An id a resource is created with (see [`crate::store::bounds::check_id`]).
pub fn check_id(field: &str, value: &str) -> Result<(), GatewayError> {
    Ok(crate::store::bounds::check_id(field, value)?)
}

/// Checks every entry of a model list.
pub fn check_models(field: &str, models: &[String]) -> Result<(), GatewayError> {
    for (i, m) in models.iter().enumerate() {
        non_empty(&format!("{field}[{i}]"), m)?;
    }
    Ok(())
}
