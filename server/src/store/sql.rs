//! The SQL both backends share, stamped out once per sqlx driver by [`impl_store!`].
//!
//! The two dialects accept the same statements here (`$N` parameters, `ON CONFLICT`,
//! `RETURNING`, BIGINT money and times, JSON as text); a macro rather than generics keeps
//! sqlx's per-driver trait bounds out of sight. What differs is passed in: how a writing
//! transaction begins, and how the audit chain's head row is locked. Table names in the SQL
//! come only from [`crate::store::Table::name`], never from input.

/// Spend records per multi-row INSERT: 20 parameters each, well under SQLite's 32,766 and
/// PostgreSQL's 65,535 bind parameters per statement.
pub(super) const SPEND_ROWS_PER_STATEMENT: usize = 256;

/// Implements [`crate::store::Store`] for `$store` (which has `pool: sqlx::Pool<$db>` and
/// `fn migrator() -> Migrator`).
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:literal, begin_write: $begin:literal, lock_head: $lock_head:literal) => {
        mod shared_sql {
            use std::collections::BTreeMap;

            use chrono::{DateTime, Utc};
            use serde_json::Value;
            use sqlx::types::Json;
            use sqlx::{AssertSqlSafe, Row as _};

            use super::*;
            use crate::pricing::Nanos;
            use crate::store::{
                AuditDraft, AuditEntry, AuditHead, AuditQuery, Actor, Change, Charge, KeyMatch, Membership, MembershipFilter, Page,
                PageRequest, Row, RowFilter, Scope, SpendQuery, SpendRecord, SpendStatus, StoreError, Table,
                bounds::{any_nul, check_commit},
                decode_token, encode_token, from_micros, micros,
            };

            type DbRow = <$db as sqlx::Database>::Row;
            type Tx<'a> = sqlx::Transaction<'a, $db>;

            const ROW_COLUMNS: &str = "id, alias, organization_id, team_id, user_id, token_hash, data, spend_nanos, \
                version, created_at_us, updated_at_us";

            fn parse_json(text: &str, what: &str) -> Result<Value, StoreError> {
                serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
            }

            fn row_from(r: &DbRow) -> Result<Row, StoreError> {
                let data: Json<Value> = r.try_get("data")?;
                Ok(Row {
                    id: r.try_get("id")?,
                    alias: r.try_get("alias")?,
                    organization_id: r.try_get("organization_id")?,
                    team_id: r.try_get("team_id")?,
                    user_id: r.try_get("user_id")?,
                    token_hash: r.try_get("token_hash")?,
                    data: data.0,
                    spend: Nanos(r.try_get("spend_nanos")?),
                    version: r.try_get("version")?,
                    created_at: from_micros(r.try_get("created_at_us")?)?,
                    updated_at: from_micros(r.try_get("updated_at_us")?)?,
                })
            }

            fn membership_from(r: &DbRow) -> Result<Membership, StoreError> {
                let scope: String = r.try_get("scope")?;
                let data: Json<Value> = r.try_get("data")?;
                Ok(Membership {
                    scope: Scope::parse(&scope).ok_or_else(|| StoreError::Corrupt(format!("scope {scope:?}")))?,
                    scope_id: r.try_get("scope_id")?,
                    user_id: r.try_get("user_id")?,
                    role: r.try_get("role")?,
                    data: data.0,
                    spend: Nanos(r.try_get("spend_nanos")?),
                    created_at: from_micros(r.try_get("created_at_us")?)?,
                    updated_at: from_micros(r.try_get("updated_at_us")?)?,
                })
            }

            fn audit_from(r: &DbRow) -> Result<AuditEntry, StoreError> {
                let before: Option<String> = r.try_get("before_value")?;
                let after: Option<String> = r.try_get("after_value")?;
                Ok(AuditEntry {
                    seq: r.try_get("seq")?,
                    entry_id: r.try_get("entry_id")?,
                    draft: AuditDraft {
                        at: from_micros(r.try_get("at_us")?)?,
                        actor: Actor {
                            user_id: r.try_get("actor_user_id")?,
                            key_id: r.try_get("actor_key_id")?,
                            role: r.try_get("actor_role")?,
                        },
                        action: r.try_get("action")?,
                        object_type: r.try_get("object_type")?,
                        object_id: r.try_get("object_id")?,
                        before: before.as_deref().map(|t| parse_json(t, "audit before")).transpose()?,
                        after: after.as_deref().map(|t| parse_json(t, "audit after")).transpose()?,
                        request_id: r.try_get("request_id")?,
                        source_addr: r.try_get("source_addr")?,
                    },
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
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
                    user_id: row.try_get("user_id")?,
                    team_id: row.try_get("team_id")?,
                    organization_id: row.try_get("organization_id")?,
                    tags: match row.try_get::<Option<String>, _>("tags")? {
                        Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("spend tags: {e}")))?,
                        None => Vec::new(),
                    },
                    charges: Vec::new(),
                    cache_hit: row.try_get("cache_hit")?,
                    metadata: match row.try_get::<Option<String>, _>("metadata")? {
                        Some(m) => Some(
                            serde_json::from_str(&m).map_err(|e| StoreError::Corrupt(format!("spend metadata: {e}")))?,
                        ),
                        None => None,
                    },
                })
            }

            /// A unique violation names what was taken; anything else stays a database error.
            fn conflict_or(err: sqlx::Error, table: Table, row: &Row) -> StoreError {
                match &err {
                    sqlx::Error::Database(db) if db.is_unique_violation() => {
                        let what = table.object_type();
                        let detail = db.message().to_ascii_lowercase();
                        if detail.contains("alias") || detail.contains("email") {
                            match &row.alias {
                                Some(a) => StoreError::Conflict(format!("a {what} named {a:?} already exists")),
                                None => StoreError::Conflict(format!("the {what} already exists")),
                            }
                        } else if detail.contains("token") {
                            StoreError::Conflict(format!("that {what} secret is already in use"))
                        } else {
                            StoreError::Conflict(format!("a {what} with id {:?} already exists", row.id))
                        }
                    }
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

            fn cursor(req: &PageRequest) -> Result<(Option<i64>, Option<String>), StoreError> {
                match &req.token {
                    Some(t) => {
                        let (us, id) = decode_token(t)?;
                        Ok((Some(us), Some(id)))
                    }
                    None => Ok((None, None)),
                }
            }

            async fn apply(tx: &mut Tx<'_>, change: &Change) -> Result<(), StoreError> {
                match change {
                    Change::Insert(table, row) => {
                        sqlx::query(AssertSqlSafe(format!(
                            "INSERT INTO {} ({ROW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                            table.name()
                        )))
                        .bind(&row.id)
                        .bind(&row.alias)
                        .bind(&row.organization_id)
                        .bind(&row.team_id)
                        .bind(&row.user_id)
                        .bind(&row.token_hash)
                        .bind(Json(&row.data))
                        .bind(row.spend.0)
                        .bind(row.version)
                        .bind(micros(row.created_at))
                        .bind(micros(row.updated_at))
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| conflict_or(e, *table, row))?;
                    }
                    Change::Update(table, row) => {
                        let done = sqlx::query(AssertSqlSafe(format!(
                            "UPDATE {} SET alias = $2, organization_id = $3, team_id = $4, user_id = $5, token_hash = $6, \
                             data = $7, version = $8, updated_at_us = $9 WHERE id = $1 AND version = $10",
                            table.name()
                        )))
                        .bind(&row.id)
                        .bind(&row.alias)
                        .bind(&row.organization_id)
                        .bind(&row.team_id)
                        .bind(&row.user_id)
                        .bind(&row.token_hash)
                        .bind(Json(&row.data))
                        .bind(row.version)
                        .bind(micros(row.updated_at))
                        .bind(row.version - 1)
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| conflict_or(e, *table, row))?;
                        if done.rows_affected() == 0 {
                            let exists = sqlx::query(AssertSqlSafe(format!("SELECT 1 FROM {} WHERE id = $1", table.name())))
                                .bind(&row.id)
                                .fetch_optional(&mut **tx)
                                .await?;
                            let what = table.object_type();
                            return Err(match exists {
                                Some(_) => StoreError::Conflict(format!(
                                    "the {what} {:?} was changed by someone else meanwhile; read it again and retry",
                                    row.id
                                )),
                                None => StoreError::NotFound(format!("no {what} with id {:?}", row.id)),
                            });
                        }
                    }
                    Change::Delete(table, id) => {
                        let done = sqlx::query(AssertSqlSafe(format!("DELETE FROM {} WHERE id = $1", table.name())))
                            .bind(id)
                            .execute(&mut **tx)
                            .await?;
                        if done.rows_affected() == 0 {
                            return Err(StoreError::NotFound(format!("no {} with id {id:?}", table.object_type())));
                        }
                    }
                    Change::PutMembership(m) => {
                        sqlx::query(
                            "INSERT INTO memberships (scope, scope_id, user_id, role, data, spend_nanos, created_at_us, \
                             updated_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                             ON CONFLICT (scope, scope_id, user_id) DO UPDATE SET role = $4, data = $5, updated_at_us = $8",
                        )
                        .bind(m.scope.as_str())
                        .bind(&m.scope_id)
                        .bind(&m.user_id)
                        .bind(&m.role)
                        .bind(Json(&m.data))
                        .bind(m.spend.0)
                        .bind(micros(m.created_at))
                        .bind(micros(m.updated_at))
                        .execute(&mut **tx)
                        .await?;
                    }
                    Change::DeleteMembership { scope, scope_id, user_id } => {
                        let done = sqlx::query("DELETE FROM memberships WHERE scope = $1 AND scope_id = $2 AND user_id = $3")
                            .bind(scope.as_str())
                            .bind(scope_id)
                            .bind(user_id)
                            .execute(&mut **tx)
                            .await?;
                        if done.rows_affected() == 0 {
                            return Err(StoreError::NotFound(format!(
                                "user {user_id:?} is not a member of {} {scope_id:?}",
                                if *scope == Scope::Team { "team" } else { "organization" }
                            )));
                        }
                    }
                    Change::DeleteMembershipsOfScope { scope, scope_id } => {
                        sqlx::query("DELETE FROM memberships WHERE scope = $1 AND scope_id = $2")
                            .bind(scope.as_str())
                            .bind(scope_id)
                            .execute(&mut **tx)
                            .await?;
                    }
                    Change::DeleteMembershipsOfUser(user_id) => {
                        sqlx::query("DELETE FROM memberships WHERE user_id = $1").bind(user_id).execute(&mut **tx).await?;
                    }
                    Change::AddKeyGrace { token_hash, key_id, revoke_at } => {
                        sqlx::query(
                            "INSERT INTO key_grace (token_hash, key_id, revoke_at_us) VALUES ($1, $2, $3) \
                             ON CONFLICT (token_hash) DO UPDATE SET key_id = $2, revoke_at_us = $3",
                        )
                        .bind(token_hash)
                        .bind(key_id)
                        .bind(micros(*revoke_at))
                        .execute(&mut **tx)
                        .await?;
                    }
                    Change::DeleteKeyGrace(key_id) => {
                        sqlx::query("DELETE FROM key_grace WHERE key_id = $1").bind(key_id).execute(&mut **tx).await?;
                    }
                }
                Ok(())
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

                async fn get(&self, table: Table, id: &str) -> Result<Option<Row>, StoreError> {
                    if any_nul([Some(id)]) {
                        return Ok(None);
                    }
                    let row = sqlx::query(AssertSqlSafe(format!("SELECT {ROW_COLUMNS} FROM {} WHERE id = $1", table.name())))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(row_from).transpose()
                }

                async fn list(&self, table: Table, f: &RowFilter, req: &PageRequest) -> Result<Page<Row>, StoreError> {
                    let size = req.effective_size();
                    let (cursor_us, cursor_id) = cursor(req)?;
                    if any_nul([&f.organization_id, &f.team_id, &f.user_id, &f.alias].map(Option::as_deref)) {
                        return Ok(Page { items: Vec::new(), next_token: None });
                    }
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {ROW_COLUMNS} FROM {} \
                         WHERE ($1 IS NULL OR organization_id = $1) AND ($2 IS NULL OR team_id = $2) \
                         AND ($3 IS NULL OR user_id = $3) AND ($4 IS NULL OR alias = $4) \
                         AND ($5 IS NULL OR created_at_us < $5 OR (created_at_us = $5 AND id < $6)) \
                         ORDER BY created_at_us DESC, id DESC LIMIT $7",
                        table.name()
                    )))
                    .bind(&f.organization_id)
                    .bind(&f.team_id)
                    .bind(&f.user_id)
                    .bind(&f.alias)
                    .bind(cursor_us)
                    .bind(cursor_id)
                    .bind(i64::from(size) + 1)
                    .fetch_all(&self.pool)
                    .await?;
                    let items = rows.iter().map(row_from).collect::<Result<Vec<_>, _>>()?;
                    Ok(page(items, size, |r| encode_token(r.created_at, &r.id)))
                }

                async fn key_by_hash(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<KeyMatch>, StoreError> {
                    if any_nul([Some(token_hash)]) {
                        return Ok(None);
                    }
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {ROW_COLUMNS}, CAST(NULL AS BIGINT) AS revoke_at_us FROM keys WHERE token_hash = $1 \
                         UNION ALL SELECT {}, g.revoke_at_us FROM keys k JOIN key_grace g ON g.key_id = k.id \
                         WHERE g.token_hash = $1 AND g.revoke_at_us > $2 LIMIT 1",
                        ROW_COLUMNS.split(", ").map(|c| format!("k.{c}")).collect::<Vec<_>>().join(", ")
                    )))
                    .bind(token_hash)
                    .bind(micros(now))
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        None => Ok(None),
                        Some(r) => {
                            let grace: Option<i64> = r.try_get("revoke_at_us")?;
                            Ok(Some(KeyMatch { row: row_from(&r)?, grace_until: grace.map(from_micros).transpose()? }))
                        }
                    }
                }

                async fn memberships(&self, f: &MembershipFilter) -> Result<Vec<Membership>, StoreError> {
                    if any_nul([f.scope_id.as_deref(), f.user_id.as_deref()]) {
                        return Ok(Vec::new());
                    }
                    let rows = sqlx::query(
                        "SELECT scope, scope_id, user_id, role, data, spend_nanos, created_at_us, updated_at_us \
                         FROM memberships WHERE ($1 IS NULL OR scope = $1) AND ($2 IS NULL OR scope_id = $2) \
                         AND ($3 IS NULL OR user_id = $3) ORDER BY scope, scope_id, user_id",
                    )
                    .bind(f.scope.map(Scope::as_str))
                    .bind(&f.scope_id)
                    .bind(&f.user_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(membership_from).collect()
                }

                async fn commit(&self, changes: &[Change], audit: &[AuditDraft]) -> Result<Vec<AuditEntry>, StoreError> {
                    check_commit(changes, audit)?;
                    let mut tx = self.pool.begin_with($begin).await?;
                    for c in changes {
                        apply(&mut tx, c).await?;
                    }
                    let mut entries = Vec::with_capacity(audit.len());
                    if !audit.is_empty() {
                        let head = sqlx::query($lock_head).fetch_one(&mut *tx).await?;
                        let mut seq: i64 = head.try_get("seq")?;
                        let mut prev: String = head.try_get("hash")?;
                        for draft in audit {
                            seq += 1;
                            let entry_id = uuid::Uuid::new_v4().to_string();
                            let hash = crate::audit::entry_hash(seq, &entry_id, draft, &prev);
                            sqlx::query(
                                "INSERT INTO audit_log (seq, entry_id, at_us, actor_user_id, actor_key_id, actor_role, \
                                 action, object_type, object_id, before_value, after_value, request_id, source_addr, \
                                 prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                            )
                            .bind(seq)
                            .bind(&entry_id)
                            .bind(micros(draft.at))
                            .bind(&draft.actor.user_id)
                            .bind(&draft.actor.key_id)
                            .bind(&draft.actor.role)
                            .bind(&draft.action)
                            .bind(&draft.object_type)
                            .bind(&draft.object_id)
                            .bind(draft.before.as_ref().map(crate::audit::canonical))
                            .bind(draft.after.as_ref().map(crate::audit::canonical))
                            .bind(&draft.request_id)
                            .bind(&draft.source_addr)
                            .bind(&prev)
                            .bind(&hash)
                            .execute(&mut *tx)
                            .await?;
                            entries.push(AuditEntry { seq, entry_id, draft: draft.clone(), prev_hash: prev, hash: hash.clone() });
                            prev = hash;
                        }
                        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                            .bind(seq)
                            .bind(&prev)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(entries)
                }

                async fn list_audit(&self, q: &AuditQuery, req: &PageRequest) -> Result<Page<AuditEntry>, StoreError> {
                    let size = req.effective_size();
                    let before_seq: Option<i64> = match &req.token {
                        Some(t) => Some(decode_token(t)?.0),
                        None => None,
                    };
                    if any_nul([&q.actor_user_id, &q.actor_key_id, &q.action, &q.object_type, &q.object_id].map(Option::as_deref)) {
                        return Ok(Page { items: Vec::new(), next_token: None });
                    }
                    let rows = sqlx::query(
                        "SELECT * FROM audit_log WHERE ($1 IS NULL OR actor_user_id = $1) \
                         AND ($2 IS NULL OR actor_key_id = $2) AND ($3 IS NULL OR action = $3) \
                         AND ($4 IS NULL OR object_type = $4) AND ($5 IS NULL OR object_id = $5) \
                         AND ($6 IS NULL OR at_us >= $6) AND ($7 IS NULL OR at_us < $7) AND ($8 IS NULL OR seq < $8) \
                         ORDER BY seq DESC LIMIT $9",
                    )
                    .bind(&q.actor_user_id)
                    .bind(&q.actor_key_id)
                    .bind(&q.action)
                    .bind(&q.object_type)
                    .bind(&q.object_id)
                    .bind(q.start.map(micros))
                    .bind(q.end.map(micros))
                    .bind(before_seq)
                    .bind(i64::from(size) + 1)
                    .fetch_all(&self.pool)
                    .await?;
                    let items = rows.iter().map(audit_from).collect::<Result<Vec<_>, _>>()?;
                    Ok(page(items, size, |e| {
                        crate::store::encode_seq_token(e.seq)
                    }))
                }

                async fn scan_audit(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
                    let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                        .bind(after)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(audit_from).collect()
                }

                async fn audit_head(&self) -> Result<AuditHead, StoreError> {
                    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.pool).await?;
                    Ok(AuditHead { seq: row.try_get("seq")?, hash: row.try_get("hash")? })
                }

                async fn insert_spend(&self, records: &[SpendRecord]) -> Result<u64, StoreError> {
                    let mut tx = self.pool.begin_with($begin).await?;
                    // Sums per scope and period, and lifetime sums per entity, of new records only.
                    let mut per_period: BTreeMap<&Charge, i64> = BTreeMap::new();
                    let mut per_entity: BTreeMap<(&str, &str), i64> = BTreeMap::new();
                    // One multi-row INSERT per chunk (one round trip to the database), which
                    // says which records are new: only those are counted.
                    let mut new_ids: std::collections::HashSet<String> = std::collections::HashSet::new();
                    for chunk in records.chunks(crate::store::sql::SPEND_ROWS_PER_STATEMENT) {
                        let mut insert = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO spend_logs (request_id, call_type, key_id, model, deployment, provider, \
                             prompt_tokens, completion_tokens, total_tokens, spend_nanos, status, error_code, \
                             start_time_us, end_time_us, duration_ms, end_user, user_id, team_id, organization_id, tags, cache_hit, \
                             metadata) ",
                        );
                        insert.push_values(chunk, |mut row, r| {
                            row.push_bind(r.request_id.clone())
                                .push_bind(r.call_type.clone())
                                .push_bind(r.key_id.clone())
                                .push_bind(r.model.clone())
                                .push_bind(r.deployment.clone())
                                .push_bind(r.provider.clone())
                                .push_bind(bigint(r.prompt_tokens))
                                .push_bind(bigint(r.completion_tokens))
                                .push_bind(bigint(r.total_tokens))
                                .push_bind(r.spend.0)
                                .push_bind(r.status.as_str())
                                .push_bind(r.error_code.clone())
                                .push_bind(micros(r.start_time))
                                .push_bind(micros(r.end_time))
                                .push_bind(r.duration_ms)
                                .push_bind(r.end_user.clone())
                                .push_bind(r.user_id.clone())
                                .push_bind(r.team_id.clone())
                                .push_bind(r.organization_id.clone())
                                .push_bind((!r.tags.is_empty()).then(|| serde_json::to_string(&r.tags).unwrap_or_default()))
                                .push_bind(r.cache_hit)
                                .push_bind(r.metadata.as_ref().map(serde_json::Value::to_string));
                        });
                        insert.push(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
                        for row in insert.build().fetch_all(&mut *tx).await? {
                            new_ids.insert(row.try_get::<String, _>(0)?);
                        }
                    }
                    let fresh: Vec<&SpendRecord> = records.iter().filter(|r| new_ids.remove(&r.request_id)).collect();
                    let inserted = fresh.len() as u64;
                    // A customer seen for the first time is created with its first record.
                    let mut customers: BTreeMap<&str, i64> = BTreeMap::new();
                    for r in &fresh {
                        if let Some(c) = &r.end_user {
                            customers.entry(c.as_str()).or_insert(micros(r.start_time));
                        }
                    }
                    for (customer, first_seen) in customers {
                        sqlx::query(AssertSqlSafe(format!(
                            "INSERT INTO customers ({ROW_COLUMNS}) VALUES ($1, NULL, NULL, NULL, NULL, NULL, $2, 0, 1, $3, $3) \
                             ON CONFLICT (id) DO NOTHING"
                        )))
                        .bind(customer)
                        .bind(Json(serde_json::json!({"user_id": customer})))
                        .bind(first_seen)
                        .execute(&mut *tx)
                        .await?;
                    }
                    for r in fresh {
                        if r.spend.0 == 0 {
                            continue;
                        }
                        let mut entities: Vec<(&str, &str)> = vec![("key", r.key_id.as_str())];
                        for c in &r.charges {
                            let sum = per_period.entry(c).or_insert(0);
                            *sum = sum.saturating_add(r.spend.0);
                            let entity = (c.scope.as_str(), c.scope_id.as_str());
                            if matches!(entity.0, "user" | "team" | "org" | "customer" | "team_member" | "tag")
                                && !entities.contains(&entity)
                            {
                                entities.push(entity);
                            }
                        }
                        // Lifetime totals, once per entity per record.
                        for e in entities {
                            let sum = per_entity.entry(e).or_insert(0);
                            *sum = sum.saturating_add(r.spend.0);
                        }
                    }
                    for (c, spend) in per_period {
                        sqlx::query(
                            "INSERT INTO budget_spend (scope, scope_id, period_start_us, spend_nanos) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (scope, scope_id, period_start_us) DO UPDATE SET spend_nanos = budget_spend.spend_nanos + excluded.spend_nanos",
                        )
                        .bind(&c.scope)
                        .bind(&c.scope_id)
                        .bind(c.period_start_us)
                        .bind(spend)
                        .execute(&mut *tx)
                        .await?;
                    }
                    for ((scope, id), spend) in per_entity {
                        if scope == "team_member" {
                            let (team, user) = id.split_once(':').unwrap_or((id, ""));
                            sqlx::query("UPDATE memberships SET spend_nanos = spend_nanos + $1 WHERE scope = 'team' AND scope_id = $2 AND user_id = $3")
                                .bind(spend)
                                .bind(team)
                                .bind(user)
                                .execute(&mut *tx)
                                .await?;
                            continue;
                        }
                        let table = match scope {
                            "key" => "keys",
                            "user" => "users",
                            "team" => "teams",
                            "org" => "organizations",
                            "tag" => "tags",
                            _ => "customers",
                        };
                        sqlx::query(AssertSqlSafe(format!("UPDATE {table} SET spend_nanos = spend_nanos + $1 WHERE id = $2")))
                            .bind(spend)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(inserted)
                }

                async fn period_spend(&self, charges: &[Charge]) -> Result<Vec<Nanos>, StoreError> {
                    let mut out = Vec::with_capacity(charges.len());
                    for c in charges {
                        let row = sqlx::query(
                            "SELECT spend_nanos FROM budget_spend WHERE scope = $1 AND scope_id = $2 AND period_start_us = $3",
                        )
                        .bind(&c.scope)
                        .bind(&c.scope_id)
                        .bind(c.period_start_us)
                        .fetch_optional(&self.pool)
                        .await?;
                        out.push(Nanos(match row {
                            Some(r) => r.try_get("spend_nanos")?,
                            None => 0,
                        }));
                    }
                    Ok(out)
                }

                async fn list_spend(&self, q: &SpendQuery, req: &PageRequest) -> Result<Page<SpendRecord>, StoreError> {
                    let size = req.effective_size();
                    let (cursor_us, cursor_id) = cursor(req)?;
                    if any_nul([&q.key_id, &q.request_id, &q.end_user, &q.user_id, &q.team_id].map(Option::as_deref)) {
                        return Ok(Page { items: Vec::new(), next_token: None });
                    }
                    let rows = sqlx::query(
                        "SELECT request_id, call_type, key_id, model, deployment, provider, prompt_tokens, \
                         completion_tokens, total_tokens, spend_nanos, status, error_code, start_time_us, \
                         end_time_us, duration_ms, end_user, user_id, team_id, organization_id, tags, cache_hit, metadata FROM spend_logs \
                         WHERE ($1 IS NULL OR key_id = $1) AND ($2 IS NULL OR request_id = $2) \
                         AND ($3 IS NULL OR end_user = $3) AND ($4 IS NULL OR start_time_us >= $4) \
                         AND ($5 IS NULL OR start_time_us < $5) \
                         AND ($6 IS NULL OR start_time_us < $6 OR (start_time_us = $6 AND request_id < $7)) \
                         AND ($9 IS NULL OR user_id = $9) AND ($10 IS NULL OR team_id = $10) \
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
                    .bind(&q.user_id)
                    .bind(&q.team_id)
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
