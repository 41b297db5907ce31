//! Authentication: a presented secret → the caller, from an in-memory cache.
//!
//! Secrets are never stored or logged: the cache and the store are keyed by the secret's
//! SHA-256. A miss loads the key, its user, team and organization once from the store
//! (concurrent misses of one key share that load); the cache holds at most
//! [`MAX_CACHED_KEYS`] keys, evicting the least used. Every change made through the management
//! API invalidates the affected entries at once, so a blocked or deleted key (or a blocked
//! team, user or organization) fails on its next request; other instances hear of it through
//! [`crate::sync`] (Redis at once, the audit log within a second) and call the same
//! `invalidate_*` methods.

use std::sync::Arc;

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::memo::Memo;
use crate::error::GatewayError;
use crate::store::{Membership, MembershipFilter, Scope, Store, Table};
use crate::tenancy::{BudgetTier, KeyRecord, Organization, Team, User, from_row};

/// The identity of the master key in spend records.
pub const MASTER_KEY_ID: &str = "master";

/// A virtual key with the user, team and organization it belongs to.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: KeyRecord,
    /// For an old secret in its grace period: when it stops working.
    pub grace_until: Option<chrono::DateTime<Utc>>,
    pub user: Option<User>,
    pub team: Option<Team>,
    pub org: Option<Organization>,
    /// The user's membership of the key's team (for `max_budget_in_team`).
    pub member: Option<Membership>,
    /// The budget tier the key links to.
    pub key_tier: Option<BudgetTier>,
    /// The budget tiers the user, team and organization link to.
    pub user_tier: Option<BudgetTier>,
    pub team_tier: Option<BudgetTier>,
    pub org_tier: Option<BudgetTier>,
}

impl Identity {
    /// The tags every call of this key carries: the key's, its user's (personal keys: a team
    /// key answers to its team) and its team's.
    pub fn tag_lists(&self) -> impl Iterator<Item = &[String]> {
        let user = self.user.as_ref().filter(|_| self.team.is_none());
        [Some(self.key.tags.as_slice()), user.map(|u| u.tags.as_slice()), self.team.as_ref().map(|t| t.tags.as_slice())]
            .into_iter()
            .flatten()
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The master key: a proxy admin.
    Master,
    /// A virtual key.
    Key(Arc<Identity>),
}

impl Caller {
    pub fn key_id(&self) -> &str {
        match self {
            Caller::Master => MASTER_KEY_ID,
            Caller::Key(i) => &i.key.key_id,
        }
    }

    pub fn key(&self) -> Option<&KeyRecord> {
        match self {
            Caller::Master => None,
            Caller::Key(i) => Some(&i.key),
        }
    }

    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Caller::Master => None,
            Caller::Key(i) => Some(i),
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
    /// By the hash of the presented secret (an old secret in its grace period has its own
    /// entry for the same key).
    keys: Memo<String, Arc<Identity>>,
}

/// The most keys cached at once.
pub const MAX_CACHED_KEYS: u64 = 100_000;

/// The longest secret accepted; anything longer is not one of ours.
const MAX_SECRET_LEN: usize = 256;

impl IdentityCache {
    pub fn new(store: Arc<dyn Store>, master_key: Option<&str>) -> Self {
        Self { store, master_hash: master_key.map(hash_secret), keys: Memo::new(MAX_CACHED_KEYS) }
    }

    async fn load(&self, hash: &str) -> Result<Option<Identity>, GatewayError> {
        let now = Utc::now();
        let Some(found) = self.store.key_by_hash(hash, now).await? else { return Ok(None) };
        let key: KeyRecord = from_row(found.row)?;
        let user = match &key.user_id {
            Some(u) => self.store.get(Table::Users, u).await?.map(from_row::<User>).transpose()?,
            None => None,
        };
        let team = match &key.team_id {
            Some(t) => self.store.get(Table::Teams, t).await?.map(from_row::<Team>).transpose()?,
            None => None,
        };
        let org_id = key.organization_id.clone().or_else(|| team.as_ref().and_then(|t| t.organization_id.clone()));
        let org = match &org_id {
            Some(o) => self.store.get(Table::Organizations, o).await?.map(from_row::<Organization>).transpose()?,
            None => None,
        };
        let member = match (&key.team_id, &key.user_id) {
            (Some(t), Some(u)) => self
                .store
                .memberships(&MembershipFilter {
                    scope: Some(Scope::Team),
                    scope_id: Some(t.clone()),
                    user_id: Some(u.clone()),
                })
                .await?
                .into_iter()
                .next(),
            _ => None,
        };
        let key_tier = self.tier(key.budget_id.as_deref()).await?;
        let user_tier = self.tier(user.as_ref().and_then(|u| u.budget_id.as_deref())).await?;
        let team_tier = self.tier(team.as_ref().and_then(|t| t.budget_id.as_deref())).await?;
        let org_tier = self.tier(org.as_ref().and_then(|o| o.budget_id.as_deref())).await?;
        Ok(Some(Identity {
            key,
            grace_until: found.grace_until,
            user,
            team,
            org,
            member,
            key_tier,
            user_tier,
            team_tier,
            org_tier,
        }))
    }

    async fn tier(&self, id: Option<&str>) -> Result<Option<BudgetTier>, GatewayError> {
        match id {
            Some(b) => Ok(self.store.get(Table::Budgets, b).await?.map(from_row::<BudgetTier>).transpose()?),
            None => Ok(None),
        }
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
        let identity = self
            .keys
            .get_or_load(&hash, || async {
                let loaded = self.load(&hash).await?.ok_or_else(|| {
                    GatewayError::unauthenticated("invalid API key: no such key (it may have been deleted)")
                        .with_reason("invalid_api_key")
                })?;
                Ok(Arc::new(loaded))
            })
            .await?;
        let key = &identity.key;
        if identity.grace_until.is_some_and(|until| until <= Utc::now()) {
            self.keys.invalidate(&hash).await;
            return Err(GatewayError::unauthenticated(format!(
                "this secret of key {} was replaced and its grace period has ended; use the new secret",
                key.key_id
            ))
            .with_reason("invalid_api_key"));
        }
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
        if let Some(t) = identity.team.as_ref().filter(|t| t.blocked) {
            return Err(
                GatewayError::permission_denied(format!("team {:?} is blocked", t.team_id)).with_reason("team_blocked")
            );
        }
        if let Some(u) = identity.user.as_ref().filter(|u| u.blocked) {
            return Err(
                GatewayError::permission_denied(format!("user {:?} is blocked", u.user_id)).with_reason("user_blocked")
            );
        }
        if let Some(o) = identity.org.as_ref().filter(|o| o.blocked) {
            return Err(GatewayError::permission_denied(format!("organization {:?} is blocked", o.organization_id))
                .with_reason("organization_blocked"));
        }
        Ok(Caller::Key(identity))
    }

    /// Forgets a key, by the hash of its secret, so its next use reloads it.
    pub async fn invalidate(&self, token_hash: &str) {
        self.keys.invalidate(&token_hash.to_owned()).await;
        // An old secret in its grace period maps to the same key.
        let hash = token_hash.to_owned();
        self.keys.invalidate_if(move |i| i.key.token_hash == hash);
    }

    /// Forgets everything (a change whose reach is not tracked, e.g. a budget tier).
    pub fn invalidate_all(&self) {
        self.keys.invalidate_all();
    }

    pub fn invalidate_key_id(&self, key_id: &str) {
        let id = key_id.to_owned();
        self.keys.invalidate_if(move |i| i.key.key_id == id);
    }

    pub fn invalidate_user(&self, user_id: &str) {
        let id = user_id.to_owned();
        self.keys.invalidate_if(move |i| i.key.user_id.as_deref() == Some(id.as_str()));
    }

    pub fn invalidate_team(&self, team_id: &str) {
        let id = team_id.to_owned();
        self.keys.invalidate_if(move |i| i.key.team_id.as_deref() == Some(id.as_str()));
    }

    pub fn invalidate_org(&self, org_id: &str) {
        let id = org_id.to_owned();
        self.keys.invalidate_if(move |i| {
            i.key.organization_id.as_deref() == Some(id.as_str())
                || i.org.as_ref().is_some_and(|o| o.organization_id == id)
        });
    }

    /// Keys cached now.
    pub fn len(&self) -> u64 {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
