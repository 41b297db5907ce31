//! Governance as code: the `budgets`, `organizations`, `users`, `teams`, `virtual_keys` and
//! `customers` sections of config.yaml, read into the resources they declare.
//!
//! Reading checks each entry alone (fields, numbers, durations, roles) and then the file as a
//! whole (ids unique, every reference between entries resolves), collecting every problem
//! with its path like the rest of the config reader. `reconcile` then turns the declared
//! resources into the running state. Declared resources may only refer to each other: a
//! config-managed team never depends on an API-made organization an admin could delete.
//!
//! A key's secret is an `os.environ/NAME` reference (resolved before this runs, and recorded
//! by the reader) or a `sha256:<hex>` hash of it; a plain secret is accepted with a warning
//! naming its line, and is never echoed.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::reader::{Reader, join};
use crate::governance::duration::parse_period;
use crate::pricing::Nanos;
use crate::store::Scope;
use crate::tenancy::{
    BudgetTier, Customer, KeyRecord, Limits, Meta, ModelBudget, OrgRole, Organization, Team, TeamMemberSettings,
    TeamRole, User, UserRole,
};

/// What config-managed resources carry in `managed_by`.
pub const MANAGED_BY: &str = "config";

/// The prefix of a key given as the SHA-256 of its secret.
pub const HASH_PREFIX: &str = "sha256:";

/// Everything a file declares. Resources are built with default [`Meta`]; the reconciler
/// takes spend, versions and times from the store.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    /// Whether the file has any governance section at all (an empty list counts). A file
    /// without one leaves config-managed resources as they are, so a file meant for models
    /// only cannot delete what another file declared.
    pub present: bool,
    pub budgets: Vec<BudgetTier>,
    pub organizations: Vec<Organization>,
    pub users: Vec<User>,
    pub teams: Vec<Team>,
    pub keys: Vec<KeyRecord>,
    pub customers: Vec<Customer>,
    /// Team and organization memberships, from `members_with_roles` and `members`.
    pub members: Vec<DeclaredMember>,
}

/// One declared membership.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredMember {
    pub scope: Scope,
    pub scope_id: String,
    pub user_id: String,
    pub role: String,
    /// The membership's settings (`max_budget_in_team`, …), as the store keeps them.
    pub settings: Value,
}

/// `general_settings.config_managed_fields`: what the API does with a config-managed resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedFields {
    /// Changes through the API are refused, naming the file (the default).
    Locked,
    /// Changes through the API are allowed and overwritten by the next apply.
    Advisory,
}

pub const SECTIONS: &[&str] = &["budgets", "organizations", "users", "teams", "virtual_keys", "customers"];

const LIMIT_KEYS: &[&str] = &[
    "max_budget",
    "soft_budget",
    "budget_duration",
    "tpm_limit",
    "tpm",
    "rpm_limit",
    "rpm",
    "max_parallel_requests",
    "model_max_budget",
    "model_rpm_limit",
    "model_tpm_limit",
    "mcp_rpm_limit",
];
const BUDGET_KEYS: &[&str] = &["budget_id"];
const ORG_KEYS: &[&str] = &[
    "organization_id",
    "organization_alias",
    "models",
    "budget_id",
    "metadata",
    "tags",
    "blocked",
    "members",
    "object_permission",
];
const ORG_MEMBER_KEYS: &[&str] = &["user_id", "role"];
const USER_KEYS: &[&str] = &[
    "user_id",
    "user_email",
    "user_alias",
    "user_role",
    "models",
    "budget_id",
    "metadata",
    "tags",
    "blocked",
    "object_permission",
];
const TEAM_KEYS: &[&str] = &[
    "team_id",
    "team_alias",
    "organization_id",
    "models",
    "budget_id",
    "metadata",
    "tags",
    "blocked",
    "model_aliases",
    "team_member_permissions",
    "members_with_roles",
    "object_permission",
];
const TEAM_MEMBER_KEYS: &[&str] =
    &["user_id", "role", "max_budget_in_team", "budget_duration", "tpm_limit", "rpm_limit", "allowed_models"];
const KEY_KEYS: &[&str] = &[
    "api_key",
    "key_id",
    "key_alias",
    "models",
    "budget_id",
    "metadata",
    "tags",
    "blocked",
    "user_id",
    "team_id",
    "organization_id",
    "expires_at",
    "object_permission",
];
const CUSTOMER_KEYS: &[&str] =
    &["user_id", "alias", "blocked", "budget_id", "models", "allowed_model_region", "default_model", "metadata"];

/// A key whose secret is written in the file itself.
pub struct PlainSecret {
    pub path: String,
    pub secret: String,
}

/// Reads the governance sections of the file's root mapping.
pub fn read(root: &Map<String, Value>, env_refs: &HashSet<String>, r: &mut Reader) -> (Declared, Vec<PlainSecret>) {
    let mut members = Vec::new();
    let mut plain = Vec::new();
    let mut d = Declared {
        present: SECTIONS.iter().any(|s| root.contains_key(*s)),
        budgets: section(root, "budgets", r, read_budget),
        organizations: section(root, "organizations", r, |p, e, r| read_org(p, e, &mut members, r)),
        users: section(root, "users", r, read_user),
        teams: section(root, "teams", r, |p, e, r| read_team(p, e, &mut members, r)),
        keys: section(root, "virtual_keys", r, |p, e, r| read_key(p, e, env_refs, &mut plain, r)),
        customers: section(root, "customers", r, read_customer),
        members: Vec::new(),
    };
    d.members = members;
    check_references(&mut d, r);
    (d, plain)
}

/// Reads each entry of one section with `read`, naming it `section[i]`.
fn section<T>(
    root: &Map<String, Value>,
    name: &str,
    r: &mut Reader,
    mut read: impl FnMut(&str, &Map<String, Value>, &mut Reader) -> Option<T>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, entry) in entries(root, name, r) {
        if let Some(item) = read(&format!("{name}[{i}]"), entry, r) {
            out.push(item);
        }
    }
    out
}

fn entries<'a>(root: &'a Map<String, Value>, section: &str, r: &mut Reader) -> Vec<(usize, &'a Map<String, Value>)> {
    let Some(list) = root.get(section).and_then(|v| r.list(section, v)) else { return Vec::new() };
    list.iter().enumerate().filter_map(|(i, v)| r.object(&format!("{section}[{i}]"), v).map(|m| (i, m))).collect()
}

/// Unknown fields in a governance entry are problems, not warnings: a misspelt budget that
/// silently does not apply is a money bug.
fn known_keys(path: &str, map: &Map<String, Value>, known: &[&[&str]], r: &mut Reader) {
    for key in map.keys() {
        if !known.iter().any(|k| k.contains(&key.as_str())) {
            r.problem(join(path, key), "unknown field; this version of Ferryman does not support it");
        }
    }
}

/// A required id: non-empty, at most 256 characters, without `:` or spaces.
fn id(path: &str, map: &Map<String, Value>, key: &str, r: &mut Reader) -> Option<String> {
    let v = r.required_string(path, map, key)?;
    check_id(&join(path, key), &v, r);
    Some(v)
}

/// The rule the store holds every created id to.
fn check_id(path: &str, v: &str, r: &mut Reader) {
    if let Some(problem) = crate::store::bounds::id_problem(v) {
        r.problem(path, format!("{v:?}: {problem}"));
    }
}

fn optional_id(path: &str, map: &Map<String, Value>, key: &str, r: &mut Reader) -> Option<String> {
    let v = r.string(path, map, key)?;
    check_id(&join(path, key), &v, r);
    Some(v)
}

fn boolean(path: &str, map: &Map<String, Value>, key: &str, r: &mut Reader) -> bool {
    match map.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            r.problem(join(path, key), "expected true or false");
            false
        }
    }
}

fn strings(path: &str, map: &Map<String, Value>, key: &str, r: &mut Reader) -> Vec<String> {
    let p = join(path, key);
    let Some(items) = map.get(key).and_then(|v| r.list(&p, v)) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if !s.trim().is_empty() => out.push(s.clone()),
            _ => r.problem(format!("{p}[{i}]"), "expected a non-empty string"),
        }
    }
    out
}

/// `object_permission`, checked like the API checks it.
fn object_permission(path: &str, map: &Map<String, Value>, r: &mut Reader) -> crate::tenancy::ObjectPermission {
    let p = join(path, "object_permission");
    let Some(v) = map.get("object_permission").filter(|v| !v.is_null()) else { return Default::default() };
    match serde_json::from_value::<crate::tenancy::ObjectPermission>(v.clone()) {
        Ok(op) => {
            if let Err(e) = crate::admin::fields::check_object_permission(&op) {
                r.problem(&p, e.message.trim_start_matches("object_permission").trim_start_matches(['.', ':', ' ']));
            }
            op
        }
        Err(e) => {
            r.problem(&p, e.to_string());
            Default::default()
        }
    }
}

fn metadata(path: &str, map: &Map<String, Value>, r: &mut Reader) -> Map<String, Value> {
    map.get("metadata").and_then(|v| r.object(&join(path, "metadata"), v)).cloned().unwrap_or_default()
}

fn usd(path: &str, map: &Map<String, Value>, key: &str, r: &mut Reader) -> Option<Nanos> {
    let n = r.decimal(path, map, key, 9)?;
    match i64::try_from(n) {
        Ok(v) => Some(Nanos(v)),
        Err(_) => {
            r.problem(join(path, key), "amount is too large");
            None
        }
    }
}

fn duration(path: &str, map: &Map<String, Value>, key: &str, r: &mut Reader) -> Option<String> {
    let d = r.string(path, map, key)?;
    if let Err(e) = parse_period(&d) {
        r.problem(join(path, key), e);
    }
    Some(d)
}

/// A limit LiteLLM's files spell two ways (`tpm` and `tpm_limit`).
fn either_u64(path: &str, map: &Map<String, Value>, long: &str, short: &str, r: &mut Reader) -> Option<u64> {
    if map.get(long).is_some_and(|v| !v.is_null()) && map.get(short).is_some_and(|v| !v.is_null()) {
        r.problem(join(path, short), format!("give {long} or {short}, not both"));
    }
    r.u64(path, map, long).or_else(|| r.u64(path, map, short))
}

fn model_counts(path: &str, map: &Map<String, Value>, key: &str, r: &mut Reader) -> BTreeMap<String, u64> {
    let p = join(path, key);
    let Some(m) = map.get(key).and_then(|v| r.object(&p, v)) else { return BTreeMap::new() };
    m.keys().filter_map(|model| r.u64(&p, m, model).map(|n| (model.clone(), n))).collect()
}

fn read_limits(path: &str, map: &Map<String, Value>, r: &mut Reader) -> Limits {
    let mut limits = Limits {
        max_budget: usd(path, map, "max_budget", r),
        soft_budget: usd(path, map, "soft_budget", r),
        budget_duration: duration(path, map, "budget_duration", r),
        tpm_limit: either_u64(path, map, "tpm_limit", "tpm", r),
        rpm_limit: either_u64(path, map, "rpm_limit", "rpm", r),
        max_parallel_requests: r.u64(path, map, "max_parallel_requests"),
        model_rpm_limit: model_counts(path, map, "model_rpm_limit", r),
        model_tpm_limit: model_counts(path, map, "model_tpm_limit", r),
        mcp_rpm_limit: model_counts(path, map, "mcp_rpm_limit", r),
        ..Limits::default()
    };
    let p = join(path, "model_max_budget");
    if let Some(m) = map.get("model_max_budget").and_then(|v| r.object(&p, v)) {
        for (model, entry) in m {
            let ep = join(&p, model);
            let Some(e) = r.object(&ep, entry) else { continue };
            known_keys(&ep, e, &[&["budget_limit", "time_period"]], r);
            let limit = usd(&ep, e, "budget_limit", r);
            if limit.is_none() && !e.contains_key("budget_limit") {
                r.problem(join(&ep, "budget_limit"), "is required");
            }
            let time_period = duration(&ep, e, "time_period", r);
            if let Some(budget_limit) = limit {
                limits.model_max_budget.insert(model.clone(), ModelBudget { budget_limit, time_period });
            }
        }
    }
    if let (Some(soft), Some(max)) = (limits.soft_budget, limits.max_budget)
        && soft > max
    {
        r.problem(join(path, "soft_budget"), format!("{soft} USD is above max_budget {max} USD"));
    }
    limits
}

fn read_budget(path: &str, map: &Map<String, Value>, r: &mut Reader) -> Option<BudgetTier> {
    known_keys(path, map, &[BUDGET_KEYS, LIMIT_KEYS], r);
    let budget_id = id(path, map, "budget_id", r);
    let limits = read_limits(path, map, r);
    Some(BudgetTier {
        budget_id: budget_id?,
        limits,
        created_by: managed(),
        managed_by: managed(),
        meta: Meta::default(),
    })
}

fn managed() -> Option<String> {
    Some(MANAGED_BY.to_owned())
}

fn read_org(
    path: &str,
    map: &Map<String, Value>,
    members: &mut Vec<DeclaredMember>,
    r: &mut Reader,
) -> Option<Organization> {
    known_keys(path, map, &[ORG_KEYS, LIMIT_KEYS], r);
    let organization_id = id(path, map, "organization_id", r);
    let org = Organization {
        organization_alias: r
            .string(path, map, "organization_alias")
            .or_else(|| organization_id.clone())
            .unwrap_or_default(),
        models: strings(path, map, "models", r),
        limits: read_limits(path, map, r),
        budget_id: optional_id(path, map, "budget_id", r),
        metadata: metadata(path, map, r),
        tags: strings(path, map, "tags", r),
        object_permission: object_permission(path, map, r),
        blocked: boolean(path, map, "blocked", r),
        created_by: managed(),
        updated_by: managed(),
        managed_by: managed(),
        meta: Meta::default(),
        organization_id: organization_id?,
    };
    let p = join(path, "members");
    if let Some(list) = map.get("members").and_then(|v| r.list(&p, v)) {
        for (i, m) in list.iter().enumerate() {
            let mp = format!("{p}[{i}]");
            let Some(m) = r.object(&mp, m) else { continue };
            known_keys(&mp, m, &[ORG_MEMBER_KEYS], r);
            let user_id = id(&mp, m, "user_id", r);
            let role = r.string(&mp, m, "role").unwrap_or_else(|| "internal_user".to_owned());
            if OrgRole::parse(&role).is_none() {
                r.problem(
                    join(&mp, "role"),
                    format!("{role:?} is not an organization role (org_admin, internal_user, internal_user_viewer)"),
                );
            }
            if let Some(user_id) = user_id {
                members.push(DeclaredMember {
                    scope: Scope::Org,
                    scope_id: org.organization_id.clone(),
                    user_id,
                    role,
                    settings: Value::Object(Map::new()),
                });
            }
        }
    }
    Some(org)
}

fn read_user(path: &str, map: &Map<String, Value>, r: &mut Reader) -> Option<User> {
    known_keys(path, map, &[USER_KEYS, LIMIT_KEYS], r);
    let user_id = id(path, map, "user_id", r);
    let role = r.string(path, map, "user_role").unwrap_or_else(|| "internal_user".to_owned());
    let user_role = UserRole::parse(&role).unwrap_or_else(|| {
        let all: Vec<&str> = UserRole::ALL.iter().map(|r| r.as_str()).collect();
        r.problem(join(path, "user_role"), format!("{role:?} is not a user role ({})", all.join(", ")));
        UserRole::InternalUser
    });
    let user_email = r.string(path, map, "user_email");
    if let Some(e) = &user_email
        && !e.contains('@')
    {
        r.problem(join(path, "user_email"), format!("{e:?} is not an email address"));
    }
    Some(User {
        user_email,
        user_alias: r.string(path, map, "user_alias"),
        user_role,
        models: strings(path, map, "models", r),
        limits: read_limits(path, map, r),
        budget_id: optional_id(path, map, "budget_id", r),
        metadata: metadata(path, map, r),
        tags: strings(path, map, "tags", r),
        object_permission: object_permission(path, map, r),
        blocked: boolean(path, map, "blocked", r),
        created_by: managed(),
        managed_by: managed(),
        meta: Meta::default(),
        user_id: user_id?,
    })
}

fn read_team(path: &str, map: &Map<String, Value>, members: &mut Vec<DeclaredMember>, r: &mut Reader) -> Option<Team> {
    known_keys(path, map, &[TEAM_KEYS, LIMIT_KEYS], r);
    let team_id = id(path, map, "team_id", r);
    let permissions = strings(path, map, "team_member_permissions", r);
    for (i, p) in permissions.iter().enumerate() {
        if !crate::admin::teams::MEMBER_PERMISSIONS.contains(&p.as_str()) {
            r.problem(
                format!("{path}.team_member_permissions[{i}]"),
                format!("{p:?} is not a grantable route ({})", crate::admin::teams::MEMBER_PERMISSIONS.join(", ")),
            );
        }
    }
    let ap = join(path, "model_aliases");
    let mut model_aliases = BTreeMap::new();
    if let Some(m) = map.get("model_aliases").and_then(|v| r.object(&ap, v)) {
        for alias in m.keys() {
            if let Some(target) = r.required_string(&ap, m, alias) {
                model_aliases.insert(alias.clone(), target);
            }
        }
    }
    let team = Team {
        team_alias: r.string(path, map, "team_alias"),
        organization_id: optional_id(path, map, "organization_id", r),
        models: strings(path, map, "models", r),
        limits: read_limits(path, map, r),
        budget_id: optional_id(path, map, "budget_id", r),
        metadata: metadata(path, map, r),
        tags: strings(path, map, "tags", r),
        object_permission: object_permission(path, map, r),
        blocked: boolean(path, map, "blocked", r),
        model_aliases,
        team_member_permissions: permissions,
        created_by: managed(),
        updated_by: managed(),
        managed_by: managed(),
        meta: Meta::default(),
        team_id: team_id?,
    };
    let p = join(path, "members_with_roles");
    if let Some(list) = map.get("members_with_roles").and_then(|v| r.list(&p, v)) {
        for (i, m) in list.iter().enumerate() {
            let mp = format!("{p}[{i}]");
            let Some(m) = r.object(&mp, m) else { continue };
            known_keys(&mp, m, &[TEAM_MEMBER_KEYS], r);
            let user_id = id(&mp, m, "user_id", r);
            let role = r.string(&mp, m, "role").unwrap_or_else(|| "user".to_owned());
            if TeamRole::parse(&role).is_none() {
                r.problem(join(&mp, "role"), format!("{role:?} is not a team role (admin, user)"));
            }
            let settings = TeamMemberSettings {
                max_budget_in_team: usd(&mp, m, "max_budget_in_team", r),
                budget_duration: duration(&mp, m, "budget_duration", r),
                tpm_limit: r.u64(&mp, m, "tpm_limit"),
                rpm_limit: r.u64(&mp, m, "rpm_limit"),
                allowed_models: strings(&mp, m, "allowed_models", r),
            };
            if let Some(user_id) = user_id {
                members.push(DeclaredMember {
                    scope: Scope::Team,
                    scope_id: team.team_id.clone(),
                    user_id,
                    role,
                    settings: serde_json::to_value(&settings).unwrap_or(Value::Null),
                });
            }
        }
    }
    Some(team)
}

fn read_key(
    path: &str,
    map: &Map<String, Value>,
    env_refs: &HashSet<String>,
    plain: &mut Vec<PlainSecret>,
    r: &mut Reader,
) -> Option<KeyRecord> {
    known_keys(path, map, &[KEY_KEYS, LIMIT_KEYS], r);
    if map.contains_key("duration") {
        r.problem(join(path, "duration"), "a declared key takes expires_at (a date), not a duration");
    }
    let secret_path = join(path, "api_key");
    // An unset `os.environ/NAME` was reported when it was resolved; once is enough.
    let unresolved = r.problems.iter().any(|p| p.path == secret_path);
    let secret = if unresolved { None } else { r.required_string(path, map, "api_key") };
    let (token_hash, key_name) = match secret {
        None => (None, String::new()),
        Some(value) => {
            if let Some(hex) = value.strip_prefix(HASH_PREFIX) {
                let hex = hex.to_ascii_lowercase();
                if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    let name = format!("{HASH_PREFIX}{}...", &hex[..8]);
                    (Some(hex), name)
                } else {
                    r.problem(&secret_path, "a sha256: hash must be 64 hexadecimal digits");
                    (None, String::new())
                }
            } else if !value.starts_with("sk-") || value.len() < 16 || !value.bytes().all(|b| b.is_ascii_graphic()) {
                // The value is not shown: it may be a secret.
                r.problem(
                    &secret_path,
                    "a key must start with \"sk-\", be at least 16 characters and contain no spaces",
                );
                (None, String::new())
            } else {
                if !env_refs.contains(&secret_path) {
                    plain.push(PlainSecret { path: secret_path.clone(), secret: value.clone() });
                }
                (Some(crate::governance::identity::hash_secret(&value)), crate::admin::keys::mask(&value))
            }
        }
    };
    let key_id = optional_id(path, map, "key_id", r);
    let expires_at = r.string(path, map, "expires_at").and_then(|t| match DateTime::parse_from_rfc3339(&t) {
        Ok(d) => Some(d.with_timezone(&Utc)),
        Err(_) => {
            r.problem(join(path, "expires_at"), format!("{t:?} is not an RFC 3339 time, e.g. 2027-01-31T00:00:00Z"));
            None
        }
    });
    let key = KeyRecord {
        key_id: String::new(),
        token_hash: String::new(),
        key_name,
        key_alias: r.string(path, map, "key_alias"),
        models: strings(path, map, "models", r),
        limits: read_limits(path, map, r),
        budget_id: optional_id(path, map, "budget_id", r),
        metadata: metadata(path, map, r),
        tags: strings(path, map, "tags", r),
        object_permission: object_permission(path, map, r),
        expires_at,
        blocked: boolean(path, map, "blocked", r),
        user_id: optional_id(path, map, "user_id", r),
        team_id: optional_id(path, map, "team_id", r),
        organization_id: optional_id(path, map, "organization_id", r),
        created_by: managed(),
        rotation_count: 0,
        last_rotated_at: None,
        managed_by: managed(),
        meta: Meta::default(),
    };
    // A key whose secret was refused is still read, so its references are checked too; the
    // file is refused anyway.
    let token_hash = token_hash.unwrap_or_default();
    // Without a key_id the identity follows the secret: a new secret is a new key.
    let key_id = key_id.unwrap_or_else(|| format!("config-{}", token_hash.get(..16).unwrap_or_default()));
    Some(KeyRecord { key_id, token_hash, ..key })
}

fn read_customer(path: &str, map: &Map<String, Value>, r: &mut Reader) -> Option<Customer> {
    known_keys(path, map, &[CUSTOMER_KEYS, LIMIT_KEYS], r);
    let user_id = id(path, map, "user_id", r);
    Some(Customer {
        alias: r.string(path, map, "alias"),
        blocked: boolean(path, map, "blocked", r),
        budget_id: optional_id(path, map, "budget_id", r),
        limits: read_limits(path, map, r),
        models: strings(path, map, "models", r),
        allowed_model_region: r.string(path, map, "allowed_model_region"),
        default_model: r.string(path, map, "default_model"),
        metadata: metadata(path, map, r),
        managed_by: managed(),
        meta: Meta::default(),
        user_id: user_id?,
    })
}

/// Ids unique per section, aliases and secrets unique, and every reference declared in the
/// same file. A key's organization follows its team's.
fn check_references(d: &mut Declared, r: &mut Reader) {
    fn unique<'a>(section: &str, field: &str, ids: impl Iterator<Item = Option<&'a str>>, r: &mut Reader) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, id) in ids.enumerate() {
            if let Some(id) = id
                && let Some(first) = seen.insert(id, i)
            {
                // A secret's hash is not shown either.
                let what = if field == "api_key" { "the same secret".to_owned() } else { format!("{id:?}") };
                r.problem(
                    format!("{section}[{i}].{field}"),
                    format!("{what} is already declared by {section}[{first}]"),
                );
            }
        }
    }
    unique("budgets", "budget_id", d.budgets.iter().map(|b| Some(b.budget_id.as_str())), r);
    unique("organizations", "organization_id", d.organizations.iter().map(|o| Some(o.organization_id.as_str())), r);
    unique("users", "user_id", d.users.iter().map(|u| Some(u.user_id.as_str())), r);
    unique("users", "user_email", d.users.iter().map(|u| u.user_email.as_deref()), r);
    unique("teams", "team_id", d.teams.iter().map(|t| Some(t.team_id.as_str())), r);
    unique("virtual_keys", "key_id", d.keys.iter().map(|k| Some(k.key_id.as_str())), r);
    unique("virtual_keys", "api_key", d.keys.iter().map(|k| Some(k.token_hash.as_str()).filter(|h| !h.is_empty())), r);
    unique("virtual_keys", "key_alias", d.keys.iter().map(|k| k.key_alias.as_deref()), r);
    unique("customers", "user_id", d.customers.iter().map(|c| Some(c.user_id.as_str())), r);

    let budgets: HashSet<String> = d.budgets.iter().map(|b| b.budget_id.clone()).collect();
    let orgs: HashSet<String> = d.organizations.iter().map(|o| o.organization_id.clone()).collect();
    let users: HashSet<String> = d.users.iter().map(|u| u.user_id.clone()).collect();
    let team_orgs: HashMap<String, Option<String>> =
        d.teams.iter().map(|t| (t.team_id.clone(), t.organization_id.clone())).collect();
    fn missing(r: &mut Reader, path: String, what: &str, id: &str, known: bool) {
        if !known {
            r.problem(path, format!("no {what} {id:?} is declared in this file"));
        }
    }
    let budget_refs = d
        .organizations
        .iter()
        .map(|o| ("organizations", &o.budget_id))
        .enumerate()
        .chain(d.users.iter().map(|u| ("users", &u.budget_id)).enumerate())
        .chain(d.teams.iter().map(|t| ("teams", &t.budget_id)).enumerate())
        .chain(d.keys.iter().map(|k| ("virtual_keys", &k.budget_id)).enumerate())
        .chain(d.customers.iter().map(|c| ("customers", &c.budget_id)).enumerate());
    for (i, (section, budget)) in budget_refs {
        if let Some(b) = budget {
            missing(r, format!("{section}[{i}].budget_id"), "budget", b, budgets.contains(b));
        }
    }
    for (i, t) in d.teams.iter().enumerate() {
        if let Some(o) = &t.organization_id {
            missing(r, format!("teams[{i}].organization_id"), "organization", o, orgs.contains(o));
        }
    }
    for (section, scope) in [("organizations", Scope::Org), ("teams", Scope::Team)] {
        let field = if scope == Scope::Org { "members" } else { "members_with_roles" };
        let mut per_scope: HashMap<&str, usize> = HashMap::new();
        let owners: Vec<&str> = match scope {
            Scope::Org => d.organizations.iter().map(|o| o.organization_id.as_str()).collect(),
            Scope::Team => d.teams.iter().map(|t| t.team_id.as_str()).collect(),
        };
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        for m in d.members.iter().filter(|m| m.scope == scope) {
            let owner = owners.iter().position(|o| *o == m.scope_id).unwrap_or(0);
            let n = per_scope.entry(m.scope_id.as_str()).or_insert(0);
            let path = format!("{section}[{owner}].{field}[{n}].user_id");
            *n += 1;
            missing(r, path.clone(), "user", &m.user_id, users.contains(&m.user_id));
            if !seen.insert((m.scope_id.as_str(), m.user_id.as_str())) {
                r.problem(path, format!("user {:?} is listed twice", m.user_id));
            }
        }
    }
    for (i, k) in d.keys.iter_mut().enumerate() {
        if let Some(u) = &k.user_id {
            missing(r, format!("virtual_keys[{i}].user_id"), "user", u, users.contains(u));
        }
        let team_org = match &k.team_id {
            Some(t) => match team_orgs.get(t) {
                Some(o) => o.clone(),
                None => {
                    missing(r, format!("virtual_keys[{i}].team_id"), "team", t, false);
                    None
                }
            },
            None => None,
        };
        match (&team_org, &k.organization_id) {
            (Some(from_team), Some(given)) if from_team != given => r.problem(
                format!("virtual_keys[{i}].organization_id"),
                format!("team {:?} belongs to organization {from_team:?}", k.team_id.clone().unwrap_or_default()),
            ),
            (Some(from_team), None) => k.organization_id = Some(from_team.clone()),
            (None, Some(given)) => {
                missing(r, format!("virtual_keys[{i}].organization_id"), "organization", given, orgs.contains(given));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Config;

    const FILE: &str = r#"
budgets:
  - budget_id: starter
    max_budget: 5
    budget_duration: 30d
organizations:
  - organization_id: acme
    members:
      - user_id: alice
        role: org_admin
users:
  - user_id: alice
    user_email: alice@acme.test
    user_role: proxy_admin_viewer
teams:
  - team_id: t1
    organization_id: acme
    max_budget: 100.5
    soft_budget: 80
    members_with_roles:
      - user_id: alice
        role: admin
        max_budget_in_team: 10
virtual_keys:
  - api_key: os.environ/T1_KEY
    team_id: t1
    tpm: 1000
    rpm_limit: 10
    model_max_budget:
      demo: {budget_limit: 0.5, time_period: 1d}
  - api_key: sk-plain-secret-0123456789
    key_id: plain
    budget_id: starter
customers:
  - user_id: c1
    budget_id: starter
"#;

    fn env() -> HashMap<String, String> {
        HashMap::from([("T1_KEY".to_owned(), "sk-from-the-environment-1".to_owned())])
    }

    #[test]
    fn reads_every_section_into_resources() {
        let loaded = Config::parse(FILE, &env()).unwrap();
        let d = &loaded.config.governance;
        assert_eq!(d.budgets[0].limits.max_budget, Some(Nanos(5_000_000_000)));
        assert_eq!(d.organizations[0].organization_alias, "acme");
        assert_eq!(d.users[0].user_role, UserRole::ProxyAdminViewer);
        assert_eq!(d.teams[0].limits.max_budget, Some(Nanos(100_500_000_000)));
        let from_env = &d.keys[0];
        assert_eq!(from_env.token_hash, crate::governance::identity::hash_secret("sk-from-the-environment-1"));
        assert_eq!(from_env.key_id, format!("config-{}", &from_env.token_hash[..16]));
        assert_eq!(from_env.organization_id.as_deref(), Some("acme"), "a key's organization follows its team");
        assert_eq!((from_env.limits.tpm_limit, from_env.limits.rpm_limit), (Some(1000), Some(10)));
        assert_eq!(from_env.limits.model_max_budget["demo"].budget_limit, Nanos(500_000_000));
        assert_eq!(from_env.managed_by.as_deref(), Some(MANAGED_BY));
        assert_eq!(d.keys[1].key_id, "plain");
        assert_eq!(d.customers[0].budget_id.as_deref(), Some("starter"));
        let members: Vec<(Scope, &str, &str)> =
            d.members.iter().map(|m| (m.scope, m.scope_id.as_str(), m.role.as_str())).collect();
        assert_eq!(members, [(Scope::Org, "acme", "org_admin"), (Scope::Team, "t1", "admin")]);
        assert_eq!(d.members[1].settings["max_budget_in_team"], 10_000_000_000i64);
        // Only the plain secret is warned about, by line, without the secret.
        let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let line = FILE.lines().position(|l| l.contains("sk-plain-secret")).unwrap() + 1;
        assert!(
            warnings[0].starts_with(&format!("virtual_keys[1].api_key: line {line}: a plain secret")),
            "{warnings:?}"
        );
        assert!(!warnings[0].contains("sk-plain"));
    }

    #[test]
    fn hashed_secrets_are_taken_as_they_are() {
        let hash = "AB".repeat(32);
        let text = format!("virtual_keys:\n  - api_key: sha256:{hash}\n  - api_key: sha256:1234\n");
        let err = Config::parse(&text, &env()).unwrap_err();
        let problems: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems, ["virtual_keys[1].api_key: a sha256: hash must be 64 hexadecimal digits"]);
        let loaded = Config::parse(&format!("virtual_keys:\n  - api_key: sha256:{hash}\n"), &env()).unwrap();
        assert_eq!(loaded.config.governance.keys[0].token_hash, "ab".repeat(32));
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn a_secret_written_in_the_file_is_plain_however_it_is_spelt() {
        let text = "environment_variables:\n  FILE_KEY: sk-written-in-the-file-1\nvirtual_keys:\n  - api_key: os.environ/FILE_KEY\n  - api_key: os.environ/UNSET_VAR:-sk-default-in-the-file-2\n  - api_key: os.environ/T1_KEY\n";
        let loaded = Config::parse(text, &env()).unwrap();
        let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("virtual_keys[0].api_key: line 2: a plain secret"), "{warnings:?}");
        assert!(warnings[1].starts_with("virtual_keys[1].api_key: line 5: a plain secret"), "{warnings:?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
users:
  - user_id: u1
  - user_id: u1
    user_email: not-an-email
  - user_role: god
teams:
  - team_id: "has space"
    organization_id: nowhere
    max_budget: 1
    soft_budget: 2
    tpm: 5
    tpm_limit: 6
virtual_keys:
  - api_key: os.environ/UNSET_KEY_VAR
  - api_key: short
    duration: 30d
    expires_at: tomorrow
    budget_id: gold
    organization_id: acme
    team_id: "has space"
customers:
  - alias: nobody
"#;
        let err = Config::parse(text, &env()).unwrap_err();
        let problems: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        for expected in [
            "users[2].user_id: is required",
            "users[2].user_role: \"god\" is not a user role",
            "users[1].user_email: \"not-an-email\" is not an email address",
            "users[1].user_id: \"u1\" is already declared by users[0]",
            "teams[0].team_id: \"has space\": may not contain '/', '\\', '..', ':', spaces or control characters",
            "teams[0].soft_budget: 2 USD is above max_budget 1 USD",
            "teams[0].tpm: give tpm_limit or tpm, not both",
            "teams[0].organization_id: no organization \"nowhere\" is declared in this file",
            "virtual_keys[0].api_key: environment variable UNSET_KEY_VAR is not set",
            "virtual_keys[1].api_key: a key must start with \"sk-\"",
            "virtual_keys[1].duration: a declared key takes expires_at",
            "virtual_keys[1].expires_at: \"tomorrow\" is not an RFC 3339 time",
            "virtual_keys[1].budget_id: no budget \"gold\" is declared in this file",
            "customers[0].user_id: is required",
        ] {
            assert!(problems.iter().any(|p| p.starts_with(expected)), "missing {expected:?} in {problems:#?}");
        }
        assert!(!problems.iter().any(|p| p.contains("short")), "a rejected secret is not echoed: {problems:#?}");
    }
}
