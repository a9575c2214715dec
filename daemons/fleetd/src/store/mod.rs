//! The fleet store: users, sessions, API tokens, enrollment tokens, devices,
//! groups, alerts, the audit log and config layers, behind [`FleetStore`] so a
//! PostgreSQL implementation can follow the embedded SQLite one ([`SqliteStore`]).
//!
//! The trait is synchronous: handlers call it through
//! [`crate::state::AppState::store`], which runs it on the blocking pool. Every
//! method that changes several rows does so in one transaction.

mod sqlite;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use wrale_core::fleet::access::{EnrollmentGrant, Role};
use wrale_core::fleet::registry::{DeviceRecord, Group, Health};
use wrale_core::model::{DeviceId, GroupId, Location, Severity};
use wrale_core::{BoardModel, Timestamp};

pub use sqlite::{SCHEMA_VERSION, SqliteStore};

/// A store failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or the change conflicts with stored state.
    #[error("{0}")]
    Conflict(String),
    /// A value the store cannot accept.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// Why.
        message: String,
    },
    /// The backend failed (I/O, corruption, a bug).
    #[error("{0}")]
    Backend(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A user (never with the password hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Role.
    #[schema(value_type = String, example = "operator")]
    pub role: Role,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// A named API token (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiToken {
    /// Id (`tok-...`).
    pub id: String,
    /// Name given by its creator.
    pub name: String,
    /// The user who created it (it acts for them).
    pub owner: String,
    /// Its role (at most its owner's).
    #[schema(value_type = String)]
    pub role: Role,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it stops working.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

/// An enrollment token (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollmentToken {
    /// Id (`enr-...`).
    pub id: String,
    /// Group enrolled devices go into.
    #[schema(value_type = Option<String>)]
    pub group: Option<GroupId>,
    /// Uses it was created with.
    pub uses: u32,
    /// Uses consumed.
    pub used: u32,
    /// When it stops working.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// Labels given to enrolled devices.
    pub labels: BTreeMap<String, String>,
    /// Who created it.
    pub created_by: String,
    /// When.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl EnrollmentToken {
    /// The rule view of this token.
    pub fn grant(&self) -> EnrollmentGrant {
        EnrollmentGrant {
            uses_left: self.uses.saturating_sub(self.used),
            expires_at: self.expires_at,
            group: self.group.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// What a secret (by its SHA-256) authenticates as.
#[derive(Debug, Clone, PartialEq)]
pub enum Credential {
    /// A login session of `user`.
    Session {
        /// The user.
        user: String,
        /// The user's current role.
        role: Role,
        /// When the session ends.
        expires_at: Timestamp,
    },
    /// An API token.
    Token {
        /// The token.
        token: ApiToken,
        /// Its owner's current role.
        owner_role: Role,
    },
    /// A device credential (not revoked).
    Device {
        /// The device.
        id: DeviceId,
    },
}

/// A device's enrollment request as the store needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrollment {
    /// Device id.
    pub device_id: DeviceId,
    /// Board model.
    pub model: BoardModel,
    /// Serial.
    pub serial: Option<String>,
    /// Labels the device asked for (the token's win).
    pub labels: BTreeMap<String, String>,
    /// Location.
    pub location: Location,
    /// metald version, if sent.
    pub agent_version: Option<String>,
}

/// Why an enrollment failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollRefusal {
    /// Unknown, expired or used-up token (the reason is logged, not returned).
    Invalid(String),
    /// The device id is enrolled and not revoked.
    AlreadyEnrolled,
}

/// A change to a device's metadata (each `Some` replaces).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DevicePatch {
    /// New labels (the whole map).
    pub labels: Option<BTreeMap<String, String>>,
    /// New location.
    pub location: Option<Location>,
    /// New group (`Some(None)` removes it from its group).
    pub group: Option<Option<GroupId>>,
}

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupRecord {
    /// Id.
    #[schema(value_type = String)]
    pub id: GroupId,
    /// Display name.
    pub name: String,
    /// Parent group.
    #[schema(value_type = Option<String>)]
    pub parent: Option<GroupId>,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl GroupRecord {
    /// The registry view.
    pub fn group(&self) -> Group {
        Group {
            id: self.id.clone(),
            name: self.name.clone(),
            parent: self.parent.clone(),
        }
    }
}

/// An alert's life-cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Raised, not yet acknowledged.
    Raised,
    /// Acknowledged by someone, still active.
    Acked,
    /// Cleared (inactive).
    Cleared,
}

impl AlertState {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Raised => "raised",
            AlertState::Acked => "acked",
            AlertState::Cleared => "cleared",
        }
    }
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertRecord {
    /// Id.
    pub id: i64,
    /// Device it is about.
    #[schema(value_type = Option<String>)]
    pub device: Option<DeviceId>,
    /// Stable code (`thermal_warning`, `custom:...`).
    pub code: String,
    /// Severity.
    #[schema(value_type = String)]
    pub severity: Severity,
    /// Message.
    pub message: String,
    /// De-duplication key: raising an alert whose key is active returns the active one.
    pub key: String,
    /// State.
    pub state: AlertState,
    /// When raised.
    #[schema(value_type = String, format = DateTime)]
    pub raised_at: Timestamp,
    /// Who raised it.
    pub raised_by: String,
    /// When acknowledged.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub acked_at: Option<Timestamp>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When cleared.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub cleared_at: Option<Timestamp>,
    /// Who cleared it.
    pub cleared_by: Option<String>,
}

/// A new alert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    /// Device.
    pub device: Option<DeviceId>,
    /// Code.
    pub code: String,
    /// Severity.
    pub severity: Severity,
    /// Message.
    pub message: String,
    /// De-duplication key (default `<device>/<code>`).
    pub key: String,
}

/// Alert list filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    /// Only in this state (`active` = raised or acked is expressed as `None` + `active_only`).
    pub state: Option<AlertState>,
    /// Only raised or acked.
    pub active_only: bool,
    /// Only for this device.
    pub device: Option<DeviceId>,
    /// Only this severity.
    pub severity: Option<Severity>,
    /// At most this many, newest first.
    pub limit: usize,
    /// Only with a smaller id (the next page).
    pub before: Option<i64>,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Sequence number (increasing).
    pub seq: i64,
    /// When.
    #[schema(value_type = String, format = DateTime)]
    pub time: Timestamp,
    /// Who (`user:alice`, `token:ci@alice`, `device:pi-1`, `system`).
    pub actor: String,
    /// What (`device.revoke`, `user.create`, ...).
    pub action: String,
    /// On what (`device:pi-1`, `user:bob`).
    pub target: String,
    /// `allowed`, `denied` or `failed`.
    pub verdict: String,
    /// Details of the result.
    #[schema(value_type = Object)]
    pub result: Value,
}

/// A new audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    /// When.
    pub time: Timestamp,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Verdict.
    pub verdict: String,
    /// Details.
    pub result: Value,
}

/// Audit query (every given criterion must hold).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact target.
    pub target: Option<String>,
    /// Exact action, or a prefix ending in `.` (`device.`).
    pub action: Option<String>,
    /// At or after.
    pub since: Option<Timestamp>,
    /// Before.
    pub until: Option<Timestamp>,
    /// At most this many, newest first.
    pub limit: usize,
    /// Only with a smaller `seq` (the next page).
    pub before: Option<i64>,
}

/// Which config layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigScope {
    /// Fleet defaults.
    Fleet,
    /// A group's overrides.
    Group(GroupId),
    /// A device's overrides.
    Device(DeviceId),
}

impl std::fmt::Display for ConfigScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigScope::Fleet => f.write_str("fleet"),
            ConfigScope::Group(g) => write!(f, "group:{g}"),
            ConfigScope::Device(d) => write!(f, "device:{d}"),
        }
    }
}

impl std::str::FromStr for ConfigScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "fleet" {
            return Ok(ConfigScope::Fleet);
        }
        if let Some(g) = s.strip_prefix("group:") {
            return GroupId::new(g)
                .map(ConfigScope::Group)
                .map_err(|e| e.to_string());
        }
        if let Some(d) = s.strip_prefix("device:") {
            return DeviceId::new(d)
                .map(ConfigScope::Device)
                .map_err(|e| e.to_string());
        }
        Err(format!("unknown config scope {s:?}"))
    }
}

/// A config layer: flat desired fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigLayer {
    /// Its scope.
    pub scope: ConfigScope,
    /// Flat fields (`{"fan_profile": "cool", "warn_c": 65}`).
    pub fields: Map<String, Value>,
    /// Last changed.
    pub updated_at: Timestamp,
    /// By whom.
    pub updated_by: String,
}

/// The fleet store. Implementations are shared between threads.
pub trait FleetStore: Send + Sync + std::fmt::Debug {
    // ---- users
    /// Number of users.
    fn user_count(&self) -> StoreResult<u64>;
    /// Creates a user; `Conflict` if the name is taken.
    fn create_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        now: Timestamp,
    ) -> StoreResult<User>;
    /// A user and their password hash.
    fn user_with_hash(&self, name: &str) -> StoreResult<Option<(User, String)>>;
    /// Every user, by name.
    fn list_users(&self) -> StoreResult<Vec<User>>;
    /// Changes a user's role and/or password (a new password ends their sessions).
    fn update_user(
        &self,
        name: &str,
        role: Option<Role>,
        password_hash: Option<&str>,
    ) -> StoreResult<User>;
    /// Deletes a user with their sessions and API tokens.
    fn delete_user(&self, name: &str) -> StoreResult<()>;

    // ---- sessions and API tokens
    /// Stores a login session.
    fn create_session(
        &self,
        secret_hash: &str,
        user: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<()>;
    /// Ends a session; whether it existed.
    fn delete_session(&self, secret_hash: &str) -> StoreResult<bool>;
    /// Stores an API token.
    fn create_api_token(&self, token: &ApiToken, secret_hash: &str) -> StoreResult<()>;
    /// API tokens, of one owner or all.
    fn list_api_tokens(&self, owner: Option<&str>) -> StoreResult<Vec<ApiToken>>;
    /// One API token.
    fn get_api_token(&self, id: &str) -> StoreResult<Option<ApiToken>>;
    /// Deletes an API token; whether it existed.
    fn delete_api_token(&self, id: &str) -> StoreResult<bool>;
    /// What a bearer secret (by SHA-256 hex) authenticates as at `now`, if anything.
    fn authenticate(&self, secret_hash: &str, now: Timestamp) -> StoreResult<Option<Credential>>;

    // ---- enrollment
    /// Stores an enrollment token.
    fn create_enrollment_token(
        &self,
        token: &EnrollmentToken,
        secret_hash: &str,
    ) -> StoreResult<()>;
    /// Every enrollment token.
    fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentToken>>;
    /// Deletes an enrollment token; whether it existed.
    fn delete_enrollment_token(&self, id: &str) -> StoreResult<bool>;
    /// In one transaction: checks the token, consumes one use, registers (or
    /// re-registers a revoked) device with the credential hash.
    fn enroll(
        &self,
        token_hash: &str,
        request: &Enrollment,
        credential_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Result<DeviceRecord, EnrollRefusal>>;

    // ---- devices
    /// Every device.
    fn list_devices(&self) -> StoreResult<Vec<DeviceRecord>>;
    /// One device.
    fn get_device(&self, id: &DeviceId) -> StoreResult<Option<DeviceRecord>>;
    /// Changes labels, location or group (the group must exist).
    fn update_device(&self, id: &DeviceId, patch: &DevicePatch) -> StoreResult<DeviceRecord>;
    /// Deletes a device (its config layer too).
    fn delete_device(&self, id: &DeviceId) -> StoreResult<()>;
    /// Revokes a device's credential.
    fn revoke_device(&self, id: &DeviceId) -> StoreResult<DeviceRecord>;
    /// Records a connect (`online = true`) or disconnect at `now` (hub wiring).
    fn device_seen(
        &self,
        id: &DeviceId,
        online: bool,
        now: Timestamp,
        agent_version: Option<&str>,
    ) -> StoreResult<()>;
    /// Sets a device's health (hub wiring, from the twin's alerts).
    fn set_device_health(&self, id: &DeviceId, health: Health) -> StoreResult<()>;
    /// Marks every device offline (at start: no session survives a restart).
    fn mark_all_offline(&self) -> StoreResult<()>;

    // ---- groups
    /// Every group.
    fn list_groups(&self) -> StoreResult<Vec<GroupRecord>>;
    /// One group.
    fn get_group(&self, id: &GroupId) -> StoreResult<Option<GroupRecord>>;
    /// Creates a group (`Conflict` if taken, or a cycle / unknown parent).
    fn create_group(&self, group: &GroupRecord) -> StoreResult<GroupRecord>;
    /// Renames and/or re-parents (`Some(None)` makes it a root); refuses cycles.
    fn update_group(
        &self,
        id: &GroupId,
        name: Option<&str>,
        parent: Option<Option<&GroupId>>,
    ) -> StoreResult<GroupRecord>;
    /// Deletes a group with no subgroups and no devices.
    fn delete_group(&self, id: &GroupId) -> StoreResult<()>;

    // ---- alerts
    /// Raises an alert; if one with the same key is active, returns it and `false`.
    fn raise_alert(
        &self,
        alert: &NewAlert,
        by: &str,
        now: Timestamp,
    ) -> StoreResult<(AlertRecord, bool)>;
    /// Acknowledges an active alert.
    fn ack_alert(&self, id: i64, by: &str, now: Timestamp) -> StoreResult<AlertRecord>;
    /// Clears an alert.
    fn clear_alert(&self, id: i64, by: &str, now: Timestamp) -> StoreResult<AlertRecord>;
    /// Alerts, newest first.
    fn list_alerts(&self, filter: &AlertFilter) -> StoreResult<Vec<AlertRecord>>;

    // ---- audit (append-only)
    /// Appends an entry.
    fn append_audit(&self, entry: &NewAudit) -> StoreResult<AuditEntry>;
    /// Entries, newest first.
    fn query_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>>;

    // ---- config layers
    /// One layer.
    fn get_config_layer(&self, scope: &ConfigScope) -> StoreResult<Option<ConfigLayer>>;
    /// Replaces a layer (an empty map deletes it).
    fn put_config_layer(
        &self,
        scope: &ConfigScope,
        fields: &Map<String, Value>,
        by: &str,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Every layer.
    fn list_config_layers(&self) -> StoreResult<Vec<ConfigLayer>>;

    // ---- maintenance
    /// Bytes used on disk.
    fn size_bytes(&self) -> StoreResult<u64>;
    /// Writes a consistent copy of the store to `path` (which must not exist).
    fn snapshot_into(&self, path: &Path) -> StoreResult<()>;
}
