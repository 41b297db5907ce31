//! The audit log: every management change, append-only and hash-chained.
//!
//! Each entry's hash is SHA-256 over the previous entry's hash and the entry's canonical JSON
//! (keys sorted, no whitespace), so changing, removing or reordering any stored entry breaks
//! every hash after it. [`verify`] walks the chain from the start and names the first entry
//! that does not hold.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::store::{AuditDraft, AuditEntry, Store, StoreError};

/// Canonical JSON text of an optional value, as stored in `before_value` / `after_value`.
pub fn canonical(v: &Value) -> String {
    // serde_json's maps are sorted (no `preserve_order`), so this is canonical.
    v.to_string()
}

/// The hash of an entry given its place in the chain.
pub fn entry_hash(seq: i64, entry_id: &str, draft: &AuditDraft, prev_hash: &str) -> String {
    let body = json!({
        "seq": seq,
        "entry_id": entry_id,
        "at_us": draft.at.timestamp_micros(),
        "actor_user_id": draft.actor.user_id,
        "actor_key_id": draft.actor.key_id,
        "actor_role": draft.actor.role,
        "action": draft.action,
        "object_type": draft.object_type,
        "object_id": draft.object_id,
        "before": draft.before.as_ref().map(canonical),
        "after": draft.after.as_ref().map(canonical),
        "request_id": draft.request_id,
        "source_addr": draft.source_addr,
    });
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical(&body).as_bytes());
    hex::encode(h.finalize())
}

/// What verifying the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry holds; `entries` were checked.
    Intact { entries: u64 },
    /// The first entry (by `seq`) that does not hold, and why.
    Broken { seq: i64, entry_id: String, reason: String },
}

/// Walks the whole chain.
pub async fn verify(store: &dyn Store) -> Result<Verdict, StoreError> {
    let mut prev_hash = String::new();
    let mut prev_seq = 0i64;
    let mut count = 0u64;
    loop {
        let batch = store.scan_audit(prev_seq, 1000).await?;
        if batch.is_empty() {
            break;
        }
        for e in batch {
            let broken = |reason: String| Verdict::Broken { seq: e.seq, entry_id: e.entry_id.clone(), reason };
            if e.seq != prev_seq + 1 {
                return Ok(Verdict::Broken {
                    seq: e.seq,
                    entry_id: e.entry_id.clone(),
                    reason: format!("entries {} to {} are missing", prev_seq + 1, e.seq - 1),
                });
            }
            if e.prev_hash != prev_hash {
                return Ok(broken(
                    "its link to the previous entry does not match (an entry before it was removed or changed)".into(),
                ));
            }
            if entry_hash(e.seq, &e.entry_id, &e.draft, &e.prev_hash) != e.hash {
                return Ok(broken("its content does not match its hash (it was changed after it was written)".into()));
            }
            prev_hash = e.hash;
            prev_seq = e.seq;
            count += 1;
        }
    }
    let head = store.audit_head().await?;
    if head.seq != prev_seq || head.hash != prev_hash {
        return Ok(Verdict::Broken {
            seq: head.seq,
            entry_id: String::new(),
            reason: format!(
                "the chain ends at entry {prev_seq} but its head records entry {} (entries at the end were removed)",
                head.seq
            ),
        });
    }
    Ok(Verdict::Intact { entries: count })
}

/// An entry as JSON for the API.
pub fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "seq": e.seq,
        "id": e.entry_id,
        "updated_at": e.draft.at.to_rfc3339(),
        "changed_by": e.draft.actor.user_id,
        "changed_by_api_key": e.draft.actor.key_id,
        "actor_role": e.draft.actor.role,
        "action": e.draft.action,
        "table_name": e.draft.object_type,
        "object_type": e.draft.object_type,
        "object_id": e.draft.object_id,
        "before_value": e.draft.before,
        "updated_values": e.draft.after,
        "request_id": e.draft.request_id,
        "source_addr": e.draft.source_addr,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    })
}
