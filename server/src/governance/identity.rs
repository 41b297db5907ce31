//! Authentication: a presented secret → the caller, from an in-memory cache.
//!
//! Secrets are never stored or logged: the cache and the store are keyed by the secret's
//! SHA-256. A miss loads the key once from the store; every change made through the API
//! invalidates the entry at once (`invalidate`), so a deleted or blocked key fails on its next
//! request. Cross-instance invalidation (Redis pub/sub) plugs into `invalidate` later.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::store::{KeyRecord, Store};

/// The identity of the master key in spend records.
pub const MASTER_KEY_ID: &str = "master";

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The master key: a proxy admin.
    Master,
    /// A virtual key.
    Key(Arc<KeyRecord>),
}

impl Caller {
    pub fn key_id(&self) -> &str {
        match self {
            Caller::Master => MASTER_KEY_ID,
            Caller::Key(k) => &k.key_id,
        }
    }

    pub fn key(&self) -> Option<&KeyRecord> {
        match self {
            Caller::Master => None,
            Caller::Key(k) => Some(k),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Master)
    }

    /// Refuses anyone but an admin.
    pub fn require_admin(&self) -> Result<(), GatewayError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(GatewayError::permission_denied(
                "this operation needs the master key (role proxy_admin); virtual keys may only call models",
            ))
        }
    }
}

/// SHA-256 of a secret, hex-encoded: what the store keeps.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Authenticates secrets against the master key and the cached keys.
pub struct IdentityCache {
    store: Arc<dyn Store>,
    master_hash: Option<String>,
    keys: RwLock<HashMap<String, Arc<KeyRecord>>>,
}

/// The longest secret accepted; anything longer is not one of ours.
const MAX_SECRET_LEN: usize = 256;

impl IdentityCache {
    pub fn new(store: Arc<dyn Store>, master_key: Option<&str>) -> Self {
        Self { store, master_hash: master_key.map(hash_secret), keys: RwLock::new(HashMap::new()) }
    }

    /// Resolves a presented secret (`None` when the request carried none). Errors are 401s
    /// whose messages never repeat the secret.
    pub async fn authenticate(&self, secret: Option<&str>) -> Result<Caller, GatewayError> {
        let secret = secret.map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| {
            GatewayError::unauthenticated(
                "missing API key: send `Authorization: Bearer sk-...` (or x-api-key / api-key)",
            )
            .with_reason("missing_api_key")
        })?;
        if !secret.starts_with("sk-") || secret.len() > MAX_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(GatewayError::unauthenticated(
                "malformed API key: Ferryman keys start with \"sk-\" and contain no spaces",
            )
            .with_reason("invalid_api_key"));
        }
        let hash = hash_secret(secret);
        if self.master_hash.as_deref() == Some(hash.as_str()) {
            return Ok(Caller::Master);
        }
        let cached = self.keys.read().ok().and_then(|m| m.get(&hash).cloned());
        let key = match cached {
            Some(k) => k,
            None => {
                let loaded = self.store.key_by_hash(&hash).await?.ok_or_else(|| {
                    GatewayError::unauthenticated("invalid API key: no such key (it may have been deleted)")
                        .with_reason("invalid_api_key")
                })?;
                let loaded = Arc::new(loaded);
                if let Ok(mut m) = self.keys.write() {
                    m.insert(hash, loaded.clone());
                }
                loaded
            }
        };
        if key.blocked {
            return Err(
                GatewayError::unauthenticated(format!("key {} is blocked", key.key_id)).with_reason("key_blocked")
            );
        }
        if let Some(at) = key.expires_at
            && at <= Utc::now()
        {
            return Err(GatewayError::unauthenticated(format!(
                "key {} expired at {}",
                key.key_id,
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))
            .with_reason("KEY_EXPIRED"));
        }
        Ok(Caller::Key(key))
    }

    /// Forgets a key, by the hash of its secret, so its next use reloads it.
    pub fn invalidate(&self, token_hash: &str) {
        if let Ok(mut m) = self.keys.write() {
            m.remove(token_hash);
        }
    }
}
