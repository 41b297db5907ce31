//! Budget tiers: reusable budgets and limits that customers and keys link to by `budget_id`.

use serde::Deserialize;

use super::fields::LimitsFields;
use super::{Ctx, check_etag, load, new_id, non_empty, snapshot};
use crate::error::GatewayError;
use crate::store::{Change, Page, PageRequest, RowFilter, Table};
use crate::sync::Invalidation;
use crate::tenancy::{BudgetTier, Customer, KeyRecord, Meta, Organization, Team, User, from_row, to_row};

#[derive(Debug, Default, Deserialize)]
pub struct BudgetFields {
    pub budget_id: Option<String>,
    pub etag: Option<i64>,
}

pub async fn create(ctx: &Ctx<'_>, f: BudgetFields, limits: LimitsFields) -> Result<BudgetTier, GatewayError> {
    ctx.who.require_admin("only a proxy admin may create budgets")?;
    let id = f.budget_id.unwrap_or_else(new_id);
    non_empty("budget_id", &id)?;
    let mut b = BudgetTier {
        budget_id: id,
        limits: Default::default(),
        created_by: ctx.actor_name(),
        managed_by: None,
        meta: Meta::new(ctx.now),
    };
    limits.apply(&mut b.limits)?;
    let audit = ctx.audit("created", "budget", &b.budget_id, None, Some(snapshot(&b)));
    ctx.commit(vec![Change::Insert(Table::Budgets, to_row(&b))], vec![audit]).await?;
    Ok(b)
}

pub async fn get(ctx: &Ctx<'_>, id: &str) -> Result<BudgetTier, GatewayError> {
    ctx.who.require_read_all("only proxy admins and viewers may read budgets")?;
    load(ctx.gw, id).await
}

pub async fn update(
    ctx: &Ctx<'_>,
    id: &str,
    f: BudgetFields,
    limits: LimitsFields,
) -> Result<BudgetTier, GatewayError> {
    ctx.who.require_admin("only a proxy admin may change budgets")?;
    let before: BudgetTier = load(ctx.gw, id).await?;
    super::check_managed(ctx, &before)?;
    check_etag(f.etag, before.meta.version, &format!("budget {id:?}"))?;
    let mut b = before.clone();
    limits.apply(&mut b.limits)?;
    b.meta.version += 1;
    b.meta.updated_at = ctx.now;
    let audit = ctx.audit("updated", "budget", id, Some(snapshot(&before)), Some(snapshot(&b)));
    ctx.commit(vec![Change::Update(Table::Budgets, to_row(&b))], vec![audit]).await?;
    // Tiers are read into cached identities and customers: refresh them all.
    ctx.gw.invalidate(Invalidation::All).await;
    Ok(b)
}

/// Who still links to a budget, for a refusal message.
async fn users_of(ctx: &Ctx<'_>, budget_id: &str) -> Result<Option<String>, GatewayError> {
    macro_rules! scan {
        ($t:ty, $table:expr, $what:literal, $id:ident) => {
            let mut token = None;
            loop {
                let page = ctx
                    .gw
                    .store
                    .list($table, &RowFilter::default(), &PageRequest::new(crate::store::MAX_PAGE_SIZE, token))
                    .await?;
                for row in page.items {
                    let r: $t = from_row(row)?;
                    if r.budget_id.as_deref() == Some(budget_id) {
                        return Ok(Some(format!("{} {:?}", $what, r.$id)));
                    }
                }
                match page.next_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
        };
    }
    scan!(Customer, Table::Customers, "customer", user_id);
    scan!(KeyRecord, Table::Keys, "key", key_id);
    scan!(Team, Table::Teams, "team", team_id);
    scan!(User, Table::Users, "user", user_id);
    scan!(Organization, Table::Organizations, "organization", organization_id);
    Ok(None)
}

/// Deletes a budget no one links to.
pub async fn delete(ctx: &Ctx<'_>, id: &str) -> Result<BudgetTier, GatewayError> {
    ctx.who.require_admin("only a proxy admin may delete budgets")?;
    let b: BudgetTier = load(ctx.gw, id).await?;
    super::check_managed(ctx, &b)?;
    if let Some(user) = users_of(ctx, id).await? {
        return Err(GatewayError::invalid("id", format!("budget {id:?} is still linked from {user}; unlink it first")));
    }
    let audit = ctx.audit("deleted", "budget", id, Some(snapshot(&b)), None);
    ctx.commit(vec![Change::Delete(Table::Budgets, id.to_owned())], vec![audit]).await?;
    Ok(b)
}

pub async fn list(ctx: &Ctx<'_>, page: &PageRequest) -> Result<Page<BudgetTier>, GatewayError> {
    ctx.who.require_read_all("only proxy admins and viewers may list budgets")?;
    let rows = ctx.gw.store.list(Table::Budgets, &RowFilter::default(), page).await?;
    Ok(Page {
        items: rows.items.into_iter().map(from_row).collect::<Result<Vec<_>, _>>()?,
        next_token: rows.next_token,
    })
}
