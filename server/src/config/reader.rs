//! A path-tracking reader over the parsed YAML tree that collects every problem instead of
//! stopping at the first, so a bad file is reported whole.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::pricing::{Femtos, parse_decimal_scaled};

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where in the file, e.g. `model_list[0].litellm_params.model`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Collects problems and warnings while reading typed values.
#[derive(Default)]
pub struct Reader {
    pub problems: Vec<ConfigProblem>,
    pub warnings: Vec<ConfigProblem>,
    /// Paths whose value came from an `os.environ/NAME` reference.
    pub env_refs: std::collections::HashSet<String>,
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl Reader {
    pub fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem { path: path.into(), message: message.into() });
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigProblem { path: path.into(), message: message.into() });
    }

    /// The value as a mapping; `null` counts as an empty one.
    pub fn object<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => {
                self.problem(path, format!("expected a mapping, found {}", type_name(other)));
                None
            }
        }
    }

    pub fn list<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a [Value]> {
        match value {
            Value::Array(items) => Some(items),
            Value::Null => None,
            other => {
                self.problem(path, format!("expected a list, found {}", type_name(other)));
                None
            }
        }
    }

    /// Warns, by name, about every key this version does not read.
    pub fn unknown_keys(&mut self, path: &str, map: &Map<String, Value>, known: &[&str]) {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.warn(join(path, key), "not supported by this version of Ferryman; the setting is ignored");
            }
        }
    }

    pub fn string(&mut self, path: &str, map: &Map<String, Value>, key: &str) -> Option<String> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            // LiteLLM files often write ids and versions as bare numbers.
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.problem(join(path, key), format!("expected a string, found {}", type_name(other)));
                None
            }
        }
    }

    pub fn required_string(&mut self, path: &str, map: &Map<String, Value>, key: &str) -> Option<String> {
        match self.string(path, map, key) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.problem(join(path, key), "must not be empty");
                None
            }
            None if map.contains_key(key) && !matches!(map.get(key), Some(Value::Null)) => None,
            None => {
                self.problem(join(path, key), "is required");
                None
            }
        }
    }

    /// `true` or `false` (also as those words in a string, as environment references give them).
    pub fn bool(&mut self, path: &str, map: &Map<String, Value>, key: &str) -> Option<bool> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s == "true" || s == "false" => Some(s == "true"),
            Some(other) => {
                self.problem(join(path, key), format!("expected true or false, found {}", describe(other)));
                None
            }
        }
    }

    pub fn u64(&mut self, path: &str, map: &Map<String, Value>, key: &str) -> Option<u64> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => s.trim().parse().ok(),
            Some(other) => {
                self.problem(
                    join(path, key),
                    format!("expected a non-negative whole number, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// A non-negative decimal number scaled to an integer (`scale` decimal places), read from
    /// its decimal text so no float rounding creeps in.
    pub fn decimal(&mut self, path: &str, map: &Map<String, Value>, key: &str, scale: u32) -> Option<i128> {
        let text = match map.get(key) {
            None | Some(Value::Null) => return None,
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.problem(join(path, key), format!("expected a number, found {}", type_name(other)));
                return None;
            }
        };
        match parse_decimal_scaled(&text, scale) {
            Some(v) => Some(v),
            None => {
                self.problem(
                    join(path, key),
                    format!("expected a non-negative number with at most {scale} decimal places, found {text:?}"),
                );
                None
            }
        }
    }

    /// A per-token price in USD → femto-USD.
    pub fn price(&mut self, path: &str, map: &Map<String, Value>, key: &str) -> Option<Femtos> {
        let v = self.decimal(path, map, key, 15)?;
        match Femtos::try_from(v) {
            Ok(f) => Some(f),
            Err(_) => {
                self.problem(join(path, key), "price is too large");
                None
            }
        }
    }

    /// Seconds, as a number (`30`, `0.5`) or a duration string (`30s`, `5m`, `1h`).
    pub fn seconds(&mut self, path: &str, map: &Map<String, Value>, key: &str) -> Option<Duration> {
        let text = match map.get(key) {
            None | Some(Value::Null) => return None,
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.problem(join(path, key), format!("expected seconds, found {}", type_name(other)));
                return None;
            }
        };
        if let Some(millis) = parse_decimal_scaled(&text, 3) {
            return u64::try_from(millis).ok().map(Duration::from_millis);
        }
        match crate::governance::duration::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(join(path, key), e);
                None
            }
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("{n}"),
        Value::String(s) => format!("{s:?}"),
        other => type_name(other).to_owned(),
    }
}
