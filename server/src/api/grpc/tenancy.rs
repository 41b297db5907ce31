//! The tenancy services over gRPC: organizations, teams, users, customers, budgets, and the
//! rest of keys and the audit log. Conversions honour AIP field masks: on create every field
//! given counts; on update only the masked paths change, and a masked field left unset is
//! cleared.

use std::collections::{BTreeMap, HashSet};

use prost_types::FieldMask;
use serde_json::Value;
use tonic::{Request, Response, Status};

use ferryman_proto::v1 as pb;
use pb::audit_service_server::AuditService;
use pb::budget_service_server::BudgetService;
use pb::customer_service_server::CustomerService;
use pb::organization_service_server::OrganizationService;
use pb::team_service_server::TeamService;
use pb::user_service_server::UserService;

use super::convert::{self, json_to_value, map_to_struct, struct_to_map, timestamp};
use super::services::{Services, page_size, token};
use super::status::to_status;
use crate::admin::fields::{LimitsFields, ObjectPermissionChange};
use crate::admin::users::MemberSpec;
use crate::admin::{budgets, customers, keys, orgs, teams, users};
use crate::error::GatewayError;
use crate::pricing::Nanos;
use crate::store::{Membership, PageRequest, RowFilter};
use crate::tenancy::{
    BudgetTier, Customer, KeyRecord, Limits, ModelBudget, ObjectPermission, Organization, Team, User,
};

/// Which fields a request sets: all (create) or the masked paths (update).
struct Mask(Option<HashSet<String>>);

impl Mask {
    fn all() -> Self {
        Mask(None)
    }

    /// An update's mask; every path must be one of `known`, or a field of `limits` or
    /// `object_permission` when that is known.
    fn update(mask: Option<FieldMask>, known: &[&str]) -> Result<Self, GatewayError> {
        let paths = mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(GatewayError::invalid("update_mask", "update_mask: name the fields to change"));
        }
        for p in &paths {
            let under = |parent: &str, fields: &[&str]| {
                known.contains(&parent)
                    && p.strip_prefix(parent).and_then(|r| r.strip_prefix('.')).is_some_and(|f| fields.contains(&f))
            };
            let ok = known.contains(&p.as_str())
                || under("limits", LIMIT_PATHS)
                || under("object_permission", OBJECT_PERMISSION_PATHS);
            if !ok {
                return Err(GatewayError::invalid(
                    "update_mask",
                    format!("update_mask: {p:?} is not a field that can be updated"),
                ));
            }
        }
        Ok(Mask(Some(paths.into_iter().collect())))
    }

    fn has(&self, path: &str) -> bool {
        match &self.0 {
            None => true,
            Some(set) => set.contains(path) || path.split_once('.').is_some_and(|(parent, _)| set.contains(parent)),
        }
    }

    /// A required field (plain value).
    fn set<T>(&self, path: &str, v: T) -> Option<T> {
        self.has(path).then_some(v)
    }

    /// An optional field: on create, present only if given; on update, masked → set or clear.
    fn opt<T>(&self, path: &str, v: Option<T>) -> Option<Option<T>> {
        match &self.0 {
            None => v.map(Some),
            Some(_) => self.has(path).then_some(v),
        }
    }

    /// A list: on create, present only if non-empty; on update, masked → replaced.
    fn list<T>(&self, path: &str, v: Vec<T>) -> Option<Vec<T>> {
        match &self.0 {
            None => (!v.is_empty()).then_some(v),
            Some(_) => self.has(path).then_some(v),
        }
    }
}

const LIMIT_PATHS: &[&str] = &[
    "max_budget_nanos",
    "soft_budget_nanos",
    "budget_duration",
    "tpm_limit",
    "rpm_limit",
    "max_parallel_requests",
    "model_max_budget",
    "model_rpm_limit",
    "model_tpm_limit",
    "mcp_rpm_limit",
];

const OBJECT_PERMISSION_PATHS: &[&str] = &["mcp_servers", "mcp_access_groups", "mcp_tool_permissions"];

/// The `object_permission` a request sets. On create, given, it sets all three of its fields
/// (each unset one: no restriction). On update, each masked field (`object_permission` masks
/// all three) is replaced, and unset if the message leaves it unset.
fn object_permission(mask: &Mask, p: Option<pb::ObjectPermission>) -> Option<ObjectPermissionChange> {
    if mask.0.is_none() {
        return p.map(|p| convert::object_permission_from(p).into());
    }
    let ObjectPermission { mcp_servers, mcp_access_groups, mcp_tool_permissions } =
        convert::object_permission_from(p.unwrap_or_default());
    let change = ObjectPermissionChange {
        mcp_servers: mask.has("object_permission.mcp_servers").then_some(mcp_servers),
        mcp_access_groups: mask.has("object_permission.mcp_access_groups").then_some(mcp_access_groups),
        mcp_tool_permissions: mask.has("object_permission.mcp_tool_permissions").then_some(mcp_tool_permissions),
    };
    (change != ObjectPermissionChange::default()).then_some(change)
}

fn nanos(field: &str, v: Option<i64>) -> Result<Option<Nanos>, GatewayError> {
    match v {
        Some(n) if n < 0 => Err(GatewayError::invalid(field, format!("{field}: must not be negative"))),
        other => Ok(other.map(Nanos)),
    }
}

fn limits_fields(l: Option<pb::Limits>, mask: &Mask) -> Result<LimitsFields, GatewayError> {
    let pb::Limits {
        max_budget_nanos,
        soft_budget_nanos,
        budget_duration,
        tpm_limit,
        rpm_limit,
        max_parallel_requests,
        model_max_budget,
        model_rpm_limit,
        model_tpm_limit,
        mcp_rpm_limit,
    } = l.unwrap_or_default();
    let mut model_budgets = BTreeMap::new();
    for (model, pb::ModelBudget { budget_limit_nanos, time_period }) in model_max_budget {
        let field = format!("limits.model_max_budget.{model}.budget_limit_nanos");
        let n = nanos(&field, Some(budget_limit_nanos))?.unwrap_or_default();
        model_budgets.insert(
            model,
            crate::admin::fields::ModelBudgetField {
                budget_limit: serde_json::Number::from(0),
                time_period,
                nanos: Some(n),
            },
        );
    }
    Ok(LimitsFields {
        max_budget: mask.opt("limits.max_budget_nanos", nanos("limits.max_budget_nanos", max_budget_nanos)?),
        soft_budget: mask.opt("limits.soft_budget_nanos", nanos("limits.soft_budget_nanos", soft_budget_nanos)?),
        budget_duration: mask.opt("limits.budget_duration", budget_duration),
        tpm_limit: mask.opt("limits.tpm_limit", tpm_limit),
        rpm_limit: mask.opt("limits.rpm_limit", rpm_limit),
        max_parallel_requests: mask.opt("limits.max_parallel_requests", max_parallel_requests),
        model_max_budget: match &mask.0 {
            None => (!model_budgets.is_empty()).then_some(model_budgets),
            Some(_) => mask.has("limits.model_max_budget").then_some(model_budgets),
        },
        model_rpm_limit: match &mask.0 {
            None => (!model_rpm_limit.is_empty()).then(|| model_rpm_limit.into_iter().collect()),
            Some(_) => mask.has("limits.model_rpm_limit").then(|| model_rpm_limit.into_iter().collect()),
        },
        model_tpm_limit: match &mask.0 {
            None => (!model_tpm_limit.is_empty()).then(|| model_tpm_limit.into_iter().collect()),
            Some(_) => mask.has("limits.model_tpm_limit").then(|| model_tpm_limit.into_iter().collect()),
        },
        mcp_rpm_limit: match &mask.0 {
            None => (!mcp_rpm_limit.is_empty()).then(|| mcp_rpm_limit.into_iter().collect()),
            Some(_) => mask.has("limits.mcp_rpm_limit").then(|| mcp_rpm_limit.into_iter().collect()),
        },
    })
}

fn limits_pb(l: &Limits) -> pb::Limits {
    pb::Limits {
        max_budget_nanos: l.max_budget.map(|n| n.0),
        soft_budget_nanos: l.soft_budget.map(|n| n.0),
        budget_duration: l.budget_duration.clone(),
        tpm_limit: l.tpm_limit,
        rpm_limit: l.rpm_limit,
        max_parallel_requests: l.max_parallel_requests,
        model_max_budget: l
            .model_max_budget
            .iter()
            .map(|(k, ModelBudget { budget_limit, time_period })| {
                (k.clone(), pb::ModelBudget { budget_limit_nanos: budget_limit.0, time_period: time_period.clone() })
            })
            .collect(),
        model_rpm_limit: l.model_rpm_limit.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        model_tpm_limit: l.model_tpm_limit.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        mcp_rpm_limit: l.mcp_rpm_limit.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    }
}

fn state<R: crate::tenancy::Resource>(r: &R) -> pb::ResourceState {
    let m = r.meta();
    pb::ResourceState {
        spend_nanos: m.spend.0,
        create_time: Some(timestamp(m.created_at)),
        update_time: Some(timestamp(m.updated_at)),
        managed_by: r.managed_by().map(str::to_owned),
    }
}

fn etag(field: &str, e: &str) -> Result<Option<i64>, GatewayError> {
    if e.is_empty() {
        return Ok(None);
    }
    e.parse().map(Some).map_err(|_| GatewayError::invalid(field, format!("{field}: not an etag this gateway issued")))
}

fn metadata(mask: &Mask, m: Option<prost_types::Struct>) -> Option<serde_json::Map<String, Value>> {
    match &mask.0 {
        None => m.map(struct_to_map),
        Some(_) => mask.has("metadata").then(|| m.map(struct_to_map).unwrap_or_default()),
    }
}

fn st(e: GatewayError) -> Status {
    to_status(e)
}

// ---- conversions ----

fn org_pb(o: &Organization) -> pb::Organization {
    pb::Organization {
        organization_id: o.organization_id.clone(),
        organization_alias: o.organization_alias.clone(),
        models: o.models.clone(),
        limits: Some(limits_pb(&o.limits)),
        budget_id: o.budget_id.clone(),
        metadata: Some(map_to_struct(&o.metadata)),
        tags: o.tags.clone(),
        blocked: o.blocked,
        etag: o.meta.version.to_string(),
        state: Some(state(o)),
        object_permission: Some(convert::object_permission(&o.object_permission)),
    }
}

fn org_fields(o: pb::Organization, mask: &Mask) -> Result<(orgs::OrgFields, LimitsFields), GatewayError> {
    let pb::Organization {
        organization_id,
        organization_alias,
        models,
        limits,
        budget_id,
        metadata: md,
        tags,
        blocked,
        etag: e,
        state: _,
        object_permission: op,
    } = o;
    let fields = orgs::OrgFields {
        object_permission: object_permission(mask, op),
        organization_id: (!organization_id.is_empty()).then_some(organization_id),
        organization_alias: mask
            .set("organization_alias", organization_alias)
            .filter(|a| mask.0.is_some() || !a.is_empty()),
        models: mask.list("models", models),
        budget_id: mask.opt("budget_id", budget_id),
        metadata: metadata(mask, md),
        tags: mask.list("tags", tags),
        blocked: mask.set("blocked", blocked).filter(|b| mask.0.is_some() || *b),
        etag: etag("organization.etag", &e)?,
    };
    Ok((fields, limits_fields(limits, mask)?))
}

fn team_pb(t: &Team) -> pb::Team {
    pb::Team {
        team_id: t.team_id.clone(),
        team_alias: t.team_alias.clone(),
        organization_id: t.organization_id.clone(),
        models: t.models.clone(),
        limits: Some(limits_pb(&t.limits)),
        budget_id: t.budget_id.clone(),
        metadata: Some(map_to_struct(&t.metadata)),
        tags: t.tags.clone(),
        blocked: t.blocked,
        model_aliases: t.model_aliases.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        team_member_permissions: t.team_member_permissions.clone(),
        etag: t.meta.version.to_string(),
        state: Some(state(t)),
        object_permission: Some(convert::object_permission(&t.object_permission)),
    }
}

fn team_fields(t: pb::Team, mask: &Mask) -> Result<(teams::TeamFields, LimitsFields), GatewayError> {
    let pb::Team {
        team_id,
        team_alias,
        organization_id,
        models,
        limits,
        budget_id,
        metadata: md,
        tags,
        blocked,
        model_aliases,
        team_member_permissions,
        etag: e,
        state: _,
        object_permission: op,
    } = t;
    let fields = teams::TeamFields {
        object_permission: object_permission(mask, op),
        team_id: (!team_id.is_empty()).then_some(team_id),
        team_alias: mask.opt("team_alias", team_alias),
        organization_id: mask.opt("organization_id", organization_id),
        models: mask.list("models", models),
        budget_id: mask.opt("budget_id", budget_id),
        metadata: metadata(mask, md),
        tags: mask.list("tags", tags),
        blocked: mask.set("blocked", blocked).filter(|b| mask.0.is_some() || *b),
        model_aliases: match &mask.0 {
            None => (!model_aliases.is_empty()).then(|| model_aliases.into_iter().collect()),
            Some(_) => mask.has("model_aliases").then(|| model_aliases.into_iter().collect()),
        },
        team_member_permissions: mask.list("team_member_permissions", team_member_permissions),
        members_with_roles: None,
        etag: etag("team.etag", &e)?,
    };
    Ok((fields, limits_fields(limits, mask)?))
}

fn user_pb(u: &User) -> pb::User {
    pb::User {
        user_id: u.user_id.clone(),
        user_email: u.user_email.clone(),
        user_alias: u.user_alias.clone(),
        user_role: u.user_role.as_str().to_owned(),
        models: u.models.clone(),
        limits: Some(limits_pb(&u.limits)),
        budget_id: u.budget_id.clone(),
        metadata: Some(map_to_struct(&u.metadata)),
        tags: u.tags.clone(),
        blocked: u.blocked,
        etag: u.meta.version.to_string(),
        state: Some(state(u)),
        object_permission: Some(convert::object_permission(&u.object_permission)),
    }
}

fn user_fields(u: pb::User, mask: &Mask) -> Result<(users::UserFields, LimitsFields), GatewayError> {
    let pb::User {
        user_id,
        user_email,
        user_alias,
        user_role,
        models,
        limits,
        budget_id,
        metadata: md,
        tags,
        blocked,
        etag: e,
        state: _,
        object_permission: op,
    } = u;
    let fields = users::UserFields {
        user_id: (!user_id.is_empty()).then_some(user_id),
        user_email: mask.opt("user_email", user_email),
        user_alias: mask.opt("user_alias", user_alias),
        user_role: mask.set("user_role", user_role).filter(|r| !r.is_empty()),
        models: mask.list("models", models),
        budget_id: mask.opt("budget_id", budget_id),
        metadata: metadata(mask, md),
        tags: mask.list("tags", tags),
        blocked: mask.set("blocked", blocked).filter(|b| mask.0.is_some() || *b),
        teams: None,
        organization_id: None,
        auto_create_key: None,
        etag: etag("user.etag", &e)?,
        object_permission: object_permission(mask, op),
    };
    Ok((fields, limits_fields(limits, mask)?))
}

fn customer_pb(c: &Customer) -> pb::Customer {
    pb::Customer {
        customer_id: c.user_id.clone(),
        alias: c.alias.clone(),
        blocked: c.blocked,
        budget_id: c.budget_id.clone(),
        limits: Some(limits_pb(&c.limits)),
        models: c.models.clone(),
        allowed_model_region: c.allowed_model_region.clone(),
        default_model: c.default_model.clone(),
        metadata: Some(map_to_struct(&c.metadata)),
        etag: c.meta.version.to_string(),
        state: Some(state(c)),
    }
}

fn customer_fields(c: pb::Customer, mask: &Mask) -> Result<(customers::CustomerFields, LimitsFields), GatewayError> {
    let pb::Customer {
        customer_id,
        alias,
        blocked,
        budget_id,
        limits,
        models,
        allowed_model_region,
        default_model,
        metadata: md,
        etag: e,
        state: _,
    } = c;
    let fields = customers::CustomerFields {
        user_id: (!customer_id.is_empty()).then_some(customer_id),
        alias: mask.opt("alias", alias),
        blocked: mask.set("blocked", blocked).filter(|b| mask.0.is_some() || *b),
        budget_id: mask.opt("budget_id", budget_id),
        models: mask.list("models", models),
        allowed_model_region: mask.opt("allowed_model_region", allowed_model_region),
        default_model: mask.opt("default_model", default_model),
        metadata: metadata(mask, md),
        etag: etag("customer.etag", &e)?,
    };
    Ok((fields, limits_fields(limits, mask)?))
}

fn budget_pb(b: &BudgetTier) -> pb::Budget {
    pb::Budget {
        budget_id: b.budget_id.clone(),
        limits: Some(limits_pb(&b.limits)),
        etag: b.meta.version.to_string(),
        state: Some(state(b)),
    }
}

fn member_pb(m: &Membership) -> pb::Member {
    let settings: crate::tenancy::TeamMemberSettings = serde_json::from_value(m.data.clone()).unwrap_or_default();
    pb::Member {
        user_id: m.user_id.clone(),
        user_email: String::new(),
        role: m.role.clone(),
        max_budget_in_team_nanos: settings.max_budget_in_team.map(|n| n.0),
        budget_duration: settings.budget_duration,
        tpm_limit: settings.tpm_limit,
        rpm_limit: settings.rpm_limit,
        allowed_models: settings.allowed_models,
        spend_nanos: m.spend.0,
    }
}

fn member_spec(m: pb::Member) -> Result<MemberSpec, GatewayError> {
    let pb::Member {
        user_id,
        user_email,
        role,
        max_budget_in_team_nanos,
        budget_duration,
        tpm_limit,
        rpm_limit,
        allowed_models,
        spend_nanos: _,
    } = m;
    let budget = nanos("member.max_budget_in_team_nanos", max_budget_in_team_nanos)?;
    Ok(MemberSpec {
        user_id: (!user_id.is_empty()).then_some(user_id),
        user_email: (!user_email.is_empty()).then_some(user_email),
        role: (!role.is_empty()).then_some(role),
        max_budget_in_team: None,
        max_budget_nanos: budget,
        budget_duration,
        tpm_limit,
        rpm_limit,
        allowed_models: (!allowed_models.is_empty()).then_some(allowed_models),
    })
}

pub fn key_pb(k: &KeyRecord) -> pb::Key {
    super::convert::key(k)
}

/// A key update: the masked fields of a proto key.
pub fn key_update(k: pb::Key, mask: Option<FieldMask>) -> Result<(keys::KeyFields, LimitsFields), GatewayError> {
    let mask = Mask::update(
        mask,
        &[
            "key_alias",
            "models",
            "max_budget_nanos",
            "metadata",
            "expire_time",
            "blocked",
            "user_id",
            "team_id",
            "organization_id",
            "object_permission",
        ],
    )?;
    let pb::Key {
        key_id: _,
        key_alias,
        key_name: _,
        models,
        max_budget_nanos,
        spend_nanos: _,
        managed_by: _,
        metadata: md,
        expire_time,
        blocked,
        user_id,
        team_id,
        create_time: _,
        organization_id,
        etag: e,
        object_permission: op,
    } = k;
    let expires = match expire_time {
        Some(t) => Some(super::convert::from_timestamp("key.expire_time", t)?),
        None => None,
    };
    let fields = keys::KeyFields {
        key_alias: mask.opt("key_alias", key_alias),
        models: mask.list("models", models),
        metadata: metadata(&mask, md),
        expires: mask.opt("expire_time", expires),
        blocked: mask.set("blocked", blocked),
        user_id: mask.opt("user_id", user_id),
        team_id: mask.opt("team_id", team_id),
        organization_id: mask.opt("organization_id", organization_id),
        etag: etag("key.etag", &e)?,
        object_permission: object_permission(&mask, op),
        ..Default::default()
    };
    let limits = LimitsFields {
        max_budget: mask.opt("max_budget_nanos", nanos("key.max_budget_nanos", max_budget_nanos)?),
        ..Default::default()
    };
    Ok((fields, limits))
}

fn page(size: i32, t: String) -> Result<PageRequest, Status> {
    Ok(PageRequest::new(page_size(size)?, token(t)))
}

// ---- services ----

#[tonic::async_trait]
impl OrganizationService for Services {
    async fn create_organization(
        &self,
        req: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::CreateOrganizationResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let (f, l) = org_fields(req.into_inner().organization.unwrap_or_default(), &Mask::all()).map_err(st)?;
        let o = orgs::create(&ctx, f, l).await.map_err(st)?;
        Ok(Response::new(pb::CreateOrganizationResponse { organization: Some(org_pb(&o)) }))
    }

    async fn get_organization(
        &self,
        req: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::GetOrganizationResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let o = orgs::get(&ctx, &req.into_inner().organization_id).await.map_err(st)?;
        let members = orgs::members_of(&ctx, &o.organization_id).await.map_err(st)?;
        Ok(Response::new(pb::GetOrganizationResponse {
            organization: Some(org_pb(&o)),
            members: members.iter().map(member_pb).collect(),
        }))
    }

    async fn update_organization(
        &self,
        req: Request<pb::UpdateOrganizationRequest>,
    ) -> Result<Response<pb::UpdateOrganizationResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::UpdateOrganizationRequest { organization, update_mask } = req.into_inner();
        let o = organization.unwrap_or_default();
        let id = o.organization_id.clone();
        let mask = Mask::update(
            update_mask,
            &[
                "organization_alias",
                "models",
                "limits",
                "budget_id",
                "metadata",
                "tags",
                "blocked",
                "object_permission",
            ],
        )
        .map_err(st)?;
        let (f, l) = org_fields(o, &mask).map_err(st)?;
        let o = orgs::update(&ctx, &id, f, l).await.map_err(st)?;
        Ok(Response::new(pb::UpdateOrganizationResponse { organization: Some(org_pb(&o)) }))
    }

    async fn delete_organization(
        &self,
        req: Request<pb::DeleteOrganizationRequest>,
    ) -> Result<Response<pb::DeleteOrganizationResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        orgs::delete(&ctx, &[req.into_inner().organization_id]).await.map_err(st)?;
        Ok(Response::new(pb::DeleteOrganizationResponse {}))
    }

    async fn list_organizations(
        &self,
        req: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::ListOrganizationsRequest { page_size: s, page_token } = req.into_inner();
        let p = orgs::list(&ctx, &page(s, page_token)?).await.map_err(st)?;
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: p.items.iter().map(org_pb).collect(),
            next_page_token: p.next_token.unwrap_or_default(),
        }))
    }

    async fn add_organization_members(
        &self,
        req: Request<pb::AddOrganizationMembersRequest>,
    ) -> Result<Response<pb::AddOrganizationMembersResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::AddOrganizationMembersRequest { organization_id, members } = req.into_inner();
        let specs = members.into_iter().map(member_spec).collect::<Result<Vec<_>, _>>().map_err(st)?;
        let added = orgs::member_add(&ctx, &organization_id, specs).await.map_err(st)?;
        Ok(Response::new(pb::AddOrganizationMembersResponse { members: added.iter().map(member_pb).collect() }))
    }

    async fn update_organization_member(
        &self,
        req: Request<pb::UpdateOrganizationMemberRequest>,
    ) -> Result<Response<pb::UpdateOrganizationMemberResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::UpdateOrganizationMemberRequest { organization_id, user_id, role } = req.into_inner();
        let m = orgs::member_update(&ctx, &organization_id, &user_id, Some(&role)).await.map_err(st)?;
        Ok(Response::new(pb::UpdateOrganizationMemberResponse { member: Some(member_pb(&m)) }))
    }

    async fn remove_organization_member(
        &self,
        req: Request<pb::RemoveOrganizationMemberRequest>,
    ) -> Result<Response<pb::RemoveOrganizationMemberResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::RemoveOrganizationMemberRequest { organization_id, user_id } = req.into_inner();
        orgs::member_delete(&ctx, &organization_id, &user_id).await.map_err(st)?;
        Ok(Response::new(pb::RemoveOrganizationMemberResponse {}))
    }
}

#[tonic::async_trait]
impl TeamService for Services {
    async fn create_team(
        &self,
        req: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::CreateTeamResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::CreateTeamRequest { team, members } = req.into_inner();
        let (mut f, l) = team_fields(team.unwrap_or_default(), &Mask::all()).map_err(st)?;
        let specs = members.into_iter().map(member_spec).collect::<Result<Vec<_>, _>>().map_err(st)?;
        f.members_with_roles = (!specs.is_empty()).then_some(specs);
        let t = teams::create(&ctx, f, l).await.map_err(st)?;
        Ok(Response::new(pb::CreateTeamResponse { team: Some(team_pb(&t)) }))
    }

    async fn get_team(&self, req: Request<pb::GetTeamRequest>) -> Result<Response<pb::GetTeamResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let t = teams::get(&ctx, &req.into_inner().team_id).await.map_err(st)?;
        let members = teams::members_of(&ctx, &t.team_id).await.map_err(st)?;
        Ok(Response::new(pb::GetTeamResponse {
            team: Some(team_pb(&t)),
            members: members.iter().map(member_pb).collect(),
        }))
    }

    async fn update_team(
        &self,
        req: Request<pb::UpdateTeamRequest>,
    ) -> Result<Response<pb::UpdateTeamResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::UpdateTeamRequest { team, update_mask } = req.into_inner();
        let t = team.unwrap_or_default();
        let id = t.team_id.clone();
        let mask = Mask::update(
            update_mask,
            &[
                "team_alias",
                "organization_id",
                "models",
                "limits",
                "budget_id",
                "metadata",
                "tags",
                "blocked",
                "model_aliases",
                "team_member_permissions",
                "object_permission",
            ],
        )
        .map_err(st)?;
        let (f, l) = team_fields(t, &mask).map_err(st)?;
        let t = teams::update(&ctx, &id, f, l).await.map_err(st)?;
        Ok(Response::new(pb::UpdateTeamResponse { team: Some(team_pb(&t)) }))
    }

    async fn delete_team(
        &self,
        req: Request<pb::DeleteTeamRequest>,
    ) -> Result<Response<pb::DeleteTeamResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        teams::delete(&ctx, &[req.into_inner().team_id]).await.map_err(st)?;
        Ok(Response::new(pb::DeleteTeamResponse {}))
    }

    async fn list_teams(&self, req: Request<pb::ListTeamsRequest>) -> Result<Response<pb::ListTeamsResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::ListTeamsRequest { page_size: s, page_token, organization_id } = req.into_inner();
        let p = teams::list(&ctx, RowFilter { organization_id, ..Default::default() }, &page(s, page_token)?)
            .await
            .map_err(st)?;
        Ok(Response::new(pb::ListTeamsResponse {
            teams: p.items.iter().map(team_pb).collect(),
            next_page_token: p.next_token.unwrap_or_default(),
        }))
    }

    async fn block_team(&self, req: Request<pb::BlockTeamRequest>) -> Result<Response<pb::BlockTeamResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let t = teams::set_blocked(&ctx, &req.into_inner().team_id, true).await.map_err(st)?;
        Ok(Response::new(pb::BlockTeamResponse { team: Some(team_pb(&t)) }))
    }

    async fn unblock_team(
        &self,
        req: Request<pb::UnblockTeamRequest>,
    ) -> Result<Response<pb::UnblockTeamResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let t = teams::set_blocked(&ctx, &req.into_inner().team_id, false).await.map_err(st)?;
        Ok(Response::new(pb::UnblockTeamResponse { team: Some(team_pb(&t)) }))
    }

    async fn add_team_members(
        &self,
        req: Request<pb::AddTeamMembersRequest>,
    ) -> Result<Response<pb::AddTeamMembersResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::AddTeamMembersRequest { team_id, members } = req.into_inner();
        let specs = members.into_iter().map(member_spec).collect::<Result<Vec<_>, _>>().map_err(st)?;
        let added = teams::member_add(&ctx, &team_id, specs).await.map_err(st)?;
        Ok(Response::new(pb::AddTeamMembersResponse { members: added.iter().map(member_pb).collect() }))
    }

    async fn update_team_member(
        &self,
        req: Request<pb::UpdateTeamMemberRequest>,
    ) -> Result<Response<pb::UpdateTeamMemberResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::UpdateTeamMemberRequest { team_id, member } = req.into_inner();
        let spec = member_spec(member.unwrap_or_default()).map_err(st)?;
        let m = teams::member_update(&ctx, &team_id, spec).await.map_err(st)?;
        Ok(Response::new(pb::UpdateTeamMemberResponse { member: Some(member_pb(&m)) }))
    }

    async fn remove_team_member(
        &self,
        req: Request<pb::RemoveTeamMemberRequest>,
    ) -> Result<Response<pb::RemoveTeamMemberResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::RemoveTeamMemberRequest { team_id, user_id } = req.into_inner();
        teams::member_delete(&ctx, &team_id, &user_id).await.map_err(st)?;
        Ok(Response::new(pb::RemoveTeamMemberResponse {}))
    }
}

#[tonic::async_trait]
impl UserService for Services {
    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::CreateUserRequest { user, team_ids, organization_id, create_key } = req.into_inner();
        let (mut f, l) = user_fields(user.unwrap_or_default(), &Mask::all()).map_err(st)?;
        f.teams = (!team_ids.is_empty()).then_some(team_ids);
        f.organization_id = organization_id;
        f.auto_create_key = Some(create_key);
        let created = users::create(&ctx, f, l).await.map_err(st)?;
        let (key_id, key_secret) = created.key.map(|(k, s)| (k.key_id, s)).unwrap_or_default();
        Ok(Response::new(pb::CreateUserResponse { user: Some(user_pb(&created.user)), key_id, key_secret }))
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let u = users::get(&ctx, &req.into_inner().user_id).await.map_err(st)?;
        Ok(Response::new(pb::GetUserResponse { user: Some(user_pb(&u)) }))
    }

    async fn update_user(
        &self,
        req: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::UpdateUserRequest { user, update_mask } = req.into_inner();
        let u = user.unwrap_or_default();
        let id = u.user_id.clone();
        let mask = Mask::update(
            update_mask,
            &[
                "user_email",
                "user_alias",
                "user_role",
                "models",
                "limits",
                "budget_id",
                "metadata",
                "tags",
                "blocked",
                "object_permission",
            ],
        )
        .map_err(st)?;
        let (f, l) = user_fields(u, &mask).map_err(st)?;
        let u = users::update(&ctx, &id, f, l).await.map_err(st)?;
        Ok(Response::new(pb::UpdateUserResponse { user: Some(user_pb(&u)) }))
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        users::delete(&ctx, &[req.into_inner().user_id]).await.map_err(st)?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_users(&self, req: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::ListUsersRequest { page_size: s, page_token } = req.into_inner();
        let p = users::list(&ctx, RowFilter::default(), &page(s, page_token)?).await.map_err(st)?;
        Ok(Response::new(pb::ListUsersResponse {
            users: p.items.iter().map(user_pb).collect(),
            next_page_token: p.next_token.unwrap_or_default(),
        }))
    }
}

#[tonic::async_trait]
impl CustomerService for Services {
    async fn create_customer(
        &self,
        req: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::CreateCustomerResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let (f, l) = customer_fields(req.into_inner().customer.unwrap_or_default(), &Mask::all()).map_err(st)?;
        let c = customers::create(&ctx, f, l).await.map_err(st)?;
        Ok(Response::new(pb::CreateCustomerResponse { customer: Some(customer_pb(&c)) }))
    }

    async fn get_customer(
        &self,
        req: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::GetCustomerResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let c = customers::get(&ctx, &req.into_inner().customer_id).await.map_err(st)?;
        Ok(Response::new(pb::GetCustomerResponse { customer: Some(customer_pb(&c)) }))
    }

    async fn update_customer(
        &self,
        req: Request<pb::UpdateCustomerRequest>,
    ) -> Result<Response<pb::UpdateCustomerResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::UpdateCustomerRequest { customer, update_mask } = req.into_inner();
        let c = customer.unwrap_or_default();
        let id = c.customer_id.clone();
        let mask = Mask::update(
            update_mask,
            &["alias", "blocked", "budget_id", "limits", "models", "allowed_model_region", "default_model", "metadata"],
        )
        .map_err(st)?;
        let (f, l) = customer_fields(c, &mask).map_err(st)?;
        let c = customers::update(&ctx, &id, f, l).await.map_err(st)?;
        Ok(Response::new(pb::UpdateCustomerResponse { customer: Some(customer_pb(&c)) }))
    }

    async fn delete_customer(
        &self,
        req: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<pb::DeleteCustomerResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        customers::delete(&ctx, &[req.into_inner().customer_id]).await.map_err(st)?;
        Ok(Response::new(pb::DeleteCustomerResponse {}))
    }

    async fn list_customers(
        &self,
        req: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::ListCustomersRequest { page_size: s, page_token } = req.into_inner();
        let p = customers::list(&ctx, &page(s, page_token)?).await.map_err(st)?;
        Ok(Response::new(pb::ListCustomersResponse {
            customers: p.items.iter().map(customer_pb).collect(),
            next_page_token: p.next_token.unwrap_or_default(),
        }))
    }

    async fn block_customer(
        &self,
        req: Request<pb::BlockCustomerRequest>,
    ) -> Result<Response<pb::BlockCustomerResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let done = customers::set_blocked(&ctx, &[req.into_inner().customer_id], true).await.map_err(st)?;
        Ok(Response::new(pb::BlockCustomerResponse { customer: done.first().map(customer_pb) }))
    }

    async fn unblock_customer(
        &self,
        req: Request<pb::UnblockCustomerRequest>,
    ) -> Result<Response<pb::UnblockCustomerResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let done = customers::set_blocked(&ctx, &[req.into_inner().customer_id], false).await.map_err(st)?;
        Ok(Response::new(pb::UnblockCustomerResponse { customer: done.first().map(customer_pb) }))
    }
}

#[tonic::async_trait]
impl BudgetService for Services {
    async fn create_budget(
        &self,
        req: Request<pb::CreateBudgetRequest>,
    ) -> Result<Response<pb::CreateBudgetResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::Budget { budget_id, limits, etag: _, state: _ } = req.into_inner().budget.unwrap_or_default();
        let f = budgets::BudgetFields { budget_id: (!budget_id.is_empty()).then_some(budget_id), etag: None };
        let b = budgets::create(&ctx, f, limits_fields(limits, &Mask::all()).map_err(st)?).await.map_err(st)?;
        Ok(Response::new(pb::CreateBudgetResponse { budget: Some(budget_pb(&b)) }))
    }

    async fn get_budget(&self, req: Request<pb::GetBudgetRequest>) -> Result<Response<pb::GetBudgetResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let b = budgets::get(&ctx, &req.into_inner().budget_id).await.map_err(st)?;
        Ok(Response::new(pb::GetBudgetResponse { budget: Some(budget_pb(&b)) }))
    }

    async fn update_budget(
        &self,
        req: Request<pb::UpdateBudgetRequest>,
    ) -> Result<Response<pb::UpdateBudgetResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::UpdateBudgetRequest { budget, update_mask } = req.into_inner();
        let pb::Budget { budget_id, limits, etag: e, state: _ } = budget.unwrap_or_default();
        let mask = Mask::update(update_mask, &["limits"]).map_err(st)?;
        let f = budgets::BudgetFields { budget_id: None, etag: etag("budget.etag", &e).map_err(st)? };
        let b = budgets::update(&ctx, &budget_id, f, limits_fields(limits, &mask).map_err(st)?).await.map_err(st)?;
        Ok(Response::new(pb::UpdateBudgetResponse { budget: Some(budget_pb(&b)) }))
    }

    async fn delete_budget(
        &self,
        req: Request<pb::DeleteBudgetRequest>,
    ) -> Result<Response<pb::DeleteBudgetResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        budgets::delete(&ctx, &req.into_inner().budget_id).await.map_err(st)?;
        Ok(Response::new(pb::DeleteBudgetResponse {}))
    }

    async fn list_budgets(
        &self,
        req: Request<pb::ListBudgetsRequest>,
    ) -> Result<Response<pb::ListBudgetsResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::ListBudgetsRequest { page_size: s, page_token } = req.into_inner();
        let p = budgets::list(&ctx, &page(s, page_token)?).await.map_err(st)?;
        Ok(Response::new(pb::ListBudgetsResponse {
            budgets: p.items.iter().map(budget_pb).collect(),
            next_page_token: p.next_token.unwrap_or_default(),
        }))
    }
}

fn audit_pb(e: &crate::store::AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: e.seq,
        entry_id: e.entry_id.clone(),
        time: Some(timestamp(e.draft.at)),
        actor_user_id: e.draft.actor.user_id.clone(),
        actor_key_id: e.draft.actor.key_id.clone(),
        actor_role: e.draft.actor.role.clone(),
        action: e.draft.action.clone(),
        object_type: e.draft.object_type.clone(),
        object_id: e.draft.object_id.clone(),
        before: e.draft.before.as_ref().map(json_to_value),
        after: e.draft.after.as_ref().map(json_to_value),
        request_id: e.draft.request_id.clone(),
        source_addr: e.draft.source_addr.clone(),
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
    }
}

#[tonic::async_trait]
impl AuditService for Services {
    async fn list_audit_entries(
        &self,
        req: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        ctx.who.require_read_all("only proxy admins and viewers may read the audit log").map_err(st)?;
        let pb::ListAuditEntriesRequest {
            page_size: s,
            page_token,
            actor_user_id,
            actor_key_id,
            action,
            object_type,
            object_id,
            start_time,
            end_time,
        } = req.into_inner();
        let query = crate::store::AuditQuery {
            actor_user_id,
            actor_key_id,
            action,
            object_type,
            object_id,
            start: start_time.map(|t| super::convert::from_timestamp("start_time", t)).transpose().map_err(st)?,
            end: end_time.map(|t| super::convert::from_timestamp("end_time", t)).transpose().map_err(st)?,
        };
        let p = self.gateway.store.list_audit(&query, &page(s, page_token)?).await.map_err(|e| st(e.into()))?;
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: p.items.iter().map(audit_pb).collect(),
            next_page_token: p.next_token.unwrap_or_default(),
        }))
    }

    async fn verify_audit_log(
        &self,
        req: Request<pb::VerifyAuditLogRequest>,
    ) -> Result<Response<pb::VerifyAuditLogResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        ctx.who.require_read_all("only proxy admins and viewers may verify the audit log").map_err(st)?;
        let verdict = crate::audit::verify(self.gateway.store.as_ref()).await.map_err(|e| st(e.into()))?;
        Ok(Response::new(match verdict {
            crate::audit::Verdict::Intact { entries } => {
                pb::VerifyAuditLogResponse { intact: true, entries_checked: entries, ..Default::default() }
            }
            crate::audit::Verdict::Broken { seq, entry_id, reason } => pb::VerifyAuditLogResponse {
                intact: false,
                entries_checked: 0,
                broken_seq: seq,
                broken_entry_id: entry_id,
                reason,
            },
        }))
    }
}
