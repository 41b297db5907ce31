//! The SQL both backends share, stamped out once per sqlx driver by [`impl_store!`].
//!
//! The two dialects accept the same statements here (`$N` parameters, `ON CONFLICT`, BIGINT
//! money and times); a macro rather than generics keeps sqlx's per-driver trait bounds out of
//! sight. Dialect-specific work (connecting, pragmas, migrations) stays in `sqlite.rs` and
//! `postgres.rs`.

/// Implements [`crate::store::Store`] for `$store` (which has `pool: sqlx::Pool<$db>` and
/// `fn migrator() -> Migrator`).
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:literal) => {
        mod shared_sql {
            use std::collections::BTreeMap;

            use serde_json::{Map, Value};
            use sqlx::Row;
            use sqlx::types::Json;

            use super::*;
            use crate::pricing::Nanos;
            use crate::store::{
                KeyRecord, Page, PageRequest, SpendQuery, SpendRecord, SpendStatus, StoreError, decode_token,
                encode_token, from_micros, micros,
            };

            type DbRow = <$db as sqlx::Database>::Row;

            const KEY_COLUMNS: &str = "key_id, token_hash, key_name, key_alias, models, max_budget_nanos, \
                spend_nanos, metadata, expires_at_us, blocked, user_id, team_id, created_at_us, updated_at_us";

            fn key_from_row(row: &DbRow) -> Result<KeyRecord, StoreError> {
                let models: Json<Vec<String>> = row.try_get("models")?;
                let metadata: Json<Map<String, Value>> = row.try_get("metadata")?;
                let expires: Option<i64> = row.try_get("expires_at_us")?;
                Ok(KeyRecord {
                    key_id: row.try_get("key_id")?,
                    token_hash: row.try_get("token_hash")?,
                    key_name: row.try_get("key_name")?,
                    key_alias: row.try_get("key_alias")?,
                    models: models.0,
                    max_budget: row.try_get::<Option<i64>, _>("max_budget_nanos")?.map(Nanos),
                    spend: Nanos(row.try_get("spend_nanos")?),
                    metadata: metadata.0,
                    expires_at: expires.map(from_micros).transpose()?,
                    blocked: row.try_get("blocked")?,
                    user_id: row.try_get("user_id")?,
                    team_id: row.try_get("team_id")?,
                    created_at: from_micros(row.try_get("created_at_us")?)?,
                    updated_at: from_micros(row.try_get("updated_at_us")?)?,
                })
            }

            fn count(v: i64) -> u64 {
                u64::try_from(v).unwrap_or(0)
            }

            fn bigint(v: u64) -> i64 {
                i64::try_from(v).unwrap_or(i64::MAX)
            }

            fn spend_from_row(row: &DbRow) -> Result<SpendRecord, StoreError> {
                let status: String = row.try_get("status")?;
                Ok(SpendRecord {
                    request_id: row.try_get("request_id")?,
                    call_type: row.try_get("call_type")?,
                    key_id: row.try_get("key_id")?,
                    model: row.try_get("model")?,
                    deployment: row.try_get("deployment")?,
                    provider: row.try_get("provider")?,
                    prompt_tokens: count(row.try_get("prompt_tokens")?),
                    completion_tokens: count(row.try_get("completion_tokens")?),
                    total_tokens: count(row.try_get("total_tokens")?),
                    spend: Nanos(row.try_get("spend_nanos")?),
                    status: SpendStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown spend status {status:?}")))?,
                    error_code: row.try_get("error_code")?,
                    start_time: from_micros(row.try_get("start_time_us")?)?,
                    end_time: from_micros(row.try_get("end_time_us")?)?,
                    duration_ms: row.try_get("duration_ms")?,
                    end_user: row.try_get("end_user")?,
                })
            }

            fn conflict_or(err: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
                match &err {
                    sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
                    _ => StoreError::Database(err),
                }
            }

            fn page<T>(mut items: Vec<T>, size: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
                let size = size as usize;
                let next_token = if items.len() > size {
                    items.truncate(size);
                    items.last().map(&cursor)
                } else {
                    None
                };
                Page { items, next_token }
            }

            #[async_trait::async_trait]
            impl crate::store::Store for $store {
                fn backend(&self) -> &'static str {
                    $backend
                }

                async fn ping(&self) -> Result<(), StoreError> {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                }

                async fn migrate(&self) -> Result<(), StoreError> {
                    Self::migrator().run(&self.pool).await.map_err(|e| StoreError::Migrate(e.to_string()))
                }

                async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
                    sqlx::query(
                        "INSERT INTO keys (key_id, token_hash, key_name, key_alias, models, max_budget_nanos, \
                         spend_nanos, metadata, expires_at_us, blocked, user_id, team_id, created_at_us, updated_at_us) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                    )
                    .bind(&key.key_id)
                    .bind(&key.token_hash)
                    .bind(&key.key_name)
                    .bind(&key.key_alias)
                    .bind(Json(&key.models))
                    .bind(key.max_budget.map(|n| n.0))
                    .bind(key.spend.0)
                    .bind(Json(&key.metadata))
                    .bind(key.expires_at.map(micros))
                    .bind(key.blocked)
                    .bind(&key.user_id)
                    .bind(&key.team_id)
                    .bind(micros(key.created_at))
                    .bind(micros(key.updated_at))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        conflict_or(e, || match &key.key_alias {
                            Some(alias) => format!("a key with alias {alias:?} already exists"),
                            None => "a key with this id or secret already exists".to_owned(),
                        })
                    })?;
                    Ok(())
                }

                async fn key_by_hash(&self, token_hash: &str) -> Result<Option<KeyRecord>, StoreError> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM keys WHERE token_hash = $1")))
                        .bind(token_hash)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(key_from_row).transpose()
                }

                async fn get_key(&self, key_id: &str) -> Result<KeyRecord, StoreError> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_id = $1")))
                        .bind(key_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    match row {
                        Some(row) => key_from_row(&row),
                        None => Err(StoreError::NotFound(format!("no key with id {key_id:?}"))),
                    }
                }

                async fn list_keys(&self, req: &PageRequest) -> Result<Page<KeyRecord>, StoreError> {
                    let size = req.effective_size();
                    let (cursor_us, cursor_id) = match &req.token {
                        Some(t) => {
                            let (us, id) = decode_token(t)?;
                            (Some(us), Some(id))
                        }
                        None => (None, None),
                    };
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {KEY_COLUMNS} FROM keys \
                         WHERE ($1 IS NULL OR created_at_us < $1 OR (created_at_us = $1 AND key_id < $2)) \
                         ORDER BY created_at_us DESC, key_id DESC LIMIT $3"
                    )))
                    .bind(cursor_us)
                    .bind(cursor_id)
                    .bind(i64::from(size) + 1)
                    .fetch_all(&self.pool)
                    .await?;
                    let items = rows.iter().map(key_from_row).collect::<Result<Vec<_>, _>>()?;
                    Ok(page(items, size, |k| encode_token(k.created_at, &k.key_id)))
                }

                async fn delete_key(&self, key_id: &str) -> Result<KeyRecord, StoreError> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DELETE FROM keys WHERE key_id = $1 RETURNING {KEY_COLUMNS}"
                    )))
                    .bind(key_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(row) => key_from_row(&row),
                        None => Err(StoreError::NotFound(format!("no key with id {key_id:?}"))),
                    }
                }

                async fn insert_spend(&self, records: &[SpendRecord]) -> Result<u64, StoreError> {
                    let mut tx = self.pool.begin().await?;
                    let mut per_key: BTreeMap<&str, i64> = BTreeMap::new();
                    let mut inserted = 0;
                    for r in records {
                        let done = sqlx::query(
                            "INSERT INTO spend_logs (request_id, call_type, key_id, model, deployment, provider, \
                             prompt_tokens, completion_tokens, total_tokens, spend_nanos, status, error_code, \
                             start_time_us, end_time_us, duration_ms, end_user) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                             ON CONFLICT (request_id) DO NOTHING",
                        )
                        .bind(&r.request_id)
                        .bind(&r.call_type)
                        .bind(&r.key_id)
                        .bind(&r.model)
                        .bind(&r.deployment)
                        .bind(&r.provider)
                        .bind(bigint(r.prompt_tokens))
                        .bind(bigint(r.completion_tokens))
                        .bind(bigint(r.total_tokens))
                        .bind(r.spend.0)
                        .bind(r.status.as_str())
                        .bind(&r.error_code)
                        .bind(micros(r.start_time))
                        .bind(micros(r.end_time))
                        .bind(r.duration_ms)
                        .bind(&r.end_user)
                        .execute(&mut *tx)
                        .await?;
                        if done.rows_affected() == 1 {
                            inserted += 1;
                            let sum = per_key.entry(r.key_id.as_str()).or_insert(0);
                            *sum = sum.saturating_add(r.spend.0);
                        }
                    }
                    for (key_id, spend) in per_key {
                        if spend != 0 {
                            sqlx::query(
                                "UPDATE keys SET spend_nanos = spend_nanos + $1 WHERE key_id = $2",
                            )
                            .bind(spend)
                            .bind(key_id)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(inserted)
                }

                async fn list_spend(&self, q: &SpendQuery, req: &PageRequest) -> Result<Page<SpendRecord>, StoreError> {
                    let size = req.effective_size();
                    let (cursor_us, cursor_id) = match &req.token {
                        Some(t) => {
                            let (us, id) = decode_token(t)?;
                            (Some(us), Some(id))
                        }
                        None => (None, None),
                    };
                    let rows = sqlx::query(
                        "SELECT request_id, call_type, key_id, model, deployment, provider, prompt_tokens, \
                         completion_tokens, total_tokens, spend_nanos, status, error_code, start_time_us, \
                         end_time_us, duration_ms, end_user FROM spend_logs \
                         WHERE ($1 IS NULL OR key_id = $1) AND ($2 IS NULL OR request_id = $2) \
                         AND ($3 IS NULL OR end_user = $3) AND ($4 IS NULL OR start_time_us >= $4) \
                         AND ($5 IS NULL OR start_time_us < $5) \
                         AND ($6 IS NULL OR start_time_us < $6 OR (start_time_us = $6 AND request_id < $7)) \
                         ORDER BY start_time_us DESC, request_id DESC LIMIT $8",
                    )
                    .bind(&q.key_id)
                    .bind(&q.request_id)
                    .bind(&q.end_user)
                    .bind(q.start.map(micros))
                    .bind(q.end.map(micros))
                    .bind(cursor_us)
                    .bind(cursor_id)
                    .bind(i64::from(size) + 1)
                    .fetch_all(&self.pool)
                    .await?;
                    let items = rows.iter().map(spend_from_row).collect::<Result<Vec<_>, _>>()?;
                    Ok(page(items, size, |r| encode_token(r.start_time, &r.request_id)))
                }
            }
        }
    };
}

pub(crate) use impl_store;
