//! Fleet intelligence (wrale-core's analyzer, scheduler and rollout) on a small
//! fleet of simulated boards. Each device runs the loop metald runs (sample ->
//! safety engine -> apply actions -> step 1 s of virtual time); every 30 s its
//! sample becomes a telemetry point for the analyzer, as fleetd would store it.
#![cfg(feature = "sim")]

use std::collections::BTreeMap;
use std::time::Duration;

use wrale_core::fleet::analyzer::{
    AnalyzerConfig, DeviceWindow, FanStatus, FleetAnalysis, TelemetryPoint, analyze_fleet,
};
use wrale_core::fleet::rollout::{
    Applied, Canary, Observation, RolloutAction, RolloutSpec, RolloutState, RolloutStatus,
    RolloutTarget, WavePlan,
};
use wrale_core::fleet::scheduler::{
    Action as SchedAction, Node, Placement, ScheduleInput, SchedulerConfig, Workload, schedule,
};
use wrale_core::model::{Actor, Command, CommandRequest, DeviceId, FanProfileName, Location};
use wrale_core::policy::{Action, PolicySet, PolicyStore, SafetyState, Verdict};
use wrale_core::units::{Celsius, Percent, Watts};
use wrale_core::{BoardModel, BoardProfile, Timestamp};
use wrale_hal::Board;
use wrale_hal::sim::{SimBoard, SimConfig, SimFault};

const POINT_EVERY: u64 = 30;

struct Device {
    id: DeviceId,
    location: Location,
    sim: SimBoard,
    board: Board,
    policy: PolicySet,
    state: SafetyState,
    /// The load the device's workloads want.
    load: Percent,
    points: Vec<TelemetryPoint>,
    /// Throttle episodes (firmware flag or the safety engine's throttle).
    throttle_events: u32,
    throttling: bool,
    first_throttle: Option<Timestamp>,
}

impl Device {
    fn new(
        id: &str,
        rack: &str,
        shelf: &str,
        ambient: f64,
        seed: u64,
        policy_layer: Option<&str>,
    ) -> Self {
        let sim = SimBoard::new(&SimConfig {
            model: BoardModel::Pi4B,
            ambient_c: Some(Celsius(ambient)),
            seed,
            ..SimConfig::default()
        })
        .expect("sim");
        let mut store = PolicyStore::new(&BoardProfile::builtin(BoardModel::Pi4B));
        if let Some(layer) = policy_layer {
            store
                .reload(layer, "site.toml")
                .expect("a tightening layer");
        }
        let policy = (*store.current()).clone();
        let state = SafetyState::new(&policy);
        Device {
            id: DeviceId::new(id).unwrap(),
            location: Location {
                site: Some("lab".into()),
                rack: Some(rack.into()),
                shelf: Some(shelf.into()),
                slot: None,
            },
            board: sim.board(),
            sim,
            policy,
            state,
            load: Percent::ZERO,
            points: Vec::new(),
            throttle_events: 0,
            throttling: false,
            first_throttle: None,
        }
    }

    fn set_load(&mut self, load: Percent) {
        self.load = load;
        if !self.state.throttled() {
            self.sim.set_load(load);
        }
    }

    fn tick(&mut self) {
        let s = self.board.sample();
        let d = self.policy.evaluate(&mut self.state, &s, s.at);
        for a in &d.actions {
            match a {
                Action::SetFanDuty { fan, duty } => {
                    self.board
                        .fan(fan)
                        .expect("fan")
                        .set_duty(*duty)
                        .expect("duty");
                }
                Action::ThrottleWorkloads { .. } => {
                    self.sim.set_load(Percent::saturating(30.0).min(self.load))
                }
                Action::ResumeWorkloads => self.sim.set_load(self.load),
                Action::EmergencyShutdown { .. } => self.sim.power_off(),
                _ => {}
            }
        }
        let p = TelemetryPoint::from_sample(&s);
        let throttling = p.throttled || self.state.throttled();
        if throttling && !self.throttling {
            self.throttle_events += 1;
            self.first_throttle.get_or_insert(s.at);
        }
        self.throttling = throttling;
        if s.at.as_millis() / 1000 % POINT_EVERY as i64 == 0 {
            self.points.push(p);
        }
        self.sim.step(Duration::from_secs(1));
    }

    fn now(&self) -> Timestamp {
        self.sim.now()
    }

    /// The last `window` of telemetry.
    fn window(&self, window: Duration) -> DeviceWindow {
        let from = self.now() - window;
        let points = self
            .points
            .iter()
            .filter(|p| p.at >= from)
            .cloned()
            .collect();
        DeviceWindow::new(
            self.id.clone(),
            BoardModel::Pi4B,
            self.location.clone(),
            points,
        )
    }

    fn set_fan_profile(&mut self, profile: FanProfileName) -> bool {
        let req = CommandRequest::new(Actor::Fleet, "rollout", Command::SetFanProfile { profile });
        let now = self.now();
        matches!(
            self.policy.admit(&mut self.state, &req, now),
            Verdict::Allowed
        )
    }
}

fn run(fleet: &mut [Device], secs: u64) {
    for _ in 0..secs {
        for d in fleet.iter_mut() {
            d.tick();
        }
    }
}

fn analyze(fleet: &[Device], window: Duration) -> FleetAnalysis {
    let windows: Vec<DeviceWindow> = fleet.iter().map(|d| d.window(window)).collect();
    analyze_fleet(&windows, &AnalyzerConfig::default(), fleet[0].now())
}

/// Rack r2 stands in a 32 °C corner, r1 in a 22 °C room; same load everywhere.
/// The analyzer reports r2 (and only r2) as a hot spot, with its ambient.
#[test]
fn hot_rack_is_reported_as_hot_spot() {
    let mut fleet: Vec<Device> = (0..6)
        .map(|i| {
            let (rack, amb) = if i < 3 { ("r1", 22.0) } else { ("r2", 32.0) };
            Device::new(&format!("pi-{i}"), rack, "s1", amb, 100 + i, None)
        })
        .collect();
    for d in &mut fleet {
        d.set_load(Percent::saturating(60.0));
    }
    run(&mut fleet, 2400);
    let fa = analyze(&fleet, Duration::from_secs(1800));
    let racks: Vec<(&str, f64)> = fa
        .hot_spots
        .iter()
        .filter(|h| h.shelf.is_none())
        .map(|h| (h.rack.as_str(), h.excess.get()))
        .collect();
    assert_eq!(racks.len(), 1, "{:#?}", fa.hot_spots);
    assert_eq!(racks[0].0, "r2");
    assert!(racks[0].1 >= 4.0, "{racks:?}");
    let hs = &fa.hot_spots[0];
    assert!((hs.ambient.unwrap().get() - 32.0).abs() < 1.0, "{hs:?}");
    assert!(
        (hs.fleet_ambient.unwrap().get() - 22.0).abs() < 1.0,
        "{hs:?}"
    );
    // Headroom is lower in the hot rack.
    let head = |id: &str| {
        fa.device(&DeviceId::new(id).unwrap())
            .unwrap()
            .headroom
            .as_ref()
            .unwrap()
            .headroom
            .get()
    };
    assert!(head("pi-4") < head("pi-1") - 4.0);
}

/// One fan of a shelf slowly clogs (the tach keeps reading normally): the
/// analyzer flags it (fan verdict, peer anomaly or health) before the board first
/// throttles, and the healthy neighbours are not flagged.
#[test]
fn degrading_fan_is_flagged_before_it_throttles() {
    let mut fleet: Vec<Device> = (0..4)
        .map(|i| Device::new(&format!("pi-{i}"), "r1", "s1", 30.0, 200 + i, None))
        .collect();
    for d in &mut fleet {
        d.set_load(Percent::FULL);
    }
    let sick = 3;
    let schedule = [(1200, 0.7), (2100, 0.4), (3000, 0.15), (3900, 0.0)];
    let mut flagged: Option<(Timestamp, String)> = None;
    let mut t = 0u64;
    while t < 6600 {
        for (at, eff) in schedule {
            if t == at {
                fleet[sick]
                    .sim
                    .inject(SimFault::FanDegraded { effectiveness: eff });
            }
        }
        run(&mut fleet, 60);
        t += 60;
        if t % 300 == 0 && t >= 1800 && flagged.is_none() {
            let fa = analyze(&fleet, Duration::from_secs(1800));
            let d = fa.device(&fleet[sick].id).unwrap();
            let fan_bad = d
                .fan
                .as_ref()
                .is_some_and(|f| f.status >= FanStatus::Degraded);
            let anomalous = !fa.anomalies_of(&fleet[sick].id).is_empty();
            if fan_bad || anomalous {
                flagged = Some((
                    fleet[sick].now(),
                    format!(
                        "fan {:?}, anomalies {:?}",
                        d.fan,
                        fa.anomalies_of(&fleet[sick].id)
                    ),
                ));
                for (i, dev) in fleet.iter().enumerate().filter(|(i, _)| *i != sick) {
                    let h = fa.device(&dev.id).unwrap();
                    assert!(
                        h.fan.as_ref().is_none_or(|f| f.status < FanStatus::Failing)
                            && fa.anomalies_of(&dev.id).is_empty(),
                        "healthy pi-{i} flagged: {h:#?}"
                    );
                }
            }
        }
    }
    let (flag_at, why) = flagged.expect("the degrading fan was flagged");
    let throttle_at = fleet[sick]
        .first_throttle
        .expect("the sick board throttled in the end");
    eprintln!("flagged at {flag_at} ({why}); first throttle at {throttle_at}");
    assert!(
        flag_at < throttle_at,
        "flagged at {flag_at} ({why}), first throttle at {throttle_at}"
    );
    for d in &fleet[..sick] {
        assert!(d.first_throttle.is_none(), "{} throttled", d.id);
    }
    // The tach never told: the fan still turns.
    let s = fleet[sick].board.sample();
    assert!(s.fans[0].rpm.ok().unwrap().get() > 1000.0);
}

/// The scheduler places a workload from the analyzer's view of the boards; when
/// its device's ambient rises, the next pass moves it, explained, and the pass
/// after that changes nothing.
#[test]
fn workload_moves_off_device_whose_ambient_rises() {
    let mut fleet: Vec<Device> = (0..3)
        .map(|i| Device::new(&format!("pi-{i}"), "r1", "s1", 22.0, 300 + i, None))
        .collect();
    let profile = BoardProfile::builtin(BoardModel::Pi4B);
    let cam = Workload::new("cam", 80.0, Watts(3.0));
    let cfg = SchedulerConfig::default();
    let base = Percent::saturating(5.0);
    for d in &mut fleet {
        d.set_load(base);
    }
    let mut placements: Vec<Placement> = Vec::new();
    let pass = |fleet: &mut Vec<Device>, placements: &mut Vec<Placement>| {
        let fa = analyze(fleet, Duration::from_secs(900));
        let nodes: Vec<Node> = fa
            .devices
            .iter()
            .filter_map(|a| Node::from_analysis(a, &profile))
            .collect();
        assert_eq!(nodes.len(), 3);
        let plan = schedule(
            &ScheduleInput {
                nodes,
                workloads: vec![cam.clone()],
                placements: placements.clone(),
            },
            &cfg,
        );
        *placements = plan.placements.clone();
        for d in fleet.iter_mut() {
            let on = placements.iter().any(|p| p.device == d.id);
            d.set_load(if on { Percent::saturating(85.0) } else { base });
        }
        plan
    };
    run(&mut fleet, 900);
    let plan = pass(&mut fleet, &mut placements);
    let SchedAction::Place { device: first } = &plan.decisions[0].action else {
        panic!("{:#?}", plan.decisions)
    };
    let first = first.clone();
    run(&mut fleet, 1200);
    assert_eq!(
        pass(&mut fleet, &mut placements).changes().count(),
        0,
        "stable while nothing changes"
    );

    // The room around the busy board heats up.
    let host = fleet.iter().position(|d| d.id == first).unwrap();
    fleet[host].sim.set_ambient(Celsius(55.0));
    run(&mut fleet, 1200);
    let plan = pass(&mut fleet, &mut placements);
    let moves: Vec<_> = plan.changes().collect();
    assert_eq!(moves.len(), 1, "{:#?}", plan.decisions);
    let SchedAction::Move { from, to } = &moves[0].action else {
        panic!("{:#?}", moves[0])
    };
    assert_eq!(from, &first);
    assert_ne!(to, &first);
    assert!(
        moves[0].reason.contains("headroom collapsed"),
        "{}",
        moves[0].reason
    );
    // No ping-pong: after the move, another pass keeps it where it is.
    run(&mut fleet, 1200);
    assert_eq!(pass(&mut fleet, &mut placements).changes().count(), 0);
    assert_eq!(placements[0].device, *to);
}

/// The site's policy throttles workloads at 70 °C. Rolling out the quiet fan
/// profile to boards in a 33 °C room makes the canary run into that: the rollout
/// stops at the canary wave and rolls the canary back. Rolling out the cool
/// profile is harmless and completes.
#[test]
fn harmful_fan_profile_stops_at_canary_harmless_one_completes() {
    const SITE: &str = "scope = \"group:hot-room\"\n[thermal]\nwarn_c = 62.0\nthrottle_c = 70.0\ncritical_c = 80.0\n";
    let fleet_of = |seed: u64| -> Vec<Device> {
        (0..6)
            .map(|i| {
                let rack = if i % 2 == 0 { "r1" } else { "r2" };
                Device::new(&format!("pi-{i}"), rack, "s1", 33.0, seed + i, Some(SITE))
            })
            .collect()
    };
    let rollout =
        |fleet: &mut Vec<Device>, profile: FanProfileName| -> (RolloutState, Vec<RolloutAction>) {
            for d in fleet.iter_mut() {
                d.set_load(Percent::FULL);
            }
            run(fleet, 1800);
            for d in fleet.iter() {
                assert_eq!(
                    d.throttle_events, 0,
                    "{} throttles before the rollout",
                    d.id
                );
            }
            let targets = fleet
                .iter()
                .map(|d| RolloutTarget {
                    device: d.id.clone(),
                    location: d.location.clone(),
                })
                .collect();
            let mut spec = RolloutSpec::new(
                "fan",
                format!("fan_profile={profile}"),
                targets,
                Canary::Devices {
                    devices: vec![DeviceId::new("pi-0").unwrap()],
                },
                WavePlan::BySize { size: 3 },
                Duration::from_secs(1200),
            );
            spec.auto_rollback = true;
            let mut st = RolloutState::plan(spec, &BTreeMap::new(), fleet[0].now()).unwrap();
            let mut applied: BTreeMap<DeviceId, Applied> = BTreeMap::new();
            let mut all = Vec::new();
            for _ in 0..(3 * 1300 / 30) {
                let obs: Vec<Observation> = fleet
                    .iter()
                    .map(|d| Observation {
                        applied: applied.get(&d.id).cloned().unwrap_or_default(),
                        throttle_events: d.throttle_events,
                        ..Observation::new(d.id.clone())
                    })
                    .collect();
                let actions = st.step(&obs, fleet[0].now());
                for a in &actions {
                    match a {
                        RolloutAction::ApplyChange { devices, .. } => {
                            for id in devices {
                                let d = fleet.iter_mut().find(|d| &d.id == id).unwrap();
                                let ok = d.set_fan_profile(profile);
                                applied.insert(
                                    id.clone(),
                                    if ok {
                                        Applied::Applied
                                    } else {
                                        Applied::Failed {
                                            message: "refused".into(),
                                        }
                                    },
                                );
                            }
                        }
                        RolloutAction::RollBack { devices } => {
                            for id in devices {
                                let d = fleet.iter_mut().find(|d| &d.id == id).unwrap();
                                assert!(d.set_fan_profile(FanProfileName::Balance));
                            }
                        }
                        _ => {}
                    }
                }
                all.extend(actions);
                if !matches!(st.status, RolloutStatus::Running) {
                    break;
                }
                run(fleet, 30);
            }
            (st, all)
        };

    let mut fleet = fleet_of(400);
    let (st, actions) = rollout(&mut fleet, FanProfileName::Quiet);
    assert_eq!(st.status, RolloutStatus::RolledBack, "{actions:#?}");
    assert_eq!(st.current, 0, "stopped at the canary wave");
    let plan = st.rollback_plan.as_ref().unwrap();
    assert_eq!(plan.devices, vec![DeviceId::new("pi-0").unwrap()]);
    assert!(plan.reason.contains("Throttled"), "{}", plan.reason);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, RolloutAction::RollBack { .. }))
    );
    // Nobody but the canary got the quiet profile, and the canary is back on balance.
    for d in &fleet {
        assert_eq!(d.state.fan_profile(), FanProfileName::Balance, "{}", d.id);
    }

    let mut fleet = fleet_of(500);
    let (st, actions) = rollout(&mut fleet, FanProfileName::Cool);
    assert_eq!(st.status, RolloutStatus::Completed, "{actions:#?}");
    assert_eq!(st.progress().waves_passed, 3);
    for d in &fleet {
        assert_eq!(d.state.fan_profile(), FanProfileName::Cool);
        assert_eq!(d.throttle_events, 0);
    }
}
