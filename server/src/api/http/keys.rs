//! LiteLLM's key routes: `/key/generate`, `/key/update`, `/key/info`, `/key/list`,
//! `/key/delete`, `/key/regenerate`, `/key/block`, `/key/unblock`.

use axum::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{JsonObject, Mgmt, OptionalJsonObject, Path, Query};
use super::mgmt::{take_list, take_str};
use super::views::key_view;
use crate::admin::fields::{parse, reject_unknown};
use crate::admin::keys::{self, KeyFields};
use crate::error::GatewayError;
use crate::store::{PageRequest, RowFilter};

type Reply = Result<Json<Value>, ApiError>;

pub async fn generate(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let (f, limits) = parse::<KeyFields>(&body, &[])?;
    let (record, secret) = keys::create(&ctx, f, limits).await?;
    let mut out = key_view(&record);
    out["key"] = json!(secret);
    Ok(Json(out))
}

pub async fn update(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let key = take_str(&mut body, "key")?;
    let (f, limits) = parse::<KeyFields>(&body, &[])?;
    Ok(Json(key_view(&keys::update(&ctx, &key, f, limits).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfoQuery {
    key: Option<String>,
}

/// `?key=` names a key by id or secret; without it, the calling key.
pub async fn info(m: Mgmt, Query(q): Query<InfoQuery>) -> Reply {
    let ctx = m.ctx().await?;
    let key = q
        .key
        .or_else(|| m.caller.key().map(|k| k.key_id.clone()))
        .ok_or_else(|| GatewayError::invalid("key", "key: give the key id or the key itself"))?;
    let record = keys::get(&ctx, &key).await?;
    Ok(Json(json!({"key": record.key_id, "info": key_view(&record)})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    size: u32,
    #[serde(default)]
    page: Option<u32>,
    page_token: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    organization_id: Option<String>,
    key_alias: Option<String>,
    #[serde(default)]
    return_full_object: bool,
}

/// Keys the caller may see; LiteLLM answers key ids unless `return_full_object=true`.
pub async fn list(m: Mgmt, Query(q): Query<ListQuery>) -> Reply {
    let ctx = m.ctx().await?;
    if q.page.is_some_and(|p| p > 1) && q.page_token.is_none() {
        return Err(GatewayError::invalid("page", "page: Ferryman pages with page_token (from next_page_token)").into());
    }
    let filter =
        RowFilter { organization_id: q.organization_id, team_id: q.team_id, user_id: q.user_id, alias: q.key_alias };
    let page = keys::list(&ctx, filter, &PageRequest::new(q.size, q.page_token)).await?;
    let keys: Vec<Value> = if q.return_full_object {
        page.items.iter().map(key_view).collect()
    } else {
        page.items.iter().map(|k| json!(k.key_id)).collect()
    };
    Ok(Json(json!({"keys": keys, "total_count": page.items.len(), "next_page_token": page.next_token})))
}

/// Deletes every key named (by id, secret, or `key_aliases`), or none.
pub async fn delete(m: Mgmt, JsonObject(mut body): JsonObject) -> Reply {
    let ctx = m.ctx().await?;
    let mut ids = Vec::new();
    if body.contains_key("keys") {
        ids.extend(take_list(&mut body, "keys")?);
    }
    if body.contains_key("key_aliases") {
        for alias in take_list(&mut body, "key_aliases")? {
            let page = m
                .app
                .gateway
                .store
                .list(
                    crate::store::Table::Keys,
                    &RowFilter { alias: Some(alias.clone()), ..Default::default() },
                    &PageRequest::new(1, None),
                )
                .await?;
            let row = page
                .items
                .into_iter()
                .next()
                .ok_or_else(|| GatewayError::not_found(format!("no key with alias {alias:?}")))?;
            ids.push(row.id);
        }
    }
    reject_unknown(&body, &[])?;
    let deleted = keys::delete(&ctx, &ids).await?;
    Ok(Json(json!({"deleted_keys": deleted.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegenerateBody {
    key: Option<String>,
    new_key: Option<String>,
    grace_period: Option<String>,
}

async fn regenerate_inner(m: &Mgmt, path_key: Option<String>, body: serde_json::Map<String, Value>) -> Reply {
    let ctx = m.ctx().await?;
    let b: RegenerateBody = crate::admin::fields::typed(&body)?;
    reject_unknown(&body, &[&["key", "new_key", "grace_period"]])?;
    let key = path_key.or(b.key).ok_or_else(|| GatewayError::invalid("key", "key: required"))?;
    let (record, secret) = keys::regenerate(&ctx, &key, b.new_key, b.grace_period).await?;
    let mut out = key_view(&record);
    out["key"] = json!(secret);
    Ok(Json(out))
}

pub async fn regenerate(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    regenerate_inner(&m, None, body).await
}

/// `POST /key/{key}/regenerate`: the body is optional here.
pub async fn regenerate_path(m: Mgmt, Path(key): Path<String>, OptionalJsonObject(body): OptionalJsonObject) -> Reply {
    regenerate_inner(&m, Some(key), body).await
}

async fn block_inner(m: Mgmt, mut body: serde_json::Map<String, Value>, blocked: bool) -> Reply {
    let ctx = m.ctx().await?;
    let key = take_str(&mut body, "key")?;
    reject_unknown(&body, &[])?;
    Ok(Json(key_view(&keys::set_blocked(&ctx, &key, blocked).await?)))
}

pub async fn block(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    block_inner(m, body, true).await
}

pub async fn unblock(m: Mgmt, JsonObject(body): JsonObject) -> Reply {
    block_inner(m, body, false).await
}
