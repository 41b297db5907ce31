//! The hot path, stage by stage: authenticate → resolve the model → admit → call upstream →
//! settle and record.
//!
//! Every surface (the OpenAI shim, gRPC) calls into [`Gateway`], so a call is governed the
//! same way however it arrives. Each stage is a small function here, so the stages later
//! issues add (budgets, rate limits, routing) have one obvious place to go.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::Stream;

use crate::chat::{ChatChunk, ChatRequest, ChatResponse, Usage};
use crate::config::Config;
use crate::error::GatewayError;
use crate::governance::budgets::BudgetScope;
use crate::governance::customers::CustomerCache;
use crate::governance::{self, Caller, IdentityCache, budgets};
use crate::ledger::Ledger;
use crate::limits::rates::{BudgetRequest, BudgetVerdict, RateScope, RateStatus, Rates, Ticket};
use crate::limits::{Remaining, Reservation};
use crate::pricing::{Nanos, PriceTable, TokenCounts};
use crate::providers::{ChunkStream, Upstreams};
use crate::router::{Deployment, ModelRegistry};
use crate::store::{Charge, SpendRecord, SpendStatus, Store};
use crate::tokens;

/// Everything a call needs, shared by every request.
pub struct Gateway {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub identities: IdentityCache,
    pub customers: CustomerCache,
    pub tags: crate::governance::tags::TagCache,
    pub rates: Rates,
    /// The deployments and router settings; swapped whole by a reload, so a call in flight
    /// finishes on the registry it started with.
    pub registry: arc_swap::ArcSwap<ModelRegistry>,
    /// The MCP servers behind `/mcp`.
    pub mcp: crate::mcp::Hub,
    /// One reload at a time (SIGHUP and `POST /config/reload` may overlap).
    pub reloading: tokio::sync::Mutex<()>,
    /// Signalled when another instance reloaded its models (see `reload::watch`).
    pub models_changed: tokio::sync::Notify,
    /// Signalled when another instance changed the registered MCP servers.
    pub mcp_changed: tokio::sync::Notify,
    /// `general_settings.config_managed_fields: advisory`, as the last start or reload read it.
    pub advisory: std::sync::atomic::AtomicBool,
    /// The start-up reconcile changed something other instances must hear about once
    /// invalidations can be published.
    pub announce: std::sync::atomic::AtomicBool,
    pub upstreams: Upstreams,
    pub ledger: Ledger,
    pub prices: PriceTable,
    /// Request ids recorded through the usage API recently.
    pub recorded: crate::usage::RecentIds,
    /// Publishes invalidations to other instances (set once, when Redis is configured).
    pub sync: std::sync::OnceLock<crate::sync::Sync>,
    /// The response cache, when `litellm_settings.cache` is on.
    pub cache: Option<crate::cache::ResponseCache>,
}

/// What the gateway reports about a finished call (headers, the gRPC `CallInfo`).
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub call_id: String,
    pub deployment: String,
    pub cost: Nanos,
    pub usage: Usage,
    /// Time spent in the gateway itself, not waiting for the upstream.
    pub overhead: Duration,
    /// The tightest budget at admission.
    pub remaining: Option<Remaining>,
    /// The tightest rate limits at admission.
    pub rate: RateStatus,
    /// Attempts retried and model names fallen back to before the answer.
    pub retries: u32,
    pub fallbacks: u32,
    /// Answered from the response cache (free).
    pub cache_hit: bool,
}

/// One item of a governed stream: a chunk, or, last, the settled call.
#[derive(Debug)]
pub enum StreamEvent {
    Chunk(ChatChunk),
    Done(CallInfo),
}

/// A call in progress: who, what, when, and what it holds against budgets.
struct Call {
    id: String,
    caller_key: String,
    user_id: Option<String>,
    team_id: Option<String>,
    organization_id: Option<String>,
    model: String,
    end_user: Option<String>,
    deployment: Arc<Deployment>,
    started_at: DateTime<Utc>,
    started: Instant,
    /// The prompt's byte bound and its image parts: what the call is charged when its
    /// provider reports no usage (see [`unreported_usage`]).
    prompt_upper: u64,
    media: u64,
    /// Tokens the passed-through parameters may cost on OpenAI-shaped upstreams.
    extra_upper: u64,
    tags: Vec<String>,
    charges: Vec<Charge>,
    reservation: Option<Reservation>,
    remaining: Option<Remaining>,
    ticket: Option<Ticket>,
    rate: RateStatus,
    /// Attempts retried, and model names fallen back to, before the answer.
    retries: u32,
    fallbacks: u32,
    /// Answered from the response cache.
    cache_hit: bool,
}

/// What admission needs to know about a call, whatever its kind (chat, embeddings).
pub struct Ask<'a> {
    /// The model name as requested (aliases resolve in admission).
    pub model: &'a str,
    /// The end customer (`user`).
    pub user: Option<&'a str>,
    pub tags: &'a [String],
    /// Prompt tokens: an estimate (TPM, usage when the provider reports none) and a sure
    /// upper bound (the strict budget reservation).
    pub prompt_estimate: u64,
    pub prompt_upper: u64,
    /// Image parts, each costing up to the provider's [`ProviderKind::max_image_tokens`]
    /// besides `prompt_upper`.
    pub media: u64,
    /// The passed-through parameters' bound, on providers that receive them.
    pub extra_upper: u64,
    /// The exact prompt count with the upstream model's tokenizer, where it has one; asked
    /// only when the upper bound does not fit a budget.
    pub exact_prompt: &'a (dyn Fn(&str) -> Option<u64> + Sync),
    /// The caller's cap on output tokens, per choice.
    pub max_output: Option<u64>,
    /// How many outputs the provider generates and bills (`n`); every one can reach the cap.
    pub choices: u64,
    /// Whether the call produces output tokens (embeddings do not).
    pub produces_output: bool,
}

/// Output tokens assumed for a call that sets no cap on a model whose maximum is unknown.
const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// Output tokens a TPM limit reserves for a call without `max_tokens` (corrected on settle).
const DEFAULT_TPM_OUTPUT_TOKENS: u64 = 256;

impl Gateway {
    /// What the API does with config-managed resources now.
    pub fn managed_fields(&self) -> crate::config::governance::ManagedFields {
        if self.advisory.load(std::sync::atomic::Ordering::Relaxed) {
            crate::config::governance::ManagedFields::Advisory
        } else {
            crate::config::governance::ManagedFields::Locked
        }
    }

    /// The model registry in force now.
    pub fn models(&self) -> Arc<ModelRegistry> {
        self.registry.load_full()
    }

    /// Forgets what a management change made stale, here at once and on every other instance.
    pub async fn invalidate(&self, inv: crate::sync::Invalidation) {
        crate::sync::apply(self, &inv).await;
        if let Some(sync) = self.sync.get() {
            sync.publish(inv);
        }
    }

    /// Stage 1: the caller behind a presented secret.
    pub async fn authenticate(&self, secret: Option<&str>) -> Result<Caller, GatewayError> {
        self.identities.authenticate(secret).await
    }

    /// Stages 2 and 3 for a chat call: see [`Gateway::begin_call`].
    async fn begin(&self, caller: &Caller, request: &ChatRequest, started: Instant) -> Result<Call, GatewayError> {
        let exact = |model: &str| tokens::count_prompt(model, request);
        let ask = Ask {
            model: &request.model,
            user: request.user.as_deref(),
            tags: &request.tags,
            prompt_estimate: tokens::estimate_prompt(request),
            prompt_upper: tokens::prompt_upper_bound(request),
            media: tokens::media_parts(request),
            extra_upper: tokens::extra_upper_bound(request),
            exact_prompt: &exact,
            max_output: request.max_output_tokens().map(u64::from),
            choices: request.choices(),
            produces_output: true,
        };
        self.begin_call(caller, &ask, started).await
    }

    /// Stages 2 and 3: resolve the model, check access, and admit the call against every
    /// rate limit and budget it answers to (reserving its worst case in strict mode).
    async fn begin_call(&self, caller: &Caller, ask: &Ask<'_>, started: Instant) -> Result<Call, GatewayError> {
        let models = self.models();
        let model = models.alias(governance::resolve_alias(caller, ask.model));
        // An unknown model is a 404 before it is anyone's 403.
        let picked = models.pick(model, &[]);
        if let Err(e) = &picked
            && e.code == crate::error::ErrorCode::NotFound
        {
            return Err(e.clone());
        }
        // Access is decided on what the call reaches (an access group grants deployments).
        governance::admit(caller, &models.target(model), models.access_groups())?;
        // Every deployment cooling down: start on the first fallback the caller may use.
        let mut fallbacks = 0;
        let deployment = match picked {
            Ok(d) => d,
            Err(e) if e.reason == Some("NO_DEPLOYMENT_AVAILABLE") => {
                let mut found = None;
                for name in models.fallbacks(model, crate::config::routing::FailureKind::RateLimit) {
                    if self.may_use(caller, ask.user, &name).await
                        && let Ok(d) = models.pick(&name, &[])
                    {
                        found = Some(d);
                        break;
                    }
                }
                fallbacks = 1;
                found.ok_or(e)?
            }
            Err(e) => return Err(e),
        };
        let customer = match ask.user {
            Some(id) => Some(self.customers.get(id).await?),
            None => None,
        };
        if let Some(c) = &customer {
            governance::admit_customer(&c.customer, &models.target(model), models.access_groups())?;
        }
        let identity = caller.identity();
        let tag_names = governance::tags::merge(identity.into_iter().flat_map(|i| i.tag_lists()).chain([ask.tags]))?;
        let mut tags = Vec::with_capacity(tag_names.len());
        for name in tag_names {
            let record = self.tags.get(&name);
            tags.push((name, record));
        }
        let now = Utc::now();
        let mut scopes =
            budgets::scopes(identity, customer.as_ref().map(|c| (&c.customer, &c.limits)), &tags, model, now);
        if let Some(g) = &self.config.global_budget {
            scopes.push(budgets::global(g, now));
        }
        // The worst case: every prompt byte a token, and the most output the call can produce
        // on every choice the provider bills. A call may end on a fallback: reserve the
        // dearest of the deployments it could reach, each at its own output cap.
        let max_output = |d: &Deployment| {
            if ask.produces_output {
                ask.max_output.or(d.max_output).unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS).saturating_mul(ask.choices)
            } else {
                0
            }
        };
        let candidates = models.candidates(model);
        let worst = |prompt: u64| {
            candidates
                .iter()
                .chain(std::iter::once(&deployment))
                .map(|d| {
                    let provider = d.config.provider;
                    let extra = if provider.forwards_extra() { ask.extra_upper } else { 0 };
                    let images = ask.media.saturating_mul(provider.max_image_tokens());
                    let prompt = prompt.saturating_add(images).saturating_add(extra);
                    d.price.cost(TokenCounts { prompt, completion: max_output(d), cached_prompt: 0 })
                })
                .max()
                .unwrap_or_default()
        };
        // Rate limits and budgets together: all or nothing. The byte bound is free; when it
        // does not fit a budget, count the prompt with the model's own tokenizer (where it
        // has one) before refusing.
        let rate_scopes = governance::rates::scopes(
            identity,
            customer.as_ref().map(|c| (c.customer.user_id.as_str(), &c.limits)),
            &tags,
            model,
            Some(&deployment),
            self.config.general.global_max_parallel_requests,
        );
        let prompt_estimate = ask.prompt_estimate;
        let output_estimate = if ask.produces_output {
            ask.max_output.unwrap_or(DEFAULT_TPM_OUTPUT_TOKENS).saturating_mul(ask.choices)
        } else {
            0
        };
        let tpm_estimate = prompt_estimate + output_estimate;
        let admitted = match self.admit(&rate_scopes, tpm_estimate, &scopes, worst(ask.prompt_upper)).await {
            Err(refused) if refused.code == crate::error::ErrorCode::BudgetExceeded => {
                match (ask.exact_prompt)(&deployment.config.upstream_model) {
                    Some(exact) => self.admit(&rate_scopes, tpm_estimate, &scopes, worst(exact)).await,
                    None => Err(refused),
                }
            }
            other => other,
        };
        let (ticket, rate, reservation, remaining) = admitted?;
        Ok(Call {
            id: uuid::Uuid::new_v4().to_string(),
            caller_key: caller.key_id().to_owned(),
            user_id: identity.and_then(|i| i.key.user_id.clone()),
            team_id: identity.and_then(|i| i.key.team_id.clone()),
            organization_id: identity.and_then(|i| {
                i.key.organization_id.clone().or_else(|| i.org.as_ref().map(|o| o.organization_id.clone()))
            }),
            model: model.to_owned(),
            end_user: ask.user.map(str::to_owned),
            deployment,
            started_at: now,
            started,
            prompt_upper: ask.prompt_upper,
            media: ask.media,
            extra_upper: ask.extra_upper,
            tags: tags.into_iter().map(|(name, _)| name).collect(),
            charges: scopes.into_iter().map(|s| s.charge).collect(),
            reservation,
            remaining,
            ticket: Some(ticket),
            rate,
            retries: 0,
            fallbacks,
            cache_hit: false,
        })
    }

    /// Admits a call against its rate limits and budgets, all or nothing: in Redis in one
    /// round trip when shared, else on the local limiter and counters (loaded first).
    pub(crate) async fn admit(
        &self,
        rate_scopes: &[RateScope],
        tokens: u64,
        scopes: &[BudgetScope],
        estimate: Nanos,
    ) -> Result<(Ticket, RateStatus, Option<Reservation>, Option<Remaining>), GatewayError> {
        let mode = self.config.general.budget_enforcement;
        let counters = self.ledger.counters();
        let request = BudgetRequest { scopes, estimate, mode };
        let mut load = false;
        for _ in 0..3 {
            if load || !self.rates.judges_budgets() {
                let missing = counters.missing(scopes);
                if !missing.is_empty() {
                    self.ledger.load_counters(missing).await?;
                }
            }
            let (ticket, rate, verdict) = self.rates.acquire(rate_scopes, tokens, Utc::now(), &request).await?;
            let instances = match verdict {
                BudgetVerdict::Judged(remaining) => return Ok((ticket, rate, None, remaining)),
                BudgetVerdict::Local { instances } => instances,
            };
            // Redis failed between the look and the admission: load the counters first.
            if !counters.missing(scopes).is_empty() {
                self.rates.cancel(ticket);
                load = true;
                continue;
            }
            return match counters.admit(scopes, estimate, mode, instances) {
                Ok((reservation, remaining)) => Ok((ticket, rate, Some(reservation), remaining)),
                Err(e) => {
                    self.rates.cancel(ticket);
                    Err(e)
                }
            };
        }
        Err(GatewayError::unavailable("Redis is coming and going; budgets could not be checked, try again"))
    }

    /// Calls the upstream through `attempt`, with the router's retries (other deployments of
    /// the same model name where there are any, waiting `retry_after`, doubling) and fallbacks
    /// (other model names the caller may use). `call.deployment` ends as the one that answered
    /// (or failed last).
    async fn route<T, F, Fut>(&self, call: &mut Call, caller: &Caller, attempt: F) -> Result<T, GatewayError>
    where
        F: Fn(Arc<Deployment>) -> Fut,
        Fut: std::future::Future<Output = Result<T, GatewayError>>,
    {
        let models = self.models();
        let mut model = call.model.clone();
        let mut tried: Vec<String> = Vec::new();
        let mut retried = 0u32;
        let mut wait = models.settings().retry_after;
        let mut fallbacks: Option<std::collections::VecDeque<String>> = None;
        loop {
            let deployment = call.deployment.clone();
            let started = Instant::now();
            let result = {
                let _busy = deployment.busy();
                attempt(deployment.clone()).await
            };
            let err = match result {
                Ok(v) => {
                    models.succeeded(&deployment, started.elapsed());
                    return Ok(v);
                }
                Err(e) => e,
            };
            models.failed(&deployment, &err);
            let kind = crate::router::classify(&err);
            tried.push(deployment.config.id.clone());
            if retried < models.retries(kind)
                && let Ok(next) = models.pick(&model, &tried)
            {
                retried += 1;
                call.retries += 1;
                tracing::info!(deployment = %deployment.config.id, next = %next.config.id, error = %err.message, "retrying");
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
                call.deployment = next;
                continue;
            }
            let queue = fallbacks.get_or_insert_with(|| models.fallbacks(&call.model, kind).into());
            let mut next = None;
            while let Some(name) = queue.pop_front() {
                // A fallback is a model like any other: the caller (and the customer) must be
                // allowed to use it.
                if !self.may_use(caller, call.end_user.as_deref(), &name).await {
                    continue;
                }
                if let Ok(d) = models.pick(&name, &[]) {
                    next = Some((name, d));
                    break;
                }
            }
            let Some((name, d)) = next else { return Err(err) };
            tracing::info!(from = %model, to = %name, error = %err.message, "falling back");
            call.fallbacks += 1;
            call.deployment = d;
            model = name;
            tried.clear();
            retried = 0;
        }
    }

    /// The request as `d` receives it. Strict budgets reserved [`DEFAULT_MAX_OUTPUT_TOKENS`] per
    /// choice for a call that sets no output cap on a deployment whose maximum is unknown;
    /// that cap goes upstream too, so the reservation is a bound the provider cannot pass.
    fn bounded<'r>(&self, request: &'r ChatRequest, d: &Deployment) -> std::borrow::Cow<'r, ChatRequest> {
        let strict = self.config.general.budget_enforcement == crate::limits::Enforcement::Strict;
        if strict && request.max_output_tokens().is_none() && d.max_output.is_none() {
            let mut capped = request.clone();
            capped.max_tokens = u32::try_from(DEFAULT_MAX_OUTPUT_TOKENS).ok();
            return std::borrow::Cow::Owned(capped);
        }
        std::borrow::Cow::Borrowed(request)
    }

    /// Whether `caller` (calling for `customer`) may use the model name `model`.
    async fn may_use(&self, caller: &Caller, customer: Option<&str>, model: &str) -> bool {
        let models = self.models();
        let groups = models.access_groups();
        let target = models.target(model);
        if governance::admit(caller, &target, groups).is_err() {
            return false;
        }
        match customer {
            Some(id) => match self.customers.get(id).await {
                Ok(c) => governance::admit_customer(&c.customer, &target, groups).is_ok(),
                Err(_) => false,
            },
            None => true,
        }
    }

    /// A whole chat completion. `started` is when the request arrived, for the overhead
    /// figure.
    pub async fn chat(
        self: &Arc<Self>,
        caller: &Caller,
        request: ChatRequest,
        started: Instant,
    ) -> Result<(ChatResponse, CallInfo), GatewayError> {
        let mut request = request;
        let controls = crate::cache::Controls::take(&mut request.extra);
        let mut call = self.begin(caller, &request, started).await?;
        // The response cache, when on: a hit is admitted like any call and costs nothing.
        let cache_key = self.cache.as_ref().map(|c| c.key(caller, &call.model, &request));
        if let (Some(cache), Some(key)) = (&self.cache, &cache_key)
            && !controls.no_cache
            && let Some(response) = cache.get(key).await
        {
            call.cache_hit = true;
            let info = self.settle(&mut call, Usage::default(), None, "chat_completion", Duration::ZERO);
            return Ok((response, info));
        }
        // Stages 4 and 5 run in their own task: if the client goes away mid-call, the call is
        // still settled — its reservation and slots released, its spend recorded.
        let (gw, caller) = (self.clone(), caller.clone());
        let task = crate::tasks::spawn("chat-call", async move {
            let upstream_start = Instant::now();
            let result = gw
                .route(&mut call, &caller, |d| {
                    let (gw, request) = (gw.clone(), request.clone());
                    async move { gw.upstreams.chat(&d.config, &gw.bounded(&request, &d)).await }
                })
                .await;
            let upstream_time = upstream_start.elapsed();
            match result {
                Ok(response) => {
                    let usage = response.usage.unwrap_or_else(|| {
                        let text: String = response
                            .choices
                            .iter()
                            .flat_map(|c| {
                                let calls = c.message.tool_calls.iter().flatten();
                                let args =
                                    calls.flat_map(|t| [t.function.name.as_str(), t.function.arguments.as_str()]);
                                c.message.content.as_deref().into_iter().chain(args)
                            })
                            .collect();
                        unreported_usage(&call, Some(&request), &text)
                    });
                    let info = gw.settle(&mut call, usage, None, "chat_completion", upstream_time);
                    if let (Some(cache), Some(key)) = (&gw.cache, &cache_key)
                        && !controls.no_store
                    {
                        cache.put(key, &response, controls.ttl).await;
                    }
                    Ok((response, info))
                }
                Err(err) => {
                    gw.settle(&mut call, Usage::default(), Some(&err), "chat_completion", upstream_time);
                    Err(err)
                }
            }
        });
        task.await.map_err(|_| GatewayError::internal("the call's task failed"))?
    }

    /// Embeddings, governed like a chat call (nothing is generated, so only the input is
    /// reserved and priced).
    pub async fn embeddings(
        self: &Arc<Self>,
        caller: &Caller,
        request: crate::embeddings::EmbeddingRequest,
        started: Instant,
    ) -> Result<(serde_json::Value, CallInfo), GatewayError> {
        let (estimate, upper) = request.estimate();
        let texts = match &request.input {
            crate::embeddings::Input::Texts(t) => t.clone(),
            crate::embeddings::Input::Tokens(_) => Vec::new(),
        };
        let exact = |model: &str| {
            let bpe = tiktoken_rs::bpe_for_model(model).ok()?;
            Some(texts.iter().map(|t| bpe.encode_ordinary(t).len() as u64).sum())
        };
        let ask = Ask {
            model: &request.model,
            user: request.user.as_deref(),
            tags: &request.tags,
            prompt_estimate: estimate,
            prompt_upper: upper,
            media: 0,
            extra_upper: 0,
            exact_prompt: &exact,
            max_output: Some(0),
            choices: 1,
            produces_output: false,
        };
        let mut call = self.begin_call(caller, &ask, started).await?;
        let (gw, caller) = (self.clone(), caller.clone());
        let task = crate::tasks::spawn("embeddings-call", async move {
            let upstream_start = Instant::now();
            let result = gw
                .route(&mut call, &caller, |d| {
                    let (gw, request) = (gw.clone(), request.clone());
                    async move { gw.upstreams.embeddings(&d.config, &request).await }
                })
                .await;
            let upstream_time = upstream_start.elapsed();
            match result {
                Ok(v) => {
                    // Unreported: the byte bound, never less than the inputs' tokens.
                    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap_or(call.prompt_upper);
                    let info = gw.settle(&mut call, Usage::new(prompt, 0), None, "embedding", upstream_time);
                    Ok((v, info))
                }
                Err(err) => {
                    gw.settle(&mut call, Usage::default(), Some(&err), "embedding", upstream_time);
                    Err(err)
                }
            }
        });
        task.await.map_err(|_| GatewayError::internal("the call's task failed"))?
    }

    /// A streamed chat completion: chunks as the upstream sends them, then
    /// [`StreamEvent::Done`]. The call is settled when the stream ends, fails, or is dropped
    /// (a client that disconnects still pays for what was generated).
    pub async fn chat_stream(
        self: &Arc<Self>,
        caller: &Caller,
        request: ChatRequest,
        started: Instant,
    ) -> Result<GovernedStream, GatewayError> {
        // Streams are not cached; their cache controls never go upstream either.
        let mut request = request;
        crate::cache::Controls::take(&mut request.extra);
        let mut call = self.begin(caller, &request, started).await?;
        let upstream_start = Instant::now();
        let overhead_before = upstream_start.duration_since(started);
        crate::metrics::OVERHEAD_STREAM.observe(overhead_before);
        // Connecting runs in its own task, so a client that leaves before the first chunk
        // still has its call settled (the stream's drop settles it once it exists).
        let (gw, caller) = (self.clone(), caller.clone());
        let task = crate::tasks::spawn("chat-stream-connect", async move {
            let connected = gw
                .route(&mut call, &caller, |d| {
                    let (gw, request) = (gw.clone(), request.clone());
                    async move { gw.upstreams.chat_stream(&d.config, &gw.bounded(&request, &d)).await }
                })
                .await;
            match connected {
                Ok(inner) => Ok(GovernedStream {
                    inner,
                    gateway: gw.clone(),
                    call: Some(call),
                    request,
                    usage: None,
                    completion_chars: String::new(),
                    overhead_before,
                    finished: false,
                }),
                Err(err) => {
                    gw.settle(
                        &mut call,
                        Usage::default(),
                        Some(&err),
                        "stream_chat_completion",
                        upstream_start.elapsed(),
                    );
                    Err(err)
                }
            }
        });
        task.await.map_err(|_| GatewayError::internal("the call's task failed"))?
    }

    /// Prices the call, releases its reservation, adds its cost to every budget it answers
    /// to, queues its spend record and reports it.
    fn settle(
        &self,
        call: &mut Call,
        usage: Usage,
        error: Option<&GatewayError>,
        call_type: &str,
        upstream_time: Duration,
    ) -> CallInfo {
        let cost = call.deployment.price.cost(TokenCounts {
            prompt: usage.prompt_tokens,
            completion: usage.completion_tokens,
            cached_prompt: usage.cached_tokens(),
        });
        let elapsed = call.started.elapsed();
        let ended_at = Utc::now();
        self.models().used_tokens(&call.deployment, usage.prompt_tokens + usage.completion_tokens);
        let counted = self.ledger.counters().settle(call.reservation.take().unwrap_or_default(), &call.charges, cost);
        let seq = self.ledger.record(
            SpendRecord {
                request_id: call.id.clone(),
                call_type: call_type.to_owned(),
                key_id: call.caller_key.clone(),
                model: call.model.clone(),
                deployment: call.deployment.config.id.clone(),
                provider: call.deployment.config.provider.as_str().to_owned(),
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.prompt_tokens + usage.completion_tokens,
                spend: cost,
                status: if error.is_some() { SpendStatus::Failure } else { SpendStatus::Success },
                error_code: error.map(|e| e.reason_str().to_owned()),
                start_time: call.started_at,
                end_time: ended_at,
                duration_ms: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
                end_user: call.end_user.clone(),
                user_id: call.user_id.clone(),
                team_id: call.team_id.clone(),
                organization_id: call.organization_id.clone(),
                tags: call.tags.clone(),
                charges: call.charges.clone(),
                cache_hit: call.cache_hit,
                metadata: None,
            },
            counted,
        );
        if let Some(ticket) = call.ticket.take() {
            self.rates.settle(ticket, usage.prompt_tokens + usage.completion_tokens, cost, seq);
        }
        let overhead = elapsed.saturating_sub(upstream_time);
        crate::metrics::call_settled(error.is_some());
        if call_type != "stream_chat_completion" {
            crate::metrics::OVERHEAD_CALL.observe(overhead);
        }
        CallInfo {
            call_id: call.id.clone(),
            deployment: call.deployment.config.id.clone(),
            cost,
            usage,
            overhead,
            remaining: call.remaining.clone(),
            rate: call.rate.clone(),
            retries: call.retries,
            fallbacks: call.fallbacks,
            cache_hit: call.cache_hit,
        }
    }
}

/// What a call is charged when its provider reported no usage (a stream the client left before
/// its last chunk, a server that never reports): never less than it can have cost — the
/// prompt counted with the model's tokenizer where it has one, else its byte bound, plus each
/// image at the provider's maximum; the output likewise.
fn unreported_usage(call: &Call, request: Option<&ChatRequest>, completion: &str) -> Usage {
    let d = &call.deployment.config;
    let images = call.media.saturating_mul(d.provider.max_image_tokens());
    let extra = if d.provider.forwards_extra() { call.extra_upper } else { 0 };
    let prompt = request.and_then(|r| tokens::count_prompt(&d.upstream_model, r)).unwrap_or(call.prompt_upper);
    let prompt = prompt.saturating_add(extra);
    Usage::new(prompt.saturating_add(images), tokens::completion_bound(&d.upstream_model, completion))
}

/// A provider stream wrapped with settlement; see [`Gateway::chat_stream`].
pub struct GovernedStream {
    inner: ChunkStream,
    gateway: Arc<Gateway>,
    call: Option<Call>,
    /// What was asked, counted if the provider reports no usage.
    request: ChatRequest,
    usage: Option<Usage>,
    /// The streamed text and tool calls, counted if the provider reports no usage.
    completion_chars: String,
    overhead_before: Duration,
    finished: bool,
}

impl GovernedStream {
    /// The call id and the deployment, known before the first chunk (for response headers).
    pub fn call_id(&self) -> &str {
        self.call.as_ref().map_or("", |c| c.id.as_str())
    }

    pub fn deployment_id(&self) -> &str {
        self.call.as_ref().map_or("", |c| c.deployment.config.id.as_str())
    }

    /// Attempts retried and model names fallen back to before the stream began.
    pub fn attempts(&self) -> (u32, u32) {
        self.call.as_ref().map_or((0, 0), |c| (c.retries, c.fallbacks))
    }

    pub fn overhead_before_upstream(&self) -> Duration {
        self.overhead_before
    }

    /// The tightest budget at admission.
    pub fn remaining(&self) -> Option<&Remaining> {
        self.call.as_ref().and_then(|c| c.remaining.as_ref())
    }

    /// The tightest rate limits at admission.
    pub fn rate(&self) -> Option<&RateStatus> {
        self.call.as_ref().map(|c| &c.rate)
    }

    fn finish(&mut self, error: Option<&GatewayError>) -> Option<CallInfo> {
        let mut call = self.call.take()?;
        let usage = self.usage.unwrap_or_else(|| unreported_usage(&call, Some(&self.request), &self.completion_chars));
        let upstream_time = call.started.elapsed().saturating_sub(self.overhead_before);
        let mut info = self.gateway.settle(&mut call, usage, error, "stream_chat_completion", upstream_time);
        info.overhead = self.overhead_before;
        Some(info)
    }
}

impl Stream for GovernedStream {
    type Item = Result<StreamEvent, GatewayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(u) = chunk.usage {
                    self.usage = Some(u);
                }
                for choice in &chunk.choices {
                    if let Some(text) = &choice.delta.content {
                        self.completion_chars.push_str(text);
                    }
                    for f in choice.delta.tool_calls.iter().flatten().filter_map(|t| t.function.as_ref()) {
                        self.completion_chars.push_str(f.name.as_deref().unwrap_or_default());
                        self.completion_chars.push_str(f.arguments.as_deref().unwrap_or_default());
                    }
                }
                Poll::Ready(Some(Ok(StreamEvent::Chunk(chunk))))
            }
            Poll::Ready(Some(Err(err))) => {
                self.finished = true;
                self.finish(Some(&err));
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                self.finished = true;
                match self.finish(None) {
                    Some(info) => Poll::Ready(Some(Ok(StreamEvent::Done(info)))),
                    None => Poll::Ready(None),
                }
            }
        }
    }
}

impl Drop for GovernedStream {
    fn drop(&mut self) {
        if self.call.is_some() {
            let err = GatewayError::new(crate::error::ErrorCode::Unavailable, "client disconnected mid-stream")
                .with_reason("CLIENT_DISCONNECTED");
            self.finish(Some(&err));
        }
    }
}
