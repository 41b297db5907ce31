//! Keeping every instance's caches true to the database.
//!
//! A management change invalidates what it made stale on this instance at once
//! ([`crate::gateway::Gateway::invalidate`]). Other instances hear of it two ways:
//!
//! - [`pubsub`]: Redis pub/sub, when `redis_url` is set — within a round trip;
//! - [`feed`]: the audit log, which every management commit appends to in its own transaction
//!   and in commit order. Each instance polls its head every [`feed::POLL_INTERVAL`] and
//!   applies what the new entries changed, so without Redis (or when Redis was down, or a
//!   message was lost) a change is honoured everywhere within about a second of the database
//!   being reachable.
//!
//! Both deliver the same [`Invalidation`]s to the same [`apply`]; applying one twice only
//! costs a reload.

pub mod feed;
pub mod pubsub;

use serde::{Deserialize, Serialize};

pub use pubsub::{Sync, start};

use crate::gateway::Gateway;

/// What changed, as the caches key it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Invalidation {
    KeyHash(String),
    KeyId(String),
    User(String),
    Team(String),
    Org(String),
    Customer(String),
    Tag(String),
    /// Budget tiers and anything else whose reach is not tracked.
    All,
    /// Another instance reloaded its config file: reload `model_list` and `router_settings`
    /// from this instance's own file (governance is already in the shared database).
    Models,
    /// An MCP server was registered, changed or removed through the API: read them again.
    McpServers,
}

impl Invalidation {
    /// What an audit entry's change made stale, by the object it names.
    pub fn of_audited(object_type: &str, object_id: &str) -> Invalidation {
        let id = object_id.to_owned();
        match object_type {
            "key" => Invalidation::KeyId(id),
            "user" => Invalidation::User(id),
            "team" => Invalidation::Team(id),
            "organization" => Invalidation::Org(id),
            "customer" => Invalidation::Customer(id),
            "tag" => Invalidation::Tag(id),
            "mcp_server" => Invalidation::McpServers,
            // Budget tiers, and anything added later that nobody mapped: forget everything.
            _ => Invalidation::All,
        }
    }
}

/// Applies an invalidation to this instance's caches.
pub async fn apply(gw: &Gateway, inv: &Invalidation) {
    match inv {
        Invalidation::KeyHash(h) => gw.identities.invalidate(h).await,
        Invalidation::KeyId(id) => gw.identities.invalidate_key_id(id),
        Invalidation::User(id) => gw.identities.invalidate_user(id),
        Invalidation::Team(id) => gw.identities.invalidate_team(id),
        Invalidation::Org(id) => gw.identities.invalidate_org(id),
        Invalidation::Customer(id) => gw.customers.invalidate(id).await,
        Invalidation::Tag(_) => refresh_tags(gw).await,
        Invalidation::All => {
            gw.identities.invalidate_all();
            gw.customers.invalidate_all();
            refresh_tags(gw).await;
        }
        Invalidation::Models => gw.models_changed.notify_one(),
        Invalidation::McpServers => gw.mcp_changed.notify_one(),
    }
}

/// Reads the tag records again; if the database is away, the feed's next poll tries again.
async fn refresh_tags(gw: &Gateway) {
    gw.tags.invalidate();
    if let Err(e) = gw.tags.refresh().await {
        tracing::warn!(error = %e.message, "cannot read tag records; retrying on the next poll");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audited_objects_map_to_what_they_make_stale() {
        assert_eq!(Invalidation::of_audited("key", "k1"), Invalidation::KeyId("k1".into()));
        assert_eq!(Invalidation::of_audited("organization", "o"), Invalidation::Org("o".into()));
        assert_eq!(Invalidation::of_audited("mcp_server", "s"), Invalidation::McpServers);
        assert_eq!(Invalidation::of_audited("budget", "b"), Invalidation::All);
        assert_eq!(Invalidation::of_audited("something_new", "x"), Invalidation::All);
    }
}
