//! `router_settings` (and the fallbacks LiteLLM also reads from `litellm_settings`), with
//! LiteLLM's names and defaults.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};

use super::reader::{Reader, join};

/// How a deployment is chosen among a model name's deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Random, weighted by each deployment's `weight` (LiteLLM's default).
    SimpleShuffle,
    /// The deployment with the fewest calls in flight.
    LeastBusy,
    /// The deployment with the lowest recent latency.
    LatencyBased,
    /// The deployment with the most room under its `rpm` / `tpm` this minute.
    UsageBased,
}

/// What kind of failure a retry policy or a fallback list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    BadRequest,
    Authentication,
    Timeout,
    RateLimit,
    ContentPolicy,
    ContextWindow,
    InternalServer,
}

impl FailureKind {
    /// LiteLLM's `retry_policy` keys.
    const POLICY_KEYS: [(&'static str, FailureKind); 6] = [
        ("BadRequestErrorRetries", FailureKind::BadRequest),
        ("AuthenticationErrorRetries", FailureKind::Authentication),
        ("TimeoutErrorRetries", FailureKind::Timeout),
        ("RateLimitErrorRetries", FailureKind::RateLimit),
        ("ContentPolicyViolationErrorRetries", FailureKind::ContentPolicy),
        ("InternalServerErrorRetries", FailureKind::InternalServer),
    ];
}

#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub strategy: Strategy,
    /// Retries of a failed call (`num_retries`, default 0), on other deployments of the same
    /// model name where there are any.
    pub num_retries: u32,
    /// Per failure kind, overriding `num_retries` (`retry_policy`).
    pub retry_policy: HashMap<FailureKind, u32>,
    /// Failures a deployment may have in a minute before it cools down (`allowed_fails`, 3).
    pub allowed_fails: u32,
    /// How long a failing deployment is left out (`cooldown_time`, 5 s).
    pub cooldown_time: Duration,
    /// The first wait between retries (`retry_after`, default 0: at once); it doubles each time.
    pub retry_after: Duration,
    /// Model name → model names to try when its deployments fail (`fallbacks`; `*` for any).
    pub fallbacks: HashMap<String, Vec<String>>,
    pub context_window_fallbacks: HashMap<String, Vec<String>>,
    pub content_policy_fallbacks: HashMap<String, Vec<String>>,
    /// Alias → model name (`model_group_alias`).
    pub model_group_alias: HashMap<String, String>,
    /// The default idle timeout of streams (`stream_timeout`); else each deployment's timeout.
    pub stream_timeout: Option<Duration>,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            strategy: Strategy::SimpleShuffle,
            num_retries: 0,
            retry_policy: HashMap::new(),
            allowed_fails: 3,
            cooldown_time: Duration::from_secs(5),
            retry_after: Duration::ZERO,
            fallbacks: HashMap::new(),
            context_window_fallbacks: HashMap::new(),
            content_policy_fallbacks: HashMap::new(),
            model_group_alias: HashMap::new(),
            stream_timeout: None,
        }
    }
}

/// The `router_settings` keys this version reads.
pub const KEYS: &[&str] = &[
    "timeout",
    "stream_timeout",
    "routing_strategy",
    "num_retries",
    "retry_policy",
    "allowed_fails",
    "cooldown_time",
    "retry_after",
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "model_group_alias",
];

/// `[{"gpt-4o": ["claude", "gemini"]}, ...]`, LiteLLM's fallback lists.
fn fallbacks(r: &mut Reader, path: &str, value: Option<&Value>) -> HashMap<String, Vec<String>> {
    let mut out = HashMap::new();
    let Some(list) = value.and_then(|v| r.list(path, v)) else { return out };
    for (i, entry) in list.iter().enumerate() {
        let entry_path = format!("{path}[{i}]");
        let Some(map) = r.object(&entry_path, entry) else { continue };
        for (model, targets) in map {
            let target_path = join(&entry_path, model);
            let targets: Vec<String> = match targets {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .filter_map(|(j, t)| match t.as_str() {
                        Some(s) if !s.trim().is_empty() => Some(s.to_owned()),
                        _ => {
                            r.problem(format!("{target_path}[{j}]"), "expected a model name");
                            None
                        }
                    })
                    .collect(),
                _ => {
                    r.problem(&target_path, "expected a list of model names");
                    continue;
                }
            };
            out.insert(model.clone(), targets);
        }
    }
    out
}

pub fn read(router: &Map<String, Value>, litellm: &Map<String, Value>, r: &mut Reader) -> RouterSettings {
    let mut s = RouterSettings::default();
    const P: &str = "router_settings";
    if let Some(name) = r.string(P, router, "routing_strategy") {
        s.strategy = match name.as_str() {
            "simple-shuffle" => Strategy::SimpleShuffle,
            "least-busy" => Strategy::LeastBusy,
            "latency-based-routing" => Strategy::LatencyBased,
            "usage-based-routing" | "usage-based-routing-v2" => Strategy::UsageBased,
            other => {
                r.problem(
                    join(P, "routing_strategy"),
                    format!(
                        "{other:?} is not a routing strategy (simple-shuffle, least-busy, latency-based-routing, usage-based-routing)"
                    ),
                );
                Strategy::SimpleShuffle
            }
        };
    }
    let small = |r: &mut Reader, key: &str| r.u64(P, router, key).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    if let Some(n) = small(r, "num_retries")
        .or_else(|| r.u64("litellm_settings", litellm, "num_retries").map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    {
        s.num_retries = n;
    }
    if let Some(n) = small(r, "allowed_fails") {
        s.allowed_fails = n;
    }
    if let Some(d) = r.seconds(P, router, "cooldown_time") {
        s.cooldown_time = d;
    }
    if let Some(d) = r.seconds(P, router, "retry_after") {
        s.retry_after = d;
    }
    s.stream_timeout = r.seconds(P, router, "stream_timeout");
    if let Some(policy) = router.get("retry_policy").and_then(|v| r.object(&join(P, "retry_policy"), v)) {
        let path = join(P, "retry_policy");
        for key in policy.keys() {
            match FailureKind::POLICY_KEYS.iter().find(|(k, _)| k == key) {
                Some((_, kind)) => {
                    if let Some(n) = r.u64(&path, policy, key) {
                        s.retry_policy.insert(*kind, u32::try_from(n).unwrap_or(u32::MAX));
                    }
                }
                None => r.problem(
                    join(&path, key),
                    format!(
                        "not a retry policy key ({})",
                        FailureKind::POLICY_KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                    ),
                ),
            }
        }
    }
    for (key, target) in [
        ("fallbacks", &mut s.fallbacks),
        ("context_window_fallbacks", &mut s.context_window_fallbacks),
        ("content_policy_fallbacks", &mut s.content_policy_fallbacks),
    ] {
        let (path, value) = match router.get(key) {
            Some(v) => (join(P, key), Some(v)),
            None => (join("litellm_settings", key), litellm.get(key)),
        };
        *target = fallbacks(r, &path, value);
    }
    if let Some(aliases) = router.get("model_group_alias").and_then(|v| r.object(&join(P, "model_group_alias"), v)) {
        let path = join(P, "model_group_alias");
        for key in aliases.keys() {
            if let Some(target) = r.string(&path, aliases, key) {
                s.model_group_alias.insert(key.clone(), target);
            }
        }
    }
    s
}
