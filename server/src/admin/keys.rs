//! Virtual keys: mint, read, list, delete.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::governance::duration::parse_period;
use crate::governance::{Caller, identity::hash_secret};
use crate::pricing::Nanos;
use crate::store::{KeyRecord, Page, PageRequest};

/// What a caller may set on a new key.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub alias: Option<String>,
    pub models: Vec<String>,
    pub max_budget: Option<Nanos>,
    pub metadata: Map<String, Value>,
    /// A lifetime such as `30d`; sets the expiry from now.
    pub duration: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub blocked: bool,
    /// A caller-chosen secret (LiteLLM's `key`); otherwise one is generated.
    pub secret: Option<String>,
}

/// A fresh secret: `sk-` and 256 random bits.
fn generate_secret() -> Result<String, GatewayError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| GatewayError::internal(format!("no randomness available: {e}")))?;
    Ok(format!("sk-{}", hex::encode(bytes)))
}

/// `sk-...abcd`: enough to recognise a key, nothing to use.
pub fn mask(secret: &str) -> String {
    let tail: String = secret.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("sk-...{tail}")
}

/// Validates and stores a new key; returns it and its secret (shown once).
pub async fn create(gw: &Gateway, caller: &Caller, new: NewKey) -> Result<(KeyRecord, String), GatewayError> {
    caller.require_admin()?;
    if let Some(alias) = &new.alias
        && alias.trim().is_empty()
    {
        return Err(GatewayError::invalid("key_alias", "key_alias: must not be empty"));
    }
    for (i, m) in new.models.iter().enumerate() {
        if m.trim().is_empty() {
            return Err(GatewayError::invalid(format!("models[{i}]"), format!("models[{i}]: must not be empty")));
        }
    }
    let now = Utc::now();
    let expires_at = match (&new.duration, new.expires_at) {
        (Some(_), Some(_)) => {
            return Err(GatewayError::invalid(
                "duration",
                "duration: give either duration or an expiry time, not both",
            ));
        }
        (Some(d), None) => {
            let period = parse_period(d).map_err(|e| GatewayError::invalid("duration", format!("duration: {e}")))?;
            Some(period.after(now).ok_or_else(|| GatewayError::invalid("duration", "duration: too long"))?)
        }
        (None, at) => at,
    };
    let secret = match new.secret {
        Some(s) => {
            if !s.starts_with("sk-") || s.len() < 16 || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(GatewayError::invalid(
                    "key",
                    "key: a custom key must start with \"sk-\", be 16 to 256 characters and contain no spaces",
                ));
            }
            s
        }
        None => generate_secret()?,
    };
    let record = KeyRecord {
        key_id: uuid::Uuid::new_v4().simple().to_string(),
        token_hash: hash_secret(&secret),
        key_name: mask(&secret),
        key_alias: new.alias,
        models: new.models,
        max_budget: new.max_budget,
        spend: Nanos::ZERO,
        metadata: new.metadata,
        expires_at,
        blocked: new.blocked,
        user_id: new.user_id,
        team_id: new.team_id,
        created_at: now,
        updated_at: now,
    };
    gw.store.create_key(&record).await?;
    // A secret presented before it existed may sit in no cache, but be certain.
    gw.identities.invalidate(&record.token_hash);
    tracing::info!(key_id = %record.key_id, alias = ?record.key_alias, "key created");
    Ok((record, secret))
}

/// Finds a key by its id, or by its secret (LiteLLM's routes accept either).
pub async fn find(gw: &Gateway, caller: &Caller, id_or_secret: &str) -> Result<KeyRecord, GatewayError> {
    caller.require_admin()?;
    if id_or_secret.starts_with("sk-") {
        return gw
            .store
            .key_by_hash(&hash_secret(id_or_secret))
            .await?
            .ok_or_else(|| GatewayError::not_found("no such key"));
    }
    Ok(gw.store.get_key(id_or_secret).await?)
}

pub async fn list(gw: &Gateway, caller: &Caller, page: &PageRequest) -> Result<Page<KeyRecord>, GatewayError> {
    caller.require_admin()?;
    Ok(gw.store.list_keys(page).await?)
}

/// Deletes a key; it fails on its next use, here at once.
pub async fn delete(gw: &Gateway, caller: &Caller, id_or_secret: &str) -> Result<KeyRecord, GatewayError> {
    let key = find(gw, caller, id_or_secret).await?;
    let deleted = gw.store.delete_key(&key.key_id).await?;
    gw.identities.invalidate(&deleted.token_hash);
    tracing::info!(key_id = %deleted.key_id, "key deleted");
    Ok(deleted)
}
