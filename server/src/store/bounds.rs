//! What a stored resource may hold. [`check_commit`] runs inside every [`super::Store::commit`],
//! before anything is written, so a bound holds whichever writer (an API route, gRPC, the
//! config reconciler), surface or field a value arrives by, and on both backends alike:
//!
//! - No string anywhere holds a NUL character (PostgreSQL cannot store one in text or JSON).
//! - A new resource's id has no `/`, `\`, `..`, `:`, spaces or control characters (ids end up
//!   in paths, resource names and scope ids joined with `:`), and at most [`MAX_NAME_LEN`]
//!   characters.
//! - Ids, names, aliases and emails (fields named `*_id`, `*alias`, `*_email`, `name`), and
//!   the entries of `models` and `tags`: at most [`MAX_NAME_LEN`] characters, no control
//!   characters.
//! - Any other string: at most [`MAX_TEXT_LEN`] characters.
//! - `metadata`: at most [`MAX_METADATA_BYTES`] bytes as JSON.
//! - Any list or map: at most [`MAX_LIST_LEN`] entries.
//!
//! The error names the field (`metadata`, `key_alias`, `models[3]`), as the API spells it.

use serde_json::Value;

use super::{AuditDraft, Change, StoreError, Table};

/// The longest id, name, alias or email, in characters.
pub const MAX_NAME_LEN: usize = 256;
/// The longest other string in a resource, in characters.
pub const MAX_TEXT_LEN: usize = 4096;
/// The most bytes a resource's `metadata` may take as JSON.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The most entries in one list or map of a resource.
pub const MAX_LIST_LEN: usize = 1000;

fn refuse(field: impl Into<String>, message: impl Into<String>) -> StoreError {
    StoreError::Invalid { field: field.into(), message: message.into() }
}

/// The field that holds a table's id.
fn id_field(table: Table) -> &'static str {
    match table {
        Table::Organizations => "organization_id",
        Table::Teams => "team_id",
        Table::Users | Table::Customers => "user_id",
        Table::Budgets => "budget_id",
        Table::Keys => "key_id",
        Table::Tags => "name",
        Table::McpServers => "server_name",
    }
}

/// What is wrong with an id a resource would be created with, if anything.
pub fn id_problem(id: &str) -> Option<String> {
    if id.trim().is_empty() {
        return Some("must not be empty".to_owned());
    }
    if id.chars().count() > MAX_NAME_LEN {
        return Some(format!("at most {MAX_NAME_LEN} characters"));
    }
    if id.contains(['/', '\\', ':']) || id.contains("..") || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("may not contain '/', '\\', '..', ':', spaces or control characters".to_owned());
    }
    None
}

/// An id a resource is created with.
pub fn check_id(field: &str, id: &str) -> Result<(), StoreError> {
    match id_problem(id) {
        Some(problem) => Err(refuse(field, problem)),
        None => Ok(()),
    }
}

/// Whether any of these strings holds a NUL character. No stored string ever has one, so a
/// lookup by such a string matches nothing (and need not ask the database, which would fail).
pub(crate) fn any_nul<'a>(texts: impl IntoIterator<Item = Option<&'a str>>) -> bool {
    texts.into_iter().flatten().any(|t| t.contains('\0'))
}

fn name_like(key: &str) -> bool {
    key.ends_with("_id")
        || key.ends_with("alias")
        || key.ends_with("_email")
        || matches!(key, "name" | "models" | "tags")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// A value at `field` (a name-like one when `name`).
fn check_value(field: &str, v: &Value, name: bool) -> Result<(), StoreError> {
    match v {
        Value::String(s) => {
            if s.contains('\0') {
                return Err(refuse(field, "must not contain a NUL character (\\u0000)"));
            }
            let max = if name { MAX_NAME_LEN } else { MAX_TEXT_LEN };
            if s.chars().count() > max {
                return Err(refuse(field, format!("at most {max} characters")));
            }
            if name && s.chars().any(char::is_control) {
                return Err(refuse(field, "must not contain control characters"));
            }
        }
        Value::Array(items) => {
            if items.len() > MAX_LIST_LEN {
                return Err(refuse(field, format!("at most {MAX_LIST_LEN} entries")));
            }
            for (i, x) in items.iter().enumerate() {
                check_value(&format!("{field}[{i}]"), x, name)?;
            }
        }
        Value::Object(map) => {
            if map.len() > MAX_LIST_LEN {
                return Err(refuse(field, format!("at most {MAX_LIST_LEN} entries")));
            }
            for (k, x) in map {
                if k.contains('\0') {
                    return Err(refuse(join(field, k), "must not contain a NUL character (\\u0000)"));
                }
                if k.chars().count() > MAX_NAME_LEN {
                    return Err(refuse(field, format!("a key is at most {MAX_NAME_LEN} characters")));
                }
                check_value(&join(field, k), x, name || name_like(k))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A resource's document, as stored (its keys are the API's field names).
pub fn check_document(doc: &Value) -> Result<(), StoreError> {
    let Value::Object(map) = doc else { return check_value("", doc, false) };
    for (k, v) in map {
        if k == "metadata" {
            // Sized as a whole; its strings still may not hold a NUL.
            let bytes = serde_json::to_vec(v).map_or(0, |b| b.len());
            if bytes > MAX_METADATA_BYTES {
                return Err(refuse(
                    "metadata",
                    format!("at most {} KiB as JSON ({bytes} bytes given)", MAX_METADATA_BYTES / 1024),
                ));
            }
            check_nul("metadata", v)?;
            continue;
        }
        check_value(k, v, name_like(k))?;
    }
    Ok(())
}

/// Refuses a NUL character anywhere in `v`, naming where.
fn check_nul(field: &str, v: &Value) -> Result<(), StoreError> {
    match v {
        Value::String(s) if s.contains('\0') => Err(refuse(field, "must not contain a NUL character (\\u0000)")),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, x)| check_nul(&format!("{field}[{i}]"), x)),
        Value::Object(map) => map.iter().try_for_each(|(k, x)| {
            if k.contains('\0') {
                return Err(refuse(join(field, k), "must not contain a NUL character (\\u0000)"));
            }
            check_nul(&join(field, k), x)
        }),
        _ => Ok(()),
    }
}

/// Checks everything a commit would store, before any of it is written.
pub fn check_commit(changes: &[Change], audit: &[AuditDraft]) -> Result<(), StoreError> {
    for c in changes {
        match c {
            Change::Insert(table, row) => {
                check_id(id_field(*table), &row.id)?;
                check_document(&row.data)?;
                if let Some(alias) = &row.alias {
                    check_value("alias", &Value::String(alias.clone()), true)?;
                }
            }
            Change::Update(_, row) => check_document(&row.data)?,
            Change::PutMembership(m) => {
                check_nul("member", &m.data)?;
                check_value("member", &m.data, false)?;
                if any_nul([Some(m.scope_id.as_str()), Some(m.user_id.as_str()), Some(m.role.as_str())]) {
                    return Err(refuse("user_id", "must not contain a NUL character (\\u0000)"));
                }
            }
            _ => {}
        }
    }
    // Audit entries quote what callers sent (ids of things that may not exist, snapshots).
    for d in audit {
        for v in [d.before.as_ref(), d.after.as_ref()].into_iter().flatten() {
            check_nul("", v)?;
        }
        if any_nul([Some(d.object_id.as_str()), d.source_addr.as_deref(), d.request_id.as_deref()]) {
            return Err(refuse("object_id", "must not contain a NUL character (\\u0000)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(e: StoreError) -> String {
        match e {
            StoreError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn ids_that_would_escape_a_path_are_refused() {
        for bad in ["a/b", "..", "a..b", "a\\b", "a b", "a:b", "a\u{0}", ""] {
            assert!(check_id("team_id", bad).is_err(), "{bad:?}");
        }
        assert!(check_id("team_id", "team-1.prod_x@acme").is_ok());
        assert_eq!(field(check_id("team_id", &"x".repeat(257)).unwrap_err()), "team_id");
    }

    #[test]
    fn documents_are_bounded_and_the_field_named() {
        let at = |v: Value| field(check_document(&v).unwrap_err());
        assert_eq!(at(json!({"key_alias": "x".repeat(1_000_000)})), "key_alias");
        assert_eq!(at(json!({"user_email": "a\u{7}@x"})), "user_email");
        assert_eq!(at(json!({"models": ["ok", "y".repeat(300)]})), "models[1]");
        assert_eq!(at(json!({"metadata": {"blob": "z".repeat(70_000)}})), "metadata");
        assert_eq!(at(json!({"metadata": {"a": ["x", "y\u{0}"]}})), "metadata.a[1]");
        assert_eq!(at(json!({"team_alias": "nul\u{0}"})), "team_alias");
        assert_eq!(at(json!({"tags": vec!["t"; 1001]})), "tags");
        assert!(check_document(&json!({"metadata": {"note": "line one\nline two"}, "team_alias": "Ops"})).is_ok());
    }
}
