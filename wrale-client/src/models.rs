//! Request and response bodies of the fleetd API, as serde structs.
//!
//! Field names follow docs/fleet-api.md and fleetd's OpenAPI document. Response
//! types accept (and ignore) fields they do not know, so a newer fleetd does not
//! break an older client; request types serialize only what is set.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use wrale_core::BoardModel;
pub use wrale_core::Timestamp;
pub use wrale_core::fleet::access::{PrincipalKind, Role};
pub use wrale_core::fleet::registry::{DeviceRecord as Device, DeviceStatus, Health};
pub use wrale_core::model::Severity;
pub use wrale_core::model::{Command, DeviceId, GroupId, Location};

// Fleet intelligence (analysis, fleet alerts, silences, dead letters).
pub use crate::api::analysis::{
    DeviceAnalysisReport, DeviceScore, FleetAnalysisReport, HotSpots, NewSilence, OpenFleetAlert,
};
pub use wrale_core::fleet::alerting::{Delivery, Silence, SilenceMatch};
pub use wrale_core::fleet::analyzer::{Anomaly, DeviceAnalysis, GroupHealth, HealthScope, HotSpot};

/// A JSON object (config layers, twin sections).
pub type JsonMap = Map<String, Value>;

// ---------------------------------------------------------------- auth, users, tokens

/// A user as embedded in a login answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRef {
    /// User name.
    pub name: String,
    /// Role.
    pub role: Role,
}

/// The answer to `POST /auth/login`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The session token (`wrs_...`).
    pub token: String,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Who logged in.
    pub user: UserRef,
}

/// The answer to `GET /auth/whoami`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Whoami {
    /// Kind of principal.
    pub kind: PrincipalKind,
    /// User name, token name or device id.
    pub name: String,
    /// Role (devices have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// For an API token: the user it acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// User name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// When it was created.
    pub created_at: Timestamp,
}

/// Body of `POST /users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewUser {
    /// User name.
    pub name: String,
    /// Initial password.
    pub password: String,
    /// Role.
    pub role: Role,
}

/// Body of `PATCH /users/{name}`: what is set changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserPatch {
    /// New password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// New role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// A named API token (never the secret, which is shown once at creation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Token id (for revocation).
    pub id: String,
    /// Name given at creation.
    pub name: String,
    /// The user who created it (it acts for them).
    pub owner: String,
    /// Role (at most its owner's).
    pub role: Role,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it expires; `None` never.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

/// Body of `POST /tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewToken {
    /// Name (1-64 characters).
    pub name: String,
    /// Role, at most the caller's; the caller's role when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Lifetime (`"30d"`, `"12h"`); `None` never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// The answer to `POST /tokens`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// The token's record.
    #[serde(flatten)]
    pub info: ApiToken,
    /// The secret (`wrt_...`).
    pub token: String,
}

// ---------------------------------------------------------------- enrollment

/// An enrollment token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    /// Token id.
    pub id: String,
    /// Group the enrolled devices join.
    #[serde(default)]
    pub group: Option<GroupId>,
    /// How many enrollments it allows in total.
    pub uses: u32,
    /// How many are used.
    pub used: u32,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Labels given to the enrolled devices.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Who created it (`user:ada`).
    #[serde(default)]
    pub created_by: String,
    /// When it was created.
    pub created_at: Timestamp,
}

/// Body of `POST /enrollment-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewEnrollmentToken {
    /// Group the enrolled devices join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// How many devices may use it (server default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// Lifetime (`"24h"`, the server default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// Labels given to the enrolled devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The answer to `POST /enrollment-tokens`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedEnrollmentToken {
    /// The secret (`wre_...`), for metald's `[fleet] enrollment_token`.
    pub token: String,
    /// The token's record.
    #[serde(flatten)]
    pub info: EnrollmentToken,
}

/// Body of `POST /enroll` (what metald sends; offered here for tools and tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The enrollment token (`wre_...`).
    pub token: String,
    /// The id the device asks for.
    pub device_id: DeviceId,
    /// Board model.
    pub model: BoardModel,
    /// Hardware serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Labels (merged with the enrollment token's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Physical location.
    #[serde(default)]
    pub location: Location,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

impl EnrollRequest {
    /// A request with no serial, labels, location or version.
    pub fn new(token: impl Into<String>, device_id: DeviceId, model: BoardModel) -> Self {
        Self {
            token: token.into(),
            device_id,
            model,
            serial: None,
            labels: BTreeMap::new(),
            location: Location::default(),
            agent_version: None,
        }
    }
}

/// The answer to `POST /enroll`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The enrolled id.
    pub device_id: DeviceId,
    /// The device credential (`wrd_...`).
    pub credential: String,
    /// Group joined, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// Path of the device's sync WebSocket.
    pub sync_path: String,
}

// ---------------------------------------------------------------- devices, groups

/// One page of a paginated list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor of the next page; `None` on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Filters and pagination of `GET /devices`. Build with the methods:
/// `DeviceFilter::new().label("role", "cam").group("lab").limit(100)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFilter {
    /// `label=k=v` filters (all must match).
    pub labels: Vec<(String, String)>,
    /// Group (including its subgroups).
    pub group: Option<String>,
    /// Site.
    pub site: Option<String>,
    /// Rack.
    pub rack: Option<String>,
    /// Shelf.
    pub shelf: Option<String>,
    /// Board model.
    pub model: Option<String>,
    /// Connection status.
    pub status: Option<String>,
    /// Health.
    pub health: Option<String>,
    /// Page size (server default 50, max 500).
    pub limit: Option<u32>,
    /// Cursor from a previous page.
    pub cursor: Option<String>,
}

impl DeviceFilter {
    /// No filter: every device, first page.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a `key=value` label filter.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
    /// Only devices in this group or its subgroups.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
    /// Only devices at this site.
    pub fn site(mut self, site: impl Into<String>) -> Self {
        self.site = Some(site.into());
        self
    }
    /// Only devices in this rack.
    pub fn rack(mut self, rack: impl Into<String>) -> Self {
        self.rack = Some(rack.into());
        self
    }
    /// Only devices on this shelf.
    pub fn shelf(mut self, shelf: impl Into<String>) -> Self {
        self.shelf = Some(shelf.into());
        self
    }
    /// Only this board model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }
    /// Only devices with this status.
    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.status = Some(status.into());
        self
    }
    /// Only devices with this health.
    pub fn health(mut self, health: impl Into<String>) -> Self {
        self.health = Some(health.into());
        self
    }
    /// Page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
    /// Start after this cursor.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// The query string pairs.
    pub fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut q: Vec<(&'static str, String)> = self
            .labels
            .iter()
            .map(|(k, v)| ("label", format!("{k}={v}")))
            .collect();
        let opts = [
            ("group", &self.group),
            ("site", &self.site),
            ("rack", &self.rack),
            ("shelf", &self.shelf),
            ("model", &self.model),
            ("status", &self.status),
            ("health", &self.health),
            ("cursor", &self.cursor),
        ];
        q.extend(
            opts.into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone()))),
        );
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        q
    }
}

/// Reads a present field as `Some(value)`, `null` included (`Some(None)`); an
/// absent field is `None` through `#[serde(default)]`. Plain `Option<Option<T>>`
/// would read `null` as absent, and a patch could not clear the field.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PATCH /devices/{id}`: what is set changes. Unknown fields are
/// refused, so a misspelt one is an error rather than a patch that changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    /// Replaces the labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Replaces the location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// `Some(Some(g))` moves the device to group `g`; `Some(None)` takes it out
    /// of its group (`"group": null`).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub group: Option<Option<GroupId>>,
}

/// A device's physical neighbours.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Neighbours {
    /// Devices on the same shelf.
    #[serde(default)]
    pub same_shelf: Vec<DeviceId>,
    /// Devices in the same rack.
    #[serde(default)]
    pub same_rack: Vec<DeviceId>,
}

/// A group of devices (groups form a tree through `parent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Stable id.
    pub id: GroupId,
    /// Display name (the id when none was given).
    pub name: String,
    /// Parent group.
    #[serde(default)]
    pub parent: Option<GroupId>,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// Direct subgroups (in `GET /groups/{id}` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<GroupId>,
    /// Parent, grandparent, ... (in `GET /groups/{id}` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<GroupId>,
}

/// Body of `POST /groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewGroup {
    /// Stable id.
    pub id: GroupId,
    /// Display name (default: the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Parent group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<GroupId>,
}

/// Body of `PATCH /groups/{id}` (unknown fields refused).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Some(Some(p))` moves the group under `p`; `Some(None)` makes it a root.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub parent: Option<Option<GroupId>>,
}

/// A shelf and the devices on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShelfNode {
    /// Shelf name.
    pub name: String,
    /// Device ids, by slot then id.
    #[serde(default)]
    pub devices: Vec<DeviceId>,
}

/// A rack with its shelves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RackNode {
    /// Rack name.
    pub name: String,
    /// Shelves.
    #[serde(default)]
    pub shelves: Vec<ShelfNode>,
    /// Devices in the rack with no shelf.
    #[serde(default)]
    pub unshelved: Vec<DeviceId>,
}

/// A site with its racks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteNode {
    /// Site name (`""` for devices with a rack but no site).
    pub name: String,
    /// Racks.
    #[serde(default)]
    pub racks: Vec<RackNode>,
    /// Devices at the site with no rack.
    #[serde(default)]
    pub unracked: Vec<DeviceId>,
}

/// The physical topology: sites -> racks -> shelves -> device ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Sites.
    #[serde(default)]
    pub sites: Vec<SiteNode>,
    /// Devices with no location at all.
    #[serde(default)]
    pub unplaced: Vec<DeviceId>,
}

// ---------------------------------------------------------------- twins, config

/// A device twin as fleetd sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Twin {
    /// The device.
    pub device: DeviceId,
    /// The version: automerge heads, hex.
    #[serde(default)]
    pub version: Vec<String>,
    /// Identity, model, labels, location.
    #[serde(default)]
    pub meta: JsonMap,
    /// What the fleet wants.
    #[serde(default)]
    pub desired: JsonMap,
    /// What the device reports.
    #[serde(default)]
    pub reported: JsonMap,
    /// Unresolved manual-policy conflicts.
    #[serde(default)]
    pub conflicts: Vec<Value>,
    /// History epoch (bumped by compaction).
    #[serde(default)]
    pub epoch: u64,
}

/// One version in a twin's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinVersion {
    /// The version (heads, hex), to pass to a rollback.
    pub version: Value,
    /// Who wrote it (`user:ada`, `device:pi-1`, `fleet`).
    pub author: String,
    /// When.
    pub time: Timestamp,
    /// The fields it changed.
    #[serde(default)]
    pub fields: Vec<String>,
    /// What it wrote, as fleetd's history shows it (`desired: fan_profile,warn_c`).
    #[serde(default)]
    pub summary: String,
}

/// A manual-policy conflict on one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// The field (`desired.warn_c`).
    pub field: String,
    /// The competing values.
    #[serde(default)]
    pub values: Vec<Value>,
}

/// Where an effective config field came from, and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectiveField {
    /// The value.
    pub value: Value,
    /// The layer (`fleet`, `group:<id>`, `device`).
    pub layer: String,
}

/// A device's effective desired config. Read from fleetd's answer
/// `{device, fields: {name: value}, sources: {name: layer}}` (a `fields` entry may
/// also be `{value, layer}`, the form this type serializes to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "EffectiveWire")]
pub struct EffectiveConfig {
    /// The device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// Field name to value and source layer.
    pub fields: BTreeMap<String, EffectiveField>,
}

/// [`EffectiveConfig`] as it comes over the wire.
#[derive(Deserialize)]
struct EffectiveWire {
    #[serde(default)]
    device: Option<DeviceId>,
    fields: BTreeMap<String, Value>,
    #[serde(default)]
    sources: BTreeMap<String, String>,
}

impl From<EffectiveWire> for EffectiveConfig {
    fn from(w: EffectiveWire) -> Self {
        let fields = w
            .fields
            .into_iter()
            .map(|(k, v)| {
                let field = match serde_json::from_value::<EffectiveField>(v.clone()) {
                    Ok(f) => f,
                    Err(_) => EffectiveField {
                        value: v,
                        layer: w.sources.get(&k).cloned().unwrap_or_default(),
                    },
                };
                (k, field)
            })
            .collect();
        EffectiveConfig {
            device: w.device,
            fields,
        }
    }
}

/// A config layer's scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigScope {
    /// Fleet defaults.
    Fleet,
    /// One group's layer.
    Group(GroupId),
    /// One device's overrides.
    Device(DeviceId),
}

impl ConfigScope {
    /// The path segments below `/config`.
    pub(crate) fn segments(&self) -> Vec<&str> {
        match self {
            ConfigScope::Fleet => vec!["config", "fleet"],
            ConfigScope::Group(g) => vec!["config", "groups", g.as_str()],
            ConfigScope::Device(d) => vec!["config", "devices", d.as_str()],
        }
    }
}

impl fmt::Display for ConfigScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigScope::Fleet => f.write_str("fleet"),
            ConfigScope::Group(g) => write!(f, "group {g}"),
            ConfigScope::Device(d) => write!(f, "device {d}"),
        }
    }
}

// ---------------------------------------------------------------- commands

/// Body of `POST /devices/{id}/commands`: a command plus why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandBody {
    /// The command (`{"type": "set_fan_duty", ...}`, flattened).
    #[serde(flatten)]
    pub command: Command,
    /// Why (recorded in the audit log).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// What became of a device command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Sent, not answered yet.
    Pending,
    /// Executed.
    Done,
    /// Refused by the device's safety engine.
    Refused,
    /// Executed, but the hardware failed.
    Failed,
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Done => "done",
            CommandStatus::Refused => "refused",
            CommandStatus::Failed => "failed",
        })
    }
}

/// The answer to a device command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// Command id (`ack.<id>` in the twin's `reported`).
    pub id: String,
    /// Status.
    pub status: CommandStatus,
    /// Refusal or failure code (the rule for a refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Refusal or failure message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The command's result (diagnostics report, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

// ---------------------------------------------------------------- telemetry

/// Resolution of a telemetry query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Resolution {
    /// Raw samples.
    #[serde(rename = "raw")]
    Raw,
    /// One-minute rollups.
    #[serde(rename = "1m")]
    Minute,
    /// One-hour rollups.
    #[serde(rename = "1h")]
    Hour,
    /// Chosen by the server from the range.
    #[default]
    #[serde(rename = "auto")]
    Auto,
}

impl Resolution {
    /// The query value (`1m`).
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
            Resolution::Auto => "auto",
        }
    }
}

impl FromStr for Resolution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Resolution::Raw),
            "1m" => Ok(Resolution::Minute),
            "1h" => Ok(Resolution::Hour),
            "auto" => Ok(Resolution::Auto),
            other => Err(format!(
                "unknown resolution {other:?} (expected raw, 1m, 1h or auto)"
            )),
        }
    }
}

/// Aggregation across a group's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Mean.
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
}

impl Aggregate {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Avg => "avg",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
        }
    }
}

/// A telemetry range query.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryQuery {
    /// Metric name (`cpu_temp_c`).
    pub metric: String,
    /// Start (inclusive); server default when `None`.
    pub from: Option<Timestamp>,
    /// End; server default (now) when `None`.
    pub to: Option<Timestamp>,
    /// Resolution.
    pub resolution: Resolution,
    /// Aggregation across devices (group queries only).
    pub agg: Option<Aggregate>,
}

impl TelemetryQuery {
    /// A query of one metric over the server's default range, `auto` resolution.
    pub fn new(metric: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            from: None,
            to: None,
            resolution: Resolution::Auto,
            agg: None,
        }
    }
    /// The range.
    pub fn range(mut self, from: Timestamp, to: Timestamp) -> Self {
        self.from = Some(from);
        self.to = Some(to);
        self
    }
    /// The resolution.
    pub fn resolution(mut self, r: Resolution) -> Self {
        self.resolution = r;
        self
    }
    /// The aggregation (group queries).
    pub fn agg(mut self, a: Aggregate) -> Self {
        self.agg = Some(a);
        self
    }

    pub(crate) fn to_query(&self, with_agg: bool) -> Vec<(&'static str, String)> {
        let mut q = vec![
            ("metric", self.metric.clone()),
            ("resolution", self.resolution.as_str().to_owned()),
        ];
        if let Some(f) = self.from {
            q.push(("from", f.to_string()));
        }
        if let Some(t) = self.to {
            q.push(("to", t.to_string()));
        }
        if let (true, Some(a)) = (with_agg, self.agg) {
            q.push(("agg", a.as_str().to_owned()));
        }
        q
    }
}

/// The points of a device series: raw samples or rollup buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Points {
    /// Rollups (`1m`, `1h`).
    Buckets(Vec<BucketPoint>),
    /// Raw samples.
    Raw(Vec<RawPoint>),
}

impl Points {
    /// Number of points.
    pub fn len(&self) -> usize {
        match self {
            Points::Buckets(b) => b.len(),
            Points::Raw(r) => r.len(),
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A raw sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawPoint {
    /// When.
    pub t: Timestamp,
    /// Value.
    pub value: f64,
}

/// A rollup bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketPoint {
    /// Bucket start.
    pub t: Timestamp,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub avg: f64,
    /// Number of raw samples.
    pub count: u64,
}

/// The answer to a device telemetry query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceTelemetry {
    /// The device.
    pub device: String,
    /// Metric name.
    pub metric: String,
    /// Resolution actually used.
    pub resolution: Resolution,
    /// Range start.
    pub from: Timestamp,
    /// Range end.
    pub to: Timestamp,
    /// Points, oldest first.
    pub points: Points,
}

/// One point of a group aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupValue {
    /// Bucket start (or sample time).
    pub t: Timestamp,
    /// The aggregated value.
    pub value: f64,
    /// How many devices contributed.
    pub devices: u32,
}

/// The answer to a group telemetry query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupTelemetry {
    /// The group.
    pub group: String,
    /// Metric name.
    pub metric: String,
    /// Resolution actually used.
    pub resolution: Resolution,
    /// Aggregation.
    pub agg: Aggregate,
    /// Range start.
    pub from: Timestamp,
    /// Range end.
    pub to: Timestamp,
    /// Devices of the group (and subgroups).
    #[serde(default)]
    pub devices: Vec<String>,
    /// Points, oldest first.
    pub points: Vec<GroupValue>,
}

// ---------------------------------------------------------------- alerts, audit

/// An alert's life-cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Raised, not yet acknowledged.
    Raised,
    /// Acknowledged, still active.
    Acked,
    /// Cleared.
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

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alert in the fleet's alert list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetAlert {
    /// Alert id (for ack/clear).
    pub id: i64,
    /// Device it is about, if any.
    #[serde(default)]
    pub device: Option<DeviceId>,
    /// Code (`thermal_warning`, `custom:...`).
    pub code: String,
    /// Severity.
    pub severity: Severity,
    /// Message.
    #[serde(default)]
    pub message: String,
    /// De-duplication key.
    #[serde(default)]
    pub key: String,
    /// State.
    pub state: AlertState,
    /// When it was raised.
    pub raised_at: Timestamp,
    /// Who raised it.
    #[serde(default)]
    pub raised_by: String,
    /// When it was acknowledged.
    #[serde(default)]
    pub acked_at: Option<Timestamp>,
    /// Who acknowledged it.
    #[serde(default)]
    pub acked_by: Option<String>,
    /// When it was cleared.
    #[serde(default)]
    pub cleared_at: Option<Timestamp>,
    /// Who cleared it.
    #[serde(default)]
    pub cleared_by: Option<String>,
}

/// A page of a list paged by id, newest first (alerts, audit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdPage<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass as `before` for the next (older) page; `None` on the last one.
    #[serde(default)]
    pub next_before: Option<i64>,
}

/// Filters and paging of `GET /alerts`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFilter {
    /// State: `raised`, `acked`, `cleared`, or `active` (raised or acked).
    pub state: Option<String>,
    /// Device.
    pub device: Option<String>,
    /// Severity (`info`, `warning`, `critical`).
    pub severity: Option<String>,
    /// Page size (server default 100, max 1000).
    pub limit: Option<u32>,
    /// Only alerts with a smaller id (the next page).
    pub before: Option<i64>,
}

impl AlertFilter {
    pub(crate) fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut q: Vec<(&'static str, String)> = [
            ("state", &self.state),
            ("device", &self.device),
            ("severity", &self.severity),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone())))
        .collect();
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(b) = self.before {
            q.push(("before", b.to_string()));
        }
        q
    }
}

/// Body of `POST /alerts` (an alert raised by a user or a tool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAlert {
    /// Device it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// Code (1-64 of `a-z 0-9 _ : -`).
    pub code: String,
    /// Severity.
    pub severity: Severity,
    /// Message.
    pub message: String,
    /// De-duplication key (default `<device or fleet>/<code>`): raising an alert
    /// whose key is active returns the active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number (for `before`).
    pub seq: i64,
    /// When.
    pub time: Timestamp,
    /// Who (`user:ada`, `token:ci`, `device:pi-1`).
    pub actor: String,
    /// What (`device.update`, `group.create`, ...).
    pub action: String,
    /// On what (`device:pi-1`).
    #[serde(default)]
    pub target: String,
    /// `allowed`, `denied`, ...
    #[serde(default)]
    pub verdict: String,
    /// What was recorded about the result.
    #[serde(default)]
    pub result: Value,
}

/// Filters and paging of `GET /audit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// Actor.
    pub actor: Option<String>,
    /// Target.
    pub target: Option<String>,
    /// Action.
    pub action: Option<String>,
    /// Since (inclusive).
    pub since: Option<Timestamp>,
    /// Until.
    pub until: Option<Timestamp>,
    /// Page size (server default 100, max 1000).
    pub limit: Option<u32>,
    /// Only entries with a smaller sequence number (the next page).
    pub before: Option<i64>,
}

impl AuditFilter {
    pub(crate) fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut q: Vec<(&'static str, String)> = [
            ("actor", &self.actor),
            ("target", &self.target),
            ("action", &self.action),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone())))
        .collect();
        if let Some(s) = self.since {
            q.push(("since", s.to_string()));
        }
        if let Some(u) = self.until {
            q.push(("until", u.to_string()));
        }
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(b) = self.before {
            q.push(("before", b.to_string()));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_keep_an_explicit_null_and_refuse_unknown_fields() {
        let p: DevicePatch = serde_json::from_str(r#"{"group": null}"#).unwrap();
        assert_eq!(
            p.group,
            Some(None),
            "null takes the device out of its group"
        );
        let p: DevicePatch = serde_json::from_str(r#"{"group": "lab"}"#).unwrap();
        assert_eq!(p.group, Some(Some("lab".parse().unwrap())));
        let p: DevicePatch = serde_json::from_str("{}").unwrap();
        assert_eq!(p.group, None, "absent changes nothing");
        assert_eq!(
            serde_json::to_value(DevicePatch {
                group: Some(None),
                ..Default::default()
            })
            .unwrap(),
            serde_json::json!({"group": null})
        );
        let g: GroupPatch = serde_json::from_str(r#"{"parent": null}"#).unwrap();
        assert_eq!(g.parent, Some(None));
        let e = serde_json::from_str::<DevicePatch>(r#"{"gropu": "lab"}"#).unwrap_err();
        assert!(e.to_string().contains("gropu"), "{e}");
        assert!(serde_json::from_str::<GroupPatch>(r#"{"nmae": "x"}"#).is_err());
    }

    #[test]
    fn effective_config_reads_fleetds_answer_and_its_own_form() {
        let e: EffectiveConfig = serde_json::from_str(
            r#"{"device": "pi-1", "fields": {"fan_profile": "cool", "warn_c": 65.0},
                "sources": {"fan_profile": "group:lab", "warn_c": "device:pi-1"}}"#,
        )
        .unwrap();
        assert_eq!(e.fields["fan_profile"].value, "cool");
        assert_eq!(e.fields["fan_profile"].layer, "group:lab");
        assert_eq!(e.fields["warn_c"].layer, "device:pi-1");
        let again: EffectiveConfig =
            serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(again, e);
    }

    #[test]
    fn device_filter_query() {
        let q = DeviceFilter::new()
            .label("role", "cam")
            .label("tier", "a")
            .group("lab")
            .limit(10)
            .to_query();
        assert_eq!(
            q,
            vec![
                ("label", "role=cam".to_owned()),
                ("label", "tier=a".to_owned()),
                ("group", "lab".to_owned()),
                ("limit", "10".to_owned()),
            ]
        );
        assert!(DeviceFilter::new().to_query().is_empty());
    }

    #[test]
    fn command_body_is_flat() {
        let b = CommandBody {
            command: Command::SetFanProfile {
                profile: wrale_core::model::FanProfileName::Cool,
            },
            reason: "hot".into(),
        };
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::json!({"type": "set_fan_profile", "profile": "cool", "reason": "hot"})
        );
    }

    #[test]
    fn points_decode_raw_and_rollups() {
        let s: DeviceTelemetry = serde_json::from_str(
            r#"{"device":"pi-1","metric":"cpu_temp_c","resolution":"1m",
                "from":"2026-11-22T10:00:00Z","to":"2026-11-22T11:00:00Z","points":[
                {"t":"2026-11-22T10:00:00Z","min":40,"max":50,"avg":45.5,"count":60}]}"#,
        )
        .unwrap();
        assert_eq!(s.resolution, Resolution::Minute);
        assert!(matches!(&s.points, Points::Buckets(b) if b[0].count == 60));
        let s: DeviceTelemetry = serde_json::from_str(
            r#"{"device":"pi-1","metric":"cpu_temp_c","resolution":"raw",
                "from":"2026-11-22T10:00:00Z","to":"2026-11-22T11:00:00Z","points":[
                {"t":"2026-11-22T10:01:00Z","value":44}]}"#,
        )
        .unwrap();
        assert!(matches!(&s.points, Points::Raw(r) if r[0].value == 44.0));
        let empty: Points = serde_json::from_str("[]").unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn patches_can_clear_a_group() {
        let p = DevicePatch {
            group: Some(None),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"group": null})
        );
        assert_eq!(
            serde_json::to_value(DevicePatch::default()).unwrap(),
            serde_json::json!({})
        );
    }
}
