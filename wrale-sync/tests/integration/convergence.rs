//! Property test: three peers converge under loss, duplication, reordering and
//! replay, across an epoch change, and no acknowledged edit is lost.
//!
//! Cases: `PROPTEST_CASES` (default 1000 here). Failing seeds are kept by proptest
//! in `tests/fixtures/convergence.proptest-regressions` and replayed first.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use std::collections::BTreeSet;

use wrale_core::units::{Celsius, Percent};
use wrale_sync::transport::{Faults, LossyNet};
use wrale_sync::{Author, SyncSession, Twin};

use crate::common::*;

const PEERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Peer edits a desired field (value index picks from a small set, so
    /// concurrent writes often collide).
    Desired { peer: usize, field: u8, v: u8 },
    /// Peer adds a unique workload (an acknowledged edit that must survive).
    AddWorkload { peer: usize },
    /// The device reports (a reading and a unique alert).
    Report { v: u8, alert: bool },
    /// Peer `from` sends what it has to `to`.
    Sync { from: usize, to: usize },
    /// Time passes; due frames are delivered.
    Tick,
    /// The brain (peer 0) starts a new epoch.
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PEERS, 0u8..4, 0u8..4).prop_map(|(peer, field, v)| Op::Desired { peer, field, v }),
        2 => (0..PEERS).prop_map(|peer| Op::AddWorkload { peer }),
        2 => (0u8..4, any::<bool>()).prop_map(|(v, alert)| Op::Report { v, alert }),
        5 => (0..PEERS, 0..PEERS)
            .prop_filter("distinct", |(a, b)| a != b)
            .prop_map(|(from, to)| Op::Sync { from, to }),
        3 => Just(Op::Tick),
        1 => Just(Op::Compact),
    ]
}

fn authors() -> [Author; PEERS] {
    [alice(), dev(), Author::local_operator("tech")]
}

struct World {
    twins: Vec<Twin>,
    sessions: Vec<Vec<SyncSession>>,
    net: LossyNet,
    now: i64,
    workloads: BTreeSet<String>,
    alerts: BTreeSet<String>,
    serial: u32,
}

impl World {
    fn new(faults: Faults, seed: u64) -> World {
        let twins: Vec<Twin> = (0..PEERS)
            .map(|i| {
                if i == 0 {
                    Twin::load(&Twin::new(&info(), fleet(), t(0)).unwrap().save(), fleet()).unwrap()
                } else {
                    Twin::empty(&device_id(), authors()[i].clone()).unwrap()
                }
            })
            .collect();
        let sessions = (0..PEERS)
            .map(|i| {
                (0..PEERS)
                    .map(|j| SyncSession::new(&twins[i], format!("peer{j}")))
                    .collect()
            })
            .collect();
        World {
            twins,
            sessions,
            net: LossyNet::new(faults, seed),
            now: 0,
            workloads: BTreeSet::new(),
            alerts: BTreeSet::new(),
            serial: 0,
        }
    }

    fn deliver(&mut self) {
        for to in 0..PEERS {
            for (from, frame) in self.net.deliver(to) {
                let s = &mut self.sessions[to][from];
                // Valid frames only travel here (replays and duplicates included):
                // receiving one must never fail.
                s.receive(&mut self.twins[to], &frame, t(self.now))
                    .unwrap_or_else(|e| panic!("peer {to} from {from}: {e}"));
            }
        }
    }

    fn send(&mut self, from: usize, to: usize) {
        let mut n = 0;
        while let Some(f) = self.sessions[from][to].generate(&mut self.twins[from]) {
            self.net.send(from, to, f);
            n += 1;
            if n > 8 {
                break;
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        self.now += 1;
        let now = t(self.now);
        match *op {
            Op::Desired { peer, field, v } => {
                let a = authors()[peer].clone();
                let v = v as f64;
                self.twins[peer]
                    .edit_desired(
                        |c| match field {
                            0 => c.warn = Some(Celsius(60.0 + v)),
                            1 => c.min_fan_duty = Some(Percent::new(10.0 * v).unwrap()),
                            2 => c.fan_profile = Some(format!("p{v}")),
                            _ => {
                                c.gpio_outputs.insert(17, (v as u8 % 2 == 0).into());
                            }
                        },
                        &a,
                        now,
                    )
                    .unwrap();
            }
            Op::AddWorkload { peer } => {
                self.serial += 1;
                let name = format!("w{}-{peer}", self.serial);
                let a = authors()[peer].clone();
                self.twins[peer]
                    .edit_desired(
                        |c| {
                            c.workloads.insert(name.clone(), true);
                        },
                        &a,
                        now,
                    )
                    .unwrap();
                self.workloads.insert(name);
            }
            Op::Report { v, alert } => {
                let mut u = wrale_sync::ReportedUpdate::default()
                    .reading("cpu_temp_c", 40.0 + 5.0 * v as f64);
                if alert {
                    self.serial += 1;
                    let mut set: std::collections::BTreeMap<String, String> =
                        self.twins[1].reported().unwrap().alerts;
                    let id = format!("a{}", self.serial);
                    set.insert(id.clone(), "x".into());
                    self.alerts.insert(id);
                    u.alerts = Some(set);
                }
                self.twins[1].report(&u, now).unwrap();
            }
            Op::Sync { from, to } => self.send(from, to),
            Op::Tick => {
                self.net.tick();
                self.deliver();
            }
            Op::Compact => {
                // Refused while a manual conflict is open; the script never
                // writes a manual field, so this always succeeds.
                self.twins[0].compact(&fleet(), now).unwrap();
            }
        }
    }

    fn heal(&mut self) {
        self.net.set_faults(Faults::NONE);
        for _ in 0..6 {
            self.net.tick();
            self.deliver();
        }
        for row in &mut self.sessions {
            for s in row {
                s.reset();
            }
        }
        let mut quiet_rounds = 0;
        for _ in 0..200 {
            let before = self.net.stats().sent;
            for from in 0..PEERS {
                for to in 0..PEERS {
                    if from != to {
                        self.send(from, to);
                    }
                }
            }
            self.net.tick();
            self.deliver();
            if self.net.stats().sent == before && self.net.in_flight() == 0 {
                quiet_rounds += 1;
                if quiet_rounds >= 2 {
                    return;
                }
            } else {
                quiet_rounds = 0;
            }
        }
        panic!("peers did not go quiet after healing");
    }
}

fn check(script: &[Op], faults: Faults, seed: u64) -> Result<(), TestCaseError> {
    let mut w = World::new(faults, seed);
    for op in script {
        w.apply(op);
    }
    w.heal();
    let epoch = w.twins[0].epoch();
    let heads = w.twins[0].heads();
    let st = state(&w.twins[0]);
    for (i, t) in w.twins.iter_mut().enumerate() {
        prop_assert_eq!(t.epoch(), epoch, "peer {} epoch", i);
        prop_assert_eq!(t.heads(), heads.clone(), "peer {} heads", i);
        prop_assert_eq!(state(t), st.clone(), "peer {} resolved values", i);
        let d = t.desired().unwrap();
        for wl in &w.workloads {
            prop_assert!(
                d.workloads.get(wl) == Some(&true),
                "peer {} lost workload {}",
                i,
                wl
            );
        }
        let r = t.reported().unwrap();
        // Alerts accumulate in the script (each report keeps the device's set
        // and adds one), so every alert ever reported must be in the final set.
        for a in &w.alerts {
            prop_assert!(r.alerts.contains_key(a), "peer {} lost alert {}", i, a);
        }
    }
    Ok(())
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/fixtures/convergence.proptest-regressions",
        ))),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn three_peers_converge_under_faults_across_epochs(
        script in proptest::collection::vec(op(), 5..40),
        seed in any::<u64>(),
        loss in 0.0f64..0.4,
        dup in 0.0f64..0.3,
        replay in 0.0f64..0.2,
        delay in 0u64..4,
    ) {
        let faults = Faults { loss, duplicate: dup, replay, max_delay: delay };
        check(&script, faults, seed)?;
    }
}

/// A fixed script that always includes an epoch change with offline edits on
/// both non-authority peers (a regression anchor independent of proptest).
#[test]
fn fixed_script_with_epoch_change_converges() {
    let script = vec![
        Op::Desired {
            peer: 0,
            field: 0,
            v: 3,
        },
        Op::Sync { from: 0, to: 1 },
        Op::Sync { from: 0, to: 2 },
        Op::Tick,
        Op::Tick,
        Op::AddWorkload { peer: 1 },
        Op::AddWorkload { peer: 2 },
        Op::Desired {
            peer: 2,
            field: 0,
            v: 1,
        },
        Op::Report { v: 2, alert: true },
        Op::Compact,
        Op::Desired {
            peer: 0,
            field: 1,
            v: 3,
        },
        Op::AddWorkload { peer: 0 },
        Op::Sync { from: 1, to: 2 },
        Op::Tick,
        Op::Compact,
        Op::Report { v: 1, alert: true },
    ];
    let faults = Faults {
        loss: 0.3,
        duplicate: 0.2,
        replay: 0.1,
        max_delay: 2,
    };
    for seed in 0..20 {
        check(&script, faults, seed).unwrap();
    }
}
