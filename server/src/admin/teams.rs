//! Teams: create, read, update, delete, block, list, and their members.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::fields::{LimitsFields, set, tristate};
use super::users::{MemberSpec, resolve_member};
use super::{Ctx, check_etag, check_models, deny, keys, list_rows, load, load_many, load_ref, new_id, snapshot};
use crate::error::GatewayError;
use crate::store::{Change, Membership, MembershipFilter, Page, PageRequest, RowFilter, Scope, Table};
use crate::sync::Invalidation;
use crate::tenancy::{BudgetTier, Meta, Organization, Team, TeamMemberSettings, TeamRole, to_row};

/// The management routes a team may grant its ordinary members on team keys.
pub const MEMBER_PERMISSIONS: &[&str] =
    &["/key/generate", "/key/update", "/key/delete", "/key/regenerate", "/key/info", "/key/list"];

/// Fields a team admin may change on their own team; everything else needs an org or proxy
/// admin.
const TEAM_ADMIN_FIELDS: &[&str] = &["team_alias", "metadata", "tags", "team_member_permissions", "model_aliases"];

#[derive(Debug, Default, Deserialize)]
pub struct TeamFields {
    pub team_id: Option<String>,
    #[serde(default, deserialize_with = "tristate")]
    pub team_alias: Option<Option<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub organization_id: Option<Option<String>>,
    pub models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub budget_id: Option<Option<String>>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    /// MCP servers, access groups and tools (LiteLLM's `object_permission`).
    pub object_permission: Option<super::fields::ObjectPermissionChange>,
    pub blocked: Option<bool>,
    pub model_aliases: Option<BTreeMap<String, String>>,
    pub team_member_permissions: Option<Vec<String>>,
    /// Members to add on create.
    pub members_with_roles: Option<Vec<MemberSpec>>,
    pub etag: Option<i64>,
}

impl TeamFields {
    fn set_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (name, set) in [
            ("team_alias", self.team_alias.is_some()),
            ("organization_id", self.organization_id.is_some()),
            ("models", self.models.is_some()),
            ("budget_id", self.budget_id.is_some()),
            ("metadata", self.metadata.is_some()),
            ("tags", self.tags.is_some()),
            ("object_permission", self.object_permission.is_some()),
            ("blocked", self.blocked.is_some()),
            ("model_aliases", self.model_aliases.is_some()),
            ("team_member_permissions", self.team_member_permissions.is_some()),
            ("members_with_roles", self.members_with_roles.is_some()),
        ] {
            if set {
                out.push(name);
            }
        }
        out
    }
}

fn check_permissions(perms: &[String]) -> Result<(), GatewayError> {
    for (i, p) in perms.iter().enumerate() {
        if !MEMBER_PERMISSIONS.contains(&p.as_str()) {
            return Err(GatewayError::invalid(
                format!("team_member_permissions[{i}]"),
                format!(
                    "team_member_permissions[{i}]: {p:?} is not a grantable route ({})",
                    MEMBER_PERMISSIONS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn team_role(field: &str, role: Option<&str>) -> Result<TeamRole, GatewayError> {
    let role = role.unwrap_or("user");
    TeamRole::parse(role)
        .ok_or_else(|| GatewayError::invalid(field, format!("{field}: {role:?} is not a team role (admin, user)")))
}

/// Who may manage a team: proxy admins, and org admins of its organization.
fn is_org_or_proxy_admin(ctx: &Ctx<'_>, team: &Team) -> bool {
    ctx.who.is_admin() || (!ctx.who.is_viewer() && ctx.who.is_org_admin_of(team.organization_id.as_deref()))
}

/// Who may manage a team's members and keys: also its own admins.
pub fn can_manage_members(ctx: &Ctx<'_>, team: &Team) -> bool {
    is_org_or_proxy_admin(ctx, team) || (!ctx.who.is_viewer() && ctx.who.is_team_admin_of(Some(&team.team_id)))
}

pub fn check_read(ctx: &Ctx<'_>, team: &Team) -> Result<(), GatewayError> {
    if ctx.who.reads_all()
        || ctx.who.is_org_admin_of(team.organization_id.as_deref())
        || ctx.who.is_team_member_of(Some(&team.team_id))
    {
        Ok(())
    } else {
        Err(deny(
            &ctx.who,
            format!(
                "only proxy admins, org admins of its organization and its members may read team {:?}",
                team.team_id
            ),
        ))
    }
}

async fn member_change(
    ctx: &Ctx<'_>,
    team_id: &str,
    org: Option<&str>,
    field: &str,
    spec: &MemberSpec,
) -> Result<(Membership, Vec<Change>, Vec<crate::store::AuditDraft>), GatewayError> {
    let role = team_role(&format!("{field}.role"), spec.role.as_deref())?;
    let settings = TeamMemberSettings {
        max_budget_in_team: spec.max_budget(field)?,
        budget_duration: spec.budget_duration.clone(),
        tpm_limit: spec.tpm_limit,
        rpm_limit: spec.rpm_limit,
        allowed_models: spec.allowed_models.clone().unwrap_or_default(),
    };
    if let Some(d) = &settings.budget_duration {
        super::fields::check_duration(&format!("{field}.budget_duration"), d)?;
    }
    let (user, created) = resolve_member(ctx, field, spec, org).await?;
    let mut changes = Vec::new();
    let mut audit = Vec::new();
    if let Some((c, a)) = created {
        changes.push(c);
        audit.push(a);
    }
    let m = Membership {
        scope: Scope::Team,
        scope_id: team_id.to_owned(),
        user_id: user.user_id.clone(),
        role: role.as_str().to_owned(),
        data: serde_json::to_value(&settings).unwrap_or(Value::Null),
        spend: Default::default(),
        created_at: ctx.now,
        updated_at: ctx.now,
    };
    changes.push(Change::PutMembership(m.clone()));
    Ok((m, changes, audit))
}

pub async fn create(ctx: &Ctx<'_>, f: TeamFields, limits: LimitsFields) -> Result<Team, GatewayError> {
    let org_id = f.organization_id.clone().flatten();
    if let Some(org) = &org_id {
        load_ref::<Organization>(ctx.gw, "organization_id", org).await?;
    }
    let org_admin_here = !ctx.who.is_viewer() && ctx.who.is_org_admin_of(org_id.as_deref());
    if !ctx.who.is_admin() && !org_admin_here {
        return Err(deny(
            &ctx.who,
            "only proxy admins, and org admins in their own organization (organization_id), may create teams",
        ));
    }
    let team_id = f.team_id.unwrap_or_else(new_id);
    super::check_id("team_id", &team_id)?;
    let mut team = Team {
        team_id,
        team_alias: f.team_alias.flatten(),
        organization_id: org_id,
        models: f.models.unwrap_or_default(),
        limits: Default::default(),
        budget_id: f.budget_id.flatten(),
        metadata: f.metadata.unwrap_or_default(),
        tags: f.tags.unwrap_or_default(),
        object_permission: Default::default(),
        blocked: f.blocked.unwrap_or(false),
        model_aliases: f.model_aliases.unwrap_or_default(),
        team_member_permissions: f.team_member_permissions.unwrap_or_default(),
        created_by: ctx.actor_name(),
        updated_by: ctx.actor_name(),
        managed_by: None,
        meta: Meta::new(ctx.now),
    };
    check_models("models", &team.models)?;
    check_permissions(&team.team_member_permissions)?;
    if let Some(change) = f.object_permission {
        change.apply(&mut team.object_permission)?;
    }
    limits.apply(&mut team.limits)?;
    if let Some(b) = &team.budget_id {
        load_ref::<BudgetTier>(ctx.gw, "budget_id", b).await?;
    }
    let mut changes = vec![Change::Insert(Table::Teams, to_row(&team))];
    let mut audit = Vec::new();
    let mut members = Vec::new();
    for (i, spec) in f.members_with_roles.unwrap_or_default().iter().enumerate() {
        let (m, c, a) = member_change(
            ctx,
            &team.team_id,
            team.organization_id.as_deref(),
            &format!("members_with_roles[{i}]"),
            spec,
        )
        .await?;
        changes.extend(c);
        audit.extend(a);
        members.push(json!({"user_id": m.user_id, "role": m.role}));
    }
    let mut after = snapshot(&team);
    after["members_with_roles"] = Value::Array(members);
    audit.insert(0, ctx.audit("created", "team", &team.team_id, None, Some(after)));
    ctx.commit(changes, audit).await?;
    Ok(team)
}

pub async fn get(ctx: &Ctx<'_>, id: &str) -> Result<Team, GatewayError> {
    let team: Team = load(ctx.gw, id).await?;
    check_read(ctx, &team)?;
    Ok(team)
}

pub async fn update(ctx: &Ctx<'_>, id: &str, f: TeamFields, limits: LimitsFields) -> Result<Team, GatewayError> {
    let before: Team = load(ctx.gw, id).await?;
    super::check_managed(ctx, &before)?;
    check_etag(f.etag, before.meta.version, &format!("team {id:?}"))?;
    if f.team_id.as_deref().is_some_and(|new| new != id) {
        return Err(GatewayError::invalid("team_id", "team_id: a team's id cannot change"));
    }
    if f.members_with_roles.is_some() {
        return Err(GatewayError::invalid(
            "members_with_roles",
            "members_with_roles: use /team/member_add, member_update and member_delete",
        ));
    }
    if !is_org_or_proxy_admin(ctx, &before) {
        let team_admin = !ctx.who.is_viewer() && ctx.who.is_team_admin_of(Some(id));
        let beyond: Vec<&str> = f
            .set_fields()
            .into_iter()
            .chain(limits.set_fields())
            .filter(|name| !TEAM_ADMIN_FIELDS.contains(name))
            .collect();
        if !team_admin {
            return Err(deny(
                &ctx.who,
                format!("only proxy admins, org admins of its organization and its team admins may change team {id:?}"),
            ));
        }
        if let Some(first) = beyond.first() {
            return Err(deny(&ctx.who, format!("team admins may not change {first}; ask an org or proxy admin")));
        }
    }
    let mut team = before.clone();
    if let Some(org) = f.organization_id.clone() {
        if org != team.organization_id && !ctx.who.is_admin() {
            return Err(deny(&ctx.who, "only a proxy admin may move a team between organizations"));
        }
        if let Some(o) = &org {
            load_ref::<Organization>(ctx.gw, "organization_id", o).await?;
        }
        team.organization_id = org;
    }
    set(&mut team.team_alias, f.team_alias);
    set(&mut team.models, f.models);
    check_models("models", &team.models)?;
    set(&mut team.budget_id, f.budget_id);
    if let Some(b) = &team.budget_id {
        load_ref::<BudgetTier>(ctx.gw, "budget_id", b).await?;
    }
    set(&mut team.metadata, f.metadata);
    set(&mut team.tags, f.tags);
    if let Some(change) = f.object_permission {
        change.apply(&mut team.object_permission)?;
    }
    set(&mut team.blocked, f.blocked);
    set(&mut team.model_aliases, f.model_aliases);
    set(&mut team.team_member_permissions, f.team_member_permissions);
    check_permissions(&team.team_member_permissions)?;
    limits.apply(&mut team.limits)?;
    team.updated_by = ctx.actor_name();
    team.meta.version += 1;
    team.meta.updated_at = ctx.now;
    let audit = ctx.audit("updated", "team", id, Some(snapshot(&before)), Some(snapshot(&team)));
    ctx.commit(vec![Change::Update(Table::Teams, to_row(&team))], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::Team(id.to_owned())).await;
    Ok(team)
}

/// Blocks or unblocks a team: its keys stop (or resume) on their next request.
pub async fn set_blocked(ctx: &Ctx<'_>, id: &str, blocked: bool) -> Result<Team, GatewayError> {
    let before: Team = load(ctx.gw, id).await?;
    super::check_managed(ctx, &before)?;
    if !is_org_or_proxy_admin(ctx, &before) {
        return Err(deny(
            &ctx.who,
            format!("only proxy admins and org admins of its organization may block or unblock team {id:?}"),
        ));
    }
    let mut team = before.clone();
    team.blocked = blocked;
    team.updated_by = ctx.actor_name();
    team.meta.version += 1;
    team.meta.updated_at = ctx.now;
    let action = if blocked { "blocked" } else { "unblocked" };
    let audit = ctx.audit(action, "team", id, Some(snapshot(&before)), Some(snapshot(&team)));
    ctx.commit(vec![Change::Update(Table::Teams, to_row(&team))], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::Team(id.to_owned())).await;
    Ok(team)
}

/// Deletes teams with their keys and memberships, all or none.
pub async fn delete(ctx: &Ctx<'_>, ids: &[String]) -> Result<Vec<Team>, GatewayError> {
    if ids.is_empty() {
        return Err(GatewayError::invalid("team_ids", "team_ids: name at least one team"));
    }
    let mut changes = Vec::new();
    let mut audit = Vec::new();
    let mut teams = Vec::new();
    for id in ids {
        let team: Team = load(ctx.gw, id).await?;
        super::check_managed(ctx, &team)?;
        if !is_org_or_proxy_admin(ctx, &team) {
            return Err(deny(
                &ctx.who,
                format!("only proxy admins and org admins of its organization may delete team {id:?}"),
            ));
        }
        for key in keys::of_team(ctx, id).await? {
            changes.push(Change::Delete(Table::Keys, key.key_id.clone()));
            changes.push(Change::DeleteKeyGrace(key.key_id.clone()));
            audit.push(ctx.audit("deleted", "key", &key.key_id, Some(snapshot(&key)), None));
        }
        changes.push(Change::DeleteMembershipsOfScope { scope: Scope::Team, scope_id: id.clone() });
        changes.push(Change::Delete(Table::Teams, id.clone()));
        audit.push(ctx.audit("deleted", "team", id, Some(snapshot(&team)), None));
        teams.push(team);
    }
    ctx.commit(changes, audit).await?;
    for id in ids {
        ctx.gw.invalidate(Invalidation::Team(id.to_owned())).await;
    }
    Ok(teams)
}

/// Proxy admins and viewers see every team; org admins their organizations' teams; others
/// the teams they belong to.
pub async fn list(ctx: &Ctx<'_>, filter: RowFilter, page: &PageRequest) -> Result<Page<Team>, GatewayError> {
    if ctx.who.reads_all() {
        return list_rows(ctx.gw, &filter, page).await;
    }
    let mut ids: Vec<String> = ctx.who.teams.keys().cloned().collect();
    for org in ctx.who.admin_orgs() {
        for t in super::orgs::teams_of(ctx, &org).await? {
            ids.push(t.team_id);
        }
    }
    let mut items: Vec<Team> = load_many(ctx.gw, ids).await?;
    items.retain(|t| filter.organization_id.as_ref().is_none_or(|o| t.organization_id.as_ref() == Some(o)));
    Ok(Page { items, next_token: None })
}

pub async fn members_of(ctx: &Ctx<'_>, team_id: &str) -> Result<Vec<Membership>, GatewayError> {
    Ok(ctx
        .gw
        .store
        .memberships(&MembershipFilter { scope: Some(Scope::Team), scope_id: Some(team_id.to_owned()), user_id: None })
        .await?)
}

pub async fn member_add(
    ctx: &Ctx<'_>,
    team_id: &str,
    members: Vec<MemberSpec>,
) -> Result<Vec<Membership>, GatewayError> {
    let team: Team = load(ctx.gw, team_id).await?;
    super::check_managed(ctx, &team)?;
    if !can_manage_members(ctx, &team) {
        return Err(deny(
            &ctx.who,
            format!("only proxy admins, org admins and team admins may add members to team {team_id:?}"),
        ));
    }
    if members.is_empty() {
        return Err(GatewayError::invalid("member", "member: name at least one member"));
    }
    let existing = members_of(ctx, team_id).await?;
    let mut changes = Vec::new();
    let mut audit = Vec::new();
    let mut out = Vec::new();
    for (i, spec) in members.iter().enumerate() {
        let field = format!("member[{i}]");
        let (m, c, a) = member_change(ctx, team_id, team.organization_id.as_deref(), &field, spec).await?;
        if existing.iter().any(|e| e.user_id == m.user_id) {
            return Err(GatewayError::new(
                crate::error::ErrorCode::AlreadyExists,
                format!("user {:?} is already a member of team {team_id:?}; use /team/member_update", m.user_id),
            ));
        }
        changes.extend(c);
        audit.extend(a);
        audit.push(ctx.audit(
            "member_added",
            "team",
            team_id,
            None,
            Some(json!({"user_id": m.user_id, "role": m.role, "settings": m.data})),
        ));
        out.push(m);
    }
    ctx.commit(changes, audit).await?;
    ctx.gw.invalidate(Invalidation::Team(team_id.to_owned())).await;
    Ok(out)
}

pub async fn member_update(ctx: &Ctx<'_>, team_id: &str, spec: MemberSpec) -> Result<Membership, GatewayError> {
    let team: Team = load(ctx.gw, team_id).await?;
    super::check_managed(ctx, &team)?;
    if !can_manage_members(ctx, &team) {
        return Err(deny(
            &ctx.who,
            format!("only proxy admins, org admins and team admins may change members of team {team_id:?}"),
        ));
    }
    let user_id = match (&spec.user_id, &spec.user_email) {
        (Some(id), _) => id.clone(),
        (None, Some(email)) => super::users::by_email(ctx, email)
            .await?
            .map(|u| u.user_id)
            .ok_or_else(|| GatewayError::not_found(format!("no user with email {email:?}")))?,
        (None, None) => return Err(GatewayError::invalid("user_id", "user_id: give user_id or user_email")),
    };
    if ctx.who.is_user(Some(&user_id)) && !is_org_or_proxy_admin(ctx, &team) {
        return Err(deny(&ctx.who, "team admins may not change their own membership; ask an org or proxy admin"));
    }
    let before = members_of(ctx, team_id)
        .await?
        .into_iter()
        .find(|m| m.user_id == user_id)
        .ok_or_else(|| GatewayError::not_found(format!("user {user_id:?} is not a member of team {team_id:?}")))?;
    let mut settings: TeamMemberSettings = serde_json::from_value(before.data.clone()).unwrap_or_default();
    let role = match &spec.role {
        Some(r) => team_role("role", Some(r))?.as_str().to_owned(),
        None => before.role.clone(),
    };
    if let Some(b) = spec.max_budget("member")? {
        settings.max_budget_in_team = Some(b);
    }
    if let Some(d) = &spec.budget_duration {
        super::fields::check_duration("budget_duration", d)?;
        settings.budget_duration = Some(d.clone());
    }
    if spec.tpm_limit.is_some() {
        settings.tpm_limit = spec.tpm_limit;
    }
    if spec.rpm_limit.is_some() {
        settings.rpm_limit = spec.rpm_limit;
    }
    if let Some(m) = &spec.allowed_models {
        settings.allowed_models = m.clone();
    }
    let after = Membership {
        role,
        data: serde_json::to_value(&settings).unwrap_or(Value::Null),
        updated_at: ctx.now,
        ..before.clone()
    };
    let audit = ctx.audit(
        "member_updated",
        "team",
        team_id,
        Some(json!({"user_id": user_id, "role": before.role, "settings": before.data})),
        Some(json!({"user_id": user_id, "role": after.role, "settings": after.data})),
    );
    ctx.commit(vec![Change::PutMembership(after.clone())], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::Team(team_id.to_owned())).await;
    Ok(after)
}

pub async fn member_delete(ctx: &Ctx<'_>, team_id: &str, user_id: &str) -> Result<(), GatewayError> {
    let team: Team = load(ctx.gw, team_id).await?;
    super::check_managed(ctx, &team)?;
    if !can_manage_members(ctx, &team) {
        return Err(deny(
            &ctx.who,
            format!("only proxy admins, org admins and team admins may remove members of team {team_id:?}"),
        ));
    }
    let before = members_of(ctx, team_id)
        .await?
        .into_iter()
        .find(|m| m.user_id == user_id)
        .ok_or_else(|| GatewayError::not_found(format!("user {user_id:?} is not a member of team {team_id:?}")))?;
    let audit = ctx.audit(
        "member_removed",
        "team",
        team_id,
        Some(json!({"user_id": user_id, "role": before.role, "settings": before.data})),
        None,
    );
    ctx.commit(
        vec![Change::DeleteMembership {
            scope: Scope::Team,
            scope_id: team_id.to_owned(),
            user_id: user_id.to_owned(),
        }],
        vec![audit],
    )
    .await?;
    ctx.gw.invalidate(Invalidation::User(user_id.to_owned())).await;
    Ok(())
}
