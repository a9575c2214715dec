//! The optimizer: recommends per-device fan profiles and workload moves that
//! lower the fleet's peak temperature or its power draw, each with its expected
//! effect from a simple thermal model.
//!
//! **Model.** Steady state `T = T_ambient + P · R_th(duty)`, where `P` is the
//! board's base power plus its workloads plus the fan's own power (`fan_power_w`
//! at 100 %), and the thermal conductance is linear in airflow:
//! `1/R_th(duty) = 1/R_heatsink + e · duty · (1/R_fan − 1/R_heatsink)` (the board
//! profile's figures; `e` is the fan effectiveness the analyzer measured). Under a
//! fan-curve profile the duty follows `T`; the steady state is the lowest curve step
//! whose temperature does not reach the next step's threshold.
//!
//! **Fan profiles.** A device whose steady state is above `limit − target_margin`
//! gets the quietest profile that brings it below (or the coolest one); a device
//! comfortably below gets the quietest profile that stays below while saving at
//! least `min_power_saving_w`.
//!
//! **Moves.** Greedily, the hottest device's workloads are tried on the coolest
//! devices that can take them (the scheduler's constraints and headroom with its
//! placement margin); a move is kept when it lowers the pair's peak by at least
//! `min_gain_c`.
//!
//! Recommendations only: the plan carries the policy's [`AutoApply`] and marks
//! each recommendation it covers; fleetd applies them when an operator accepts
//! or when the policy says so.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::board::{BoardProfile, FanKind};
use crate::fleet::scheduler::{Node, Placement, SchedulerConfig, Workload, violations};
use crate::model::{DeviceId, FanProfileName};
use crate::policy::curve;
use crate::units::{Celsius, KelvinPerWatt, Percent, Watts};

/// A device's fan, for the thermal model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanModel {
    /// Profile in force.
    pub profile: FanProfileName,
    /// Kind of fan (an on/off fan runs 0 or 100 %).
    pub kind: FanKind,
    /// Thermal resistance with the fan stopped.
    #[serde(rename = "r_th_heatsink_k_per_w")]
    pub r_th_heatsink: KelvinPerWatt,
    /// Thermal resistance with a healthy fan at 100 %.
    #[serde(rename = "r_th_fan_k_per_w")]
    pub r_th_fan: KelvinPerWatt,
    /// Measured effectiveness (1 = healthy).
    pub effectiveness: f64,
    /// The fan's own power at 100 %.
    #[serde(rename = "fan_power_w")]
    pub fan_power: Watts,
}

impl FanModel {
    /// From a board profile (healthy fan, 0.45 W at 100 %, PHYSICS.md 1.1).
    pub fn from_profile(p: &BoardProfile, profile: FanProfileName) -> Self {
        Self {
            profile,
            kind: p.fan.kind,
            r_th_heatsink: p.thermal_model.r_th_heatsink,
            r_th_fan: p.thermal_model.r_th_fan,
            effectiveness: 1.0,
            fan_power: Watts(0.45),
        }
    }

    /// Thermal resistance at `duty`.
    pub fn r_th(&self, duty: Percent) -> f64 {
        let g_hs = 1.0 / self.r_th_heatsink.get();
        let g_fan = 1.0 / self.r_th_fan.get();
        let d = match self.kind {
            FanKind::None => 0.0,
            FanKind::OnOff if duty.get() > 0.0 => 1.0,
            _ => duty.fraction(),
        };
        1.0 / (g_hs + self.effectiveness.clamp(0.0, 1.0) * d * (g_fan - g_hs))
    }

    /// Steady state `(temperature, duty, total power)` under `profile` with
    /// `ambient` and `power` (without the fan's own).
    pub fn steady_state(
        &self,
        profile: FanProfileName,
        ambient: Celsius,
        power: Watts,
    ) -> (Celsius, Percent, Watts) {
        let steps = curve::steps(profile);
        let mut result = (Celsius(f64::NAN), Percent::ZERO, power);
        for (i, (_, duty)) in steps.iter().enumerate() {
            let d = Percent::saturating(*duty);
            let p = power + self.fan_power * d.fraction();
            let t = ambient.get() + p.get() * self.r_th(d);
            result = (Celsius(t), d, p);
            match steps.get(i + 1) {
                Some((next_thr, _)) if t >= *next_thr => continue,
                _ => break,
            }
        }
        result
    }
}

/// When recommendations are applied without an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoApply {
    /// Never: an operator accepts each one.
    #[default]
    Never,
    /// Fan-profile changes automatically, moves by an operator.
    FanProfiles,
    /// Everything automatically.
    All,
}

/// Optimizer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerPolicy {
    /// Target: steady state at least this far below the device's limit.
    pub target_margin_c: f64,
    /// Smallest power saving worth a quieter profile (W).
    pub min_power_saving_w: f64,
    /// Smallest peak reduction worth a change (°C).
    pub min_gain_c: f64,
    /// Most moves per pass.
    pub max_moves: usize,
    /// Candidate destinations tried per workload (coolest first).
    pub max_candidates: usize,
    /// What may be applied automatically.
    pub auto_apply: AutoApply,
}

impl Default for OptimizerPolicy {
    fn default() -> Self {
        Self {
            target_margin_c: 10.0,
            min_power_saving_w: 0.05,
            min_gain_c: 2.0,
            max_moves: 10,
            max_candidates: 20,
            auto_apply: AutoApply::Never,
        }
    }
}

/// Optimizer input.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OptimizerInput {
    /// Devices (the scheduler's view; `r_th` is used for devices without a fan model).
    pub nodes: Vec<Node>,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Current placements.
    pub placements: Vec<Placement>,
    /// Fans by device.
    pub fans: BTreeMap<DeviceId, FanModel>,
}

/// A fan-profile recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanRecommendation {
    /// Device.
    pub device: DeviceId,
    /// Current profile.
    pub from: FanProfileName,
    /// Recommended profile.
    pub to: FanProfileName,
    /// Steady state now.
    pub temp_before_c: f64,
    /// Steady state after.
    pub temp_after_c: f64,
    /// Board power now (with the fan).
    pub power_before_w: f64,
    /// Board power after.
    pub power_after_w: f64,
    /// Why.
    pub reason: String,
    /// Whether the policy applies it automatically.
    pub auto_apply: bool,
}

/// A workload-move recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveRecommendation {
    /// Workload.
    pub workload: String,
    /// Replica.
    pub replica: u32,
    /// From.
    pub from: DeviceId,
    /// To.
    pub to: DeviceId,
    /// Source steady state before / after.
    pub from_temp_c: [f64; 2],
    /// Destination steady state before / after.
    pub to_temp_c: [f64; 2],
    /// Why.
    pub reason: String,
    /// Whether the policy applies it automatically.
    pub auto_apply: bool,
}

/// Expected effect on the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// Hottest steady state now.
    pub peak_temp_before_c: f64,
    /// Hottest steady state after all recommendations.
    pub peak_temp_after_c: f64,
    /// The hottest device now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_device_before: Option<DeviceId>,
    /// Total power now.
    pub total_power_before_w: f64,
    /// Total power after.
    pub total_power_after_w: f64,
}

/// The optimizer's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizationPlan {
    /// Fan-profile changes.
    pub fan_profiles: Vec<FanRecommendation>,
    /// Workload moves.
    pub moves: Vec<MoveRecommendation>,
    /// Expected effect.
    pub expected: Effect,
    /// The policy's auto-apply setting.
    pub auto_apply: AutoApply,
}

struct Dev<'a> {
    node: &'a Node,
    fan: Option<FanModel>,
    load: f64,
}

impl Dev<'_> {
    /// (temperature, total power) at steady state with `load` watts of workloads.
    fn state(&self, load: f64) -> (f64, f64) {
        let p = self.node.base_power.get() + load;
        match &self.fan {
            Some(f) => {
                let (t, _, pw) = f.steady_state(f.profile, self.node.ambient, Watts(p));
                (t.get(), pw.get())
            }
            None => (self.node.ambient.get() + p * self.node.r_th.get(), p),
        }
    }
}

/// One optimizer pass. Deterministic.
pub fn optimize(
    input: &OptimizerInput,
    policy: &OptimizerPolicy,
    sched: &SchedulerConfig,
) -> OptimizationPlan {
    let mut nodes: Vec<&Node> = input.nodes.iter().collect();
    nodes.sort_by(|a, b| a.device.cmp(&b.device));
    let wl: BTreeMap<&str, &Workload> = input
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), w))
        .collect();
    let mut load: BTreeMap<&DeviceId, f64> = BTreeMap::new();
    for p in &input.placements {
        if let Some(w) = wl.get(p.workload.as_str()) {
            *load.entry(&p.device).or_insert(0.0) += w.power.get();
        }
    }
    let mut devs: Vec<Dev<'_>> = nodes
        .iter()
        .map(|n| Dev {
            node: n,
            fan: input.fans.get(&n.device).cloned(),
            load: load.get(&n.device).copied().unwrap_or(0.0),
        })
        .collect();

    let before: Vec<(f64, f64)> = devs.iter().map(|d| d.state(d.load)).collect();
    let peak = |states: &[(f64, f64)]| {
        states
            .iter()
            .enumerate()
            .fold((f64::NEG_INFINITY, None), |(m, i), (j, s)| {
                if s.0 > m { (s.0, Some(j)) } else { (m, i) }
            })
    };
    let (peak_before, peak_idx) = peak(&before);

    // Fan profiles.
    let auto_fans = policy.auto_apply != AutoApply::Never;
    let mut fan_profiles = Vec::new();
    for d in devs.iter_mut() {
        let Some(f) = d.fan.clone() else { continue };
        if f.kind == FanKind::None {
            continue;
        }
        let p = Watts(d.node.base_power.get() + d.load);
        let target = d.node.temp_limit.get() - policy.target_margin_c;
        let at = |pr| f.steady_state(pr, d.node.ambient, p);
        let (t_now, _, p_now) = at(f.profile);
        let fits: Option<FanProfileName> = FanProfileName::ALL
            .into_iter()
            .find(|pr| at(*pr).0.get() <= target);
        let choice = if t_now.get() > target {
            let pr = fits.unwrap_or(FanProfileName::Max);
            (t_now.get() - at(pr).0.get() >= policy.min_gain_c.min(t_now.get() - target))
                .then_some((pr, "lowers the steady state below the target"))
        } else {
            fits.filter(|pr| *pr < f.profile)
                .filter(|pr| p_now.get() - at(*pr).2.get() >= policy.min_power_saving_w)
                .map(|pr| (pr, "saves fan power and stays below the target"))
        };
        if let Some((to, why)) = choice.filter(|(to, _)| *to != f.profile) {
            let (t_after, _, p_after) = at(to);
            fan_profiles.push(FanRecommendation {
                device: d.node.device.clone(),
                from: f.profile,
                to,
                temp_before_c: t_now.get(),
                temp_after_c: t_after.get(),
                power_before_w: p_now.get(),
                power_after_w: p_after.get(),
                reason: format!(
                    "{why} ({:.1} °C = limit {:.1} − margin {:.1}): {:.1} → {:.1} °C, {:.2} → {:.2} W",
                    target,
                    d.node.temp_limit.get(),
                    policy.target_margin_c,
                    t_now.get(),
                    t_after.get(),
                    p_now.get(),
                    p_after.get()
                ),
                auto_apply: auto_fans,
            });
            if let Some(fm) = d.fan.as_mut() {
                fm.profile = to;
            }
        }
    }

    // Moves: greedy on the hottest device.
    let mut placements = input.placements.clone();
    placements.sort();
    let mut moves = Vec::new();
    let node_list: Vec<Node> = input.nodes.clone();
    for _ in 0..policy.max_moves {
        let states: Vec<(f64, f64)> = devs.iter().map(|d| d.state(d.load)).collect();
        let Some(hot) = peak(&states).1 else { break };
        let hot_id = devs[hot].node.device.clone();
        let mut mine: Vec<(usize, &Workload)> = placements
            .iter()
            .enumerate()
            .filter(|(_, p)| p.device == hot_id)
            .filter_map(|(i, p)| wl.get(p.workload.as_str()).map(|w| (i, *w)))
            .collect();
        mine.sort_by(|a, b| {
            a.1.priority
                .cmp(&b.1.priority)
                .then(b.1.power.get().total_cmp(&a.1.power.get()))
                .then(a.0.cmp(&b.0))
        });
        let mut coolest: Vec<usize> = (0..devs.len()).filter(|&i| i != hot).collect();
        coolest.sort_by(|&a, &b| states[a].0.total_cmp(&states[b].0).then(a.cmp(&b)));
        // (new peak, placement index, destination, source and destination temps)
        type Best = (f64, usize, usize, [f64; 2], [f64; 2]);
        let mut best: Option<Best> = None;
        let known = violations(
            &node_list,
            &input.workloads,
            &placements,
            sched.place_margin_c,
        );
        for &(pi, w) in &mine {
            let src_after = devs[hot].state(devs[hot].load - w.power.get()).0;
            for &c in coolest.iter().take(policy.max_candidates) {
                let dst_after = devs[c].state(devs[c].load + w.power.get()).0;
                let new_peak = src_after.max(dst_after);
                if new_peak > states[hot].0 - policy.min_gain_c {
                    continue;
                }
                let mut trial = placements.clone();
                trial[pi].device = devs[c].node.device.clone();
                // Only what the move itself breaks counts: a device already inside
                // the scheduler's hysteresis band is not the move's fault, and the
                // source only gets lighter.
                let new = violations(&node_list, &input.workloads, &trial, sched.place_margin_c);
                if new.iter().any(|v| v.0 != hot_id && !known.contains(v)) {
                    continue;
                }
                if best.as_ref().is_none_or(|b| new_peak < b.0) {
                    best = Some((
                        new_peak,
                        pi,
                        c,
                        [states[hot].0, src_after],
                        [states[c].0, dst_after],
                    ));
                }
            }
        }
        let Some((_, pi, c, from_t, to_t)) = best else {
            break;
        };
        let w = wl[placements[pi].workload.as_str()];
        devs[hot].load -= w.power.get();
        devs[c].load += w.power.get();
        let to = devs[c].node.device.clone();
        moves.push(MoveRecommendation {
            workload: w.name.clone(),
            replica: placements[pi].replica,
            from: hot_id.clone(),
            to: to.clone(),
            from_temp_c: from_t,
            to_temp_c: to_t,
            reason: format!(
                "{} is the hottest device ({:.1} °C); moving {} ({:.2} W) to {} lowers the pair's peak to {:.1} °C",
                hot_id,
                from_t[0],
                w.name,
                w.power.get(),
                to,
                from_t[1].max(to_t[1])
            ),
            auto_apply: policy.auto_apply == AutoApply::All,
        });
        placements[pi].device = to;
    }

    let after: Vec<(f64, f64)> = devs.iter().map(|d| d.state(d.load)).collect();
    OptimizationPlan {
        fan_profiles,
        moves,
        expected: Effect {
            peak_temp_before_c: if peak_before.is_finite() {
                peak_before
            } else {
                0.0
            },
            peak_temp_after_c: {
                let p = peak(&after).0;
                if p.is_finite() { p } else { 0.0 }
            },
            peak_device_before: peak_idx.map(|i| devs[i].node.device.clone()),
            total_power_before_w: before.iter().map(|s| s.1).sum(),
            total_power_after_w: after.iter().map(|s| s.1).sum(),
        },
        auto_apply: policy.auto_apply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::BoardModel;
    use crate::model::Location;

    fn node(id: &str, ambient: f64) -> Node {
        Node::new(
            DeviceId::new(id).unwrap(),
            BoardModel::Pi4B,
            Location::default(),
            Celsius(ambient),
            KelvinPerWatt(6.0),
            Watts(2.7),
            Celsius(80.0),
            Watts(12.0),
        )
    }

    #[test]
    fn steady_state_follows_the_curve() {
        let f = FanModel::from_profile(
            &BoardProfile::builtin(BoardModel::Pi4B),
            FanProfileName::Balance,
        );
        let (t_q, _, p_q) = f.steady_state(FanProfileName::Quiet, Celsius(30.0), Watts(6.4));
        let (t_m, d_m, p_m) = f.steady_state(FanProfileName::Max, Celsius(30.0), Watts(6.4));
        assert_eq!(d_m, Percent::FULL);
        assert!((t_m.get() - (30.0 + 6.85 * 4.5)).abs() < 1e-9);
        assert!(t_q > t_m && p_q < p_m, "{t_q} {t_m}");
    }

    #[test]
    fn hot_device_gets_a_cooler_profile_and_a_move() {
        let pi4 = BoardProfile::builtin(BoardModel::Pi4B);
        let mut input = OptimizerInput {
            nodes: vec![node("a", 40.0), node("b", 22.0)],
            workloads: vec![
                Workload::new("w1", 30.0, Watts(2.5)),
                Workload::new("w2", 30.0, Watts(1.0)),
            ],
            placements: vec![
                Placement {
                    workload: "w1".into(),
                    replica: 0,
                    device: DeviceId::new("a").unwrap(),
                },
                Placement {
                    workload: "w2".into(),
                    replica: 0,
                    device: DeviceId::new("a").unwrap(),
                },
            ],
            fans: BTreeMap::new(),
        };
        input.fans.insert(
            DeviceId::new("a").unwrap(),
            FanModel::from_profile(&pi4, FanProfileName::Quiet),
        );
        let plan = optimize(
            &input,
            &OptimizerPolicy::default(),
            &SchedulerConfig::default(),
        );
        assert_eq!(plan.fan_profiles.len(), 1, "{plan:#?}");
        assert!(plan.fan_profiles[0].to > FanProfileName::Quiet);
        assert!(plan.expected.peak_temp_after_c < plan.expected.peak_temp_before_c);
        assert!(!plan.fan_profiles[0].auto_apply);
        // "a" is over the placement margin itself: that does not block moving off it.
        assert!(!plan.moves.is_empty());
        assert!(
            plan.moves
                .iter()
                .all(|m| m.from.as_str() == "a" && m.to.as_str() == "b")
        );
    }
}
