//! Assembles the gateway and serves it: one listener for gRPC, gRPC-web and HTTP.
//!
//! [`build`] opens the store, migrates it and wires the hot path; [`serve`] takes a bound
//! listener and a shutdown future, so tests bind port 0 and the binary binds its configured
//! address. Shutdown runs in phases: stop accepting and drain in-flight requests (streams
//! included, bounded by [`DRAIN_DEADLINE`]), then flush the spend ledger.

use crate::limits::rates::Rates;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use futures_util::FutureExt;
use tokio::net::TcpListener;

use crate::api::http::{ApiError, AppState, RequestStart};
use crate::api::{grpc, http};
use crate::config::{Config, redact_url};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::governance::IdentityCache;
use crate::ledger::{self, Ledger, Spool};
use crate::pricing::PriceTable;
use crate::providers::Upstreams;
use crate::router::ModelRegistry;
use crate::store::{self, DEFAULT_SQLITE_URL};

/// How long in-flight requests may take to finish once shutdown begins.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// How long the ledger may take to store what is queued at shutdown.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database {url}: {source}")]
    Database { url: String, source: store::StoreError },
    #[error("cannot migrate the database {url}: {source}")]
    Migrate { url: String, source: store::StoreError },
    #[error("cannot load the built-in price table: {0}")]
    Prices(serde_json::Error),
    #[error("{0}")]
    Gateway(GatewayError),
    #[error("{0}")]
    Spool(#[from] crate::ledger::SpoolError),
    #[error("cannot replay spooled spend records into the database: {0}")]
    Replay(store::StoreError),
    #[error("cannot apply the governance the config file declares: {0}")]
    Reconcile(crate::admin::reconcile::ReconcileError),
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The database URL in force: the configured one, or the embedded SQLite file.
pub fn database_url(config: &Config) -> String {
    config.general.database_url.as_ref().map_or_else(|| DEFAULT_SQLITE_URL.to_owned(), |u| u.expose().to_owned())
}

/// Opens and migrates the store and wires the hot path.
pub async fn build(config: Config) -> Result<Arc<Gateway>, StartError> {
    crate::error::set_budget_exceeded_status(config.general.budget_exceeded_status);
    let url = database_url(&config);
    let shown = redact_url(&url);
    let store = store::connect(&url).await.map_err(|source| StartError::Database { url: shown.clone(), source })?;
    store.migrate().await.map_err(|source| StartError::Migrate { url: shown.clone(), source })?;
    tracing::info!(database = %shown, backend = store.backend(), "database ready");

    let prices = PriceTable::builtin().map_err(StartError::Prices)?;
    let (models, unpriced) = ModelRegistry::build(&config.deployments, &prices, config.routing.clone());
    for id in unpriced {
        tracing::warn!(deployment = %id, "no price for this deployment in the table or config; its calls will cost 0");
    }
    let identities = IdentityCache::new(store.clone(), config.general.master_key.as_ref().map(|k| k.expose()));
    let upstreams = Upstreams::new().map_err(StartError::Gateway)?;
    let (spool, leftovers) = Spool::open(&config.general.spool_dir)?;
    if !leftovers.records.is_empty() {
        let found = leftovers.records.len();
        let stored = ledger::replay(store.as_ref(), &spool, leftovers).await.map_err(StartError::Replay)?;
        tracing::info!(found, newly_stored = stored, "replayed spend records a previous process had spooled");
    }
    let counters = Arc::new(crate::limits::SpendCounters::default());
    let ledger = Ledger::start(store.clone(), Arc::new(spool), counters.clone());
    let customers = crate::governance::customers::CustomerCache::new(store.clone(), config.customer_defaults.clone());
    let tags = crate::governance::tags::TagCache::load(store.clone()).await.map_err(StartError::Gateway)?;
    let rates = match &config.general.redis_url {
        Some(url) => {
            let g = &config.general;
            let stored = ledger.stored_through();
            match crate::limits::shared::SharedRates::new(
                url.expose(),
                &g.redis_prefix,
                g.redis_lease,
                g.redis_timeout,
                stored,
            ) {
                Ok(shared) => Rates::shared(shared, g.redis_failure_policy, store.clone(), counters),
                Err(e) => {
                    let message = format!("general_settings.redis_url is not a usable Redis URL ({:?})", e.kind());
                    return Err(StartError::Gateway(GatewayError::invalid("general_settings.redis_url", message)));
                }
            }
        }
        None => Rates::default(),
    };
    let cache = match config.cache.clone().map(crate::cache::ResponseCache::new) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            return Err(StartError::Gateway(GatewayError::invalid("litellm_settings.cache_params", e)));
        }
        None => None,
    };
    let mcp = crate::mcp::Hub::new(&config.mcp_servers).map_err(StartError::Gateway)?;
    let governance = config.governance.clone();
    let prune = config.general.config_prune;
    let config_managed_fields = config.general.config_managed_fields;
    let gateway = Arc::new(Gateway {
        cache,
        config,
        store,
        identities,
        customers,
        tags,
        rates,
        registry: arc_swap::ArcSwap::from_pointee(models),
        mcp,
        reloading: Default::default(),
        models_changed: Default::default(),
        mcp_changed: Default::default(),
        advisory: (config_managed_fields == crate::config::governance::ManagedFields::Advisory).into(),
        announce: Default::default(),
        upstreams,
        ledger,
        prices,
        recorded: Default::default(),
        sync: Default::default(),
    });
    crate::admin::mcp::refresh(&gateway).await.map_err(StartError::Gateway)?;
    // The file's governance becomes the stored state before the first request.
    let plan = crate::admin::reconcile::apply(&gateway, &governance, prune).await.map_err(StartError::Reconcile)?;
    crate::reload::log_plan(&plan);
    gateway.announce.store(!plan.is_empty(), std::sync::atomic::Ordering::Relaxed);
    Ok(gateway)
}

/// The whole router: HTTP routes, gRPC (and gRPC-web) services, and the layers around them.
pub async fn router(gateway: Arc<Gateway>) -> Result<Router, StartError> {
    let body_limit = gateway.config.general.max_request_size_bytes;
    let grpc = grpc::routes(gateway.clone())
        .await?
        // gRPC-web requests are translated to gRPC; other requests pass through untouched.
        .layer(tonic_web::GrpcWebLayer::new());
    let mcp = crate::mcp::endpoint::routes(gateway.clone());
    let http = http::routes(AppState { gateway })
        // The OpenAI shim refuses bodies over the configured size before reading them whole.
        .layer(DefaultBodyLimit::max(body_limit));
    Ok(http
        .merge(grpc)
        .merge(mcp)
        .fallback(not_found)
        // Outermost: stamp the arrival time, so the overhead figure covers every layer.
        .layer(middleware::from_fn(stamp_start)))
}

async fn stamp_start(mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(RequestStart(Instant::now()));
    next.run(req).await
}

async fn not_found(req: Request) -> Response {
    ApiError(GatewayError::not_found(format!("no route {} {}", req.method(), req.uri().path()))).into_response()
}

/// Serves until `shutdown` completes, then drains and flushes.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    if let Some(url) = &gateway.config.general.redis_url {
        match crate::sync::start(&gateway, url.expose(), &gateway.config.general.redis_prefix) {
            Ok(sync) => {
                // Instances already running drop what the start-up reconcile changed.
                if gateway.announce.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    sync.publish(crate::sync::Invalidation::All);
                }
                let _ = gateway.sync.set(sync);
            }
            Err(e) => tracing::error!(error = %e, "cannot use redis_url for cache invalidation"),
        }
    }
    // Other instances' changes, from the audit log (with or without Redis).
    match gateway.store.audit_head().await {
        Ok(head) => crate::sync::feed::start(&gateway, head.seq),
        Err(e) => return Err(StartError::Database { url: redact_url(&database_url(&gateway.config)), source: e }),
    }
    let app = router(gateway.clone()).await?;
    let shutdown = shutdown.shared();
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.clone());
    // Phase 1 and 2: stop accepting, drain in-flight requests.
    tokio::select! {
        result = server => {
            if let Err(e) = result {
                tracing::error!(error = %e, "server error");
            }
        }
        () = async { shutdown.clone().await; tokio::time::sleep(DRAIN_DEADLINE).await } => {
            tracing::warn!(deadline_s = DRAIN_DEADLINE.as_secs(), "requests still in flight at the drain deadline; closing them");
        }
    }
    // Phase 3: flush the spend ledger.
    if gateway.ledger.close(FLUSH_DEADLINE).await {
        tracing::info!("spend records flushed");
    } else {
        tracing::error!("spend records could not all be stored before the flush deadline");
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested: draining requests, then flushing spend records");
}
