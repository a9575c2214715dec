//! The workload scheduler: places fleet-level workloads on devices with enough
//! thermal and power headroom, and moves them off devices whose headroom collapsed.
//!
//! Pure and deterministic: [`schedule`] takes the nodes (devices with their
//! physical figures), the declared workloads and the current placements, and
//! returns the new placements with one explained [`Decision`] per change.
//!
//! **Model.** A node's steady-state temperature with a set of workloads is
//! `T = T_ambient + R_th · (P_base + Σ P_workload)`. A workload fits when, with
//! it, `T` stays `place_margin_c` below the node's throttle threshold, the board's
//! power stays inside its supply budget and the CPU demand inside its capacity.
//! When a node's measured temperature (`temp_now`) is above what the model
//! predicts for its current placements, the difference is added to every
//! prediction on it: the thermometer wins over an optimistic model.
//!
//! **Hysteresis.** A placed workload stays as long as `T` stays below the
//! threshold minus the smaller `evict_margin_c`; only then is it evicted (lowest
//! priority first) and placed elsewhere with the full placement margin. A device
//! therefore has to lose `place_margin_c − evict_margin_c` °C of headroom before
//! anything moves, and a moved workload does not return until its old device
//! could take it with the full margin: nothing ping-pongs. The scheduler never
//! moves a placement that still fits (that is the optimizer's job, as a
//! recommendation), so scheduling again on unchanged input makes no change.
//!
//! Higher priorities are placed first; there is no preemption of placed
//! lower-priority workloads by pending higher-priority ones.
//!
//! ```
//! use wrale_core::fleet::scheduler::{schedule, Node, ScheduleInput, SchedulerConfig, Workload, Action};
//! use wrale_core::model::{DeviceId, Location};
//! use wrale_core::units::{Celsius, KelvinPerWatt, Watts};
//! use wrale_core::BoardModel;
//!
//! let node = |id: &str, ambient: f64| Node::new(
//!     DeviceId::new(id).unwrap(), BoardModel::Pi4B, Location::default(),
//!     Celsius(ambient), KelvinPerWatt(5.0), Watts(2.7), Celsius(80.0), Watts(12.0));
//! let input = ScheduleInput {
//!     nodes: vec![node("pi-a", 35.0), node("pi-b", 22.0)],
//!     workloads: vec![Workload::new("cam", 50.0, Watts(2.0))],
//!     placements: vec![],
//! };
//! let plan = schedule(&input, &SchedulerConfig::default());
//! // The cooler device wins; the decision says why, and why not the other.
//! assert!(matches!(&plan.decisions[0].action, Action::Place { device } if device.as_str() == "pi-b"));
//! assert_eq!(plan.decisions[0].candidates.len(), 2);
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::board::{BoardModel, BoardProfile};
use crate::fleet::analyzer::DeviceAnalysis;
use crate::model::{DeviceId, Location};
use crate::units::{Celsius, KelvinPerWatt, Watts};

/// A device as the scheduler sees it: identity, constraints-relevant facts and
/// its physical figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The device.
    pub device: DeviceId,
    /// Its model.
    pub model: BoardModel,
    /// Where it is (rack spread).
    #[serde(default)]
    pub location: Location,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Connected and able to run workloads (offline, cordoned or draining: false).
    #[serde(default = "yes")]
    pub schedulable: bool,
    /// Ambient temperature around it.
    #[serde(rename = "ambient_c")]
    pub ambient: Celsius,
    /// Its thermal resistance (measured by the analyzer, or the profile's).
    #[serde(rename = "r_th_k_per_w")]
    pub r_th: KelvinPerWatt,
    /// Power it draws without any scheduled workload.
    #[serde(rename = "base_power_w")]
    pub base_power: Watts,
    /// Temperature it must stay below (its throttle threshold).
    #[serde(rename = "temp_limit_c")]
    pub temp_limit: Celsius,
    /// Most power the whole board may draw from its supply.
    #[serde(rename = "power_budget_w")]
    pub power_budget: Watts,
    /// CPU capacity in percent of the whole board (100).
    #[serde(default = "hundred", rename = "cpu_capacity_pct")]
    pub cpu_capacity: f64,
    /// Measured temperature now, with the current placements running. When it is
    /// above what the model predicts for those placements (a transient, or a
    /// stale `r_th`), the difference is added to every prediction on this node,
    /// so the scheduler never trusts the model over the thermometer.
    #[serde(
        default,
        rename = "temp_now_c",
        skip_serializing_if = "Option::is_none"
    )]
    pub temp_now: Option<Celsius>,
}

fn yes() -> bool {
    true
}

fn hundred() -> f64 {
    100.0
}

impl Node {
    /// A schedulable node with no labels and full CPU capacity.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        device: DeviceId,
        model: BoardModel,
        location: Location,
        ambient: Celsius,
        r_th: KelvinPerWatt,
        base_power: Watts,
        temp_limit: Celsius,
        power_budget: Watts,
    ) -> Self {
        Self {
            device,
            model,
            location,
            labels: BTreeMap::new(),
            schedulable: true,
            ambient,
            r_th,
            base_power,
            temp_limit,
            power_budget,
            cpu_capacity: 100.0,
            temp_now: None,
        }
    }

    /// A node from the analyzer's view of a device: measured ambient and thermal
    /// resistance, the profile's idle power as base, its throttle threshold as
    /// limit, 80 % of the PSU rating (at nominal voltage) as power budget. `None`
    /// when the analyzer had no thermal headroom figures for it.
    pub fn from_analysis(a: &DeviceAnalysis, profile: &BoardProfile) -> Option<Node> {
        let h = a.headroom.as_ref()?;
        Some(Node {
            device: a.device.clone(),
            model: a.model,
            location: a.location.clone(),
            labels: BTreeMap::new(),
            schedulable: true,
            ambient: h.ambient,
            r_th: h.r_th,
            base_power: profile.power.idle_w,
            temp_limit: h.throttle,
            power_budget: profile.power.nominal_v * profile.power.psu_rating_a * 0.8,
            cpu_capacity: 100.0,
            temp_now: Some(h.temp),
        })
    }

    /// Steady-state temperature with `extra` watts of workloads.
    pub fn predicted_temp(&self, extra: Watts) -> Celsius {
        self.ambient + (self.base_power + extra) * self.r_th
    }

    /// Watts of workloads the node can take while staying `margin` below its limit
    /// and inside its power budget (may be negative).
    pub fn capacity_w(&self, margin: Celsius) -> f64 {
        let thermal = if self.r_th.get() > 0.0 {
            (self.temp_limit.get() - margin.get() - self.ambient.get()) / self.r_th.get()
                - self.base_power.get()
        } else {
            f64::INFINITY
        };
        thermal.min(self.power_budget.get() - self.base_power.get())
    }

    fn rack_key(&self) -> String {
        match &self.location.rack {
            Some(r) => format!("{}/{}", self.location.site.as_deref().unwrap_or("-"), r),
            None => format!("device:{}", self.device),
        }
    }
}

/// Where a workload may run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Constraints {
    /// Labels the device must carry with these values.
    pub labels: BTreeMap<String, String>,
    /// Models allowed (empty: any).
    pub models: Vec<BoardModel>,
    /// Workloads that may not share a device with this one (symmetric).
    pub anti_affinity: Vec<String>,
    /// Spread replicas across racks: at most ⌈replicas / eligible racks⌉ per rack.
    pub spread_racks: bool,
}

/// A workload declared at fleet level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Unique name.
    pub name: String,
    /// The command or systemd unit it runs (opaque here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// CPU demand in percent of a board.
    #[serde(rename = "cpu_pct")]
    pub cpu: f64,
    /// Power it adds to a board.
    #[serde(rename = "power_w")]
    pub power: Watts,
    /// How many replicas (on different devices).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Higher is placed first and evicted last.
    #[serde(default)]
    pub priority: i32,
    /// Constraints.
    #[serde(default)]
    pub constraints: Constraints,
}

fn one() -> u32 {
    1
}

impl Workload {
    /// One replica, priority 0, no constraints.
    pub fn new(name: impl Into<String>, cpu_pct: f64, power: Watts) -> Self {
        Self {
            name: name.into(),
            command: None,
            cpu: cpu_pct,
            power,
            replicas: 1,
            priority: 0,
            constraints: Constraints::default(),
        }
    }
}

/// One replica of a workload on one device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// Workload name.
    pub workload: String,
    /// Replica index (0-based).
    pub replica: u32,
    /// Device.
    pub device: DeviceId,
}

/// Scheduler settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// A new placement keeps the node's steady state this far below its limit.
    pub place_margin_c: f64,
    /// A placement is evicted only when the node's steady state comes within this
    /// of its limit (smaller than `place_margin_c`: the hysteresis band).
    pub evict_margin_c: f64,
    /// Candidates listed per decision (best feasible first, then rejected ones);
    /// every rejection is still counted by reason.
    pub explain_limit: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            place_margin_c: 5.0,
            evict_margin_c: 1.0,
            explain_limit: 10,
        }
    }
}

/// Everything one scheduling pass needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ScheduleInput {
    /// The devices.
    pub nodes: Vec<Node>,
    /// The declared workloads.
    pub workloads: Vec<Workload>,
    /// Where replicas run now.
    pub placements: Vec<Placement>,
}

/// Why a device cannot take a replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// Offline, cordoned or draining.
    Unschedulable,
    /// Its model is not among the allowed ones.
    Model {
        /// The device's model.
        model: BoardModel,
    },
    /// A required label is missing or different.
    Label {
        /// Label key.
        key: String,
        /// Required value.
        want: String,
        /// The device's value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        have: Option<String>,
    },
    /// Another replica of the same workload runs there.
    SameWorkload,
    /// An anti-affine workload runs there.
    AntiAffinity {
        /// The other workload.
        with: String,
    },
    /// The rack already holds its share of replicas.
    RackSpread {
        /// Rack.
        rack: String,
        /// Replicas there.
        count: u32,
        /// Allowed per rack.
        max: u32,
    },
    /// Not enough CPU.
    Cpu {
        /// Demand (%).
        need_pct: f64,
        /// Free (%).
        free_pct: f64,
    },
    /// Not enough thermal or supply headroom.
    Headroom {
        /// Demand (W).
        need_w: f64,
        /// What the node can still take (W).
        free_w: f64,
        /// Steady-state temperature it would reach.
        predicted_c: f64,
        /// Its limit minus the margin that applies.
        allowed_c: f64,
        /// Whether the supply budget (not temperature) is the binding limit.
        supply_bound: bool,
    },
}

impl Reason {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Unschedulable => "unschedulable",
            Reason::Model { .. } => "model",
            Reason::Label { .. } => "label",
            Reason::SameWorkload => "same_workload",
            Reason::AntiAffinity { .. } => "anti_affinity",
            Reason::RackSpread { .. } => "rack_spread",
            Reason::Cpu { .. } => "cpu",
            Reason::Headroom { .. } => "headroom",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unschedulable => f.write_str("device is offline or cordoned"),
            Reason::Model { model } => write!(f, "model {model} not allowed"),
            Reason::Label { key, want, have } => match have {
                Some(h) => write!(f, "label {key}={h}, need {key}={want}"),
                None => write!(f, "label {key} missing, need {key}={want}"),
            },
            Reason::SameWorkload => f.write_str("another replica runs there"),
            Reason::AntiAffinity { with } => write!(f, "anti-affinity with {with}"),
            Reason::RackSpread { rack, count, max } => {
                write!(f, "rack {rack} has {count} replicas (max {max})")
            }
            Reason::Cpu { need_pct, free_pct } => {
                write!(f, "needs {need_pct:.0} % CPU, {free_pct:.0} % free")
            }
            Reason::Headroom {
                need_w,
                free_w,
                predicted_c,
                allowed_c,
                supply_bound,
            } => {
                if *supply_bound {
                    write!(f, "needs {need_w:.2} W, supply budget leaves {free_w:.2} W")
                } else {
                    write!(
                        f,
                        "needs {need_w:.2} W, thermal headroom {free_w:.2} W (would reach {predicted_c:.1} °C, allowed {allowed_c:.1} °C)"
                    )
                }
            }
        }
    }
}

/// One candidate device considered for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The device.
    pub device: DeviceId,
    /// Whether it could take the replica.
    pub feasible: bool,
    /// Steady-state temperature it would reach with the replica.
    pub predicted_c: f64,
    /// Why not (empty when feasible).
    pub reasons: Vec<Reason>,
}

/// What a decision does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Start the replica on a device.
    Place {
        /// Device.
        device: DeviceId,
    },
    /// Stop it on one device and start it on another.
    Move {
        /// From.
        from: DeviceId,
        /// To.
        to: DeviceId,
    },
    /// Stop it; no device can take it now (it stays pending).
    Evict {
        /// From.
        from: DeviceId,
    },
    /// Stop it: the workload or the replica is no longer declared.
    Stop {
        /// From.
        from: DeviceId,
    },
    /// It stays pending: no device can take it.
    Unplaceable,
}

/// One explained scheduling decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Workload.
    pub workload: String,
    /// Replica.
    pub replica: u32,
    /// What happens.
    pub action: Action,
    /// Why (eviction cause, or why the chosen device).
    pub reason: String,
    /// The chosen device first, then the best alternatives, then rejected devices
    /// with their reasons (at most `explain_limit` of each).
    pub candidates: Vec<Candidate>,
    /// How many devices were rejected for each reason code.
    pub rejected: BTreeMap<String, usize>,
}

/// The result of a scheduling pass.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SchedulePlan {
    /// Every placement after the pass, sorted.
    pub placements: Vec<Placement>,
    /// One decision per change and per replica left pending.
    pub decisions: Vec<Decision>,
}

impl SchedulePlan {
    /// Decisions that change something on a device (place, move, evict, stop).
    pub fn changes(&self) -> impl Iterator<Item = &Decision> {
        self.decisions
            .iter()
            .filter(|d| !matches!(d.action, Action::Unplaceable))
    }
}

/// Mutable per-node state during a pass.
#[derive(Debug, Clone, Default)]
struct Load {
    power: f64,
    cpu: f64,
    workloads: Vec<usize>,
}

/// Per-node figures the placement scan reads for every replica, in flat arrays
/// so a scan over 10,000 nodes stays in cache instead of walking `Node`s.
/// Fixed for a pass once the measurement bias is known.
struct Hot {
    /// Watts of workloads the node can take at the margin in use.
    cap: Vec<f64>,
    ambient: Vec<f64>,
    base: Vec<f64>,
    r_th: Vec<f64>,
    cpu_cap: Vec<f64>,
}

/// The placement-independent part of a workload's constraints: models, labels.
type Signature<'a> = (Vec<BoardModel>, Vec<(&'a str, &'a str)>);

struct Pass<'a> {
    nodes: &'a [Node],
    workloads: &'a [Workload],
    racks: Vec<usize>,
    rack_names: Vec<String>,
    load: Vec<Load>,
    /// (workload, rack) -> replicas there.
    per_rack: HashMap<(usize, usize), u32>,
    /// Per workload: max replicas per rack (u32::MAX when not spread).
    max_per_rack: Vec<u32>,
    anti: Vec<BTreeSet<usize>>,
    /// Per node: how much hotter it measured than the model predicts (>= 0).
    bias: Vec<f64>,
    /// Per workload: index into `static_bits` (workloads with the same models
    /// and labels share one row).
    sig: Vec<usize>,
    /// Per constraint signature, per node: the bits of the checks that do not
    /// depend on placements (unschedulable, model, label; see [`REASON_CODES`]).
    static_bits: Vec<Vec<u8>>,
}

impl<'a> Pass<'a> {
    fn new(nodes: &'a [Node], workloads: &'a [Workload]) -> Self {
        let mut rack_ids: BTreeMap<String, usize> = BTreeMap::new();
        let mut racks = Vec::with_capacity(nodes.len());
        for n in nodes {
            let k = n.rack_key();
            let next = rack_ids.len();
            racks.push(*rack_ids.entry(k).or_insert(next));
        }
        let mut rack_names = vec![String::new(); rack_ids.len()];
        for (k, v) in rack_ids {
            rack_names[v] = k;
        }
        let by_name: HashMap<&str, usize> = workloads
            .iter()
            .enumerate()
            .map(|(i, w)| (w.name.as_str(), i))
            .collect();
        let mut anti = vec![BTreeSet::new(); workloads.len()];
        for (i, w) in workloads.iter().enumerate() {
            for other in &w.constraints.anti_affinity {
                if let Some(&j) = by_name.get(other.as_str()) {
                    anti[i].insert(j);
                    anti[j].insert(i);
                }
            }
        }
        // The placement-independent checks, once per distinct (models, labels):
        // fleets declare many workloads but few constraint shapes.
        let mut sig_ix: HashMap<Signature<'_>, usize> = HashMap::new();
        let mut static_bits: Vec<Vec<u8>> = Vec::new();
        let sig = workloads
            .iter()
            .map(|w| {
                let mut models = w.constraints.models.clone();
                models.sort();
                models.dedup();
                let labels = w
                    .constraints
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                *sig_ix.entry((models, labels)).or_insert_with(|| {
                    static_bits.push(nodes.iter().map(|n| static_mask(w, n)).collect());
                    static_bits.len() - 1
                })
            })
            .collect();
        let mut p = Pass {
            nodes,
            workloads,
            racks,
            rack_names,
            load: vec![Load::default(); nodes.len()],
            per_rack: HashMap::new(),
            max_per_rack: Vec::new(),
            anti,
            bias: vec![0.0; nodes.len()],
            sig,
            static_bits,
        };
        p.max_per_rack = workloads
            .iter()
            .enumerate()
            .map(|(wi, w)| {
                if !w.constraints.spread_racks {
                    return u32::MAX;
                }
                let bits = &p.static_bits[p.sig[wi]];
                let eligible: BTreeSet<usize> = (0..nodes.len())
                    .filter(|&n| bits[n] == 0)
                    .map(|n| p.racks[n])
                    .collect();
                w.replicas.div_ceil(eligible.len().max(1) as u32)
            })
            .collect();
        p
    }

    /// Constraints that do not depend on what else runs there.
    fn static_ok(&self, w: &Workload, n: usize) -> Vec<Reason> {
        let node = &self.nodes[n];
        let mut r = Vec::new();
        if !node.schedulable {
            r.push(Reason::Unschedulable);
        }
        if !w.constraints.models.is_empty() && !w.constraints.models.contains(&node.model) {
            r.push(Reason::Model { model: node.model });
        }
        for (k, v) in &w.constraints.labels {
            let have = node.labels.get(k);
            if have != Some(v) {
                r.push(Reason::Label {
                    key: k.clone(),
                    want: v.clone(),
                    have: have.cloned(),
                });
            }
        }
        r
    }

    /// Everything that stops workload `wi` from running on node `n` given the
    /// current loads; `margin` is the placement or eviction margin. `ignore_self`
    /// checks a replica already counted in the node's load.
    fn reasons(&self, wi: usize, n: usize, margin: f64, ignore_self: bool) -> (Vec<Reason>, f64) {
        let w = &self.workloads[wi];
        let node = &self.nodes[n];
        let l = &self.load[n];
        let mut r = self.static_ok(w, n);
        let (extra_p, extra_c) = if ignore_self {
            (0.0, 0.0)
        } else {
            (w.power.get(), w.cpu)
        };
        if !ignore_self {
            if l.workloads.contains(&wi) {
                r.push(Reason::SameWorkload);
            }
            let count = self
                .per_rack
                .get(&(wi, self.racks[n]))
                .copied()
                .unwrap_or(0);
            if count >= self.max_per_rack[wi] {
                r.push(Reason::RackSpread {
                    rack: self.rack_names[self.racks[n]].clone(),
                    count,
                    max: self.max_per_rack[wi],
                });
            }
        }
        for &other in &l.workloads {
            if other != wi && self.anti[wi].contains(&other) {
                r.push(Reason::AntiAffinity {
                    with: self.workloads[other].name.clone(),
                });
            }
        }
        let free_cpu = node.cpu_capacity - l.cpu;
        if extra_c > free_cpu + 1e-9 || (ignore_self && free_cpu < -1e-9) {
            r.push(Reason::Cpu {
                need_pct: w.cpu,
                free_pct: free_cpu + if ignore_self { w.cpu } else { 0.0 },
            });
        }
        let cap = self.capacity(n, margin);
        let free_w = cap - l.power;
        let predicted = self.predicted(n, l.power + extra_p);
        if extra_p > free_w + 1e-9 || (ignore_self && free_w < -1e-9) {
            let supply_free = node.power_budget.get() - node.base_power.get() - l.power;
            r.push(Reason::Headroom {
                need_w: w.power.get(),
                free_w: free_w + if ignore_self { w.power.get() } else { 0.0 },
                predicted_c: predicted,
                allowed_c: node.temp_limit.get() - margin,
                supply_bound: supply_free <= free_w + 1e-9,
            });
        }
        (r, predicted)
    }

    /// The per-node figures the placement scan reads, packed (see [`Hot`]).
    fn hot(&self, margin: f64) -> Hot {
        Hot {
            cap: (0..self.nodes.len())
                .map(|n| self.capacity(n, margin))
                .collect(),
            ambient: self.nodes.iter().map(|n| n.ambient.get()).collect(),
            base: self.nodes.iter().map(|n| n.base_power.get()).collect(),
            r_th: self.nodes.iter().map(|n| n.r_th.get()).collect(),
            cpu_cap: self.nodes.iter().map(|n| n.cpu_capacity).collect(),
        }
    }

    /// Replicas of workload `wi` per rack (dense, by rack index).
    fn rack_counts(&self, wi: usize) -> Vec<u32> {
        (0..self.rack_names.len())
            .map(|r| self.per_rack.get(&(wi, r)).copied().unwrap_or(0))
            .collect()
    }

    /// The reason codes (as bits, in [`REASON_CODES`] order) that stop workload
    /// `wi` from being placed on node `n`, without allocating; and the predicted
    /// temperature. `hot` holds the capacities at the margin in use and
    /// `in_rack` the workload's replicas per rack (when it is spread). Must agree
    /// with [`Pass::reasons`] (`ignore_self = false`).
    fn mask(&self, wi: usize, n: usize, hot: &Hot, in_rack: &[u32]) -> (u8, f64) {
        let w = &self.workloads[wi];
        let l = &self.load[n];
        let mut m = self.static_bits[self.sig[wi]][n];
        if !l.workloads.is_empty() {
            if l.workloads.contains(&wi) {
                m |= 1 << 3;
            }
            if l.workloads
                .iter()
                .any(|&o| o != wi && self.anti[wi].contains(&o))
            {
                m |= 1 << 4;
            }
        }
        if !in_rack.is_empty() && in_rack[self.racks[n]] >= self.max_per_rack[wi] {
            m |= 1 << 5;
        }
        if w.cpu > hot.cpu_cap[n] - l.cpu + 1e-9 {
            m |= 1 << 6;
        }
        // The same arithmetic as `Node::predicted_temp` + bias, from packed arrays.
        let predicted =
            hot.ambient[n] + (hot.base[n] + (l.power + w.power.get())) * hot.r_th[n] + self.bias[n];
        if w.power.get() > hot.cap[n] - l.power + 1e-9 {
            m |= 1 << 7;
        }
        (m, predicted)
    }

    /// Watts of workloads node `n` can take with `margin`, measurement bias included.
    fn capacity(&self, n: usize, margin: f64) -> f64 {
        self.nodes[n].capacity_w(Celsius(margin + self.bias[n]))
    }

    /// Steady-state temperature of node `n` with `load` watts of workloads.
    fn predicted(&self, n: usize, load: f64) -> f64 {
        self.nodes[n].predicted_temp(Watts(load)).get() + self.bias[n]
    }

    fn add(&mut self, wi: usize, n: usize) {
        let w = &self.workloads[wi];
        let l = &mut self.load[n];
        l.power += w.power.get();
        l.cpu += w.cpu;
        l.workloads.push(wi);
        *self.per_rack.entry((wi, self.racks[n])).or_insert(0) += 1;
    }

    fn remove(&mut self, wi: usize, n: usize) {
        let w = &self.workloads[wi];
        let l = &mut self.load[n];
        l.power -= w.power.get();
        l.cpu -= w.cpu;
        if let Some(pos) = l.workloads.iter().position(|&x| x == wi) {
            l.workloads.remove(pos);
        }
        if let Some(c) = self.per_rack.get_mut(&(wi, self.racks[n])) {
            *c = c.saturating_sub(1);
        }
    }
}

/// One scheduling pass. Deterministic: the same input gives the same plan.
pub fn schedule(input: &ScheduleInput, cfg: &SchedulerConfig) -> SchedulePlan {
    let place_margin = cfg.place_margin_c.max(cfg.evict_margin_c);
    let evict_margin = cfg.evict_margin_c;

    // Nodes and workloads in a canonical order (by id / name), duplicates dropped.
    let mut nodes = input.nodes.clone();
    nodes.sort_by(|a, b| a.device.cmp(&b.device));
    nodes.dedup_by(|a, b| a.device == b.device);
    let mut workloads = input.workloads.clone();
    workloads.sort_by(|a, b| a.name.cmp(&b.name));
    workloads.dedup_by(|a, b| a.name == b.name);
    let node_ix: HashMap<&DeviceId, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (&n.device, i))
        .collect();
    let wl_ix: HashMap<&str, usize> = workloads
        .iter()
        .enumerate()
        .map(|(i, w)| (w.name.as_str(), i))
        .collect();
    let mut pass = Pass::new(&nodes, &workloads);
    let mut decisions = Vec::new();

    // 1. Current placements: drop what is no longer declared, what sits on an
    //    unknown device, and duplicates.
    let mut current = input.placements.clone();
    current.sort();
    current.dedup();
    let mut seen: BTreeSet<(usize, u32)> = BTreeSet::new();
    let mut kept: Vec<(usize, u32, usize)> = Vec::new(); // (workload, replica, node)
    let mut evicted: Vec<(usize, u32, usize, String)> = Vec::new();
    for p in &current {
        let Some(&wi) = wl_ix.get(p.workload.as_str()) else {
            decisions.push(stop(p, "workload no longer declared"));
            continue;
        };
        if p.replica >= workloads[wi].replicas {
            decisions.push(stop(p, "replica no longer declared"));
            continue;
        }
        if !seen.insert((wi, p.replica)) {
            decisions.push(stop(p, "duplicate placement of the same replica"));
            continue;
        }
        match node_ix.get(&p.device) {
            Some(&n) => kept.push((wi, p.replica, n)),
            None => {
                // Unknown device: the replica is pending again, nothing to stop.
                seen.remove(&(wi, p.replica));
            }
        }
    }

    // 2. Placements whose device cannot hold them any more: constraints first,
    //    then capacity with the eviction margin, lowest priority evicted first.
    //    Kept in order of priority (high first) so a rack's spread share and
    //    anti-affinity go to the more important workload.
    // The thermometer's correction: measured minus predicted with the current
    // (known, declared) placements.
    let mut placed_w = vec![0.0; nodes.len()];
    for &(wi, _, n) in &kept {
        placed_w[n] += workloads[wi].power.get();
    }
    for (n, node) in nodes.iter().enumerate() {
        if let Some(t) = node.temp_now.filter(|t| t.is_finite()) {
            pass.bias[n] = (t.get() - node.predicted_temp(Watts(placed_w[n])).get()).max(0.0);
        }
    }
    kept.sort_by(|a, b| {
        workloads[b.0]
            .priority
            .cmp(&workloads[a.0].priority)
            .then(a.0.cmp(&b.0))
            .then(a.1.cmp(&b.1))
    });
    let mut accepted: Vec<(usize, u32, usize)> = Vec::new();
    for (wi, r, n) in kept {
        // Structural checks (as if placing, without the capacity part).
        let (reasons, _) = pass.reasons(wi, n, f64::NEG_INFINITY, false);
        let structural: Vec<&Reason> = reasons
            .iter()
            .filter(|x| !matches!(x, Reason::Headroom { .. } | Reason::Cpu { .. }))
            .collect();
        if let Some(first) = structural.first() {
            evicted.push((wi, r, n, first.to_string()));
        } else {
            pass.add(wi, n);
            accepted.push((wi, r, n));
        }
    }
    for (n, node) in nodes.iter().enumerate() {
        loop {
            let over_power = pass.load[n].power > pass.capacity(n, evict_margin) + 1e-9;
            let over_cpu = pass.load[n].cpu > node.cpu_capacity + 1e-9;
            if !(over_power || over_cpu) {
                break;
            }
            // Lowest priority, then largest power, then name/replica (last first).
            let Some(pos) = accepted
                .iter()
                .enumerate()
                .filter(|(_, a)| a.2 == n)
                .min_by(|(_, a), (_, b)| {
                    let (wa, wb) = (&workloads[a.0], &workloads[b.0]);
                    wa.priority
                        .cmp(&wb.priority)
                        .then(wb.power.get().total_cmp(&wa.power.get()))
                        .then(b.0.cmp(&a.0))
                        .then(b.1.cmp(&a.1))
                })
                .map(|(i, _)| i)
            else {
                break;
            };
            let (wi, r, _) = accepted.remove(pos);
            let predicted = pass.predicted(n, pass.load[n].power);
            let why = if over_cpu {
                format!(
                    "CPU demand {:.0} % exceeds capacity {:.0} %",
                    pass.load[n].cpu, node.cpu_capacity
                )
            } else {
                format!(
                    "headroom collapsed: steady state {:.1} °C exceeds {:.1} °C (limit {:.1} − eviction margin {:.1}); lowest priority evicted first",
                    predicted,
                    node.temp_limit.get() - evict_margin,
                    node.temp_limit.get(),
                    evict_margin
                )
            };
            pass.remove(wi, n);
            evicted.push((wi, r, n, why));
        }
    }
    let mut placed: BTreeMap<(usize, u32), usize> =
        accepted.iter().map(|&(w, r, n)| ((w, r), n)).collect();
    let evicted_from: BTreeMap<(usize, u32), (usize, String)> = evicted
        .into_iter()
        .map(|(w, r, n, why)| ((w, r), (n, why)))
        .collect();

    // 3. Pending replicas, highest priority first.
    let hot = pass.hot(place_margin);
    let mut order: Vec<usize> = (0..workloads.len()).collect();
    order.sort_by(|&a, &b| {
        workloads[b]
            .priority
            .cmp(&workloads[a].priority)
            .then(a.cmp(&b))
    });
    for wi in order {
        for r in 0..workloads[wi].replicas {
            if placed.contains_key(&(wi, r)) {
                continue;
            }
            let (best, candidates, rejected) =
                choose(&pass, &hot, wi, place_margin, cfg.explain_limit);
            let w = &workloads[wi];
            let prior = evicted_from.get(&(wi, r));
            let (action, reason) = match (best, prior) {
                (Some(n), Some((from, why))) => (
                    Action::Move {
                        from: nodes[*from].device.clone(),
                        to: nodes[n].device.clone(),
                    },
                    format!(
                        "{why}; moved to {} (steady state {:.1} °C with it, the coolest feasible)",
                        nodes[n].device,
                        pass.predicted(n, pass.load[n].power + w.power.get())
                    ),
                ),
                (Some(n), None) => (
                    Action::Place {
                        device: nodes[n].device.clone(),
                    },
                    format!(
                        "steady state {:.1} °C with it (limit {:.1} °C − margin {:.1}), the coolest of {} feasible devices",
                        pass.predicted(n, pass.load[n].power + w.power.get()),
                        nodes[n].temp_limit.get(),
                        place_margin,
                        candidates.iter().filter(|c| c.feasible).count()
                    ),
                ),
                (None, Some((from, why))) => (
                    Action::Evict {
                        from: nodes[*from].device.clone(),
                    },
                    format!("{why}; no other device can take it"),
                ),
                (None, None) => (Action::Unplaceable, "no device can take it".to_string()),
            };
            if let Some(n) = best {
                pass.add(wi, n);
                placed.insert((wi, r), n);
            }
            decisions.push(Decision {
                workload: w.name.clone(),
                replica: r,
                action,
                reason,
                candidates,
                rejected,
            });
        }
    }

    let mut placements: Vec<Placement> = placed
        .into_iter()
        .map(|((w, r), n)| Placement {
            workload: workloads[w].name.clone(),
            replica: r,
            device: nodes[n].device.clone(),
        })
        .collect();
    placements.sort();
    SchedulePlan {
        placements,
        decisions,
    }
}

fn stop(p: &Placement, why: &str) -> Decision {
    Decision {
        workload: p.workload.clone(),
        replica: p.replica,
        action: Action::Stop {
            from: p.device.clone(),
        },
        reason: why.into(),
        candidates: Vec::new(),
        rejected: BTreeMap::new(),
    }
}

/// The bits (in [`REASON_CODES`] order) of the checks of workload `w` on node
/// `n` that do not depend on placements: unschedulable, model, label. Must agree
/// with `Pass::static_ok`.
fn static_mask(w: &Workload, node: &Node) -> u8 {
    let mut m = 0u8;
    if !node.schedulable {
        m |= 1;
    }
    if !w.constraints.models.is_empty() && !w.constraints.models.contains(&node.model) {
        m |= 1 << 1;
    }
    if w.constraints
        .labels
        .iter()
        .any(|(k, v)| node.labels.get(k) != Some(v))
    {
        m |= 1 << 2;
    }
    m
}

/// Reason codes in the bit order of `Pass::mask`.
const REASON_CODES: [&str; 8] = [
    "unschedulable",
    "model",
    "label",
    "same_workload",
    "anti_affinity",
    "rack_spread",
    "cpu",
    "headroom",
];

/// Picks the best feasible node (coolest steady state with the replica, then
/// fewest replicas of the workload in its rack, then device id) and builds the
/// explanation.
fn choose(
    pass: &Pass<'_>,
    hot: &Hot,
    wi: usize,
    margin: f64,
    limit: usize,
) -> (Option<usize>, Vec<Candidate>, BTreeMap<String, usize>) {
    let mut feasible: Vec<(f64, u32, usize)> = Vec::with_capacity(pass.nodes.len());
    let mut rejected: Vec<(usize, f64, Vec<Reason>)> = Vec::new();
    // Rejected nodes per reason mask (one increment per node); per reason
    // code below.
    let mut by_mask = [0usize; 256];
    let spread = pass.max_per_rack[wi] != u32::MAX;
    let in_rack = if spread {
        pass.rack_counts(wi)
    } else {
        Vec::new()
    };
    for n in 0..pass.nodes.len() {
        let (mask, predicted) = pass.mask(wi, n, hot, &in_rack);
        debug_assert_eq!(
            mask == 0,
            pass.reasons(wi, n, margin, false).0.is_empty(),
            "fast and explained checks disagree"
        );
        if mask == 0 {
            let here = if spread { in_rack[pass.racks[n]] } else { 0 };
            feasible.push((predicted, here, n));
        } else {
            by_mask[mask as usize] += 1;
            if rejected.len() < limit {
                rejected.push((n, predicted, pass.reasons(wi, n, margin, false).0));
            }
        }
    }
    let mut counts = [0usize; 8];
    for (mask, n) in by_mask.iter().enumerate().filter(|(_, n)| **n > 0) {
        for (b, c) in counts.iter_mut().enumerate() {
            if mask & (1 << b) != 0 {
                *c += n;
            }
        }
    }
    let counts: BTreeMap<String, usize> = REASON_CODES
        .iter()
        .zip(counts)
        .filter(|(_, c)| *c > 0)
        .map(|(k, c)| (k.to_string(), c))
        .collect();
    let order = |a: &(f64, u32, usize), b: &(f64, u32, usize)| {
        a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
    };
    let keep = limit.max(1);
    if feasible.len() > keep {
        feasible.select_nth_unstable_by(keep - 1, order);
        feasible.truncate(keep);
    }
    feasible.sort_by(order);
    let best = feasible.first().map(|f| f.2);
    let mut candidates: Vec<Candidate> = feasible
        .iter()
        .take(limit.max(1))
        .map(|&(p, _, n)| Candidate {
            device: pass.nodes[n].device.clone(),
            feasible: true,
            predicted_c: p,
            reasons: Vec::new(),
        })
        .collect();
    candidates.extend(rejected.into_iter().map(|(n, p, reasons)| Candidate {
        device: pass.nodes[n].device.clone(),
        feasible: false,
        predicted_c: p,
        reasons,
    }));
    (best, candidates, counts)
}

/// Checks a set of placements against the nodes and workloads: every broken
/// constraint or exceeded capacity (with `margin_c` below the limit), as
/// `(device, reason)`. Empty when the placements are valid. The property tests
/// and fleetd's admission of manual placements use it. Uses the thermal model
/// only (a node's `temp_now` correction belongs to a scheduling pass).
pub fn violations(
    nodes: &[Node],
    workloads: &[Workload],
    placements: &[Placement],
    margin_c: f64,
) -> Vec<(DeviceId, String)> {
    let mut out = Vec::new();
    let node_of: HashMap<&DeviceId, &Node> = nodes.iter().map(|n| (&n.device, n)).collect();
    let wl: HashMap<&str, &Workload> = workloads.iter().map(|w| (w.name.as_str(), w)).collect();
    let mut by_node: BTreeMap<&DeviceId, Vec<&Workload>> = BTreeMap::new();
    let mut per_rack: BTreeMap<(&str, String), u32> = BTreeMap::new();
    for p in placements {
        let (Some(n), Some(w)) = (node_of.get(&p.device), wl.get(p.workload.as_str())) else {
            out.push((
                p.device.clone(),
                format!("unknown device or workload {}", p.workload),
            ));
            continue;
        };
        if !n.schedulable {
            out.push((
                p.device.clone(),
                format!("{} on an unschedulable device", w.name),
            ));
        }
        if !w.constraints.models.is_empty() && !w.constraints.models.contains(&n.model) {
            out.push((p.device.clone(), format!("{} on model {}", w.name, n.model)));
        }
        for (k, v) in &w.constraints.labels {
            if n.labels.get(k) != Some(v) {
                out.push((p.device.clone(), format!("{} needs label {k}={v}", w.name)));
            }
        }
        *per_rack.entry((w.name.as_str(), n.rack_key())).or_insert(0) += 1;
        by_node.entry(&p.device).or_default().push(w);
    }
    for (d, ws) in &by_node {
        let n = node_of[d];
        let power: f64 = ws.iter().map(|w| w.power.get()).sum();
        let cpu: f64 = ws.iter().map(|w| w.cpu).sum();
        if power > n.capacity_w(Celsius(margin_c)) + 1e-9 {
            out.push(((*d).clone(), format!("{power:.2} W exceeds its headroom")));
        }
        if cpu > n.cpu_capacity + 1e-9 {
            out.push(((*d).clone(), format!("{cpu:.0} % CPU exceeds its capacity")));
        }
        for (i, a) in ws.iter().enumerate() {
            for b in &ws[i + 1..] {
                if a.name == b.name {
                    out.push(((*d).clone(), format!("two replicas of {}", a.name)));
                } else if a.constraints.anti_affinity.contains(&b.name)
                    || b.constraints.anti_affinity.contains(&a.name)
                {
                    out.push(((*d).clone(), format!("{} with {}", a.name, b.name)));
                }
            }
        }
    }
    for w in workloads.iter().filter(|w| w.constraints.spread_racks) {
        let eligible: BTreeSet<String> = nodes
            .iter()
            .filter(|n| {
                n.schedulable
                    && (w.constraints.models.is_empty() || w.constraints.models.contains(&n.model))
                    && w.constraints
                        .labels
                        .iter()
                        .all(|(k, v)| n.labels.get(k) == Some(v))
            })
            .map(Node::rack_key)
            .collect();
        let max = w.replicas.div_ceil(eligible.len().max(1) as u32);
        for ((name, rack), c) in &per_rack {
            if *name == w.name && *c > max {
                out.push((
                    DeviceId::new("rack").unwrap_or_else(|_| nodes[0].device.clone()),
                    format!("{} has {c} replicas in rack {rack} (max {max})", w.name),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, ambient: f64) -> Node {
        Node::new(
            DeviceId::new(id).unwrap(),
            BoardModel::Pi4B,
            Location::default(),
            Celsius(ambient),
            KelvinPerWatt(5.0),
            Watts(2.7),
            Celsius(80.0),
            Watts(12.0),
        )
    }

    #[test]
    fn capacity_is_thermal_or_supply_bound() {
        let n = node("a", 22.0);
        // (80 - 5 - 22) / 5 - 2.7 = 7.9 W thermal; supply 12 - 2.7 = 9.3 W.
        assert!((n.capacity_w(Celsius(5.0)) - 7.9).abs() < 1e-9);
        let mut hot = node("b", 22.0);
        hot.r_th = KelvinPerWatt(1.0);
        assert!((hot.capacity_w(Celsius(5.0)) - 9.3).abs() < 1e-9);
    }

    #[test]
    fn evicts_lowest_priority_when_headroom_collapses() {
        let mut hi = Workload::new("hi", 30.0, Watts(2.0));
        hi.priority = 10;
        let lo = Workload::new("lo", 30.0, Watts(2.0));
        let mut input = ScheduleInput {
            nodes: vec![node("a", 22.0), node("b", 60.0)],
            workloads: vec![hi, lo],
            placements: vec![],
        };
        let plan = schedule(&input, &SchedulerConfig::default());
        assert!(plan.placements.iter().all(|p| p.device.as_str() == "a"));
        // a: 50 + 5 * (2.7 + 4) = 83.5 °C > 79 (limit - evict margin): evict "lo".
        input.placements = plan.placements.clone();
        input.nodes[0].ambient = Celsius(50.0);
        input.nodes[1].ambient = Celsius(22.0);
        let plan = schedule(&input, &SchedulerConfig::default());
        let moved: Vec<&Decision> = plan.changes().collect();
        assert_eq!(moved.len(), 1, "{moved:#?}");
        assert_eq!(moved[0].workload, "lo");
        assert!(matches!(&moved[0].action, Action::Move { to, .. } if to.as_str() == "b"));
        assert!(
            moved[0].reason.contains("headroom collapsed"),
            "{}",
            moved[0].reason
        );
    }
}
