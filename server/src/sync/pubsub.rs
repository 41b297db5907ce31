//! Invalidations over Redis pub/sub: the fast path between instances.
//!
//! Every management change invalidates the affected cache entries on this instance at once
//! and publishes the same [`Invalidation`] on `<prefix>:invalidate`; every other instance
//! applies it on receipt, so a blocked key, team, user, organization or customer is refused
//! everywhere within a round trip. If the subscription drops, the instance forgets all its
//! cached identities when it reconnects (it may have missed messages).
//!
//! Every publication also increments `<prefix>:invalidate:version` in the same transaction.
//! Each instance counts the messages it receives and compares, once a second, with that
//! version; if it is behind, a message went missing and it forgets everything cached. (This
//! is the only way a missed `Models` message is noticed: config reloads are not in the
//! database, so the audit feed does not carry them.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Invalidation, apply};
use crate::gateway::Gateway;
use crate::tasks;

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

/// Starts the publisher and the subscriber for `gateway`; returns the publishing handle.
pub fn start(gateway: &Arc<Gateway>, redis_url: &str, prefix: &str) -> Result<Sync, redis::RedisError> {
    let client = redis::Client::open(redis_url)?;
    let channel = format!("{prefix}:invalidate");
    let version_key = format!("{prefix}:invalidate:version");
    let origin = uuid::Uuid::new_v4().to_string();
    let (tx, mut rx) = mpsc::unbounded_channel::<Invalidation>();

    let pub_client = client.clone();
    let pub_channel = channel.clone();
    let pub_version = version_key.clone();
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
                    redis::pipe()
                        .atomic()
                        .cmd("INCR")
                        .arg(&pub_version)
                        .ignore()
                        .cmd("PUBLISH")
                        .arg(&pub_channel)
                        .arg(&payload)
                        .ignore()
                        .query_async::<()>(c),
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

    // Messages received, counted against the published version.
    let seen = Arc::new(AtomicU64::new(0));
    let subscribed = Arc::new(AtomicBool::new(false));
    tasks::spawn(
        "invalidation-version-check",
        version_check(Arc::downgrade(gateway), client.clone(), version_key, seen.clone(), subscribed.clone()),
    );

    let gw = Arc::downgrade(gateway);
    let version_key_sub = format!("{prefix}:invalidate:version");
    tasks::spawn("invalidation-subscriber", async move {
        let mut first = true;
        loop {
            let Some(gateway) = gw.upgrade() else { return };
            match tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await {
                Ok(Ok(mut pubsub)) => {
                    let subscribe = tokio::time::timeout(Duration::from_secs(2), pubsub.subscribe(&channel)).await;
                    if matches!(subscribe, Ok(Ok(()))) {
                        if !first {
                            // Messages may have been missed while disconnected.
                            apply(&gateway, &Invalidation::All).await;
                            apply(&gateway, &Invalidation::Models).await;
                        }
                        first = false;
                        seen.store(read_version(&client, &version_key_sub).await.unwrap_or(0), Ordering::SeqCst);
                        subscribed.store(true, Ordering::SeqCst);
                        tracing::info!(channel = %channel, "subscribed to cache invalidations");
                        drop(gateway);
                        let mut messages = pubsub.into_on_message();
                        while let Some(msg) = messages.next().await {
                            let Some(gateway) = gw.upgrade() else { return };
                            seen.fetch_add(1, Ordering::SeqCst);
                            let Ok(payload) = msg.get_payload::<String>() else { continue };
                            match serde_json::from_str::<Envelope>(&payload) {
                                Ok(env) if env.origin != origin => apply(&gateway, &env.inv).await,
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "ignoring a malformed invalidation"),
                            }
                        }
                        subscribed.store(false, Ordering::SeqCst);
                        tracing::warn!("the Redis invalidation subscription closed; reconnecting");
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = ?e.kind(), "cannot subscribe to cache invalidations; retrying"),
                Err(_) => tracing::warn!("subscribing to cache invalidations timed out; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Ok(Sync { tx })
}

async fn read_version(client: &redis::Client, key: &str) -> Option<u64> {
    let mut conn =
        tokio::time::timeout(Duration::from_secs(1), client.get_multiplexed_async_connection()).await.ok()?.ok()?;
    let mut cmd = redis::cmd("GET");
    cmd.arg(key);
    let v = tokio::time::timeout(Duration::from_secs(1), cmd.query_async::<Option<u64>>(&mut conn)).await.ok()?.ok()?;
    Some(v.unwrap_or(0))
}

/// Once a second, while subscribed: a published version ahead of the messages received means
/// one went missing, so forget everything cached.
async fn version_check(
    gw: std::sync::Weak<Gateway>,
    client: redis::Client,
    key: String,
    seen: Arc<AtomicU64>,
    subscribed: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(gateway) = gw.upgrade() else { return };
        if !subscribed.load(Ordering::SeqCst) {
            continue;
        }
        // Read what was received before the version: a message arriving in between then only
        // makes the version look ahead, which the second look below forgives.
        let before = seen.load(Ordering::SeqCst);
        let Some(version) = read_version(&client, &key).await else { continue };
        if version > before {
            // Give a message still in flight a moment before calling it lost.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let received = seen.load(Ordering::SeqCst);
            if received < version {
                tracing::warn!(version, received, "missed a cache invalidation; forgetting cached identities");
                apply(&gateway, &Invalidation::All).await;
                apply(&gateway, &Invalidation::Models).await;
                // Count the missing ones as received, keeping any that arrived meanwhile.
                seen.fetch_add(version - received, Ordering::SeqCst);
            }
        } else if version < before {
            // Messages published between subscribing and reading the version were counted
            // twice; lower the count only if nothing arrived since it was read.
            let _ = seen.compare_exchange(before, version, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}
