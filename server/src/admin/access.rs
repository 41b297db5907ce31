//! Who may manage what: the caller's role and scopes, and the checks every management
//! operation makes before it changes or reveals anything.
//!
//! Roles: `proxy_admin` (the master key, or a user with that role) may do everything;
//! `proxy_admin_viewer` may read everything and change nothing; an organization's
//! `org_admin` manages that organization's teams, members and keys; a team's `admin` manages
//! its members and keys; an `internal_user` manages their own keys, and a team member may do
//! on team keys what the team's `team_member_permissions` grant; `internal_user_viewer` only
//! reads what is theirs. A key with no user may only read itself. Denials are explicit
//! PERMISSION_DENIED errors naming the rule.

use std::collections::HashMap;

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::governance::Caller;
use crate::store::{Actor, MembershipFilter, Scope, Table};
use crate::tenancy::{OrgRole, TeamRole, User, UserRole, from_row};

/// The authenticated caller of a management operation.
#[derive(Debug, Clone)]
pub struct Principal {
    pub actor: Actor,
    /// `None` for a key that belongs to no user.
    pub role: Option<UserRole>,
    pub user_id: Option<String>,
    pub key_id: Option<String>,
    pub teams: HashMap<String, TeamRole>,
    pub orgs: HashMap<String, OrgRole>,
}

pub const MASTER_KEY_ACTOR: &str = "master";

/// A denial naming the rule that refused.
pub fn deny(who: &Principal, rule: impl AsRef<str>) -> GatewayError {
    GatewayError::permission_denied(format!("permission denied: {} (you are {})", rule.as_ref(), who.describe()))
}

impl Principal {
    /// The master key.
    pub fn master() -> Self {
        Principal {
            actor: Actor { user_id: None, key_id: Some(MASTER_KEY_ACTOR.to_owned()), role: "proxy_admin".to_owned() },
            role: Some(UserRole::ProxyAdmin),
            user_id: None,
            key_id: None,
            teams: HashMap::new(),
            orgs: HashMap::new(),
        }
    }

    /// How the caller is named in denials.
    pub fn describe(&self) -> String {
        match (&self.user_id, self.role) {
            (Some(u), Some(r)) => format!("user {u:?}, role {}", r.as_str()),
            (None, Some(r)) => format!("the master key, role {}", r.as_str()),
            _ => format!("key {:?}, which belongs to no user", self.key_id.as_deref().unwrap_or("")),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Some(UserRole::ProxyAdmin)
    }

    /// Proxy admins and viewers read everything.
    pub fn reads_all(&self) -> bool {
        matches!(self.role, Some(UserRole::ProxyAdmin | UserRole::ProxyAdminViewer))
    }

    /// Viewers change nothing.
    pub fn is_viewer(&self) -> bool {
        matches!(self.role, Some(UserRole::ProxyAdminViewer | UserRole::InternalUserViewer) | None)
    }

    pub fn is_org_admin_of(&self, org: Option<&str>) -> bool {
        org.is_some_and(|o| self.orgs.get(o) == Some(&OrgRole::OrgAdmin))
    }

    pub fn is_org_member_of(&self, org: Option<&str>) -> bool {
        org.is_some_and(|o| self.orgs.contains_key(o))
    }

    pub fn is_team_admin_of(&self, team: Option<&str>) -> bool {
        team.is_some_and(|t| self.teams.get(t) == Some(&TeamRole::Admin))
    }

    pub fn is_team_member_of(&self, team: Option<&str>) -> bool {
        team.is_some_and(|t| self.teams.contains_key(t))
    }

    pub fn is_user(&self, user: Option<&str>) -> bool {
        user.is_some() && self.user_id.as_deref() == user
    }

    /// Refuses anyone but a proxy admin.
    pub fn require_admin(&self, rule: &str) -> Result<(), GatewayError> {
        if self.is_admin() { Ok(()) } else { Err(deny(self, rule)) }
    }

    /// Refuses anyone who cannot read everything.
    pub fn require_read_all(&self, rule: &str) -> Result<(), GatewayError> {
        if self.reads_all() { Ok(()) } else { Err(deny(self, rule)) }
    }

    /// Refuses viewers and keys without a user.
    pub fn require_writer(&self, what: &str) -> Result<(), GatewayError> {
        if self.is_viewer() { Err(deny(self, format!("viewers may not {what}"))) } else { Ok(()) }
    }

    /// The org_admin's organizations.
    pub fn admin_orgs(&self) -> Vec<String> {
        self.orgs.iter().filter(|(_, r)| **r == OrgRole::OrgAdmin).map(|(o, _)| o.clone()).collect()
    }
}

/// Resolves the caller of a management operation: the master key, or a key's user with that
/// user's role and memberships (read fresh from the store: management is not the hot path).
pub async fn principal(gw: &Gateway, caller: &Caller) -> Result<Principal, GatewayError> {
    let key = match caller {
        Caller::Master => return Ok(Principal::master()),
        Caller::Key(identity) => &identity.key,
    };
    let mut p = Principal {
        actor: Actor { user_id: key.user_id.clone(), key_id: Some(key.key_id.clone()), role: String::new() },
        role: None,
        user_id: key.user_id.clone(),
        key_id: Some(key.key_id.clone()),
        teams: HashMap::new(),
        orgs: HashMap::new(),
    };
    if let Some(user_id) = &key.user_id {
        let user: User = match gw.store.get(Table::Users, user_id).await? {
            Some(row) => from_row(row)?,
            None => {
                return Err(GatewayError::permission_denied(format!(
                    "key {} belongs to user {user_id:?}, who no longer exists",
                    key.key_id
                )));
            }
        };
        if user.blocked {
            return Err(GatewayError::permission_denied(format!("user {user_id:?} is blocked")));
        }
        p.role = Some(user.user_role);
        for m in
            gw.store.memberships(&MembershipFilter { user_id: Some(user_id.clone()), ..Default::default() }).await?
        {
            match m.scope {
                Scope::Team => {
                    if let Some(r) = TeamRole::parse(&m.role) {
                        p.teams.insert(m.scope_id, r);
                    }
                }
                Scope::Org => {
                    if let Some(r) = OrgRole::parse(&m.role) {
                        p.orgs.insert(m.scope_id, r);
                    }
                }
            }
        }
    }
    p.actor.role = p.role.map_or("key", |r| r.as_str()).to_owned();
    Ok(p)
}
