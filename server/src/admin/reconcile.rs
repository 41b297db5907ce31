//! Reconciliation: makes the governance a config file declares ([`Declared`]) the stored
//! state, idempotently, at start, on SIGHUP and on `ferryman config apply`.
//!
//! [`plan`] compares the file with the store and returns the changes, their audit entries
//! (actor `config`) and one line per change; `ferryman config diff` prints the lines, and
//! [`apply`] commits the changes in one transaction, so an apply lands whole or not at all.
//!
//! Only resources marked `managed_by: config` are ever changed or deleted. A declared id that
//! already belongs to an API-made resource is a conflict and the apply is refused (customers
//! are the exception: traffic creates them before anyone declares them, so they are adopted).
//! A config-managed resource the file no longer declares is deleted when
//! `general_settings.config_prune` is on, unless API-made resources still depend on it (a team
//! with API-made keys, say); then, or with pruning off, it is kept and reported.
//!
//! Updates replace settings only: spend, budget periods and counters live beside the settings
//! and survive every reconcile.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::config::governance::{Declared, DeclaredMember, MANAGED_BY};
use crate::gateway::Gateway;
use crate::pricing::Nanos;
use crate::store::{
    Actor, AuditDraft, Change, Membership, MembershipFilter, PageRequest, Row, RowFilter, Scope, Store, StoreError,
    Table,
};
use crate::sync::Invalidation;
use crate::tenancy::{Resource, to_row};

/// The audit actor of every change a reconcile makes.
pub fn actor() -> Actor {
    Actor { user_id: None, key_id: Some(MANAGED_BY.to_owned()), role: MANAGED_BY.to_owned() }
}

/// What an apply would do.
#[derive(Debug, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub audit: Vec<AuditDraft>,
    /// One line per change: `+ team t1`, `~ team t1: max_budget 100 → 150`, `- key k1`.
    pub lines: Vec<String>,
    /// Config-managed resources the file dropped that stay, and why.
    pub kept: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Declared resources that cannot be applied, one message each.
    #[error("{}", .0.join("; "))]
    Conflicts(Vec<String>),
}

/// The stored rows of a table, by id.
async fn all_rows(store: &dyn Store, table: Table) -> Result<HashMap<String, Row>, StoreError> {
    let mut out = HashMap::new();
    let mut token = None;
    loop {
        let page = store.list(table, &RowFilter::default(), &PageRequest { size: 500, token }).await?;
        out.extend(page.items.into_iter().map(|r| (r.id.clone(), r)));
        match page.next_token {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

fn is_managed(row: &Row) -> bool {
    row.data.get("managed_by").and_then(Value::as_str) == Some(MANAGED_BY)
}

/// The settings a reconcile compares: the document without who made or last changed it.
fn settings(data: &Value) -> Value {
    let mut v = data.clone();
    if let Value::Object(m) = &mut v {
        m.remove("created_by");
        m.remove("updated_by");
    }
    v
}

/// A field's value as a diff line shows it: USD for money, JSON otherwise.
fn shown(field: &str, v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "(none)".to_owned(),
        Some(Value::Number(n)) if matches!(field, "max_budget" | "soft_budget" | "max_budget_in_team") => {
            n.as_i64().map_or_else(|| n.to_string(), |n| Nanos(n).to_string())
        }
        Some(Value::String(s)) if field == "token_hash" => format!("sha256:{}...", s.get(..8).unwrap_or(s)),
        Some(other) => other.to_string(),
    }
}

/// `field old → new` for every field that differs.
fn field_diff(before: &Value, after: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let names: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    names
        .into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| format!("{k} {} → {}", shown(k, b.get(k)), shown(k, a.get(k))))
        .collect()
}

struct Planner<'a> {
    now: DateTime<Utc>,
    request_id: String,
    prune: bool,
    rows: HashMap<Table, HashMap<String, Row>>,
    conflicts: Vec<String>,
    /// Deletions, children before parents, then upserts, parents before children.
    deletes: Vec<Change>,
    upserts: Vec<Change>,
    audit: Vec<AuditDraft>,
    lines: Vec<String>,
    kept: Vec<String>,
    /// What this plan deletes.
    deleted: HashSet<(Table, String)>,
    /// Every stored membership.
    memberships: Vec<Membership>,
    declared: &'a Declared,
}

impl Planner<'_> {
    fn audit(&mut self, action: &str, object_type: &str, id: &str, before: Option<Value>, after: Option<Value>) {
        self.audit.push(AuditDraft {
            at: self.now,
            actor: actor(),
            action: action.to_owned(),
            object_type: object_type.to_owned(),
            object_id: id.to_owned(),
            before,
            after,
            request_id: Some(self.request_id.clone()),
            source_addr: None,
        });
    }

    fn rows(&self, table: Table) -> impl Iterator<Item = &Row> {
        self.rows.get(&table).into_iter().flat_map(|m| m.values())
    }

    /// Creates or updates each declared resource of one table.
    fn upsert<R: Resource>(&mut self, declared: &[R]) {
        let kind = R::TABLE.object_type();
        for d in declared {
            let id = d.id().to_owned();
            let mut row = to_row(d);
            match self.rows.get(&R::TABLE).and_then(|m| m.get(&id)).cloned() {
                None => {
                    row.created_at = self.now;
                    row.updated_at = self.now;
                    self.lines.push(format!("+ {kind} {id}"));
                    self.audit("created", kind, &id, None, Some(snapshot(&row)));
                    self.upserts.push(Change::Insert(R::TABLE, row));
                }
                Some(cur) if !is_managed(&cur) && R::TABLE != Table::Customers => {
                    self.conflicts.push(format!(
                        "{kind} {id:?} already exists and was made through the API; a config file cannot take it \
                         over (rename it in the file, or delete it through the API first)"
                    ));
                }
                Some(cur) => {
                    if let (Value::Object(m), Some(cb)) = (&mut row.data, cur.data.get("created_by")) {
                        m.insert("created_by".to_owned(), cb.clone());
                    }
                    let (before, after) = (settings(&cur.data), settings(&row.data));
                    if before == after {
                        continue;
                    }
                    row.spend = cur.spend;
                    row.version = cur.version + 1;
                    // A unique column (an alias, an email, a secret) that moves between two
                    // declared rows is let go first, so the order of updates cannot clash.
                    let moved = |old: &Option<String>, new: &Option<String>| old.is_some() && old != new;
                    if moved(&cur.alias, &row.alias) || moved(&cur.token_hash, &row.token_hash) {
                        let released = Row {
                            alias: None,
                            token_hash: None,
                            version: cur.version + 1,
                            updated_at: self.now,
                            ..cur.clone()
                        };
                        self.deletes.push(Change::Update(R::TABLE, released));
                        row.version = cur.version + 2;
                    }
                    row.created_at = cur.created_at;
                    row.updated_at = self.now;
                    let verb = if is_managed(&cur) { "updated" } else { "adopted" };
                    self.lines.push(format!("~ {kind} {id}: {}", field_diff(&before, &after).join(", ")));
                    self.audit(verb, kind, &id, Some(snapshot(&cur)), Some(snapshot(&row)));
                    self.upserts.push(Change::Update(R::TABLE, row));
                }
            }
        }
    }

    /// The config-managed rows of a table the file no longer declares.
    fn dropped(&self, table: Table, declared: &HashSet<&str>) -> Vec<Row> {
        let mut out: Vec<Row> =
            self.rows(table).filter(|r| is_managed(r) && !declared.contains(r.id.as_str())).cloned().collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Deletes a dropped resource, or keeps it and says why.
    fn prune(&mut self, table: Table, row: &Row, blockers: Vec<String>, cascade: Vec<Change>) {
        let kind = table.object_type();
        if !self.prune {
            self.kept.push(format!("{kind} {} is no longer in the file; kept (config_prune: false)", row.id));
            return;
        }
        if !blockers.is_empty() {
            self.kept.push(format!(
                "{kind} {} is no longer in the file; kept because resources that stay depend on it: {}",
                row.id,
                blockers.join(", ")
            ));
            return;
        }
        self.lines.push(format!("- {kind} {}", row.id));
        self.deleted.insert((table, row.id.clone()));
        self.audit("deleted", kind, &row.id, Some(snapshot(row)), None);
        self.deletes.extend(cascade);
        self.deletes.push(Change::Delete(table, row.id.clone()));
    }

    /// Rows of `table` that stay (this plan does not delete them) and whose `column` names
    /// `id`: they would be left pointing at nothing.
    fn dependents(&self, table: Table, id: &str, column: fn(&Row) -> Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = self
            .rows(table)
            .filter(|r| column(r) == Some(id) && !self.deleted.contains(&(table, r.id.clone())))
            .map(|r| format!("{} {}", table.object_type(), r.id))
            .collect();
        out.sort();
        out
    }

    /// Memberships of `user` in teams and organizations this plan neither declares nor
    /// deletes (those made through the API).
    fn foreign_memberships(&self, user: &str) -> Vec<String> {
        let d = self.declared;
        let declared = |m: &Membership| match m.scope {
            Scope::Team => d.teams.iter().any(|t| t.team_id == m.scope_id),
            Scope::Org => d.organizations.iter().any(|o| o.organization_id == m.scope_id),
        };
        let table = |s: Scope| if s == Scope::Team { Table::Teams } else { Table::Organizations };
        let mut out: Vec<String> = self
            .memberships
            .iter()
            .filter(|m| m.user_id == user && !declared(m))
            .filter(|m| !self.deleted.contains(&(table(m.scope), m.scope_id.clone())))
            .map(|m| format!("membership of {} {}", table(m.scope).object_type(), m.scope_id))
            .collect();
        out.sort();
        out
    }

    fn prune_all(&mut self) {
        let d = self.declared;
        let keys: HashSet<&str> = d.keys.iter().map(|k| k.key_id.as_str()).collect();
        for row in self.dropped(Table::Keys, &keys) {
            let cascade = vec![Change::DeleteKeyGrace(row.id.clone())];
            self.prune(Table::Keys, &row, Vec::new(), cascade);
        }
        let teams: HashSet<&str> = d.teams.iter().map(|t| t.team_id.as_str()).collect();
        for row in self.dropped(Table::Teams, &teams) {
            let blockers = self.dependents(Table::Keys, &row.id, |r| r.team_id.as_deref());
            let cascade = vec![Change::DeleteMembershipsOfScope { scope: Scope::Team, scope_id: row.id.clone() }];
            self.prune(Table::Teams, &row, blockers, cascade);
        }
        let users: HashSet<&str> = d.users.iter().map(|u| u.user_id.as_str()).collect();
        for row in self.dropped(Table::Users, &users) {
            let mut blockers = self.dependents(Table::Keys, &row.id, |r| r.user_id.as_deref());
            blockers.extend(self.foreign_memberships(&row.id));
            let cascade = vec![Change::DeleteMembershipsOfUser(row.id.clone())];
            self.prune(Table::Users, &row, blockers, cascade);
        }
        let orgs: HashSet<&str> = d.organizations.iter().map(|o| o.organization_id.as_str()).collect();
        for row in self.dropped(Table::Organizations, &orgs) {
            let mut blockers = self.dependents(Table::Teams, &row.id, |r| r.organization_id.as_deref());
            blockers.extend(self.dependents(Table::Keys, &row.id, |r| r.organization_id.as_deref()));
            let cascade = vec![Change::DeleteMembershipsOfScope { scope: Scope::Org, scope_id: row.id.clone() }];
            self.prune(Table::Organizations, &row, blockers, cascade);
        }
        let customers: HashSet<&str> = d.customers.iter().map(|c| c.user_id.as_str()).collect();
        for row in self.dropped(Table::Customers, &customers) {
            self.prune(Table::Customers, &row, Vec::new(), Vec::new());
        }
        let budgets: HashSet<&str> = d.budgets.iter().map(|b| b.budget_id.as_str()).collect();
        for row in self.dropped(Table::Budgets, &budgets) {
            let mut blockers = Vec::new();
            for table in [Table::Organizations, Table::Teams, Table::Users, Table::Keys, Table::Customers] {
                // Declared rows name only declared budgets (the file is checked), so they are
                // not left pointing at this one.
                let declared: HashSet<&str> = match table {
                    Table::Organizations => d.organizations.iter().map(|o| o.organization_id.as_str()).collect(),
                    Table::Teams => d.teams.iter().map(|t| t.team_id.as_str()).collect(),
                    Table::Users => d.users.iter().map(|u| u.user_id.as_str()).collect(),
                    Table::Keys => d.keys.iter().map(|k| k.key_id.as_str()).collect(),
                    _ => d.customers.iter().map(|c| c.user_id.as_str()).collect(),
                };
                let refs: Vec<String> = self
                    .rows(table)
                    .filter(|r| r.data.get("budget_id").and_then(Value::as_str) == Some(row.id.as_str()))
                    .filter(|r| !declared.contains(r.id.as_str()) && !self.deleted.contains(&(table, r.id.clone())))
                    .map(|r| format!("{} {}", table.object_type(), r.id))
                    .collect();
                blockers.extend(refs);
            }
            blockers.sort();
            self.prune(Table::Budgets, &row, blockers, Vec::new());
        }
    }

    /// Makes each declared team's and organization's members exactly the declared ones.
    fn members(&mut self, current: &[Membership]) {
        let d = self.declared;
        let owned: HashSet<(Scope, &str)> = d
            .teams
            .iter()
            .map(|t| (Scope::Team, t.team_id.as_str()))
            .chain(d.organizations.iter().map(|o| (Scope::Org, o.organization_id.as_str())))
            .collect();
        let mut have: BTreeMap<(Scope, String, String), &Membership> = BTreeMap::new();
        for m in current.iter().filter(|m| owned.contains(&(m.scope, m.scope_id.as_str()))) {
            have.insert((m.scope, m.scope_id.clone(), m.user_id.clone()), m);
        }
        let object_type = |s: Scope| if s == Scope::Team { "team" } else { "organization" };
        for m in &d.members {
            let DeclaredMember { scope, scope_id, user_id, role, settings } = m;
            let key = (*scope, scope_id.clone(), user_id.clone());
            let after = json!({"user_id": user_id, "role": role, "settings": settings});
            let kind = object_type(*scope);
            match have.remove(&key) {
                Some(cur) if &cur.role == role && &cur.data == settings => continue,
                Some(cur) => {
                    let before = json!({"user_id": user_id, "role": cur.role, "settings": cur.data});
                    let diff = field_diff(&json!({"role": cur.role}), &json!({"role": role}))
                        .into_iter()
                        .chain(field_diff(&cur.data, settings))
                        .collect::<Vec<_>>();
                    self.lines.push(format!("~ member {user_id} of {kind} {scope_id}: {}", diff.join(", ")));
                    self.audit("member_updated", kind, scope_id, Some(before), Some(after));
                }
                None => {
                    self.lines.push(format!("+ member {user_id} of {kind} {scope_id} ({role})"));
                    self.audit("member_added", kind, scope_id, None, Some(after));
                }
            }
            self.upserts.push(Change::PutMembership(Membership {
                scope: *scope,
                scope_id: scope_id.clone(),
                user_id: user_id.clone(),
                role: role.clone(),
                data: settings.clone(),
                spend: Nanos::ZERO,
                created_at: self.now,
                updated_at: self.now,
            }));
        }
        for ((scope, scope_id, user_id), cur) in have {
            if self.deleted.contains(&(Table::Users, user_id.clone())) {
                continue;
            }
            let kind = object_type(scope);
            self.lines.push(format!("- member {user_id} of {kind} {scope_id}"));
            let before = json!({"user_id": user_id, "role": cur.role, "settings": cur.data});
            self.audit("member_removed", kind, &scope_id, Some(before), None);
            self.deletes.push(Change::DeleteMembership { scope, scope_id, user_id });
        }
    }

    /// Unique columns a new or changed resource would take from an API-made one.
    fn check_unique(&mut self) {
        let d = self.declared;
        let api_tokens: HashMap<&str, &str> = self
            .rows(Table::Keys)
            .filter(|r| !is_managed(r))
            .filter_map(|r| r.token_hash.as_deref().map(|h| (h, r.id.as_str())))
            .collect();
        let mut conflicts = Vec::new();
        for k in &d.keys {
            if let Some(other) = api_tokens.get(k.token_hash.as_str()) {
                conflicts.push(format!(
                    "key {:?}: its secret is already the secret of API-made key {other:?}; use another secret",
                    k.key_id
                ));
            }
        }
        let aliases = |table: Table| -> HashMap<String, String> {
            self.rows(table)
                .filter(|r| !is_managed(r))
                .filter_map(|r| r.alias.clone().map(|a| (a, r.id.clone())))
                .collect()
        };
        let key_aliases = aliases(Table::Keys);
        for k in &d.keys {
            if let Some(other) = k.key_alias.as_ref().and_then(|a| key_aliases.get(a)) {
                conflicts.push(format!("key {:?}: key_alias is already used by API-made key {other:?}", k.key_id));
            }
        }
        let emails = aliases(Table::Users);
        for u in &d.users {
            if let Some(other) = u.user_email.as_ref().and_then(|e| emails.get(e)) {
                conflicts.push(format!("user {:?}: user_email is already used by API-made user {other:?}", u.user_id));
            }
        }
        self.conflicts.extend(conflicts);
    }
}

/// The audit form of a stored row: its settings and version, secrets redacted.
fn snapshot(row: &Row) -> Value {
    let mut v = row.data.clone();
    if let Value::Object(map) = &mut v {
        if map.contains_key("token_hash") {
            map.insert("token_hash".to_owned(), Value::String("***".to_owned()));
        }
        map.insert("version".to_owned(), Value::from(row.version));
    }
    v
}

/// Compares the file with the store.
pub async fn plan(
    store: &dyn Store,
    declared: &Declared,
    prune: bool,
    now: DateTime<Utc>,
) -> Result<Plan, ReconcileError> {
    if !declared.present {
        return Ok(Plan::default());
    }
    let mut rows = HashMap::new();
    for table in [Table::Budgets, Table::Organizations, Table::Users, Table::Teams, Table::Keys, Table::Customers] {
        rows.insert(table, all_rows(store, table).await?);
    }
    let memberships = store.memberships(&MembershipFilter::default()).await?;
    let mut p = Planner {
        now,
        request_id: format!("config-{}", uuid::Uuid::new_v4()),
        prune,
        rows,
        conflicts: Vec::new(),
        deletes: Vec::new(),
        upserts: Vec::new(),
        audit: Vec::new(),
        lines: Vec::new(),
        kept: Vec::new(),
        deleted: HashSet::new(),
        memberships,
        declared,
    };
    p.check_unique();
    p.prune_all();
    p.upsert(&declared.budgets);
    p.upsert(&declared.organizations);
    p.upsert(&declared.users);
    p.upsert(&declared.teams);
    let current = std::mem::take(&mut p.memberships);
    p.members(&current);
    p.upsert(&declared.keys);
    p.upsert(&declared.customers);
    if !p.conflicts.is_empty() {
        return Err(ReconcileError::Conflicts(p.conflicts));
    }
    let mut changes = p.deletes;
    changes.extend(p.upserts);
    Ok(Plan { changes, audit: p.audit, lines: p.lines, kept: p.kept })
}

/// Plans and commits, then drops every cached identity so the change is seen at once (on
/// every instance, when Redis is configured). A concurrent change (an admin, or another
/// instance reconciling the same file at start) makes the commit conflict; the plan is then
/// made again, at most twice.
pub async fn apply(gw: &Gateway, declared: &Declared, prune: bool) -> Result<Plan, ReconcileError> {
    let mut attempt = 0;
    loop {
        let plan = plan(gw.store.as_ref(), declared, prune, Utc::now()).await?;
        if plan.is_empty() {
            return Ok(plan);
        }
        match gw.store.commit(&plan.changes, &plan.audit).await {
            Ok(_) => {
                gw.invalidate(Invalidation::All).await;
                return Ok(plan);
            }
            // Another instance (or an admin) changed the same rows meanwhile: plan again.
            Err(StoreError::Conflict(_) | StoreError::NotFound(_)) if attempt < 2 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}
