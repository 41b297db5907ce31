//! Internal users: create (optionally with a first key), read, update, delete, list; and how
//! members named by id or email are resolved.

use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::fields::{LimitsFields, set, tristate, usd_from_number};
use super::keys::{self, KeyFields};
use super::{Ctx, check_etag, check_models, deny, list_rows, load, load_many, load_ref, new_id, non_empty, snapshot};
use crate::error::GatewayError;
use crate::store::{AuditDraft, Change, Membership, MembershipFilter, Page, PageRequest, RowFilter, Scope, Table};
use crate::sync::Invalidation;
use crate::tenancy::{BudgetTier, KeyRecord, Meta, OrgRole, Organization, Team, User, UserRole, from_row, to_row};

/// A member named in `member_add` / `members_with_roles`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    pub role: Option<String>,
    pub max_budget_in_team: Option<Number>,
    pub budget_duration: Option<String>,
    pub tpm_limit: Option<u64>,
    pub rpm_limit: Option<u64>,
    pub allowed_models: Option<Vec<String>>,
    /// Exact nano-USD (gRPC); wins over `max_budget_in_team`.
    #[serde(skip)]
    pub max_budget_nanos: Option<crate::pricing::Nanos>,
}

impl MemberSpec {
    pub fn max_budget(&self, field: &str) -> Result<Option<crate::pricing::Nanos>, GatewayError> {
        if self.max_budget_nanos.is_some() {
            return Ok(self.max_budget_nanos);
        }
        self.max_budget_in_team
            .as_ref()
            .map(|n| {
                usd_from_number(n).map_err(|e| {
                    GatewayError::invalid(
                        format!("{field}.max_budget_in_team"),
                        format!("{field}.max_budget_in_team: {e}"),
                    )
                })
            })
            .transpose()
    }
}

/// The organizations `user_id` is a member of.
async fn orgs_of(ctx: &Ctx<'_>, user_id: &str) -> Result<Vec<String>, GatewayError> {
    let ms = ctx
        .gw
        .store
        .memberships(&MembershipFilter { scope: Some(Scope::Org), user_id: Some(user_id.to_owned()), scope_id: None })
        .await?;
    Ok(ms.into_iter().map(|m| m.scope_id).collect())
}

/// The user a member spec names, for a scope in organization `org` (None: a team in no
/// organization): by id (which must exist), or by email (created, as an `internal_user`, if
/// no user has it yet — as LiteLLM does).
///
/// Only proxy admins bind anyone. Others may name by id only users who belong to no
/// organization but `org`, so no admin can pull another organization's users (or its admins)
/// under their own control. By email they bind only users already in `org`, whom they can
/// see: an email another organization registered first is refused, never silently joined, so
/// an invitation cannot be hijacked by whoever created that email's user. The refusal says
/// that the email is taken outside the organization, not by whom.
pub async fn resolve_member(
    ctx: &Ctx<'_>,
    field: &str,
    spec: &MemberSpec,
    org: Option<&str>,
) -> Result<(User, Option<(Change, AuditDraft)>), GatewayError> {
    let claim = !ctx.who.is_admin();
    let scope = org.map_or_else(|| "a team in no organization".to_owned(), |o| format!("organization {o:?}"));
    if let Some(id) = &spec.user_id {
        let field = format!("{field}.user_id");
        let user: User = load_ref(ctx.gw, &field, id).await?;
        if claim && !ctx.who.is_user(Some(id)) && orgs_of(ctx, id).await?.iter().any(|o| Some(o.as_str()) != org) {
            return Err(deny(
                &ctx.who,
                format!(
                    "{field}: user {id:?} belongs to another organization; only a proxy admin may add them to {scope}"
                ),
            ));
        }
        return Ok((user, None));
    }
    let Some(email) = &spec.user_email else {
        return Err(GatewayError::invalid(field, format!("{field}: give user_id or user_email")));
    };
    let field = format!("{field}.user_email");
    non_empty(&field, email)?;
    if let Some(user) = by_email(ctx, email).await? {
        if claim && !ctx.who.is_user(Some(&user.user_id)) {
            let theirs = match org {
                Some(o) => orgs_of(ctx, &user.user_id).await?.iter().any(|m| m == o),
                None => false,
            };
            if !theirs {
                return Err(deny(
                    &ctx.who,
                    format!("{field}: this email belongs to a user outside {scope}; ask a proxy admin to add them"),
                ));
            }
        }
        return Ok((user, None));
    }
    let user = User {
        user_id: new_id(),
        user_email: Some(email.clone()),
        user_alias: None,
        user_role: UserRole::InternalUser,
        models: vec![],
        limits: Default::default(),
        budget_id: None,
        metadata: Map::new(),
        tags: vec![],
        object_permission: Default::default(),
        blocked: false,
        created_by: ctx.actor_name(),
        managed_by: None,
        meta: Meta::new(ctx.now),
    };
    let audit = ctx.audit("created", "user", &user.user_id, None, Some(snapshot(&user)));
    Ok((user.clone(), Some((Change::Insert(Table::Users, to_row(&user)), audit))))
}

pub async fn by_email(ctx: &Ctx<'_>, email: &str) -> Result<Option<User>, GatewayError> {
    let page = ctx
        .gw
        .store
        .list(
            Table::Users,
            &RowFilter { alias: Some(email.to_owned()), ..Default::default() },
            &PageRequest::new(1, None),
        )
        .await?;
    Ok(page.items.into_iter().next().map(from_row).transpose()?)
}

#[derive(Debug, Default, Deserialize)]
pub struct UserFields {
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "tristate")]
    pub user_email: Option<Option<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub user_alias: Option<Option<String>>,
    pub user_role: Option<String>,
    pub models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub budget_id: Option<Option<String>>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    /// MCP servers, access groups and tools the user's personal keys may use at most.
    pub object_permission: Option<super::fields::ObjectPermissionChange>,
    pub blocked: Option<bool>,
    /// Teams to join as a `user` member (create only).
    pub teams: Option<Vec<String>>,
    /// The organization to join as a member (create only; required for org admins).
    pub organization_id: Option<String>,
    /// LiteLLM creates a first key for a new user unless this is false.
    pub auto_create_key: Option<bool>,
    pub etag: Option<i64>,
}

fn parse_role(role: &str) -> Result<UserRole, GatewayError> {
    UserRole::parse(role).ok_or_else(|| {
        GatewayError::invalid(
            "user_role",
            format!("user_role: {role:?} is not a role (proxy_admin, proxy_admin_viewer, org_admin, internal_user, internal_user_viewer)"),
        )
    })
}

/// A new user, and the first key's secret when one was created.
pub struct Created {
    pub user: User,
    pub key: Option<(KeyRecord, String)>,
}

pub async fn create(ctx: &Ctx<'_>, f: UserFields, limits: LimitsFields) -> Result<Created, GatewayError> {
    let role = parse_role(f.user_role.as_deref().unwrap_or("internal_user"))?;
    // Proxy admins create anyone; org admins create internal users in their organization.
    let join_org = match &f.organization_id {
        Some(org) => {
            let org = load_ref::<Organization>(ctx.gw, "organization_id", org).await?;
            // Its members are the file's to declare.
            super::check_managed(ctx, &org)?;
            Some(org.organization_id)
        }
        None => None,
    };
    if !ctx.who.is_admin() {
        let allowed = !ctx.who.is_viewer()
            && ctx.who.is_org_admin_of(join_org.as_deref())
            && matches!(role, UserRole::InternalUser | UserRole::InternalUserViewer);
        if !allowed {
            return Err(deny(
                &ctx.who,
                "only proxy admins create users; org admins may create internal users in their own organization (organization_id)",
            ));
        }
        if !limits.set_fields().is_empty() || f.object_permission.is_some() {
            return Err(deny(&ctx.who, "only a proxy admin may set a user's budgets, limits and object_permission"));
        }
    }
    let user_id = f.user_id.unwrap_or_else(new_id);
    super::check_id("user_id", &user_id)?;
    let mut user = User {
        user_id,
        user_email: f.user_email.flatten(),
        user_alias: f.user_alias.flatten(),
        user_role: role,
        models: f.models.unwrap_or_default(),
        limits: Default::default(),
        budget_id: f.budget_id.flatten(),
        metadata: f.metadata.unwrap_or_default(),
        tags: f.tags.unwrap_or_default(),
        object_permission: Default::default(),
        blocked: f.blocked.unwrap_or(false),
        created_by: ctx.actor_name(),
        managed_by: None,
        meta: Meta::new(ctx.now),
    };
    if let Some(change) = f.object_permission {
        change.apply(&mut user.object_permission)?;
    }
    if let Some(e) = &user.user_email {
        non_empty("user_email", e)?;
    }
    check_models("models", &user.models)?;
    limits.apply(&mut user.limits)?;
    if let Some(b) = &user.budget_id {
        load_ref::<BudgetTier>(ctx.gw, "budget_id", b).await?;
    }
    let mut changes = vec![Change::Insert(Table::Users, to_row(&user))];
    let mut audit = vec![ctx.audit("created", "user", &user.user_id, None, Some(snapshot(&user)))];
    for (i, team_id) in f.teams.unwrap_or_default().iter().enumerate() {
        let team: Team = load_ref(ctx.gw, &format!("teams[{i}]"), team_id).await?;
        super::check_managed(ctx, &team)?;
        if !ctx.who.is_admin() && !ctx.who.is_org_admin_of(team.organization_id.as_deref()) {
            return Err(deny(
                &ctx.who,
                format!("org admins may add new users only to their own organizations' teams, not {team_id:?}"),
            ));
        }
        changes.push(Change::PutMembership(Membership {
            scope: Scope::Team,
            scope_id: team.team_id.clone(),
            user_id: user.user_id.clone(),
            role: "user".to_owned(),
            data: Value::Object(Map::new()),
            spend: Default::default(),
            created_at: ctx.now,
            updated_at: ctx.now,
        }));
        audit.push(ctx.audit(
            "member_added",
            "team",
            &team.team_id,
            None,
            Some(serde_json::json!({"user_id": user.user_id, "role": "user"})),
        ));
    }
    if let Some(org) = &join_org {
        changes.push(Change::PutMembership(Membership {
            scope: Scope::Org,
            scope_id: org.clone(),
            user_id: user.user_id.clone(),
            role: OrgRole::InternalUser.as_str().to_owned(),
            data: Value::Object(Map::new()),
            spend: Default::default(),
            created_at: ctx.now,
            updated_at: ctx.now,
        }));
        audit.push(ctx.audit(
            "member_added",
            "organization",
            org,
            None,
            Some(serde_json::json!({"user_id": user.user_id, "role": "internal_user"})),
        ));
    }
    let mut key = None;
    if f.auto_create_key.unwrap_or(true) {
        let (record, secret) = keys::build(
            ctx,
            KeyFields { user_id: Some(Some(user.user_id.clone())), ..Default::default() },
            LimitsFields::default(),
            Some(&user.user_id),
        )
        .await?;
        changes.push(Change::Insert(Table::Keys, to_row(&record)));
        audit.push(ctx.audit("created", "key", &record.key_id, None, Some(snapshot(&record))));
        key = Some((record, secret));
    }
    ctx.commit(changes, audit).await?;
    Ok(Created { user, key })
}

/// Users in any of the org admin's organizations.
async fn in_admin_org(ctx: &Ctx<'_>, user_id: &str) -> Result<bool, GatewayError> {
    let orgs = ctx.who.admin_orgs();
    if orgs.is_empty() {
        return Ok(false);
    }
    Ok(orgs_of(ctx, user_id).await?.iter().any(|o| orgs.contains(o)))
}

/// Users wholly within the org admin's reach: members of their organizations and of no other
/// (a user's role is global, so only then may an org admin change it).
async fn within_admin_orgs(ctx: &Ctx<'_>, user_id: &str) -> Result<bool, GatewayError> {
    let orgs = ctx.who.admin_orgs();
    let theirs = orgs_of(ctx, user_id).await?;
    Ok(!theirs.is_empty() && theirs.iter().all(|o| orgs.contains(o)))
}

pub async fn get(ctx: &Ctx<'_>, id: &str) -> Result<User, GatewayError> {
    let user: User = load(ctx.gw, id).await?;
    if ctx.who.reads_all() || ctx.who.is_user(Some(id)) || in_admin_org(ctx, id).await? {
        Ok(user)
    } else {
        Err(deny(&ctx.who, "users may read only themselves; org admins the users of their organizations"))
    }
}

pub async fn update(ctx: &Ctx<'_>, id: &str, f: UserFields, limits: LimitsFields) -> Result<User, GatewayError> {
    let before: User = load(ctx.gw, id).await?;
    super::check_managed(ctx, &before)?;
    check_etag(f.etag, before.meta.version, &format!("user {id:?}"))?;
    if f.user_id.as_deref().is_some_and(|new| new != id) {
        return Err(GatewayError::invalid("user_id", "user_id: a user's id cannot change"));
    }
    if f.teams.is_some() || f.organization_id.is_some() || f.auto_create_key.is_some() {
        return Err(GatewayError::invalid(
            "teams",
            "teams, organization_id and auto_create_key apply on create; use member_add to join",
        ));
    }
    // Email is how members are found by address: users may not re-point their own.
    let sensitive = !limits.set_fields().is_empty()
        || f.user_email.is_some()
        || f.user_role.is_some()
        || f.models.is_some()
        || f.budget_id.is_some()
        || f.blocked.is_some()
        || f.tags.is_some()
        || f.object_permission.is_some();
    if !ctx.who.is_admin() {
        let self_edit = ctx.who.is_user(Some(id)) && !ctx.who.is_viewer() && !sensitive;
        // Org admins manage their organizations' ordinary users: never themselves, never anyone
        // at or above their own rank, and never budgets, models or blocking.
        let ordinary = matches!(before.user_role, UserRole::InternalUser | UserRole::InternalUserViewer);
        let org_admin_edit = !ctx.who.is_viewer()
            && !ctx.who.is_user(Some(id))
            && ordinary
            && within_admin_orgs(ctx, id).await?
            && f.user_role.as_deref().is_none_or(|r| r == "internal_user" || r == "internal_user_viewer")
            && f.models.is_none()
            && f.budget_id.is_none()
            && f.blocked.is_none()
            && f.object_permission.is_none()
            && limits.set_fields().is_empty();
        if !(self_edit || org_admin_edit) {
            return Err(deny(
                &ctx.who,
                "users may change only their own alias and metadata; email, roles, models, tags, object_permission, budgets and limits need a proxy admin (or an org admin, for their organization's users)",
            ));
        }
    }
    let mut user = before.clone();
    set(&mut user.user_email, f.user_email);
    set(&mut user.user_alias, f.user_alias);
    if let Some(r) = f.user_role {
        user.user_role = parse_role(&r)?;
    }
    set(&mut user.models, f.models);
    check_models("models", &user.models)?;
    set(&mut user.budget_id, f.budget_id);
    if let Some(b) = &user.budget_id {
        load_ref::<BudgetTier>(ctx.gw, "budget_id", b).await?;
    }
    set(&mut user.metadata, f.metadata);
    set(&mut user.tags, f.tags);
    if let Some(change) = f.object_permission {
        change.apply(&mut user.object_permission)?;
    }
    set(&mut user.blocked, f.blocked);
    limits.apply(&mut user.limits)?;
    user.meta.version += 1;
    user.meta.updated_at = ctx.now;
    let audit = ctx.audit("updated", "user", id, Some(snapshot(&before)), Some(snapshot(&user)));
    ctx.commit(vec![Change::Update(Table::Users, to_row(&user))], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::User(id.to_owned())).await;
    Ok(user)
}

/// Deletes users with their keys and memberships, all or none.
pub async fn delete(ctx: &Ctx<'_>, ids: &[String]) -> Result<Vec<User>, GatewayError> {
    ctx.who.require_admin("only a proxy admin may delete users")?;
    if ids.is_empty() {
        return Err(GatewayError::invalid("user_ids", "user_ids: name at least one user"));
    }
    let mut changes = Vec::new();
    let mut audit = Vec::new();
    let mut users = Vec::new();
    for id in ids {
        let user: User = load(ctx.gw, id).await?;
        super::check_managed(ctx, &user)?;
        for key in keys::of_user(ctx, id).await? {
            changes.push(Change::Delete(Table::Keys, key.key_id.clone()));
            changes.push(Change::DeleteKeyGrace(key.key_id.clone()));
            audit.push(ctx.audit("deleted", "key", &key.key_id, Some(snapshot(&key)), None));
        }
        changes.push(Change::DeleteMembershipsOfUser(id.clone()));
        changes.push(Change::Delete(Table::Users, id.clone()));
        audit.push(ctx.audit("deleted", "user", id, Some(snapshot(&user)), None));
        users.push(user);
    }
    ctx.commit(changes, audit).await?;
    for id in ids {
        ctx.gw.invalidate(Invalidation::User(id.to_owned())).await;
    }
    Ok(users)
}

/// Proxy admins and viewers see every user; org admins their organizations' users; others
/// themselves.
pub async fn list(ctx: &Ctx<'_>, filter: RowFilter, page: &PageRequest) -> Result<Page<User>, GatewayError> {
    if ctx.who.reads_all() {
        return list_rows(ctx.gw, &filter, page).await;
    }
    let mut ids: Vec<String> = ctx.who.user_id.iter().cloned().collect();
    for org in ctx.who.admin_orgs() {
        for m in ctx
            .gw
            .store
            .memberships(&MembershipFilter { scope: Some(Scope::Org), scope_id: Some(org), user_id: None })
            .await?
        {
            ids.push(m.user_id);
        }
    }
    let items = load_many(ctx.gw, ids).await?;
    Ok(Page { items, next_token: None })
}

pub async fn memberships_of(ctx: &Ctx<'_>, user_id: &str) -> Result<Vec<Membership>, GatewayError> {
    Ok(ctx.gw.store.memberships(&MembershipFilter { user_id: Some(user_id.to_owned()), ..Default::default() }).await?)
}
