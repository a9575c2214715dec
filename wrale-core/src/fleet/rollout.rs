//! Rollouts gated on physical health: a config or workload change goes out in
//! waves (canaries first), and a wave passes only if its devices applied the
//! change and stayed physically healthy over the soak time.
//!
//! [`RolloutState::plan`] builds the waves from a [`RolloutSpec`]; fleetd then calls
//! [`RolloutState::step`]`(observations, now)` on a timer and executes the
//! [`RolloutAction`]s it returns (write the change into the wave's twins, roll
//! devices back with a twin rollback, publish progress). Operators call
//! [`RolloutState::operate`] with pause, resume, abort or rollback. The state is
//! serde data, so fleetd stores it after every step and picks up where it left off
//! after a restart.
//!
//! **Gates** (over every device changed so far, during the soak of each wave):
//! the change was applied (reported success within `apply_timeout`), and compared
//! with the device's counters when its wave started: no new thermal throttling
//! (by the firmware, or by the device's own safety engine), no new under-voltage,
//! no reboot (boot id changes), no fan failure; and its health score
//! is not below its pre-rollout level by more than `health_margin`. A failing gate
//! fails the wave and pauses the rollout with a rollback plan; with
//! `auto_rollback` the plan is executed at once. The rollout never advances past a
//! failed wave unless an operator resumes it (which restarts that wave's soak).
//!
//! ```
//! use std::time::Duration;
//! use wrale_core::fleet::rollout::*;
//! use wrale_core::model::{DeviceId, Location};
//! use wrale_core::Timestamp;
//!
//! let targets = (1..=10)
//!     .map(|i| RolloutTarget { device: DeviceId::new(format!("pi-{i:02}")).unwrap(), location: Location::default() })
//!     .collect();
//! let spec = RolloutSpec::new("fan-quiet", "fan_profile=quiet", targets, Canary::Percent { percent: 10.0 },
//!     WavePlan::BySize { size: 5 }, Duration::from_secs(600));
//! let mut st = RolloutState::plan(spec, &Default::default(), Timestamp::from_secs(0)).unwrap();
//! assert_eq!(st.waves.iter().map(|w| w.devices.len()).collect::<Vec<_>>(), vec![1, 5, 4]);
//! let actions = st.step(&[], Timestamp::from_secs(0));
//! assert!(matches!(&actions[0], RolloutAction::ApplyChange { wave: 0, .. }));
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::model::{DeviceId, Location};
use crate::time::{Timestamp, duration_str};

/// A device the rollout targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutTarget {
    /// The device.
    pub device: DeviceId,
    /// Where it is (waves by rack, canaries spread over racks).
    #[serde(default)]
    pub location: Location,
}

/// How the canary wave is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Canary {
    /// These devices.
    Devices {
        /// The canaries (each must be a target).
        devices: Vec<DeviceId>,
    },
    /// This share of the targets (rounded up, at least one), taken round-robin
    /// over racks so the canaries see different environments.
    Percent {
        /// 0 < percent <= 100.
        percent: f64,
    },
}

/// How the remaining devices are split into waves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WavePlan {
    /// Waves of at most `size` devices.
    BySize {
        /// Devices per wave (> 0).
        size: usize,
    },
    /// One wave per rack (devices without a rack form the last wave).
    ByRack,
}

/// Gate thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gates {
    /// Largest allowed drop of a device's health score below its pre-rollout score.
    pub health_margin: f64,
    /// A device must report the change applied within this time of its wave start.
    #[serde(with = "duration_str")]
    pub apply_timeout: Duration,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            health_margin: 10.0,
            apply_timeout: Duration::from_secs(600),
        }
    }
}

/// What to roll out, to whom and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// Rollout id.
    pub id: String,
    /// The change (a config patch or workload version; opaque here).
    pub change: String,
    /// Target devices.
    pub targets: Vec<RolloutTarget>,
    /// Canary wave.
    pub canary: Canary,
    /// The waves after the canaries.
    pub waves: WavePlan,
    /// Soak time per wave.
    #[serde(with = "duration_str")]
    pub soak: Duration,
    /// Gate thresholds.
    #[serde(default)]
    pub gates: Gates,
    /// Roll changed devices back automatically when a gate fails.
    #[serde(default)]
    pub auto_rollback: bool,
}

impl RolloutSpec {
    /// A spec with default gates and no automatic rollback.
    pub fn new(
        id: impl Into<String>,
        change: impl Into<String>,
        targets: Vec<RolloutTarget>,
        canary: Canary,
        waves: WavePlan,
        soak: Duration,
    ) -> Self {
        Self {
            id: id.into(),
            change: change.into(),
            targets,
            canary,
            waves,
            soak,
            gates: Gates::default(),
            auto_rollback: false,
        }
    }
}

/// Whether a device applied the change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Applied {
    /// No report yet.
    #[default]
    Pending,
    /// Applied successfully.
    Applied,
    /// Refused or failed, with the device's reason.
    Failed {
        /// Why.
        message: String,
    },
}

/// What fleetd observes of one device (counters are cumulative, e.g. since the
/// device was enrolled; the gates compare them with their value at wave start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The device.
    pub device: DeviceId,
    /// Whether it applied the change.
    #[serde(default)]
    pub applied: Applied,
    /// Firmware thermal-throttle episodes so far.
    #[serde(default)]
    pub throttle_events: u32,
    /// Under-voltage episodes so far.
    #[serde(default)]
    pub under_voltage_events: u32,
    /// Times the device's own safety engine started throttling (workloads or the
    /// CPU) so far.
    #[serde(default)]
    pub engine_throttle_events: u32,
    /// Boots so far.
    #[serde(default)]
    pub boots: u32,
    /// Whether a fan is failing now (stall alert, or the analyzer's verdict).
    #[serde(default)]
    pub fan_failed: bool,
    /// Health score now (the analyzer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_score: Option<f64>,
}

impl Observation {
    /// A healthy observation with nothing applied yet.
    pub fn new(device: DeviceId) -> Self {
        Self {
            device,
            applied: Applied::Pending,
            throttle_events: 0,
            under_voltage_events: 0,
            engine_throttle_events: 0,
            boots: 0,
            fan_failed: false,
            health_score: None,
        }
    }
}

/// Counters remembered per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Throttle episodes.
    pub throttle_events: u32,
    /// Under-voltage episodes.
    pub under_voltage_events: u32,
    /// Safety-engine throttling episodes.
    #[serde(default)]
    pub engine_throttle_events: u32,
    /// Boots.
    pub boots: u32,
}

impl From<&Observation> for Counters {
    fn from(o: &Observation) -> Self {
        Self {
            throttle_events: o.throttle_events,
            under_voltage_events: o.under_voltage_events,
            engine_throttle_events: o.engine_throttle_events,
            boots: o.boots,
        }
    }
}

/// Which gate failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// The device refused or failed to apply the change.
    ApplyFailed,
    /// No successful application reported within the timeout.
    NotApplied,
    /// New thermal throttling: by the firmware, or by the device's safety engine.
    Throttled,
    /// New under-voltage.
    UnderVoltage,
    /// A fan failed.
    FanFailure,
    /// The device rebooted.
    Reboot,
    /// Health dropped below the pre-rollout score minus the margin.
    HealthDrop,
}

/// One failed gate on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateFailure {
    /// The device.
    pub device: DeviceId,
    /// The gate.
    pub gate: Gate,
    /// The values.
    pub detail: String,
    /// When it was seen.
    pub at: Timestamp,
}

/// State of a wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveStatus {
    /// Not started.
    Pending,
    /// Change sent; soaking.
    Soaking,
    /// All gates held over the soak.
    Passed,
    /// A gate failed.
    Failed,
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    /// Index (0 = canaries).
    pub index: usize,
    /// Devices.
    pub devices: Vec<DeviceId>,
    /// State.
    pub status: WaveStatus,
    /// When the change was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the soak ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<Timestamp>,
}

/// State of the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    /// Waves are being applied and soaked.
    Running,
    /// Stopped by an operator or a failed gate; resume, abort or roll back.
    Paused,
    /// Every wave passed.
    Completed,
    /// Stopped for good; changed devices keep the change.
    Aborted,
    /// Changed devices were rolled back.
    RolledBack,
}

impl fmt::Display for RolloutStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RolloutStatus::Running => "running",
            RolloutStatus::Paused => "paused",
            RolloutStatus::Completed => "completed",
            RolloutStatus::Aborted => "aborted",
            RolloutStatus::RolledBack => "rolled_back",
        })
    }
}

/// The devices to roll back, most recently changed first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackPlan {
    /// Devices.
    pub devices: Vec<DeviceId>,
    /// Why.
    pub reason: String,
}

/// What fleetd must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RolloutAction {
    /// Write the change into these devices' desired state.
    ApplyChange {
        /// Wave index.
        wave: usize,
        /// Devices.
        devices: Vec<DeviceId>,
    },
    /// A wave passed its gates.
    WavePassed {
        /// Wave index.
        wave: usize,
    },
    /// The rollout paused.
    Paused {
        /// Why.
        reason: String,
        /// The failed gates (empty for an operator's pause).
        failures: Vec<GateFailure>,
    },
    /// The rollout resumed.
    Resumed,
    /// Roll these devices back (a twin rollback, so the history shows it).
    RollBack {
        /// Devices, most recently changed first.
        devices: Vec<DeviceId>,
    },
    /// Every wave passed.
    Completed,
    /// Aborted.
    Aborted,
}

/// An operator's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Pause.
    Pause {
        /// Why.
        reason: String,
    },
    /// Resume (restarts the soak of a failed or interrupted wave).
    Resume,
    /// Abort (no rollback).
    Abort,
    /// Roll back every changed device.
    Rollback,
}

/// Error for a bad spec or an operation the current state does not allow.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RolloutError {
    /// The spec is inconsistent.
    #[error("invalid rollout spec: {0}")]
    InvalidSpec(String),
    /// The operation is not allowed now.
    #[error("cannot {op} a rollout that is {status}")]
    InvalidTransition {
        /// The operation.
        op: &'static str,
        /// The current status.
        status: RolloutStatus,
    },
}

impl RolloutError {
    /// Stable error code (`invalid_body` for a bad spec, `conflict` for a transition).
    pub fn code(&self) -> &'static str {
        match self {
            RolloutError::InvalidSpec(_) => "invalid_body",
            RolloutError::InvalidTransition { .. } => "conflict",
        }
    }
}

/// Progress summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Waves.
    pub waves: usize,
    /// Waves passed.
    pub waves_passed: usize,
    /// Devices targeted.
    pub devices: usize,
    /// Devices the change was sent to.
    pub devices_changed: usize,
}

/// A rollout: spec, waves and everything the gates need. Serde data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// What was asked.
    pub spec: RolloutSpec,
    /// The waves.
    pub waves: Vec<Wave>,
    /// Current wave.
    pub current: usize,
    /// Status.
    pub status: RolloutStatus,
    /// Pre-rollout health score per device.
    pub baseline_health: BTreeMap<DeviceId, f64>,
    /// Counters per changed device at its wave's start (or at resume).
    pub wave_start: BTreeMap<DeviceId, Counters>,
    /// Latest counters seen per device.
    pub last_seen: BTreeMap<DeviceId, Counters>,
    /// Failed gates (of the latest failure).
    pub failures: Vec<GateFailure>,
    /// The rollback plan, once a gate failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_plan: Option<RollbackPlan>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed status.
    pub updated_at: Timestamp,
}

fn rack_of(l: &Location) -> Option<String> {
    l.rack
        .as_ref()
        .map(|r| format!("{}/{r}", l.site.as_deref().unwrap_or("-")))
}

impl RolloutState {
    /// Plans the waves. `baseline_health` is each device's health score before
    /// the rollout (devices without one skip the health gate).
    pub fn plan(
        spec: RolloutSpec,
        baseline_health: &BTreeMap<DeviceId, f64>,
        now: Timestamp,
    ) -> Result<RolloutState, RolloutError> {
        let bad = |m: String| Err(RolloutError::InvalidSpec(m));
        if spec.targets.is_empty() {
            return bad("no target devices".into());
        }
        let mut targets = spec.targets.clone();
        targets.sort_by(|a, b| a.device.cmp(&b.device));
        if let Some(w) = targets.windows(2).find(|w| w[0].device == w[1].device) {
            return bad(format!("device {} is listed twice", w[0].device));
        }
        let ids: BTreeSet<&DeviceId> = targets.iter().map(|t| &t.device).collect();
        let canaries: Vec<DeviceId> = match &spec.canary {
            Canary::Devices { devices } => {
                if devices.is_empty() {
                    return bad("canary device list is empty".into());
                }
                if let Some(d) = devices.iter().find(|d| !ids.contains(d)) {
                    return bad(format!("canary {d} is not a target"));
                }
                let mut v = devices.clone();
                v.sort();
                v.dedup();
                v
            }
            Canary::Percent { percent } => {
                if !(*percent > 0.0 && *percent <= 100.0) {
                    return bad(format!("canary percent {percent} is not in (0, 100]"));
                }
                let n = ((targets.len() as f64 * percent / 100.0).ceil() as usize)
                    .clamp(1, targets.len());
                // Round-robin over racks (rack order, then device id).
                let mut by_rack: BTreeMap<Option<String>, Vec<&DeviceId>> = BTreeMap::new();
                for t in &targets {
                    by_rack
                        .entry(rack_of(&t.location))
                        .or_default()
                        .push(&t.device);
                }
                let mut picked = Vec::new();
                let mut round = 0;
                while picked.len() < n {
                    for devs in by_rack.values() {
                        if let Some(d) = devs.get(round) {
                            if picked.len() < n {
                                picked.push((*d).clone());
                            }
                        }
                    }
                    round += 1;
                }
                picked.sort();
                picked
            }
        };
        let canary_set: BTreeSet<&DeviceId> = canaries.iter().collect();
        let rest: Vec<&RolloutTarget> = targets
            .iter()
            .filter(|t| !canary_set.contains(&t.device))
            .collect();
        let mut groups: Vec<Vec<DeviceId>> = vec![canaries.clone()];
        match &spec.waves {
            WavePlan::BySize { size } => {
                if *size == 0 {
                    return bad("wave size must be at least 1".into());
                }
                for c in rest.chunks(*size) {
                    groups.push(c.iter().map(|t| t.device.clone()).collect());
                }
            }
            WavePlan::ByRack => {
                let mut by_rack: BTreeMap<(bool, Option<String>), Vec<DeviceId>> = BTreeMap::new();
                for t in rest {
                    let r = rack_of(&t.location);
                    by_rack
                        .entry((r.is_none(), r))
                        .or_default()
                        .push(t.device.clone());
                }
                groups.extend(by_rack.into_values());
            }
        }
        let waves = groups
            .into_iter()
            .filter(|g| !g.is_empty())
            .enumerate()
            .map(|(index, devices)| Wave {
                index,
                devices,
                status: WaveStatus::Pending,
                started_at: None,
                soak_until: None,
            })
            .collect();
        let baseline_health = baseline_health
            .iter()
            .filter(|(d, _)| ids.contains(d))
            .map(|(d, s)| (d.clone(), *s))
            .collect();
        Ok(RolloutState {
            spec,
            waves,
            current: 0,
            status: RolloutStatus::Running,
            baseline_health,
            wave_start: BTreeMap::new(),
            last_seen: BTreeMap::new(),
            failures: Vec::new(),
            rollback_plan: None,
            created_at: now,
            updated_at: now,
        })
    }

    /// Devices the change was sent to, in wave order.
    pub fn changed_devices(&self) -> Vec<DeviceId> {
        self.waves
            .iter()
            .filter(|w| w.status != WaveStatus::Pending)
            .flat_map(|w| w.devices.iter().cloned())
            .collect()
    }

    /// Progress summary.
    pub fn progress(&self) -> Progress {
        Progress {
            waves: self.waves.len(),
            waves_passed: self
                .waves
                .iter()
                .filter(|w| w.status == WaveStatus::Passed)
                .count(),
            devices: self.waves.iter().map(|w| w.devices.len()).sum(),
            devices_changed: self.changed_devices().len(),
        }
    }

    fn start_wave(
        &mut self,
        i: usize,
        obs: &BTreeMap<&DeviceId, &Observation>,
        now: Timestamp,
    ) -> RolloutAction {
        let soak = self.spec.soak;
        let w = &mut self.waves[i];
        w.status = WaveStatus::Soaking;
        w.started_at = Some(now);
        w.soak_until = Some(now + soak);
        for d in &w.devices {
            let c = obs
                .get(d)
                .map(|o| Counters::from(*o))
                .or_else(|| self.last_seen.get(d).copied())
                .unwrap_or_default();
            self.wave_start.insert(d.clone(), c);
        }
        RolloutAction::ApplyChange {
            wave: i,
            devices: w.devices.clone(),
        }
    }

    /// Checks the gates of every changed device.
    fn gate_failures(
        &self,
        obs: &BTreeMap<&DeviceId, &Observation>,
        now: Timestamp,
    ) -> Vec<GateFailure> {
        let mut out = Vec::new();
        let g = &self.spec.gates;
        for w in self
            .waves
            .iter()
            .filter(|w| w.status != WaveStatus::Pending)
        {
            let started = w.started_at.unwrap_or(now);
            for d in &w.devices {
                let mut fail = |gate, detail: String| {
                    out.push(GateFailure {
                        device: d.clone(),
                        gate,
                        detail,
                        at: now,
                    })
                };
                let Some(o) = obs.get(d) else {
                    if now.saturating_since(started) >= g.apply_timeout
                        && w.status == WaveStatus::Soaking
                    {
                        fail(
                            Gate::NotApplied,
                            format!(
                                "no report for {}",
                                humantime::format_duration(now.saturating_since(started))
                            ),
                        );
                    }
                    continue;
                };
                match &o.applied {
                    Applied::Failed { message } => {
                        fail(Gate::ApplyFailed, format!("device refused: {message}"))
                    }
                    Applied::Pending if now.saturating_since(started) >= g.apply_timeout => fail(
                        Gate::NotApplied,
                        format!(
                            "not applied {} after the wave started",
                            humantime::format_duration(g.apply_timeout)
                        ),
                    ),
                    _ => {}
                }
                let base = self.wave_start.get(d).copied().unwrap_or_default();
                if o.throttle_events > base.throttle_events {
                    fail(
                        Gate::Throttled,
                        format!(
                            "{} new thermal throttling episode(s)",
                            o.throttle_events - base.throttle_events
                        ),
                    );
                }
                if o.engine_throttle_events > base.engine_throttle_events {
                    fail(
                        Gate::Throttled,
                        format!(
                            "the safety engine started throttling {} time(s)",
                            o.engine_throttle_events - base.engine_throttle_events
                        ),
                    );
                }
                if o.under_voltage_events > base.under_voltage_events {
                    fail(
                        Gate::UnderVoltage,
                        format!(
                            "{} new under-voltage episode(s)",
                            o.under_voltage_events - base.under_voltage_events
                        ),
                    );
                }
                if o.boots > base.boots {
                    fail(
                        Gate::Reboot,
                        format!("rebooted {} time(s)", o.boots - base.boots),
                    );
                }
                if o.fan_failed {
                    fail(Gate::FanFailure, "fan failing".into());
                }
                if let (Some(now_s), Some(pre)) = (o.health_score, self.baseline_health.get(d)) {
                    if now_s < pre - g.health_margin {
                        fail(
                            Gate::HealthDrop,
                            format!(
                                "health {now_s:.0} < pre-rollout {pre:.0} − margin {:.0}",
                                g.health_margin
                            ),
                        );
                    }
                }
            }
        }
        out
    }

    /// One step: checks gates, advances waves, and says what fleetd must do.
    /// Does nothing unless the rollout is running.
    pub fn step(&mut self, observations: &[Observation], now: Timestamp) -> Vec<RolloutAction> {
        let obs: BTreeMap<&DeviceId, &Observation> =
            observations.iter().map(|o| (&o.device, o)).collect();
        for o in observations {
            self.last_seen.insert(o.device.clone(), Counters::from(o));
        }
        let mut actions = Vec::new();
        if self.status != RolloutStatus::Running {
            return actions;
        }
        if self.waves[self.current].status == WaveStatus::Pending {
            actions.push(self.start_wave(self.current, &obs, now));
            self.updated_at = now;
            return actions;
        }
        let failures = self.gate_failures(&obs, now);
        if !failures.is_empty() {
            self.waves[self.current].status = WaveStatus::Failed;
            self.status = RolloutStatus::Paused;
            let mut devices = self.changed_devices();
            devices.reverse();
            let reason = format!(
                "wave {} failed its gates: {}",
                self.current,
                failures
                    .iter()
                    .map(|f| format!("{} {:?}: {}", f.device, f.gate, f.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            self.rollback_plan = Some(RollbackPlan {
                devices: devices.clone(),
                reason: reason.clone(),
            });
            self.failures = failures.clone();
            actions.push(RolloutAction::Paused { reason, failures });
            if self.spec.auto_rollback {
                self.status = RolloutStatus::RolledBack;
                actions.push(RolloutAction::RollBack { devices });
            }
            self.updated_at = now;
            return actions;
        }
        let w = &self.waves[self.current];
        let applied = w
            .devices
            .iter()
            .all(|d| obs.get(d).is_some_and(|o| o.applied == Applied::Applied));
        if w.soak_until.is_some_and(|t| now >= t) && applied {
            self.waves[self.current].status = WaveStatus::Passed;
            actions.push(RolloutAction::WavePassed { wave: self.current });
            if self.current + 1 == self.waves.len() {
                self.status = RolloutStatus::Completed;
                actions.push(RolloutAction::Completed);
            } else {
                self.current += 1;
                actions.push(self.start_wave(self.current, &obs, now));
            }
            self.updated_at = now;
        }
        actions
    }

    /// An operator's pause, resume, abort or rollback.
    pub fn operate(
        &mut self,
        op: &Operation,
        now: Timestamp,
    ) -> Result<Vec<RolloutAction>, RolloutError> {
        let invalid =
            |op: &'static str, status| Err(RolloutError::InvalidTransition { op, status });
        let actions = match op {
            Operation::Pause { reason } => {
                if self.status != RolloutStatus::Running {
                    return invalid("pause", self.status);
                }
                self.status = RolloutStatus::Paused;
                vec![RolloutAction::Paused {
                    reason: reason.clone(),
                    failures: Vec::new(),
                }]
            }
            Operation::Resume => {
                if self.status != RolloutStatus::Paused {
                    return invalid("resume", self.status);
                }
                self.status = RolloutStatus::Running;
                self.failures.clear();
                let i = self.current;
                let mut actions = vec![RolloutAction::Resumed];
                if self.waves[i].status != WaveStatus::Pending {
                    // Restart the soak from now, against the latest counters.
                    let soak = self.spec.soak;
                    let w = &mut self.waves[i];
                    w.status = WaveStatus::Soaking;
                    w.soak_until = Some(now + soak);
                    for d in self.changed_devices() {
                        let c = self.last_seen.get(&d).copied().unwrap_or_default();
                        self.wave_start.insert(d, c);
                    }
                    self.waves[i].started_at = Some(now);
                    actions.push(RolloutAction::ApplyChange {
                        wave: i,
                        devices: self.waves[i].devices.clone(),
                    });
                }
                actions
            }
            Operation::Abort => {
                if !matches!(self.status, RolloutStatus::Running | RolloutStatus::Paused) {
                    return invalid("abort", self.status);
                }
                self.status = RolloutStatus::Aborted;
                vec![RolloutAction::Aborted]
            }
            Operation::Rollback => {
                if self.status == RolloutStatus::RolledBack {
                    return invalid("roll back", self.status);
                }
                let mut devices = self.changed_devices();
                devices.reverse();
                self.rollback_plan = Some(RollbackPlan {
                    devices: devices.clone(),
                    reason: "operator rollback".into(),
                });
                self.status = RolloutStatus::RolledBack;
                vec![RolloutAction::RollBack { devices }]
            }
        };
        self.updated_at = now;
        Ok(actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: usize, racks: usize) -> Vec<RolloutTarget> {
        (0..n)
            .map(|i| RolloutTarget {
                device: DeviceId::new(format!("pi-{i:03}")).unwrap(),
                location: Location {
                    site: Some("lab".into()),
                    rack: Some(format!("r{}", i % racks)),
                    ..Location::default()
                },
            })
            .collect()
    }

    #[test]
    fn bad_specs_are_named() {
        let t = targets(3, 1);
        let e = RolloutState::plan(
            RolloutSpec::new(
                "x",
                "c",
                t.clone(),
                Canary::Devices {
                    devices: vec![DeviceId::new("nope").unwrap()],
                },
                WavePlan::ByRack,
                Duration::from_secs(1),
            ),
            &BTreeMap::new(),
            Timestamp::EPOCH,
        )
        .unwrap_err();
        assert!(e.to_string().contains("canary nope is not a target"), "{e}");
        assert_eq!(e.code(), "invalid_body");
        let e = RolloutState::plan(
            RolloutSpec::new(
                "x",
                "c",
                t,
                Canary::Percent { percent: 0.0 },
                WavePlan::ByRack,
                Duration::from_secs(1),
            ),
            &BTreeMap::new(),
            Timestamp::EPOCH,
        )
        .unwrap_err();
        assert!(e.to_string().contains("percent"), "{e}");
    }

    #[test]
    fn canaries_spread_over_racks_and_waves_by_rack() {
        let st = RolloutState::plan(
            RolloutSpec::new(
                "x",
                "c",
                targets(12, 3),
                Canary::Percent { percent: 25.0 },
                WavePlan::ByRack,
                Duration::from_secs(60),
            ),
            &BTreeMap::new(),
            Timestamp::EPOCH,
        )
        .unwrap();
        assert_eq!(st.waves.len(), 4);
        assert_eq!(st.waves[0].devices.len(), 3);
        let racks: BTreeSet<String> = st.waves[0]
            .devices
            .iter()
            .map(|d| format!("r{}", d.as_str()[3..].parse::<usize>().unwrap() % 3))
            .collect();
        assert_eq!(racks.len(), 3, "one canary per rack");
        assert_eq!(st.progress().devices, 12);
    }

    #[test]
    fn the_engines_throttling_fails_the_throttled_gate_from_wave_start_on() {
        let t = targets(2, 1);
        let mut spec = RolloutSpec::new(
            "x",
            "c",
            t.clone(),
            Canary::Devices {
                devices: vec![t[0].device.clone()],
            },
            WavePlan::BySize { size: 1 },
            Duration::from_secs(60),
        );
        spec.auto_rollback = true;
        let mut st = RolloutState::plan(spec, &BTreeMap::new(), Timestamp::EPOCH).unwrap();
        let obs = |engine: [u32; 2]| -> Vec<Observation> {
            t.iter()
                .zip(engine)
                .map(|(d, n)| Observation {
                    applied: Applied::Applied,
                    engine_throttle_events: n,
                    ..Observation::new(d.device.clone())
                })
                .collect()
        };
        // The second device throttled before its wave: not the rollout's doing.
        st.step(&obs([0, 3]), Timestamp::from_secs(0));
        st.step(&obs([0, 3]), Timestamp::from_secs(61));
        assert_eq!(st.current, 1);
        st.step(&obs([0, 3]), Timestamp::from_secs(62));
        assert_eq!(st.status, RolloutStatus::Running);
        // Then its engine starts throttling during the wave.
        let actions = st.step(&obs([0, 4]), Timestamp::from_secs(70));
        assert_eq!(st.status, RolloutStatus::RolledBack);
        assert_eq!(st.failures.len(), 1, "{:?}", st.failures);
        assert_eq!(st.failures[0].gate, Gate::Throttled);
        assert_eq!(st.failures[0].device, t[1].device);
        assert!(
            st.failures[0].detail.contains("safety engine"),
            "{:?}",
            st.failures
        );
        assert!(matches!(
            actions.last(),
            Some(RolloutAction::RollBack { .. })
        ));
    }
}
