//! Assembles the gateway and serves it: one listener for gRPC, gRPC-web and HTTP.
//!
//! [`build`] opens the store, migrates it and wires the hot path; [`router`] is the one
//! middleware stack over every route; [`serve`] takes a bound listener and a shutdown future,
//! so tests bind port 0 and the binary binds its configured address.
//!
//! Serving is this module's own accept loop over hyper-util's auto connection (HTTP/1.1 or
//! h2c on the same port, upgrades allowed), because every bound a hostile or broken client
//! could otherwise exceed is per connection and `axum::serve` offers none. The bounds are
//! `general_settings` ([`ConnectionLimits`]):
//! - at most `max_connections` connections at once, lowered at start to fit under the
//!   open-file limit. Past it a connection is *shed*: one of [`SHED_RESERVE`] reserve slots
//!   serves it for at most [`SHED_DEADLINE`], answering health checks as usual and everything
//!   else with a 503 in the OpenAI shape (a gRPC `UNAVAILABLE` for gRPC); past the reserve a
//!   fixed 503 is written and the socket closed. An overload episode is logged once when it
//!   starts and once when it ends, never per connection.
//! - a new connection must send its first request within `request_header_timeout`; an HTTP/1
//!   connection then waits at most `keepalive_timeout` for each later head; HTTP/2 bounds
//!   concurrent streams, header lists and reset floods, and pings silent peers.
//! - a failed accept (out of descriptors) pauses the loop for [`ACCEPT_BACKOFF`] instead of
//!   spinning, logged once until accepting works again.
//!
//! Request bodies are bounded by `request_body_timeout` in [`router`], not here: the deadline
//! is per request, and its refusal is an answer in each surface's error shape.
//!
//! Shutdown runs in phases: stop accepting, drain in-flight requests (streams included,
//! bounded by [`DRAIN_DEADLINE`]), then flush the spend ledger.

use crate::limits::rates::Rates;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::{ServiceBuilder, ServiceExt};

use crate::api::http::{ApiError, AppState, RequestStart};
use crate::api::{grpc, http};
use crate::config::{Config, ConnectionLimits, redact_url};
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

/// Connections admitted past `max_connections`, so health checks (`/health/liveness`,
/// `/health/readiness`, `grpc.health.v1.Health/Check`) still answer while the gateway sheds
/// load: a liveness probe that failed under overload would get the instance restarted just
/// when it is busiest. Every other request on them is answered 503.
pub const SHED_RESERVE: usize = 32;
/// How long a reserve connection lives, whatever it does, so an idle flood cannot keep the
/// reserve (and so the probes) out for longer.
pub const SHED_DEADLINE: Duration = Duration::from_secs(5);
/// How long an idle connection told to close may take to do so before it is cut off.
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(2);
/// A reserve connection must ask within this, so idle sockets cannot hold the reserve (and
/// keep the probes out) for long.
pub const SHED_FIRST_REQUEST: Duration = Duration::from_secs(1);
/// An overload episode ends once no connection has been shed for this long.
const OVERLOAD_QUIET: Duration = Duration::from_secs(5);
/// What a shed request is told to wait before retrying.
const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The pause after a failed accept (`EMFILE`: out of descriptors), so the loop cannot spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// HTTP/2: the largest header list a client may send. hyper's default (16 KiB) is below what
/// an HTTP/1 head may carry here; a long token plus gRPC metadata fits in 64 KiB.
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// HTTP/2: streams a client may open and reset before they are accepted (rapid reset,
/// CVE-2023-44487) before the connection is closed; h2's own default, pinned here.
const H2_MAX_PENDING_ACCEPT_RESET: usize = 20;
/// HTTP/2 streams on a reserve connection: enough for a probe, too few to carry traffic.
const H2_SHED_STREAMS: u32 = 4;

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
    let body_timeout = gateway.config.general.connections.request_body_timeout;
    let grpc = grpc::routes(gateway.clone())
        .await?
        // gRPC-web requests are translated to gRPC; other requests pass through untouched.
        .layer(tonic_web::GrpcWebLayer::new());
    let mcp = crate::mcp::endpoint::routes(gateway.clone());
    let http = http::routes(AppState { gateway })
        // The OpenAI shim refuses bodies over the configured size before reading them whole.
        .layer(DefaultBodyLimit::max(body_limit));
    Ok(http.merge(grpc).merge(mcp).fallback(not_found).layer(
        ServiceBuilder::new()
            // Outermost: stamp the arrival time, so the overhead figure covers every layer.
            .layer(middleware::from_fn(stamp_start))
            // Every request body, whichever surface reads it (OpenAI shim, gRPC, MCP), must
            // arrive whole within request_body_timeout of its head, or the request is
            // answered with one error and its connection freed. Around all the routes, so no
            // route can read a body before the deadline is on it and the refusal is the same
            // wherever the body was read; inside the stamp, so its time is counted. A
            // bodiless request (an SSE GET) carries no deadline, and responses (streams
            // included) are never bounded here. No RPC in proto/ streams its request; one
            // that did would need exempting here.
            .layer(middleware::from_fn_with_state(body_timeout, body_deadline)),
    ))
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
        Ok(head) => {
            // Read the tag records again after the head: a change made since build is in
            // them, and every later one is past the head.
            gateway.tags.invalidate();
            if let Err(e) = gateway.tags.refresh().await {
                return Err(StartError::Gateway(e));
            }
            crate::sync::feed::start(&gateway, head.seq);
        }
        Err(e) => return Err(StartError::Database { url: redact_url(&database_url(&gateway.config)), source: e }),
    }
    let app = router(gateway.clone()).await?;
    let mut limits = gateway.config.general.connections;
    limits.max_connections = fit_open_file_limit(limits.max_connections);
    tracing::info!(
        max_connections = limits.max_connections,
        request_header_timeout_ms = limits.request_header_timeout.as_millis(),
        keepalive_timeout_ms = limits.keepalive_timeout.as_millis(),
        request_body_timeout_ms = limits.request_body_timeout.as_millis(),
        http2_max_concurrent_streams = limits.http2_max_concurrent_streams,
        "connection limits"
    );
    let serving = Arc::new(Serving::new(app, limits));
    let shutdown = shutdown.shared();
    // Phase 1 and 2: stop accepting, drain in-flight requests.
    tokio::select! {
        () = accept_loop(listener, serving, shutdown.clone()) => {}
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

/// What every connection task shares: the router, the limits, and the two connection
/// builders (ordinary and reserve) configured from them once.
struct Serving {
    app: Router,
    limits: ConnectionLimits,
    builder: auto::Builder<TokioExecutor>,
    reserve: auto::Builder<TokioExecutor>,
}

impl Serving {
    fn new(app: Router, limits: ConnectionLimits) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // hyper's head clock starts as soon as the connection waits for a head, so this
            // bounds the idle time between requests plus the next head. A fresh connection
            // has the shorter request_header_timeout, enforced in `serve_connection`.
            .header_read_timeout(limits.keepalive_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_concurrent_streams)
            .max_header_list_size(H2_MAX_HEADER_LIST)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET)
            .keep_alive_interval(limits.http2_keepalive_interval)
            .keep_alive_timeout(limits.http2_keepalive_timeout);
        let mut reserve = auto::Builder::new(TokioExecutor::new());
        reserve
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.request_header_timeout.min(SHED_DEADLINE))
            .keep_alive(false);
        reserve
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_SHED_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET);
        Self { app, limits, builder, reserve }
    }
}

/// Accepts until `shutdown`, giving each connection a slot, a reserve slot or a fixed 503;
/// then stops accepting and waits until every connection has finished (every slot is back).
async fn accept_loop(listener: TcpListener, serving: Arc<Serving>, shutdown: impl Future<Output = ()>) {
    let max = serving.limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let reserve = Arc::new(Semaphore::new(SHED_RESERVE));
    let refusal = fixed_unavailable().await;
    let (stop, stopping) = watch::channel(false);
    let mut overload = Overload::default();
    let mut accept_failures = AcceptFailures::default();
    let mut shutdown = pin!(shutdown);
    loop {
        let quiet = overload.quiet_at();
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(quiet.unwrap_or_else(tokio::time::Instant::now)), if quiet.is_some() => {
                overload.end();
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => {
                accept_failures.recovered();
                pair
            }
            // The client gave up before we got to it: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                accept_failures.failed(&e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            crate::tasks::spawn("connection", serve_connection(serving.clone(), tcp, peer, stopping.clone(), slot));
            continue;
        }
        overload.shed(max);
        match reserve.clone().try_acquire_owned() {
            Ok(slot) => {
                crate::tasks::spawn("shed-connection", serve_reserve(serving.clone(), tcp, peer, slot));
            }
            // Written without waiting (it fits a fresh socket's buffer); dropping closes.
            Err(_) => {
                let _ = tcp.try_write(&refusal);
            }
        }
    }
    // Phase 1: stop accepting; open connections finish what they are doing and close.
    drop(listener);
    let _ = stop.send(true);
    overload.end();
    // Phase 2: drained when every slot is back.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    let _ = reserve.acquire_many(u32::try_from(SHED_RESERVE).unwrap_or(u32::MAX)).await;
}

/// What a connection is doing: requests in flight (until their response body ends) and when
/// the last one began, for the idle bound.
#[derive(Default)]
struct Activity {
    asked: AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds since the connection began, when the last request began.
    last_ms: std::sync::atomic::AtomicU64,
}

/// Held by a request and then its response body: the connection is busy while one exists.
struct Busy {
    activity: Arc<Activity>,
}

impl Busy {
    fn begin(activity: &Arc<Activity>, since: Instant) -> Self {
        activity.asked.store(true, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_ms.store(ms, Ordering::Relaxed);
        Busy { activity: activity.clone() }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its connection counted busy until it ends or is dropped.
struct BusyBody {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one admitted connection until it closes, it sends no first request within
/// `request_header_timeout`, it stays idle (nothing in flight, HTTP/1 or HTTP/2 alike) for
/// `keepalive_timeout`, or shutdown drains it. Holds its slot while it runs.
async fn serve_connection(
    serving: Arc<Serving>,
    tcp: TcpStream,
    peer: SocketAddr,
    mut stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::default());
    let began = Instant::now();
    let service = {
        let (activity, app) = (activity.clone(), serving.app.clone());
        tower::service_fn(move |mut req: Request<Incoming>| {
            let busy = Busy::begin(&activity, began);
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let response = app.oneshot(req).await?;
                Ok::<_, Infallible>(response.map(|inner| Body::new(BusyBody { inner, _busy: busy })))
            }
        })
    };
    let conn = serving.builder.serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(service));
    let mut conn = pin!(conn);
    // hyper has no clock before it knows the protocol, and none at all for a first HTTP/2
    // request: this one covers both.
    let mut first_request = pin!(tokio::time::sleep(serving.limits.request_header_timeout));
    // An HTTP/2 client that only answers pings would hold its slot for ever: look every
    // quarter of the idle bound.
    let idle_after = serving.limits.keepalive_timeout;
    let mut idle_check = tokio::time::interval((idle_after / 4).max(Duration::from_millis(100)));
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut awaiting_first, mut draining, mut idle) = (true, false, false);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut first_request, if awaiting_first => {
                if !activity.asked.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "closing a connection that sent no request within request_header_timeout");
                    return;
                }
                awaiting_first = false;
            }
            _ = idle_check.tick(), if !draining => {
                // Before the first request, the first-request deadline governs.
                if !activity.asked.load(Ordering::Relaxed) {
                    continue;
                }
                let since_last = began.elapsed().saturating_sub(Duration::from_millis(activity.last_ms.load(Ordering::Relaxed)));
                if activity.in_flight.load(Ordering::Relaxed) == 0 && since_last >= idle_after {
                    tracing::debug!(%peer, "closing a connection idle for keepalive_timeout");
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                    idle = true;
                }
            }
            _ = stopping.wait_for(|stop| *stop), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
        if idle {
            // HTTP/2's goodbye waits for the client to answer a ping; one that never does is
            // cut off.
            if tokio::time::timeout(IDLE_CLOSE_GRACE, conn.as_mut()).await.is_err() {
                tracing::debug!(%peer, "cutting off an idle connection that did not close");
            }
            return;
        }
    }
}

/// Serves a connection past the cap from the reserve, for at most [`SHED_DEADLINE`]: health
/// checks go to the router, everything else is answered 503.
async fn serve_reserve(serving: Arc<Serving>, tcp: TcpStream, peer: SocketAddr, _slot: OwnedSemaphorePermit) {
    let app = serving.app.clone();
    let asked = Arc::new(AtomicBool::new(false));
    let seen = asked.clone();
    let service = tower::service_fn(move |mut req: Request<Incoming>| {
        let app = app.clone();
        seen.store(true, Ordering::Relaxed);
        async move {
            if is_health_check(&req) {
                req.extensions_mut().insert(ConnectInfo(peer));
                return app.oneshot(req).await;
            }
            Ok::<_, Infallible>(shed_response(req.headers()))
        }
    });
    let conn = serving.reserve.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
    let mut conn = pin!(tokio::time::timeout(SHED_DEADLINE, conn));
    let first = tokio::time::sleep(SHED_FIRST_REQUEST);
    tokio::select! {
        result = conn.as_mut() => match result {
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "shed connection ended with an error"),
            Ok(Ok(())) => {}
            Err(_) => tracing::debug!(%peer, "closing a shed connection at its deadline"),
        },
        () = first => {
            if asked.load(Ordering::Relaxed) {
                let _ = conn.await;
            } else {
                tracing::debug!(%peer, "closing a shed connection that asked nothing");
            }
        }
    }
}

fn is_health_check(req: &Request<Incoming>) -> bool {
    matches!(
        req.uri().path(),
        "/health/liveness" | "/health/liveliness" | "/health/readiness" | "/grpc.health.v1.Health/Check"
    )
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The answer to a request on a shed connection: 503 in the OpenAI shape, or gRPC
/// `UNAVAILABLE` with `RetryInfo`.
fn shed_response(headers: &HeaderMap) -> Response {
    let e = GatewayError {
        retry_after: Some(SHED_RETRY_AFTER),
        ..GatewayError::unavailable(
            "the gateway is at its connection limit (general_settings.max_connections); retry shortly",
        )
    };
    if is_grpc(headers) { grpc::to_status(e).into_http() } else { ApiError(e).into_response() }
}

/// The fixed HTTP/1.1 503 written, unread, to a connection past the reserve: the same body
/// as [`shed_response`], rendered once.
async fn fixed_unavailable() -> Vec<u8> {
    let response = shed_response(&HeaderMap::new());
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        SHED_RETRY_AFTER.as_secs(),
    );
    [head.as_bytes(), &body].concat()
}

/// One overload episode: from the first shed connection until none has been shed for
/// [`OVERLOAD_QUIET`]. Logged at its start and its end only.
#[derive(Default)]
struct Overload {
    since: Option<Instant>,
    last: Option<Instant>,
    shed: u64,
}

impl Overload {
    fn shed(&mut self, max_connections: usize) {
        let now = Instant::now();
        if self.since.is_none() {
            tracing::warn!(
                max_connections,
                reserve = SHED_RESERVE,
                "connection limit reached: shedding new connections with 503 (health checks still answered)"
            );
            self.since = Some(now);
            self.shed = 0;
        }
        self.shed += 1;
        self.last = Some(now);
    }

    /// When the episode ends if nothing more is shed.
    fn quiet_at(&self) -> Option<tokio::time::Instant> {
        self.since.and(self.last).map(|last| tokio::time::Instant::from_std(last + OVERLOAD_QUIET))
    }

    fn end(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                shed = self.shed,
                seconds = since.elapsed().as_secs(),
                "connection limit no longer reached: accepting connections normally again"
            );
        }
    }
}

/// Failed accepts in a row, logged once when they start and once when they stop.
#[derive(Default)]
struct AcceptFailures {
    count: u64,
}

impl AcceptFailures {
    fn failed(&mut self, e: &std::io::Error) {
        if self.count == 0 {
            tracing::error!(
                error = %e,
                backoff_ms = ACCEPT_BACKOFF.as_millis(),
                "cannot accept connections (out of file descriptors?); retrying, logged once until it works again"
            );
        }
        self.count += 1;
    }

    fn recovered(&mut self) {
        if self.count > 0 {
            tracing::info!(failed = self.count, "accepting connections again");
            self.count = 0;
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
    )
}

/// `max_connections`, lowered if need be so that connections (and the reserve) leave a
/// quarter of the open-file limit (at least 64) to the database pool, Redis, upstream
/// connections, the spool and MCP servers. Past the limit the process could not even accept
/// a connection to shed it.
fn fit_open_file_limit(configured: usize) -> usize {
    let Some(nofile) = std::fs::read_to_string("/proc/self/limits").ok().as_deref().and_then(parse_open_file_limit)
    else {
        return configured;
    };
    let ceiling = connection_ceiling(nofile);
    if configured <= ceiling {
        return configured;
    }
    tracing::warn!(
        configured,
        lowered_to = ceiling,
        open_file_limit = nofile,
        "general_settings.max_connections lowered to fit the open-file limit; raise the limit (ulimit -n, LimitNOFILE) to admit more"
    );
    ceiling
}

/// The soft "Max open files" of `/proc/self/limits`; none when unlimited or unreadable.
fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

fn connection_ceiling(nofile: u64) -> usize {
    let kept = (nofile / 4).max(64);
    let ceiling = nofile.saturating_sub(kept).saturating_sub(SHED_RESERVE as u64).max(1);
    usize::try_from(ceiling).unwrap_or(usize::MAX)
}

/// The body deadline layer: wraps a request's body in a [`DeadlineBody`] and, if the deadline
/// fired while something read it, answers with the body-timeout error instead of whatever
/// the reader made of the failure.
async fn body_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let grpc_call = is_grpc(req.headers());
    let deadline = tokio::time::Instant::now() + limit;
    let req =
        req.map(|body| Body::new(DeadlineBody { inner: body, deadline, sleep: None, limit, expired: expired.clone() }));
    let response = next.run(req).await;
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    tracing::debug!(limit_ms = limit.as_millis(), "request body incomplete at its deadline");
    let e = GatewayError::invalid(
        "",
        format!(
            "the request body did not arrive in full within {} of its headers \
             (general_settings.request_body_timeout); send the whole body without pausing",
            show(limit)
        ),
    )
    .with_reason("REQUEST_BODY_TIMEOUT");
    if grpc_call { grpc::to_status(e).into_http() } else { ApiError(e).into_response() }
}

fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// A request body that fails once its deadline has passed with the body still incomplete.
/// Data already there is always delivered: only a read that would wait fails.
struct DeadlineBody {
    inner: Body,
    deadline: tokio::time::Instant,
    /// Armed on the first read that has to wait, so a body read at once costs no timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
    expired: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {}", show(*.0))]
struct BodyTimedOut(Duration);

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.expired.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units
Max processes             63426                63426                processes
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
";
        assert_eq!(parse_open_file_limit(limits), Some(1024));
        assert_eq!(
            parse_open_file_limit("Max open files            unlimited            unlimited            files"),
            None
        );
        assert_eq!(parse_open_file_limit(""), None);
    }

    #[test]
    fn connections_leave_a_quarter_of_the_descriptors() {
        // ulimit -n 1024 (a common default): 256 kept, 32 for the reserve.
        assert_eq!(connection_ceiling(1024), 736);
        assert_eq!(connection_ceiling(65_536), 49_120);
        // Tiny limits still admit one connection.
        assert_eq!(connection_ceiling(50), 1);
    }
}
