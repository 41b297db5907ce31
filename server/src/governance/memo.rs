//! A bounded cache of store lookups, shared by the caches on the hot path (identities,
//! customers).
//!
//! Callers choose what goes in (a key's secret, a customer id), so every cache is bounded by
//! entry count and evicts the least recently and frequently used entries (moka's TinyLFU);
//! concurrent misses of one key wait for a single load instead of each asking the store.
//!
//! Invalidation must never lose to a load in flight: a load that began before an
//! invalidation is not kept, however the two interleave. Every invalidation bumps a
//! generation first; a load whose generation moved is thrown away (and tried again), and one
//! that moved just after moka stored it is removed again by the loader itself.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::GatewayError;

/// How often a load is tried again when invalidations keep overtaking it.
const LOAD_ATTEMPTS: usize = 3;

/// Why a load was not kept.
enum Unkept<V> {
    Failed(GatewayError),
    /// Loaded, but an invalidation landed meanwhile.
    Stale(V),
}

pub struct Memo<K, V> {
    cache: moka::future::Cache<K, V>,
    generation: AtomicU64,
}

impl<K, V> Memo<K, V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        let cache = moka::future::Cache::builder().max_capacity(capacity).support_invalidation_closures().build();
        Self { cache, generation: AtomicU64::new(0) }
    }

    /// The cached value of `key`, or `load`'s (kept unless an invalidation overtook it).
    /// Errors are not cached.
    pub async fn get_or_load<F, Fut>(&self, key: &K, load: F) -> Result<V, GatewayError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, GatewayError>>,
    {
        if let Some(v) = self.cache.get(key).await {
            return Ok(v);
        }
        let mut last = None;
        for _ in 0..LOAD_ATTEMPTS {
            let start = self.generation.load(Ordering::SeqCst);
            let ran = AtomicBool::new(false);
            let loaded = self
                .cache
                .try_get_with_by_ref(key, async {
                    ran.store(true, Ordering::Relaxed);
                    match load().await {
                        Ok(v) if self.generation.load(Ordering::SeqCst) == start => Ok(v),
                        Ok(v) => Err(Unkept::Stale(v)),
                        Err(e) => Err(Unkept::Failed(e)),
                    }
                })
                .await;
            match loaded {
                Ok(v) => {
                    // An invalidation between the check above and moka storing the value.
                    if ran.load(Ordering::Relaxed) && self.generation.load(Ordering::SeqCst) != start {
                        self.cache.invalidate(key).await;
                        last = Some(v);
                        continue;
                    }
                    return Ok(v);
                }
                Err(unkept) => match &*unkept {
                    Unkept::Failed(e) => return Err(e.clone()),
                    Unkept::Stale(v) => last = Some(v.clone()),
                },
            }
        }
        // Invalidations kept overtaking the load: serve the newest copy without keeping it.
        last.ok_or_else(|| GatewayError::internal("a cache load did not finish"))
    }

    /// Forgets `key`.
    pub async fn invalidate(&self, key: &K) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate(key).await;
    }

    /// Forgets every entry `pred` matches.
    pub fn invalidate_if(&self, pred: impl Fn(&V) -> bool + Send + Sync + 'static) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.cache.invalidate_entries_if(move |_, v| pred(v)).is_err() {
            // Only when built without closure support, which `new` always asks for.
            self.cache.invalidate_all();
        }
    }

    /// Forgets everything.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }

    /// Entries cached now (approximate: moka counts lazily).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_misses_load_once() {
        let memo: Arc<Memo<String, u32>> = Arc::new(Memo::new(10));
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (memo, loads) = (memo.clone(), loads.clone());
            tasks.push(crate::tasks::spawn("test", async move {
                memo.get_or_load(&"k".to_owned(), || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(7)
                })
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_load_overtaken_by_an_invalidation_is_not_kept() {
        let memo: Arc<Memo<String, u32>> = Arc::new(Memo::new(10));
        let version = Arc::new(AtomicUsize::new(1));
        let (m, v) = (memo.clone(), version.clone());
        let slow = crate::tasks::spawn("test", async move {
            m.get_or_load(&"k".to_owned(), || {
                let seen = v.load(Ordering::SeqCst) as u32;
                async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(seen)
                }
            })
            .await
            .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The stored value changes and is invalidated while the first load is in flight.
        version.store(2, Ordering::SeqCst);
        memo.invalidate(&"k".to_owned()).await;
        assert_eq!(slow.await.unwrap(), 2, "the overtaken load was made again");
        let now = memo.get_or_load(&"k".to_owned(), || async { Ok(99) }).await.unwrap();
        assert_eq!(now, 2, "the fresh load was kept");
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_the_size_is_bounded() {
        let memo: Memo<u32, u32> = Memo::new(100);
        assert!(memo.get_or_load(&1, || async { Err(GatewayError::internal("down")) }).await.is_err());
        assert_eq!(memo.get_or_load(&1, || async { Ok(1) }).await.unwrap(), 1);
        for i in 0..10_000 {
            memo.get_or_load(&i, || async move { Ok(i) }).await.unwrap();
        }
        memo.cache.run_pending_tasks().await;
        assert!(memo.len() <= 100, "{} entries", memo.len());
        memo.invalidate_if(|v| *v % 2 == 0);
        memo.invalidate_all();
        memo.cache.run_pending_tasks().await;
        assert_eq!(memo.len(), 0);
    }
}
