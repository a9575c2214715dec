//! `safety_eval`: the safety engine's hot paths with the default Pi 4 policy set.
//!
//! - `evaluate/steady`: one `evaluate` of a full sample (CPU and GPU temperatures,
//!   a fan with tachometer, supply, throttle flags, power sources, battery, three
//!   security inputs, CPU load and frequency) in the steady state.
//! - `evaluate/varying`: the same with the temperature moving across fan steps and
//!   thresholds (latches and hold timers active; actions and alerts produced).
//! - `check/set_fan_duty`: one `check` of a command against floor and rate limits.
//!
//! Goal (issue #3): <= 1 µs per `evaluate`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wrale_core::model::{
    Actor, BatteryStatus, ChargeState, Command, CommandRequest, FanReading, PowerSourceKind,
    Reading, Sample, SecurityKind, SecurityReading, SensorKind, TemperatureReading, ThrottleFlags,
};
use wrale_core::policy::{PolicySet, SafetyState};
use wrale_core::units::Amps;
use wrale_core::units::{Celsius, MegaHertz, Percent, Rpm, Volts, Watts};
use wrale_core::{BoardModel, BoardProfile, Timestamp};

fn full_sample(temp: f64, duty: Percent) -> Sample {
    let sec = |id: &str, kind| SecurityReading {
        id: id.into(),
        kind,
        active: Reading::Ok(false),
    };
    Sample {
        at: Timestamp::from_secs(1_795_000_000),
        temperatures: vec![
            TemperatureReading {
                id: "cpu".into(),
                kind: SensorKind::Cpu,
                value: Reading::Ok(Celsius(temp)),
            },
            TemperatureReading {
                id: "gpu".into(),
                kind: SensorKind::Gpu,
                value: Reading::Ok(Celsius(temp - 1.0)),
            },
        ],
        fans: vec![FanReading {
            id: "fan0".into(),
            duty: Reading::Ok(duty),
            rpm: Reading::Ok(Rpm(5000.0 * duty.fraction())),
        }],
        supply_voltage: Reading::Ok(Volts(5.08)),
        current: Reading::Ok(Amps(0.9)),
        power: Reading::Ok(Watts(4.6)),
        throttle: Reading::Ok(ThrottleFlags::default()),
        power_source: Reading::Ok(PowerSourceKind::Main),
        main_power_available: Reading::Ok(true),
        battery: Reading::Ok(BatteryStatus {
            level: Percent::saturating(97.0),
            voltage: Volts(4.15),
            state: ChargeState::Full,
            charging_enabled: true,
        }),
        security: vec![
            sec("case", SecurityKind::CaseSwitch),
            sec("pir0", SecurityKind::Motion),
            sec("tamper", SecurityKind::Tamper),
        ],
        cpu_load: Reading::Ok(Percent::saturating(42.0)),
        cpu_freq: Reading::Ok(MegaHertz(1500.0)),
        storage: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let policy = PolicySet::for_board(&BoardProfile::builtin(BoardModel::Pi4B));
    let now = Timestamp::from_secs(1_795_000_000);

    let mut g = c.benchmark_group("safety_eval");
    g.throughput(Throughput::Elements(1));

    // Steady state: warm the state up, then evaluate the same sample.
    let mut state = SafetyState::new(&policy);
    let s = full_sample(55.0, Percent::saturating(30.0));
    for _ in 0..3 {
        policy.evaluate(&mut state, &s, now);
    }
    g.bench_function("evaluate/steady", |b| {
        b.iter(|| black_box(policy.evaluate(&mut state, black_box(&s), now)))
    });

    // Varying: temperatures across fan steps and the warning threshold.
    let temps = [48.0, 56.0, 61.0, 68.0, 72.0, 66.0, 58.0, 52.0];
    let samples: Vec<Sample> = temps
        .iter()
        .map(|t| full_sample(*t, Percent::saturating(50.0)))
        .collect();
    let mut state = SafetyState::new(&policy);
    let mut i = 0usize;
    let mut t = now;
    g.bench_function("evaluate/varying", |b| {
        b.iter(|| {
            i = (i + 1) % samples.len();
            t = t + Duration::from_secs(1);
            black_box(policy.evaluate(&mut state, &samples[i], t))
        })
    });

    let mut state = SafetyState::new(&policy);
    policy.evaluate(&mut state, &s, now);
    let req = CommandRequest::new(
        Actor::User("ada".into()),
        "bench",
        Command::SetFanDuty {
            fan: "fan0".into(),
            duty: Percent::saturating(60.0),
        },
    );
    g.bench_function("check/set_fan_duty", |b| {
        b.iter(|| black_box(policy.check(&state, black_box(&req), now)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
