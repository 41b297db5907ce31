//! Cross-instance cache invalidation over Redis pub/sub.
//!
//! Every management change invalidates the affected cache entries on this instance at once
//! and publishes the same [`Invalidation`] on `<prefix>:invalidate`; every other instance
//! applies it on receipt, so a blocked key, team, user, organization or customer is refused
//! everywhere within a round trip. If the subscription drops, the instance forgets all its
//! cached identities when it reconnects (it may have missed messages).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::gateway::Gateway;
use crate::tasks;

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
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    inv: Invalidation,
}

/// The publishing side, present when a Redis URL is configured.
pub struct Sync {
    tx: mpsc::UnboundedSender<Invalidation>,
}

impl Sync {
    pub fn publish(&self, inv: Invalidation) {
        let _ = self.tx.send(inv);
    }
}

/// Applies an invalidation to this instance's caches.
pub fn apply(gw: &Gateway, inv: &Invalidation) {
    match inv {
        Invalidation::KeyHash(h) => gw.identities.invalidate(h),
        Invalidation::KeyId(id) => gw.identities.invalidate_key_id(id),
        Invalidation::User(id) => gw.identities.invalidate_user(id),
        Invalidation::Team(id) => gw.identities.invalidate_team(id),
        Invalidation::Org(id) => gw.identities.invalidate_org(id),
        Invalidation::Customer(id) => gw.customers.invalidate(id),
        Invalidation::Tag(name) => gw.tags.invalidate(name),
        Invalidation::All => {
            gw.identities.invalidate_all();
            gw.customers.invalidate_all();
        }
    }
}

/// Starts the publisher and the subscriber for `gateway`; returns the publishing handle.
pub fn start(gateway: &Arc<Gateway>, redis_url: &str, prefix: &str) -> Result<Sync, redis::RedisError> {
    let client = redis::Client::open(redis_url)?;
    let channel = format!("{prefix}:invalidate");
    let origin = uuid::Uuid::new_v4().to_string();
    let (tx, mut rx) = mpsc::unbounded_channel::<Invalidation>();

    let pub_client = client.clone();
    let pub_channel = channel.clone();
    let pub_origin = origin.clone();
    tasks::spawn("invalidation-publisher", async move {
        let mut conn = None;
        while let Some(inv) = rx.recv().await {
            let payload = serde_json::to_string(&Envelope { origin: pub_origin.clone(), inv }).unwrap_or_default();
            for attempt in 0..3 {
                if conn.is_none() {
                    conn = tokio::time::timeout(Duration::from_secs(2), pub_client.get_multiplexed_async_connection())
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
                let Some(c) = conn.as_mut() else {
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    continue;
                };
                let sent = tokio::time::timeout(
                    Duration::from_secs(1),
                    redis::cmd("PUBLISH").arg(&pub_channel).arg(&payload).query_async::<i64>(c),
                )
                .await;
                match sent {
                    Ok(Ok(_)) => break,
                    _ => {
                        conn = None;
                        tracing::warn!("cannot publish a cache invalidation to Redis; retrying");
                    }
                }
            }
        }
    });

    let gw = Arc::downgrade(gateway);
    tasks::spawn("invalidation-subscriber", async move {
        let mut first = true;
        loop {
            let Some(gateway) = gw.upgrade() else { return };
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(&channel).await.is_ok() {
                        if !first {
                            // Messages may have been missed while disconnected.
                            apply(&gateway, &Invalidation::All);
                        }
                        first = false;
                        tracing::info!(channel = %channel, "subscribed to cache invalidations");
                        drop(gateway);
                        let mut messages = pubsub.into_on_message();
                        while let Some(msg) = messages.next().await {
                            let Some(gateway) = gw.upgrade() else { return };
                            let Ok(payload) = msg.get_payload::<String>() else { continue };
                            match serde_json::from_str::<Envelope>(&payload) {
                                Ok(env) if env.origin != origin => apply(&gateway, &env.inv),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "ignoring a malformed invalidation"),
                            }
                        }
                        tracing::warn!("the Redis invalidation subscription closed; reconnecting");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to cache invalidations; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Ok(Sync { tx })
}
