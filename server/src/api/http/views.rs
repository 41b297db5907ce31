//! Resources in LiteLLM's response shapes: money as USD numbers (plus exact `*_nanos`), the
//! row's spend, times and `etag`, never a secret or its hash.

use serde_json::{Map, Value, json};

use chrono::{DateTime, Utc};

use crate::governance::budgets::period_bounds;
use crate::governance::customers::CUSTOMER_ANCHOR;
use crate::governance::duration::parse_period;
use crate::pricing::Nanos;
use crate::store::Membership;
use crate::store::Table;
use crate::tenancy::{KeyRecord, Resource};

/// Fields holding nano-USD in stored documents.
const MONEY: &[&str] = &["max_budget", "soft_budget", "budget_limit", "max_budget_in_team"];

fn money(map: &mut Map<String, Value>) {
    for (k, v) in map.iter_mut() {
        if let Value::Object(inner) = v {
            money(inner);
        }
        let _ = k;
    }
    for field in MONEY {
        if let Some(n) = map.get(*field).and_then(Value::as_i64) {
            map.insert(format!("{field}_nanos"), json!(n));
            map.insert((*field).to_owned(), json!(Nanos(n).as_usd_f64()));
        }
    }
}

/// A resource as the API shows it.
pub fn view<R: Resource>(r: &R) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        money(map);
        map.remove("token_hash");
        let m = r.meta();
        map.insert("spend".to_owned(), json!(m.spend.as_usd_f64()));
        map.insert("spend_nanos".to_owned(), json!(m.spend.0));
        map.insert("etag".to_owned(), json!(m.version));
        map.insert("created_at".to_owned(), json!(m.created_at.to_rfc3339()));
        map.insert("updated_at".to_owned(), json!(m.updated_at.to_rfc3339()));
        // When the current budget period ends (periods count from the anchor; customers'
        // from the Unix epoch).
        if let Some(d) = map.get("budget_duration").and_then(Value::as_str).and_then(|d| parse_period(d).ok()) {
            let anchor = if R::TABLE == Table::Customers { CUSTOMER_ANCHOR } else { m.created_at };
            let (start, next) = period_bounds(anchor, Some(d), Utc::now());
            map.insert(
                "budget_period_start".to_owned(),
                json!(DateTime::from_timestamp_micros(start).map(|t| t.to_rfc3339())),
            );
            map.insert("budget_reset_at".to_owned(), json!(next.map(|t| t.to_rfc3339())));
        }
    }
    v
}

/// A key: LiteLLM calls its id `token` and its expiry `expires`.
pub fn key_view(k: &KeyRecord) -> Value {
    let mut v = view(k);
    if let Value::Object(map) = &mut v {
        if let Some(e) = map.remove("expires_at") {
            map.insert("expires".to_owned(), e);
        } else {
            map.insert("expires".to_owned(), Value::Null);
        }
        map.insert("token".to_owned(), json!(k.key_id));
        map.insert("status".to_owned(), json!(if k.blocked { "blocked" } else { "active" }));
    }
    v
}

pub fn membership_view(m: &Membership) -> Value {
    let mut data = match &m.data {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    money(&mut data);
    let mut out = json!({
        "user_id": m.user_id,
        "role": m.role,
        "spend": m.spend.as_usd_f64(),
        "spend_nanos": m.spend.0,
        "created_at": m.created_at.to_rfc3339(),
    });
    if let Value::Object(map) = &mut out {
        map.extend(data);
    }
    out
}
