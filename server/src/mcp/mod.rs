//! The MCP gateway: one governed MCP endpoint in front of every tool server.
//!
//! [`Hub`] holds the registered servers (`mcp_servers` in config.yaml) and their upstream
//! connections ([`upstream`]); [`endpoint`] serves `/mcp` and `/mcp/<servers>` with the
//! official SDK (both protocol generations on one POST endpoint), authenticates the caller
//! with its virtual key, aggregates the tools of the servers it may use under
//! `<server>-<tool>` names ([`names`]) and routes each call to its server with Ferryman's
//! credential, never the client's.

pub mod endpoint;
pub mod names;
pub mod upstream;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::mcp::McpServerConfig;
use crate::error::GatewayError;
pub use upstream::{Upstream, UpstreamError};

/// The registered MCP servers.
#[derive(Default)]
pub struct Hub {
    servers: BTreeMap<String, Arc<Upstream>>,
}

impl Hub {
    pub fn new(configs: &[McpServerConfig]) -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| GatewayError::internal(format!("cannot build the MCP HTTP client: {e}")))?;
        let servers = configs
            .iter()
            .map(|c| (c.name.clone(), Arc::new(Upstream::new(Arc::new(c.clone()), http.clone()))))
            .collect();
        Ok(Self { servers })
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Every server, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.servers.values()
    }

    /// The servers a selection names: a comma-separated list of server names and access
    /// groups (`/mcp/github,dev-tools`, `x-mcp-servers: github`). An unknown name is an error
    /// naming it, never an empty selection.
    pub fn select(&self, selection: &str) -> Result<Vec<Arc<Upstream>>, String> {
        let mut out: Vec<Arc<Upstream>> = Vec::new();
        for name in selection.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let found: Vec<&Arc<Upstream>> = match self.servers.get(name) {
                Some(s) => vec![s],
                None => self.servers.values().filter(|s| s.config.access_groups.iter().any(|g| g == name)).collect(),
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
