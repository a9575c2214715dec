//! Who may do what in a fleet: roles, principals, the permission matrix (as data),
//! token role caps and the rules that make an enrollment token usable.
//!
//! fleetd authenticates a request (it owns the secrets); this module decides. The
//! matrix is a table, [`PERMISSIONS`], so documentation and tests can walk it.
//!
//! ```
//! use wrale_core::fleet::access::{Action, PrincipalKind, Role, authorize};
//! let viewer = (PrincipalKind::User, Some(Role::Viewer));
//! assert!(authorize(viewer.0, viewer.1, Action::ReadFleet, None).is_ok());
//! assert!(authorize(viewer.0, viewer.1, Action::SendCommand, None).is_err());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::{DeviceId, GroupId};
use crate::time::Timestamp;

/// A user's (or API token's) role. Ordered: `Viewer < Operator < Admin`; a higher
/// role may do everything a lower one may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the fleet (not users or other people's tokens).
    Viewer,
    /// Also edits desired state, config layers, groups and device metadata, sends
    /// commands, acks and clears alerts, runs rollouts.
    Operator,
    /// Also manages users, every API token and enrollment tokens, revokes and
    /// deletes devices.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The stable name (`viewer`, `operator`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected viewer, operator or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// What kind of credential a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A user's login session (`wrs_`).
    User,
    /// A named API token (`wrt_`), acting for the user who created it.
    Token,
    /// A device credential (`wrd_`): only its own twin, sync and telemetry.
    Device,
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrincipalKind::User => "user",
            PrincipalKind::Token => "token",
            PrincipalKind::Device => "device",
        })
    }
}

/// Something a principal may try to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Read devices, groups, topology, alerts, audit, telemetry, twins, config, events.
    ReadFleet,
    /// Who am I.
    Whoami,
    /// End one's own session.
    Logout,
    /// List, create and delete one's own API tokens.
    ManageOwnTokens,
    /// List and delete every user's API tokens.
    ManageAllTokens,
    /// List, create, change and delete users.
    ManageUsers,
    /// Create, list and delete enrollment tokens.
    ManageEnrollment,
    /// Change a device's labels, location or group.
    EditDevice,
    /// Delete a device.
    DeleteDevice,
    /// Revoke a device's credential.
    RevokeDevice,
    /// Create, change and delete groups.
    ManageGroups,
    /// Edit desired state or config layers, roll back, resolve conflicts.
    EditDesired,
    /// Send a command to a device.
    SendCommand,
    /// Raise, acknowledge and clear alerts.
    ManageAlerts,
    /// Start, pause or abort a rollout.
    RunRollout,
    /// Sync a device's twin (device principals only, own device).
    DeviceSync,
    /// Read a device's twin (viewers, or the device itself).
    ReadTwin,
    /// Ship telemetry for a device (device principals only, own device).
    WriteTelemetry,
}

/// Who may do an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Users and API tokens with at least this role; never devices.
    MinRole(Role),
    /// Users and API tokens with at least this role, or the target device itself.
    MinRoleOrSelf(Role),
    /// Only the target device itself.
    SelfDevice,
    /// Every authenticated principal.
    Anyone,
}

/// The permission matrix: every [`Action`] and its [`Rule`].
pub const PERMISSIONS: &[(Action, Rule)] = &[
    (Action::ReadFleet, Rule::MinRole(Role::Viewer)),
    (Action::Whoami, Rule::Anyone),
    (Action::Logout, Rule::MinRole(Role::Viewer)),
    (Action::ManageOwnTokens, Rule::MinRole(Role::Viewer)),
    (Action::ManageAllTokens, Rule::MinRole(Role::Admin)),
    (Action::ManageUsers, Rule::MinRole(Role::Admin)),
    (Action::ManageEnrollment, Rule::MinRole(Role::Admin)),
    (Action::EditDevice, Rule::MinRole(Role::Operator)),
    (Action::DeleteDevice, Rule::MinRole(Role::Admin)),
    (Action::RevokeDevice, Rule::MinRole(Role::Admin)),
    (Action::ManageGroups, Rule::MinRole(Role::Operator)),
    (Action::EditDesired, Rule::MinRole(Role::Operator)),
    (Action::SendCommand, Rule::MinRole(Role::Operator)),
    (Action::ManageAlerts, Rule::MinRole(Role::Operator)),
    (Action::RunRollout, Rule::MinRole(Role::Operator)),
    (Action::DeviceSync, Rule::SelfDevice),
    (Action::ReadTwin, Rule::MinRoleOrSelf(Role::Viewer)),
    (Action::WriteTelemetry, Rule::SelfDevice),
];

impl Action {
    /// The action's rule from [`PERMISSIONS`].
    pub fn rule(self) -> Rule {
        PERMISSIONS
            .iter()
            .find(|(a, _)| *a == self)
            .map(|(_, r)| *r)
            // Every action is in the table (a unit test walks them all).
            .unwrap_or(Rule::MinRole(Role::Admin))
    }

    /// The lowest user role allowed, if users may do it at all.
    pub fn min_role(self) -> Option<Role> {
        match self.rule() {
            Rule::MinRole(r) | Rule::MinRoleOrSelf(r) => Some(r),
            Rule::Anyone => Some(Role::Viewer),
            Rule::SelfDevice => None,
        }
    }
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The role is too low.
    #[error("this needs the {required} role; you have {actual}")]
    Role {
        /// What the action needs.
        required: Role,
        /// What the principal has.
        actual: Role,
    },
    /// A device credential used outside its own device's routes.
    #[error("a device credential may only sync and read its own twin")]
    DeviceScope,
    /// A user or token on a device-only route.
    #[error("only the device itself may do this")]
    DeviceOnly,
    /// A token asked for a role above its creator's.
    #[error("a token's role cannot exceed its creator's ({creator}); asked for {requested}")]
    TokenRoleAboveCreator {
        /// Requested role.
        requested: Role,
        /// The creator's role.
        creator: Role,
    },
}

impl Denied {
    /// The role the action needed, when that is why it was refused.
    pub fn required_role(&self) -> Option<Role> {
        match self {
            Denied::Role { required, .. } => Some(*required),
            _ => None,
        }
    }
}

/// Decides whether a principal may do `action`.
///
/// `role` is the user's (or token's effective) role, `None` for devices.
/// `self_target` is `Some(true)` when a device principal acts on its own device,
/// `Some(false)` when on another one, `None` when the action has no device target.
pub fn authorize(
    kind: PrincipalKind,
    role: Option<Role>,
    action: Action,
    self_target: Option<bool>,
) -> Result<(), Denied> {
    let rule = action.rule();
    match (kind, rule) {
        (_, Rule::Anyone) => Ok(()),
        (PrincipalKind::Device, Rule::MinRoleOrSelf(_) | Rule::SelfDevice) => {
            if self_target == Some(true) {
                Ok(())
            } else {
                Err(Denied::DeviceScope)
            }
        }
        (PrincipalKind::Device, Rule::MinRole(_)) => Err(Denied::DeviceScope),
        (_, Rule::SelfDevice) => Err(Denied::DeviceOnly),
        (_, Rule::MinRole(required) | Rule::MinRoleOrSelf(required)) => {
            let actual = role.unwrap_or(Role::Viewer);
            if role.is_some_and(|r| r >= required) {
                Ok(())
            } else {
                Err(Denied::Role { required, actual })
            }
        }
    }
}

/// The role a new API token gets: the requested one, or the creator's when none is
/// asked for; refused when the request exceeds the creator's role.
pub fn token_role(requested: Option<Role>, creator: Role) -> Result<Role, Denied> {
    match requested {
        None => Ok(creator),
        Some(r) if r <= creator => Ok(r),
        Some(requested) => Err(Denied::TokenRoleAboveCreator { requested, creator }),
    }
}

/// The role a token acts with when used: its own, but never above its creator's
/// current role (a demoted creator demotes their tokens).
pub fn effective_token_role(token: Role, creator_now: Role) -> Role {
    token.min(creator_now)
}

/// Whether the fleet keeps an admin when user `name` gets `new_role` (`None`: the
/// user is deleted). `users` are every user's name and current role. Refused with
/// [`LastAdmin`] when `name` is the only admin and would stop being one.
pub fn keeps_an_admin<'a>(
    users: impl IntoIterator<Item = (&'a str, Role)>,
    name: &str,
    new_role: Option<Role>,
) -> Result<(), LastAdmin> {
    if new_role == Some(Role::Admin) {
        return Ok(());
    }
    let mut is_admin = false;
    let mut others = 0usize;
    for (n, r) in users {
        if r == Role::Admin {
            if n == name {
                is_admin = true;
            } else {
                others += 1;
            }
        }
    }
    if is_admin && others == 0 {
        Err(LastAdmin)
    } else {
        Ok(())
    }
}

/// The change would leave the fleet without an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this is the last admin: create another admin first")]
pub struct LastAdmin;

/// An enrollment token's state as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentGrant {
    /// Uses left (0: used up).
    pub uses_left: u32,
    /// When it stops being valid.
    pub expires_at: Timestamp,
    /// The group enrolled devices are put into.
    pub group: Option<GroupId>,
    /// Labels given to enrolled devices (they win over the device's own).
    pub labels: BTreeMap<String, String>,
}

/// Why an enrollment token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentError {
    /// No such token.
    #[error("unknown enrollment token")]
    Unknown,
    /// Past its expiry.
    #[error("enrollment token expired at {0}")]
    Expired(Timestamp),
    /// No uses left.
    #[error("enrollment token has no uses left")]
    UsedUp,
}

impl EnrollmentGrant {
    /// Whether the token may be used at `now`.
    pub fn check(&self, now: Timestamp) -> Result<(), EnrollmentError> {
        if now >= self.expires_at {
            return Err(EnrollmentError::Expired(self.expires_at));
        }
        if self.uses_left == 0 {
            return Err(EnrollmentError::UsedUp);
        }
        Ok(())
    }

    /// The labels an enrolled device gets: its own, overridden by the token's.
    pub fn labels_for(&self, device: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = device.clone();
        out.extend(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

    /// The token after one successful use.
    pub fn used_once(&self) -> EnrollmentGrant {
        EnrollmentGrant {
            uses_left: self.uses_left.saturating_sub(1),
            ..self.clone()
        }
    }
}

/// Whether a device principal `principal` targets its own device `target`.
pub fn is_self(principal: &DeviceId, target: &DeviceId) -> bool {
    principal == target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_admin_can_be_neither_demoted_nor_deleted() {
        let users = [("ann", Role::Admin), ("bob", Role::Operator)];
        let it = || users.iter().map(|(n, r)| (*n, *r));
        assert_eq!(keeps_an_admin(it(), "ann", None), Err(LastAdmin));
        assert_eq!(
            keeps_an_admin(it(), "ann", Some(Role::Viewer)),
            Err(LastAdmin)
        );
        assert_eq!(keeps_an_admin(it(), "ann", Some(Role::Admin)), Ok(()));
        assert_eq!(keeps_an_admin(it(), "bob", None), Ok(()));
        let two = [("ann", Role::Admin), ("cy", Role::Admin)];
        assert_eq!(
            keeps_an_admin(two.iter().map(|(n, r)| (*n, *r)), "ann", None),
            Ok(())
        );
    }
    use proptest::prelude::*;

    const ACTIONS: [Action; 18] = [
        Action::ReadFleet,
        Action::Whoami,
        Action::Logout,
        Action::ManageOwnTokens,
        Action::ManageAllTokens,
        Action::ManageUsers,
        Action::ManageEnrollment,
        Action::EditDevice,
        Action::DeleteDevice,
        Action::RevokeDevice,
        Action::ManageGroups,
        Action::EditDesired,
        Action::SendCommand,
        Action::ManageAlerts,
        Action::RunRollout,
        Action::DeviceSync,
        Action::ReadTwin,
        Action::WriteTelemetry,
    ];

    #[test]
    fn every_action_is_in_the_table_once() {
        for a in ACTIONS {
            assert_eq!(
                PERMISSIONS.iter().filter(|(x, _)| *x == a).count(),
                1,
                "{a:?}"
            );
        }
        assert_eq!(PERMISSIONS.len(), ACTIONS.len());
    }

    #[test]
    fn roles_parse_order_and_print() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert!(
            "root"
                .parse::<Role>()
                .unwrap_err()
                .to_string()
                .contains("root")
        );
    }

    #[test]
    fn matrix_spot_checks() {
        use PrincipalKind::*;
        let ok = |k, r, a, s| authorize(k, r, a, s).is_ok();
        assert!(ok(User, Some(Role::Viewer), Action::ReadFleet, None));
        assert!(!ok(User, Some(Role::Viewer), Action::EditDevice, None));
        assert!(ok(Token, Some(Role::Operator), Action::SendCommand, None));
        assert!(!ok(Token, Some(Role::Operator), Action::ManageUsers, None));
        assert!(ok(User, Some(Role::Admin), Action::RevokeDevice, None));
        assert!(ok(Device, None, Action::ReadTwin, Some(true)));
        assert!(!ok(Device, None, Action::ReadTwin, Some(false)));
        assert!(!ok(Device, None, Action::ReadFleet, Some(true)));
        assert!(ok(Device, None, Action::DeviceSync, Some(true)));
        assert!(!ok(User, Some(Role::Admin), Action::DeviceSync, None));
        assert_eq!(
            authorize(User, Some(Role::Viewer), Action::ManageUsers, None),
            Err(Denied::Role {
                required: Role::Admin,
                actual: Role::Viewer
            })
        );
    }

    #[test]
    fn token_roles_are_capped() {
        assert_eq!(token_role(None, Role::Operator), Ok(Role::Operator));
        assert_eq!(
            token_role(Some(Role::Viewer), Role::Operator),
            Ok(Role::Viewer)
        );
        assert!(token_role(Some(Role::Admin), Role::Operator).is_err());
        assert_eq!(
            effective_token_role(Role::Admin, Role::Viewer),
            Role::Viewer
        );
    }

    #[test]
    fn enrollment_rules() {
        let g = EnrollmentGrant {
            uses_left: 2,
            expires_at: Timestamp::from_secs(100),
            group: None,
            labels: [("site".to_owned(), "lab".to_owned())].into(),
        };
        assert!(g.check(Timestamp::from_secs(99)).is_ok());
        assert_eq!(
            g.check(Timestamp::from_secs(100)),
            Err(EnrollmentError::Expired(Timestamp::from_secs(100)))
        );
        let used = g.used_once().used_once();
        assert_eq!(
            used.check(Timestamp::from_secs(1)),
            Err(EnrollmentError::UsedUp)
        );
        let own = [
            ("site".to_owned(), "home".to_owned()),
            ("role".to_owned(), "cam".to_owned()),
        ]
        .into();
        let l = g.labels_for(&own);
        assert_eq!(l["site"], "lab");
        assert_eq!(l["role"], "cam");
    }

    fn role() -> impl Strategy<Value = Role> {
        prop::sample::select(Role::ALL.to_vec())
    }

    proptest! {
        /// A higher role is allowed everything a lower role is.
        #[test]
        fn roles_are_monotone(a in role(), b in role(), i in 0usize..18) {
            let action = ACTIONS[i];
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            if authorize(PrincipalKind::User, Some(lo), action, None).is_ok() {
                prop_assert!(authorize(PrincipalKind::User, Some(hi), action, None).is_ok());
            }
        }

        /// A token never acts above its creator.
        #[test]
        fn tokens_never_exceed_creator(req in proptest::option::of(role()), creator in role(), later in role()) {
            if let Ok(r) = token_role(req, creator) {
                prop_assert!(r <= creator);
                prop_assert!(effective_token_role(r, later) <= later);
            }
        }

        /// A device may never act on another device, nor on the fleet.
        #[test]
        fn devices_stay_in_their_lane(i in 0usize..18) {
            prop_assume!(ACTIONS[i] != Action::Whoami);
            prop_assert!(authorize(PrincipalKind::Device, None, ACTIONS[i], Some(false)).is_err());
            prop_assert!(authorize(PrincipalKind::Device, None, ACTIONS[i], None).is_err());
        }

        /// Uses only go down, and a token with uses left and time left is valid.
        #[test]
        fn enrollment_uses(uses in 0u32..5, now in 0i64..200) {
            let g = EnrollmentGrant { uses_left: uses, expires_at: Timestamp::from_secs(100), group: None, labels: BTreeMap::new() };
            let valid = uses > 0 && now < 100;
            prop_assert_eq!(g.check(Timestamp::from_secs(now)).is_ok(), valid);
            prop_assert_eq!(g.used_once().uses_left, uses.saturating_sub(1));
        }
    }
}
