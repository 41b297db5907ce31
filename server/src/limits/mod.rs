//! Spend counters: each budget scope's spend in its current period, and what requests in
//! flight have reserved against it — the embedded, in-process implementation (one instance).
//!
//! Strict admission reserves a call's worst-case cost against every scope at once, all or
//! nothing, under one lock, so concurrent calls can never push a budget past its maximum;
//! settlement releases the reservation and adds the real cost. A counter's spend is
//! `flushed` (what the database held when the counter was loaded, plus what the ledger has
//! stored since) + `unflushed` (settled here, not yet stored): the ledger loads counters and
//! acknowledges stored records in its own task, one after the other, so a record is never
//! counted twice or missed.

pub mod rates;
pub mod shared;

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::error::{ErrorCode, GatewayError};
use crate::governance::budgets::BudgetScope;
use crate::pricing::{Nanos, format_usd};
use crate::store::Charge;

#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    /// What the database held when the counter was loaded.
    base: Nanos,
    flushed: Nanos,
    unflushed: Nanos,
    reserved: Nanos,
}

impl Counter {
    fn spent(&self) -> Nanos {
        self.flushed.saturating_add(self.unflushed)
    }
}

/// How budgets are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Reserve the worst case against every budget before calling upstream (default).
    Strict,
    /// Admit while spend is below the maximum (LiteLLM's behaviour); may overshoot.
    Optimistic,
}

/// What an admitted call holds until it settles.
#[derive(Debug, Default)]
pub struct Reservation {
    held: Vec<(Charge, Nanos)>,
}

/// Where a call's budgets stand after admission, for response headers.
#[derive(Debug, Clone, Default)]
pub struct Remaining {
    /// The budget with the least left, among those with a maximum.
    pub tightest: Option<BudgetLeft>,
    /// The first scope whose soft budget is already spent (it warns, never refuses), whether
    /// or not that scope also has a maximum.
    pub soft_exceeded: Option<String>,
}

/// What is left of one budget.
#[derive(Debug, Clone)]
pub struct BudgetLeft {
    pub label: String,
    pub remaining: Nanos,
    pub max: Nanos,
}

#[derive(Default)]
pub struct SpendCounters {
    map: Mutex<HashMap<Charge, Counter>>,
}

/// The refusal of a call by the budget of `scope`; `extra` is (held by calls in flight, this
/// call's worst case) in strict mode.
pub fn refuse(scope: &BudgetScope, spent: Nanos, max: Nanos, extra: Option<(Nanos, Nanos)>) -> GatewayError {
    let period = match scope.resets_at {
        Some(at) => format!("this period, resets {}", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => "in total (no budget_duration)".to_owned(),
    };
    let message = match extra {
        Some((reserved, estimate)) if spent < max => format!(
            "Budget would be exceeded: {} spent {} of {} USD {period}, with {} USD held by calls in flight; this call may cost up to {} USD",
            scope.label,
            format_usd(spent),
            format_usd(max),
            format_usd(reserved),
            format_usd(estimate)
        ),
        _ => format!(
            "Budget has been exceeded: {} spent {} of {} USD {period}",
            scope.label,
            format_usd(spent),
            format_usd(max)
        ),
    };
    GatewayError::new(ErrorCode::BudgetExceeded, message).with_reason("BUDGET_EXCEEDED")
}

/// Judges a call whose worst case is `estimate` against every enforced budget among `scopes`,
/// given each scope's (spent, held by calls in flight): where the budgets stand (the tightest
/// maximum, the first soft budget spent), or the refusal naming the first scope without room.
pub fn judge(
    scopes: &[BudgetScope],
    states: &[(Nanos, Nanos)],
    estimate: Nanos,
    mode: Enforcement,
) -> Result<Option<Remaining>, GatewayError> {
    let mut out = Remaining::default();
    for (s, &(spent, reserved)) in scopes.iter().zip(states).filter(|(s, _)| s.enforce) {
        if let Some(max) = s.max {
            let fits = match mode {
                Enforcement::Strict => spent.saturating_add(reserved).saturating_add(estimate) <= max,
                Enforcement::Optimistic => spent < max,
            };
            if !fits {
                return Err(refuse(s, spent, max, (mode == Enforcement::Strict).then_some((reserved, estimate))));
            }
            let left = Nanos(max.0.saturating_sub(spent.0).saturating_sub(reserved.0));
            if out.tightest.as_ref().is_none_or(|t| left < t.remaining) {
                out.tightest = Some(BudgetLeft { label: s.label.clone(), remaining: left, max });
            }
        }
        if let Some(soft) = s.soft
            && spent >= soft
            && out.soft_exceeded.is_none()
        {
            tracing::warn!(scope = %s.label, spent = %format_usd(spent), soft_budget = %format_usd(soft), "soft budget exceeded");
            out.soft_exceeded = Some(s.label.clone());
        }
    }
    Ok((out.tightest.is_some() || out.soft_exceeded.is_some()).then_some(out))
}

impl SpendCounters {
    /// The charges among `scopes` whose counters are not loaded yet.
    pub fn missing(&self, scopes: &[BudgetScope]) -> Vec<Charge> {
        let Ok(map) = self.map.lock() else { return Vec::new() };
        scopes
            .iter()
            .filter(|s| s.enforce && s.counted() && !map.contains_key(&s.charge))
            .map(|s| s.charge.clone())
            .collect()
    }

    /// Loads counters with their stored spend (called by the ledger's task only).
    pub fn load(&self, charges: &[Charge], stored: &[Nanos]) {
        if let Ok(mut map) = self.map.lock() {
            for (c, s) in charges.iter().zip(stored) {
                map.entry(c.clone()).or_insert(Counter { base: *s, flushed: *s, ..Default::default() });
            }
        }
    }

    /// Admits a call whose worst case is `estimate`, or refuses it naming the scope. In strict
    /// mode the estimate is held against every enforced budget until [`SpendCounters::settle`].
    /// With `instances` above one (Redis away, each instance on its own counters), each
    /// budget allows this instance 1/`instances` of what was left when its counter was loaded.
    pub fn admit(
        &self,
        scopes: &[BudgetScope],
        estimate: Nanos,
        mode: Enforcement,
        instances: u64,
    ) -> Result<(Reservation, Option<Remaining>), GatewayError> {
        let mut map = self.map.lock().map_err(|_| GatewayError::internal("budget counters poisoned"))?;
        let states: Vec<_> = scopes
            .iter()
            .map(|s| map.get(&s.charge).map_or((Nanos::ZERO, Nanos::ZERO), |c| (c.spent(), c.reserved)))
            .collect();
        let shared_out;
        let judged = if instances > 1 {
            shared_out = scopes
                .iter()
                .map(|s| {
                    let base = map.get(&s.charge).map_or(Nanos::ZERO, |c| c.base);
                    let max = s.max.map(|m| {
                        let left = m.0.saturating_sub(base.0).max(0);
                        Nanos(base.0.saturating_add(left / i64::try_from(instances).unwrap_or(i64::MAX)))
                    });
                    BudgetScope { max, ..s.clone() }
                })
                .collect::<Vec<_>>();
            &shared_out[..]
        } else {
            scopes
        };
        let remaining = judge(judged, &states, estimate, mode)?;
        let mut held = Vec::new();
        if mode == Enforcement::Strict {
            for s in scopes.iter().filter(|s| s.enforce && s.max.is_some()) {
                // Counters are loaded before admission; never hold against one that is not.
                if let Some(c) = map.get_mut(&s.charge) {
                    c.reserved = c.reserved.saturating_add(estimate);
                    held.push((s.charge.clone(), estimate));
                }
            }
        }
        Ok((Reservation { held }, remaining))
    }

    /// Spend and reservations of each scope's counter (zero where not loaded).
    pub fn status(&self, scopes: &[BudgetScope]) -> Vec<(Nanos, Nanos)> {
        let Ok(map) = self.map.lock() else { return vec![(Nanos::ZERO, Nanos::ZERO); scopes.len()] };
        scopes
            .iter()
            .map(|s| map.get(&s.charge).map_or((Nanos::ZERO, Nanos::ZERO), |c| (c.spent(), c.reserved)))
            .collect()
    }

    /// Forgets every counter (Redis is back: the next outage loads them afresh).
    pub fn clear(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }

    /// Releases a reservation and adds the real cost to every loaded counter among `charges`.
    /// Returns, per charge, whether it was counted here (the ledger's acknowledgement needs it).
    pub fn settle(&self, reservation: Reservation, charges: &[Charge], cost: Nanos) -> Vec<bool> {
        let Ok(mut map) = self.map.lock() else { return vec![false; charges.len()] };
        for (charge, amount) in reservation.held {
            if let Some(c) = map.get_mut(&charge) {
                c.reserved = Nanos(c.reserved.0.saturating_sub(amount.0).max(0));
            }
        }
        charges
            .iter()
            .map(|ch| match map.get_mut(ch) {
                Some(c) if cost.0 != 0 => {
                    c.unflushed = c.unflushed.saturating_add(cost);
                    true
                }
                _ => false,
            })
            .collect()
    }

    /// The ledger stored a record: move its cost from unflushed to flushed (or, for a charge
    /// settled before its counter was loaded, add it to flushed if the counter now exists).
    pub fn stored(&self, charges: &[Charge], counted: &[bool], cost: Nanos) {
        if cost.0 == 0 {
            return;
        }
        let Ok(mut map) = self.map.lock() else { return };
        for (i, ch) in charges.iter().enumerate() {
            if let Some(c) = map.get_mut(ch) {
                if counted.get(i).copied().unwrap_or(false) {
                    c.unflushed = Nanos(c.unflushed.0.saturating_sub(cost.0));
                }
                c.flushed = c.flushed.saturating_add(cost);
            }
        }
    }

    /// Spend so far in a scope's current period, if its counter is loaded.
    pub fn spent(&self, charge: &Charge) -> Option<Nanos> {
        self.map.lock().ok().and_then(|m| m.get(charge).map(Counter::spent))
    }

    /// Forgets counters of periods that ended before `now` with nothing in flight.
    pub fn prune(&self, before: DateTime<Utc>) {
        if let Ok(mut map) = self.map.lock() {
            let cutoff = before.timestamp_micros();
            map.retain(|k, c| {
                k.period_start_us == 0 || k.period_start_us >= cutoff || c.reserved.0 > 0 || c.unflushed.0 > 0
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(max: i64) -> BudgetScope {
        BudgetScope {
            charge: Charge { scope: "key".into(), scope_id: "k".into(), period_start_us: 0 },
            label: "key \"k\"".into(),
            max: Some(Nanos(max)),
            soft: None,
            resets_at: None,
            enforce: true,
        }
    }

    #[test]
    fn strict_reservations_never_overcommit() {
        let counters = SpendCounters::default();
        let s = vec![scope(1000)];
        counters.load(&[s[0].charge.clone()], &[Nanos(0)]);
        let held: Vec<_> =
            (0..50).filter_map(|_| counters.admit(&s, Nanos(100), Enforcement::Strict, 1).ok()).collect();
        assert_eq!(held.len(), 10, "ten worst cases of 100 fit in 1000");
        let err = counters.admit(&s, Nanos(100), Enforcement::Strict, 1).unwrap_err();
        assert_eq!(err.code, ErrorCode::BudgetExceeded);
        assert!(err.message.contains("held by calls in flight"), "{}", err.message);
        // Settling at the real cost (40) frees the difference for others.
        let charges = vec![s[0].charge.clone()];
        for (r, _) in held {
            assert_eq!(counters.settle(r, &charges, Nanos(40)), vec![true]);
        }
        assert_eq!(counters.spent(&charges[0]), Some(Nanos(400)));
        let more = (0..50).filter(|_| counters.admit(&s, Nanos(100), Enforcement::Strict, 1).is_ok()).count();
        assert_eq!(more, 6);
    }

    #[test]
    fn optimistic_admits_while_under_and_stored_moves_spend() {
        let counters = SpendCounters::default();
        let s = vec![scope(100)];
        let c = vec![s[0].charge.clone()];
        counters.load(&c, &[Nanos(90)]);
        let (r, left) = counters.admit(&s, Nanos(1000), Enforcement::Optimistic, 1).unwrap();
        assert_eq!(left.unwrap().tightest.unwrap().remaining, Nanos(10));
        let counted = counters.settle(r, &c, Nanos(50));
        assert!(counters.admit(&s, Nanos(1), Enforcement::Optimistic, 1).is_err(), "spent 140 of 100");
        counters.stored(&c, &counted, Nanos(50));
        assert_eq!(counters.spent(&c[0]), Some(Nanos(140)), "storing moves spend, never doubles it");
        let err = counters.admit(&s, Nanos(1), Enforcement::Optimistic, 1).unwrap_err();
        assert!(
            err.message.starts_with("Budget has been exceeded: key \"k\" spent 0.00000014 of 0.0000001 USD"),
            "{}",
            err.message
        );
    }
}
