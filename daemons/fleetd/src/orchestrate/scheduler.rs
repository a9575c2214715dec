//! The scheduler pass and the optimizer's recommendations.
//!
//! A pass reads the declared workloads and current placements from
//! `orchestrate.db`, the devices from the registry and their headroom from the
//! telemetry analysis, runs [`schedule`], writes each device's changed workload
//! switches into its twin (`workload.<name> = true` where a replica now runs,
//! `false` where it stopped), stores the new placements with the decision that
//! made each, and audits every change (`workload.place`, `.move`, `.evict`,
//! `.stop`). Replicas no device can take stay pending with their reasons.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;
use wrale_core::fleet::optimizer::{
    AutoApply, FanModel, OptimizationPlan, OptimizerInput, optimize,
};
use wrale_core::fleet::registry::DeviceRecord;
use wrale_core::fleet::scheduler::{
    Action, Decision, Placement, ScheduleInput, SchedulePlan, schedule,
};
use wrale_core::model::FanProfileName;
use wrale_core::{BoardProfile, DeviceId};
use wrale_sync::FieldValue;

use super::{LastPass, PlacementRecord, author, desired_fields, devices, nodes, write_desired};
use crate::error::ApiError;
use crate::state::{AppState, now};

/// The twin key of a workload switch.
pub fn workload_key(name: &str) -> String {
    format!("workload.{name}")
}

/// What one pass did.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    /// Changes made (place, move, evict, stop).
    pub changes: Vec<Decision>,
    /// Replicas left pending.
    pub pending: Vec<Decision>,
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Place { .. } => "workload.place",
        Action::Move { .. } => "workload.move",
        Action::Evict { .. } => "workload.evict",
        Action::Stop { .. } => "workload.stop",
        Action::Unplaceable => "workload.pending",
    }
}

/// Per device, the workload names placed there.
fn by_device(placements: &[Placement]) -> BTreeMap<DeviceId, BTreeSet<String>> {
    let mut m: BTreeMap<DeviceId, BTreeSet<String>> = BTreeMap::new();
    for p in placements {
        m.entry(p.device.clone())
            .or_default()
            .insert(p.workload.clone());
    }
    m
}

/// Brings the workload switches of every device that hosts or hosted a replica
/// (and of those whose write failed in an earlier pass) in line with `after`:
/// `workload.<name> = true` where a replica runs, `false` where a fleet workload
/// is switched on without one. What the twin already holds is not written again,
/// so a twin that drifted (a rollback, a failed write) is repaired by the next
/// pass; a device whose write fails now is retried then.
async fn write_switches(
    s: &AppState,
    devices: &[DeviceRecord],
    before: &[Placement],
    after: &[Placement],
    who: &str,
) {
    let wanted = by_device(after);
    let names: BTreeSet<&str> = before
        .iter()
        .chain(after)
        .map(|p| p.workload.as_str())
        .collect();
    let mut ids: BTreeSet<DeviceId> = before
        .iter()
        .chain(after)
        .map(|p| p.device.clone())
        .collect();
    ids.extend(s.orchestrate.take_dirty());
    let empty = BTreeSet::new();
    let mut failed = Vec::new();
    for id in ids {
        let Some(record) = devices.iter().find(|d| d.id == id) else {
            continue; // deleted or revoked: nothing to write
        };
        let fields = match desired_fields(s, &id) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(device = %id, "cannot read the twin: {}", e.message());
                failed.push(id);
                continue;
            }
        };
        let on: BTreeSet<&str> = names
            .iter()
            .copied()
            .filter(|n| matches!(fields.get(&workload_key(n)), Some(FieldValue::Bool(true))))
            .collect();
        let want = wanted.get(&id).unwrap_or(&empty);
        let set: BTreeMap<String, Option<FieldValue>> = want
            .iter()
            .filter(|w| !on.contains(w.as_str()))
            .map(|w| (workload_key(w), Some(FieldValue::Bool(true))))
            .collect();
        let off: BTreeSet<String> = on
            .iter()
            .filter(|n| !want.contains(**n))
            .map(|n| workload_key(n))
            .collect();
        if set.is_empty() && off.is_empty() {
            continue;
        }
        if let Err(e) = write_desired(s, record, set, off, &author(who)).await {
            tracing::warn!(device = %id, "workload switches not written: {}", e.message());
            failed.push(id);
        }
    }
    s.orchestrate.mark_dirty(failed);
}

/// The scheduler's input now.
async fn input(
    s: &AppState,
) -> Result<(Vec<DeviceRecord>, ScheduleInput, Vec<PlacementRecord>), ApiError> {
    let store = s.orchestrate.store()?;
    let st = store.clone();
    let (workloads, current) =
        tokio::task::spawn_blocking(move || Ok::<_, ApiError>((st.workloads()?, st.placements()?)))
            .await
            .map_err(|e| ApiError::internal(format!("store task: {e}")))??;
    let devs = devices(s).await?;
    let analysis = super::analysis(s);
    let input = ScheduleInput {
        nodes: nodes(&devs, &analysis),
        workloads: workloads.into_iter().map(|w| w.spec).collect(),
        placements: current.iter().map(|p| p.placement.clone()).collect(),
    };
    Ok((devs, input, current))
}

/// One scheduler pass (serialised with other passes and accepted
/// recommendations). `trigger` is recorded (`timer`, `workload.create`, ...).
pub async fn run_pass(s: &AppState, trigger: &str) -> Result<PassReport, ApiError> {
    let _pass = s.orchestrate.pass_lock().await;
    let (devs, input, current) = input(s).await?;
    let cfg = s.config().orchestrate.scheduler.clone();
    let plan: SchedulePlan = schedule(&input, &cfg);
    write_switches(s, &devs, &input.placements, &plan.placements, "scheduler").await;

    // The new placement records: kept ones keep their time and decision.
    let t = now();
    let mut decided: BTreeMap<(String, u32), &Decision> = BTreeMap::new();
    for d in plan.changes() {
        decided.insert((d.workload.clone(), d.replica), d);
    }
    let records: Vec<PlacementRecord> = plan
        .placements
        .iter()
        .map(|p| {
            let old = current.iter().find(|c| c.placement == *p);
            match (old, decided.get(&(p.workload.clone(), p.replica))) {
                (Some(o), None) => o.clone(),
                (_, d) => PlacementRecord {
                    placement: p.clone(),
                    since: t,
                    decision: d.map(|d| (*d).clone()),
                },
            }
        })
        .collect();
    let store = s.orchestrate.store()?;
    tokio::task::spawn_blocking(move || store.set_placements(&records))
        .await
        .map_err(|e| ApiError::internal(format!("store task: {e}")))??;

    let changes: Vec<Decision> = plan.changes().cloned().collect();
    let pending: Vec<Decision> = plan
        .decisions
        .iter()
        .filter(|d| matches!(d.action, Action::Unplaceable | Action::Evict { .. }))
        .cloned()
        .collect();
    for d in &changes {
        let device = match &d.action {
            Action::Place { device } => Some(device.clone()),
            Action::Move { to, .. } => Some(to.clone()),
            Action::Evict { from } | Action::Stop { from } => Some(from.clone()),
            Action::Unplaceable => None,
        };
        s.audit(
            "fleetd/scheduler",
            action_name(&d.action),
            &format!("workload:{}/{}", d.workload, d.replica),
            "allowed",
            json!({"action": d.action, "reason": d.reason, "trigger": trigger}),
            device,
        )
        .await;
    }
    s.orchestrate.set_last(LastPass {
        at: Some(t),
        trigger: trigger.to_owned(),
        pending: pending.clone(),
        changes: changes.len(),
    });
    Ok(PassReport { changes, pending })
}

// ---- optimizer

/// A recommendation with its id (stable for the same input).
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    /// `fan-<device>-<profile>` or `move-<workload>-<replica>-<to>`.
    pub id: String,
    /// `fan_profile` or `move`.
    pub kind: &'static str,
    /// The recommendation (before/after figures and the reason).
    pub detail: serde_json::Value,
    /// Whether the policy applies it without an operator.
    pub auto_apply: bool,
}

/// The optimizer's plan now and its recommendations with ids.
pub async fn recommendations(
    s: &AppState,
) -> Result<(OptimizationPlan, Vec<Recommendation>), ApiError> {
    let (devs, input, _) = input(s).await?;
    let mut fans = BTreeMap::new();
    for d in &devs {
        let profile = BoardProfile::builtin(d.model);
        let current = desired_fields(s, &d.id)
            .ok()
            .and_then(|f| match f.get("fan_profile") {
                Some(FieldValue::Str(p)) => serde_json::from_value::<FanProfileName>(json!(p)).ok(),
                _ => None,
            })
            .unwrap_or_default();
        fans.insert(d.id.clone(), FanModel::from_profile(&profile, current));
    }
    let opt = OptimizerInput {
        nodes: input.nodes.into_iter().filter(|n| n.schedulable).collect(),
        workloads: input.workloads,
        placements: input.placements,
        fans,
    };
    let cfg = s.config().orchestrate.clone();
    let plan = optimize(&opt, &cfg.optimizer, &cfg.scheduler);
    let mut out = Vec::new();
    for f in &plan.fan_profiles {
        out.push(Recommendation {
            id: format!("fan-{}-{}", f.device, f.to.as_str()),
            kind: "fan_profile",
            detail: serde_json::to_value(f).unwrap_or_default(),
            auto_apply: f.auto_apply,
        });
    }
    for m in &plan.moves {
        out.push(Recommendation {
            id: format!("move-{}-{}-{}", m.workload, m.replica, m.to),
            kind: "move",
            detail: serde_json::to_value(m).unwrap_or_default(),
            auto_apply: m.auto_apply,
        });
    }
    Ok((plan, out))
}

/// Applies the recommendation `id` of the current plan as `who` (audit actor);
/// 404 when the current plan has no such recommendation (the fleet changed).
pub async fn accept(s: &AppState, id: &str, who: &str) -> Result<Recommendation, ApiError> {
    let (plan, recs) = recommendations(s).await?;
    let rec = recs
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no recommendation {id} in the current plan (the fleet may have changed; list them again)"
            ))
        })?;
    let _pass = s.orchestrate.pass_lock().await;
    let devs = devices(s).await?;
    let record = |d: &DeviceId| {
        devs.iter()
            .find(|r| &r.id == d)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no device {d}")))
    };
    if let Some(f) = plan
        .fan_profiles
        .iter()
        .find(|f| format!("fan-{}-{}", f.device, f.to.as_str()) == id)
    {
        let dev = record(&f.device)?;
        let set = BTreeMap::from([(
            "fan_profile".to_owned(),
            Some(FieldValue::Str(f.to.as_str().to_owned())),
        )]);
        write_desired(s, &dev, set, BTreeSet::new(), &super::author("optimizer")).await?;
        s.audit(
            who,
            "recommendation.accept",
            &format!("device:{}", f.device),
            "allowed",
            json!({"id": id, "kind": "fan_profile", "from": f.from, "to": f.to, "reason": f.reason}),
            Some(f.device.clone()),
        )
        .await;
    } else if let Some(m) = plan
        .moves
        .iter()
        .find(|m| format!("move-{}-{}-{}", m.workload, m.replica, m.to) == id)
    {
        let store = s.orchestrate.store()?;
        let st = store.clone();
        let mut current = tokio::task::spawn_blocking(move || st.placements())
            .await
            .map_err(|e| ApiError::internal(format!("store task: {e}")))??;
        let before: Vec<Placement> = current.iter().map(|p| p.placement.clone()).collect();
        let Some(p) = current
            .iter_mut()
            .find(|p| p.placement.workload == m.workload && p.placement.replica == m.replica)
        else {
            return Err(ApiError::conflict(format!(
                "{}/{} is no longer placed",
                m.workload, m.replica
            )));
        };
        p.placement.device = m.to.clone();
        p.since = now();
        p.decision = Some(Decision {
            workload: m.workload.clone(),
            replica: m.replica,
            action: Action::Move {
                from: m.from.clone(),
                to: m.to.clone(),
            },
            reason: format!("optimizer recommendation {id} accepted: {}", m.reason),
            candidates: Vec::new(),
            rejected: BTreeMap::new(),
        });
        let after: Vec<Placement> = current.iter().map(|p| p.placement.clone()).collect();
        let _ = record(&m.to)?;
        write_switches(s, &devs, &before, &after, "optimizer").await;
        tokio::task::spawn_blocking(move || store.set_placements(&current))
            .await
            .map_err(|e| ApiError::internal(format!("store task: {e}")))??;
        s.audit(
            who,
            "recommendation.accept",
            &format!("workload:{}/{}", m.workload, m.replica),
            "allowed",
            json!({"id": id, "kind": "move", "from": m.from, "to": m.to, "reason": m.reason}),
            Some(m.to.clone()),
        )
        .await;
    }
    Ok(rec)
}

/// Applies the recommendations the optimizer policy marks `auto_apply`.
pub async fn auto_apply(s: &AppState) -> Result<usize, ApiError> {
    if s.config().orchestrate.optimizer.auto_apply == AutoApply::Never {
        return Ok(0);
    }
    let (_, recs) = recommendations(s).await?;
    let mut n = 0;
    for r in recs.iter().filter(|r| r.auto_apply) {
        match accept(s, &r.id, "fleetd/optimizer").await {
            Ok(_) => n += 1,
            Err(e) => tracing::warn!(id = %r.id, "auto-apply failed: {}", e.message()),
        }
    }
    Ok(n)
}
