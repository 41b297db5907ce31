//! Rate limits: requests per minute, tokens per minute and requests in flight, per scope —
//! the embedded, in-process implementation.
//!
//! Windows are one minute, aligned to the clock's minute. A scope's load is the two-window
//! weighted count: `previous minute × (1 − fraction of this minute elapsed) + this minute`,
//! a smooth approximation of a sliding minute that never admits more than the limit within
//! one aligned minute. A request needs room for one request and for its estimated tokens in
//! every scope at once, and a slot where `max_parallel_requests` applies; it takes all or
//! nothing. Settlement corrects the tokens to the real count (in the window the estimate was
//! charged to) and frees the slots.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::shared::{Admission, BudgetAsk, Hold, SharedRates, Unreachable};
use super::{Enforcement, Remaining, SpendCounters, judge};
use crate::config::RedisFailurePolicy;
use crate::error::{ErrorCode, GatewayError};
use crate::governance::budgets::BudgetScope;
use crate::pricing::Nanos;
use crate::store::{Charge, Store};

/// One scope's limits for a call.
#[derive(Debug, Clone)]
pub struct RateScope {
    /// e.g. `key:abc`, `team:t1`, `deployment:d1`.
    pub id: String,
    /// How messages name it.
    pub label: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub parallel: Option<u64>,
}

impl RateScope {
    pub fn is_limited(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.parallel.is_some()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    minute: i64,
    cur_requests: u64,
    prev_requests: u64,
    cur_tokens: u64,
    prev_tokens: u64,
    in_flight: u64,
}

impl Window {
    fn roll(&mut self, minute: i64) {
        // A clock read a moment before a newer call's never moves the window back.
        if minute <= self.minute {
            return;
        }
        if minute == self.minute + 1 {
            self.prev_requests = self.cur_requests;
            self.prev_tokens = self.cur_tokens;
        } else {
            self.prev_requests = 0;
            self.prev_tokens = 0;
        }
        self.cur_requests = 0;
        self.cur_tokens = 0;
        self.minute = minute;
    }

    /// The weighted load: previous minute scaled by what remains of it, plus this minute.
    fn load(prev: u64, cur: u64, elapsed: f64) -> u64 {
        (prev as f64 * (1.0 - elapsed)).ceil() as u64 + cur
    }
}

/// What an admitted call holds.
#[derive(Debug, Default)]
pub struct Ticket {
    /// (scope id, minute charged, tokens charged, holds a slot)
    held: Vec<(String, i64, u64, bool)>,
    /// What it holds in Redis, when the limits are shared.
    shared: Option<Hold>,
    /// The shared budget counters that will miss its cost (admitted locally, Redis away).
    missed: Vec<String>,
}

/// The most constraining limits after admission, for response headers.
#[derive(Debug, Clone, Default)]
pub struct RateStatus {
    pub requests: Option<(u64, u64)>,
    pub tokens: Option<(u64, u64)>,
}

#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, Window>>,
}

fn minute_of(now: DateTime<Utc>) -> (i64, f64, DateTime<Utc>) {
    let secs = now.timestamp();
    let minute = secs.div_euclid(60);
    let elapsed = (now.timestamp_millis() - minute * 60_000) as f64 / 60_000.0;
    let next = DateTime::from_timestamp((minute + 1) * 60, 0).unwrap_or(now);
    (minute, elapsed.clamp(0.0, 1.0), next)
}

fn refuse(scope: &RateScope, what: &str, limit: u64, used: u64, reset: DateTime<Utc>, retry: Duration) -> GatewayError {
    let mut e = GatewayError::new(
        ErrorCode::RateLimited,
        format!(
            "Rate limit exceeded for {}: {what} limit {limit} reached ({used} in use); resets at {}",
            scope.label,
            reset.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
    .with_reason("RATE_LIMITED");
    e.retry_after = Some(retry);
    e
}

impl RateLimiter {
    /// Admits a call of `tokens` estimated tokens against every scope, all or nothing.
    pub fn acquire(
        &self,
        scopes: &[RateScope],
        tokens: u64,
        now: DateTime<Utc>,
    ) -> Result<(Ticket, RateStatus), GatewayError> {
        let (minute, elapsed, reset) = minute_of(now);
        let until_reset = Duration::from_millis(((1.0 - elapsed) * 60_000.0).ceil().max(1000.0) as u64);
        let mut map = self.windows.lock().map_err(|_| GatewayError::internal("rate counters poisoned"))?;
        let mut status = RateStatus::default();
        let mut tightest_req = f64::INFINITY;
        let mut tightest_tok = f64::INFINITY;
        // Check every scope first; change nothing unless all have room.
        for s in scopes.iter().filter(|s| s.is_limited()) {
            let mut w = map.get(&s.id).copied().unwrap_or_default();
            w.roll(minute);
            if let Some(rpm) = s.rpm {
                let used = Window::load(w.prev_requests, w.cur_requests, elapsed);
                if used + 1 > rpm {
                    return Err(refuse(s, "requests per minute", rpm, used, reset, until_reset));
                }
                let left = rpm - used - 1;
                if (left as f64 / (rpm as f64).max(1.0)) < tightest_req {
                    tightest_req = left as f64 / (rpm as f64).max(1.0);
                    status.requests = Some((rpm, left));
                }
            }
            if let Some(tpm) = s.tpm {
                let used = Window::load(w.prev_tokens, w.cur_tokens, elapsed);
                if used + tokens > tpm {
                    return Err(refuse(s, "tokens per minute", tpm, used, reset, until_reset));
                }
                let left = tpm - used - tokens;
                if (left as f64 / (tpm as f64).max(1.0)) < tightest_tok {
                    tightest_tok = left as f64 / (tpm as f64).max(1.0);
                    status.tokens = Some((tpm, left));
                }
            }
            if let Some(max) = s.parallel
                && w.in_flight + 1 > max
            {
                return Err(refuse(s, "max_parallel_requests", max, w.in_flight, now, Duration::from_secs(1)));
            }
        }
        let mut ticket = Ticket::default();
        for s in scopes.iter().filter(|s| s.is_limited()) {
            let w = map.entry(s.id.clone()).or_default();
            w.roll(minute);
            w.cur_requests += 1;
            w.cur_tokens += tokens;
            let slot = s.parallel.is_some();
            if slot {
                w.in_flight += 1;
            }
            ticket.held.push((s.id.clone(), minute, tokens, slot));
        }
        Ok((ticket, status))
    }

    /// Whether [`RateLimiter::acquire`] would admit, taking nothing.
    pub fn check(&self, scopes: &[RateScope], tokens: u64, now: DateTime<Utc>) -> Result<(), GatewayError> {
        let (ticket, _) = self.acquire(scopes, tokens, now)?;
        self.cancel(ticket);
        Ok(())
    }

    /// Each scope's weighted requests and tokens this minute, and its requests in flight.
    pub fn status(&self, scopes: &[RateScope], now: DateTime<Utc>) -> Vec<(u64, u64, u64)> {
        let (minute, elapsed, _) = minute_of(now);
        let Ok(map) = self.windows.lock() else { return vec![(0, 0, 0); scopes.len()] };
        scopes
            .iter()
            .map(|s| {
                let mut w = map.get(&s.id).copied().unwrap_or_default();
                w.roll(minute);
                (
                    Window::load(w.prev_requests, w.cur_requests, elapsed),
                    Window::load(w.prev_tokens, w.cur_tokens, elapsed),
                    w.in_flight,
                )
            })
            .collect()
    }

    /// Undoes an admission that went no further (another check refused the call).
    pub fn cancel(&self, ticket: Ticket) {
        let Ok(mut map) = self.windows.lock() else { return };
        for (id, minute, tokens, slot) in ticket.held {
            if let Some(w) = map.get_mut(&id) {
                if w.minute == minute {
                    w.cur_requests = w.cur_requests.saturating_sub(1);
                    w.cur_tokens = w.cur_tokens.saturating_sub(tokens);
                }
                if slot {
                    w.in_flight = w.in_flight.saturating_sub(1);
                }
            }
        }
    }

    /// The call finished with `actual` tokens: correct the estimate where it was charged and
    /// free the slots.
    pub fn settle(&self, ticket: Ticket, actual: u64) {
        let Ok(mut map) = self.windows.lock() else { return };
        for (id, minute, charged, slot) in ticket.held {
            if let Some(w) = map.get_mut(&id) {
                let field = if w.minute == minute {
                    Some(&mut w.cur_tokens)
                } else if w.minute == minute + 1 {
                    Some(&mut w.prev_tokens)
                } else {
                    None
                };
                if let Some(t) = field {
                    *t = t.saturating_sub(charged).saturating_add(actual);
                }
                if slot {
                    w.in_flight = w.in_flight.saturating_sub(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 - 1_800_000_000_i64.rem_euclid(60) + secs, 0).unwrap()
    }

    fn scope(rpm: Option<u64>, tpm: Option<u64>, parallel: Option<u64>) -> RateScope {
        RateScope { id: "key:k".into(), label: "key \"k\"".into(), rpm, tpm, parallel }
    }

    #[test]
    fn each_instance_takes_its_share_and_closed_scopes_stay_closed() {
        let scopes = vec![
            scope(Some(10), Some(0), Some(1)),
            RateScope {
                id: INSTANCE_SCOPE.into(),
                label: "this instance".into(),
                rpm: None,
                tpm: None,
                parallel: Some(7),
            },
        ];
        let shared = share(&scopes, 3);
        assert_eq!((shared[0].rpm, shared[0].tpm, shared[0].parallel), (Some(3), Some(0), Some(1)));
        assert_eq!(shared[1].parallel, Some(7), "the per-instance cap is not divided");
    }

    #[test]
    fn rpm_admits_exactly_the_limit_in_a_fresh_minute() {
        let r = RateLimiter::default();
        let s = [scope(Some(5), None, None)];
        let admitted = (0..20).filter(|_| r.acquire(&s, 0, at(10)).is_ok()).count();
        assert_eq!(admitted, 5);
        let err = r.acquire(&s, 0, at(10)).unwrap_err();
        assert_eq!(err.code, ErrorCode::RateLimited);
        assert_eq!(err.retry_after, Some(Duration::from_secs(50)));
        assert!(err.message.contains("requests per minute limit 5 reached"), "{}", err.message);
        // Half-way through the next minute, half the previous minute still weighs.
        let next = (0..20).filter(|_| r.acquire(&s, 0, at(90)).is_ok()).count();
        assert_eq!(next, 2, "5 - ceil(5 x 0.5)");
        // Two minutes on, the slate is clean.
        assert_eq!((0..20).filter(|_| r.acquire(&s, 0, at(200)).is_ok()).count(), 5);
    }

    #[test]
    fn tokens_are_reserved_then_corrected() {
        let r = RateLimiter::default();
        let s = [scope(None, Some(1000), None)];
        let (t1, status) = r.acquire(&s, 600, at(1)).unwrap();
        assert_eq!(status.tokens, Some((1000, 400)));
        assert!(r.acquire(&s, 600, at(2)).is_err(), "600 + 600 > 1000");
        r.settle(t1, 100);
        assert!(r.acquire(&s, 600, at(3)).is_ok(), "100 + 600 fits after correction");
    }

    #[test]
    fn parallel_slots_and_all_or_nothing() {
        let r = RateLimiter::default();
        let both = [
            scope(None, None, Some(1)),
            RateScope { id: "team:t".into(), label: "team".into(), rpm: Some(1), tpm: None, parallel: None },
        ];
        let (t, _) = r.acquire(&both, 0, at(1)).unwrap();
        assert!(r.acquire(&both, 0, at(1)).is_err());
        r.settle(t, 0);
        // The team's rpm is spent now; the key's slot is free but must not be taken.
        assert!(r.acquire(&both, 0, at(2)).is_err());
        let key_only = [scope(None, None, Some(1))];
        let (t2, _) = r.acquire(&key_only, 0, at(2)).unwrap();
        r.cancel(t2);
        assert!(r.acquire(&key_only, 0, at(2)).is_ok(), "a cancelled admission frees its slot");
    }
}

/// The scope of `global_max_parallel_requests`: always this instance's own.
const INSTANCE_SCOPE: &str = "instance";

/// The budgets a call is admitted against, with the rate limits.
pub struct BudgetRequest<'a> {
    pub scopes: &'a [BudgetScope],
    /// The call's worst case, reserved in strict mode.
    pub estimate: Nanos,
    pub mode: Enforcement,
}

/// What became of the budgets of an admission.
#[derive(Debug)]
pub enum BudgetVerdict {
    /// Judged in Redis together with the rate limits: the tightest budget left.
    Judged(Option<Remaining>),
    /// For the local counters to judge, each instance taking 1/`instances` of what is left
    /// (embedded, or Redis away under `fail_open`).
    Local { instances: u64 },
}

/// Rate limits (and, when shared, budgets) as the gateway sees them: embedded, or shared
/// through Redis with the embedded limiter and the local spend counters as the fallback
/// (`redis_failure_policy: fail_open`) and for the per-instance cap.
#[derive(Default)]
pub struct Rates {
    local: RateLimiter,
    shared: Option<Shared>,
}

struct Shared {
    redis: Arc<SharedRates>,
    policy: RedisFailurePolicy,
    /// Where budget counters Redis lacks are rebuilt from.
    store: Arc<dyn Store>,
    /// The local counters judged budgets while Redis was away (forgotten when it returns).
    counters: Arc<SpendCounters>,
    /// Redis's transitions (away, back) when the local counters were last checked.
    seen_transitions: AtomicU64,
}

/// A budget counter's name in Redis.
fn counter(c: &Charge) -> String {
    format!("{}|{}|{}", c.scope, c.scope_id, c.period_start_us)
}

impl Rates {
    pub fn shared(
        redis: Arc<SharedRates>,
        policy: RedisFailurePolicy,
        store: Arc<dyn Store>,
        counters: Arc<SpendCounters>,
    ) -> Self {
        let seen_transitions = AtomicU64::new(redis.transitions());
        let shared = Shared { redis, policy, store, counters, seen_transitions };
        Self { local: RateLimiter::default(), shared: Some(shared) }
    }

    /// Whether budgets are judged in Redis now (shared and reachable as last seen); when not,
    /// the caller loads the local counters before admitting.
    pub fn judges_budgets(&self) -> bool {
        let Some(shared) = &self.shared else { return false };
        // Local counters loaded before Redis last went away or came back are stale: the other
        // instances' spend since reached only Redis. Forget them; an outage loads them afresh.
        let now = shared.redis.transitions();
        if shared.seen_transitions.swap(now, Ordering::Relaxed) != now {
            shared.counters.clear();
        }
        !shared.redis.is_down()
    }

    /// Admits a call of `tokens` estimated tokens against every rate scope, all or nothing;
    /// when the limits are shared, every budget too, in the same round trip.
    pub async fn acquire(
        &self,
        scopes: &[RateScope],
        tokens: u64,
        now: DateTime<Utc>,
        budgets: &BudgetRequest<'_>,
    ) -> Result<(Ticket, RateStatus, BudgetVerdict), GatewayError> {
        let Some(shared) = &self.shared else {
            let (ticket, status) = self.local.acquire(scopes, tokens, now)?;
            return Ok((ticket, status, BudgetVerdict::Local { instances: 1 }));
        };
        let (own, common): (Vec<RateScope>, Vec<RateScope>) =
            scopes.iter().cloned().partition(|s| s.id == INSTANCE_SCOPE);
        let judged: Vec<&BudgetScope> = budgets.scopes.iter().filter(|s| s.enforce && s.counted()).collect();
        let ask = BudgetAsk {
            judged: judged.iter().map(|s| (counter(&s.charge), s.max.map_or(-1, |m| m.0))).collect(),
            charged: budgets.scopes.iter().filter(|s| s.counted()).map(|s| counter(&s.charge)).collect(),
            estimate: budgets.estimate.0,
            strict: budgets.mode == Enforcement::Strict,
        };
        if common.is_empty() && judged.is_empty() {
            let (mut ticket, status) = self.local.acquire(&own, tokens, now)?;
            if !ask.charged.is_empty() {
                ticket.shared = Some(Hold::charges(ask.charged));
            }
            return Ok((ticket, status, BudgetVerdict::Judged(None)));
        }
        // Redis first, then this instance's own cap: nothing local is held across the await,
        // so a request dropped while Redis answers leaks nothing here. A budget counter Redis
        // lacks is rebuilt from the database and the admission asked again.
        let mut attempts = 0;
        let answer = loop {
            attempts += 1;
            match shared.redis.admit(&common, tokens, &ask).await {
                Ok(Admission::Missing(indexes)) if attempts < 3 => {
                    let charges: Vec<Charge> =
                        indexes.iter().filter_map(|i| judged.get(*i)).map(|s| s.charge.clone()).collect();
                    let spent = shared.store.period_spend(&charges).await?;
                    let loaded: Vec<(String, i64)> =
                        charges.iter().map(counter).zip(spent.iter().map(|n| n.0)).collect();
                    if let Err(e) = shared.redis.load(&loaded).await {
                        break Err(e);
                    }
                }
                other => break other,
            }
        };
        match answer {
            Ok(Admission::Admitted(hold, requests, left, states)) => {
                let states: Vec<(Nanos, Nanos)> = states.into_iter().map(|(s, h)| (Nanos(s), Nanos(h))).collect();
                let judged: Vec<BudgetScope> = judged.into_iter().cloned().collect();
                // Redis judged the same numbers; this only finds the tightest and soft budgets.
                let remaining = judge(&judged, &states, Nanos::ZERO, Enforcement::Optimistic).unwrap_or_default();
                match self.local.acquire(&own, tokens, now) {
                    Ok((mut ticket, _)) => {
                        ticket.shared = Some(hold);
                        Ok((ticket, RateStatus { requests, tokens: left }, BudgetVerdict::Judged(remaining)))
                    }
                    Err(e) => {
                        shared.redis.release(hold, None, 0, 0);
                        Err(e)
                    }
                }
            }
            Ok(Admission::Refused { scope, kind, limit, used, reset_ms }) => {
                let what = match kind.as_str() {
                    "r" => "requests per minute",
                    "t" => "tokens per minute",
                    _ => "max_parallel_requests",
                };
                let reset = now + chrono::Duration::milliseconds(i64::try_from(reset_ms).unwrap_or(0));
                let retry = Duration::from_millis(reset_ms.max(1000));
                Err(refuse(&common[scope.min(common.len().saturating_sub(1))], what, limit, used, reset, retry))
            }
            Ok(Admission::OverBudget { index, spent, held }) => {
                let Some(s) = judged.get(index) else {
                    return Err(GatewayError::internal("Redis refused a budget it was not asked about"));
                };
                let max = s.max.unwrap_or(Nanos::ZERO);
                let extra = (budgets.mode == Enforcement::Strict).then_some((Nanos(held), budgets.estimate));
                Err(crate::limits::refuse(s, Nanos(spent), max, extra))
            }
            Ok(Admission::Missing(_)) => {
                Err(GatewayError::unavailable("budget counters could not be loaded into Redis; try again"))
            }
            Err(Unreachable(message)) => match shared.policy {
                RedisFailurePolicy::FailClosed => Err(GatewayError::unavailable(format!(
                    "Rate limits and budgets cannot be checked: {message}; \
                     general_settings.redis_failure_policy is fail_closed"
                ))),
                RedisFailurePolicy::FailOpen => {
                    let instances = shared.redis.instances();
                    let (mut ticket, status) = self.local.acquire(&share(scopes, instances), tokens, now)?;
                    ticket.missed = ask.charged;
                    Ok((ticket, status, BudgetVerdict::Local { instances }))
                }
            },
        }
    }

    /// Each budget's (spent, held by calls in flight) as Redis holds it (counters it lacks
    /// rebuilt from the database); None when budgets are not shared or Redis is away.
    pub async fn budget_status(&self, scopes: &[BudgetScope]) -> Result<Option<Vec<(Nanos, Nanos)>>, GatewayError> {
        let Some(shared) = self.shared.as_ref().filter(|s| !s.redis.is_down()) else { return Ok(None) };
        let names: Vec<String> = scopes.iter().map(|s| counter(&s.charge)).collect();
        let Ok(mut found) = shared.redis.budgets(&names).await else { return Ok(None) };
        let lacking: Vec<usize> = (0..scopes.len()).filter(|i| found[*i].is_none() && scopes[*i].counted()).collect();
        if !lacking.is_empty() {
            let charges: Vec<Charge> = lacking.iter().map(|i| scopes[*i].charge.clone()).collect();
            let spent = shared.store.period_spend(&charges).await?;
            let loaded: Vec<(String, i64)> = charges.iter().map(counter).zip(spent.iter().map(|n| n.0)).collect();
            if shared.redis.load(&loaded).await.is_err() {
                return Ok(None);
            }
            let Ok(again) = shared.redis.budgets(&names).await else { return Ok(None) };
            found = again;
        }
        Ok(Some(
            found.into_iter().map(|f| f.map_or((Nanos::ZERO, Nanos::ZERO), |(s, h)| (Nanos(s), Nanos(h)))).collect(),
        ))
    }

    /// Adds a cost recorded after the fact (ledger record `seq`) to the shared budget counters
    /// of `scopes`.
    pub fn add_spend(&self, scopes: &[BudgetScope], cost: Nanos, seq: u64) {
        let Some(shared) = &self.shared else { return };
        let charged: Vec<String> = scopes.iter().filter(|s| s.counted()).map(|s| counter(&s.charge)).collect();
        if !charged.is_empty() && cost.0 != 0 {
            shared.redis.release(Hold::charges(charged), Some(0), cost.0, seq);
        }
    }

    /// Whether [`Rates::acquire`] would admit, taking nothing (a read of the counters).
    pub async fn check(&self, scopes: &[RateScope], tokens: u64, now: DateTime<Utc>) -> Result<(), GatewayError> {
        if self.shared.is_none() {
            return self.local.check(scopes, tokens, now);
        }
        let (_, elapsed, reset) = minute_of(now);
        let until_reset = Duration::from_millis(((1.0 - elapsed) * 60_000.0).ceil().max(1000.0) as u64);
        for (s, (requests, used_tokens, in_flight)) in scopes.iter().zip(self.status(scopes, now).await) {
            if let Some(rpm) = s.rpm
                && requests + 1 > rpm
            {
                return Err(refuse(s, "requests per minute", rpm, requests, reset, until_reset));
            }
            if let Some(tpm) = s.tpm
                && used_tokens + tokens > tpm
            {
                return Err(refuse(s, "tokens per minute", tpm, used_tokens, reset, until_reset));
            }
            if let Some(max) = s.parallel
                && in_flight + 1 > max
            {
                return Err(refuse(s, "max_parallel_requests", max, in_flight, now, Duration::from_secs(1)));
            }
        }
        Ok(())
    }

    /// Each scope's weighted requests and tokens this minute, and its requests in flight.
    pub async fn status(&self, scopes: &[RateScope], now: DateTime<Utc>) -> Vec<(u64, u64, u64)> {
        let local = self.local.status(scopes, now);
        let Some(shared) = &self.shared else { return local };
        match shared.redis.status(scopes).await {
            Ok(remote) => scopes
                .iter()
                .zip(local.into_iter().zip(remote))
                .map(|(s, (l, r))| if s.id == INSTANCE_SCOPE { l } else { r })
                .collect(),
            Err(_) => local,
        }
    }

    /// Undoes an admission that went no further.
    pub fn cancel(&self, mut ticket: Ticket) {
        if let (Some(hold), Some(shared)) = (ticket.shared.take(), &self.shared) {
            shared.redis.release(hold, None, 0, 0);
        }
        self.local.cancel(ticket);
    }

    /// The call finished with `actual` tokens, costing `cost`, recorded as ledger record `seq`.
    pub fn settle(&self, mut ticket: Ticket, actual: u64, cost: Nanos, seq: u64) {
        if let Some(shared) = &self.shared {
            if let Some(hold) = ticket.shared.take() {
                shared.redis.release(hold, Some(actual), cost.0, seq);
            } else if cost.0 != 0 && !ticket.missed.is_empty() {
                shared.redis.mark_dirty(std::mem::take(&mut ticket.missed).into_iter(), seq);
            }
        }
        self.local.settle(ticket, actual);
    }
}

/// This instance's share of each shared limit while Redis is away: each limit divided by the
/// instances last seen (at least one of each).
fn share(scopes: &[RateScope], instances: u64) -> Vec<RateScope> {
    // A limit of zero stays zero (a deliberately closed scope).
    let part = |v: Option<u64>| v.map(|v| if v == 0 { 0 } else { (v / instances).max(1) });
    scopes
        .iter()
        .map(|s| {
            if s.id == INSTANCE_SCOPE {
                s.clone()
            } else {
                RateScope { rpm: part(s.rpm), tpm: part(s.tpm), parallel: part(s.parallel), ..s.clone() }
            }
        })
        .collect()
}
