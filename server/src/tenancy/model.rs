//! The resources and their settings. Field names follow LiteLLM's management API.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Columns, Meta, Resource};
use crate::pricing::Nanos;
use crate::store::Table;

/// A per-model budget (`model_max_budget`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelBudget {
    pub budget_limit: Nanos,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_period: Option<String>,
}

/// Budgets and limits: the same on every level (organization, team, user, key, customer,
/// budget tier). Stored and validated here; enforced by `governance`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget: Option<Nanos>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_budget: Option<Nanos>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_max_budget: BTreeMap<String, ModelBudget>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_rpm_limit: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_tpm_limit: BTreeMap<String, u64>,
    /// Tool calls a minute, per MCP server (LiteLLM's `mcp_rpm_limit`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mcp_rpm_limit: BTreeMap<String, u64>,
}

/// What an object grants beyond models (LiteLLM's `object_permission`): the MCP servers, MCP
/// access groups and per-server tools a key, team or organization may use. A level that sets
/// `mcp_servers` or `mcp_access_groups` restricts the levels below it; unset means "no
/// restriction here". The most restrictive level wins, so a key never widens its team.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectPermission {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_access_groups: Option<Vec<String>>,
    /// Server name → the tools allowed on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_tool_permissions: Option<BTreeMap<String, Vec<String>>>,
}

impl ObjectPermission {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Whether this level restricts which MCP servers may be used.
    pub fn restricts_servers(&self) -> bool {
        self.mcp_servers.is_some() || self.mcp_access_groups.is_some()
    }
}

/// A user's proxy-wide role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    ProxyAdmin,
    ProxyAdminViewer,
    OrgAdmin,
    InternalUser,
    InternalUserViewer,
}

impl UserRole {
    pub const ALL: [UserRole; 5] = [
        UserRole::ProxyAdmin,
        UserRole::ProxyAdminViewer,
        UserRole::OrgAdmin,
        UserRole::InternalUser,
        UserRole::InternalUserViewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::ProxyAdmin => "proxy_admin",
            UserRole::ProxyAdminViewer => "proxy_admin_viewer",
            UserRole::OrgAdmin => "org_admin",
            UserRole::InternalUser => "internal_user",
            UserRole::InternalUserViewer => "internal_user_viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A user's role in a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamRole {
    Admin,
    User,
}

impl TeamRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TeamRole::Admin => "admin",
            TeamRole::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(TeamRole::Admin),
            "user" => Some(TeamRole::User),
            _ => None,
        }
    }
}

/// A user's role in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgRole {
    OrgAdmin,
    InternalUser,
    InternalUserViewer,
}

impl OrgRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::OrgAdmin => "org_admin",
            OrgRole::InternalUser => "internal_user",
            OrgRole::InternalUserViewer => "internal_user_viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "org_admin" => Some(OrgRole::OrgAdmin),
            "internal_user" => Some(OrgRole::InternalUser),
            "internal_user_viewer" => Some(OrgRole::InternalUserViewer),
            _ => None,
        }
    }
}

/// Per-member settings of a team membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamMemberSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_in_team: Option<Nanos>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_models: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub organization_id: String,
    pub organization_alias: String,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_id: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "ObjectPermission::is_empty")]
    pub object_permission: ObjectPermission,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// `config` for resources declared in config.yaml (see `config::governance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    #[serde(skip)]
    pub meta: Meta,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Team {
    pub team_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_id: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "ObjectPermission::is_empty")]
    pub object_permission: ObjectPermission,
    #[serde(default)]
    pub blocked: bool,
    /// Team-level model aliases: `{"cheap": "gpt-4o-mini"}`.
    #[serde(default)]
    pub model_aliases: BTreeMap<String, String>,
    /// Management routes ordinary members may call on the team's keys, e.g. `/key/generate`.
    #[serde(default)]
    pub team_member_permissions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// `config` for resources declared in config.yaml (see `config::governance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    #[serde(skip)]
    pub meta: Meta,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_alias: Option<String>,
    pub user_role: UserRole,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_id: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Bounds the MCP access of the user's personal keys (team keys answer to the team).
    #[serde(default, skip_serializing_if = "ObjectPermission::is_empty")]
    pub object_permission: ObjectPermission,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// `config` for resources declared in config.yaml (see `config::governance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    #[serde(skip)]
    pub meta: Meta,
}

/// A virtual key. The secret itself is never stored; only its SHA-256 (`token_hash`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: String,
    pub token_hash: String,
    /// The masked secret, `sk-...abcd`.
    pub key_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_alias: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_id: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "ObjectPermission::is_empty")]
    pub object_permission: ObjectPermission,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// How many times the secret was regenerated.
    #[serde(default)]
    pub rotation_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<DateTime<Utc>>,
    /// `config` for resources declared in config.yaml (see `config::governance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    #[serde(skip)]
    pub meta: Meta,
}

/// An end customer, named in requests' `user` field; has no key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// LiteLLM calls this `user_id`.
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_id: Option<String>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_model_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// `config` for resources declared in config.yaml (see `config::governance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    #[serde(skip)]
    pub meta: Meta,
}

/// A reusable budget tier, linked from customers and keys by `budget_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetTier {
    pub budget_id: String,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// `config` for resources declared in config.yaml (see `config::governance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    #[serde(skip)]
    pub meta: Meta,
}

/// A tag with a budget (and a description) of its own. A call's spend lands on every tag
/// it carries, whether or not the tag exists here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// `config` for resources declared in config.yaml (see `config::governance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    #[serde(skip)]
    pub meta: Meta,
}

/// An MCP server registered through the management API. Its settings are the mapping
/// config.yaml's `mcp_servers.<name>` takes, checked by the same reader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpServerRecord {
    pub server_name: String,
    #[serde(default)]
    pub settings: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    #[serde(skip)]
    pub meta: Meta,
}

macro_rules! resource {
    ($t:ty, $table:expr, $id:ident, |$s:ident| $cols:expr) => {
        impl Resource for $t {
            const TABLE: Table = $table;
            fn id(&self) -> &str {
                &self.$id
            }
            fn columns(&self) -> Columns {
                let $s = self;
                $cols
            }
            fn meta(&self) -> &Meta {
                &self.meta
            }
            fn managed_by(&self) -> Option<&str> {
                self.managed_by.as_deref()
            }
            fn meta_mut(&mut self) -> &mut Meta {
                &mut self.meta
            }
        }
    };
}

resource!(Organization, Table::Organizations, organization_id, |s| Columns {
    alias: Some(s.organization_alias.clone()),
    ..Columns::default()
});
resource!(Team, Table::Teams, team_id, |s| Columns {
    alias: s.team_alias.clone(),
    organization_id: s.organization_id.clone(),
    ..Columns::default()
});
resource!(User, Table::Users, user_id, |s| Columns { alias: s.user_email.clone(), ..Columns::default() });
resource!(KeyRecord, Table::Keys, key_id, |s| Columns {
    alias: s.key_alias.clone(),
    organization_id: s.organization_id.clone(),
    team_id: s.team_id.clone(),
    user_id: s.user_id.clone(),
    token_hash: Some(s.token_hash.clone()),
});
resource!(Customer, Table::Customers, user_id, |s| Columns { alias: s.alias.clone(), ..Columns::default() });
resource!(BudgetTier, Table::Budgets, budget_id, |_s| Columns::default());
resource!(Tag, Table::Tags, name, |_s| Columns::default());
resource!(McpServerRecord, Table::McpServers, server_name, |_s| Columns::default());
