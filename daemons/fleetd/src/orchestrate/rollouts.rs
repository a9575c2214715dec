//! The rollout driver: [`RolloutState`] (wrale-core) stepped on a timer with
//! observations from the twins and the telemetry, its actions executed here.
//!
//! - `apply_change`: the change's fields are written into each device of the
//!   wave (board-checked; author `fleet:fleetd/rollout/<id>`); the values they
//!   replace are kept, and the `config_version` written is remembered so the
//!   device's `reported.config` verdict (version, accepted) tells whether it
//!   applied it;
//! - gates: throttling and under-voltage episodes are rising edges of the
//!   firmware flags in the telemetry since the rollout was created, and the
//!   device's `reported.engine_throttle_count` (times its safety engine started
//!   throttling) is a second throttling counter; fan failure
//!   and the health score come from the analysis; reboots are changes of the
//!   device's `reported.boot_id`, counted per device in the record from the
//!   first id seen after the rollout was created (the state machine compares the
//!   count with its value when the device's wave started);
//! - `roll_back`: the kept values are written back into each changed device
//!   (author `fleet:fleetd/rollout/<id>/rollback`), so the twin's history shows
//!   the rollback as its own change.
//!
//! The record (spec, waves, counters, kept values) is stored in
//! `orchestrate.db` after every step that did something and after every
//! operation; the driver picks running rollouts up again after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use wrale_core::fleet::analyzer::{FanStatus, FleetAnalysis};
use wrale_core::fleet::registry::DeviceRecord;
use wrale_core::fleet::rollout::{
    Applied, Canary, Gates, Observation, Operation, RolloutAction, RolloutSpec, RolloutState,
    RolloutStatus, RolloutTarget, WavePlan,
};
use wrale_core::fleet::telemetry::TimeRange;
use wrale_core::model::ThrottleFlags;
use wrale_core::{DeviceId, GroupId, Timestamp};
use wrale_sync::{DesiredConfig, FieldValue};

use super::{author, desired_fields, devices, write_desired};
use crate::error::ApiError;
use crate::state::{AppState, now};

/// What fleetd stores per rollout: wrale-core's state plus what executing it needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The state machine.
    pub state: RolloutState,
    /// The change: flat desired fields (`null` removes a key).
    pub change: BTreeMap<String, Option<FieldValue>>,
    /// Who created it (`user:alice`).
    pub created_by: String,
    /// Per changed device, the values the change replaced (`None`: absent).
    #[serde(default)]
    pub previous: BTreeMap<DeviceId, BTreeMap<String, Option<FieldValue>>>,
    /// Per changed device, the `config_version` written with the change.
    #[serde(default)]
    pub applied_version: BTreeMap<DeviceId, u64>,
    /// Devices whose write was refused (board check), with the reason.
    #[serde(default)]
    pub refused: BTreeMap<DeviceId, String>,
    /// Devices rolled back.
    #[serde(default)]
    pub rolled_back: Vec<DeviceId>,
    /// Per target, the last boot id seen and the boot id changes counted since.
    #[serde(default)]
    pub boots: BTreeMap<DeviceId, BootSeen>,
}

/// The boot ids fleetd saw of one device during a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSeen {
    /// The last `reported.boot_id` seen.
    pub boot_id: String,
    /// How many times it changed (reboots) since the first one seen.
    pub changes: u32,
}

impl RolloutRecord {
    /// Records the boot id a device reports now; `true` when the record changed
    /// (first id seen, or a new one: a reboot).
    fn see_boot(&mut self, device: &DeviceId, boot_id: &str) -> bool {
        match self.boots.get_mut(device) {
            Some(seen) if seen.boot_id == boot_id => false,
            Some(seen) => {
                seen.boot_id = boot_id.to_owned();
                seen.changes = seen.changes.saturating_add(1);
                true
            }
            None => {
                self.boots.insert(
                    device.clone(),
                    BootSeen {
                        boot_id: boot_id.to_owned(),
                        changes: 0,
                    },
                );
                true
            }
        }
    }
}

impl RolloutRecord {
    fn id(&self) -> &str {
        &self.state.spec.id
    }

    /// The API view: `{id, status, change, progress, current_wave, waves,
    /// failures, rollback_plan, rolled_back, spec, created_by, created_at,
    /// updated_at}`.
    pub fn view(&self) -> Value {
        let st = &self.state;
        json!({
            "id": st.spec.id,
            "status": st.status,
            "change": self.change,
            "progress": st.progress(),
            "current_wave": st.current,
            "waves": st.waves,
            "failures": st.failures,
            "rollback_plan": st.rollback_plan,
            "rolled_back": self.rolled_back,
            "refused": self.refused,
            "spec": {
                "targets": st.spec.targets.iter().map(|t| t.device.clone()).collect::<Vec<_>>(),
                "canary": st.spec.canary,
                "waves": st.spec.waves,
                "soak": humantime::format_duration(st.spec.soak).to_string(),
                "gates": st.spec.gates,
                "auto_rollback": st.spec.auto_rollback,
            },
            "baseline_health": st.baseline_health,
            "created_by": self.created_by,
            "created_at": st.created_at,
            "updated_at": st.updated_at,
        })
    }
}

fn default_waves() -> WavePlan {
    WavePlan::BySize { size: 10 }
}

fn default_soak() -> Duration {
    Duration::from_secs(600)
}

/// Body of `POST /api/v1/rollouts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRollout {
    /// Id (`[a-z0-9-]{1,63}`); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// The change: flat desired fields like a config layer patch
    /// (`{"fan_profile": "quiet"}`; `null` removes a key; not `config_version`).
    #[schema(value_type = Object)]
    pub change: Map<String, Value>,
    /// Target devices by id.
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    /// Or every device of this group and its subgroups.
    #[serde(default)]
    pub group: Option<String>,
    /// `{"kind": "devices", "devices": [...]}` or `{"kind": "percent", "percent": 10}`.
    #[schema(value_type = Object)]
    pub canary: Canary,
    /// `{"kind": "by_size", "size": 10}` (default) or `{"kind": "by_rack"}`.
    #[serde(default = "default_waves")]
    #[schema(value_type = Object)]
    pub waves: WavePlan,
    /// Soak time per wave (`"10m"`, default).
    #[serde(default = "default_soak", with = "wrale_core::time::duration_str")]
    #[schema(value_type = String)]
    pub soak: Duration,
    /// Gate margins: `{"health_margin": 10, "apply_timeout": "10m"}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub gates: Gates,
    /// Roll changed devices back at once when a gate fails.
    #[serde(default)]
    pub auto_rollback: bool,
}

fn parse_change(m: &Map<String, Value>) -> Result<BTreeMap<String, Option<FieldValue>>, ApiError> {
    if m.is_empty() {
        return Err(ApiError::invalid_body(
            Some("change"),
            "change: at least one desired field",
        ));
    }
    let mut out = BTreeMap::new();
    let mut set = Map::new();
    for (k, v) in m {
        if k == "config_version" {
            return Err(ApiError::invalid_body(
                Some("change.config_version"),
                "change.config_version: fleetd bumps it, it cannot be set",
            ));
        }
        if !DesiredConfig::is_known_key(k) {
            return Err(ApiError::invalid_body(
                Some(&format!("change.{k}")),
                format!("change.{k}: not a desired config field"),
            ));
        }
        if v.is_null() {
            out.insert(k.clone(), None);
        } else {
            set.insert(k.clone(), v.clone());
        }
    }
    let parsed = crate::twins::layer_from_json(&set)
        .map_err(|e| ApiError::invalid_body(Some("change"), format!("change: {}", e.message())))?;
    for (k, v) in parsed.fields {
        out.insert(k, Some(v));
    }
    Ok(out)
}

fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_body(
            Some("id"),
            format!("id: {id:?} is not [a-z0-9-]{{1,63}}"),
        ))
    }
}

async fn load(s: &AppState, id: &str) -> Result<RolloutRecord, ApiError> {
    let store = s.orchestrate.store()?;
    let i = id.to_owned();
    let v = tokio::task::spawn_blocking(move || store.get_rollout(&i))
        .await
        .map_err(|e| ApiError::internal(format!("store task: {e}")))??
        .ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))?;
    serde_json::from_value(v).map_err(|e| ApiError::internal(format!("rollout {id}: {e}")))
}

async fn save(s: &AppState, r: &RolloutRecord) -> Result<(), ApiError> {
    let store = s.orchestrate.store()?;
    let v = serde_json::to_value(r).map_err(|e| ApiError::internal(e.to_string()))?;
    let (id, status) = (r.id().to_owned(), r.state.status.to_string());
    let (c, u) = (r.state.created_at, r.state.updated_at);
    tokio::task::spawn_blocking(move || store.put_rollout(&id, &v, &status, c, u))
        .await
        .map_err(|e| ApiError::internal(format!("store task: {e}")))?
}

/// Every rollout (newest first), optionally with one status.
pub async fn list(s: &AppState, status: Option<String>) -> Result<Vec<Value>, ApiError> {
    let store = s.orchestrate.store()?;
    let raw = tokio::task::spawn_blocking(move || store.list_rollouts(status.as_deref()))
        .await
        .map_err(|e| ApiError::internal(format!("store task: {e}")))??;
    raw.into_iter()
        .map(|v| {
            serde_json::from_value::<RolloutRecord>(v)
                .map(|r| r.view())
                .map_err(|e| ApiError::internal(format!("rollout record: {e}")))
        })
        .collect()
}

/// One rollout's view.
pub async fn get(s: &AppState, id: &str) -> Result<Value, ApiError> {
    Ok(load(s, id).await?.view())
}

/// Creates a rollout (validated, every target board-checked with the change) and
/// takes its first step (the canary wave is written at once).
pub async fn create(s: &AppState, who: &str, req: CreateRollout) -> Result<Value, ApiError> {
    let change = parse_change(&req.change)?;
    let t = now();
    let id = req
        .id
        .clone()
        .unwrap_or_else(|| format!("ro-{}", t.as_millis()));
    check_id(&id)?;
    let all = devices(s).await?;
    let targets: Vec<DeviceRecord> = match (&req.devices, &req.group) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_body(
                Some("devices"),
                "devices and group: give one of them",
            ));
        }
        (Some(ids), None) => {
            let mut out = Vec::new();
            for i in ids {
                let d = all.iter().find(|d| d.id.as_str() == i).ok_or_else(|| {
                    ApiError::invalid_body(
                        Some("devices"),
                        format!("devices: no enrolled device {i:?}"),
                    )
                })?;
                out.push(d.clone());
            }
            out
        }
        (None, Some(g)) => {
            let gid = GroupId::new(g.clone())
                .map_err(|e| ApiError::invalid_body(Some("group"), format!("group: {e}")))?;
            let tree = crate::http::twins::group_tree(s).await?;
            all.iter()
                .filter(|d| d.group.as_ref().is_some_and(|dg| tree.is_within(dg, &gid)))
                .cloned()
                .collect()
        }
        (None, None) => {
            return Err(ApiError::invalid_body(
                Some("devices"),
                "devices or group: the rollout needs targets",
            ));
        }
    };
    let spec = RolloutSpec {
        id: id.clone(),
        change: serde_json::to_string(&change).unwrap_or_default(),
        targets: targets
            .iter()
            .map(|d| RolloutTarget {
                device: d.id.clone(),
                location: d.location.clone(),
            })
            .collect(),
        canary: req.canary,
        waves: req.waves,
        soak: req.soak,
        gates: req.gates,
        auto_rollback: req.auto_rollback,
    };
    // Board check of every target before anything is written.
    for d in &targets {
        crate::twins::check_planned(s, d, &change)?;
    }
    let analysis = super::analysis(s);
    let baseline: BTreeMap<DeviceId, f64> = analysis
        .devices
        .iter()
        .filter(|a| a.points > 0)
        .map(|a| (a.device.clone(), a.health.score))
        .collect();
    let state = RolloutState::plan(spec, &baseline, t)
        .map_err(|e| ApiError::invalid_body(None, e.to_string()))?;
    let record = RolloutRecord {
        state,
        change,
        created_by: who.to_owned(),
        previous: BTreeMap::new(),
        applied_version: BTreeMap::new(),
        refused: BTreeMap::new(),
        rolled_back: Vec::new(),
        boots: BTreeMap::new(),
    };
    let _held = s.orchestrate.rollout_lock().await;
    let store = s.orchestrate.store()?;
    let i = id.clone();
    let exists = tokio::task::spawn_blocking(move || store.get_rollout(&i))
        .await
        .map_err(|e| ApiError::internal(format!("store task: {e}")))??
        .is_some();
    if exists {
        return Err(ApiError::conflict(format!("rollout {id} exists")));
    }
    save(s, &record).await?;
    s.audit(
        who,
        "rollout.create",
        &format!("rollout:{id}"),
        "allowed",
        json!({"change": record.change, "devices": record.state.progress().devices, "waves": record.state.waves.len()}),
        None,
    )
    .await;
    let record = step_one(s, record, &all).await?;
    Ok(record.view())
}

/// Applies an operator's operation (`pause`, `resume`, `abort`, `rollback`);
/// 409 `conflict` when the status does not allow it.
pub async fn operate(s: &AppState, who: &str, id: &str, op: Operation) -> Result<Value, ApiError> {
    let _held = s.orchestrate.rollout_lock().await;
    let mut r = load(s, id).await?;
    let actions = r
        .state
        .operate(&op, now())
        .map_err(|e| ApiError::conflict(e.to_string()))?;
    let all = devices(s).await?;
    let name = match &op {
        Operation::Pause { .. } => "rollout.pause",
        Operation::Resume => "rollout.resume",
        Operation::Abort => "rollout.abort",
        Operation::Rollback => "rollout.rollback",
    };
    s.audit(
        who,
        name,
        &format!("rollout:{id}"),
        "allowed",
        json!({"op": op}),
        None,
    )
    .await;
    execute(s, &mut r, actions, &all).await;
    save(s, &r).await?;
    Ok(r.view())
}

/// One driver tick: steps every running rollout.
pub async fn tick(s: &AppState) -> Result<(), ApiError> {
    let _held = s.orchestrate.rollout_lock().await;
    let store = s.orchestrate.store()?;
    let running = tokio::task::spawn_blocking(move || store.list_rollouts(Some("running")))
        .await
        .map_err(|e| ApiError::internal(format!("store task: {e}")))??;
    if running.is_empty() {
        return Ok(());
    }
    let all = devices(s).await?;
    for v in running {
        let r: RolloutRecord = match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("unreadable rollout record: {e}");
                continue;
            }
        };
        let id = r.id().to_owned();
        if let Err(e) = step_one(s, r, &all).await {
            tracing::warn!(rollout = %id, "step failed: {}", e.message());
        }
    }
    Ok(())
}

/// Observes, steps, executes and stores one rollout.
async fn step_one(
    s: &AppState,
    mut r: RolloutRecord,
    all: &[DeviceRecord],
) -> Result<RolloutRecord, ApiError> {
    let (obs, seen_changed) = observe(s, &mut r, all).await?;
    let actions = r.state.step(&obs, now());
    if !actions.is_empty() || seen_changed {
        execute(s, &mut r, actions, all).await;
        save(s, &r).await?;
    }
    Ok(r)
}

/// Rising edges of a flag in a series of points, from "off".
fn episodes(series: &[(Timestamp, f64)], flag: impl Fn(ThrottleFlags) -> bool) -> u32 {
    let mut prev = false;
    let mut n = 0;
    for (_, v) in series {
        let on = flag(ThrottleFlags::from_bits(*v as u32));
        if on && !prev {
            n += 1;
        }
        prev = on;
    }
    n
}

/// Observations of every target: the device's verdict on the change, its
/// throttling and under-voltage episodes since the rollout was created, its boot
/// id changes, and the analysis' fan verdict and health score. The flag is `true`
/// when what the record remembers of the devices changed (it must be stored).
async fn observe(
    s: &AppState,
    r: &mut RolloutRecord,
    all: &[DeviceRecord],
) -> Result<(Vec<Observation>, bool), ApiError> {
    let targets: Vec<DeviceRecord> = r
        .state
        .spec
        .targets
        .iter()
        .filter_map(|t| all.iter().find(|d| d.id == t.device).cloned())
        .collect();
    let analysis: std::sync::Arc<FleetAnalysis> = super::analysis(s);
    let from = r.state.created_at;
    let to = Timestamp::from_millis(now().as_millis() + 60_000);
    let range = TimeRange::new(from, to).map_err(|e| ApiError::internal(e.to_string()))?;
    let (st, ids) = (
        s.clone(),
        targets.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
    );
    let counts: BTreeMap<DeviceId, (u32, u32)> = tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .map(|d| {
                let series = st
                    .telemetry
                    .store()
                    .raw(&d, "throttle_bits", &range, 1_000_000)
                    .unwrap_or_default();
                let thr = episodes(&series, |f| f.throttled || f.soft_temp_limit);
                let uv = episodes(&series, |f| f.under_voltage);
                (d, (thr, uv))
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(format!("telemetry task: {e}")))?;
    let mut out = Vec::new();
    let mut seen_changed = false;
    for d in &targets {
        let mut o = Observation::new(d.id.clone());
        let reported = s
            .hub
            .sync()
            .read(&d.id, |t| t.reported())
            .ok()
            .and_then(|x| x.ok());
        if let Some(boot_id) = reported.as_ref().and_then(|x| x.boot_id.as_deref()) {
            seen_changed |= r.see_boot(&d.id, boot_id);
        }
        o.boots = r.boots.get(&d.id).map_or(0, |b| b.changes);
        // The device's own safety engine throttling, counted in its twin.
        o.engine_throttle_events = reported
            .as_ref()
            .and_then(|x| x.engine_throttle_count)
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
        if let Some(reason) = r.refused.get(&d.id) {
            o.applied = Applied::Failed {
                message: reason.clone(),
            };
        } else if let Some(want) = r.applied_version.get(&d.id) {
            if let Some(c) = reported.and_then(|x| x.config) {
                if c.version >= *want {
                    o.applied = if c.accepted {
                        Applied::Applied
                    } else {
                        Applied::Failed {
                            message: c
                                .rejection
                                .map(|x| format!("{}: {}", x.rule, x.reason))
                                .unwrap_or_else(|| "refused".into()),
                        }
                    };
                }
            }
        }
        if let Some((thr, uv)) = counts.get(&d.id) {
            o.throttle_events = *thr;
            o.under_voltage_events = *uv;
        }
        if let Some(a) = analysis.device(&d.id) {
            o.fan_failed = a
                .fan
                .as_ref()
                .is_some_and(|f| f.status == FanStatus::Failing);
            if a.points > 0 {
                o.health_score = Some(a.health.score);
            }
        }
        out.push(o);
    }
    Ok((out, seen_changed))
}

/// Executes the state machine's actions.
async fn execute(
    s: &AppState,
    r: &mut RolloutRecord,
    actions: Vec<RolloutAction>,
    all: &[DeviceRecord],
) {
    let id = r.id().to_owned();
    let target = format!("rollout:{id}");
    for a in actions {
        match &a {
            RolloutAction::ApplyChange { wave, devices } => {
                for d in devices {
                    let Some(rec) = all.iter().find(|x| &x.id == d) else {
                        r.refused
                            .insert(d.clone(), "device deleted or revoked".into());
                        continue;
                    };
                    match apply_one(s, r, rec).await {
                        Ok(v) => {
                            r.applied_version.insert(d.clone(), v);
                        }
                        Err(e) => {
                            r.refused.insert(d.clone(), e.message().to_owned());
                        }
                    }
                }
                s.audit(
                    "fleetd/rollout",
                    "rollout.apply",
                    &target,
                    "allowed",
                    json!({"wave": wave, "devices": devices}),
                    None,
                )
                .await;
            }
            RolloutAction::RollBack { devices } => {
                let mut done = Vec::new();
                for d in devices {
                    let Some(rec) = all.iter().find(|x| &x.id == d) else {
                        continue;
                    };
                    let Some(prev) = r.previous.get(d).cloned() else {
                        continue;
                    };
                    let (set, off): (BTreeMap<_, _>, BTreeSet<_>) = (prev, BTreeSet::new());
                    match write_desired(
                        s,
                        rec,
                        set,
                        off,
                        &author(&format!("rollout/{id}/rollback")),
                    )
                    .await
                    {
                        Ok(()) => {
                            done.push(d.clone());
                            r.rolled_back.push(d.clone());
                        }
                        Err(e) => {
                            tracing::warn!(rollout = %id, device = %d, "rollback failed: {}", e.message())
                        }
                    }
                }
                s.audit(
                    "fleetd/rollout",
                    "rollout.rolled_back",
                    &target,
                    "allowed",
                    json!({"devices": done}),
                    None,
                )
                .await;
            }
            RolloutAction::WavePassed { wave } => {
                s.audit(
                    "fleetd/rollout",
                    "rollout.wave_passed",
                    &target,
                    "allowed",
                    json!({"wave": wave}),
                    None,
                )
                .await;
            }
            RolloutAction::Paused { reason, failures } => {
                s.audit(
                    "fleetd/rollout",
                    "rollout.paused",
                    &target,
                    "allowed",
                    json!({"reason": reason, "failures": failures}),
                    None,
                )
                .await;
            }
            RolloutAction::Completed => {
                s.audit(
                    "fleetd/rollout",
                    "rollout.completed",
                    &target,
                    "allowed",
                    json!({}),
                    None,
                )
                .await;
            }
            other => {
                let kind = serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v["kind"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                s.audit(
                    "fleetd/rollout",
                    &format!("rollout.{kind}"),
                    &target,
                    "allowed",
                    json!({}),
                    None,
                )
                .await;
            }
        }
    }
    if r.state.status == RolloutStatus::RolledBack && r.rolled_back.is_empty() {
        tracing::warn!(rollout = %id, "rolled back with no device written back");
    }
}

/// Writes the change into one device; the `config_version` written.
async fn apply_one(s: &AppState, r: &mut RolloutRecord, d: &DeviceRecord) -> Result<u64, ApiError> {
    let current = desired_fields(s, &d.id)?;
    let prev: BTreeMap<String, Option<FieldValue>> = r
        .change
        .keys()
        .map(|k| (k.clone(), current.get(k).cloned()))
        .collect();
    let id = r.id().to_owned();
    write_desired(
        s,
        d,
        r.change.clone(),
        BTreeSet::new(),
        &author(&format!("rollout/{id}")),
    )
    .await?;
    r.previous.entry(d.id.clone()).or_insert(prev);
    let after = desired_fields(s, &d.id)?;
    Ok(match after.get("config_version") {
        Some(FieldValue::Int(v)) if *v >= 0 => *v as u64,
        _ => 0,
    })
}
