//! Property tests of the safety engine (issue #3):
//! (a) no accepted command leaves the device outside the safety floor,
//! (b) hysteresis prevents an alert from flapping on noise smaller than its band,
//! (c) the assembled policy does not depend on how the layers were ordered.

use proptest::prelude::*;
use std::time::Duration;

use wrale_core::model::{
    AlertCode, Command, CommandKind, FanProfileName, Level, PowerSourceKind, Reading, SecurityKind,
};
use wrale_core::policy::{AlertChange, BoardFloor, PolicyLayer, PolicySet, Scope, Verdict, curve};
use wrale_core::units::{Celsius, Percent, Volts};
use wrale_core::{BoardModel, BoardProfile};

use crate::helpers::*;

#[derive(Debug, Clone)]
enum Step {
    Sample {
        temp: Option<f64>,
        supply: f64,
        case_open: bool,
    },
    Cmd(Command),
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (0u8..30, any::<bool>()).prop_map(|(pin, h)| Command::SetGpio {
            pin,
            level: Level::from(h)
        }),
        (0.0f64..=100.0).prop_map(|d| Command::SetFanDuty {
            fan: "fan0".into(),
            duty: pct(d)
        }),
        prop::sample::select(FanProfileName::ALL.to_vec())
            .prop_map(|profile| Command::SetFanProfile { profile }),
        Just(Command::StartWorkload {
            workload: "job".into()
        }),
        Just(Command::ResumeWorkload {
            workload: "job".into()
        }),
        Just(Command::RunDiagnostics),
        Just(Command::SelectPowerSource {
            source: PowerSourceKind::Main
        }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (prop::option::weighted(0.9, 30.0f64..95.0), prop_oneof![4 => Just(5.1), 1 => 4.3f64..5.2], prop::bool::weighted(0.2))
            .prop_map(|(temp, supply, case_open)| Step::Sample { temp, supply, case_open }),
        2 => command().prop_map(Step::Cmd),
    ]
}

fn lock_policy() -> PolicySet {
    let floor = BoardFloor::from_profile(&BoardProfile::builtin(BoardModel::Pi4B));
    let layer = PolicyLayer::from_toml(
        "scope = \"fleet\"\n[security]\nlock_gpio_when_case_open = true\n",
        "p.toml",
    )
    .unwrap();
    PolicySet::assemble(&floor, &[layer]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// (a) Over random sample streams and command sequences, the engine's fan duty
    /// never falls below the floor's curve (quiet, the quietest allowed) at the last
    /// trusted temperature, never below the safe duty when the temperature is
    /// untrusted, and no GPIO, reserved-pin or power-hungry command is accepted
    /// when the floor forbids it.
    #[test]
    fn accepted_commands_never_leave_the_floor(steps in prop::collection::vec(step(), 1..120)) {
        let policy = lock_policy();
        let floor = policy.floor().limits.clone();
        let mut rig = Rig::new(policy);
        for st in steps {
            match st {
                Step::Sample { temp, supply, case_open } => {
                    let mut s = sample(temp.unwrap_or(50.0), rig.fan_duty);
                    if temp.is_none() {
                        s.temperatures[0].value = Reading::Missing;
                    }
                    s.supply_voltage = Reading::Ok(Volts(supply));
                    set_security(&mut s, SecurityKind::CaseSwitch, case_open);
                    rig.feed(s);
                }
                Step::Cmd(c) => {
                    let before = rig.state.clone();
                    let v = rig.admit(c.clone());
                    if v == Verdict::Allowed {
                        match &c {
                            Command::SetGpio { pin, .. } => {
                                prop_assert!(!before.gpio_locked());
                                prop_assert!(!floor.commands.reserved_pins.contains(pin));
                                prop_assert!(*pin <= floor.commands.max_gpio);
                            }
                            Command::StartWorkload { .. } | Command::ResumeWorkload { .. } => {
                                prop_assert!(!before.under_voltage() && !before.throttled());
                            }
                            Command::RunDiagnostics => prop_assert!(!before.under_voltage()),
                            _ => {}
                        }
                    }
                }
            }
            // The fan floor holds after every step.
            let target = rig.state.fan_target();
            match rig.state.facts().cpu_temp {
                Some(t) if !rig.state.fail_safe() => {
                    let need = curve::duty_at(FanProfileName::Quiet, t).max(floor.fan.min_duty);
                    prop_assert!(target >= need, "fan {target} below floor {need} at {t}");
                }
                _ => prop_assert!(target >= floor.fan.safe_duty, "fail-safe fan {target}"),
            }
            if rig.state.facts().cpu_temp.is_some_and(|t| t >= Celsius(86.0)) {
                prop_assert_eq!(target, Percent::FULL);
            }
        }
    }

    /// (b) Once an alert is raised, noise smaller than its hysteresis band around the
    /// threshold neither clears it nor raises it again: one raise, no clear.
    #[test]
    fn hysteresis_prevents_flapping(
        noise in prop::collection::vec(-2.99f64..2.99, 20..200),
        which in 0usize..3,
    ) {
        let policy = pi4_policy();
        let th = policy.limits().thermal.clone();
        let (thr, code) = match which {
            0 => (th.warn_c.get(), AlertCode::ThermalWarning),
            1 => (th.throttle_c.get(), AlertCode::ThermalThrottle),
            _ => (th.critical_c.get(), AlertCode::ThermalCritical),
        };
        let band = th.hysteresis_c.get();
        prop_assume!(band > 2.99);
        let mut rig = Rig::new(policy);
        let mut raised = 0;
        let mut cleared = 0;
        // Settle above the threshold, then noise of amplitude < band around it.
        let settle = (0..10).map(|_| thr + 0.5);
        let stream: Vec<f64> = settle.chain(noise.iter().map(|n| thr + n)).collect();
        for t in stream {
            let d = rig.feed(sample(t, rig.fan_duty));
            for c in &d.alerts {
                match c {
                    AlertChange::Raised(a) if a.code == code => raised += 1,
                    AlertChange::Cleared(a) if a.code == code => cleared += 1,
                    _ => {}
                }
            }
            if rig.state.shutdown_issued() {
                break;
            }
        }
        prop_assert_eq!(raised, 1);
        prop_assert_eq!(cleared, 0);
    }

    /// (c) Same layers, any order (and duplicated): the same policy set, or the
    /// same refusal.
    #[test]
    fn assembly_is_order_independent(
        layers in prop::collection::vec(layer(), 1..5),
        seed in any::<u64>(),
    ) {
        let floor = BoardFloor::from_profile(&BoardProfile::builtin(BoardModel::Pi4B));
        let a = PolicySet::assemble(&floor, &layers);
        let mut shuffled = layers.clone();
        // Deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut doubled = shuffled.clone();
        doubled.extend(layers.iter().cloned());
        let b = PolicySet::assemble(&floor, &shuffled);
        let c = PolicySet::assemble(&floor, &doubled);
        match (&a, &b, &c) {
            (Ok(a), Ok(b), Ok(c)) => {
                prop_assert_eq!(a.limits(), b.limits());
                prop_assert!(a == b, "differs after shuffle");
                prop_assert_eq!(a.limits(), c.limits());
                prop_assert_eq!(a.rate_limits(), c.rate_limits());
            }
            (Err(_), Err(_), Err(_)) => {}
            _ => prop_assert!(false, "one order refused, another did not: {a:?} / {b:?}"),
        }
    }
}

fn layer() -> impl Strategy<Value = PolicyLayer> {
    (
        prop::option::of(60.0f64..72.0),
        prop::option::of(70.0f64..86.0),
        prop::option::of(prop::sample::select(FanProfileName::ALL.to_vec())),
        prop::option::of(0.0f64..40.0),
        prop::option::of(4.5f64..4.8),
        prop::option::of(any::<bool>()),
        prop::option::of(5u64..60),
        prop::collection::vec((0u8..3, 1u32..5), 0..3),
        0u8..3,
    )
        .prop_map(|(warn, crit, prof, duty, uv, lock, shut, limits, scope)| {
            let mut l = PolicyLayer::empty(match scope {
                0 => Scope::Fleet,
                1 => Scope::Group("lab".parse().unwrap()),
                _ => Scope::Device("pi-07".parse().unwrap()),
            });
            l.thermal.warn_c = warn.map(Celsius);
            l.thermal.critical_c = crit.map(Celsius);
            l.thermal.shutdown_after = shut.map(Duration::from_secs);
            l.fan.min_profile = prof;
            l.fan.min_duty_pct = duty.map(pct);
            l.power.undervoltage_v = uv.map(Volts);
            l.security.lock_gpio_when_case_open = lock;
            l.rate_limits = limits
                .into_iter()
                .map(|(k, max)| wrale_core::policy::RateLimit {
                    command: [
                        CommandKind::SetGpio,
                        CommandKind::Reboot,
                        CommandKind::SetFanDuty,
                    ][k as usize],
                    max,
                    per: Duration::from_secs(60),
                })
                .collect();
            if let Some(w) = warn {
                l.interlocks.push(wrale_core::policy::Interlock {
                    id: format!("hot-{}", w as u32),
                    deny: wrale_core::policy::CommandMatch {
                        command: CommandKind::StartWorkload,
                        pin: None,
                        level: None,
                        fan: None,
                        workload: None,
                        source: None,
                        duty_below_pct: None,
                        duty_above_pct: None,
                        profile_below: None,
                    },
                    when: wrale_core::policy::Condition {
                        temp_above_c: Some(Celsius(w)),
                        ..Default::default()
                    },
                    reason: None,
                });
            }
            l
        })
}
