//! The audit log as a change feed between instances.
//!
//! Every management commit appends its audit entries in the same transaction, numbered in
//! commit order (the chain's head row is locked by every writer). So an instance that polls
//! the head and reads the entries past the last one it saw learns of every change, whether or
//! not Redis delivered it: a key deleted or blocked on one instance stops working on the
//! others within [`POLL_INTERVAL`] (plus the read) of the database being reachable. A poll is
//! one single-row read; entries are read only when the head moved.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Invalidation, apply};
use crate::gateway::Gateway;
use crate::store::StoreError;
use crate::tasks;

/// How often every instance looks at the audit log's head.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Entries read per query while catching up.
const BATCH: u32 = 500;

/// Further behind than this, an instance forgets everything instead of reading every entry.
const MAX_BEHIND: i64 = 5_000;

/// Follows the audit log from entry `seen` on (the head when the instance started serving).
pub fn start(gateway: &Arc<Gateway>, seen: i64) {
    tasks::spawn("audit-feed", follow(Arc::downgrade(gateway), seen));
}

async fn follow(gw: Weak<Gateway>, mut seen: i64) {
    let mut failing = false;
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let Some(gw) = gw.upgrade() else { return };
        match catch_up(&gw, seen).await {
            Ok(next) => {
                if failing {
                    tracing::info!("the audit feed reads the database again");
                    failing = false;
                }
                seen = next;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the audit log to follow other instances' changes; retrying every second");
                    failing = true;
                }
            }
        }
        // A tag change whose reload failed earlier.
        let _ = gw.tags.refresh().await;
    }
}

/// Applies every change after entry `seen`; returns the last entry applied.
async fn catch_up(gw: &Gateway, seen: i64) -> Result<i64, StoreError> {
    let head = gw.store.audit_head().await?.seq;
    if head == seen {
        return Ok(seen);
    }
    // Behind by a lot, or a log that went backwards (a restored database): start afresh.
    if head < seen || head - seen > MAX_BEHIND {
        tracing::warn!(seen, head, "the audit log moved further than the feed follows; forgetting cached identities");
        apply(gw, &Invalidation::All).await;
        return Ok(head);
    }
    let mut changed: Vec<Invalidation> = Vec::new();
    let mut at = seen;
    while at < head {
        let entries = gw.store.scan_audit(at, BATCH).await?;
        let Some(first) = entries.first() else { break };
        if first.seq != at + 1 {
            // Entries were removed in between: what they changed is unknown.
            apply(gw, &Invalidation::All).await;
            return Ok(entries.last().map_or(head, |e| e.seq));
        }
        for e in &entries {
            let inv = Invalidation::of_audited(&e.draft.object_type, &e.draft.object_id);
            if !changed.contains(&inv) {
                changed.push(inv);
            }
            at = e.seq;
        }
    }
    for inv in &changed {
        apply(gw, inv).await;
    }
    Ok(at)
}
