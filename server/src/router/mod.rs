//! Model names → deployments, the choice of one deployment per attempt, and each deployment's
//! health, with LiteLLM's `router_settings` semantics.
//!
//! A name resolves through `model_group_alias`, then exactly, then through wildcard names
//! (`openai/*`, `*`), whose deployments pass the requested name through to the provider. The
//! strategy picks among the name's deployments that are not cooling down: weighted random
//! (simple-shuffle, the default), fewest calls in flight (least-busy), lowest recent latency
//! (latency-based-routing), or most room under `rpm` this minute (usage-based-routing). A
//! deployment that fails more than `allowed_fails` times within a minute — or once with a 429
//! — is left out for `cooldown_time`, unless it is its model name's only deployment. The retry and fallback loop lives in the gateway; this module says
//! which failures are retried how often and which model names fall back to which.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::DeploymentConfig;
use crate::config::routing::{FailureKind, RouterSettings, Strategy};
use crate::error::{ErrorCode, GatewayError};
use crate::governance::access::{AccessGroups, Target};
use crate::pricing::{Price, PriceTable};

/// Wildcard deployments remembered per requested name, at most.
const MAX_WILDCARD_NAMES: usize = 1024;

/// How one deployment has been doing.
#[derive(Debug, Default)]
struct Health {
    in_flight: AtomicU64,
    /// Exponentially weighted latency of successful calls, µs (0: no sample yet).
    latency_us: AtomicU64,
    /// (minute, failures in it, cooling down until).
    failures: Mutex<(i64, u32, Option<Instant>)>,
    /// (minute, requests picked in it, tokens settled in it).
    usage: Mutex<(i64, u64, u64)>,
}

/// A deployment ready to call, with its resolved price.
#[derive(Debug)]
pub struct Deployment {
    pub config: DeploymentConfig,
    pub price: Price,
    /// Whether `price` came from anywhere (config or table); unpriced calls cost 0.
    pub priced: bool,
    /// The most output tokens a call can produce (config, else the price table).
    pub max_output: Option<u64>,
    /// Shared with the same deployment in the registry a reload replaced, so cooldowns, usage
    /// counts and calls in flight carry over.
    health: Arc<Health>,
}

/// Counts a deployment's call in flight until dropped.
pub struct Busy(Arc<Deployment>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.health.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Deployment {
    fn new(config: DeploymentConfig, table: &PriceTable, health: Arc<Health>) -> Self {
        let entry = table.lookup(config.provider.as_str(), &config.upstream_model);
        let listed = entry.map(|m| m.price());
        let max_output = config.max_output_tokens.or_else(|| entry.and_then(|m| m.max_output_tokens));
        let priced =
            listed.is_some() || (config.input_cost_per_token.is_some() && config.output_cost_per_token.is_some());
        let base = listed.unwrap_or_default();
        let price = Price {
            input: config.input_cost_per_token.unwrap_or(base.input),
            output: config.output_cost_per_token.unwrap_or(base.output),
            cache_read: if config.input_cost_per_token.is_some() { None } else { base.cache_read },
        };
        Self { config, price, priced, max_output, health }
    }

    /// Marks a call in flight on this deployment (for least-busy).
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.health.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn cooling(&self, now: Instant) -> Option<Duration> {
        let f = self.health.failures.lock().ok()?;
        f.2.and_then(|until| until.checked_duration_since(now)).filter(|d| !d.is_zero())
    }
}

struct Group {
    deployments: Vec<Arc<Deployment>>,
    next: AtomicU64,
}

/// Every public model name and its deployments.
pub struct ModelRegistry {
    groups: HashMap<String, Group>,
    /// Wildcard model names (`openai/*`), longest prefix first.
    wildcards: Vec<String>,
    /// Deployments made for names a wildcard matched.
    expanded: Mutex<HashMap<String, Arc<Deployment>>>,
    names: Vec<String>,
    access_groups: AccessGroups,
    settings: RouterSettings,
    table: PriceTable,
}

fn minute() -> i64 {
    chrono::Utc::now().timestamp() / 60
}

/// A cheap, lock-free pseudo-random number below `n` (for weighted shuffling).
fn random_below(n: u64) -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    if n == 0 { 0 } else { x % n }
}

/// What kind of failure an upstream error is, for retry policies and fallback lists.
pub fn classify(e: &GatewayError) -> FailureKind {
    let m = e.message.to_ascii_lowercase();
    match e.code {
        ErrorCode::UpstreamTimeout => FailureKind::Timeout,
        ErrorCode::RateLimited => FailureKind::RateLimit,
        ErrorCode::InvalidArgument
            if [
                "context_length_exceeded",
                "maximum context length",
                "context window",
                "prompt is too long",
                "exceeds the maximum number of tokens",
            ]
            .iter()
            .any(|s| m.contains(s)) =>
        {
            FailureKind::ContextWindow
        }
        ErrorCode::InvalidArgument
            if [
                "content_policy",
                "content policy",
                "content management policy",
                "content_filter",
                "responsibleaipolicyviolation",
            ]
            .iter()
            .any(|s| m.contains(s)) =>
        {
            FailureKind::ContentPolicy
        }
        // Gemini answers a bad key with a 400.
        ErrorCode::InvalidArgument if m.contains("api_key_invalid") || m.contains("api key not valid") => {
            FailureKind::Authentication
        }
        ErrorCode::InvalidArgument => FailureKind::BadRequest,
        ErrorCode::UpstreamError if e.reason == Some("UPSTREAM_AUTH") => FailureKind::Authentication,
        ErrorCode::UpstreamError | ErrorCode::Unavailable | ErrorCode::Internal => FailureKind::InternalServer,
        _ => FailureKind::BadRequest,
    }
}

impl ModelRegistry {
    /// Prices each deployment: its own `input_cost_per_token` / `output_cost_per_token` win,
    /// then the table's entry for its upstream model. Returns the registry and the ids of
    /// deployments with no price (wildcard deployments are priced per requested model).
    pub fn build(
        deployments: &[DeploymentConfig],
        table: &PriceTable,
        settings: RouterSettings,
    ) -> (Self, Vec<String>) {
        Self::rebuild(deployments, table, settings, None)
    }

    /// [`ModelRegistry::build`], keeping what `previous` learnt about deployments whose id
    /// both have (a reload must not forget a cooldown or a minute's usage).
    pub fn rebuild(
        deployments: &[DeploymentConfig],
        table: &PriceTable,
        settings: RouterSettings,
        previous: Option<&ModelRegistry>,
    ) -> (Self, Vec<String>) {
        let known: HashMap<&str, &Arc<Health>> = previous
            .into_iter()
            .flat_map(|p| p.groups.values())
            .flat_map(|g| g.deployments.iter())
            .map(|d| (d.config.id.as_str(), &d.health))
            .collect();
        let mut groups: HashMap<String, Group> = HashMap::new();
        let mut names = Vec::new();
        let mut unpriced = Vec::new();
        let mut access: HashMap<String, Vec<String>> = HashMap::new();
        for d in deployments {
            for g in &d.access_groups {
                let members = access.entry(g.clone()).or_default();
                if !members.contains(&d.model_name) {
                    members.push(d.model_name.clone());
                }
            }
            let health = known.get(d.id.as_str()).map_or_else(Arc::default, |h| Arc::clone(h));
            let deployment = Deployment::new(d.clone(), table, health);
            if !deployment.priced && !d.upstream_model.contains('*') {
                unpriced.push(d.id.clone());
            }
            let group = groups.entry(d.model_name.clone()).or_insert_with(|| {
                names.push(d.model_name.clone());
                Group { deployments: Vec::new(), next: AtomicU64::new(0) }
            });
            group.deployments.push(Arc::new(deployment));
        }
        let mut wildcards: Vec<String> = names.iter().filter(|n| n.ends_with('*')).cloned().collect();
        wildcards.sort_by_key(|w| std::cmp::Reverse(w.len()));
        let registry = Self {
            groups,
            wildcards,
            expanded: Mutex::new(HashMap::new()),
            names,
            access_groups: AccessGroups(access),
            settings,
            table: table.clone(),
        };
        (registry, unpriced)
    }

    /// Access groups from `model_info.access_groups`: group → model names.
    pub fn access_groups(&self) -> &AccessGroups {
        &self.access_groups
    }

    /// The public model names, in config order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn settings(&self) -> &RouterSettings {
        &self.settings
    }

    /// The model name `model_group_alias` maps `model` to, or `model`.
    pub fn alias<'a>(&'a self, model: &'a str) -> &'a str {
        self.settings.model_group_alias.get(model).map_or(model, String::as_str)
    }

    fn not_found(model: &str) -> GatewayError {
        GatewayError::new(
            ErrorCode::NotFound,
            format!("model {model:?} does not exist on this gateway; GET /v1/models lists the models you can use"),
        )
        .with_reason("model_not_found")
        .with_param("model")
    }

    /// The `model_list` name a call to `model` is routed to: the name itself (after
    /// `model_group_alias`), or the most specific wildcard that serves it.
    pub fn group_of<'a>(&'a self, model: &'a str) -> Option<&'a str> {
        let model = self.alias(model);
        if let Some((name, _)) = self.groups.get_key_value(model) {
            return Some(name.as_str());
        }
        self.wildcards.iter().find(|w| model.starts_with(w.trim_end_matches('*'))).map(String::as_str)
    }

    /// What a call to `model` reaches, for access checks.
    pub fn target<'a>(&'a self, model: &'a str) -> Target<'a> {
        Target { name: model, group: self.group_of(model) }
    }

    /// The deployments behind `model`: its group's, or a wildcard's made for this name.
    fn deployments(&self, model: &str) -> Result<Vec<Arc<Deployment>>, GatewayError> {
        let model = self.alias(model);
        if let Some(g) = self.groups.get(model) {
            return Ok(g.deployments.clone());
        }
        let Some(pattern) = self.wildcards.iter().find(|w| model.starts_with(w.trim_end_matches('*'))) else {
            return Err(Self::not_found(model));
        };
        let matched = model.get(pattern.trim_end_matches('*').len()..).unwrap_or_default();
        // The matched name goes into the provider's URL: a model name, nothing else.
        if matched.is_empty()
            || matched.contains("..")
            || !matched.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '@'))
        {
            return Err(GatewayError::invalid(
                "model",
                format!("model: {model:?} is not a model name (letters, digits, '.', '_', '-', '/', '@')"),
            ));
        }
        let Some(group) = self.groups.get(pattern) else { return Err(Self::not_found(model)) };
        let mut out = Vec::with_capacity(group.deployments.len());
        let Ok(mut expanded) = self.expanded.lock() else { return Err(GatewayError::internal("router poisoned")) };
        for d in &group.deployments {
            let key = format!("{}\u{0}{model}", d.config.id);
            if let Some(e) = expanded.get(&key) {
                out.push(e.clone());
                continue;
            }
            let mut config = d.config.clone();
            config.upstream_model = config.upstream_model.replace('*', matched);
            config.model_name = model.to_owned();
            let made = Arc::new(Deployment::new(config, &self.table, Arc::default()));
            // A name nobody priced would be free: refuse it rather than give it away.
            if !made.priced {
                return Err(GatewayError::invalid(
                    "model",
                    format!(
                        "model: {model:?} has no price in the gateway's table; ask an admin to declare it (or to set input_cost_per_token and output_cost_per_token on the wildcard deployment)"
                    ),
                ));
            }
            if expanded.len() < MAX_WILDCARD_NAMES {
                expanded.insert(key, made.clone());
            }
            out.push(made);
        }
        Ok(out)
    }

    /// Picks the deployment for an attempt at `model`, leaving out those in `tried` while
    /// others remain and those cooling down.
    pub fn pick(&self, model: &str, tried: &[String]) -> Result<Arc<Deployment>, GatewayError> {
        let all = self.deployments(model)?;
        let now = Instant::now();
        let healthy: Vec<&Arc<Deployment>> = all.iter().filter(|d| d.cooling(now).is_none()).collect();
        if healthy.is_empty() {
            let wait = all.iter().filter_map(|d| d.cooling(now)).min().unwrap_or(Duration::from_secs(1));
            return Err(GatewayError {
                retry_after: Some(wait.max(Duration::from_secs(1))),
                ..GatewayError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "no deployment of model {model:?} is available: all {} are cooling down after failures; retry in {}s",
                        all.len(),
                        wait.as_secs().max(1)
                    ),
                )
                .with_reason("NO_DEPLOYMENT_AVAILABLE")
            });
        }
        let fresh: Vec<&Arc<Deployment>> = healthy.iter().copied().filter(|d| !tried.contains(&d.config.id)).collect();
        let pool = if fresh.is_empty() { healthy } else { fresh };
        let chosen = match self.settings.strategy {
            Strategy::SimpleShuffle => {
                let total: u64 = pool.iter().map(|d| u64::from(d.config.weight)).sum();
                let mut ticket = random_below(total);
                let mut chosen = pool[0];
                for d in &pool {
                    let w = u64::from(d.config.weight);
                    if ticket < w {
                        chosen = d;
                        break;
                    }
                    ticket -= w;
                }
                chosen
            }
            Strategy::LeastBusy => {
                // Ties go round robin, so equal deployments share the load.
                let start = self.groups.get(self.alias(model)).map_or(0, |g| g.next.fetch_add(1, Ordering::Relaxed));
                let n = pool.len();
                (0..n)
                    .map(|i| pool[(i + usize::try_from(start % n as u64).unwrap_or(0)) % n])
                    .min_by_key(|d| d.health.in_flight.load(Ordering::Relaxed))
                    .unwrap_or(pool[0])
            }
            Strategy::LatencyBased => {
                pool.iter().copied().min_by_key(|d| d.health.latency_us.load(Ordering::Relaxed)).unwrap_or(pool[0])
            }
            Strategy::UsageBased => {
                let m = minute();
                // The smaller share left of rpm and tpm (a limit not set counts as wholly free).
                let room = |d: &Arc<Deployment>| -> u64 {
                    let (requests, tokens) =
                        d.health.usage.lock().map_or((0, 0), |u| if u.0 == m { (u.1, u.2) } else { (0, 0) });
                    let share = |limit: Option<u64>, used: u64| match limit {
                        Some(l) if l > 0 => l.saturating_sub(used).saturating_mul(1_000_000) / l,
                        _ => 1_000_000,
                    };
                    share(d.config.rpm, requests).min(share(d.config.tpm, tokens))
                };
                pool.iter().copied().max_by_key(|d| room(d)).unwrap_or(pool[0])
            }
        };
        // Only usage-based routing reads the counts: other strategies skip the lock.
        if self.settings.strategy == Strategy::UsageBased
            && let Ok(mut u) = chosen.health.usage.lock()
        {
            let m = minute();
            *u = if u.0 == m { (m, u.1 + 1, u.2) } else { (m, 1, 0) };
        }
        Ok(chosen.clone())
    }

    /// Every deployment a call to `model` could end on: its own and its fallbacks' (for the
    /// worst-case cost a strict budget reserves).
    pub fn candidates(&self, model: &str) -> Vec<Arc<Deployment>> {
        let mut out = self.deployments(model).unwrap_or_default();
        let model = self.alias(model);
        for map in
            [&self.settings.fallbacks, &self.settings.context_window_fallbacks, &self.settings.content_policy_fallbacks]
        {
            for name in map.get(model).or_else(|| map.get("*")).into_iter().flatten() {
                out.extend(self.deployments(name).unwrap_or_default());
            }
        }
        out
    }

    /// Tokens a deployment's call used (for usage-based routing's tpm).
    pub fn used_tokens(&self, d: &Deployment, tokens: u64) {
        if self.settings.strategy != Strategy::UsageBased {
            return;
        }
        if let Ok(mut u) = d.health.usage.lock() {
            let m = minute();
            *u = if u.0 == m { (m, u.1, u.2.saturating_add(tokens)) } else { (m, 0, tokens) };
        }
    }

    /// A successful attempt and how long it took.
    pub fn succeeded(&self, d: &Deployment, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = d.health.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { (old * 4 + sample) / 5 };
        d.health.latency_us.store(new, Ordering::Relaxed);
    }

    /// A failed attempt: counts toward the deployment's cooldown (a 429 cools it at once).
    pub fn failed(&self, d: &Deployment, e: &GatewayError) {
        let kind = classify(e);
        if matches!(kind, FailureKind::BadRequest | FailureKind::ContextWindow | FailureKind::ContentPolicy) {
            return; // the request's fault, not the deployment's
        }
        // As in LiteLLM, a model name's only deployment never cools down: leaving it out
        // would refuse every call for the cooldown instead of some.
        if self.deployments(&d.config.model_name).map_or(0, |all| all.len()) < 2 {
            return;
        }
        let Ok(mut f) = d.health.failures.lock() else { return };
        let m = minute();
        if f.0 != m {
            *f = (m, 0, f.2);
        }
        f.1 += 1;
        if kind == FailureKind::RateLimit || f.1 > self.settings.allowed_fails {
            f.2 = Some(Instant::now() + self.settings.cooldown_time);
            f.1 = 0;
            tracing::warn!(
                deployment = %d.config.id,
                cooldown_s = self.settings.cooldown_time.as_secs_f64(),
                reason = %e.message,
                "deployment cooling down"
            );
        }
    }

    /// How many retries a failure of this kind gets.
    pub fn retries(&self, kind: FailureKind) -> u32 {
        if let Some(n) = self.settings.retry_policy.get(&kind) {
            return *n;
        }
        match kind {
            FailureKind::Timeout | FailureKind::RateLimit | FailureKind::InternalServer => self.settings.num_retries,
            _ => 0,
        }
    }

    /// The model names to fall back to when `model` fails this way, in order.
    pub fn fallbacks(&self, model: &str, kind: FailureKind) -> Vec<String> {
        let model = self.alias(model);
        let s = &self.settings;
        let specific = match kind {
            FailureKind::ContextWindow => Some(&s.context_window_fallbacks),
            FailureKind::ContentPolicy => Some(&s.content_policy_fallbacks),
            _ => None,
        };
        if let Some(list) = specific.and_then(|m| m.get(model).or_else(|| m.get("*"))) {
            return list.clone();
        }
        if kind == FailureKind::BadRequest {
            return Vec::new();
        }
        s.fallbacks.get(model).or_else(|| s.fallbacks.get("*")).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_rebuild_keeps_what_the_router_learnt_about_each_deployment() {
        let text = "model_list:\n  - {model_name: m, litellm_params: {model: mock/a}, model_info: {id: a}}\n  - {model_name: m, litellm_params: {model: mock/b}, model_info: {id: b}}\n";
        let config = crate::config::Config::parse(text, &HashMap::new()).unwrap().config;
        let table = PriceTable::builtin().unwrap();
        let (old, _) = ModelRegistry::build(&config.deployments, &table, config.routing.clone());
        let a = old.candidates("m").into_iter().find(|d| d.config.id == "a").unwrap();
        a.health.failures.lock().unwrap().2 = Some(Instant::now() + Duration::from_secs(60));
        let busy = a.busy();

        // The new file drops b and adds c.
        let text = text.replace("mock/b}, model_info: {id: b}", "mock/c}, model_info: {id: c}");
        let config = crate::config::Config::parse(&text, &HashMap::new()).unwrap().config;
        let (new, _) = ModelRegistry::rebuild(&config.deployments, &table, config.routing.clone(), Some(&old));
        let by_id = |id: &str| new.candidates("m").into_iter().find(|d| d.config.id == id).unwrap();
        assert!(by_id("a").cooling(Instant::now()).is_some(), "a cooldown survives the reload");
        assert_eq!(by_id("a").health.in_flight.load(Ordering::Relaxed), 1, "so does a call in flight");
        drop(busy);
        assert_eq!(by_id("a").health.in_flight.load(Ordering::Relaxed), 0);
        assert!(by_id("c").cooling(Instant::now()).is_none());
    }
}
