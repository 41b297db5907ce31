//! Model names → deployments, and the choice of one deployment per call.
//!
//! Built once from `model_list`. Today a name resolves exactly and its deployments take turns
//! (round robin); routing strategies, retries, fallbacks and cooldowns grow here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::DeploymentConfig;
use crate::error::{ErrorCode, GatewayError};
use crate::governance::access::AccessGroups;
use crate::pricing::{Price, PriceTable};

/// A deployment ready to call, with its resolved price.
#[derive(Debug)]
pub struct Deployment {
    pub config: DeploymentConfig,
    pub price: Price,
    /// Whether `price` came from anywhere (config or table); unpriced calls cost 0.
    pub priced: bool,
    /// The most output tokens a call can produce (config, else the price table).
    pub max_output: Option<u64>,
}

struct Group {
    deployments: Vec<Arc<Deployment>>,
    next: AtomicUsize,
}

/// Every public model name and its deployments.
pub struct ModelRegistry {
    groups: HashMap<String, Group>,
    names: Vec<String>,
    access_groups: AccessGroups,
}

impl ModelRegistry {
    /// Prices each deployment: its own `input_cost_per_token` / `output_cost_per_token` win,
    /// then the table's entry for its upstream model. Returns the registry and the ids of
    /// deployments with no price.
    pub fn build(deployments: &[DeploymentConfig], table: &PriceTable) -> (Self, Vec<String>) {
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
            let entry = table.lookup(d.provider.as_str(), &d.upstream_model);
            let listed = entry.map(|m| m.price());
            let max_output = d.max_output_tokens.or_else(|| entry.and_then(|m| m.max_output_tokens));
            let priced = listed.is_some() || (d.input_cost_per_token.is_some() && d.output_cost_per_token.is_some());
            let base = listed.unwrap_or_default();
            let price = Price {
                input: d.input_cost_per_token.unwrap_or(base.input),
                output: d.output_cost_per_token.unwrap_or(base.output),
                cache_read: if d.input_cost_per_token.is_some() { None } else { base.cache_read },
            };
            if !priced {
                unpriced.push(d.id.clone());
            }
            let group = groups.entry(d.model_name.clone()).or_insert_with(|| {
                names.push(d.model_name.clone());
                Group { deployments: Vec::new(), next: AtomicUsize::new(0) }
            });
            group.deployments.push(Arc::new(Deployment { config: d.clone(), price, priced, max_output }));
        }
        (Self { groups, names, access_groups: AccessGroups(access) }, unpriced)
    }

    /// Access groups from `model_info.access_groups`: group → model names.
    pub fn access_groups(&self) -> &AccessGroups {
        &self.access_groups
    }

    /// The public model names, in config order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Picks the deployment for a call to `model`.
    pub fn pick(&self, model: &str) -> Result<Arc<Deployment>, GatewayError> {
        let group = self.groups.get(model).ok_or_else(|| {
            GatewayError::new(
                ErrorCode::NotFound,
                format!("model {model:?} does not exist on this gateway; GET /v1/models lists the models you can use"),
            )
            .with_reason("model_not_found")
            .with_param("model")
        })?;
        let i = group.next.fetch_add(1, Ordering::Relaxed) % group.deployments.len();
        Ok(group.deployments[i].clone())
    }
}
