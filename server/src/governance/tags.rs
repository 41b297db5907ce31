//! Tags on the hot path: which tags a call carries, and the budgets of those that have one.
//!
//! A call's tags are the key's and the team's, plus the request's (`tags`, `metadata.tags`,
//! or the `x-ferryman-tags` / `x-litellm-tags` header). Tag records (a budget, limits) are
//! made only by admins, so every instance holds all of them in memory and a tag without one
//! costs the store nothing: any caller may send any number of distinct tags without growing
//! a cache or causing a read. A change reloads the records (see [`TagCache::refresh`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::error::GatewayError;
use crate::store::{PageRequest, RowFilter, Store, Table};
use crate::tenancy::{Tag, from_row};

/// The most tags one call may carry.
pub const MAX_TAGS: usize = 32;

/// Every tag record, by name.
pub struct TagCache {
    store: Arc<dyn Store>,
    records: arc_swap::ArcSwap<HashMap<String, Arc<Tag>>>,
    /// A change was heard that the records do not show yet.
    stale: AtomicBool,
    /// One reload at a time.
    refreshing: tokio::sync::Mutex<()>,
}

impl TagCache {
    /// Reads every tag record.
    pub async fn load(store: Arc<dyn Store>) -> Result<Self, GatewayError> {
        let cache =
            Self { store, records: Default::default(), stale: AtomicBool::new(true), refreshing: Default::default() };
        cache.refresh().await?;
        Ok(cache)
    }

    /// The tag's record, if it has one.
    pub fn get(&self, name: &str) -> Option<Arc<Tag>> {
        self.records.load().get(name).cloned()
    }

    /// Notes that a tag changed; [`TagCache::refresh`] reads it.
    pub fn invalidate(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    /// Reads every tag record again if a change was noted since the last read. On failure the
    /// change stays noted, for the next try.
    pub async fn refresh(&self) -> Result<(), GatewayError> {
        let _one = self.refreshing.lock().await;
        if !self.stale.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let read = async {
            let mut all = HashMap::new();
            let mut token = None;
            loop {
                let page =
                    self.store.list(Table::Tags, &RowFilter::default(), &PageRequest::new(1000, token.take())).await?;
                for row in page.items {
                    let tag: Tag = from_row(row)?;
                    all.insert(tag.name.clone(), Arc::new(tag));
                }
                match page.next_token {
                    Some(t) => token = Some(t),
                    None => return Ok::<_, GatewayError>(all),
                }
            }
        };
        match read.await {
            Ok(all) => {
                self.records.store(Arc::new(all));
                Ok(())
            }
            Err(e) => {
                self.stale.store(true, Ordering::SeqCst);
                Err(e)
            }
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
