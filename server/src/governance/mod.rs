//! Who is calling and whether they may: identity (keys, cached), then admission.
//!
//! Pure logic over [`crate::tenancy`] records, testable without a network. Admission is the
//! stage later governance (budgets, rate limits) slots into.

pub mod access;
pub mod budgets;
pub mod customers;
pub mod duration;
pub mod identity;
pub mod memo;
pub mod rates;
pub mod tags;

pub use identity::{Caller, IdentityCache};

use access::{AccessGroups, NO_DEFAULT_MODELS, Target, list_allows};

use crate::error::GatewayError;

/// The model a request names, after its team's aliases (`model_aliases`).
pub fn resolve_alias<'a>(caller: &'a Caller, requested: &'a str) -> &'a str {
    caller
        .identity()
        .and_then(|i| i.team.as_ref())
        .and_then(|t| t.model_aliases.get(requested))
        .map_or(requested, String::as_str)
}

fn denied(level: &'static str, who: &str, model: &str) -> GatewayError {
    let reason = match level {
        "key" => "key_model_access_denied",
        "team" => "team_model_access_denied",
        "user" => "user_model_access_denied",
        "organization" => "org_model_access_denied",
        _ => "customer_model_access_denied",
    };
    GatewayError::permission_denied(format!("{level} {who} may not use model {model:?}"))
        .with_reason(reason)
        .with_type(reason)
        .with_param("model")
}

/// Checks every allow-list that applies to the caller, from the key outwards: key, team,
/// user (personal keys only: a team key is governed by its team), organization. The first
/// level that refuses names itself in the error.
pub fn admit(caller: &Caller, target: &Target<'_>, groups: &AccessGroups) -> Result<(), GatewayError> {
    let Some(identity) = caller.identity() else { return Ok(()) };
    let model = target.name;
    let key = &identity.key;
    if list_allows(&key.models, target, groups) == Some(false) {
        return Err(denied("key", &key.key_id, model));
    }
    if let Some(team) = &identity.team
        && list_allows(&team.models, target, groups) == Some(false)
    {
        return Err(denied("team", &team.team_id, model));
    }
    if identity.team.is_none()
        && let Some(user) = &identity.user
    {
        let no_default = user.models.iter().any(|m| m == NO_DEFAULT_MODELS);
        if no_default || list_allows(&user.models, target, groups) == Some(false) {
            return Err(denied("user", &user.user_id, model));
        }
    }
    if let Some(org) = &identity.org
        && list_allows(&org.models, target, groups) == Some(false)
    {
        return Err(denied("organization", &org.organization_id, model));
    }
    Ok(())
}

/// The customer's own allow-list, when the request names a customer.
pub fn admit_customer(
    customer: &crate::tenancy::Customer,
    target: &Target<'_>,
    groups: &AccessGroups,
) -> Result<(), GatewayError> {
    if list_allows(&customer.models, target, groups) == Some(false) {
        return Err(denied("customer", &customer.user_id, target.name));
    }
    Ok(())
}
