//! Governance as a service: Check before a call an application makes itself, Record after.
//!
//! Both go through the same stages as a proxied call — identity, model access, budget scopes
//! and counters, the ledger — so a recorded call lands on every scope exactly like one that
//! went through the gateway. Record is idempotent by the caller's request id, per key: the
//! spend record is stored as `<key id>/<request id>`, so one key's ids never collide with (or
//! reveal) another's.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::governance::budgets::{self, BudgetScope};
use crate::governance::{self, Caller};
use crate::limits::rates::RateScope;
use crate::pricing::{Nanos, Price, TokenCounts};
use crate::store::{PageRequest, SpendQuery, SpendRecord, SpendStatus};

/// A budget and where it stands.
#[derive(Debug, Clone)]
pub struct BudgetStatus {
    pub scope: BudgetScope,
    pub spent: Nanos,
    pub reserved: Nanos,
}

/// The answer of a check.
#[derive(Debug)]
pub struct CheckResult {
    pub refusal: Option<GatewayError>,
    pub estimate: Nanos,
    pub budgets: Vec<BudgetStatus>,
    /// Each rate-limited scope, with its weighted requests and tokens this minute and its
    /// requests in flight.
    pub limits: Vec<(RateScope, (u64, u64, u64))>,
}

struct Scopes {
    budget: Vec<BudgetScope>,
    rate: Vec<RateScope>,
    tags: Vec<String>,
}

/// A call an application is about to make.
#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    pub model: String,
    pub customer: Option<String>,
    pub tags: Vec<String>,
    pub input_tokens: u64,
    /// Output tokens per choice.
    pub output_tokens: u64,
    /// Choices the call asks for (OpenAI's `n`); 1 when unset.
    pub n: Option<u32>,
}

/// A finished call an application reports.
#[derive(Debug, Clone)]
pub struct RecordInput {
    pub request_id: String,
    pub model: String,
    pub customer: Option<String>,
    pub tokens: TokenCounts,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
}

/// What a record call did.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub cost: Nanos,
    /// The id the spend record is stored under ([`stored_request_id`]).
    pub request_id: String,
    /// The request id was recorded before (for this key): nothing was added.
    pub duplicate: bool,
}

/// Request ids recorded recently (bounded), so concurrent repeats are caught before the
/// database has the first.
#[derive(Default)]
pub struct RecentIds {
    inner: Mutex<(HashSet<String>, VecDeque<String>)>,
}

const RECENT_IDS: usize = 100_000;

/// The most tokens one recorded call may report (keeps every cost far inside 64 bits).
const MAX_RECORD_TOKENS: u64 = 1_000_000_000;

/// How far in the future a recorded call may say it started or ended (clock skew).
const MAX_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The id a recorded call's spend record is stored under: the caller's id within its key.
/// Key ids hold no `/` (the store refuses one), so the first `/` separates the two.
pub fn stored_request_id(key_id: &str, request_id: &str) -> String {
    format!("{key_id}/{request_id}")
}

impl RecentIds {
    /// Forgets `id` (its record could not be queued, so a retry must be recorded).
    fn remove(&self, id: &str) {
        if let Ok(mut guard) = self.inner.lock() {
            guard.0.remove(id);
        }
    }

    /// Remembers `id`; false if it was already there.
    fn insert(&self, id: &str) -> bool {
        let Ok(mut guard) = self.inner.lock() else { return true };
        let (set, order) = &mut *guard;
        if !set.insert(id.to_owned()) {
            return false;
        }
        order.push_back(id.to_owned());
        if order.len() > RECENT_IDS
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }
}

impl Gateway {
    /// The price of a model: its first deployment's, else the price table's entry.
    fn price_of(&self, model: &str) -> Result<(Price, String), GatewayError> {
        if let Ok(d) = self.models().pick(model, &[]) {
            return Ok((d.price, d.config.provider.as_str().to_owned()));
        }
        match self.prices.lookup("", model) {
            Some(p) => Ok((p.price(), p.provider.clone())),
            None => Err(GatewayError::invalid(
                "model",
                format!("model: {model:?} is neither in model_list nor in the price table"),
            )),
        }
    }

    /// The budget and rate scopes of a call, with the tags it carries; budget counters loaded.
    async fn scopes_for(
        &self,
        caller: &Caller,
        model: &str,
        customer: Option<&str>,
        request_tags: &[String],
        now: DateTime<Utc>,
    ) -> Result<Scopes, GatewayError> {
        let customer = match customer {
            Some(id) => Some(self.customers.get(id).await?),
            None => None,
        };
        for (i, t) in request_tags.iter().enumerate() {
            crate::admin::tags::check_name(&format!("tags[{i}]"), t)?;
        }
        let identity = caller.identity();
        let mut tags = Vec::new();
        for name in governance::tags::merge(identity.into_iter().flat_map(|i| i.tag_lists()).chain([request_tags]))? {
            let record = self.tags.get(&name);
            tags.push((name, record));
        }
        let customer_limits = customer.as_ref().map(|c| (&c.customer, &c.limits));
        let mut budget = budgets::scopes(identity, customer_limits, &tags, model, now);
        if let Some(g) = &self.config.global_budget {
            budget.push(budgets::global(g, now));
        }
        if !self.rates.judges_budgets() {
            let missing = self.ledger.counters().missing(&budget);
            if !missing.is_empty() {
                self.ledger.load_counters(missing).await?;
            }
        }
        let deployment = self.models().pick(model, &[]).ok();
        let rate = governance::rates::scopes(
            identity,
            customer.as_ref().map(|c| (c.customer.user_id.as_str(), &c.limits)),
            &tags,
            model,
            deployment.as_deref(),
            None,
        );
        Ok(Scopes { budget, rate, tags: tags.into_iter().map(|(name, _)| name).collect() })
    }

    /// Whether a call of `model` with these tokens would be admitted now.
    pub async fn check(&self, caller: &Caller, ask: &CheckInput) -> Result<CheckResult, GatewayError> {
        let choices = ask.n.unwrap_or(1);
        if !(1..=crate::chat::MAX_CHOICES).contains(&choices) {
            return Err(GatewayError::invalid(
                "n",
                format!("n: {choices} is outside 1 to {} choices", crate::chat::MAX_CHOICES),
            ));
        }
        for (field, n) in [("input_tokens", ask.input_tokens), ("output_tokens", ask.output_tokens)] {
            if n > MAX_RECORD_TOKENS {
                return Err(GatewayError::invalid(
                    field,
                    format!("{field}: at most {MAX_RECORD_TOKENS} tokens a call"),
                ));
            }
        }
        let (customer, tags, input) = (ask.customer.as_deref(), &ask.tags[..], ask.input_tokens);
        // Every choice the provider generates is billed: the output counts once per choice.
        let output = ask.output_tokens.saturating_mul(u64::from(choices));
        let model = governance::resolve_alias(caller, &ask.model);
        let (price, _) = self.price_of(model)?;
        let estimate = price.cost(TokenCounts { prompt: input, completion: output, cached_prompt: 0 });
        let now = Utc::now();
        let scopes = self.scopes_for(caller, model, customer, tags, now).await?;
        let tokens = input.saturating_add(output);
        let models = self.models();
        let mut refusal = governance::admit(caller, &models.target(model), models.access_groups()).err();
        if refusal.is_none() {
            refusal = self.rates.check(&scopes.rate, tokens, now).await.err();
        }
        let status = match self.rates.budget_status(&scopes.budget).await? {
            Some(shared) => shared,
            None => {
                let counters = self.ledger.counters();
                let missing = counters.missing(&scopes.budget);
                if !missing.is_empty() {
                    self.ledger.load_counters(missing).await?;
                }
                counters.status(&scopes.budget)
            }
        };
        let refusal = refusal.or_else(|| {
            crate::limits::judge(&scopes.budget, &status, estimate, self.config.general.budget_enforcement).err()
        });
        let budgets = scopes
            .budget
            .into_iter()
            .zip(status)
            .map(|(scope, (spent, reserved))| BudgetStatus { scope, spent, reserved })
            .collect();
        let rate_status = self.rates.status(&scopes.rate, now).await;
        let limits = scopes.rate.into_iter().zip(rate_status).collect();
        Ok(CheckResult { refusal, estimate, budgets, limits })
    }

    /// Records a finished call; returns its cost, the id its spend record is stored under, and
    /// whether the request id was a repeat (for this key).
    pub async fn record(&self, caller: &Caller, input: RecordInput) -> Result<Recorded, GatewayError> {
        if input.request_id.trim().is_empty()
            || input.request_id.len() > 256
            || input.request_id.chars().any(char::is_control)
        {
            return Err(GatewayError::invalid(
                "request_id",
                "request_id: required, at most 256 characters, without control characters",
            ));
        }
        for (field, n) in [
            ("input_tokens", input.tokens.prompt),
            ("output_tokens", input.tokens.completion),
            ("cached_input_tokens", input.tokens.cached_prompt),
        ] {
            if n > MAX_RECORD_TOKENS {
                return Err(GatewayError::invalid(
                    field,
                    format!("{field}: at most {MAX_RECORD_TOKENS} tokens a record"),
                ));
            }
        }
        let now = Utc::now();
        for (field, t) in [("start_time", input.start), ("end_time", input.end)] {
            if t.is_some_and(|t| t > now + MAX_CLOCK_SKEW) {
                return Err(GatewayError::invalid(field, format!("{field}: is in the future")));
            }
        }
        if let (Some(start), Some(end)) = (input.start, input.end)
            && end < start
        {
            return Err(GatewayError::invalid("end_time", "end_time: is before start_time"));
        }
        let model = governance::resolve_alias(caller, &input.model).to_owned();
        let (price, provider) = self.price_of(&model)?;
        let cost = price.cost(input.tokens);
        let id = stored_request_id(caller.key_id(), &input.request_id);
        if !self.recorded.insert(&id) {
            return Ok(Recorded { cost, request_id: id, duplicate: true });
        }
        let result = self.record_new(caller, input, id.clone(), model, provider, cost).await;
        if result.is_err() {
            self.recorded.remove(&id);
        }
        result.map(|duplicate| Recorded { cost, request_id: id, duplicate })
    }

    /// Records a call not recorded recently; whether the store had it already.
    async fn record_new(
        &self,
        caller: &Caller,
        input: RecordInput,
        request_id: String,
        model: String,
        provider: String,
        cost: Nanos,
    ) -> Result<bool, GatewayError> {
        let stored = self
            .store
            .list_spend(
                &SpendQuery { request_id: Some(request_id.clone()), ..Default::default() },
                &PageRequest::new(1, None),
            )
            .await?;
        if !stored.items.is_empty() {
            return Ok(true);
        }
        let now = Utc::now();
        // One time given: the call took no time at it.
        let start = input.start.or(input.end).unwrap_or(now);
        let end = input.end.unwrap_or(now).max(start);
        // Spend lands in the current period, whatever times the caller reports.
        let scopes = self.scopes_for(caller, &model, input.customer.as_deref(), &input.tags, now).await?;
        let charges: Vec<_> = scopes.budget.iter().map(|s| s.charge.clone()).collect();
        let counted = self.ledger.counters().settle(Default::default(), &charges, cost);
        let identity = caller.identity();
        let seq = self.ledger.record(
            SpendRecord {
                request_id,
                call_type: "record".to_owned(),
                key_id: caller.key_id().to_owned(),
                model: model.clone(),
                deployment: "external".to_owned(),
                provider,
                prompt_tokens: input.tokens.prompt,
                completion_tokens: input.tokens.completion,
                total_tokens: input.tokens.prompt.saturating_add(input.tokens.completion),
                spend: cost,
                status: SpendStatus::Success,
                error_code: None,
                start_time: start,
                end_time: end,
                duration_ms: (end - start).num_milliseconds().max(0),
                end_user: input.customer,
                user_id: identity.and_then(|i| i.key.user_id.clone()),
                team_id: identity.and_then(|i| i.key.team_id.clone()),
                organization_id: identity.and_then(|i| i.key.organization_id.clone()),
                tags: scopes.tags,
                charges,
                cache_hit: false,
                metadata: None,
            },
            counted,
        );
        self.rates.add_spend(&scopes.budget, cost, seq);
        Ok(false)
    }
}
