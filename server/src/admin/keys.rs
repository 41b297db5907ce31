//! Virtual keys: generate, read, update, delete, regenerate (with a grace period), block,
//! unblock, list.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::fields::{LimitsFields, set, tristate};
use super::{Ctx, check_etag, check_models, deny, load_ref, non_empty, snapshot};
use crate::error::GatewayError;
use crate::governance::duration::parse_period;
use crate::governance::identity::hash_secret;
use crate::store::{Change, Page, PageRequest, RowFilter, Table};
use crate::sync::Invalidation;
use crate::tenancy::{BudgetTier, KeyRecord, Meta, Organization, Team, User, from_row, to_row};

#[derive(Debug, Default, Deserialize)]
pub struct KeyFields {
    /// A caller-chosen secret (LiteLLM's `key`), on create.
    pub key: Option<String>,
    #[serde(default, deserialize_with = "tristate")]
    pub key_alias: Option<Option<String>>,
    /// A lifetime such as `30d`, from now; `null` on update removes the expiry.
    #[serde(default, deserialize_with = "tristate")]
    pub duration: Option<Option<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub expires: Option<Option<DateTime<Utc>>>,
    pub models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub budget_id: Option<Option<String>>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    /// MCP servers, access groups and tools (LiteLLM's `object_permission`).
    pub object_permission: Option<super::fields::ObjectPermissionChange>,
    pub blocked: Option<bool>,
    #[serde(default, deserialize_with = "tristate")]
    pub user_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub team_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub organization_id: Option<Option<String>>,
    pub etag: Option<i64>,
}

impl KeyFields {
    /// Fields only admins (proxy, org, team) may set: they change what the key may spend, or
    /// who it belongs to.
    fn sensitive(&self, limits: &LimitsFields) -> Option<&'static str> {
        // `models` is not here: a key's models only ever narrow what its owner, team and
        // organization allow.
        let checks = [
            ("budget_id", self.budget_id.is_some()),
            ("blocked", self.blocked.is_some()),
            ("user_id", self.user_id.is_some()),
            ("team_id", self.team_id.is_some()),
            ("organization_id", self.organization_id.is_some()),
        ];
        checks.into_iter().find(|(_, set)| *set).map(|(n, _)| n).or_else(|| limits.set_fields().first().copied())
    }
}

/// A fresh secret: `sk-` and 256 random bits.
fn generate_secret() -> Result<String, GatewayError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| GatewayError::internal(format!("no randomness available: {e}")))?;
    Ok(format!("sk-{}", hex::encode(bytes)))
}

/// A secret the caller chose: proxy admins only. Anyone else could learn from the conflict
/// whether a guessed secret is someone's key.
fn choose_secret(ctx: &Ctx<'_>, field: &str, s: &str) -> Result<(), GatewayError> {
    if !ctx.who.is_admin() {
        return Err(deny(
            &ctx.who,
            format!("only a proxy admin may choose a key's secret ({field}); leave it out to get a random one"),
        ));
    }
    check_custom_secret(s)
}

fn check_custom_secret(s: &str) -> Result<(), GatewayError> {
    if !s.starts_with("sk-") || s.len() < 16 || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(GatewayError::invalid(
            "key",
            "key: a custom key must start with \"sk-\", be 16 to 256 characters and contain no spaces",
        ));
    }
    Ok(())
}

/// `sk-...abcd`: enough to recognise a key, nothing to use.
pub fn mask(secret: &str) -> String {
    let tail: String = secret.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("sk-...{tail}")
}

fn expiry(
    now: DateTime<Utc>,
    duration: Option<Option<String>>,
    expires: Option<Option<DateTime<Utc>>>,
) -> Result<Option<Option<DateTime<Utc>>>, GatewayError> {
    match (duration, expires) {
        (Some(_), Some(_)) => {
            Err(GatewayError::invalid("duration", "duration: give either duration or expires, not both"))
        }
        (Some(Some(d)), None) => {
            let period = parse_period(&d).map_err(|e| GatewayError::invalid("duration", format!("duration: {e}")))?;
            Ok(Some(Some(period.after(now).ok_or_else(|| GatewayError::invalid("duration", "duration: too long"))?)))
        }
        (Some(None), None) => Ok(Some(None)),
        (None, e) => Ok(e),
    }
}

/// Validates the fields and builds a new key (not yet stored); the caller checks permission
/// and commits.
/// `new_owner` is a user created in the same commit (so not yet in the store).
pub async fn build(
    ctx: &Ctx<'_>,
    f: KeyFields,
    limits: LimitsFields,
    new_owner: Option<&str>,
) -> Result<(KeyRecord, String), GatewayError> {
    let secret = match f.key {
        Some(s) => {
            choose_secret(ctx, "key", &s)?;
            s
        }
        None => generate_secret()?,
    };
    let team_id = f.team_id.flatten();
    let team = match &team_id {
        Some(t) => Some(load_ref::<Team>(ctx.gw, "team_id", t).await?),
        None => None,
    };
    // A user's key is theirs unless it names another owner; only proxy admins mint team
    // keys that belong to no one (service keys).
    let mut user_id = f.user_id.flatten();
    if user_id.is_none() && (team.is_none() || !ctx.who.is_admin()) {
        user_id = ctx.who.user_id.clone();
    }
    if let Some(u) = &user_id
        && Some(u.as_str()) != new_owner
    {
        load_ref::<User>(ctx.gw, "user_id", u).await?;
    }
    let organization_id = match (team.as_ref().and_then(|t| t.organization_id.clone()), f.organization_id.flatten()) {
        (Some(from_team), Some(given)) if from_team != given => {
            return Err(GatewayError::invalid(
                "organization_id",
                format!(
                    "organization_id: team {:?} belongs to organization {from_team:?}",
                    team_id.unwrap_or_default()
                ),
            ));
        }
        (Some(o), _) => Some(o),
        (None, Some(given)) => Some(load_ref::<Organization>(ctx.gw, "organization_id", &given).await?.organization_id),
        (None, None) => None,
    };
    let mut key = KeyRecord {
        key_id: uuid::Uuid::new_v4().simple().to_string(),
        token_hash: hash_secret(&secret),
        key_name: mask(&secret),
        key_alias: f.key_alias.flatten(),
        models: f.models.unwrap_or_default(),
        limits: Default::default(),
        budget_id: f.budget_id.flatten(),
        metadata: f.metadata.unwrap_or_default(),
        tags: f.tags.unwrap_or_default(),
        object_permission: Default::default(),
        expires_at: expiry(ctx.now, f.duration, f.expires)?.flatten(),
        blocked: f.blocked.unwrap_or(false),
        user_id,
        team_id,
        organization_id,
        created_by: ctx.actor_name(),
        rotation_count: 0,
        last_rotated_at: None,
        managed_by: None,
        meta: Meta::new(ctx.now),
    };
    if let Some(a) = &key.key_alias {
        non_empty("key_alias", a)?;
    }
    check_models("models", &key.models)?;
    if let Some(change) = f.object_permission {
        change.apply(&mut key.object_permission)?;
    }
    limits.apply(&mut key.limits)?;
    if let Some(b) = &key.budget_id {
        load_ref::<BudgetTier>(ctx.gw, "budget_id", b).await?;
    }
    Ok((key, secret))
}

/// The first of `after`'s settings that lets the key do more than `before`'s: `models` (an
/// allow entry that was not there, or an exclusion removed), `tags` (one removed), or
/// `expires_at` (later, or removed).
fn widened(before: &KeyRecord, after: &KeyRecord) -> Option<&'static str> {
    let (old, new) = (&before.models, &after.models);
    let allows = |l: &[String]| l.iter().filter(|m| !m.starts_with('!')).cloned().collect::<Vec<_>>();
    let excludes = |l: &[String]| l.iter().filter(|m| m.starts_with('!')).cloned().collect::<Vec<_>>();
    let models_narrow = old.is_empty()
        || (!new.is_empty()
            && allows(new).iter().all(|m| old.contains(m))
            && excludes(old).iter().all(|m| new.contains(m)));
    if !models_narrow {
        return Some("models");
    }
    if !before.tags.iter().all(|t| after.tags.contains(t)) {
        return Some("tags");
    }
    match (before.expires_at, after.expires_at) {
        (Some(_), None) => Some("expires"),
        (Some(b), Some(a)) if a > b => Some("expires"),
        _ => None,
    }
}

async fn team_of(ctx: &Ctx<'_>, key: &KeyRecord) -> Result<Option<Team>, GatewayError> {
    match &key.team_id {
        Some(t) => Ok(ctx.gw.store.get(Table::Teams, t).await?.map(from_row).transpose()?),
        None => Ok(None),
    }
}

/// Whether the caller may act on `key` through `route` (`/key/generate`, `/key/update`,
/// `/key/delete`, `/key/regenerate`), and with which powers: `Ok(true)` when it may also set
/// sensitive fields (models, limits, owner, blocked).
fn may_manage(ctx: &Ctx<'_>, key: &KeyRecord, team: Option<&Team>, route: &str) -> Result<bool, GatewayError> {
    let who = &ctx.who;
    if who.is_admin() {
        return Ok(true);
    }
    if who.is_viewer() {
        return Err(deny(who, "viewers and keys without a user may not change keys"));
    }
    if who.is_org_admin_of(key.organization_id.as_deref()) || who.is_team_admin_of(key.team_id.as_deref()) {
        return Ok(true);
    }
    if let Some(team) = team
        && who.is_team_member_of(Some(&team.team_id))
    {
        if team.team_member_permissions.iter().any(|p| p == route)
            && (route != "/key/generate" || who.is_user(key.user_id.as_deref()))
        {
            return Ok(false);
        }
        return Err(deny(
            who,
            format!("team {:?} does not grant its members {route} (team_member_permissions)", team.team_id),
        ));
    }
    if key.team_id.is_none() && who.is_user(key.user_id.as_deref()) {
        return Ok(false);
    }
    Err(deny(
        who,
        format!(
            "{route}: only the key's owner, its team's admins, its organization's admins and proxy admins may do this"
        ),
    ))
}

pub async fn create(ctx: &Ctx<'_>, f: KeyFields, limits: LimitsFields) -> Result<(KeyRecord, String), GatewayError> {
    let sensitive = f.sensitive(&limits).filter(|n| *n != "user_id" && *n != "team_id" && *n != "organization_id");
    let (key, secret) = build(ctx, f, limits, None).await?;
    let team = team_of(ctx, &key).await?;
    let powerful = may_manage(ctx, &key, team.as_ref(), "/key/generate")?;
    if let Some(field) = sensitive
        && !powerful
    {
        return Err(deny(&ctx.who, format!("only admins may set {field} on a key")));
    }
    if !ctx.who.is_admin() {
        // A key acts as its owner: only a proxy admin may mint one for someone else.
        if key.user_id.is_some() && !ctx.who.is_user(key.user_id.as_deref()) {
            return Err(deny(&ctx.who, "only a proxy admin may mint a key owned by another user"));
        }
        if key.team_id.is_none()
            && key.organization_id.is_some()
            && !ctx.who.is_org_admin_of(key.organization_id.as_deref())
        {
            return Err(deny(
                &ctx.who,
                "only proxy admins and the organization's admins may charge a key to an organization",
            ));
        }
    }
    let audit = ctx.audit("created", "key", &key.key_id, None, Some(snapshot(&key)));
    ctx.commit(vec![Change::Insert(Table::Keys, to_row(&key))], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::KeyHash(key.token_hash.clone())).await;
    tracing::info!(key_id = %key.key_id, alias = ?key.key_alias, "key created");
    Ok((key, secret))
}

/// Finds a key by its id, or by its secret (LiteLLM's routes accept either); no permission
/// check.
/// The key an id or a secret names. A secret the caller may not read the key of is answered
/// like one that names no key: otherwise 403 against 404 would tell anyone which guessed
/// secrets work. (Key ids are not secrets; a foreign id is a 403 naming the rule.)
pub async fn find(ctx: &Ctx<'_>, id_or_secret: &str) -> Result<KeyRecord, GatewayError> {
    let by_secret = id_or_secret.starts_with("sk-");
    let row = if by_secret {
        ctx.gw.store.key_by_hash(&hash_secret(id_or_secret), ctx.now).await?.map(|m| m.row)
    } else {
        ctx.gw.store.get(Table::Keys, id_or_secret).await?
    };
    let key: KeyRecord = match row {
        Some(r) => from_row(r)?,
        None => return Err(GatewayError::not_found("no such key")),
    };
    if by_secret && !may_read(&ctx.who, &key) {
        return Err(GatewayError::not_found("no such key"));
    }
    Ok(key)
}

/// Admins and viewers, the key's owner, its team's members, its organization's admins, and the
/// key itself.
fn may_read(who: &super::Principal, key: &KeyRecord) -> bool {
    who.reads_all()
        || who.key_id.as_deref() == Some(key.key_id.as_str())
        || who.is_user(key.user_id.as_deref())
        || who.is_team_member_of(key.team_id.as_deref())
        || who.is_org_admin_of(key.organization_id.as_deref())
}

/// Reads a key (see [`may_read`]).
pub async fn get(ctx: &Ctx<'_>, id_or_secret: &str) -> Result<KeyRecord, GatewayError> {
    let key = find(ctx, id_or_secret).await?;
    if may_read(&ctx.who, &key) {
        Ok(key)
    } else {
        Err(deny(
            &ctx.who,
            "only a key's owner, its team's members, its organization's admins and proxy admins may read it",
        ))
    }
}

pub async fn update(
    ctx: &Ctx<'_>,
    id_or_secret: &str,
    f: KeyFields,
    limits: LimitsFields,
) -> Result<KeyRecord, GatewayError> {
    let before = find(ctx, id_or_secret).await?;
    super::check_managed(ctx, &before)?;
    check_etag(f.etag, before.meta.version, &format!("key {:?}", before.key_id))?;
    if f.key.is_some() {
        return Err(GatewayError::invalid("key", "key: use /key/regenerate to change a key's secret"));
    }
    let team = team_of(ctx, &before).await?;
    let powerful = may_manage(ctx, &before, team.as_ref(), "/key/update")?;
    if !ctx.who.is_admin() {
        if f.user_id.is_some() || f.team_id.is_some() || f.organization_id.is_some() {
            return Err(deny(&ctx.who, "only a proxy admin may move a key to another owner, team or organization"));
        }
        if f.blocked.is_some() && ctx.who.is_user(before.user_id.as_deref()) {
            return Err(deny(&ctx.who, "a key's owner may not block or unblock it"));
        }
    }
    // A key's MCP grant narrows its team's, but the restriction an admin put on a key is the
    // admin's to lift: set on a new key by anyone, changed on an existing one by admins only.
    let mcp = f.object_permission.is_some().then_some("object_permission");
    if let Some(field) = f.sensitive(&limits).or(mcp)
        && !powerful
    {
        return Err(deny(&ctx.who, format!("only admins may change {field} on a key")));
    }
    let mut key = before.clone();
    set(&mut key.key_alias, f.key_alias);
    if let Some(a) = &key.key_alias {
        non_empty("key_alias", a)?;
    }
    if let Some(e) = expiry(ctx.now, f.duration, f.expires)? {
        key.expires_at = e;
    }
    set(&mut key.models, f.models);
    check_models("models", &key.models)?;
    set(&mut key.tags, f.tags.clone());
    // What an admin narrowed, only an admin widens: an owner (or a team member the team lets
    // update keys) may only narrow models, keep every tag (a tag can carry a budget) and bring
    // an expiry earlier.
    if !powerful && let Some(field) = widened(&before, &key) {
        return Err(deny(
            &ctx.who,
            format!("only admins may widen a key's {field}; you may narrow it, or ask an admin"),
        ));
    }
    set(&mut key.budget_id, f.budget_id);
    if let Some(b) = &key.budget_id {
        load_ref::<BudgetTier>(ctx.gw, "budget_id", b).await?;
    }
    set(&mut key.metadata, f.metadata);
    if let Some(change) = f.object_permission {
        change.apply(&mut key.object_permission)?;
    }
    set(&mut key.blocked, f.blocked);
    if let Some(u) = f.user_id {
        if let Some(id) = &u {
            load_ref::<User>(ctx.gw, "user_id", id).await?;
        }
        key.user_id = u;
    }
    if let Some(t) = f.team_id {
        key.organization_id = match &t {
            Some(id) => load_ref::<Team>(ctx.gw, "team_id", id).await?.organization_id,
            None => key.organization_id,
        };
        key.team_id = t;
    }
    if let Some(o) = f.organization_id {
        if let Some(id) = &o {
            load_ref::<Organization>(ctx.gw, "organization_id", id).await?;
        }
        key.organization_id = o;
    }
    limits.apply(&mut key.limits)?;
    key.meta.version += 1;
    key.meta.updated_at = ctx.now;
    let audit = ctx.audit("updated", "key", &key.key_id, Some(snapshot(&before)), Some(snapshot(&key)));
    ctx.commit(vec![Change::Update(Table::Keys, to_row(&key))], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::KeyHash(key.token_hash.clone())).await;
    Ok(key)
}

/// Deletes keys, all or none; each stops working at once.
pub async fn delete(ctx: &Ctx<'_>, ids: &[String]) -> Result<Vec<KeyRecord>, GatewayError> {
    if ids.is_empty() {
        return Err(GatewayError::invalid("keys", "keys: name at least one key"));
    }
    let mut changes = Vec::new();
    let mut audit = Vec::new();
    let mut keys = Vec::new();
    for id in ids {
        let key = find(ctx, id).await?;
        super::check_managed(ctx, &key)?;
        let team = team_of(ctx, &key).await?;
        may_manage(ctx, &key, team.as_ref(), "/key/delete")?;
        changes.push(Change::Delete(Table::Keys, key.key_id.clone()));
        changes.push(Change::DeleteKeyGrace(key.key_id.clone()));
        audit.push(ctx.audit("deleted", "key", &key.key_id, Some(snapshot(&key)), None));
        keys.push(key);
    }
    ctx.commit(changes, audit).await?;
    for k in &keys {
        ctx.gw.invalidate(Invalidation::KeyId(k.key_id.clone())).await;
    }
    Ok(keys)
}

/// Issues a new secret. The old one keeps working for `grace_period` (e.g. `24h`; none by
/// default), then stops.
pub async fn regenerate(
    ctx: &Ctx<'_>,
    id_or_secret: &str,
    new_key: Option<String>,
    grace_period: Option<String>,
) -> Result<(KeyRecord, String), GatewayError> {
    let before = find(ctx, id_or_secret).await?;
    super::check_managed(ctx, &before)?;
    let team = team_of(ctx, &before).await?;
    may_manage(ctx, &before, team.as_ref(), "/key/regenerate")?;
    // The new secret acts as the key's owner: only the owner (or a proxy admin) may take it.
    if !ctx.who.is_admin() && before.user_id.is_some() && !ctx.who.is_user(before.user_id.as_deref()) {
        return Err(deny(&ctx.who, "only a key's owner or a proxy admin may regenerate it"));
    }
    let secret = match new_key {
        Some(s) => {
            choose_secret(ctx, "new_key", &s)?;
            s
        }
        None => generate_secret()?,
    };
    let mut changes = Vec::new();
    if let Some(g) = &grace_period {
        let period =
            parse_period(g).map_err(|e| GatewayError::invalid("grace_period", format!("grace_period: {e}")))?;
        let revoke_at =
            period.after(ctx.now).ok_or_else(|| GatewayError::invalid("grace_period", "grace_period: too long"))?;
        changes.push(Change::AddKeyGrace {
            token_hash: before.token_hash.clone(),
            key_id: before.key_id.clone(),
            revoke_at,
        });
    }
    let mut key = before.clone();
    key.token_hash = hash_secret(&secret);
    key.key_name = mask(&secret);
    key.rotation_count += 1;
    key.last_rotated_at = Some(ctx.now);
    key.meta.version += 1;
    key.meta.updated_at = ctx.now;
    changes.insert(0, Change::Update(Table::Keys, to_row(&key)));
    let audit = ctx.audit(
        "rotated",
        "key",
        &key.key_id,
        Some(json!({"key_name": before.key_name, "rotation_count": before.rotation_count})),
        Some(json!({"key_name": key.key_name, "rotation_count": key.rotation_count, "grace_period": grace_period})),
    );
    ctx.commit(changes, vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::KeyHash(before.token_hash.clone())).await;
    ctx.gw.invalidate(Invalidation::KeyHash(key.token_hash.clone())).await;
    Ok((key, secret))
}

/// Blocks or unblocks a key. Owners may not (a blocked key's owner must not unblock it).
pub async fn set_blocked(ctx: &Ctx<'_>, id_or_secret: &str, blocked: bool) -> Result<KeyRecord, GatewayError> {
    let before = find(ctx, id_or_secret).await?;
    super::check_managed(ctx, &before)?;
    let team = team_of(ctx, &before).await?;
    if !may_manage(ctx, &before, team.as_ref(), "/key/block")? {
        return Err(deny(&ctx.who, "only admins (proxy, organization, team) may block or unblock keys"));
    }
    if !ctx.who.is_admin() && ctx.who.is_user(before.user_id.as_deref()) {
        return Err(deny(&ctx.who, "a key's owner may not block or unblock it"));
    }
    let mut key = before.clone();
    key.blocked = blocked;
    key.meta.version += 1;
    key.meta.updated_at = ctx.now;
    let action = if blocked { "blocked" } else { "unblocked" };
    let audit = ctx.audit(action, "key", &key.key_id, Some(snapshot(&before)), Some(snapshot(&key)));
    ctx.commit(vec![Change::Update(Table::Keys, to_row(&key))], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::KeyId(key.key_id.clone())).await;
    Ok(key)
}

async fn rows(ctx: &Ctx<'_>, filter: RowFilter) -> Result<Vec<KeyRecord>, GatewayError> {
    Ok(super::list_rows(ctx.gw, &filter, &PageRequest::new(crate::store::MAX_PAGE_SIZE, None)).await?.items)
}

pub async fn of_user(ctx: &Ctx<'_>, user_id: &str) -> Result<Vec<KeyRecord>, GatewayError> {
    rows(ctx, RowFilter { user_id: Some(user_id.to_owned()), ..Default::default() }).await
}

pub async fn of_team(ctx: &Ctx<'_>, team_id: &str) -> Result<Vec<KeyRecord>, GatewayError> {
    rows(ctx, RowFilter { team_id: Some(team_id.to_owned()), ..Default::default() }).await
}

/// Proxy admins and viewers see every key; others their own, their teams' and their
/// organizations' keys.
pub async fn list(ctx: &Ctx<'_>, filter: RowFilter, page: &PageRequest) -> Result<Page<KeyRecord>, GatewayError> {
    if ctx.who.reads_all() {
        return super::list_rows(ctx.gw, &filter, page).await;
    }
    let mut keys = Vec::new();
    if let Some(u) = &ctx.who.user_id {
        keys.extend(of_user(ctx, u).await?);
    }
    for team in ctx.who.teams.keys() {
        keys.extend(of_team(ctx, team).await?);
    }
    for org in ctx.who.admin_orgs() {
        keys.extend(rows(ctx, RowFilter { organization_id: Some(org), ..Default::default() }).await?);
    }
    if let Some(own) = &ctx.who.key_id
        && ctx.who.user_id.is_none()
        && let Some(row) = ctx.gw.store.get(Table::Keys, own).await?
    {
        keys.push(from_row(row)?);
    }
    keys.sort_by(|a, b| b.meta.created_at.cmp(&a.meta.created_at).then(b.key_id.cmp(&a.key_id)));
    keys.dedup_by(|a, b| a.key_id == b.key_id);
    keys.retain(|k| {
        filter.user_id.as_ref().is_none_or(|u| k.user_id.as_ref() == Some(u))
            && filter.team_id.as_ref().is_none_or(|t| k.team_id.as_ref() == Some(t))
            && filter.organization_id.as_ref().is_none_or(|o| k.organization_id.as_ref() == Some(o))
            && filter.alias.as_ref().is_none_or(|a| k.key_alias.as_ref() == Some(a))
    });
    Ok(Page { items: keys, next_token: None })
}
