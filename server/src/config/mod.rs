//! Configuration: LiteLLM's `config.yaml`, read as-is, plus Ferryman's own settings.
//!
//! Loading goes in fixed steps: parse the YAML into a tree; overlay `FERRYMAN__SECTION__KEY`
//! environment variables; resolve every `os.environ/NAME` value (Ferryman also accepts
//! `os.environ/NAME:-default`); then read the tree into typed settings, collecting every
//! problem (path and reason) and warning about every key this version does not read. A file
//! with any problem is rejected whole.

pub mod governance;
pub mod mcp;
mod reader;
pub mod routing;
mod secret;

pub use reader::ConfigProblem;
pub use secret::{Secret, redact_url};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::pricing::Femtos;
use crate::providers::ProviderKind;
use reader::{Reader, join};

/// The development master key the quickstart falls back to when `FERRYMAN_MASTER_KEY` is not
/// set. Never use it beyond a laptop.
pub const DEV_MASTER_KEY: &str = "sk-ferryman-dev-master-key";

/// The spool directory, relative to the working directory unless absolute.
pub const DEFAULT_SPOOL_DIR: &str = "ferryman-spool";
const DEFAULT_MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The whole running configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub deployments: Vec<DeploymentConfig>,
    pub general: GeneralSettings,
    /// Customers created on first sight get these.
    pub customer_defaults: crate::governance::customers::CustomerDefaults,
    /// `litellm_settings.max_budget` / `budget_duration`: the proxy-wide budget.
    pub global_budget: Option<crate::tenancy::Limits>,
    /// `router_settings`: strategy, retries, fallbacks, cooldowns, aliases.
    pub routing: routing::RouterSettings,
    /// The response cache (`litellm_settings.cache: true` with `cache_params`), if on.
    pub cache: Option<crate::cache::CacheConfig>,
    /// Organizations, teams, users, keys, customers and budget tiers the file declares.
    pub governance: governance::Declared,
    /// `mcp_servers`: the MCP tool servers behind `/mcp`.
    pub mcp_servers: Vec<mcp::McpServerConfig>,
    /// The file this was read from (none for a configuration given as text); reloads read it
    /// again, and refusals of config-managed changes name it.
    pub source: Option<std::path::PathBuf>,
}

/// `general_settings`.
#[derive(Debug, Clone)]
pub struct GeneralSettings {
    pub master_key: Option<Secret>,
    /// `None` means the embedded SQLite file `ferryman.db` in the working directory.
    pub database_url: Option<Secret>,
    pub redis_url: Option<Secret>,
    /// Bodies larger than this are refused.
    pub max_request_size_bytes: usize,
    /// Where spend records are spooled before the database has them (one per process).
    pub spool_dir: std::path::PathBuf,
    /// `budget_enforcement`: strict (default) or optimistic.
    pub budget_enforcement: crate::limits::Enforcement,
    /// The HTTP status of a budget refusal (`budget_exceeded_status_code`, default 400).
    pub budget_exceeded_status: u16,
    /// Requests this instance serves at once (`global_max_parallel_requests`).
    pub global_max_parallel_requests: Option<u64>,
    /// Prefix of Ferryman's Redis keys and channels (`redis_key_prefix`, default `ferryman`).
    pub redis_prefix: String,
    /// What rate limiting does while Redis is unreachable (`redis_failure_policy`).
    pub redis_failure_policy: RedisFailurePolicy,
    /// How long a concurrency slot outlives a silent instance (`redis_lease_seconds`, default 30).
    pub redis_lease: std::time::Duration,
    /// The bound on every Redis call on the request path (`redis_timeout_ms`, default 250).
    pub redis_timeout: std::time::Duration,
    /// Whether config-managed resources removed from the file are deleted (`config_prune`,
    /// default true) or left and reported.
    pub config_prune: bool,
    /// What the API does with config-managed resources (`config_managed_fields`).
    pub config_managed_fields: governance::ManagedFields,
    /// `mcp_default_access: none`: a key whose chain sets no MCP permission may use no MCP
    /// server (the default, `all`, lets it use every one).
    pub mcp_default_none: bool,
    /// `store_prompts_in_spend_logs`: spend records keep what was sent (an MCP tool call's
    /// arguments); off by default, since arguments often carry personal data.
    pub store_prompts_in_spend_logs: bool,
    /// How the listening port bounds what a client may hold (connections, slow heads and
    /// bodies, HTTP/2 streams).
    pub connections: ConnectionLimits,
}

/// The bounds the one listening port puts on every client, read from `general_settings` at
/// start (a reload does not change them). `server::serve` applies them per connection and
/// `server::router` applies the body deadline per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `max_connections`: connections served at once; past it new ones are shed with 503.
    /// Lowered at start to fit under the process's open-file limit.
    pub max_connections: usize,
    /// `request_header_timeout`: a new connection must deliver its first complete request
    /// head (HTTP/1) or request (HTTP/2) within this, or it is closed.
    pub request_header_timeout: Duration,
    /// `keepalive_timeout`: an HTTP/1 connection is closed once it has waited this long for
    /// its next complete request head.
    pub keepalive_timeout: Duration,
    /// `request_body_timeout`: a request body must have arrived whole within this of its head.
    pub request_body_timeout: Duration,
    /// `http2_max_concurrent_streams`: streams one HTTP/2 client may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// `http2_keepalive_interval`: how often an HTTP/2 connection is pinged when it is silent.
    pub http2_keepalive_interval: Duration,
    /// `http2_keepalive_timeout`: how long a ping may go unanswered before the connection is
    /// closed.
    pub http2_keepalive_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            request_header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            request_body_timeout: Duration::from_secs(60),
            http2_max_concurrent_streams: 200,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// More connections than this is a typo, not a plan (and keeps the count a `u32`).
const MAX_CONNECTIONS_CEILING: u64 = 1_000_000;

/// `general_settings.redis_failure_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailurePolicy {
    /// Fall back to this instance's share of each limit, counted locally.
    FailOpen,
    /// Refuse limited calls with 503 until Redis answers again.
    FailClosed,
}

/// One entry of `model_list`: a deployment that serves a public model name.
#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    /// The stable id reported as `x-ferryman-model-id`: `model_info.id`, or derived from the
    /// deployment's settings.
    pub id: String,
    /// The name callers ask for.
    pub model_name: String,
    pub provider: ProviderKind,
    /// The provider's own model name (after `provider/`).
    pub upstream_model: String,
    pub api_base: Option<String>,
    pub api_key: Option<Secret>,
    /// Azure's `api-version` (`api_version`, or `AZURE_API_VERSION`).
    pub api_version: Option<String>,
    /// Vertex AI: `vertex_project`, `vertex_location` (default us-central1), and the service
    /// account key file `vertex_credentials` (or `GOOGLE_APPLICATION_CREDENTIALS`).
    pub vertex_project: Option<String>,
    pub vertex_location: Option<String>,
    pub vertex_credentials: Option<String>,
    /// Its share of its model name's calls under simple-shuffle (`weight`, default 1).
    pub weight: u32,
    /// The idle timeout of its streams (`stream_timeout`, or the router's); else `timeout`.
    pub stream_timeout: Option<Duration>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub input_cost_per_token: Option<Femtos>,
    pub output_cost_per_token: Option<Femtos>,
    pub timeout: Duration,
    pub mock: MockSettings,
    pub max_output_tokens: Option<u64>,
    /// `model_info.access_groups`: groups that grant this model by name.
    pub access_groups: Vec<String>,
}

/// Settings of the built-in `mock` provider, from `litellm_params`.
#[derive(Debug, Clone, Default)]
pub struct MockSettings {
    /// Fixed content to answer with (`mock_response`); otherwise a deterministic echo.
    pub response: Option<String>,
    /// Delay before answering (`mock_latency_ms`).
    pub latency: Duration,
    /// Delay between streamed chunks (`mock_chunk_delay_ms`).
    pub chunk_delay: Duration,
}

/// A loaded configuration and what was noticed while reading it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigProblem>,
}

/// Everything wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in the configuration", problems.len())]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
    pub warnings: Vec<ConfigProblem>,
}

/// Where environment values come from: the process environment, plus the file's own
/// `environment_variables` section (which LiteLLM also reads).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        std::env::vars().filter(|(k, _)| k.starts_with(prefix)).collect()
    }
}

/// A fixed environment, for tests.
impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl Config {
    /// Reads a file; see [`Config::parse`].
    pub fn load(path: &Path, env: &dyn Env) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![ConfigProblem {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }],
            warnings: vec![],
        })?;
        let mut loaded = Self::parse(&text, env)?;
        // Absolute, but through any symlinks as given: a Kubernetes ConfigMap swaps the target
        // of `config.yaml`, and reloads must follow it.
        loaded.config.source = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        Ok(loaded)
    }

    /// Parses, resolves and validates a configuration text, reporting every problem at once.
    pub fn parse(text: &str, env: &dyn Env) -> Result<Loaded, ConfigError> {
        let mut r = Reader::default();
        let mut root: Value = if text.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            match serde_yaml_ng::from_str(text) {
                Ok(v) => v,
                Err(e) => {
                    r.problem("", format!("not valid YAML: {e}"));
                    return Err(ConfigError { problems: r.problems, warnings: r.warnings });
                }
            }
        };
        if root.is_null() {
            root = Value::Object(Map::new());
        }
        overlay_env(&mut root, env, &mut r);
        let file_env = read_file_env(&root, &mut r);
        resolve_env_refs(&mut root, "", env, &file_env, &mut r);
        let (config, plain) = read_config(&root, env, &file_env, &mut r);
        for p in plain {
            // Name the line, never the secret.
            let line = text.lines().position(|l| l.contains(p.secret.as_str())).map(|n| n + 1);
            let at = line.map(|n| format!("line {n}: ")).unwrap_or_default();
            r.warn(
                p.path,
                format!("{at}a plain secret in the file; use os.environ/NAME or a sha256:<hex> hash of the key"),
            );
        }
        if r.problems.is_empty() {
            Ok(Loaded { config, warnings: r.warnings })
        } else {
            Err(ConfigError { problems: r.problems, warnings: r.warnings })
        }
    }
}

/// `FERRYMAN__GENERAL_SETTINGS__MASTER_KEY=x` sets `general_settings.master_key: x`. The value
/// is read as a YAML scalar, so numbers and booleans keep their type.
fn overlay_env(root: &mut Value, env: &dyn Env, r: &mut Reader) {
    let mut vars = env.vars_with_prefix("FERRYMAN__");
    vars.sort();
    for (name, raw) in vars {
        let parts: Vec<String> = name["FERRYMAN__".len()..].split("__").map(|p| p.to_ascii_lowercase()).collect();
        if parts.iter().any(|p| p.is_empty()) {
            r.warn(name, "malformed override variable; expected FERRYMAN__SECTION__KEY");
            continue;
        }
        let value: Value = serde_yaml_ng::from_str(&raw).unwrap_or(Value::String(raw));
        let mut node = &mut *root;
        for (i, part) in parts.iter().enumerate() {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let Value::Object(map) = node else { break };
            if i + 1 == parts.len() {
                map.insert(part.clone(), value.clone());
                break;
            }
            node = map.entry(part.clone()).or_insert_with(|| Value::Object(Map::new()));
        }
    }
}

fn read_file_env(root: &Value, r: &mut Reader) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(section) = root.get("environment_variables") else { return out };
    if let Some(map) = r.object("environment_variables", section) {
        for (k, v) in map {
            match v {
                Value::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                Value::Number(n) => {
                    out.insert(k.clone(), n.to_string());
                }
                Value::Bool(b) => {
                    out.insert(k.clone(), b.to_string());
                }
                _ => r.problem(join("environment_variables", k), "expected a string"),
            }
        }
    }
    out
}

fn lookup_env(name: &str, env: &dyn Env, file_env: &BTreeMap<String, String>) -> Option<String> {
    env.var(name).or_else(|| file_env.get(name).cloned())
}

/// Replaces every `os.environ/NAME` (or `os.environ/NAME:-default`) string in the tree.
pub(crate) fn resolve_env_refs(
    value: &mut Value,
    path: &str,
    env: &dyn Env,
    file_env: &BTreeMap<String, String>,
    r: &mut Reader,
) {
    match value {
        Value::String(s) => {
            if let Some(reference) = s.strip_prefix("os.environ/") {
                let (name, default) = match reference.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (reference, None),
                };
                // Only a value from the process environment keeps a secret out of the file; one
                // from `environment_variables` or a `:-default` is written in it.
                let from_process = env.var(name);
                if from_process.is_some() {
                    r.env_refs.insert(path.to_owned());
                }
                match from_process.or_else(|| file_env.get(name).cloned()).or(default.map(str::to_owned)) {
                    Some(v) => {
                        *s = v;
                    }
                    None => {
                        r.problem(path, format!("environment variable {name} is not set"));
                        // Reported once: the setting then reads as absent.
                        *value = Value::Null;
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_env_refs(item, &format!("{path}[{i}]"), env, file_env, r);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if path.is_empty() && k == "environment_variables" {
                    continue;
                }
                resolve_env_refs(v, &join(path, k), env, file_env, r);
            }
        }
        _ => {}
    }
}

const TOP_LEVEL: &[&str] = &[
    "model_list",
    "general_settings",
    "litellm_settings",
    "router_settings",
    "environment_variables",
    "budgets",
    "organizations",
    "users",
    "teams",
    "virtual_keys",
    "customers",
    "mcp_servers",
];
const GENERAL: &[&str] = &[
    "master_key",
    "database_url",
    "redis_url",
    "max_request_size_mb",
    "spool_dir",
    "budget_enforcement",
    "budget_exceeded_status_code",
    "global_max_parallel_requests",
    "redis_key_prefix",
    "redis_failure_policy",
    "redis_lease_seconds",
    "redis_timeout_ms",
    "config_prune",
    "config_managed_fields",
    "mcp_default_access",
    "store_prompts_in_spend_logs",
    "max_connections",
    "request_header_timeout",
    "keepalive_timeout",
    "request_body_timeout",
    "http2_max_concurrent_streams",
    "http2_keepalive_interval",
    "http2_keepalive_timeout",
];
const LITELLM: &[&str] = &[
    "request_timeout",
    "max_end_user_budget",
    "max_end_user_budget_id",
    "max_budget",
    "budget_duration",
    "num_retries",
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "cache",
    "cache_params",
];
const ROUTER: &[&str] = routing::KEYS;
const DEPLOYMENT: &[&str] = &["model_name", "litellm_params", "model_info"];
const PARAMS: &[&str] = &[
    "model",
    "api_base",
    "api_key",
    "api_version",
    "weight",
    "stream_timeout",
    "vertex_project",
    "vertex_location",
    "vertex_credentials",
    "rpm",
    "tpm",
    "input_cost_per_token",
    "output_cost_per_token",
    "timeout",
    "mock_response",
    "mock_latency_ms",
    "mock_chunk_delay_ms",
];
const MODEL_INFO: &[&str] = &[
    "id",
    "input_cost_per_token",
    "output_cost_per_token",
    "max_tokens",
    "max_output_tokens",
    "mode",
    "access_groups",
];

fn section(root: &Map<String, Value>, key: &str, r: &mut Reader) -> Map<String, Value> {
    root.get(key).and_then(|v| r.object(key, v)).cloned().unwrap_or_default()
}

fn read_config(
    root: &Value,
    env: &dyn Env,
    file_env: &BTreeMap<String, String>,
    r: &mut Reader,
) -> (Config, Vec<governance::PlainSecret>) {
    let empty = Map::new();
    let root = r.object("", root).unwrap_or(&empty);
    r.unknown_keys("", root, TOP_LEVEL);

    let general_map = section(root, "general_settings", r);
    r.unknown_keys("general_settings", &general_map, GENERAL);
    let general = read_general(&general_map, env, file_env, r);

    let litellm = section(root, "litellm_settings", r);
    r.unknown_keys("litellm_settings", &litellm, LITELLM);
    let router = section(root, "router_settings", r);
    r.unknown_keys("router_settings", &router, ROUTER);
    let default_timeout = r
        .seconds("router_settings", &router, "timeout")
        .or_else(|| r.seconds("litellm_settings", &litellm, "request_timeout"))
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT);

    let customer_defaults = crate::governance::customers::CustomerDefaults {
        max_budget: r
            .decimal("litellm_settings", &litellm, "max_end_user_budget", 9)
            .and_then(|n| i64::try_from(n).ok())
            .map(crate::pricing::Nanos),
        budget_id: r.string("litellm_settings", &litellm, "max_end_user_budget_id"),
    };
    let global_budget = r
        .decimal("litellm_settings", &litellm, "max_budget", 9)
        .and_then(|n| i64::try_from(n).ok())
        .map(|max| crate::tenancy::Limits {
            max_budget: Some(crate::pricing::Nanos(max)),
            budget_duration: r.string("litellm_settings", &litellm, "budget_duration"),
            ..Default::default()
        });
    if let Some(d) = global_budget.as_ref().and_then(|g| g.budget_duration.as_deref())
        && let Err(e) = crate::governance::duration::parse_period(d)
    {
        r.problem("litellm_settings.budget_duration", e);
    }
    let routing = routing::read(&router, &litellm, r);
    let cache = read_cache(&litellm, &general, r);
    let mut deployments = Vec::new();
    if let Some(list) = root.get("model_list").and_then(|v| r.list("model_list", v)) {
        for (i, entry) in list.iter().enumerate() {
            let path = format!("model_list[{i}]");
            if let Some(mut d) = read_deployment(&path, entry, default_timeout, env, file_env, r) {
                d.stream_timeout = d.stream_timeout.or(routing.stream_timeout);
                deployments.push(d);
            }
        }
    }
    // Fallbacks and aliases must name models the list declares (or a wildcard covers).
    let known = |name: &str| {
        deployments.iter().any(|d| {
            d.model_name == name || d.model_name.strip_suffix('*').is_some_and(|prefix| name.starts_with(prefix))
        })
    };
    for (key, map) in [
        ("fallbacks", &routing.fallbacks),
        ("context_window_fallbacks", &routing.context_window_fallbacks),
        ("content_policy_fallbacks", &routing.content_policy_fallbacks),
    ] {
        let mut sources: Vec<_> = map.iter().collect();
        sources.sort();
        for (from, targets) in sources {
            for t in targets.iter().filter(|t| !known(t)) {
                r.problem(
                    format!("router_settings.{key}.{from}"),
                    format!("fallback model {t:?} is not in model_list"),
                );
            }
        }
    }
    let mut aliases: Vec<_> = routing.model_group_alias.iter().collect();
    aliases.sort();
    for (alias, target) in aliases {
        if !known(target) {
            r.problem(
                format!("router_settings.model_group_alias.{alias}"),
                format!("model {target:?} is not in model_list"),
            );
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, d) in deployments.iter().enumerate() {
        if let Some(first) = seen.insert(d.id.as_str(), i) {
            r.problem(
                format!("model_list[{i}].model_info.id"),
                format!("deployment id {:?} is already used by model_list[{first}]", d.id),
            );
        }
    }
    let env_refs = std::mem::take(&mut r.env_refs);
    let (governance, plain) = governance::read(root, &env_refs, r);
    let mcp_servers = mcp::read(root, r);
    let config = Config {
        deployments,
        general,
        customer_defaults,
        global_budget,
        routing,
        cache,
        governance,
        mcp_servers,
        source: None,
    };
    (config, plain)
}

/// `litellm_settings.cache` and `cache_params` (type `local` or `redis`, `ttl` seconds, and
/// Ferryman's `scope` and `max_entries`).
fn read_cache(
    litellm: &Map<String, Value>,
    general: &GeneralSettings,
    r: &mut Reader,
) -> Option<crate::cache::CacheConfig> {
    use crate::cache::{CacheConfig, Scope};
    let on = match litellm.get("cache") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            r.problem("litellm_settings.cache", "expected true or false");
            false
        }
    };
    let path = "litellm_settings.cache_params";
    let params = litellm.get("cache_params").and_then(|v| r.object(path, v)).cloned().unwrap_or_default();
    r.unknown_keys(path, &params, &["type", "ttl", "scope", "max_entries", "host", "port", "password", "url"]);
    if !on {
        return None;
    }
    let redis_url = match r.string(path, &params, "type").as_deref().unwrap_or("local") {
        "local" => None,
        "redis" => {
            let url = r.string(path, &params, "url").or_else(|| {
                let host = r.string(path, &params, "host")?;
                let port = r.u64(path, &params, "port").unwrap_or(6379);
                let auth = r.string(path, &params, "password").map(|p| format!(":{p}@")).unwrap_or_default();
                Some(format!("redis://{auth}{host}:{port}"))
            });
            match url.map(Secret::new).or_else(|| general.redis_url.clone()) {
                Some(u) => Some(u),
                None => {
                    r.problem(
                        join(path, "type"),
                        "a redis cache needs cache_params host/port (or url) or general_settings.redis_url",
                    );
                    None
                }
            }
        }
        other => {
            r.problem(join(path, "type"), format!("{other:?} is not a cache type (local, redis)"));
            None
        }
    };
    let scope = match r.string(path, &params, "scope").as_deref().unwrap_or("team") {
        "key" => Scope::Key,
        "team" => Scope::Team,
        "organization" => Scope::Organization,
        "global" => Scope::Global,
        other => {
            r.problem(join(path, "scope"), format!("{other:?} is not a cache scope (key, team, organization, global)"));
            Scope::Team
        }
    };
    Some(CacheConfig {
        redis_url,
        redis_prefix: general.redis_prefix.clone(),
        ttl: r.seconds(path, &params, "ttl").unwrap_or(Duration::from_secs(600)),
        scope,
        max_entries: usize::try_from(r.u64(path, &params, "max_entries").unwrap_or(10_000)).unwrap_or(10_000).max(1),
    })
}

fn read_general(
    map: &Map<String, Value>,
    env: &dyn Env,
    file_env: &BTreeMap<String, String>,
    r: &mut Reader,
) -> GeneralSettings {
    let path = "general_settings";
    let master_key = r.string(path, map, "master_key").map(Secret::new);
    if let Some(key) = &master_key
        && !key.expose().starts_with("sk-")
    {
        r.problem(join(path, "master_key"), "must start with \"sk-\"");
    }
    let database_url = r
        .string(path, map, "database_url")
        .or_else(|| lookup_env("DATABASE_URL", env, file_env))
        .filter(|u| !u.is_empty());
    if let Some(url) = &database_url
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:"))
    {
        r.problem(
            join(path, "database_url"),
            "must start with postgresql://, postgres:// or sqlite: (the value is not shown)",
        );
    }
    let redis_url =
        r.string(path, map, "redis_url").or_else(|| lookup_env("REDIS_URL", env, file_env)).filter(|u| !u.is_empty());
    let max_request_size_bytes = match r.decimal(path, map, "max_request_size_mb", 6) {
        Some(0) => {
            r.problem(join(path, "max_request_size_mb"), "must be greater than zero");
            DEFAULT_MAX_REQUEST_BYTES
        }
        // The value is in MB with up to six decimals: micro-MB are bytes.
        Some(micro_mb) => usize::try_from(micro_mb * 1_048_576 / 1_000_000).unwrap_or(usize::MAX),
        None => DEFAULT_MAX_REQUEST_BYTES,
    };
    let spool_dir = r.string(path, map, "spool_dir").unwrap_or_else(|| DEFAULT_SPOOL_DIR.to_owned()).into();
    let budget_enforcement = match r.string(path, map, "budget_enforcement").as_deref() {
        None | Some("strict") => crate::limits::Enforcement::Strict,
        Some("optimistic") => crate::limits::Enforcement::Optimistic,
        Some(other) => {
            r.problem(join(path, "budget_enforcement"), format!("{other:?} is not strict or optimistic"));
            crate::limits::Enforcement::Strict
        }
    };
    let budget_exceeded_status = match r.u64(path, map, "budget_exceeded_status_code") {
        None => 400,
        Some(s @ (400 | 402 | 403 | 422 | 429)) => u16::try_from(s).unwrap_or(400),
        Some(other) => {
            r.problem(
                join(path, "budget_exceeded_status_code"),
                format!("{other} is not one of 400, 402, 403, 422, 429"),
            );
            400
        }
    };
    let redis_failure_policy = match r.string(path, map, "redis_failure_policy").as_deref() {
        None | Some("fail_open") => RedisFailurePolicy::FailOpen,
        Some("fail_closed") => RedisFailurePolicy::FailClosed,
        Some(other) => {
            r.problem(join(path, "redis_failure_policy"), format!("{other:?} is not fail_open or fail_closed"));
            RedisFailurePolicy::FailOpen
        }
    };
    let mut positive = |key: &str, default: u64| match r.u64(path, map, key) {
        Some(0) => {
            r.problem(join(path, key), "must be greater than zero");
            default
        }
        Some(v) => v,
        None => default,
    };
    let redis_lease = std::time::Duration::from_secs(positive("redis_lease_seconds", 30));
    let redis_timeout = std::time::Duration::from_millis(positive("redis_timeout_ms", 250));
    let config_prune = r.bool(path, map, "config_prune").unwrap_or(true);
    let config_managed_fields = match r.string(path, map, "config_managed_fields").as_deref() {
        None | Some("locked") => governance::ManagedFields::Locked,
        Some("advisory") => governance::ManagedFields::Advisory,
        Some(other) => {
            r.problem(join(path, "config_managed_fields"), format!("{other:?} is not locked or advisory"));
            governance::ManagedFields::Locked
        }
    };
    let mcp_default_none = match r.string(path, map, "mcp_default_access").as_deref() {
        None | Some("all") => false,
        Some("none") => true,
        Some(other) => {
            r.problem(join(path, "mcp_default_access"), format!("{other:?} is not all or none"));
            false
        }
    };
    let connections = read_connection_limits(path, map, r);
    GeneralSettings {
        connections,
        mcp_default_none,
        store_prompts_in_spend_logs: r.bool(path, map, "store_prompts_in_spend_logs").unwrap_or(false),
        config_prune,
        config_managed_fields,
        master_key,
        database_url: database_url.map(Secret::new),
        redis_url: redis_url.map(Secret::new),
        max_request_size_bytes,
        spool_dir,
        budget_enforcement,
        budget_exceeded_status,
        global_max_parallel_requests: r.u64(path, map, "global_max_parallel_requests"),
        redis_prefix: r.string(path, map, "redis_key_prefix").unwrap_or_else(|| "ferryman".to_owned()),
        redis_failure_policy,
        redis_lease,
        redis_timeout,
    }
}

/// The connection limits; each must be greater than zero, and a missing one takes its default.
fn read_connection_limits(path: &str, map: &Map<String, Value>, r: &mut Reader) -> ConnectionLimits {
    let defaults = ConnectionLimits::default();
    let mut count = |key: &str, default: u64, ceiling: u64| match r.u64(path, map, key) {
        Some(0) => {
            r.problem(join(path, key), "must be greater than zero");
            default
        }
        Some(v) if v > ceiling => {
            r.problem(join(path, key), format!("{v} is more than the ceiling of {ceiling}"));
            default
        }
        Some(v) => v,
        None => default,
    };
    let max_connections = count("max_connections", defaults.max_connections as u64, MAX_CONNECTIONS_CEILING);
    let streams =
        count("http2_max_concurrent_streams", u64::from(defaults.http2_max_concurrent_streams), u64::from(u32::MAX));
    let mut duration = |key: &str, default: Duration| match r.seconds(path, map, key) {
        Some(d) if d.is_zero() => {
            r.problem(join(path, key), "must be greater than zero");
            default
        }
        Some(d) => d,
        None => default,
    };
    ConnectionLimits {
        max_connections: usize::try_from(max_connections).unwrap_or(defaults.max_connections),
        request_header_timeout: duration("request_header_timeout", defaults.request_header_timeout),
        keepalive_timeout: duration("keepalive_timeout", defaults.keepalive_timeout),
        request_body_timeout: duration("request_body_timeout", defaults.request_body_timeout),
        http2_max_concurrent_streams: u32::try_from(streams).unwrap_or(defaults.http2_max_concurrent_streams),
        http2_keepalive_interval: duration("http2_keepalive_interval", defaults.http2_keepalive_interval),
        http2_keepalive_timeout: duration("http2_keepalive_timeout", defaults.http2_keepalive_timeout),
    }
}

fn read_deployment(
    path: &str,
    entry: &Value,
    default_timeout: Duration,
    env: &dyn Env,
    file_env: &BTreeMap<String, String>,
    r: &mut Reader,
) -> Option<DeploymentConfig> {
    let map = r.object(path, entry)?;
    r.unknown_keys(path, map, DEPLOYMENT);
    let model_name = r.required_string(path, map, "model_name");
    let params_path = join(path, "litellm_params");
    let params = match map.get("litellm_params") {
        Some(v) => r.object(&params_path, v).cloned().unwrap_or_default(),
        None => {
            r.problem(&params_path, "is required");
            Map::new()
        }
    };
    r.unknown_keys(&params_path, &params, PARAMS);
    let info_path = join(path, "model_info");
    let info = map.get("model_info").and_then(|v| r.object(&info_path, v)).cloned().unwrap_or_default();
    r.unknown_keys(&info_path, &info, MODEL_INFO);

    let model = r.required_string(&params_path, &params, "model");
    let (provider, upstream_model) = match model.as_deref().map(|m| m.split_once('/')) {
        Some(Some((p, m))) if !m.is_empty() => match ProviderKind::parse(p) {
            Some(kind) => (Some(kind), Some(m.to_owned())),
            None => {
                r.problem(
                    join(&params_path, "model"),
                    format!(
                        "provider {p:?} is not supported by this version (supported: {})",
                        ProviderKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                );
                (None, None)
            }
        },
        Some(_) => {
            r.problem(join(&params_path, "model"), "must be provider/model, e.g. openai/gpt-4o or mock/demo");
            (None, None)
        }
        None => (None, None),
    };

    let mut api_base = r.string(&params_path, &params, "api_base");
    if api_base.is_none() && provider == Some(ProviderKind::Azure) {
        api_base = lookup_env("AZURE_API_BASE", env, file_env);
        if api_base.is_none() {
            r.problem(join(&params_path, "api_base"), "an azure/ deployment needs api_base (or AZURE_API_BASE)");
        }
    }
    if let Some(base) = &api_base {
        match reqwest::Url::parse(base) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => r.problem(join(&params_path, "api_base"), format!("{base:?} is not an http(s) URL")),
        }
    }
    let mut api_key = r.string(&params_path, &params, "api_key").map(Secret::new);
    // Each provider's usual environment variable, as LiteLLM reads them.
    let key_env = match provider {
        Some(ProviderKind::OpenAi) => Some("OPENAI_API_KEY"),
        Some(ProviderKind::Azure) => Some("AZURE_API_KEY"),
        Some(ProviderKind::Anthropic) => Some("ANTHROPIC_API_KEY"),
        Some(ProviderKind::Gemini) => Some("GEMINI_API_KEY"),
        _ => None,
    };
    if let Some(var) = key_env
        && api_key.is_none()
    {
        api_key = lookup_env(var, env, file_env).map(Secret::new);
        if api_key.is_none() && (api_base.is_none() || provider != Some(ProviderKind::OpenAi)) {
            r.warn(
                join(&params_path, "api_key"),
                format!("no api_key and {var} is not set; calls to this deployment will fail"),
            );
        }
    }
    let api_version = r.string(&params_path, &params, "api_version").or_else(|| {
        (provider == Some(ProviderKind::Azure)).then(|| lookup_env("AZURE_API_VERSION", env, file_env)).flatten()
    });
    let rpm = r.u64(&params_path, &params, "rpm");
    let tpm = r.u64(&params_path, &params, "tpm");
    let input_cost_per_token = r
        .price(&params_path, &params, "input_cost_per_token")
        .or_else(|| r.price(&info_path, &info, "input_cost_per_token"));
    let output_cost_per_token = r
        .price(&params_path, &params, "output_cost_per_token")
        .or_else(|| r.price(&info_path, &info, "output_cost_per_token"));
    let timeout = r.seconds(&params_path, &params, "timeout").unwrap_or(default_timeout);
    let stream_timeout = r.seconds(&params_path, &params, "stream_timeout");
    let vertex_project = r.string(&params_path, &params, "vertex_project");
    let vertex_location = r.string(&params_path, &params, "vertex_location");
    let vertex_credentials = r
        .string(&params_path, &params, "vertex_credentials")
        .or_else(|| lookup_env("GOOGLE_APPLICATION_CREDENTIALS", env, file_env));
    if provider == Some(ProviderKind::Vertex) {
        if vertex_project.is_none() {
            r.problem(join(&params_path, "vertex_project"), "a vertex_ai/ deployment needs vertex_project");
        }
        if vertex_credentials.is_none() {
            r.problem(
                join(&params_path, "vertex_credentials"),
                "a vertex_ai/ deployment needs vertex_credentials (a service account key file) or GOOGLE_APPLICATION_CREDENTIALS",
            );
        }
    }
    let weight = match r.u64(&params_path, &params, "weight") {
        Some(0) => {
            r.problem(join(&params_path, "weight"), "must be at least 1");
            1
        }
        Some(w) => u32::try_from(w).unwrap_or(u32::MAX),
        None => 1,
    };
    let mock = MockSettings {
        response: r.string(&params_path, &params, "mock_response"),
        latency: Duration::from_millis(r.u64(&params_path, &params, "mock_latency_ms").unwrap_or(0)),
        chunk_delay: Duration::from_millis(r.u64(&params_path, &params, "mock_chunk_delay_ms").unwrap_or(0)),
    };
    if provider != Some(ProviderKind::Mock)
        && (mock.response.is_some() || !mock.latency.is_zero() || !mock.chunk_delay.is_zero())
    {
        r.warn(&params_path, "mock_* settings only apply to the mock provider; ignored");
    }
    let max_output_tokens =
        r.u64(&info_path, &info, "max_output_tokens").or_else(|| r.u64(&info_path, &info, "max_tokens"));
    let explicit_id = r.string(&info_path, &info, "id");
    let mut access_groups = Vec::new();
    if let Some(list) = info.get("access_groups").and_then(|v| r.list(&join(&info_path, "access_groups"), v)) {
        for (i, g) in list.iter().enumerate() {
            match g.as_str() {
                Some(name) if !name.trim().is_empty() => access_groups.push(name.to_owned()),
                _ => r.problem(format!("{info_path}.access_groups[{i}]"), "expected a group name"),
            }
        }
    }

    let (model_name, provider, upstream_model) = (model_name?, provider?, upstream_model?);
    let id = explicit_id
        .unwrap_or_else(|| derive_deployment_id(&model_name, model.as_deref().unwrap_or(""), api_base.as_deref()));
    Some(DeploymentConfig {
        id,
        model_name,
        provider,
        upstream_model,
        api_base,
        api_key,
        api_version,
        vertex_project,
        vertex_location,
        vertex_credentials,
        weight,
        stream_timeout,
        rpm,
        tpm,
        input_cost_per_token,
        output_cost_per_token,
        timeout,
        mock,
        max_output_tokens,
        access_groups,
    })
}

/// A deployment id stable across restarts: a hash of what identifies the deployment (never
/// its key).
fn derive_deployment_id(model_name: &str, model: &str, api_base: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(model_name.as_bytes());
    h.update([0]);
    h.update(model.as_bytes());
    h.update([0]);
    h.update(api_base.unwrap_or("").as_bytes());
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_a_litellm_file() {
        let text = r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:9999/v1
      api_key: os.environ/UPSTREAM_KEY
      rpm: 100
      input_cost_per_token: 0.000002
    model_info:
      id: dep-1
general_settings:
  master_key: os.environ/MK:-sk-default
  max_request_size_mb: 1.5
"#;
        let loaded = Config::parse(text, &env(&[("UPSTREAM_KEY", "sk-up")])).unwrap();
        let d = &loaded.config.deployments[0];
        assert_eq!(d.id, "dep-1");
        assert_eq!(d.provider, ProviderKind::OpenAi);
        assert_eq!(d.upstream_model, "gpt-4o");
        assert_eq!(d.api_key.as_ref().unwrap().expose(), "sk-up");
        assert_eq!(d.input_cost_per_token, Some(2_000_000_000));
        assert_eq!(d.rpm, Some(100));
        assert_eq!(loaded.config.general.master_key.as_ref().unwrap().expose(), "sk-default");
        assert_eq!(loaded.config.general.max_request_size_bytes, 1_572_864);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let text = r#"
model_list:
  - model_name: ""
    litellm_params:
      model: nowhere/x
  - model_name: b
    litellm_params:
      model: openai/b
      rpm: -3
      api_base: "ftp://x"
general_settings:
  master_key: os.environ/NOT_SET
  database_url: mysql://x
  redis_failure_policy: sometimes
  redis_lease_seconds: 0
"#;
        let err = Config::parse(text, &env(&[])).unwrap_err();
        let got: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
        let want = [
            "general_settings.master_key: environment variable NOT_SET is not set",
            "general_settings.database_url: must start with postgresql://",
            "general_settings.redis_failure_policy: \"sometimes\" is not fail_open or fail_closed",
            "general_settings.redis_lease_seconds: must be greater than zero",
            "model_list[0].model_name: must not be empty",
            "model_list[0].litellm_params.model: provider \"nowhere\" is not supported",
            "model_list[1].litellm_params.api_base: \"ftp://x\" is not an http(s) URL",
            "model_list[1].litellm_params.rpm: expected a non-negative whole number, found -3",
        ];
        for w in want {
            assert!(got.iter().any(|g| g.starts_with(w)), "missing {w:?} in {got:#?}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }

    #[test]
    fn warns_about_unknown_keys_by_name() {
        let text = "litellm_settings:\n  drop_params: true\nfoo: 1\n";
        let loaded = Config::parse(text, &env(&[])).unwrap();
        let paths: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(paths, ["foo", "litellm_settings.drop_params"]);
    }

    #[test]
    fn env_overrides_and_database_url_fallback() {
        let loaded = Config::parse(
            "",
            &env(&[
                ("FERRYMAN__GENERAL_SETTINGS__MASTER_KEY", "sk-from-env"),
                ("DATABASE_URL", "postgresql://u:p@h/db"),
            ]),
        )
        .unwrap();
        assert_eq!(loaded.config.general.master_key.unwrap().expose(), "sk-from-env");
        assert_eq!(loaded.config.general.database_url.unwrap().expose(), "postgresql://u:p@h/db");
    }

    #[test]
    fn connection_limits_have_defaults_and_read_every_syntax() {
        let c = Config::parse("", &env(&[])).unwrap().config.general.connections;
        assert_eq!(c, ConnectionLimits::default());
        let text = "general_settings:
  max_connections: 50
  request_header_timeout: 1
  keepalive_timeout: 2m
  request_body_timeout: 2.5
  http2_max_concurrent_streams: 4
  http2_keepalive_interval: 10s
";
        let loaded =
            Config::parse(text, &env(&[("FERRYMAN__GENERAL_SETTINGS__HTTP2_KEEPALIVE_TIMEOUT", "3")])).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config.general.connections;
        assert_eq!(c.max_connections, 50);
        assert_eq!(c.request_header_timeout, Duration::from_secs(1));
        assert_eq!(c.keepalive_timeout, Duration::from_secs(120));
        assert_eq!(c.request_body_timeout, Duration::from_millis(2500));
        assert_eq!(c.http2_max_concurrent_streams, 4);
        assert_eq!(c.http2_keepalive_interval, Duration::from_secs(10));
        assert_eq!(c.http2_keepalive_timeout, Duration::from_secs(3));
    }

    #[test]
    fn connection_limits_refuse_zero_and_nonsense_naming_the_key() {
        let text = "general_settings:
  max_connections: 0
  request_body_timeout: 0
  http2_max_concurrent_streams: 5000000000
  http2_keepalive_interval: soon
";
        let err = Config::parse(text, &env(&[])).unwrap_err();
        let got: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
        let want = [
            "general_settings.max_connections: must be greater than zero",
            "general_settings.http2_max_concurrent_streams: 5000000000 is more than the ceiling",
            "general_settings.request_body_timeout: must be greater than zero",
            "general_settings.http2_keepalive_interval: invalid duration",
        ];
        for w in want {
            assert!(got.iter().any(|g| g.starts_with(w)), "missing {w:?} in {got:#?}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }

    #[test]
    fn invalid_yaml_is_one_problem() {
        let err = Config::parse("model_list: [", &env(&[])).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].message.starts_with("not valid YAML"));
    }
}
