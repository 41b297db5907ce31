//! The MCP gateway: one governed MCP endpoint in front of every tool server.
//!
//! [`Hub`] holds the registered servers (`mcp_servers` in config.yaml) and their upstream
//! connections ([`upstream`]); [`endpoint`] serves `/mcp` and `/mcp/<servers>` with the
//! official SDK (both protocol generations on one POST endpoint), authenticates the caller
//! with its virtual key, aggregates the tools of the servers it may use under
//! `<server>-<tool>` names ([`names`]) and routes each call to its server with Ferryman's
//! credential, never the client's.

pub mod calls;
pub mod endpoint;
pub mod http_client;
pub mod names;
pub mod oauth;
pub mod sse;
pub mod upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::config::mcp::McpServerConfig;
use crate::error::GatewayError;
use crate::governance::Caller;
pub use upstream::{Upstream, UpstreamError};

/// What one caller may use.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The servers; `None` means all.
    pub servers: Option<BTreeSet<String>>,
    /// Per server, the tools allowed (by upstream or prefixed name); absent means all.
    pub tools: BTreeMap<String, BTreeSet<String>>,
}

impl Access {
    pub fn server(&self, name: &str) -> bool {
        self.servers.as_ref().is_none_or(|s| s.contains(name))
    }

    pub fn tool(&self, server: &str, tool: &str) -> bool {
        self.tools.get(server).is_none_or(|t| t.contains(tool) || t.contains(&names::prefixed(server, tool)))
    }
}

/// Where a server was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// config.yaml's `mcp_servers` (changed by editing the file and reloading).
    File,
    /// The management API (`/v1/mcp/server`), stored in the database.
    Registered,
}

type Servers = BTreeMap<String, Arc<Upstream>>;

/// The MCP servers, from config.yaml and from the management API. Swapped whole when either
/// changes; an upstream whose settings did not change keeps its connection.
pub struct Hub {
    http: reqwest::Client,
    servers: arc_swap::ArcSwap<Servers>,
    /// Upstreams that carry a caller's own credential: one pooled connection per server and
    /// credential (keyed by the credential's SHA-256, never the credential).
    personal: std::sync::Mutex<BTreeMap<(String, String), Arc<Upstream>>>,
}

/// The most personal upstreams kept; past it, the idle ones are dropped.
const MAX_PERSONAL: usize = 1024;

impl Default for Hub {
    fn default() -> Self {
        Self { http: reqwest::Client::new(), servers: Default::default(), personal: Default::default() }
    }
}

impl Hub {
    pub fn new(configs: &[McpServerConfig]) -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| GatewayError::internal(format!("cannot build the MCP HTTP client: {e}")))?;
        let hub = Self { http, servers: Default::default(), personal: Default::default() };
        hub.replace(configs, &[]);
        Ok(hub)
    }

    /// Makes the registry `from_file` plus `registered` (a registered server never takes a
    /// file server's name: the API refuses it).
    pub fn replace(&self, from_file: &[McpServerConfig], registered: &[McpServerConfig]) {
        let before = self.servers.load_full();
        let mut next = Servers::new();
        let all = from_file.iter().map(|c| (c, Origin::File)).chain(registered.iter().map(|c| (c, Origin::Registered)));
        for (config, origin) in all {
            if next.contains_key(&config.name) {
                continue;
            }
            let fingerprint = config.fingerprint();
            let upstream = match before.get(&config.name) {
                Some(u) if u.origin == origin && u.fingerprint == fingerprint => u.clone(),
                _ => Arc::new(Upstream::new(Arc::new(config.clone()), self.http.clone(), origin, fingerprint)),
            };
            next.insert(config.name.clone(), upstream);
        }
        self.servers.store(Arc::new(next));
    }

    /// `server` presenting the caller's own credential (`x-mcp-<server>-authorization`)
    /// instead of Ferryman's: the same pooled upstream for every call with that credential.
    pub fn with_credential(&self, server: &Arc<Upstream>, credential: &str) -> Arc<Upstream> {
        use sha2::Digest;
        let key = (
            format!("{}:{}", server.name(), server.fingerprint),
            hex::encode(sha2::Sha256::digest(credential.as_bytes())),
        );
        let Ok(mut pool) = self.personal.lock() else {
            return server.clone();
        };
        if let Some(u) = pool.get(&key) {
            return u.clone();
        }
        if pool.len() >= MAX_PERSONAL {
            pool.retain(|_, u| Arc::strong_count(u) > 1);
        }
        let mut config = (*server.config).clone();
        config.auth = crate::config::mcp::McpAuth::Passthrough(crate::config::Secret::new(credential));
        let fingerprint = config.fingerprint();
        let u = Arc::new(Upstream::new(Arc::new(config), self.http.clone(), server.origin, fingerprint));
        pool.insert(key, u.clone());
        u
    }

    /// The servers config.yaml declares, as they are now.
    pub fn from_file(&self) -> Vec<McpServerConfig> {
        self.servers.load().values().filter(|u| u.origin == Origin::File).map(|u| (*u.config).clone()).collect()
    }

    /// The servers registered through the API, as they are now.
    pub fn registered(&self) -> Vec<McpServerConfig> {
        self.servers.load().values().filter(|u| u.origin == Origin::Registered).map(|u| (*u.config).clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.servers.load().get(name).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.load().is_empty()
    }

    /// Every server, by name.
    pub fn all(&self) -> Vec<Arc<Upstream>> {
        self.servers.load().values().cloned().collect()
    }

    /// What `caller` may use: the intersection of what its key, its user (personal keys: a
    /// team key answers to its team), its team and its organization each allow
    /// (`object_permission`). Where no level says anything, every server
    /// (`general_settings.mcp_default_access: all`, the default) or none (`none`). The master
    /// key may use everything.
    pub fn access(&self, caller: &Caller, default_none: bool) -> Access {
        let Caller::Key(id) = caller else { return Access::default() };
        let levels = [
            Some(&id.key.object_permission),
            id.user.as_ref().filter(|_| id.team.is_none()).map(|u| &u.object_permission),
            id.team.as_ref().map(|t| &t.object_permission),
            id.org.as_ref().map(|o| &o.object_permission),
        ];
        let mut access = Access::default();
        for p in levels.into_iter().flatten() {
            if p.restricts_servers() {
                let mut here: BTreeSet<String> = p.mcp_servers.iter().flatten().cloned().collect();
                for group in p.mcp_access_groups.iter().flatten() {
                    for s in self.all().iter().filter(|s| s.config.access_groups.contains(group)) {
                        here.insert(s.name().to_owned());
                    }
                }
                access.servers = Some(match access.servers.take() {
                    None => here,
                    Some(before) => before.intersection(&here).cloned().collect(),
                });
            }
            for (server, tools) in p.mcp_tool_permissions.iter().flatten() {
                let here: BTreeSet<String> = tools.iter().cloned().collect();
                access
                    .tools
                    .entry(server.clone())
                    .and_modify(|t| *t = t.intersection(&here).cloned().collect())
                    .or_insert(here);
            }
        }
        if access.servers.is_none() && default_none {
            access.servers = Some(BTreeSet::new());
        }
        access
    }

    /// The servers a selection names: a comma-separated list of server names and access
    /// groups (`/mcp/github,dev-tools`, `x-mcp-servers: github`). An unknown name is an error
    /// naming it, never an empty selection.
    pub fn select(&self, selection: &str) -> Result<Vec<Arc<Upstream>>, String> {
        let servers = self.servers.load();
        let mut out: Vec<Arc<Upstream>> = Vec::new();
        for name in selection.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let found: Vec<&Arc<Upstream>> = match servers.get(name) {
                Some(s) => vec![s],
                None => servers.values().filter(|s| s.config.access_groups.iter().any(|g| g == name)).collect(),
            };
            if found.is_empty() {
                return Err(format!("no MCP server or access group is named {name:?}"));
            }
            for s in found {
                if !out.iter().any(|o| Arc::ptr_eq(o, s)) {
                    out.push(s.clone());
                }
            }
        }
        Ok(out)
    }
}
