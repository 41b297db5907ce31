//! Organizations: create, read, update, delete, list, and their members.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{LimitsFields, set, tristate};
use super::users::{MemberSpec, resolve_member};
use super::{Ctx, check_etag, check_models, deny, list_rows, load, load_many, load_ref, new_id, non_empty, snapshot};
use crate::error::GatewayError;
use crate::store::{Change, Membership, MembershipFilter, Page, PageRequest, RowFilter, Scope, Table};
use crate::sync::Invalidation;
use crate::tenancy::{BudgetTier, Meta, OrgRole, Organization, Team, from_row, to_row};

#[derive(Debug, Default, Deserialize)]
pub struct OrgFields {
    pub organization_id: Option<String>,
    pub organization_alias: Option<String>,
    pub models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub budget_id: Option<Option<String>>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    /// MCP servers, access groups and tools (LiteLLM's `object_permission`).
    pub object_permission: Option<super::fields::ObjectPermissionChange>,
    pub blocked: Option<bool>,
    /// The version last read (optimistic concurrency).
    pub etag: Option<i64>,
}

async fn check_budget_ref(ctx: &Ctx<'_>, budget_id: &Option<String>) -> Result<(), GatewayError> {
    if let Some(b) = budget_id {
        load_ref::<BudgetTier>(ctx.gw, "budget_id", b).await?;
    }
    Ok(())
}

pub async fn create(ctx: &Ctx<'_>, f: OrgFields, limits: LimitsFields) -> Result<Organization, GatewayError> {
    ctx.who.require_admin("only a proxy admin may create organizations")?;
    let alias = f
        .organization_alias
        .ok_or_else(|| GatewayError::invalid("organization_alias", "organization_alias: required"))?;
    non_empty("organization_alias", &alias)?;
    let id = f.organization_id.unwrap_or_else(new_id);
    non_empty("organization_id", &id)?;
    let mut org = Organization {
        organization_id: id,
        organization_alias: alias,
        models: f.models.unwrap_or_default(),
        limits: Default::default(),
        budget_id: f.budget_id.flatten(),
        metadata: f.metadata.unwrap_or_default(),
        tags: f.tags.unwrap_or_default(),
        object_permission: Default::default(),
        blocked: f.blocked.unwrap_or(false),
        created_by: ctx.actor_name(),
        updated_by: ctx.actor_name(),
        managed_by: None,
        meta: Meta::new(ctx.now),
    };
    check_models("models", &org.models)?;
    if let Some(change) = f.object_permission {
        change.apply(&mut org.object_permission)?;
    }
    limits.apply(&mut org.limits)?;
    check_budget_ref(ctx, &org.budget_id).await?;
    let audit = ctx.audit("created", "organization", &org.organization_id, None, Some(snapshot(&org)));
    ctx.commit(vec![Change::Insert(Table::Organizations, to_row(&org))], vec![audit]).await?;
    Ok(org)
}

/// Who may read an organization: proxy admins and viewers, and its members.
pub fn check_read(ctx: &Ctx<'_>, org: &Organization) -> Result<(), GatewayError> {
    if ctx.who.reads_all() || ctx.who.is_org_member_of(Some(&org.organization_id)) {
        Ok(())
    } else {
        Err(deny(
            &ctx.who,
            format!("only proxy admins and members of organization {:?} may read it", org.organization_id),
        ))
    }
}

fn check_manage(ctx: &Ctx<'_>, org_id: &str) -> Result<(), GatewayError> {
    if ctx.who.is_admin() || (!ctx.who.is_viewer() && ctx.who.is_org_admin_of(Some(org_id))) {
        Ok(())
    } else {
        Err(deny(&ctx.who, format!("only proxy admins and org admins of {org_id:?} may change it")))
    }
}

pub async fn get(ctx: &Ctx<'_>, id: &str) -> Result<Organization, GatewayError> {
    let org: Organization = load(ctx.gw, id).await?;
    check_read(ctx, &org)?;
    Ok(org)
}

pub async fn update(ctx: &Ctx<'_>, id: &str, f: OrgFields, limits: LimitsFields) -> Result<Organization, GatewayError> {
    let before: Organization = load(ctx.gw, id).await?;
    super::check_managed(ctx, &before)?;
    check_manage(ctx, id)?;
    check_etag(f.etag, before.meta.version, &format!("organization {id:?}"))?;
    if f.organization_id.as_deref().is_some_and(|new| new != id) {
        return Err(GatewayError::invalid("organization_id", "organization_id: an organization's id cannot change"));
    }
    let budget_changes =
        !limits.set_fields().is_empty() || f.budget_id.is_some() || f.models.is_some() || f.blocked.is_some();
    if budget_changes && !ctx.who.is_admin() {
        return Err(deny(
            &ctx.who,
            "only a proxy admin may change an organization's budgets, limits, models or blocked state",
        ));
    }
    let mut org = before.clone();
    if let Some(a) = f.organization_alias {
        non_empty("organization_alias", &a)?;
        org.organization_alias = a;
    }
    set(&mut org.models, f.models);
    check_models("models", &org.models)?;
    set(&mut org.budget_id, f.budget_id);
    check_budget_ref(ctx, &org.budget_id).await?;
    set(&mut org.metadata, f.metadata);
    set(&mut org.tags, f.tags);
    if let Some(change) = f.object_permission {
        change.apply(&mut org.object_permission)?;
    }
    set(&mut org.blocked, f.blocked);
    limits.apply(&mut org.limits)?;
    org.updated_by = ctx.actor_name();
    org.meta.version += 1;
    org.meta.updated_at = ctx.now;
    let audit = ctx.audit("updated", "organization", id, Some(snapshot(&before)), Some(snapshot(&org)));
    ctx.commit(vec![Change::Update(Table::Organizations, to_row(&org))], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::Org(id.to_owned())).await;
    Ok(org)
}

/// Deletes organizations, all or none. An organization that still has teams is refused.
pub async fn delete(ctx: &Ctx<'_>, ids: &[String]) -> Result<Vec<Organization>, GatewayError> {
    ctx.who.require_admin("only a proxy admin may delete organizations")?;
    if ids.is_empty() {
        return Err(GatewayError::invalid("organization_ids", "organization_ids: name at least one organization"));
    }
    let mut changes = Vec::new();
    let mut audit = Vec::new();
    let mut deleted = Vec::new();
    for id in ids {
        let org: Organization = load(ctx.gw, id).await?;
        super::check_managed(ctx, &org)?;
        let teams = ctx
            .gw
            .store
            .list(
                Table::Teams,
                &RowFilter { organization_id: Some(id.clone()), ..Default::default() },
                &PageRequest::new(1, None),
            )
            .await?;
        if !teams.items.is_empty() {
            return Err(GatewayError::invalid(
                "organization_ids",
                format!("organization {id:?} still has teams; delete them or move them to another organization first"),
            ));
        }
        changes.push(Change::Delete(Table::Organizations, id.clone()));
        changes.push(Change::DeleteMembershipsOfScope { scope: Scope::Org, scope_id: id.clone() });
        audit.push(ctx.audit("deleted", "organization", id, Some(snapshot(&org)), None));
        deleted.push(org);
    }
    ctx.commit(changes, audit).await?;
    Ok(deleted)
}

/// Proxy admins and viewers see every organization; others see the ones they belong to.
pub async fn list(ctx: &Ctx<'_>, page: &PageRequest) -> Result<Page<Organization>, GatewayError> {
    if ctx.who.reads_all() {
        return list_rows(ctx.gw, &RowFilter::default(), page).await;
    }
    let items = load_many(ctx.gw, ctx.who.orgs.keys().cloned().collect()).await?;
    Ok(Page { items, next_token: None })
}

/// The teams of an organization, for its info.
pub async fn teams_of(ctx: &Ctx<'_>, org_id: &str) -> Result<Vec<Team>, GatewayError> {
    let rows = ctx
        .gw
        .store
        .list(
            Table::Teams,
            &RowFilter { organization_id: Some(org_id.to_owned()), ..Default::default() },
            &PageRequest::new(1000, None),
        )
        .await?;
    Ok(rows.items.into_iter().map(from_row).collect::<Result<Vec<_>, _>>()?)
}

pub async fn members_of(ctx: &Ctx<'_>, org_id: &str) -> Result<Vec<Membership>, GatewayError> {
    Ok(ctx
        .gw
        .store
        .memberships(&MembershipFilter { scope: Some(Scope::Org), scope_id: Some(org_id.to_owned()), user_id: None })
        .await?)
}

fn org_role(field: &str, role: Option<&str>) -> Result<OrgRole, GatewayError> {
    let role = role.unwrap_or("internal_user");
    OrgRole::parse(role).ok_or_else(|| {
        GatewayError::invalid(
            field,
            format!("{field}: {role:?} is not an organization role (org_admin, internal_user, internal_user_viewer)"),
        )
    })
}

/// Adds (or re-roles) members; users named by an email that is not yet known are created.
pub async fn member_add(
    ctx: &Ctx<'_>,
    org_id: &str,
    members: Vec<MemberSpec>,
) -> Result<Vec<Membership>, GatewayError> {
    let _org: Organization = load(ctx.gw, org_id).await?;
    super::check_managed(ctx, &_org)?;
    check_manage(ctx, org_id)?;
    if members.is_empty() {
        return Err(GatewayError::invalid("member", "member: name at least one member"));
    }
    let mut changes = Vec::new();
    let mut audit = Vec::new();
    let mut out = Vec::new();
    for (i, spec) in members.into_iter().enumerate() {
        let field = format!("member[{i}]");
        let role = org_role(&format!("{field}.role"), spec.role.as_deref())?;
        if role == OrgRole::OrgAdmin && !ctx.who.is_admin() {
            return Err(deny(&ctx.who, "only a proxy admin may make someone an org admin"));
        }
        let (user, created) = resolve_member(ctx, &field, &spec, Some(org_id)).await?;
        if let Some((c, a)) = created {
            changes.push(c);
            audit.push(a);
        }
        let m = Membership {
            scope: Scope::Org,
            scope_id: org_id.to_owned(),
            user_id: user.user_id.clone(),
            role: role.as_str().to_owned(),
            data: Value::Object(Map::new()),
            spend: Default::default(),
            created_at: ctx.now,
            updated_at: ctx.now,
        };
        audit.push(ctx.audit(
            "member_added",
            "organization",
            org_id,
            None,
            Some(serde_json::json!({"user_id": user.user_id, "role": role.as_str()})),
        ));
        changes.push(Change::PutMembership(m.clone()));
        out.push(m);
    }
    ctx.commit(changes, audit).await?;
    Ok(out)
}

pub async fn member_update(
    ctx: &Ctx<'_>,
    org_id: &str,
    user_id: &str,
    role: Option<&str>,
) -> Result<Membership, GatewayError> {
    let _org: Organization = load(ctx.gw, org_id).await?;
    super::check_managed(ctx, &_org)?;
    check_manage(ctx, org_id)?;
    let role = org_role("role", role)?;
    if role == OrgRole::OrgAdmin && !ctx.who.is_admin() {
        return Err(deny(&ctx.who, "only a proxy admin may make someone an org admin"));
    }
    let before = members_of(ctx, org_id).await?.into_iter().find(|m| m.user_id == user_id).ok_or_else(|| {
        GatewayError::not_found(format!("user {user_id:?} is not a member of organization {org_id:?}"))
    })?;
    let after = Membership { role: role.as_str().to_owned(), updated_at: ctx.now, ..before.clone() };
    let audit = ctx.audit(
        "member_updated",
        "organization",
        org_id,
        Some(serde_json::json!({"user_id": user_id, "role": before.role})),
        Some(serde_json::json!({"user_id": user_id, "role": after.role})),
    );
    ctx.commit(vec![Change::PutMembership(after.clone())], vec![audit]).await?;
    Ok(after)
}

pub async fn member_delete(ctx: &Ctx<'_>, org_id: &str, user_id: &str) -> Result<(), GatewayError> {
    let _org: Organization = load(ctx.gw, org_id).await?;
    super::check_managed(ctx, &_org)?;
    check_manage(ctx, org_id)?;
    let before = members_of(ctx, org_id).await?.into_iter().find(|m| m.user_id == user_id).ok_or_else(|| {
        GatewayError::not_found(format!("user {user_id:?} is not a member of organization {org_id:?}"))
    })?;
    let audit = ctx.audit(
        "member_removed",
        "organization",
        org_id,
        Some(serde_json::json!({"user_id": user_id, "role": before.role})),
        None,
    );
    ctx.commit(
        vec![Change::DeleteMembership { scope: Scope::Org, scope_id: org_id.to_owned(), user_id: user_id.to_owned() }],
        vec![audit],
    )
    .await?;
    Ok(())
}
