//! Tags with budgets: LiteLLM's `/tag/*`, managed by proxy admins.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{LimitsFields, set, tristate};
use super::{Ctx, check_etag, load, non_empty, snapshot};
use crate::error::GatewayError;
use crate::store::{Change, Page, PageRequest, RowFilter, Table};
use crate::sync::Invalidation;
use crate::tenancy::{Meta, Tag, to_row};

#[derive(Debug, Default, Deserialize)]
pub struct TagFields {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "tristate")]
    pub description: Option<Option<String>>,
    pub metadata: Option<Map<String, Value>>,
    pub etag: Option<i64>,
}

/// A tag name: 1 to 64 characters, no commas (headers list tags with commas).
pub fn check_name(field: &str, name: &str) -> Result<(), GatewayError> {
    non_empty(field, name)?;
    if name.len() > 64 || name.contains(',') || name.chars().any(char::is_control) {
        return Err(GatewayError::invalid(
            field,
            format!("{field}: a tag is at most 64 characters, with no commas or control characters"),
        ));
    }
    Ok(())
}

pub async fn create(ctx: &Ctx<'_>, f: TagFields, limits: LimitsFields) -> Result<Tag, GatewayError> {
    ctx.who.require_admin("only a proxy admin may create tags")?;
    let name = f.name.ok_or_else(|| GatewayError::invalid("name", "name: required"))?;
    check_name("name", &name)?;
    let mut tag = Tag {
        name,
        description: f.description.flatten(),
        limits: Default::default(),
        metadata: f.metadata.unwrap_or_default(),
        created_by: ctx.actor_name(),
        managed_by: None,
        meta: Meta::new(ctx.now),
    };
    limits.apply(&mut tag.limits)?;
    let audit = ctx.audit("created", "tag", &tag.name, None, Some(snapshot(&tag)));
    ctx.commit(vec![Change::Insert(Table::Tags, to_row(&tag))], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::Tag(tag.name.clone())).await;
    Ok(tag)
}

pub async fn get(ctx: &Ctx<'_>, name: &str) -> Result<Tag, GatewayError> {
    ctx.who.require_read_all("only proxy admins and viewers may read tags")?;
    load(ctx.gw, name).await
}

pub async fn update(ctx: &Ctx<'_>, name: &str, f: TagFields, limits: LimitsFields) -> Result<Tag, GatewayError> {
    ctx.who.require_admin("only a proxy admin may change tags")?;
    let before: Tag = load(ctx.gw, name).await?;
    check_etag(f.etag, before.meta.version, &format!("tag {name:?}"))?;
    let mut tag = before.clone();
    set(&mut tag.description, f.description);
    set(&mut tag.metadata, f.metadata);
    limits.apply(&mut tag.limits)?;
    tag.meta.version += 1;
    tag.meta.updated_at = ctx.now;
    let audit = ctx.audit("updated", "tag", name, Some(snapshot(&before)), Some(snapshot(&tag)));
    ctx.commit(vec![Change::Update(Table::Tags, to_row(&tag))], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::Tag(name.to_owned())).await;
    Ok(tag)
}

pub async fn delete(ctx: &Ctx<'_>, name: &str) -> Result<Tag, GatewayError> {
    ctx.who.require_admin("only a proxy admin may delete tags")?;
    let tag: Tag = load(ctx.gw, name).await?;
    let audit = ctx.audit("deleted", "tag", name, Some(snapshot(&tag)), None);
    ctx.commit(vec![Change::Delete(Table::Tags, name.to_owned())], vec![audit]).await?;
    ctx.gw.invalidate(Invalidation::Tag(name.to_owned())).await;
    Ok(tag)
}

pub async fn list(ctx: &Ctx<'_>, page: &PageRequest) -> Result<Page<Tag>, GatewayError> {
    ctx.who.require_read_all("only proxy admins and viewers may list tags")?;
    super::list_rows(ctx.gw, &RowFilter::default(), page).await
}
