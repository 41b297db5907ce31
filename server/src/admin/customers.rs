//! End customers (LiteLLM's end users): tracked without keys, managed by proxy admins.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{LimitsFields, set, tristate};
use super::{Ctx, check_etag, check_models, load, load_ref, non_empty, snapshot};
use crate::error::GatewayError;
use crate::store::{Change, Page, PageRequest, RowFilter, Table};
use crate::sync::Invalidation;
use crate::tenancy::{BudgetTier, Customer, Meta, from_row, to_row};

#[derive(Debug, Default, Deserialize)]
pub struct CustomerFields {
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "tristate")]
    pub alias: Option<Option<String>>,
    pub blocked: Option<bool>,
    #[serde(default, deserialize_with = "tristate")]
    pub budget_id: Option<Option<String>>,
    pub models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub allowed_model_region: Option<Option<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub default_model: Option<Option<String>>,
    pub metadata: Option<Map<String, Value>>,
    pub etag: Option<i64>,
}

async fn check_budget(ctx: &Ctx<'_>, c: &Customer, limits_given: bool) -> Result<(), GatewayError> {
    if let Some(b) = &c.budget_id {
        if limits_given && c.limits.max_budget.is_some() {
            return Err(GatewayError::invalid("budget_id", "budget_id: give either budget_id or max_budget, not both"));
        }
        load_ref::<BudgetTier>(ctx.gw, "budget_id", b).await?;
    }
    Ok(())
}

pub async fn create(ctx: &Ctx<'_>, f: CustomerFields, limits: LimitsFields) -> Result<Customer, GatewayError> {
    ctx.who.require_admin("only a proxy admin may create customers")?;
    let id = f
        .user_id
        .ok_or_else(|| GatewayError::invalid("user_id", "user_id: required (the id your requests send as `user`)"))?;
    non_empty("user_id", &id)?;
    let limits_given = limits.max_budget.is_some();
    let mut c = Customer {
        user_id: id,
        alias: f.alias.flatten(),
        blocked: f.blocked.unwrap_or(false),
        budget_id: f.budget_id.flatten(),
        limits: Default::default(),
        models: f.models.unwrap_or_default(),
        allowed_model_region: f.allowed_model_region.flatten(),
        default_model: f.default_model.flatten(),
        metadata: f.metadata.unwrap_or_default(),
        managed_by: None,
        meta: Meta::new(ctx.now),
    };
    check_models("models", &c.models)?;
    limits.apply(&mut c.limits)?;
    check_budget(ctx, &c, limits_given).await?;
    let audit = ctx.audit("created", "customer", &c.user_id, None, Some(snapshot(&c)));
    ctx.commit(vec![Change::Insert(Table::Customers, to_row(&c))], vec![audit]).await?;
    Ok(c)
}

pub async fn get(ctx: &Ctx<'_>, id: &str) -> Result<Customer, GatewayError> {
    ctx.who.require_read_all("only proxy admins and viewers may read customers")?;
    load(ctx.gw, id).await
}

pub async fn update(
    ctx: &Ctx<'_>,
    id: &str,
    f: CustomerFields,
    limits: LimitsFields,
) -> Result<Customer, GatewayError> {
    ctx.who.require_admin("only a proxy admin may change customers")?;
    let before: Customer = load(ctx.gw, id).await?;
    super::check_managed(ctx, &before)?;
    check_etag(f.etag, before.meta.version, &format!("customer {id:?}"))?;
    let limits_given = limits.max_budget.is_some();
    let mut c = before.clone();
    set(&mut c.alias, f.alias);
    set(&mut c.blocked, f.blocked);
    set(&mut c.budget_id, f.budget_id);
    set(&mut c.models, f.models);
    check_models("models", &c.models)?;
    set(&mut c.allowed_model_region, f.allowed_model_region);
    set(&mut c.default_model, f.default_model);
    set(&mut c.metadata, f.metadata);
    limits.apply(&mut c.limits)?;
    check_budget(ctx, &c, limits_given).await?;
    c.meta.version += 1;
    c.meta.updated_at = ctx.now;
    let audit = ctx.audit("updated", "customer", id, Some(snapshot(&before)), Some(snapshot(&c)));
    ctx.commit(vec![Change::Update(Table::Customers, to_row(&c))], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::Customer(id.to_owned())).await;
    Ok(c)
}

/// Blocks or unblocks customers, all or none.
pub async fn set_blocked(ctx: &Ctx<'_>, ids: &[String], blocked: bool) -> Result<Vec<Customer>, GatewayError> {
    ctx.who.require_admin("only a proxy admin may block or unblock customers")?;
    if ids.is_empty() {
        return Err(GatewayError::invalid("user_ids", "user_ids: name at least one customer"));
    }
    let mut changes = Vec::new();
    let mut audit = Vec::new();
    let mut out = Vec::new();
    for id in ids {
        let before: Customer = load(ctx.gw, id).await?;
        super::check_managed(ctx, &before)?;
        let mut c = before.clone();
        c.blocked = blocked;
        c.meta.version += 1;
        c.meta.updated_at = ctx.now;
        let action = if blocked { "blocked" } else { "unblocked" };
        audit.push(ctx.audit(action, "customer", id, Some(snapshot(&before)), Some(snapshot(&c))));
        changes.push(Change::Update(Table::Customers, to_row(&c)));
        out.push(c);
    }
    ctx.commit(changes, audit).await?;
    for id in ids {
        ctx.gw.invalidate(Invalidation::Customer(id.to_owned())).await;
    }
    Ok(out)
}

pub async fn delete(ctx: &Ctx<'_>, ids: &[String]) -> Result<Vec<Customer>, GatewayError> {
    ctx.who.require_admin("only a proxy admin may delete customers")?;
    if ids.is_empty() {
        return Err(GatewayError::invalid("user_ids", "user_ids: name at least one customer"));
    }
    let mut changes = Vec::new();
    let mut audit = Vec::new();
    let mut out = Vec::new();
    for id in ids {
        let c: Customer = load(ctx.gw, id).await?;
        super::check_managed(ctx, &c)?;
        changes.push(Change::Delete(Table::Customers, id.clone()));
        audit.push(ctx.audit("deleted", "customer", id, Some(snapshot(&c)), None));
        out.push(c);
    }
    ctx.commit(changes, audit).await?;
    for id in ids {
        ctx.gw.invalidate(Invalidation::Customer(id.to_owned())).await;
    }
    Ok(out)
}

pub async fn list(ctx: &Ctx<'_>, page: &PageRequest) -> Result<Page<Customer>, GatewayError> {
    ctx.who.require_read_all("only proxy admins and viewers may list customers")?;
    let rows = ctx.gw.store.list(Table::Customers, &RowFilter::default(), page).await?;
    Ok(Page {
        items: rows.items.into_iter().map(from_row).collect::<Result<Vec<_>, _>>()?,
        next_token: rows.next_token,
    })
}
