//! Tags on the hot path: which tags a call carries, and the budgets of those that have one.
//!
//! A call's tags are the key's and the team's, plus the request's (`tags`, `metadata.tags`,
//! or the `x-ferryman-tags` / `x-litellm-tags` header). Tag records are cached, absent ones
//! too (a tag needs no record to collect spend), and refreshed when an admin changes them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::error::GatewayError;
use crate::store::{Store, Table};
use crate::tenancy::{Tag, from_row};

/// The most tags one call may carry.
pub const MAX_TAGS: usize = 32;

pub struct TagCache {
    store: Arc<dyn Store>,
    map: RwLock<HashMap<String, Option<Arc<Tag>>>>,
}

impl TagCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, map: RwLock::new(HashMap::new()) }
    }

    /// The tag's record, if it has one.
    pub async fn get(&self, name: &str) -> Result<Option<Arc<Tag>>, GatewayError> {
        if let Some(hit) = self.map.read().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(hit);
        }
        let tag = self.store.get(Table::Tags, name).await?.map(from_row::<Tag>).transpose()?.map(Arc::new);
        if let Ok(mut m) = self.map.write() {
            m.insert(name.to_owned(), tag.clone());
        }
        Ok(tag)
    }

    pub fn invalidate(&self, name: &str) {
        if let Ok(mut m) = self.map.write() {
            m.remove(name);
        }
    }
}

/// The tags a request names, in its body (`tags`, `metadata.tags`) or a header value
/// (comma-separated); the failing field named when they are not strings.
pub fn from_request(extra: &serde_json::Map<String, Value>, header: Option<&str>) -> Result<Vec<String>, GatewayError> {
    let mut out = Vec::new();
    let mut take = |field: &str, v: &Value| -> Result<(), GatewayError> {
        let Value::Array(items) = v else {
            return Err(GatewayError::invalid(field, format!("{field}: must be a list of strings")));
        };
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(t) => {
                    crate::admin::tags::check_name(&format!("{field}[{i}]"), t)?;
                    out.push(t.to_owned());
                }
                None => {
                    return Err(GatewayError::invalid(
                        format!("{field}[{i}]"),
                        format!("{field}[{i}]: must be a string"),
                    ));
                }
            }
        }
        Ok(())
    };
    if let Some(v) = extra.get("tags") {
        take("tags", v)?;
    }
    if let Some(v) = extra.get("metadata").and_then(|m| m.get("tags")) {
        take("metadata.tags", v)?;
    }
    for t in header.into_iter().flat_map(|h| h.split(',')).map(str::trim).filter(|t| !t.is_empty()) {
        crate::admin::tags::check_name("x-ferryman-tags", t)?;
        out.push(t.to_owned());
    }
    Ok(out)
}

/// Merges tag lists, keeping the first occurrence of each.
pub fn merge<'a>(lists: impl IntoIterator<Item = &'a [String]>) -> Result<Vec<String>, GatewayError> {
    let mut out: Vec<String> = Vec::new();
    for list in lists {
        for t in list {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
    }
    if out.len() > MAX_TAGS {
        return Err(GatewayError::invalid("tags", format!("tags: at most {MAX_TAGS} tags a call")));
    }
    Ok(out)
}
