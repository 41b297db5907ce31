//! What callers may set on each resource, shared by the HTTP routes (LiteLLM's JSON, money as
//! USD numbers) and the gRPC services.
//!
//! Every field is optional: on create, absent means the default; on update, absent means
//! "keep", and for clearable fields `null` means "clear" (`Option<Option<T>>`). Unknown
//! fields are refused by name ([`parse`]), so a setting this version does not support can
//! never look applied.

use std::collections::BTreeMap;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, forward_to_deserialize_any};
use serde_json::{Map, Number, Value};

use crate::error::GatewayError;
use crate::governance::duration::parse_period;
use crate::pricing::Nanos;
use crate::tenancy::{Limits, ModelBudget};

/// A USD amount from a JSON number, exactly (through its decimal text); negative refused.
pub fn usd_from_number(n: &Number) -> Result<Nanos, String> {
    Nanos::parse_usd(&n.to_string())
        .ok_or_else(|| format!("must be a non-negative USD amount with at most 9 decimals, got {n}"))
}

/// `Option<Option<Nanos>>` from a USD number or null.
pub fn usd_tristate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Nanos>>, D::Error> {
    match Option::<Number>::deserialize(d)? {
        None => Ok(Some(None)),
        Some(n) => usd_from_number(&n).map(|v| Some(Some(v))).map_err(de::Error::custom),
    }
}

/// `Option<Option<T>>`: absent → None, null → Some(None).
pub fn tristate<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelBudgetField {
    /// USD, as LiteLLM's JSON writes it.
    pub budget_limit: Number,
    #[serde(default)]
    pub time_period: Option<String>,
    /// Exact nano-USD, when the caller (gRPC) gives it; wins over `budget_limit`.
    #[serde(skip)]
    pub nanos: Option<Nanos>,
}

/// Budgets and limits, as set on any level.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LimitsFields {
    #[serde(default, deserialize_with = "usd_tristate")]
    pub max_budget: Option<Option<Nanos>>,
    #[serde(default, deserialize_with = "usd_tristate")]
    pub soft_budget: Option<Option<Nanos>>,
    #[serde(default, deserialize_with = "tristate")]
    pub budget_duration: Option<Option<String>>,
    #[serde(default, deserialize_with = "tristate")]
    pub tpm_limit: Option<Option<u64>>,
    #[serde(default, deserialize_with = "tristate")]
    pub rpm_limit: Option<Option<u64>>,
    #[serde(default, deserialize_with = "tristate")]
    pub max_parallel_requests: Option<Option<u64>>,
    #[serde(default)]
    pub model_max_budget: Option<BTreeMap<String, ModelBudgetField>>,
    #[serde(default)]
    pub model_rpm_limit: Option<BTreeMap<String, u64>>,
    #[serde(default)]
    pub model_tpm_limit: Option<BTreeMap<String, u64>>,
    #[serde(default)]
    pub mcp_rpm_limit: Option<BTreeMap<String, u64>>,
}

impl LimitsFields {
    /// The names of the fields set, for permission checks.
    pub fn set_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let checks: [(&'static str, bool); 10] = [
            ("max_budget", self.max_budget.is_some()),
            ("soft_budget", self.soft_budget.is_some()),
            ("budget_duration", self.budget_duration.is_some()),
            ("tpm_limit", self.tpm_limit.is_some()),
            ("rpm_limit", self.rpm_limit.is_some()),
            ("max_parallel_requests", self.max_parallel_requests.is_some()),
            ("model_max_budget", self.model_max_budget.is_some()),
            ("model_rpm_limit", self.model_rpm_limit.is_some()),
            ("model_tpm_limit", self.model_tpm_limit.is_some()),
            ("mcp_rpm_limit", self.mcp_rpm_limit.is_some()),
        ];
        for (name, set) in checks {
            if set {
                out.push(name);
            }
        }
        out
    }

    /// Applies the set fields to `limits`, validating durations and amounts.
    pub fn apply(self, limits: &mut Limits) -> Result<(), GatewayError> {
        let LimitsFields {
            max_budget,
            soft_budget,
            budget_duration,
            tpm_limit,
            rpm_limit,
            max_parallel_requests,
            model_max_budget,
            model_rpm_limit,
            model_tpm_limit,
            mcp_rpm_limit,
        } = self;
        if let Some(v) = max_budget {
            limits.max_budget = v;
        }
        if let Some(v) = soft_budget {
            limits.soft_budget = v;
        }
        if let Some(v) = budget_duration {
            if let Some(d) = &v {
                check_duration("budget_duration", d)?;
            }
            limits.budget_duration = v;
        }
        if let Some(v) = tpm_limit {
            limits.tpm_limit = v;
        }
        if let Some(v) = rpm_limit {
            limits.rpm_limit = v;
        }
        if let Some(v) = max_parallel_requests {
            limits.max_parallel_requests = v;
        }
        if let Some(map) = model_max_budget {
            let mut out = BTreeMap::new();
            for (model, b) in map {
                let field = format!("model_max_budget.{model}");
                let budget_limit = match b.nanos {
                    Some(n) => n,
                    None => usd_from_number(&b.budget_limit).map_err(|e| {
                        GatewayError::invalid(format!("{field}.budget_limit"), format!("{field}.budget_limit: {e}"))
                    })?,
                };
                if let Some(p) = &b.time_period {
                    check_duration(&format!("{field}.time_period"), p)?;
                }
                out.insert(model, ModelBudget { budget_limit, time_period: b.time_period });
            }
            limits.model_max_budget = out;
        }
        if let Some(map) = model_rpm_limit {
            limits.model_rpm_limit = map;
        }
        if let Some(map) = model_tpm_limit {
            limits.model_tpm_limit = map;
        }
        if let Some(map) = mcp_rpm_limit {
            limits.mcp_rpm_limit = map;
        }
        if let (Some(soft), Some(max)) = (limits.soft_budget, limits.max_budget)
            && soft > max
        {
            return Err(GatewayError::invalid(
                "soft_budget",
                format!(
                    "soft_budget: {soft} USD is above max_budget {max} USD; a soft budget alerts before the hard one"
                ),
            ));
        }
        Ok(())
    }
}

/// A change to an `object_permission`: each of its three fields that is given replaces the
/// stored one (`Some(None)` unsets it: no restriction at this level). The HTTP routes send a
/// whole `object_permission`, which replaces all three; gRPC field masks can name one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "crate::tenancy::ObjectPermission")]
pub struct ObjectPermissionChange {
    pub mcp_servers: Option<Option<Vec<String>>>,
    pub mcp_access_groups: Option<Option<Vec<String>>>,
    pub mcp_tool_permissions: Option<Option<BTreeMap<String, Vec<String>>>>,
}

impl From<crate::tenancy::ObjectPermission> for ObjectPermissionChange {
    fn from(p: crate::tenancy::ObjectPermission) -> Self {
        let crate::tenancy::ObjectPermission { mcp_servers, mcp_access_groups, mcp_tool_permissions } = p;
        Self {
            mcp_servers: Some(mcp_servers),
            mcp_access_groups: Some(mcp_access_groups),
            mcp_tool_permissions: Some(mcp_tool_permissions),
        }
    }
}

impl ObjectPermissionChange {
    /// Applies the change, then checks the result.
    pub fn apply(self, p: &mut crate::tenancy::ObjectPermission) -> Result<(), GatewayError> {
        let Self { mcp_servers, mcp_access_groups, mcp_tool_permissions } = self;
        set(&mut p.mcp_servers, mcp_servers);
        set(&mut p.mcp_access_groups, mcp_access_groups);
        set(&mut p.mcp_tool_permissions, mcp_tool_permissions);
        check_object_permission(p)
    }
}

/// Names in an `object_permission`: server names as `mcp_servers` allows them, and no empty
/// access group or tool. The error names the entry (`object_permission.mcp_servers[0]`).
pub fn check_object_permission(p: &crate::tenancy::ObjectPermission) -> Result<(), GatewayError> {
    fn bad(field: String, problem: impl std::fmt::Display) -> GatewayError {
        GatewayError::invalid(field.clone(), format!("{field}: {problem}"))
    }
    for (i, s) in p.mcp_servers.iter().flatten().enumerate() {
        crate::config::mcp::check_name(s).map_err(|e| bad(format!("object_permission.mcp_servers[{i}]"), e))?;
    }
    for (i, g) in p.mcp_access_groups.iter().flatten().enumerate() {
        if g.trim().is_empty() {
            return Err(bad(format!("object_permission.mcp_access_groups[{i}]"), "must not be empty"));
        }
    }
    for (server, tools) in p.mcp_tool_permissions.iter().flatten() {
        crate::config::mcp::check_name(server)
            .map_err(|e| bad("object_permission.mcp_tool_permissions".to_owned(), e))?;
        if let Some(i) = tools.iter().position(|t| t.trim().is_empty()) {
            return Err(bad(format!("object_permission.mcp_tool_permissions.{server}[{i}]"), "must not be empty"));
        }
    }
    Ok(())
}

pub fn check_duration(field: &str, text: &str) -> Result<(), GatewayError> {
    parse_period(text).map(|_| ()).map_err(|e| GatewayError::invalid(field, format!("{field}: {e}")))
}

/// Sets `target` if the field was given.
pub fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

/// The field names a struct's derived `Deserialize` asks for (its `FIELDS`), found by asking
/// it to deserialize from a probe that records them.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Probe {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// Deserializes a typed value from a JSON object, naming the failing field.
pub fn typed<T: DeserializeOwned>(body: &Map<String, Value>) -> Result<T, GatewayError> {
    serde_path_to_error::deserialize(Value::Object(body.clone())).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = if path == "." { inner.split('`').nth(1).unwrap_or("").to_owned() } else { path };
        GatewayError::invalid(field.clone(), format!("{field}: {inner}"))
    })
}

/// Refuses any field outside `known`, naming it.
pub fn reject_unknown(body: &Map<String, Value>, known: &[&[&str]]) -> Result<(), GatewayError> {
    for key in body.keys() {
        if !known.iter().any(|names| names.contains(&key.as_str())) {
            return Err(GatewayError::invalid(
                key.clone(),
                format!("{key}: unknown field; this version of Ferryman does not support it"),
            ));
        }
    }
    Ok(())
}

/// A resource's own fields plus the shared limits, from one JSON object; unknown fields are
/// refused, with `extra_known` allowed besides (fields the route reads itself).
pub fn parse<T: DeserializeOwned>(
    body: &Map<String, Value>,
    extra_known: &[&str],
) -> Result<(T, LimitsFields), GatewayError> {
    reject_unknown(body, &[field_names::<T>(), field_names::<LimitsFields>(), extra_known])?;
    Ok((typed(body)?, typed(body)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        a: Option<u32>,
        #[serde(default)]
        b: Vec<String>,
    }

    #[test]
    fn finds_a_structs_field_names() {
        assert_eq!(field_names::<Sample>(), ["a", "b"]);
        assert!(field_names::<LimitsFields>().contains(&"max_budget"));
    }

    #[test]
    fn limits_parse_exactly_and_tristate() {
        let body = json!({"max_budget": 100.5, "soft_budget": null, "budget_duration": "30d", "tpm_limit": 10});
        let (_, limits): (Sample, LimitsFields) = parse(body.as_object().unwrap(), &[]).unwrap();
        let mut l = Limits { soft_budget: Some(Nanos(5)), ..Default::default() };
        limits.apply(&mut l).unwrap();
        assert_eq!(l.max_budget, Some(Nanos(100_500_000_000)));
        assert_eq!(l.soft_budget, None);
        assert_eq!(l.tpm_limit, Some(10));
    }

    #[test]
    fn bad_fields_are_named() {
        let err = parse::<Sample>(json!({"zzz": 1}).as_object().unwrap(), &[]).err().unwrap();
        assert_eq!(err.param.as_deref(), Some("zzz"));
        let err = parse::<Sample>(json!({"max_budget": -1}).as_object().unwrap(), &[]).err().unwrap();
        assert_eq!(err.param.as_deref(), Some("max_budget"));
        let (_, l) = parse::<Sample>(json!({"budget_duration": "1 day"}).as_object().unwrap(), &[]).unwrap();
        let err = l.apply(&mut Limits::default()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("budget_duration"));
    }
}
