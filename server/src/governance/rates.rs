//! Which rate limits a call answers to: `rpm_limit`, `tpm_limit` and
//! `max_parallel_requests` of the key (and its tier), user, team member, team, organization,
//! customer and tags; `model_rpm_limit` / `model_tpm_limit` of key and team; the deployment's
//! `rpm` / `tpm`; and the per-instance cap `general_settings.global_max_parallel_requests`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::access::glob;
use super::budgets::with_tier;
use super::identity::Identity;
use crate::limits::rates::RateScope;
use crate::router::Deployment;
use crate::tenancy::{Limits, Tag, TeamMemberSettings};

fn from_limits(id: String, label: String, l: &Limits) -> RateScope {
    RateScope { id, label, rpm: l.rpm_limit, tpm: l.tpm_limit, parallel: l.max_parallel_requests }
}

fn per_model(
    out: &mut Vec<RateScope>,
    kind: &str,
    id: &str,
    what: &str,
    rpm: &BTreeMap<String, u64>,
    tpm: &BTreeMap<String, u64>,
    model: &str,
) {
    let mut patterns: Vec<&String> = rpm.keys().chain(tpm.keys()).filter(|p| glob(p, model)).collect();
    patterns.sort();
    patterns.dedup();
    for p in patterns {
        out.push(RateScope {
            id: format!("{kind}:{id}:{p}"),
            label: format!("{what} {id:?} for model {p:?}"),
            rpm: rpm.get(p).copied(),
            tpm: tpm.get(p).copied(),
            parallel: None,
        });
    }
}

/// Every rate-limited scope of a call.
pub fn scopes(
    identity: Option<&Identity>,
    customer: Option<(&str, &Limits)>,
    tags: &[(String, Option<Arc<Tag>>)],
    model: &str,
    deployment: Option<&Deployment>,
    global_parallel: Option<u64>,
) -> Vec<RateScope> {
    let mut out = Vec::new();
    if let Some(i) = identity {
        let k = &i.key;
        let limits = with_tier(&k.limits, i.key_tier.as_ref().map(|t| &t.limits));
        out.push(from_limits(
            format!("key:{}", k.key_id),
            format!("key {:?}", k.key_alias.as_deref().unwrap_or(&k.key_id)),
            &limits,
        ));
        per_model(&mut out, "key_model", &k.key_id, "key", &limits.model_rpm_limit, &limits.model_tpm_limit, model);
        if let Some(u) = &i.user {
            let limits = with_tier(&u.limits, i.user_tier.as_ref().map(|t| &t.limits));
            out.push(from_limits(format!("user:{}", u.user_id), format!("user {:?}", u.user_id), &limits));
        }
        if let Some(t) = &i.team {
            let limits = with_tier(&t.limits, i.team_tier.as_ref().map(|x| &x.limits));
            out.push(from_limits(
                format!("team:{}", t.team_id),
                format!("team {:?}", t.team_alias.as_deref().unwrap_or(&t.team_id)),
                &limits,
            ));
            per_model(
                &mut out,
                "team_model",
                &t.team_id,
                "team",
                &limits.model_rpm_limit,
                &limits.model_tpm_limit,
                model,
            );
            if let (Some(u), Some(m)) = (&i.user, &i.member) {
                let s: TeamMemberSettings = serde_json::from_value(m.data.clone()).unwrap_or_default();
                out.push(RateScope {
                    id: format!("team_member:{}:{}", t.team_id, u.user_id),
                    label: format!("user {:?} in team {:?}", u.user_id, t.team_id),
                    rpm: s.rpm_limit,
                    tpm: s.tpm_limit,
                    parallel: None,
                });
            }
        }
        if let Some(o) = &i.org {
            let limits = with_tier(&o.limits, i.org_tier.as_ref().map(|x| &x.limits));
            out.push(from_limits(
                format!("org:{}", o.organization_id),
                format!("organization {:?}", o.organization_alias),
                &limits,
            ));
        }
    }
    if let Some((id, limits)) = customer {
        out.push(from_limits(format!("customer:{id}"), format!("customer {id:?}"), limits));
    }
    for (name, record) in tags {
        if let Some(t) = record {
            out.push(from_limits(format!("tag:{name}"), format!("tag {name:?}"), &t.limits));
        }
    }
    if let Some(d) = deployment.map(|d| &d.config)
        && (d.rpm.is_some() || d.tpm.is_some())
    {
        out.push(RateScope {
            id: format!("deployment:{}", d.id),
            label: format!("deployment {:?}", d.id),
            rpm: d.rpm,
            tpm: d.tpm,
            parallel: None,
        });
    }
    if let Some(max) = global_parallel {
        out.push(RateScope {
            id: "instance".into(),
            label: "this gateway instance".into(),
            rpm: None,
            tpm: None,
            parallel: Some(max),
        });
    }
    out.retain(RateScope::is_limited);
    out
}
