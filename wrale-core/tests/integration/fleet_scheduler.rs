//! Scheduler and optimizer: properties (no placement exceeds a device's headroom
//! or breaks a constraint; scheduling converges) and explained decisions.

use proptest::prelude::*;
use std::collections::BTreeMap;

use wrale_core::fleet::optimizer::{
    AutoApply, FanModel, OptimizerInput, OptimizerPolicy, optimize,
};
use wrale_core::fleet::scheduler::{
    Action, Constraints, Node, Placement, Reason, ScheduleInput, SchedulerConfig, Workload,
    schedule, violations,
};
use wrale_core::model::{DeviceId, FanProfileName, Location};
use wrale_core::units::{Celsius, KelvinPerWatt, Watts};
use wrale_core::{BoardModel, BoardProfile};

#[allow(clippy::too_many_arguments)]
fn node(
    i: usize,
    model: BoardModel,
    rack: usize,
    ambient: f64,
    r: f64,
    base: f64,
    limit: f64,
    budget: f64,
    role: &str,
) -> Node {
    let mut n = Node::new(
        DeviceId::new(format!("n-{i:02}")).unwrap(),
        model,
        Location {
            site: Some("lab".into()),
            rack: Some(format!("r{rack}")),
            ..Location::default()
        },
        Celsius(ambient),
        KelvinPerWatt(r),
        Watts(base),
        Celsius(limit),
        Watts(budget),
    );
    n.labels.insert("role".into(), role.into());
    n
}

prop_compose! {
    fn arb_node(i: usize)(
        pi5 in any::<bool>(), rack in 0usize..4, ambient in 15.0f64..55.0, r in 3.0f64..12.0,
        base in 1.0f64..4.0, limit in 70.0f64..85.0, budget in 6.0f64..15.0, role in prop_oneof![Just("a"), Just("b")],
        schedulable in prop::bool::weighted(0.9),
    ) -> Node {
        let mut n = node(i, if pi5 { BoardModel::Pi5 } else { BoardModel::Pi4B }, rack, ambient, r, base, limit, budget, role);
        n.schedulable = schedulable;
        n
    }
}

fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
    (1usize..14).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
}

prop_compose! {
    fn arb_workload(i: usize)(
        cpu in 5.0f64..60.0, power in 0.2f64..4.0, replicas in 1u32..4, priority in -2i32..3,
        only_pi5 in prop::bool::weighted(0.2), role in prop_oneof![Just(None), Just(Some("a"))],
        anti in prop::option::weighted(0.3, 0usize..8), spread in any::<bool>(),
    ) -> Workload {
        let mut w = Workload::new(format!("w{i}"), cpu, Watts(power));
        w.replicas = replicas;
        w.priority = priority;
        w.constraints = Constraints {
            labels: role.map(|r| BTreeMap::from([("role".to_string(), r.to_string())])).unwrap_or_default(),
            models: if only_pi5 { vec![BoardModel::Pi5] } else { vec![] },
            anti_affinity: anti.filter(|a| *a != i).map(|a| vec![format!("w{a}")]).unwrap_or_default(),
            spread_racks: spread,
        };
        w
    }
}

fn arb_workloads() -> impl Strategy<Value = Vec<Workload>> {
    (1usize..8).prop_flat_map(|n| (0..n).map(arb_workload).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// From scratch: every placement fits with the placement margin and keeps
    /// every constraint; scheduling the result again changes nothing.
    #[test]
    fn placements_respect_headroom_and_constraints_and_converge(nodes in arb_nodes(), workloads in arb_workloads()) {
        let cfg = SchedulerConfig::default();
        let input = ScheduleInput { nodes: nodes.clone(), workloads: workloads.clone(), placements: vec![] };
        let plan = schedule(&input, &cfg);
        let v = violations(&nodes, &workloads, &plan.placements, cfg.place_margin_c);
        prop_assert!(v.is_empty(), "{:?}", v);
        // Deterministic.
        prop_assert_eq!(&schedule(&input, &cfg), &plan);
        let again = schedule(&ScheduleInput { placements: plan.placements.clone(), ..input }, &cfg);
        prop_assert_eq!(again.changes().count(), 0, "{:#?}", again.changes().collect::<Vec<_>>());
        prop_assert_eq!(again.placements, plan.placements);
    }

    /// After the physics change (ambient shifts, devices going offline), the
    /// rescheduled placements still fit within the eviction margin and keep every
    /// constraint, and one more pass on the same input moves nothing.
    #[test]
    fn rebalancing_after_change_is_valid_and_converges(
        nodes in arb_nodes(), workloads in arb_workloads(),
        shifts in proptest::collection::vec((-10.0f64..25.0, prop::bool::weighted(0.9)), 14),
    ) {
        let cfg = SchedulerConfig::default();
        let first = schedule(&ScheduleInput { nodes: nodes.clone(), workloads: workloads.clone(), placements: vec![] }, &cfg);
        let mut changed = nodes.clone();
        for (n, (dt, up)) in changed.iter_mut().zip(&shifts) {
            n.ambient = n.ambient + Celsius(*dt);
            n.schedulable &= *up;
        }
        let input = ScheduleInput { nodes: changed.clone(), workloads: workloads.clone(), placements: first.placements };
        let plan = schedule(&input, &cfg);
        let v = violations(&changed, &workloads, &plan.placements, cfg.evict_margin_c);
        prop_assert!(v.is_empty(), "{:?}", v);
        let again = schedule(&ScheduleInput { placements: plan.placements.clone(), ..input }, &cfg);
        prop_assert_eq!(again.changes().count(), 0);
    }

    /// Arbitrary (even invalid) current placements are repaired.
    #[test]
    fn invalid_placements_are_repaired(nodes in arb_nodes(), workloads in arb_workloads(), picks in proptest::collection::vec((0usize..14, 0usize..8, 0u32..5), 0..20)) {
        let placements: Vec<Placement> = picks.iter().map(|(n, w, r)| Placement {
            workload: format!("w{w}"), replica: *r, device: DeviceId::new(format!("n-{:02}", n % 14)).unwrap(),
        }).collect();
        let cfg = SchedulerConfig::default();
        let plan = schedule(&ScheduleInput { nodes: nodes.clone(), workloads: workloads.clone(), placements }, &cfg);
        let v = violations(&nodes, &workloads, &plan.placements, cfg.evict_margin_c);
        prop_assert!(v.is_empty(), "{:?}", v);
    }
}

#[test]
fn decisions_explain_why_and_why_not() {
    let nodes = vec![
        node(0, BoardModel::Pi4B, 0, 22.0, 5.0, 2.7, 80.0, 12.0, "a"),
        node(1, BoardModel::Pi4B, 0, 45.0, 5.0, 2.7, 80.0, 12.0, "a"),
        node(2, BoardModel::Pi4B, 1, 22.0, 5.0, 2.7, 80.0, 12.0, "b"),
        node(3, BoardModel::Pi5, 1, 22.0, 4.2, 2.8, 80.0, 20.0, "a"),
    ];
    let mut w = Workload::new("cam", 40.0, Watts(3.0));
    w.constraints.models = vec![BoardModel::Pi4B];
    w.constraints.labels.insert("role".into(), "a".into());
    let plan = schedule(
        &ScheduleInput {
            nodes,
            workloads: vec![w],
            placements: vec![],
        },
        &SchedulerConfig::default(),
    );
    let d = &plan.decisions[0];
    assert_eq!(
        d.action,
        Action::Place {
            device: DeviceId::new("n-00").unwrap()
        }
    );
    assert!(d.reason.contains("coolest"), "{}", d.reason);
    let why_not = |dev: &str| {
        d.candidates
            .iter()
            .find(|c| c.device.as_str() == dev)
            .unwrap()
            .reasons
            .clone()
    };
    // n-01: 45 + 5 * 5.7 = 73.5 °C, under 75 (limit - margin): feasible but hotter, an alternative.
    assert!(why_not("n-01").is_empty());
    assert!(matches!(why_not("n-02")[0], Reason::Label { .. }));
    assert!(matches!(
        why_not("n-03")[0],
        Reason::Model {
            model: BoardModel::Pi5
        }
    ));
    assert_eq!(d.rejected.get("label"), Some(&1));
    assert_eq!(d.rejected.get("model"), Some(&1));
    let text = why_not("n-02")[0].to_string();
    assert_eq!(text, "label role=b, need role=a");
}

#[test]
fn optimizer_recommends_only_and_marks_auto_apply() {
    let pi4 = BoardProfile::builtin(BoardModel::Pi4B);
    let nodes = vec![
        node(0, BoardModel::Pi4B, 0, 38.0, 5.0, 2.7, 80.0, 12.0, "a"),
        node(1, BoardModel::Pi4B, 1, 22.0, 5.0, 2.7, 80.0, 12.0, "a"),
        node(2, BoardModel::Pi4B, 1, 22.0, 5.0, 2.7, 80.0, 12.0, "a"),
    ];
    let workloads = vec![
        Workload::new("big", 50.0, Watts(3.0)),
        Workload::new("small", 10.0, Watts(0.5)),
    ];
    let placements = vec![
        Placement {
            workload: "big".into(),
            replica: 0,
            device: DeviceId::new("n-00").unwrap(),
        },
        Placement {
            workload: "small".into(),
            replica: 0,
            device: DeviceId::new("n-00").unwrap(),
        },
    ];
    let mut fans = BTreeMap::new();
    for n in &nodes {
        fans.insert(
            n.device.clone(),
            FanModel::from_profile(&pi4, FanProfileName::Cool),
        );
    }
    let input = OptimizerInput {
        nodes,
        workloads,
        placements,
        fans,
    };
    let policy = OptimizerPolicy {
        auto_apply: AutoApply::FanProfiles,
        ..OptimizerPolicy::default()
    };
    let plan = optimize(&input, &policy, &SchedulerConfig::default());
    // The idle devices can run quieter and save fan power.
    assert!(plan.fan_profiles.iter().any(|f| f.device.as_str() == "n-01"
        && f.to < FanProfileName::Cool
        && f.power_after_w < f.power_before_w));
    assert!(
        plan.fan_profiles
            .iter()
            .all(|f| f.auto_apply && f.temp_after_c <= 70.0 + 1e-9)
    );
    // The hot device sheds a workload to a cool one; moves stay manual.
    assert!(!plan.moves.is_empty());
    assert!(
        plan.moves
            .iter()
            .all(|m| m.from.as_str() == "n-00" && !m.auto_apply)
    );
    assert!(
        plan.expected.peak_temp_after_c < plan.expected.peak_temp_before_c - 2.0,
        "{:?}",
        plan.expected
    );
    assert_eq!(
        plan.expected
            .peak_device_before
            .as_ref()
            .map(DeviceId::as_str),
        Some("n-00")
    );
    assert_eq!(plan.auto_apply, AutoApply::FanProfiles);
    // Deterministic.
    assert_eq!(optimize(&input, &policy, &SchedulerConfig::default()), plan);
}
