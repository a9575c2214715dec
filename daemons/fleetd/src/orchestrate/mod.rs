//! Orchestration: the workload scheduler, the optimizer's recommendations and
//! rollouts gated on physical health, run by fleetd.
//!
//! The decisions are wrale-core's pure functions
//! ([`wrale_core::fleet::scheduler::schedule`],
//! [`wrale_core::fleet::optimizer::optimize`],
//! [`wrale_core::fleet::rollout::RolloutState`]); this module feeds them the
//! registry, the telemetry analysis and the twins, stores what they decide in
//! `orchestrate.db` ([`store`]), writes the results into the devices' desired
//! state through the twin hub (board-checked like a config layer, authored
//! `fleet:fleetd/scheduler`, `fleet:fleetd/optimizer`, `fleet:fleetd/rollout/<id>`),
//! audits every change, and runs two timers: the scheduler pass
//! ([`scheduler::run_pass`]) and the rollout driver ([`rollouts::tick`]).
//!
//! The daemon calls [`open`] once the [`AppState`] exists and then [`start`].

pub mod rollouts;
pub mod scheduler;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use wrale_core::fleet::analyzer::FleetAnalysis;
use wrale_core::fleet::optimizer::OptimizerPolicy;
use wrale_core::fleet::registry::DeviceRecord;
use wrale_core::fleet::scheduler::{Decision, Node, SchedulerConfig};
use wrale_core::time::duration_str;
use wrale_core::{BoardProfile, DeviceId, Timestamp};
use wrale_sync::{Author, FieldPath, FieldValue};

use crate::config::Config;
use crate::error::ApiError;
use crate::state::{AppState, EventKind, now};
use crate::twins::{Planned, check_planned, write_planned};

pub use store::{ORCHESTRATE_DB, OrchestrateStore, PlacementRecord, WorkloadRecord};

/// `[orchestrate]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestrateConfig {
    /// How often the scheduler runs (it also runs on every workload change).
    #[serde(with = "duration_str")]
    pub scheduler_interval: Duration,
    /// How often running rollouts are stepped (gates checked, waves advanced).
    #[serde(with = "duration_str")]
    pub rollout_tick: Duration,
    /// `[orchestrate.scheduler]`: placement and eviction margins.
    pub scheduler: SchedulerConfig,
    /// `[orchestrate.optimizer]`: targets and `auto_apply` (`never`,
    /// `fan_profiles`, `all`: applied by the scheduler timer without an operator).
    pub optimizer: OptimizerPolicy,
}

impl Default for OrchestrateConfig {
    fn default() -> Self {
        Self {
            scheduler_interval: Duration::from_secs(30),
            rollout_tick: Duration::from_secs(5),
            scheduler: SchedulerConfig::default(),
            optimizer: OptimizerPolicy::default(),
        }
    }
}

impl OrchestrateConfig {
    /// Checks the section; returns the dotted key and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("orchestrate.{k}"), m.to_owned()));
        if self.scheduler_interval < Duration::from_millis(50) {
            return bad("scheduler_interval", "must be at least 50ms");
        }
        if self.rollout_tick < Duration::from_millis(20) {
            return bad("rollout_tick", "must be at least 20ms");
        }
        let s = &self.scheduler;
        if !(s.evict_margin_c.is_finite() && s.place_margin_c.is_finite())
            || s.evict_margin_c < 0.0
            || s.place_margin_c < s.evict_margin_c
        {
            return bad(
                "scheduler.place_margin_c",
                "margins must be finite with 0 <= evict_margin_c <= place_margin_c",
            );
        }
        Ok(())
    }
}

/// The orchestration handle in [`AppState`] (cheap to clone). The store is set by
/// [`open`] at start; before that, handlers answer 503.
#[derive(Debug, Clone, Default)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    store: OnceLock<Arc<OrchestrateStore>>,
    /// One scheduler pass (or accepted recommendation) at a time.
    pass: tokio::sync::Mutex<()>,
    /// One rollout step or operation at a time.
    rollouts: tokio::sync::Mutex<()>,
    /// Wakes the scheduler timer early.
    kick: tokio::sync::Notify,
    last: Mutex<LastPass>,
    passes: AtomicU64,
    changes: AtomicU64,
    /// Devices whose workload switches could not be written (retried next pass).
    dirty: Mutex<BTreeSet<DeviceId>>,
}

/// What the latest scheduler pass left pending.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LastPass {
    /// When it ran.
    pub at: Option<Timestamp>,
    /// Why it ran (`timer`, `workload.create`, ...).
    pub trigger: String,
    /// Replicas no device can take, with the reasons.
    pub pending: Vec<Decision>,
    /// Changes it made.
    pub changes: usize,
}

impl Orchestrator {
    /// The store (503 before [`open`]).
    pub fn store(&self) -> Result<Arc<OrchestrateStore>, ApiError> {
        self.inner
            .store
            .get()
            .cloned()
            .ok_or_else(|| ApiError::unavailable("orchestration store not open yet"))
    }

    /// Asks the scheduler timer to run a pass now.
    pub fn kick(&self) {
        self.inner.kick.notify_one();
    }

    /// The latest pass's summary.
    pub fn last_pass(&self) -> LastPass {
        self.inner
            .last
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    fn set_last(&self, l: LastPass) {
        self.inner.passes.fetch_add(1, Ordering::Relaxed);
        self.inner
            .changes
            .fetch_add(l.changes as u64, Ordering::Relaxed);
        if let Ok(mut g) = self.inner.last.lock() {
            *g = l;
        }
    }

    fn take_dirty(&self) -> BTreeSet<DeviceId> {
        self.inner
            .dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    fn mark_dirty(&self, devices: Vec<DeviceId>) {
        if let Ok(mut d) = self.inner.dirty.lock() {
            d.extend(devices);
        }
    }

    async fn pass_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.pass.lock().await
    }

    async fn rollout_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.rollouts.lock().await
    }
}

/// Opens `<data.dir>/orchestrate.db` into `state.orchestrate`.
pub fn open(state: &AppState, config: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data.dir)
        .with_context(|| format!("creating {}", config.data.dir.display()))?;
    let path = config.data.dir.join(ORCHESTRATE_DB);
    let store = OrchestrateStore::open(&path)
        .with_context(|| format!("opening the orchestration store {}", path.display()))?;
    let _already_open = state.orchestrate.inner.store.set(Arc::new(store));
    Ok(())
}

/// Starts the scheduler timer and the rollout driver; they stop with `state.shutdown`.
pub fn start(state: &AppState) {
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            let every = s.config().orchestrate.scheduler_interval;
            tokio::select! {
                () = s.shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
                () = s.orchestrate.inner.kick.notified() => {}
            }
            if let Err(e) = scheduler::run_pass(&s, "timer").await {
                tracing::warn!("scheduler pass failed: {}", e.message());
            }
            if let Err(e) = scheduler::auto_apply(&s).await {
                tracing::warn!("optimizer auto-apply failed: {}", e.message());
            }
        }
    });
    // A workload switch written by anyone (a twin rollback, a device, a layer)
    // marks the device for the next pass, which repairs any drift from the
    // placements.
    let s = state.clone();
    let mut events = state.events.subscribe();
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                () = s.shutdown.cancelled() => break,
                ev = events.recv() => ev,
            };
            match ev {
                Ok(ev) if ev.kind == EventKind::Twin => {
                    let touches = ev.data["fields"].as_array().is_some_and(|f| {
                        f.iter().any(|x| {
                            x.as_str()
                                .is_some_and(|x| x.starts_with("desired.workload."))
                        })
                    });
                    if let (true, Some(d)) = (touches, ev.device.clone()) {
                        s.orchestrate.mark_dirty(vec![d]);
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            let every = s.config().orchestrate.rollout_tick;
            tokio::select! {
                () = s.shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(e) = rollouts::tick(&s).await {
                tracing::warn!("rollout driver: {}", e.message());
            }
        }
    });
}

// ---- inputs: registry, analysis

/// Every device that is not revoked.
pub(crate) async fn devices(s: &AppState) -> Result<Vec<DeviceRecord>, ApiError> {
    let all = s.store(|st| st.list_devices()).await?;
    Ok(all.into_iter().filter(|d| !d.revoked).collect())
}

/// The latest fleet analysis: fleetd's analyzer pass ([`crate::intel`], every
/// `intel.interval` over `intel.window` of telemetry). Devices it has not
/// analysed (no telemetry in the window, or `intel.enabled = false`) have no
/// headroom figures and are unschedulable.
pub(crate) fn analysis(s: &AppState) -> Arc<FleetAnalysis> {
    s.analysis()
}

/// The scheduler's nodes: devices with thermal headroom figures are schedulable
/// (measured ambient, `R_th`, temperature now); the others are listed as
/// unschedulable (no recent telemetry) with their board's figures.
pub(crate) fn nodes(devices: &[DeviceRecord], analysis: &FleetAnalysis) -> Vec<Node> {
    devices
        .iter()
        .map(|d| {
            let profile = BoardProfile::builtin(d.model);
            let mut n = analysis
                .device(&d.id)
                .and_then(|a| Node::from_analysis(a, &profile))
                .unwrap_or_else(|| {
                    let mut n = Node::new(
                        d.id.clone(),
                        d.model,
                        d.location.clone(),
                        profile.thermal_model.ambient_c,
                        profile.thermal_model.r_th_heatsink,
                        profile.power.idle_w,
                        profile.thermal.throttle_c,
                        profile.power.nominal_v * profile.power.psu_rating_a * 0.8,
                    );
                    n.schedulable = false;
                    n
                });
            n.labels = d.labels.clone();
            n.location = d.location.clone();
            n
        })
        .collect()
}

// ---- output: writes into twins

/// Writes `set` (values, `None` deletes) and `off` (workload switches written
/// `false`, so a device stops a workload it also has configured locally) into
/// the desired state of `device` as `author`: board-checked first (422 naming
/// the device and rule, nothing written), then one change with `config_version`
/// bumped (plus one per switched-off workload). Holds the config-layer lock.
pub(crate) async fn write_desired(
    s: &AppState,
    device: &DeviceRecord,
    set: BTreeMap<String, Option<FieldValue>>,
    off: BTreeSet<String>,
    author: &Author,
) -> Result<(), ApiError> {
    let _held = s.hub.lock_layers().await;
    let mut writes = set;
    for k in &off {
        writes.insert(k.clone(), None);
    }
    check_planned(s, device, &writes)?;
    write_planned(
        s,
        &[Planned {
            device: device.id.clone(),
            writes,
        }],
        author,
    )?;
    if !off.is_empty() {
        s.hub
            .sync()
            .edit(&device.id, |t| -> wrale_sync::Result<()> {
                for k in &off {
                    t.set_field(
                        &FieldPath::desired(k.clone()),
                        Some(FieldValue::Bool(false)),
                        author,
                        now(),
                    )?;
                }
                Ok(())
            })
            .map_err(|e| ApiError::internal(format!("twin store: {e}")))?
            .map_err(|e| ApiError::internal(format!("twin of {}: {e}", device.id)))?;
    }
    Ok(())
}

/// The desired fields of a device's twin now.
pub(crate) fn desired_fields(
    s: &AppState,
    device: &DeviceId,
) -> Result<BTreeMap<String, FieldValue>, ApiError> {
    s.hub
        .sync()
        .read(device, |t| t.fields(wrale_sync::Section::Desired))
        .map_err(|e| ApiError::internal(format!("twin: {e}")))?
        .map_err(|e| ApiError::internal(format!("twin: {e}")))
}

/// `fleet:fleetd/<what>`.
pub(crate) fn author(what: &str) -> Author {
    Author::fleet(format!("fleetd/{what}"))
}

/// Appends this module's Prometheus lines to a `/metrics` answer: declared
/// workloads, placed and pending replicas, scheduler passes and changes, and
/// rollouts by status.
pub async fn render_metrics(state: &AppState, out: &mut String) {
    let Ok(store) = state.orchestrate.store() else {
        return;
    };
    let counts = tokio::task::spawn_blocking(move || {
        let w = store.workloads().map(|v| v.len()).unwrap_or(0);
        let p = store.placements().map(|v| v.len()).unwrap_or(0);
        let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
        for st in ["running", "paused", "completed", "aborted", "rolled_back"] {
            let n = store.list_rollouts(Some(st)).map(|v| v.len()).unwrap_or(0);
            by_status.insert(st.to_owned(), n as u64);
        }
        (w, p, by_status)
    })
    .await;
    let Ok((workloads, placed, rollouts)) = counts else {
        return;
    };
    let o = &state.orchestrate;
    let pending = o.last_pass().pending.len();
    let mut m = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    m(
        "wrale_workloads",
        "gauge",
        "Fleet workloads declared.",
        &[(String::new(), workloads as u64)],
    );
    m(
        "wrale_workload_replicas",
        "gauge",
        "Workload replicas by state after the latest scheduler pass.",
        &[
            ("{state=\"placed\"}".to_owned(), placed as u64),
            ("{state=\"pending\"}".to_owned(), pending as u64),
        ],
    );
    m(
        "wrale_scheduler_passes_total",
        "counter",
        "Scheduler passes run.",
        &[(String::new(), o.inner.passes.load(Ordering::Relaxed))],
    );
    m(
        "wrale_scheduler_changes_total",
        "counter",
        "Placements made, moved, evicted or stopped by the scheduler.",
        &[(String::new(), o.inner.changes.load(Ordering::Relaxed))],
    );
    m(
        "wrale_rollouts",
        "gauge",
        "Rollouts by status.",
        &rollouts
            .into_iter()
            .map(|(k, v)| (format!("{{status=\"{k}\"}}"), v))
            .collect::<Vec<_>>(),
    );
}
