//! LiteLLM's management routes for organizations, teams, users, customers and budgets, and
//! the audit log. Each handler parses the body (unknown fields refused by name), calls
//! [`crate::admin`], and answers in LiteLLM's shape.

use axum::Json;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::extract::{JsonObject, Mgmt, Path, Query};
use super::views::{key_view, membership_view, view};
use crate::admin::fields::{parse, typed};
use crate::admin::users::MemberSpec;
use crate::admin::{Ctx, budgets, customers, orgs, teams, users};
use crate::error::GatewayError;
use crate::store::{AuditQuery, PageRequest, RowFilter};

type Reply = Result<Json<Value>, ApiError>;

/// Takes a required string field out of a body.
pub fn take_str(body: &mut Map<String, Value>, field: &str) -> Result<String, GatewayError> {
    match body.remove(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(GatewayError::invalid(field, format!("{field}: required")))
        }
        Some(_) => Err(GatewayError::invalid(field, format!("{field}: must be a string"))),
    }
}

/// Takes a required list of strings out of a body.
pub fn take_list(body: &mut Map<String, Value>, field: &str) -> Result<Vec<String>, GatewayError> {
    match body.remove(field) {
        Some(v) => serde_json::from_value(v)
            .map_err(|_| GatewayError::invalid(field, format!("{field}: must be a list of strings"))),
        None => Err(GatewayError::invalid(field, format!("{field}: required"))),
    }
}

/// A body with exactly these fields.
fn only<T: DeserializeOwned>(body: &Map<String, Value>) -> Result<T, GatewayError> {
    crate::admin::fields::reject_unknown(body, &[crate::admin::fields::field_names::<T>()])?;
    typed(body)
}

/// `member`: one member or a list.
fn members(body: &mut Map<String, Value>) -> Result<Vec<MemberSpec>, GatewayError> {
    let v = body.remove("member").ok_or_else(|| GatewayError::invalid("member", "member: required"))?;
    let list = match v {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.into_iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(GatewayError::invalid(format!("member[{i}]"), format!("member[{i}]: must be an object")));
        };
        out.push(only::<MemberSpec>(&map).map_err(|mut e| {
            e.message = format!("member[{i}].{}", e.message);
            e.param = e.param.map(|p| format!("member[{i}].{p}"));
            e
        })?);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    size: u32,
    page_token: Option<String>,
    organization_id: Option<String>,
}

impl PageQuery {
    fn page(&self) -> PageRequest {
        PageRequest::new(if self.page_size > 0 { self.page_size } else { self.size }, self.page_token.clone())
    }
}

// ---- organizations ----

pub async fn org_new(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let (f, limits) = parse::<orgs::OrgFields>(&body, &[])?;
    Ok(Json(view(&orgs::create(&ctx, f, limits).await?)))
}

pub async fn org_update(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let id = take_str(&mut body, "organization_id")?;
    let (f, limits) = parse::<orgs::OrgFields>(&body, &[])?;
    Ok(Json(view(&orgs::update(&ctx, &id, f, limits).await?)))
}

pub async fn org_delete(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let ids = take_list(&mut body, "organization_ids")?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    let deleted = orgs::delete(&ctx, &ids).await?;
    Ok(Json(json!({"deleted_organizations": deleted.iter().map(view).collect::<Vec<_>>()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgInfoQuery {
    organization_id: String,
}

pub async fn org_info(m: Mgmt, Query(q): Query<OrgInfoQuery>) -> Reply {
    let ctx = m.ctx().await?;
    let org = orgs::get(&ctx, &q.organization_id).await?;
    let mut v = view(&org);
    v["teams"] = json!(orgs::teams_of(&ctx, &org.organization_id).await?.iter().map(view).collect::<Vec<_>>());
    v["members"] =
        json!(orgs::members_of(&ctx, &org.organization_id).await?.iter().map(membership_view).collect::<Vec<_>>());
    Ok(Json(v))
}

pub async fn org_list(m: Mgmt, Query(q): Query<PageQuery>) -> Reply {
    let ctx = m.ctx().await?;
    let page = orgs::list(&ctx, &q.page()).await?;
    Ok(Json(Value::Array(page.items.iter().map(view).collect())))
}

pub async fn org_member_add(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let id = take_str(&mut body, "organization_id")?;
    let ms = members(&mut body)?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    let added = orgs::member_add(&ctx, &id, ms).await?;
    Ok(Json(
        json!({"organization_id": id, "updated_organization_memberships": added.iter().map(membership_view).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgMemberBody {
    organization_id: String,
    user_id: Option<String>,
    user_email: Option<String>,
    role: Option<String>,
}

async fn org_member_user(ctx: &Ctx<'_>, b: &OrgMemberBody) -> Result<String, GatewayError> {
    match (&b.user_id, &b.user_email) {
        (Some(id), _) => Ok(id.clone()),
        (None, Some(email)) => users::by_email(ctx, email)
            .await?
            .map(|u| u.user_id)
            .ok_or_else(|| GatewayError::not_found(format!("no user with email {email:?}"))),
        (None, None) => Err(GatewayError::invalid("user_id", "user_id: give user_id or user_email")),
    }
}

pub async fn org_member_update(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let b: OrgMemberBody = only(&body)?;
    let user = org_member_user(&ctx, &b).await?;
    let m = orgs::member_update(&ctx, &b.organization_id, &user, b.role.as_deref()).await?;
    Ok(Json(membership_view(&m)))
}

pub async fn org_member_delete(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let b: OrgMemberBody = only(&body)?;
    let user = org_member_user(&ctx, &b).await?;
    orgs::member_delete(&ctx, &b.organization_id, &user).await?;
    Ok(Json(json!({"organization_id": b.organization_id, "deleted_member": user})))
}

// ---- teams ----

pub async fn team_new(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let (f, limits) = parse::<teams::TeamFields>(&body, &[])?;
    let team = teams::create(&ctx, f, limits).await?;
    let mut v = view(&team);
    v["members_with_roles"] =
        json!(teams::members_of(&ctx, &team.team_id).await?.iter().map(membership_view).collect::<Vec<_>>());
    Ok(Json(v))
}

pub async fn team_update(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let id = take_str(&mut body, "team_id")?;
    let (f, limits) = parse::<teams::TeamFields>(&body, &[])?;
    Ok(Json(view(&teams::update(&ctx, &id, f, limits).await?)))
}

pub async fn team_delete(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let ids = take_list(&mut body, "team_ids")?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    let deleted = teams::delete(&ctx, &ids).await?;
    Ok(Json(json!({"deleted_teams": deleted.iter().map(view).collect::<Vec<_>>()})))
}

async fn team_block_inner(m: Mgmt, mut body: Map<String, Value>, blocked: bool) -> Reply {
    let ctx = m.ctx().await?;
    let id = take_str(&mut body, "team_id")?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    Ok(Json(view(&teams::set_blocked(&ctx, &id, blocked).await?)))
}

pub async fn team_block(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    team_block_inner(m, body, true).await
}

pub async fn team_unblock(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    team_block_inner(m, body, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamInfoQuery {
    team_id: String,
}

pub async fn team_info(m: Mgmt, Query(q): Query<TeamInfoQuery>) -> Reply {
    let ctx = m.ctx().await?;
    let team = teams::get(&ctx, &q.team_id).await?;
    let keys = crate::admin::keys::of_team(&ctx, &team.team_id).await?;
    let members = teams::members_of(&ctx, &team.team_id).await?;
    Ok(Json(json!({
        "team_id": team.team_id,
        "team_info": view(&team),
        "keys": keys.iter().map(key_view).collect::<Vec<_>>(),
        "team_memberships": members.iter().map(membership_view).collect::<Vec<_>>(),
    })))
}

pub async fn team_list(m: Mgmt, Query(q): Query<PageQuery>) -> Reply {
    let ctx = m.ctx().await?;
    let filter = RowFilter { organization_id: q.organization_id.clone(), ..Default::default() };
    let page = teams::list(&ctx, filter, &q.page()).await?;
    Ok(Json(Value::Array(page.items.iter().map(view).collect())))
}

pub async fn team_member_add(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let id = take_str(&mut body, "team_id")?;
    // LiteLLM also takes max_budget_in_team beside the member.
    let shared_budget = body.remove("max_budget_in_team");
    let mut ms = members(&mut body)?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    if let Some(Value::Number(n)) = shared_budget {
        for m in &mut ms {
            m.max_budget_in_team.get_or_insert(n.clone());
        }
    }
    let added = teams::member_add(&ctx, &id, ms).await?;
    Ok(Json(json!({"team_id": id, "updated_team_memberships": added.iter().map(membership_view).collect::<Vec<_>>()})))
}

pub async fn team_member_update(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let id = take_str(&mut body, "team_id")?;
    let spec: MemberSpec = only(&body)?;
    let m = teams::member_update(&ctx, &id, spec).await?;
    Ok(Json(membership_view(&m)))
}

pub async fn team_member_delete(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let id = take_str(&mut body, "team_id")?;
    let b: OrgMemberBodyLite = only(&body)?;
    let user = match (b.user_id, b.user_email) {
        (Some(u), _) => u,
        (None, Some(e)) => users::by_email(&ctx, &e)
            .await?
            .map(|u| u.user_id)
            .ok_or_else(|| GatewayError::not_found(format!("no user with email {e:?}")))?,
        (None, None) => return Err(GatewayError::invalid("user_id", "user_id: give user_id or user_email").into()),
    };
    teams::member_delete(&ctx, &id, &user).await?;
    Ok(Json(json!({"team_id": id, "deleted_member": user})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgMemberBodyLite {
    user_id: Option<String>,
    user_email: Option<String>,
}

// ---- users ----

pub async fn user_new(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let (f, limits) = parse::<users::UserFields>(&body, &[])?;
    let created = users::create(&ctx, f, limits).await?;
    let mut v = view(&created.user);
    if let Some((key, secret)) = created.key {
        v["key"] = json!(secret);
        v["token"] = json!(key.key_id);
    }
    Ok(Json(v))
}

pub async fn user_update(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let id = take_str(&mut body, "user_id")?;
    let (f, limits) = parse::<users::UserFields>(&body, &[])?;
    Ok(Json(view(&users::update(&ctx, &id, f, limits).await?)))
}

pub async fn user_delete(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let ids = take_list(&mut body, "user_ids")?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    let deleted = users::delete(&ctx, &ids).await?;
    Ok(Json(json!({"deleted_users": deleted.iter().map(view).collect::<Vec<_>>()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInfoQuery {
    user_id: Option<String>,
}

pub async fn user_info(m: Mgmt, Query(q): Query<UserInfoQuery>) -> Reply {
    let ctx = m.ctx().await?;
    let id = q
        .user_id
        .or_else(|| ctx.who.user_id.clone())
        .ok_or_else(|| GatewayError::invalid("user_id", "user_id: required"))?;
    let user = users::get(&ctx, &id).await?;
    let keys = crate::admin::keys::of_user(&ctx, &id).await?;
    let memberships = users::memberships_of(&ctx, &id).await?;
    let teams: Vec<Value> = memberships
        .iter()
        .filter(|m| m.scope == crate::store::Scope::Team)
        .map(|m| json!({"team_id": m.scope_id, "role": m.role}))
        .collect();
    let organizations: Vec<Value> = memberships
        .iter()
        .filter(|m| m.scope == crate::store::Scope::Org)
        .map(|m| json!({"organization_id": m.scope_id, "role": m.role}))
        .collect();
    Ok(Json(json!({
        "user_id": id,
        "user_info": view(&user),
        "keys": keys.iter().map(key_view).collect::<Vec<_>>(),
        "teams": teams,
        "organizations": organizations,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserListQuery {
    #[serde(default)]
    page_size: u32,
    page_token: Option<String>,
    user_email: Option<String>,
}

pub async fn user_list(m: Mgmt, Query(q): Query<UserListQuery>) -> Reply {
    let ctx = m.ctx().await?;
    let filter = RowFilter { alias: q.user_email, ..Default::default() };
    let page = users::list(&ctx, filter, &PageRequest::new(q.page_size, q.page_token)).await?;
    Ok(Json(json!({"users": page.items.iter().map(view).collect::<Vec<_>>(), "next_page_token": page.next_token})))
}

// ---- customers (also /end_user/...) ----

pub async fn customer_new(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let (f, limits) = parse::<customers::CustomerFields>(&body, &[])?;
    Ok(Json(view(&customers::create(&ctx, f, limits).await?)))
}

pub async fn customer_update(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let id = take_str(&mut body, "user_id")?;
    let (f, limits) = parse::<customers::CustomerFields>(&body, &[])?;
    Ok(Json(view(&customers::update(&ctx, &id, f, limits).await?)))
}

pub async fn customer_delete(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let ids = take_list(&mut body, "user_ids")?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    let deleted = customers::delete(&ctx, &ids).await?;
    Ok(Json(json!({"deleted_customers": deleted.iter().map(view).collect::<Vec<_>>()})))
}

async fn customer_block_inner(m: Mgmt, mut body: Map<String, Value>, blocked: bool) -> Reply {
    let ctx = m.ctx().await?;
    let ids = take_list(&mut body, "user_ids")?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    let done = customers::set_blocked(&ctx, &ids, blocked).await?;
    Ok(Json(json!({"customers": done.iter().map(view).collect::<Vec<_>>()})))
}

pub async fn customer_block(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    customer_block_inner(m, body, true).await
}

pub async fn customer_unblock(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    customer_block_inner(m, body, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerInfoQuery {
    end_user_id: String,
}

pub async fn customer_info(m: Mgmt, Query(q): Query<CustomerInfoQuery>) -> Reply {
    let ctx = m.ctx().await?;
    Ok(Json(view(&customers::get(&ctx, &q.end_user_id).await?)))
}

pub async fn customer_list(m: Mgmt, Query(q): Query<PageQuery>) -> Reply {
    let ctx = m.ctx().await?;
    let page = customers::list(&ctx, &q.page()).await?;
    Ok(Json(Value::Array(page.items.iter().map(view).collect())))
}

// ---- budgets ----

pub async fn budget_new(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let (f, limits) = parse::<budgets::BudgetFields>(&body, &[])?;
    Ok(Json(view(&budgets::create(&ctx, f, limits).await?)))
}

pub async fn budget_update(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let id = take_str(&mut body, "budget_id")?;
    let (f, limits) = parse::<budgets::BudgetFields>(&body, &[])?;
    Ok(Json(view(&budgets::update(&ctx, &id, f, limits).await?)))
}

pub async fn budget_delete(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let id = take_str(&mut body, "id")?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    Ok(Json(view(&budgets::delete(&ctx, &id).await?)))
}

pub async fn budget_info(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let ids = take_list(&mut body, "budgets")?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    let mut out = Vec::new();
    for id in ids {
        out.push(view(&budgets::get(&ctx, &id).await?));
    }
    Ok(Json(Value::Array(out)))
}

pub async fn budget_list(m: Mgmt, Query(q): Query<PageQuery>) -> Reply {
    let ctx = m.ctx().await?;
    let page = budgets::list(&ctx, &q.page()).await?;
    Ok(Json(Value::Array(page.items.iter().map(view).collect())))
}

// ---- audit ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    changed_by: Option<String>,
    changed_by_api_key: Option<String>,
    action: Option<String>,
    table_name: Option<String>,
    object_type: Option<String>,
    object_id: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    #[serde(default)]
    page_size: u32,
    page_token: Option<String>,
}

pub async fn audit_list(m: Mgmt, Query(q): Query<AuditParams>) -> Reply {
    let ctx = m.ctx().await?;
    ctx.who.require_read_all("only proxy admins and viewers may read the audit log")?;
    let query = AuditQuery {
        actor_user_id: q.changed_by,
        actor_key_id: q.changed_by_api_key,
        action: q.action,
        object_type: q.object_type.or(q.table_name),
        object_id: q.object_id,
        start: q.start_date.as_deref().map(|t| super::spend::parse_time("start_date", t, false)).transpose()?,
        end: q.end_date.as_deref().map(|t| super::spend::parse_time("end_date", t, true)).transpose()?,
    };
    let page = m.app.gateway.store.list_audit(&query, &PageRequest::new(q.page_size, q.page_token)).await?;
    Ok(Json(json!({
        "audit_logs": page.items.iter().map(crate::audit::entry_json).collect::<Vec<_>>(),
        "next_page_token": page.next_token,
    })))
}

pub async fn audit_get(m: Mgmt, Path(id): Path<String>) -> Reply {
    let ctx = m.ctx().await?;
    ctx.who.require_read_all("only proxy admins and viewers may read the audit log")?;
    // Entries are few per object; find by id through a scan of the newest pages.
    let mut token = None;
    loop {
        let page = m.app.gateway.store.list_audit(&AuditQuery::default(), &PageRequest::new(1000, token)).await?;
        if let Some(e) = page.items.iter().find(|e| e.entry_id == id) {
            return Ok(Json(crate::audit::entry_json(e)));
        }
        match page.next_token {
            Some(t) => token = Some(t),
            None => return Err(GatewayError::not_found(format!("no audit entry with id {id:?}")).into()),
        }
    }
}

// ---- tags ----

pub async fn tag_new(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let (f, limits) = parse::<crate::admin::tags::TagFields>(&body, &[])?;
    Ok(Json(view(&crate::admin::tags::create(&ctx, f, limits).await?)))
}

pub async fn tag_update(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let name = take_str(&mut body, "name")?;
    let (f, limits) = parse::<crate::admin::tags::TagFields>(&body, &[])?;
    Ok(Json(view(&crate::admin::tags::update(&ctx, &name, f, limits).await?)))
}

pub async fn tag_delete(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let name = take_str(&mut body, "name")?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    Ok(Json(view(&crate::admin::tags::delete(&ctx, &name).await?)))
}

pub async fn tag_info(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let names = take_list(&mut body, "names")?;
    crate::admin::fields::reject_unknown(&body, &[])?;
    let mut out = Map::new();
    for n in names {
        let tag = crate::admin::tags::get(&ctx, &n).await?;
        out.insert(n, view(&tag));
    }
    Ok(Json(Value::Object(out)))
}

pub async fn tag_list(m: Mgmt, Query(q): Query<PageQuery>) -> Reply {
    let ctx = m.ctx().await?;
    let page = crate::admin::tags::list(&ctx, &q.page()).await?;
    Ok(Json(Value::Array(page.items.iter().map(view).collect())))
}

// ---- config ----

/// `POST /config/reload`: reads the gateway's config file again and applies it (what
/// SIGHUP does). Proxy admins only.
pub async fn config_reload(m: Mgmt) -> Reply {
    let ctx = m.ctx().await?;
    ctx.who.require_admin("only proxy admins may reload the configuration")?;
    let done = crate::reload::reload(m.app.gateway.clone()).await.map_err(GatewayError::from)?;
    Ok(Json(done.to_json()))
}

// ---- MCP servers ----

/// The server's name: `server_name` (LiteLLM also sends `server_id` and `alias`).
fn server_name(body: &mut Map<String, Value>) -> Result<String, GatewayError> {
    let name = body.remove("server_name").or_else(|| body.remove("server_id"));
    body.remove("server_id");
    match name {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(GatewayError::invalid("server_name", "server_name: required")),
    }
}

/// A server's view as the body of a reply.
fn mcp_body<T: serde::Serialize>(view: &T) -> Reply {
    serde_json::to_value(view)
        .map(Json)
        .map_err(|e| GatewayError::internal(format!("cannot encode an MCP server: {e}")).into())
}

pub async fn mcp_server_new(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let name = server_name(&mut body)?;
    if let Some(groups) = body.remove("mcp_access_groups") {
        body.insert("access_groups".to_owned(), groups);
    }
    mcp_body(&crate::admin::mcp::create(&ctx, &name, body).await?)
}

pub async fn mcp_server_update(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let name = server_name(&mut body)?;
    if let Some(groups) = body.remove("mcp_access_groups") {
        body.insert("access_groups".to_owned(), groups);
    }
    let etag = match body.remove("etag") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
        Some(Value::String(s)) if s.parse::<i64>().is_ok() => s.parse().ok(),
        Some(_) => return Err(GatewayError::invalid("etag", "etag: not an etag this gateway issued").into()),
    };
    mcp_body(&crate::admin::mcp::update(&ctx, &name, body, etag).await?)
}

pub async fn mcp_server_list(m: Mgmt) -> Reply {
    let ctx = m.ctx().await?;
    mcp_body(&crate::admin::mcp::list(&ctx).await?)
}

pub async fn mcp_server_get(m: Mgmt, Path(id): Path<String>) -> Reply {
    let ctx = m.ctx().await?;
    mcp_body(&crate::admin::mcp::get(&ctx, &id).await?)
}

pub async fn mcp_server_delete(m: Mgmt, Path(id): Path<String>) -> Reply {
    let ctx = m.ctx().await?;
    crate::admin::mcp::delete(&ctx, &id).await?;
    Ok(Json(json!({"deleted": id})))
}
