//! Reloading config.yaml while serving: on SIGHUP and on `POST /config/reload` (which
//! `ferryman config apply` calls).
//!
//! A reload reads the file the gateway started with, validates all of it, reconciles the
//! governance it declares (see `admin::reconcile`) and then swaps in a new model registry
//! built from `model_list` and `router_settings`. Calls in flight keep the registry they
//! started with, so nothing is dropped. A file with any problem changes nothing; a
//! governance conflict leaves the models as they were too. Other settings (database, Redis,
//! master key, cache, limits policy) take effect on the next start.
//!
//! With Redis, the instance that reloaded tells the others (`Invalidation::Models`): they
//! drop cached identities and reload their own file's models, so one `config apply` through
//! a load balancer reaches every instance. They do not reconcile again: the governance is
//! already in the shared database, and an instance whose copy of the file is behind must not
//! put the old governance back.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::admin::reconcile::{self, Plan, ReconcileError};
use crate::config::{Config, ConfigProblem, ProcessEnv};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::router::ModelRegistry;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the gateway was started without a config file; there is nothing to reload")]
    NoFile,
    #[error("{} has {} problem(s); nothing was changed: {}", file, problems.len(), list(problems))]
    Invalid { file: String, problems: Vec<ConfigProblem> },
    #[error("cannot apply the governance the file declares; nothing was changed: {0}")]
    Reconcile(#[from] ReconcileError),
    #[error("the reload stopped unexpectedly: {0}")]
    Aborted(String),
}

impl From<ReloadError> for GatewayError {
    fn from(e: ReloadError) -> Self {
        match e {
            ReloadError::Reconcile(ReconcileError::Store(s)) => s.into(),
            other => GatewayError::invalid("config", other.to_string()),
        }
    }
}

fn list(problems: &[ConfigProblem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// What a reload did.
#[derive(Debug)]
pub struct Reloaded {
    pub plan: Plan,
    pub models: usize,
    pub warnings: Vec<ConfigProblem>,
}

impl Reloaded {
    pub fn to_json(&self) -> Value {
        json!({
            "changes": self.plan.lines,
            "kept": self.plan.kept,
            "models": self.models,
            "warnings": self.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }
}

/// Logs a reconcile's changes, one line each, with `actor=config`.
pub fn log_plan(plan: &Plan) {
    for line in &plan.lines {
        tracing::info!(actor = "config", "{line}");
    }
    for line in &plan.kept {
        tracing::warn!(actor = "config", "{line}");
    }
}

fn read(gw: &Gateway) -> Result<(std::path::PathBuf, crate::config::Loaded), ReloadError> {
    let path = gw.config.source.clone().ok_or(ReloadError::NoFile)?;
    let loaded = Config::load(&path, &ProcessEnv)
        .map_err(|e| ReloadError::Invalid { file: path.display().to_string(), problems: e.problems })?;
    for w in &loaded.warnings {
        tracing::warn!("config: {w}");
    }
    Ok((path, loaded))
}

/// Builds and swaps in the model registry a configuration declares; returns its model count.
fn swap_models(gw: &Gateway, config: &Config) -> usize {
    let previous = gw.models();
    let (models, unpriced) =
        ModelRegistry::rebuild(&config.deployments, &gw.prices, config.routing.clone(), Some(&previous));
    for id in unpriced {
        tracing::warn!(deployment = %id, "no price for this deployment in the table or config; its calls will cost 0");
    }
    let count = models.names().len();
    gw.registry.store(Arc::new(models));
    count
}

/// Reads the gateway's config file again and applies it. The work runs as its own task, so
/// a caller that hangs up cannot stop it between the commit and the model swap.
pub async fn reload(gw: Arc<Gateway>) -> Result<Reloaded, ReloadError> {
    match crate::tasks::spawn("config-reload", async move { reload_here(&gw).await }).await {
        Ok(done) => done,
        Err(e) => Err(ReloadError::Aborted(e.to_string())),
    }
}

async fn reload_here(gw: &Gateway) -> Result<Reloaded, ReloadError> {
    let _one_at_a_time = gw.reloading.lock().await;
    let (path, loaded) = read(gw)?;
    let config = loaded.config;
    let plan = reconcile::apply(gw, &config.governance, config.general.config_prune).await?;
    log_plan(&plan);
    let count = swap_models(gw, &config);
    gw.mcp.replace(&config.mcp_servers, &gw.mcp.registered());
    let advisory = config.general.config_managed_fields == crate::config::governance::ManagedFields::Advisory;
    gw.advisory.store(advisory, std::sync::atomic::Ordering::Relaxed);
    if let Some(sync) = gw.sync.get() {
        sync.publish(crate::sync::Invalidation::Models);
    }
    tracing::info!(file = %path.display(), changes = plan.lines.len(), models = count, "configuration reloaded");
    Ok(Reloaded { plan, models: count, warnings: loaded.warnings })
}

/// Reloads only `model_list` and `router_settings` (another instance reloaded).
pub async fn reload_models(gw: &Gateway) -> Result<usize, ReloadError> {
    let _one_at_a_time = gw.reloading.lock().await;
    let (path, loaded) = read(gw)?;
    let count = swap_models(gw, &loaded.config);
    gw.mcp.replace(&loaded.config.mcp_servers, &gw.mcp.registered());
    tracing::info!(file = %path.display(), models = count, "models reloaded: another instance reloaded its configuration");
    Ok(count)
}

/// SIGHUP, listened for from the start: before the first reload can run, a SIGHUP is not
/// the end of the process. `None` where signals cannot be had.
pub struct Hangups(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

pub fn hangups() -> Hangups {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Hangups(Some(s)),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload with `ferryman config apply`");
            Hangups(None)
        }
    }
    #[cfg(not(unix))]
    Hangups()
}

impl Hangups {
    async fn next(&mut self) -> Option<()> {
        #[cfg(unix)]
        if let Some(s) = self.0.as_mut() {
            return s.recv().await;
        }
        std::future::pending().await
    }
}

/// Reloads on every SIGHUP, and reloads the models whenever another instance reloaded, until
/// the process ends. A failed reload is logged; the gateway keeps running on what it had.
pub fn watch(gw: Arc<Gateway>, mut hangups: Hangups) {
    crate::tasks::spawn("config-watch", async move {
        loop {
            tokio::select! {
                signal = hangups.next() => {
                    if signal.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading the configuration");
                    if let Err(e) = reload(gw.clone()).await {
                        tracing::error!("reload failed: {e}");
                    }
                }
                () = gw.models_changed.notified() => {
                    if let Err(e) = reload_models(&gw).await {
                        tracing::error!("model reload failed: {e}");
                    }
                }
                () = gw.mcp_changed.notified() => {
                    if let Err(e) = crate::admin::mcp::refresh(&gw).await {
                        tracing::error!("cannot read the registered MCP servers: {e}");
                    }
                }
            }
        }
    });
}
