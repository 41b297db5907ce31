//! What a stored resource may hold: every management write passes through
//! [`check_changes`] before it reaches the store, so a bound holds whichever route, surface
//! or field a value arrives by.
//!
//! - A new resource's id has no `/`, `\`, `..`, `:`, spaces or control characters (ids end up
//!   in paths, resource names and scope ids joined with `:`), and at most
//!   [`MAX_NAME_LEN`] characters.
//! - Ids, names, aliases and emails (fields named `*_id`, `*alias`, `*_email`, `name`), and
//!   the entries of `models` and `tags`: at most [`MAX_NAME_LEN`] characters, no control
//!   characters.
//! - Any other string: at most [`MAX_TEXT_LEN`] characters.
//! - `metadata`: at most [`MAX_METADATA_BYTES`] bytes as JSON.
//! - Any list or map: at most [`MAX_LIST_LEN`] entries.
//!
//! The error names the field (`metadata`, `key_alias`, `models[3]`).

use serde_json::Value;

use crate::error::GatewayError;
use crate::store::{Change, Table};

/// The longest id, name, alias or email, in characters.
pub const MAX_NAME_LEN: usize = 256;
/// The longest other string in a resource, in characters.
pub const MAX_TEXT_LEN: usize = 4096;
/// The most bytes a resource's `metadata` may take as JSON.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The most entries in one list or map of a resource.
pub const MAX_LIST_LEN: usize = 1000;

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

/// An id a resource is created with.
pub fn check_id(field: &str, id: &str) -> Result<(), GatewayError> {
    if id.trim().is_empty() {
        return Err(GatewayError::invalid(field, format!("{field}: must not be empty")));
    }
    if id.chars().count() > MAX_NAME_LEN {
        return Err(GatewayError::invalid(field, format!("{field}: at most {MAX_NAME_LEN} characters")));
    }
    if id.contains(['/', '\\', ':']) || id.contains("..") || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(GatewayError::invalid(
            field,
            format!("{field}: may not contain '/', '\\', '..', ':', spaces or control characters"),
        ));
    }
    Ok(())
}

fn name_like(key: &str) -> bool {
    key.ends_with("_id") || key.ends_with("alias") || key.ends_with("_email") || matches!(key, "name" | "models" | "tags")
}

fn check_value(field: &str, v: &Value, name: bool) -> Result<(), GatewayError> {
    match v {
        Value::String(s) => {
            let max = if name { MAX_NAME_LEN } else { MAX_TEXT_LEN };
            if s.chars().count() > max {
                return Err(GatewayError::invalid(field, format!("{field}: at most {max} characters")));
            }
            if name && s.chars().any(char::is_control) {
                return Err(GatewayError::invalid(field, format!("{field}: must not contain control characters")));
            }
        }
        Value::Array(items) => {
            if items.len() > MAX_LIST_LEN {
                return Err(GatewayError::invalid(field, format!("{field}: at most {MAX_LIST_LEN} entries")));
            }
            for (i, x) in items.iter().enumerate() {
                check_value(&format!("{field}[{i}]"), x, name)?;
            }
        }
        Value::Object(map) => {
            if map.len() > MAX_LIST_LEN {
                return Err(GatewayError::invalid(field, format!("{field}: at most {MAX_LIST_LEN} entries")));
            }
            for (k, x) in map {
                if k.chars().count() > MAX_NAME_LEN {
                    return Err(GatewayError::invalid(
                        field,
                        format!("{field}: a key is at most {MAX_NAME_LEN} characters"),
                    ));
                }
                check_value(&format!("{field}.{k}"), x, name || name_like(k))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A resource's document, as stored.
pub fn check_document(doc: &Value) -> Result<(), GatewayError> {
    let Value::Object(map) = doc else { return Ok(()) };
    for (k, v) in map {
        if k == "metadata" {
            let bytes = serde_json::to_vec(v).map_or(0, |b| b.len());
            if bytes > MAX_METADATA_BYTES {
                return Err(GatewayError::invalid(
                    "metadata",
                    format!("metadata: at most {} KiB as JSON ({bytes} bytes given)", MAX_METADATA_BYTES / 1024),
                ));
            }
            continue;
        }
        check_value(k, v, name_like(k))?;
    }
    Ok(())
}

/// Checks every resource a management write would store.
pub fn check_changes(changes: &[Change]) -> Result<(), GatewayError> {
    for c in changes {
        match c {
            Change::Insert(table, row) => {
                check_id(id_field(*table), &row.id)?;
                check_document(&row.data)?;
            }
            Change::Update(_, row) => check_document(&row.data)?,
            Change::PutMembership(m) => check_value("member", &m.data, false)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_that_would_escape_a_path_are_refused() {
        for bad in ["a/b", "..", "a..b", "a\\b", "a b", "a:b", "a\u{0}", ""] {
            assert!(check_id("team_id", bad).is_err(), "{bad:?}");
        }
        assert!(check_id("team_id", "team-1.prod_x@acme").is_ok());
        assert_eq!(check_id("team_id", &"x".repeat(257)).unwrap_err().param.as_deref(), Some("team_id"));
    }

    #[test]
    fn documents_are_bounded_and_the_field_named() {
        let field = |v: Value| check_document(&v).unwrap_err().param.unwrap();
        assert_eq!(field(json!({"key_alias": "x".repeat(1_000_000)})), "key_alias");
        assert_eq!(field(json!({"user_email": "a\u{7}@x"})), "user_email");
        assert_eq!(field(json!({"models": ["ok", "y".repeat(300)]})), "models[1]");
        assert_eq!(field(json!({"metadata": {"blob": "z".repeat(70_000)}})), "metadata");
        assert_eq!(field(json!({"tags": vec!["t"; 1001]})), "tags");
        assert!(check_document(&json!({"metadata": {"note": "line one\nline two"}, "team_alias": "Ops"})).is_ok());
    }
}
