//! The response cache: opt-in (`litellm_settings.cache: true`), exact match on the normalized
//! request, in the process (`cache_params.type: local`) or in Redis (`redis`).
//!
//! The key is a SHA-256 of the scope, the model name and the request with everything that does
//! not change the answer left out (`stream`, `stream_options`, `user`, `metadata`, `tags`, the
//! `cache` controls) and object keys sorted. The scope keeps tenants apart: by default a team's
//! keys share entries (a key without a team has its own), and `cache_params.scope` may widen it
//! to the organization or everyone, or narrow it to the key. Per request, `cache: {"no-cache":
//! true}` skips the lookup, `{"no-store": true}` the store, and `{"ttl": seconds}` sets the
//! entry's lifetime. Whole (non-streamed) completions are cached; a hit costs nothing and is
//! marked in the headers and the spend record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::chat::{ChatRequest, ChatResponse};
use crate::governance::Caller;

/// Whose entries a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Key,
    Team,
    Organization,
    Global,
}

/// `litellm_settings.cache` and `cache_params`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub redis_url: Option<crate::config::Secret>,
    /// Prefix of the entries' Redis keys (`general_settings.redis_key_prefix`).
    pub redis_prefix: String,
    pub ttl: Duration,
    pub scope: Scope,
    pub max_entries: usize,
}

/// A request's own cache controls.
#[derive(Debug, Default, Clone, Copy)]
pub struct Controls {
    pub no_cache: bool,
    pub no_store: bool,
    pub ttl: Option<Duration>,
}

impl Controls {
    /// Takes the `cache` object out of the request (it never goes upstream).
    pub fn take(extra: &mut Map<String, Value>) -> Self {
        let Some(Value::Object(c)) = extra.remove("cache") else { return Self::default() };
        let flag = |k: &str| c.get(k).and_then(Value::as_bool).unwrap_or(false);
        Self {
            no_cache: flag("no-cache"),
            no_store: flag("no-store"),
            ttl: c.get("ttl").or_else(|| c.get("s-maxage")).and_then(Value::as_u64).map(Duration::from_secs),
        }
    }
}

enum Store {
    Local(Mutex<HashMap<String, (Instant, Vec<u8>)>>),
    Redis { client: Box<redis::Client>, conn: tokio::sync::Mutex<Option<MultiplexedConnection>> },
}

pub struct ResponseCache {
    config: CacheConfig,
    store: Store,
}

/// Sorts object keys, recursively, so equal requests serialize alike.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), canonical(&m[k]))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

impl ResponseCache {
    pub fn new(config: CacheConfig) -> Result<Self, String> {
        let store = match &config.redis_url {
            Some(url) => Store::Redis {
                client: Box::new(
                    redis::Client::open(url.expose())
                        .map_err(|e| format!("not a usable Redis URL ({:?})", e.kind()))?,
                ),
                conn: tokio::sync::Mutex::new(None),
            },
            None => Store::Local(Mutex::new(HashMap::new())),
        };
        Ok(Self { config, store })
    }

    /// The entry key of a request by `caller` for the model name `model`.
    pub fn key(&self, caller: &Caller, model: &str, request: &ChatRequest) -> String {
        let identity = caller.identity();
        let scope = match self.config.scope {
            Scope::Global => "global".to_owned(),
            Scope::Organization => match identity.and_then(|i| {
                i.key.organization_id.clone().or_else(|| i.org.as_ref().map(|o| o.organization_id.clone()))
            }) {
                Some(org) => format!("org:{org}"),
                None => format!("key:{}", caller.key_id()),
            },
            Scope::Team => match identity.and_then(|i| i.key.team_id.clone()) {
                Some(team) => format!("team:{team}"),
                None => format!("key:{}", caller.key_id()),
            },
            Scope::Key => format!("key:{}", caller.key_id()),
        };
        let mut body = request.to_json();
        if let Value::Object(m) = &mut body {
            for k in ["stream", "stream_options", "user", "metadata", "tags", "cache", "model"] {
                m.remove(k);
            }
        }
        let mut h = Sha256::new();
        h.update(scope.as_bytes());
        h.update([0]);
        h.update(model.as_bytes());
        // A legacy completion and a chat call with the same text are different requests.
        h.update(if request.legacy_prompt.is_some() { &b"\0completion\0"[..] } else { &b"\0chat\0"[..] });
        h.update(canonical(&body).to_string().as_bytes());
        hex::encode(h.finalize())
    }

    async fn redis(&self) -> Option<MultiplexedConnection> {
        let Store::Redis { client, conn } = &self.store else { return None };
        let mut slot = conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Some(c.clone());
        }
        let c = tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection()).await.ok()?.ok()?;
        *slot = Some(c.clone());
        Some(c)
    }

    /// The cached answer, if there is a live one. A Redis that fails is a miss, never an error.
    pub async fn get(&self, key: &str) -> Option<ChatResponse> {
        let bytes = match &self.store {
            Store::Local(map) => {
                let mut map = map.lock().ok()?;
                match map.get(key) {
                    Some((until, bytes)) if Instant::now() < *until => bytes.clone(),
                    Some(_) => {
                        map.remove(key);
                        return None;
                    }
                    None => return None,
                }
            }
            Store::Redis { .. } => {
                let mut conn = self.redis().await?;
                let mut cmd = redis::cmd("GET");
                cmd.arg(format!("{}:cache:{key}", self.config.redis_prefix));
                match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<Option<Vec<u8>>>(&mut conn)).await {
                    Ok(Ok(v)) => v?,
                    _ => {
                        self.forget_connection().await;
                        return None;
                    }
                }
            }
        };
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores an answer for `ttl` (the request's, else `cache_params.ttl`).
    pub async fn put(&self, key: &str, response: &ChatResponse, ttl: Option<Duration>) {
        let ttl = ttl.unwrap_or(self.config.ttl);
        if ttl.is_zero() {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(response) else { return };
        match &self.store {
            Store::Local(map) => {
                let Ok(mut map) = map.lock() else { return };
                let now = Instant::now();
                if map.len() >= self.config.max_entries {
                    map.retain(|_, (until, _)| *until > now);
                    // Still full: forget the entry that expires first.
                    if map.len() >= self.config.max_entries
                        && let Some(oldest) = map.iter().min_by_key(|(_, (until, _))| *until).map(|(k, _)| k.clone())
                    {
                        map.remove(&oldest);
                    }
                }
                map.insert(key.to_owned(), (now + ttl, bytes));
            }
            Store::Redis { .. } => {
                let Some(mut conn) = self.redis().await else { return };
                let mut cmd = redis::cmd("SET");
                cmd.arg(format!("{}:cache:{key}", self.config.redis_prefix))
                    .arg(bytes)
                    .arg("PX")
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
                if !matches!(tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<()>(&mut conn)).await, Ok(Ok(()))) {
                    self.forget_connection().await;
                }
            }
        }
    }

    async fn forget_connection(&self) {
        if let Store::Redis { conn, .. } = &self.store {
            *conn.lock().await = None;
        }
    }
}
