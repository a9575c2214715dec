//! Rollout state machine: gates, operations, persistence, and the property that
//! a rollout never advances past a failed gate.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

use wrale_core::Timestamp;
use wrale_core::fleet::rollout::{
    Applied, Canary, Gate, Observation, Operation, RolloutAction, RolloutSpec, RolloutState,
    RolloutStatus, RolloutTarget, WavePlan, WaveStatus,
};
use wrale_core::model::{DeviceId, Location};

fn targets(n: usize) -> Vec<RolloutTarget> {
    (0..n)
        .map(|i| RolloutTarget {
            device: DeviceId::new(format!("pi-{i:02}")).unwrap(),
            location: Location {
                site: Some("lab".into()),
                rack: Some(format!("r{}", i % 2)),
                ..Location::default()
            },
        })
        .collect()
}

fn spec(n: usize, auto_rollback: bool) -> RolloutSpec {
    let mut s = RolloutSpec::new(
        "r1",
        "fan_profile=quiet",
        targets(n),
        Canary::Devices {
            devices: vec![DeviceId::new("pi-00").unwrap()],
        },
        WavePlan::BySize { size: 3 },
        Duration::from_secs(600),
    );
    s.auto_rollback = auto_rollback;
    s
}

fn healthy(n: usize) -> Vec<Observation> {
    (0..n)
        .map(|i| Observation {
            applied: Applied::Applied,
            health_score: Some(95.0),
            ..Observation::new(DeviceId::new(format!("pi-{i:02}")).unwrap())
        })
        .collect()
}

fn baseline(n: usize) -> BTreeMap<DeviceId, f64> {
    (0..n)
        .map(|i| (DeviceId::new(format!("pi-{i:02}")).unwrap(), 95.0))
        .collect()
}

#[test]
fn healthy_rollout_completes_wave_by_wave() {
    let mut st = RolloutState::plan(spec(7, false), &baseline(7), Timestamp::EPOCH).unwrap();
    assert_eq!(st.waves.len(), 3); // 1 canary + 3 + 3
    let obs = healthy(7);
    let mut t = 0;
    let mut applied = Vec::new();
    while st.status == RolloutStatus::Running && t < 10_000 {
        for a in st.step(&obs, Timestamp::from_secs(t)) {
            if let RolloutAction::ApplyChange { wave, devices } = a {
                applied.push((wave, devices.len(), t));
            }
        }
        t += 60;
    }
    assert_eq!(st.status, RolloutStatus::Completed);
    assert_eq!(
        applied.iter().map(|a| (a.0, a.1)).collect::<Vec<_>>(),
        vec![(0, 1), (1, 3), (2, 3)]
    );
    // Each wave soaked for 10 minutes before the next started.
    assert!(applied.windows(2).all(|w| w[1].2 - w[0].2 >= 600));
    assert_eq!(st.progress().waves_passed, 3);
}

#[test]
fn throttling_canary_pauses_with_rollback_plan_and_resume_restarts_soak() {
    let mut st = RolloutState::plan(spec(7, false), &baseline(7), Timestamp::EPOCH).unwrap();
    let mut obs = healthy(7);
    st.step(&obs, Timestamp::from_secs(0));
    st.step(&obs, Timestamp::from_secs(60));
    obs[0].throttle_events = 2;
    let actions = st.step(&obs, Timestamp::from_secs(120));
    assert_eq!(st.status, RolloutStatus::Paused);
    assert_eq!(st.waves[0].status, WaveStatus::Failed);
    let RolloutAction::Paused { failures, reason } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(failures[0].gate, Gate::Throttled);
    assert!(reason.contains("pi-00"), "{reason}");
    assert_eq!(
        st.rollback_plan.as_ref().unwrap().devices,
        vec![DeviceId::new("pi-00").unwrap()]
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, RolloutAction::RollBack { .. }))
    );
    // Paused: steps do nothing.
    assert!(st.step(&obs, Timestamp::from_secs(5000)).is_empty());
    // Survives a restart.
    let json = serde_json::to_string(&st).unwrap();
    let mut st: RolloutState = serde_json::from_str(&json).unwrap();
    // The operator resumes: the soak restarts against the latest counters.
    let a = st
        .operate(&Operation::Resume, Timestamp::from_secs(6000))
        .unwrap();
    assert!(matches!(a[1], RolloutAction::ApplyChange { wave: 0, .. }));
    assert!(st.step(&obs, Timestamp::from_secs(6300)).is_empty());
    let a = st.step(&obs, Timestamp::from_secs(6600));
    assert!(
        matches!(a[0], RolloutAction::WavePassed { wave: 0 }),
        "{a:?}"
    );
    // Invalid transitions are named.
    let e = st
        .operate(&Operation::Resume, Timestamp::from_secs(6601))
        .unwrap_err();
    assert_eq!(e.to_string(), "cannot resume a rollout that is running");
    assert_eq!(e.code(), "conflict");
    st.operate(&Operation::Abort, Timestamp::from_secs(6602))
        .unwrap();
    assert!(
        st.operate(
            &Operation::Pause { reason: "x".into() },
            Timestamp::from_secs(6603)
        )
        .is_err()
    );
}

#[test]
fn auto_rollback_and_every_gate() {
    type Hurt = Box<dyn Fn(&mut Observation)>;
    let cases: Vec<(Gate, Hurt)> = vec![
        (
            Gate::ApplyFailed,
            Box::new(|o| {
                o.applied = Applied::Failed {
                    message: "policy_violation".into(),
                }
            }),
        ),
        (
            Gate::UnderVoltage,
            Box::new(|o| o.under_voltage_events += 1),
        ),
        (Gate::Reboot, Box::new(|o| o.boots += 1)),
        (Gate::FanFailure, Box::new(|o| o.fan_failed = true)),
        (Gate::HealthDrop, Box::new(|o| o.health_score = Some(80.0))),
        (Gate::NotApplied, Box::new(|o| o.applied = Applied::Pending)),
    ];
    for (gate, hurt) in cases {
        let mut st = RolloutState::plan(spec(4, true), &baseline(4), Timestamp::EPOCH).unwrap();
        let mut obs = healthy(4);
        st.step(&obs, Timestamp::from_secs(0));
        hurt(&mut obs[0]);
        let actions = st.step(&obs, Timestamp::from_secs(601));
        assert_eq!(st.status, RolloutStatus::RolledBack, "{gate:?}");
        assert!(
            st.failures.iter().any(|f| f.gate == gate),
            "{gate:?}: {:?}",
            st.failures
        );
        assert!(
            matches!(actions.last(), Some(RolloutAction::RollBack { devices }) if devices.len() == 1)
        );
        assert_eq!(st.current, 0);
    }
}

fn arb_obs() -> impl Strategy<Value = Vec<(u8, u8, bool, u8)>> {
    // per device: throttle increment, uv increment, fan failed, applied state
    proptest::collection::vec((0u8..2, 0u8..2, prop::bool::weighted(0.05), 0u8..10), 6)
}

proptest! {
    /// Whatever the devices report, the rollout only moves to wave k+1 after wave
    /// k passed, never past a failed wave (without an operator), and a failure
    /// always leaves a rollback plan.
    #[test]
    fn never_advances_past_a_failed_gate(steps in proptest::collection::vec((arb_obs(), 30u64..400), 1..40)) {
        let mut st = RolloutState::plan(spec(6, false), &baseline(6), Timestamp::EPOCH).unwrap();
        let mut obs = healthy(6);
        let mut now = 0u64;
        let mut failed_at: Option<usize> = None;
        for (o, dt) in steps {
            for (i, (th, uv, fan, ap)) in o.into_iter().enumerate() {
                // Mostly healthy: rare throttling and under-voltage.
                if th == 1 && ap == 0 { obs[i].throttle_events += 1; }
                if uv == 1 && ap == 1 { obs[i].under_voltage_events += 1; }
                obs[i].fan_failed = fan;
                obs[i].applied = if ap == 9 { Applied::Pending } else { Applied::Applied };
            }
            now += dt;
            st.step(&obs, Timestamp::from_secs(now as i64));
            for w in &st.waves[..st.current] {
                prop_assert_eq!(w.status, WaveStatus::Passed);
            }
            if let Some(k) = failed_at {
                prop_assert_eq!(st.current, k);
                prop_assert_eq!(st.status, RolloutStatus::Paused);
            }
            if st.waves.iter().any(|w| w.status == WaveStatus::Failed) {
                failed_at.get_or_insert(st.current);
                prop_assert!(st.rollback_plan.is_some());
                prop_assert_ne!(st.status, RolloutStatus::Completed);
            }
            let back: RolloutState = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
            prop_assert_eq!(&back, &st);
        }
    }
}
