//! Which budgets a call answers to, and in which period.
//!
//! A call's spend lands on every scope it belongs to — key, user, team, team member,
//! organization, customer, and per-model budgets of key, user and team — each in its current
//! period. A period is computed from the scope's anchor (its creation time):
//! `period_start = anchor + k × budget_duration`, so correctness never waits for a reset job.
//! Budgets without a duration use period 0 (lifetime).

use chrono::{DateTime, Utc};

use super::access::glob;
use super::duration::{Period, parse_period};
use super::identity::Identity;
use crate::pricing::Nanos;
use crate::store::Charge;
use crate::tenancy::{Customer, Limits, Tag, TeamMemberSettings};

/// One budget scope of a call.
#[derive(Debug, Clone)]
pub struct BudgetScope {
    pub charge: Charge,
    /// How messages name it, e.g. `team "marketing"`.
    pub label: String,
    pub max: Option<Nanos>,
    pub soft: Option<Nanos>,
    /// When the current period ends (None for lifetime budgets).
    pub resets_at: Option<DateTime<Utc>>,
    /// Whether the budget refuses calls (a user's personal budget does not govern team keys).
    pub enforce: bool,
}

impl BudgetScope {
    /// Whether the scope's spend is counted before calls: it has a maximum to enforce or a
    /// soft budget to warn at.
    pub fn counted(&self) -> bool {
        self.max.is_some() || self.soft.is_some()
    }
}

/// The start of the period containing `now`, and the next period's start.
pub fn period_bounds(
    anchor: DateTime<Utc>,
    period: Option<Period>,
    now: DateTime<Utc>,
) -> (i64, Option<DateTime<Utc>>) {
    let Some(period) = period else { return (0, None) };
    if now < anchor {
        return (anchor.timestamp_micros(), period.after(anchor));
    }
    match period {
        Period::Fixed(d) => {
            let d_us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1);
            let elapsed = now.timestamp_micros() - anchor.timestamp_micros();
            let start = anchor.timestamp_micros() + (elapsed / d_us) * d_us;
            (start, DateTime::from_timestamp_micros(start.saturating_add(d_us)))
        }
        Period::Months(m) => {
            let months = |k: u32| Period::Months(m.saturating_mul(k)).after(anchor);
            let mut k = 0u32;
            while let Some(next) = months(k + 1) {
                if next > now {
                    break;
                }
                k += 1;
            }
            let start = months(k).unwrap_or(anchor);
            (start.timestamp_micros(), months(k + 1))
        }
    }
}

/// Where a scope's periods count from, when "now" is, and whether it refuses calls.
#[derive(Clone, Copy)]
struct At {
    anchor: DateTime<Utc>,
    now: DateTime<Utc>,
    enforce: bool,
}

fn scope(
    kind: &str,
    id: String,
    label: String,
    max: Option<Nanos>,
    soft: Option<Nanos>,
    duration: Option<&str>,
    at: At,
) -> BudgetScope {
    let period = duration.and_then(|d| parse_period(d).ok());
    let (start, resets_at) = period_bounds(at.anchor, period, at.now);
    BudgetScope {
        charge: Charge { scope: kind.to_owned(), scope_id: id, period_start_us: start },
        label,
        max,
        soft,
        resets_at,
        enforce: at.enforce,
    }
}

fn from_limits(kind: &str, id: &str, label: String, l: &Limits, at: At) -> BudgetScope {
    scope(kind, id.to_owned(), label, l.max_budget, l.soft_budget, l.budget_duration.as_deref(), at)
}

/// Per-model budgets of a level that match `model`.
fn model_scopes(out: &mut Vec<BudgetScope>, kind: &str, id: &str, what: &str, l: &Limits, model: &str, at: At) {
    for (pattern, b) in &l.model_max_budget {
        if glob(pattern, model) {
            let label = format!("{what} {id:?} for model {pattern:?}");
            out.push(scope(
                kind,
                format!("{id}:{pattern}"),
                label,
                Some(b.budget_limit),
                None,
                b.time_period.as_deref(),
                at,
            ));
        }
    }
}

/// Every budget scope of a call by `identity` (None for the master key) for `customer`, on
/// `model`. Budget tiers linked by `budget_id` fill what the entity leaves unset.
pub fn scopes(
    identity: Option<&Identity>,
    customer: Option<(&Customer, &Limits)>,
    tags: &[(String, Option<std::sync::Arc<Tag>>)],
    model: &str,
    now: DateTime<Utc>,
) -> Vec<BudgetScope> {
    let mut out = Vec::new();
    if let Some(i) = identity {
        let k = &i.key;
        let limits = with_tier(&k.limits, i.key_tier.as_ref().map(|t| &t.limits));
        let at = At { anchor: k.meta.created_at, now, enforce: true };
        let label = format!("key {:?}", k.key_alias.as_deref().unwrap_or(&k.key_id));
        out.push(from_limits("key", &k.key_id, label, &limits, at));
        model_scopes(&mut out, "key_model", &k.key_id, "key", &k.limits, model, at);
        if let Some(u) = &i.user {
            // A user's personal budget governs their personal keys; team keys answer to the
            // team and the team member budget (LiteLLM's rule). Spend lands on the user always.
            let at = At { anchor: u.meta.created_at, now, enforce: i.team.is_none() };
            let limits = with_tier(&u.limits, i.user_tier.as_ref().map(|t| &t.limits));
            out.push(from_limits("user", &u.user_id, format!("user {:?}", u.user_id), &limits, at));
            model_scopes(&mut out, "user_model", &u.user_id, "user", &limits, model, at);
        }
        if let Some(t) = &i.team {
            let at = At { anchor: t.meta.created_at, now, enforce: true };
            let label = format!("team {:?}", t.team_alias.as_deref().unwrap_or(&t.team_id));
            let limits = with_tier(&t.limits, i.team_tier.as_ref().map(|x| &x.limits));
            out.push(from_limits("team", &t.team_id, label, &limits, at));
            model_scopes(&mut out, "team_model", &t.team_id, "team", &limits, model, at);
            if let (Some(u), Some(m)) = (&i.user, &i.member) {
                let settings: TeamMemberSettings = serde_json::from_value(m.data.clone()).unwrap_or_default();
                out.push(scope(
                    "team_member",
                    format!("{}:{}", t.team_id, u.user_id),
                    format!("user {:?} in team {:?}", u.user_id, t.team_id),
                    settings.max_budget_in_team,
                    None,
                    settings.budget_duration.as_deref(),
                    At { anchor: m.created_at, now, enforce: true },
                ));
            }
        }
        if let Some(o) = &i.org {
            let at = At { anchor: o.meta.created_at, now, enforce: true };
            let label = format!("organization {:?}", o.organization_alias);
            let limits = with_tier(&o.limits, i.org_tier.as_ref().map(|x| &x.limits));
            out.push(from_limits("org", &o.organization_id, label, &limits, at));
        }
    }
    if let Some((c, limits)) = customer {
        let at = At { anchor: super::customers::CUSTOMER_ANCHOR, now, enforce: true };
        out.push(from_limits("customer", &c.user_id, format!("customer {:?}", c.user_id), limits, at));
    }
    for (name, record) in tags {
        let label = format!("tag {name:?}");
        match record {
            Some(t) => out.push(from_limits(
                "tag",
                name,
                label,
                &t.limits,
                At { anchor: t.meta.created_at, now, enforce: true },
            )),
            // A tag without a record collects spend over its lifetime.
            None => {
                out.push(scope("tag", name.clone(), label, None, None, None, At { anchor: now, now, enforce: true }))
            }
        }
    }
    out
}

/// The proxy-wide budget (`litellm_settings.max_budget` and `budget_duration`), anchored at
/// the Unix epoch.
pub fn global(limits: &Limits, now: DateTime<Utc>) -> BudgetScope {
    let at = At { anchor: DateTime::<Utc>::UNIX_EPOCH, now, enforce: true };
    from_limits("global", "proxy", "the gateway's global budget".to_owned(), limits, at)
}

/// An entity's limits, with a linked tier's filling the budget fields it leaves unset.
pub fn with_tier(own: &Limits, tier: Option<&Limits>) -> Limits {
    let Some(t) = tier else { return own.clone() };
    Limits {
        max_budget: own.max_budget.or(t.max_budget),
        soft_budget: own.soft_budget.or(t.soft_budget),
        budget_duration: own.budget_duration.clone().or_else(|| t.budget_duration.clone()),
        tpm_limit: own.tpm_limit.or(t.tpm_limit),
        rpm_limit: own.rpm_limit.or(t.rpm_limit),
        max_parallel_requests: own.max_parallel_requests.or(t.max_parallel_requests),
        model_max_budget: if own.model_max_budget.is_empty() {
            t.model_max_budget.clone()
        } else {
            own.model_max_budget.clone()
        },
        model_rpm_limit: if own.model_rpm_limit.is_empty() {
            t.model_rpm_limit.clone()
        } else {
            own.model_rpm_limit.clone()
        },
        model_tpm_limit: if own.model_tpm_limit.is_empty() {
            t.model_tpm_limit.clone()
        } else {
            own.model_tpm_limit.clone()
        },
        mcp_rpm_limit: if own.mcp_rpm_limit.is_empty() { t.mcp_rpm_limit.clone() } else { own.mcp_rpm_limit.clone() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn fixed_periods_count_from_the_anchor() {
        let anchor = t("2026-01-01T00:00:10Z");
        let d = Some(Period::Fixed(Duration::from_secs(60)));
        let (start, next) = period_bounds(anchor, d, t("2026-01-01T00:02:15Z"));
        assert_eq!(start, t("2026-01-01T00:02:10Z").timestamp_micros());
        assert_eq!(next, Some(t("2026-01-01T00:03:10Z")));
        assert_eq!(period_bounds(anchor, None, t("2030-01-01T00:00:00Z")), (0, None));
    }

    #[test]
    fn monthly_periods_are_calendar_months() {
        let anchor = t("2026-01-31T12:00:00Z");
        let (start, next) = period_bounds(anchor, Some(Period::Months(1)), t("2026-03-15T00:00:00Z"));
        assert_eq!(start, t("2026-02-28T12:00:00Z").timestamp_micros());
        assert_eq!(next, Some(t("2026-03-31T12:00:00Z")));
    }
}
