//! Behaviour and property tests of the `sim` backend.
#![cfg(feature = "sim")]

use std::sync::mpsc::Receiver;
use std::time::Duration;

use proptest::prelude::*;
use wrale_core::board::BoardModel;
use wrale_core::model::{
    ChargeState, Edge, HalErrorKind, Level, PowerSourceKind, Pull, Reading, SecurityKind,
    StorageKind,
};
use wrale_core::units::{Celsius, Hertz, Ohms, Percent};
use wrale_hal::gpio::DropState;
use wrale_hal::sim::{
    BatteryConfig, Cooling, DEFAULT_SIM_START, ScriptStep, SimAction, SimBoard, SimConfig,
    SimFault, SimTime,
};
use wrale_hal::{BackendConfig, HalError, HalEvent};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn pct(v: f64) -> Percent {
    Percent::new(v).unwrap()
}

/// A quiet (noise-free) config for `model`.
fn quiet(model: BoardModel) -> SimConfig {
    SimConfig {
        model,
        noise: false,
        ..SimConfig::default()
    }
}

fn sim(c: &SimConfig) -> SimBoard {
    SimBoard::new(c).unwrap()
}

fn drain(rx: &Receiver<HalEvent>) -> Vec<HalEvent> {
    rx.try_iter().collect()
}

/// Runs `total` and returns the highest die temperature seen (checked every second).
fn run_max_die(s: &SimBoard, total: Duration) -> f64 {
    let mut max = f64::MIN;
    for _ in 0..total.as_secs() {
        s.step(secs(1));
        max = max.max(s.state().die_c.get());
    }
    max
}

// ----- the hard thermal checks -----

#[test]
fn pi4_full_load_without_fan_in_25c_room_exceeds_80c_and_throttles() {
    let s = sim(&SimConfig {
        cooling: Some(Cooling::Bare),
        ambient_c: Some(Celsius(25.0)),
        load_pct: Percent::FULL,
        ..quiet(BoardModel::Pi4B)
    });
    let max = run_max_die(&s, secs(40 * 60));
    assert!(max > 80.0, "max die {max} °C");
    let st = s.state();
    assert!(st.die_c.get() > 80.0, "{st:?}");
    assert!(st.throttle.throttled && st.throttle.freq_capped);
    assert!(st.throttle.throttled_occurred && st.throttle.freq_capped_occurred);
    assert!(st.cpu_freq_mhz.get() < 1500.0, "firmware caps the clock");
    assert!(
        st.power_w.get() < 6.3,
        "power drops with the clock: {}",
        st.power_w
    );
    let sample = s.board().sample();
    assert!(sample.cpu_temp().ok().unwrap().get() > 80.0);
    assert!(sample.throttle.ok().unwrap().throttled);
    assert!(sample.cpu_freq.ok().unwrap().get() < 1500.0);
}

#[test]
fn pi4_full_load_with_fan_at_100_stays_below_80c() {
    let s = sim(&SimConfig {
        ambient_c: Some(Celsius(25.0)),
        load_pct: Percent::FULL,
        fan_duty_pct: Percent::FULL,
        ..quiet(BoardModel::Pi4B)
    });
    let max = run_max_die(&s, secs(60 * 60));
    assert!(max < 80.0, "max die {max} °C");
    let st = s.state();
    assert!(!st.throttle.throttled_occurred, "{st:?}");
    assert_eq!(st.cpu_freq_mhz.get(), 1500.0);
    // Steady state: 25 + P·R_fan with P = 6.4 W + fan 0.45 W of which 6.4 W heats.
    assert!((st.die_c.get() - (25.0 + 6.4 * 4.5)).abs() < 1.5, "{st:?}");
}

#[test]
fn pi3bplus_soft_limit_sets_soft_temp_limit_and_1200_mhz() {
    let s = sim(&SimConfig {
        cooling: Some(Cooling::Bare),
        ambient_c: Some(Celsius(25.0)),
        load_pct: Percent::FULL,
        ..quiet(BoardModel::Pi3BPlus)
    });
    s.run_for(secs(20 * 60));
    let st = s.state();
    assert!(st.die_c.get() >= 60.0, "{st:?}");
    assert!(st.throttle.soft_temp_limit && st.throttle.soft_temp_limit_occurred);
    assert!(st.cpu_freq_mhz.get() <= 1200.0 + 1e-9, "{st:?}");
}

// ----- fan -----

#[test]
fn fan_tach_follows_duty_with_spin_up_lag_and_min_start() {
    let s = sim(&quiet(BoardModel::Pi4B));
    let board = s.board();
    let fan = board.fan("fan0").unwrap();
    assert!(fan.has_tach());
    assert_eq!(fan.rpm().unwrap().get(), 0.0);
    fan.set_duty(pct(10.0)).unwrap();
    s.step(secs(5));
    assert_eq!(fan.rpm().unwrap().get(), 0.0, "no start below 20 %");
    fan.set_duty(Percent::FULL).unwrap();
    s.step(Duration::from_millis(500));
    let half = fan.rpm().unwrap().get();
    assert!(
        (2000.0..=3000.0).contains(&half),
        "half-way after 0.5 s: {half}"
    );
    s.step(Duration::from_millis(600));
    assert_eq!(fan.rpm().unwrap().get(), 5000.0);
    fan.set_duty(pct(50.0)).unwrap();
    s.step(secs(2));
    assert_eq!(fan.rpm().unwrap().get(), 2500.0);
    assert_eq!(fan.duty().unwrap(), pct(50.0));
}

#[test]
fn onoff_fan_runs_full_for_any_duty_and_has_no_tach() {
    let s = sim(&quiet(BoardModel::Pi3BPlus));
    let board = s.board();
    let fan = board.fan("fan0").unwrap();
    assert!(!fan.has_tach());
    assert_eq!(fan.rpm().unwrap_err().kind(), HalErrorKind::Unsupported);
    fan.set_duty(pct(5.0)).unwrap();
    s.step(secs(2));
    assert_eq!(fan.duty().unwrap(), Percent::FULL);
    assert!((s.state().fan_airflow - 1.0).abs() < 1e-9);
    assert_eq!(board.sample().fans[0].rpm, Reading::Missing);
    // Boards without a fan (or cooled without one) have no fan0.
    assert!(sim(&quiet(BoardModel::Zero2W)).board().fans().is_empty());
    let bare = SimConfig {
        cooling: Some(Cooling::Bare),
        ..quiet(BoardModel::Pi4B)
    };
    assert!(sim(&bare).board().fan("fan0").is_err());
}

#[test]
fn stalled_fan_reads_zero_rpm_and_the_board_heats() {
    let s = sim(&SimConfig {
        load_pct: Percent::FULL,
        fan_duty_pct: Percent::FULL,
        ambient_c: Some(Celsius(25.0)),
        ..quiet(BoardModel::Pi4B)
    });
    s.run_for(secs(20 * 60));
    let cool = s.state().die_c.get();
    s.inject(SimFault::FanStall);
    let sample = s.board().sample();
    assert_eq!(sample.fans[0].rpm, Reading::Ok(wrale_core::units::Rpm(0.0)));
    assert_eq!(sample.fans[0].duty, Reading::Ok(Percent::FULL));
    s.run_for(secs(20 * 60));
    let hot = s.state().die_c.get();
    assert!(hot > cool + 5.0, "stall: {cool} -> {hot}");
    assert_eq!(s.state().fan_airflow, 0.0);
    s.clear(&SimFault::FanStall);
    s.run_for(secs(20 * 60));
    assert!(s.state().die_c.get() < cool + 0.5);
}

#[test]
fn degraded_fan_spins_normally_but_cools_less() {
    let cfg = SimConfig {
        load_pct: Percent::FULL,
        fan_duty_pct: Percent::FULL,
        ambient_c: Some(Celsius(25.0)),
        ..quiet(BoardModel::Pi4B)
    };
    let healthy = sim(&cfg);
    let degraded = sim(&SimConfig {
        faults: vec![SimFault::FanDegraded { effectiveness: 0.2 }],
        ..cfg
    });
    for s in [&healthy, &degraded] {
        s.run_for(secs(30 * 60));
    }
    let (h, d) = (healthy.board().sample(), degraded.board().sample());
    assert_eq!(h.fans[0].rpm, d.fans[0].rpm, "the tach cannot tell");
    let (th, td) = (healthy.state().die_c.get(), degraded.state().die_c.get());
    assert!(td > th + 5.0, "healthy {th}, degraded {td}");
}

// ----- GPIO -----

#[test]
fn claiming_a_pin_twice_is_pin_used() {
    let s = sim(&quiet(BoardModel::Pi4B));
    let board = s.board();
    let gpio = board.gpio().unwrap();
    let first = gpio.claim_input(17, Pull::Up).unwrap();
    let err = gpio
        .claim_output(17, Level::Low, DropState::Low)
        .unwrap_err();
    assert!(matches!(err, HalError::PinUsed { pin: 17 }), "{err}");
    assert_eq!(err.kind(), HalErrorKind::Busy);
    assert!(gpio.claimed().contains(&17));
    drop(first);
    assert!(!gpio.claimed().contains(&17));
    gpio.claim_output(17, Level::Low, DropState::Low).unwrap();
    // The fan owns its PWM and tach pins.
    assert!(matches!(
        gpio.claim_input(18, Pull::None),
        Err(HalError::PinUsed { pin: 18 })
    ));
    assert!(matches!(
        gpio.claim_input(24, Pull::None),
        Err(HalError::PinUsed { pin: 24 })
    ));
    assert_eq!(
        gpio.claim_input(28, Pull::None).unwrap_err().kind(),
        HalErrorKind::InvalidArgument
    );
}

#[test]
fn loopback_pair_and_drop_states() {
    let s = sim(&quiet(BoardModel::Pi4B));
    let board = s.board();
    let gpio = board.gpio().unwrap();
    let input = gpio.claim_input(21, Pull::Up).unwrap();
    assert_eq!(
        input.read().unwrap(),
        Level::High,
        "pull-up, nothing driving"
    );
    let mut out = gpio.claim_output(20, Level::Low, DropState::Low).unwrap();
    assert_eq!(input.read().unwrap(), Level::Low);
    out.write(Level::High).unwrap();
    assert_eq!(out.level(), Level::High);
    assert_eq!(input.read().unwrap(), Level::High);
    out.write(Level::Low).unwrap();
    drop(out);
    assert_eq!(
        input.read().unwrap(),
        Level::Low,
        "DropState::Low keeps driving low"
    );
    let out = gpio
        .claim_output(20, Level::Low, DropState::Release)
        .unwrap();
    drop(out);
    assert_eq!(
        input.read().unwrap(),
        Level::High,
        "released: the pull-up wins"
    );
    let out = gpio.claim_output(20, Level::Low, DropState::High).unwrap();
    drop(out);
    assert_eq!(input.read().unwrap(), Level::High);
    drop(input);
    let input = gpio.claim_input(21, Pull::Down).unwrap();
    assert_eq!(input.read().unwrap(), Level::High, "still driven by pin 20");
    // Unwired pins read their pull; floating reads low.
    assert_eq!(
        gpio.claim_input(4, Pull::Up).unwrap().read().unwrap(),
        Level::High
    );
    assert_eq!(
        gpio.claim_input(4, Pull::None).unwrap().read().unwrap(),
        Level::Low
    );
}

#[test]
fn software_pwm_is_refused_hardware_pwm_works() {
    let s = sim(&quiet(BoardModel::Pi4B));
    let board = s.board();
    let gpio = board.gpio().unwrap();
    let err = gpio
        .claim_pwm(17, Hertz(1000.0), pct(50.0), DropState::Low)
        .unwrap_err();
    assert_eq!(err.kind(), HalErrorKind::Unsupported);
    assert!(err.to_string().contains("software PWM is refused"), "{err}");
    assert!(
        !gpio.claimed().contains(&17),
        "a refused claim claims nothing"
    );
    let mut pwm = gpio
        .claim_pwm(12, Hertz(25_000.0), pct(30.0), DropState::High)
        .unwrap();
    pwm.set_duty(pct(70.0)).unwrap();
    assert_eq!(pwm.duty(), pct(70.0));
    assert!(pwm.set_frequency(Hertz(0.0)).is_err());
    pwm.set_frequency(Hertz(1000.0)).unwrap();
    assert_eq!(pwm.frequency(), Hertz(1000.0));
    assert!(
        gpio.claim_pwm(19, Hertz(-1.0), pct(1.0), DropState::Low)
            .is_err()
    );
}

fn edges(events: &[HalEvent]) -> Vec<(u8, Level)> {
    events
        .iter()
        .filter_map(|e| match e {
            HalEvent::Edge { pin, level, .. } => Some((*pin, *level)),
            _ => None,
        })
        .collect()
}

#[test]
fn edges_are_debounced_on_virtual_time() {
    let s = sim(&quiet(BoardModel::Pi4B));
    let board = s.board();
    let rx = board.events().subscribe(64);
    let gpio = board.gpio().unwrap();
    let mut input = gpio.claim_input(21, Pull::Down).unwrap();
    input.watch(Edge::Both, Duration::from_millis(10)).unwrap();
    let mut out = gpio.claim_output(20, Level::Low, DropState::Low).unwrap();
    // A bouncing contact: four transitions within 3 ms.
    out.write(Level::High).unwrap();
    for level in [Level::Low, Level::High, Level::Low] {
        board.sleep(Duration::from_millis(1));
        out.write(level).unwrap();
    }
    let first = drain(&rx);
    assert_eq!(edges(&first), vec![(21, Level::High)]);
    assert_eq!(first[0].at(), DEFAULT_SIM_START);
    // Once the window has passed, the settled level is reported.
    board.sleep(Duration::from_millis(100));
    assert_eq!(edges(&drain(&rx)), vec![(21, Level::Low)]);
    // A clean transition once the window after that acceptance has passed is
    // reported at once, stamped with the virtual time.
    board.sleep(Duration::from_millis(20));
    let now = board.now();
    out.write(Level::High).unwrap();
    let ev = drain(&rx);
    assert_eq!(edges(&ev), vec![(21, Level::High)]);
    assert_eq!(ev[0].at(), now);
    // Rising-only filter.
    input.watch(Edge::Rising, Duration::ZERO).unwrap();
    out.write(Level::Low).unwrap();
    out.write(Level::High).unwrap();
    assert_eq!(edges(&drain(&rx)), vec![(21, Level::High)]);
    input.unwatch().unwrap();
    out.write(Level::Low).unwrap();
    assert!(edges(&drain(&rx)).is_empty());
}

// ----- power -----

fn with_battery(level: f64) -> SimConfig {
    SimConfig {
        battery: Some(BatteryConfig {
            level_pct: pct(level),
            ..BatteryConfig::default()
        }),
        ..quiet(BoardModel::Pi4B)
    }
}

#[test]
fn losing_main_fails_over_to_battery_with_an_event_and_back() {
    let s = sim(&SimConfig {
        load_pct: pct(50.0),
        ..with_battery(100.0)
    });
    let board = s.board();
    let rx = s.subscribe(16);
    s.inject(SimFault::PowerSourceLost {
        source: PowerSourceKind::Main,
    });
    let ev = drain(&rx);
    assert!(
        matches!(
            ev.as_slice(),
            [HalEvent::PowerSource {
                from: PowerSourceKind::Main,
                to: PowerSourceKind::Battery,
                ..
            }]
        ),
        "{ev:?}"
    );
    let sample = board.sample();
    assert_eq!(sample.power_source, Reading::Ok(PowerSourceKind::Battery));
    assert_eq!(sample.main_power_available, Reading::Ok(false));
    s.run_for(secs(30 * 60));
    let b = board.battery().unwrap().status().unwrap();
    assert_eq!(b.state, ChargeState::Discharging);
    assert!(b.level.get() < 90.0 && b.level.get() > 50.0, "{b:?}");
    assert!(b.voltage.get() < 4.1, "{b:?}");
    // Selecting an unavailable source is refused.
    let supply = board.supply().unwrap();
    assert!(supply.select(PowerSourceKind::Main).is_err());
    assert_eq!(
        supply.select(PowerSourceKind::Solar).unwrap_err().kind(),
        HalErrorKind::NotFound
    );
    s.clear(&SimFault::PowerSourceLost {
        source: PowerSourceKind::Main,
    });
    assert!(drain(&rx).iter().any(|e| matches!(
        e,
        HalEvent::PowerSource {
            to: PowerSourceKind::Main,
            ..
        }
    )));
    s.run_for(secs(60));
    let b = board.battery().unwrap().status().unwrap();
    assert_eq!(b.state, ChargeState::Charging);
    // A commanded switch to battery sticks while main is fine.
    supply.select(PowerSourceKind::Battery).unwrap();
    s.run_for(secs(10));
    assert_eq!(s.state().source, PowerSourceKind::Battery);
}

#[test]
fn empty_battery_browns_the_board_out_and_main_revives_it() {
    let s = sim(&SimConfig {
        load_pct: Percent::FULL,
        ..with_battery(1.0)
    });
    s.inject(SimFault::PowerSourceLost {
        source: PowerSourceKind::Main,
    });
    assert!(s.is_powered());
    s.run_for(secs(30 * 60));
    assert!(!s.is_powered());
    assert_eq!(
        s.board().sample().cpu_temp(),
        Reading::Fault(HalErrorKind::Timeout)
    );
    s.clear_faults();
    assert!(s.is_powered());
}

#[test]
fn losing_main_without_battery_powers_off() {
    let s = sim(&quiet(BoardModel::Pi4B));
    s.inject(SimFault::PowerSourceLost {
        source: PowerSourceKind::Main,
    });
    assert!(!s.is_powered());
    assert_eq!(s.state().current_a.get(), 0.0);
}

#[test]
fn bad_cable_raises_under_voltage_events_and_clamps_the_clock() {
    let s = sim(&SimConfig {
        load_pct: Percent::FULL,
        ..quiet(BoardModel::Pi4B)
    });
    let board = s.board();
    let rx = s.subscribe(16);
    assert!(!board.power().unwrap().throttle().unwrap().under_voltage);
    s.inject(SimFault::UnderVoltage { supply_r_ohm: 0.8 });
    s.step(Duration::from_millis(100));
    let ev = drain(&rx);
    assert!(
        ev.iter()
            .any(|e| matches!(e, HalEvent::UnderVoltage { active: true, .. })),
        "{ev:?}"
    );
    let flags = board.power().unwrap().throttle().unwrap();
    assert!(flags.under_voltage && flags.under_voltage_occurred && flags.throttled);
    assert!(s.state().supply_v.get() < 4.63);
    assert_eq!(s.state().cpu_freq_mhz.get(), 600.0);
    s.clear(&SimFault::UnderVoltage { supply_r_ohm: 0.0 });
    s.step(Duration::from_millis(200));
    let ev = drain(&rx);
    assert!(
        ev.iter()
            .any(|e| matches!(e, HalEvent::UnderVoltage { active: false, .. })),
        "{ev:?}"
    );
    let flags = board.power().unwrap().throttle().unwrap();
    assert!(
        !flags.under_voltage && flags.under_voltage_occurred,
        "sticky bit stays"
    );
    // The voltage monitor input follows the under-voltage state.
    assert_eq!(
        board.sample().security_active(SecurityKind::VoltageMonitor),
        Some(false)
    );
}

#[test]
fn forced_low_voltage_on_zero2w_never_reports_under_voltage() {
    let s = sim(&SimConfig {
        faults: vec![SimFault::SupplyVoltage { voltage_v: 4.0 }],
        ..quiet(BoardModel::Zero2W)
    });
    s.run_for(secs(10));
    assert!((s.state().supply_v.get() - 4.0).abs() < 1e-12);
    let flags = s.board().power().unwrap().throttle().unwrap();
    assert!(!flags.under_voltage && !flags.under_voltage_occurred);
}

#[test]
fn supply_sags_with_current() {
    let s = sim(&quiet(BoardModel::Pi4B));
    let idle = s.state();
    s.set_load(Percent::FULL);
    s.step(secs(1));
    let busy = s.state();
    assert!(busy.current_a.get() > idle.current_a.get());
    assert!(busy.supply_v.get() < idle.supply_v.get());
    let r = 0.08;
    assert!((busy.supply_v.get() - (5.1 - busy.current_a.get() * r)).abs() < 1e-9);
    let sample = s.board().sample();
    let (v, i, p) = (
        sample.supply_voltage.ok().unwrap().get(),
        sample.current.ok().unwrap().get(),
        sample.power.ok().unwrap().get(),
    );
    assert!((v - busy.supply_v.get()).abs() <= 0.002 + 1e-9, "4 mV LSB");
    assert!((p - v * i).abs() < 0.002);
}

// ----- faults through board.sample() -----

#[test]
fn each_fault_gives_the_right_reading_kind() {
    let base = SimConfig {
        load_pct: pct(30.0),
        ..with_battery(80.0)
    };
    type Check = Box<dyn Fn(&SimBoard)>;
    let cases: Vec<(SimFault, Check)> = vec![
        (
            SimFault::SensorStuck {
                sensor: "cpu".into(),
            },
            Box::new(|s: &SimBoard| {
                let before = s.board().sample().cpu_temp();
                s.set_load(Percent::FULL);
                s.run_for(secs(120));
                assert!(before.is_ok());
                assert_eq!(s.board().sample().cpu_temp(), before);
                assert!(s.state().die_c.get() > before.ok().unwrap().get() + 5.0);
            }),
        ),
        (
            SimFault::SensorNoisy {
                sensor: "cpu".into(),
                sigma_c: 3.0,
            },
            Box::new(|s: &SimBoard| {
                let mut dev = Vec::new();
                for _ in 0..50 {
                    s.step(Duration::from_millis(100));
                    let t = s.board().sample().cpu_temp().ok().unwrap().get();
                    dev.push(t - s.state().die_c.get());
                }
                let var = dev.iter().map(|d| d * d).sum::<f64>() / dev.len() as f64;
                assert!(var.sqrt() > 1.5 && var.sqrt() < 6.0, "sigma {}", var.sqrt());
            }),
        ),
        (
            SimFault::SensorMissing {
                sensor: "ambient".into(),
            },
            Box::new(|s: &SimBoard| {
                let sample = s.board().sample();
                assert_eq!(
                    sample.temperature(wrale_core::model::SensorKind::Ambient),
                    Reading::Missing
                );
                assert!(sample.cpu_temp().is_ok());
                let scan = s.board().i2c_buses()[0].scan().unwrap();
                assert_eq!(scan, vec![0x36, 0x40]);
            }),
        ),
        (
            SimFault::SensorFault {
                sensor: "cpu".into(),
            },
            Box::new(|s: &SimBoard| {
                assert_eq!(
                    s.board().sample().cpu_temp(),
                    Reading::Fault(HalErrorKind::SensorFault)
                );
            }),
        ),
        (
            SimFault::BusError {
                bus: "i2c-1".into(),
            },
            Box::new(|s: &SimBoard| {
                let sample = s.board().sample();
                let bus = HalErrorKind::Bus;
                assert_eq!(
                    sample.temperature(wrale_core::model::SensorKind::Ambient),
                    Reading::Fault(bus)
                );
                assert_eq!(sample.supply_voltage, Reading::Fault(bus));
                assert_eq!(sample.current, Reading::Fault(bus));
                assert_eq!(sample.battery, Reading::Fault(bus));
                assert!(sample.cpu_temp().is_ok(), "the SoC sensor is not on I2C");
                assert!(sample.throttle.is_ok(), "the firmware is not on I2C");
                let err = s.board().i2c_buses()[0].scan().unwrap_err();
                assert_eq!(err.kind(), HalErrorKind::Bus);
            }),
        ),
        (
            SimFault::SensorMissing {
                sensor: "power".into(),
            },
            Box::new(|s: &SimBoard| {
                assert_eq!(s.board().sample().supply_voltage, Reading::Missing);
            }),
        ),
        (
            SimFault::SensorMissing {
                sensor: "battery".into(),
            },
            Box::new(|s: &SimBoard| {
                assert_eq!(s.board().sample().battery, Reading::Missing);
                assert_eq!(s.board().i2c_buses()[0].scan().unwrap(), vec![0x40, 0x44]);
            }),
        ),
        (
            SimFault::UnderVoltage { supply_r_ohm: 1.0 },
            Box::new(|s: &SimBoard| {
                s.step(secs(1));
                let t = s.board().sample().throttle.ok().unwrap();
                assert!(t.under_voltage);
            }),
        ),
        (
            SimFault::FanStall,
            Box::new(|s: &SimBoard| {
                s.board()
                    .fan("fan0")
                    .unwrap()
                    .set_duty(Percent::FULL)
                    .unwrap();
                s.step(secs(3));
                assert_eq!(
                    s.board().sample().fans[0].rpm,
                    Reading::Ok(wrale_core::units::Rpm(0.0))
                );
            }),
        ),
        (
            SimFault::CaseOpened,
            Box::new(|s: &SimBoard| {
                assert_eq!(
                    s.board().sample().security_active(SecurityKind::CaseSwitch),
                    Some(true)
                );
            }),
        ),
        (
            SimFault::PowerSourceLost {
                source: PowerSourceKind::Main,
            },
            Box::new(|s: &SimBoard| {
                let sample = s.board().sample();
                assert_eq!(sample.power_source, Reading::Ok(PowerSourceKind::Battery));
                assert_eq!(sample.main_power_available, Reading::Ok(false));
            }),
        ),
    ];
    for (fault, check) in cases {
        let s = sim(&base);
        s.try_inject(fault.clone()).unwrap();
        check(&s);
        assert_eq!(s.state().faults, vec![fault.clone()]);
        s.clear(&fault);
        assert!(s.state().faults.is_empty());
        let sample = s.board().sample();
        assert!(
            sample.cpu_temp().is_ok() && sample.supply_voltage.is_ok(),
            "{fault}"
        );
    }
}

#[test]
fn unknown_fault_targets_are_refused() {
    let s = sim(&quiet(BoardModel::Pi4B));
    assert!(
        s.try_inject(SimFault::SensorStuck {
            sensor: "gpu".into()
        })
        .is_err()
    );
    assert!(
        s.try_inject(SimFault::BusError {
            bus: "i2c-7".into()
        })
        .is_err()
    );
    assert!(
        s.try_inject(SimFault::FanDegraded { effectiveness: 2.0 })
            .is_err()
    );
    let bad = SimConfig {
        faults: vec![SimFault::SensorMissing {
            sensor: "nope".into(),
        }],
        ..quiet(BoardModel::Pi4B)
    };
    assert_eq!(
        SimBoard::new(&bad).unwrap_err().kind(),
        HalErrorKind::InvalidArgument
    );
    let fanless = SimConfig {
        cooling: Some(Cooling::Fan),
        ..quiet(BoardModel::Zero2W)
    };
    let err = SimBoard::new(&fanless).unwrap_err();
    assert!(err.to_string().contains("no fan"), "{err}");
}

// ----- security, platform, clock -----

#[test]
fn security_inputs_publish_on_change_and_drive_their_pins() {
    let s = sim(&quiet(BoardModel::Pi4B));
    let board = s.board();
    let rx = s.subscribe(16);
    let ids: Vec<&str> = board.security().iter().map(|i| i.id()).collect();
    assert_eq!(ids, ["case", "motion", "tamper", "voltage_monitor"]);
    let pir = board.gpio().unwrap().claim_input(6, Pull::Down).unwrap();
    assert_eq!(pir.read().unwrap(), Level::Low);
    s.set_security(SecurityKind::Motion, true);
    s.set_security(SecurityKind::Motion, true);
    let ev = drain(&rx);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(matches!(
        &ev[0],
        HalEvent::Security { id, kind: SecurityKind::Motion, active: true, .. } if id == "motion"
    ));
    assert_eq!(pir.read().unwrap(), Level::High);
    assert_eq!(
        board.sample().security_active(SecurityKind::Motion),
        Some(true)
    );
    s.apply(SimAction::Tamper { active: true });
    assert!(drain(&rx).iter().any(|e| matches!(
        e,
        HalEvent::Security {
            kind: SecurityKind::Tamper,
            active: true,
            ..
        }
    )));
    // zero2w has no voltage monitor; generic has no inputs at all.
    assert_eq!(sim(&quiet(BoardModel::Zero2W)).board().security().len(), 3);
    assert!(
        sim(&quiet(BoardModel::Generic))
            .board()
            .security()
            .is_empty()
    );
}

#[test]
fn script_from_toml_runs_on_virtual_time() {
    let text = r#"
        model = "pi4b"
        seed = 3
        noise = false
        ambient_c = 25.0

        [[script]]
        at = "10s"
        action = "set_load"
        load_pct = 100.0

        [[script]]
        at = "20s"
        action = "inject"
        fault = { kind = "fan_stall" }

        [[script]]
        at = "30s"
        action = "case_open"

        [[script]]
        at = "40s"
        action = "set_ambient"
        ambient_c = 30.0
    "#;
    let cfg: SimConfig = toml::from_str(text).unwrap();
    assert_eq!(cfg.script.len(), 4);
    let s = sim(&cfg);
    let rx = s.subscribe(16);
    s.run_for(secs(15));
    assert_eq!(s.state().load_pct, Percent::FULL);
    assert!(s.state().faults.is_empty());
    s.run_for(secs(10));
    assert_eq!(s.state().faults, vec![SimFault::FanStall]);
    s.run_for(secs(10));
    let ev = drain(&rx);
    let at = match &ev[..] {
        [
            HalEvent::Security {
                at, active: true, ..
            },
        ] => *at,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        at,
        DEFAULT_SIM_START + secs(30),
        "stamped with the script time"
    );
    s.run_for(secs(10));
    assert_eq!(s.state().ambient_c, Celsius(30.0));

    let bad = "model = \"pi4b\"\nbogus = 1\n";
    assert!(toml::from_str::<SimConfig>(bad).is_err());
    let bad_step = "[[script]]\nat = \"1s\"\naction = \"set_load\"\nload_pct = 5.0\nextra = 1\n";
    assert!(toml::from_str::<SimConfig>(bad_step).is_err());
}

#[test]
fn faults_and_state_are_snake_case_json() {
    let f = SimFault::SensorNoisy {
        sensor: "cpu".into(),
        sigma_c: 0.5,
    };
    let j = serde_json::to_string(&f).unwrap();
    assert_eq!(j, r#"{"kind":"sensor_noisy","sensor":"cpu","sigma_c":0.5}"#);
    assert_eq!(serde_json::from_str::<SimFault>(&j).unwrap(), f);
    assert_eq!(
        serde_json::to_string(&SimFault::FanStall).unwrap(),
        r#"{"kind":"fan_stall"}"#
    );
    let st = sim(&quiet(BoardModel::Pi4B)).state();
    let v = serde_json::to_value(&st).unwrap();
    assert!(v.get("die_c").is_some() && v.get("supply_v").is_some());
    let back: wrale_hal::sim::SimState = serde_json::from_value(v).unwrap();
    assert_eq!(
        (back.at, back.powered, back.source),
        (st.at, st.powered, st.source)
    );
    let step = ScriptStep::new(
        secs(90),
        SimAction::Inject {
            fault: SimFault::CaseOpened,
        },
    );
    let j = serde_json::to_string(&step).unwrap();
    assert_eq!(
        j,
        r#"{"at":"1m 30s","action":"inject","fault":{"kind":"case_opened"}}"#
    );
}

#[test]
fn virtual_clock_sleep_advances_the_model() {
    let s = sim(&quiet(BoardModel::Pi4B));
    let board = s.board();
    assert_eq!(board.now(), DEFAULT_SIM_START);
    assert_eq!(board.now().to_string(), "2026-01-01T00:00:00.000Z");
    let fan = board.fan("fan0").unwrap();
    fan.set_duty(Percent::FULL).unwrap();
    board.sleep(secs(2));
    assert_eq!(board.now(), DEFAULT_SIM_START + secs(2));
    assert_eq!(fan.rpm().unwrap().get(), 5000.0, "spun up during the sleep");
    assert_eq!(s.now(), board.now());
    assert_eq!(s.elapsed(), secs(2));
}

#[test]
fn realtime_mode_follows_the_wall_clock() {
    let s = sim(&SimConfig {
        time: SimTime::Realtime,
        ..quiet(BoardModel::Pi4B)
    });
    let t0 = s.now();
    std::thread::sleep(Duration::from_millis(300));
    let dt = s.now().saturating_since(t0);
    assert!(dt >= Duration::from_millis(300) && dt < secs(5), "{dt:?}");
    // Stepping still fast-forwards on top of the wall clock.
    s.step(secs(60));
    assert!(s.now().saturating_since(t0) >= secs(60));
}

#[test]
fn open_via_backend_config_and_load_generator() {
    let board = wrale_hal::open(&BackendConfig::Sim(quiet(BoardModel::Cm4))).unwrap();
    assert_eq!(board.backend(), "sim");
    assert_eq!(board.profile().model, BoardModel::Cm4);
    let storage = board.platform().unwrap().storage().unwrap();
    assert_eq!(storage[0].kind, StorageKind::Emmc);
    assert_eq!(storage[0].life_time_a, Some(1));
    let load = board.load_generator().unwrap();
    load.set_load(pct(60.0)).unwrap();
    assert_eq!(board.platform().unwrap().cpu_load().unwrap(), pct(60.0));
    let before = storage[0].bytes_written;
    board.sleep(secs(10));
    let after = board.platform().unwrap().storage().unwrap()[0].bytes_written;
    assert!(after > before + 100_000, "{before} -> {after}");
    load.set_load(Percent::ZERO).unwrap();
    assert_eq!(board.platform().unwrap().cpu_load().unwrap(), Percent::ZERO);
    let sd = sim(&quiet(BoardModel::Pi4B)).board();
    let sd = sd.platform().unwrap().storage().unwrap();
    assert_eq!(sd[0].kind, StorageKind::Sd);
    assert_eq!(sd[0].life_time_a, None);
}

#[test]
fn power_off_stops_readings_and_the_board_cools() {
    let s = sim(&SimConfig {
        load_pct: Percent::FULL,
        ..quiet(BoardModel::Pi4B)
    });
    let board = s.board();
    let hot = s.state().die_c.get();
    s.power_off();
    assert!(!s.is_powered());
    let sample = board.sample();
    assert_eq!(sample.cpu_temp(), Reading::Fault(HalErrorKind::Timeout));
    assert_eq!(sample.supply_voltage, Reading::Fault(HalErrorKind::Timeout));
    assert!(board.gpio().unwrap().claim_input(4, Pull::Up).is_err());
    s.run_for(secs(30 * 60));
    let st = s.state();
    assert!(
        st.die_c.get() < hot - 10.0 && st.power_w.get() == 0.0,
        "{st:?}"
    );
    assert_eq!(st.load_pct, Percent::ZERO);
    s.power_on();
    assert!(s.is_powered());
    assert!(board.sample().cpu_temp().is_ok());
}

#[test]
fn battery_charges_on_main() {
    let s = sim(&with_battery(50.0));
    s.run_for(secs(30 * 60));
    let st = s.state();
    let level = st.battery_level_pct.unwrap().get();
    assert!(level > 60.0, "{level}");
    assert!(st.battery_current_a.unwrap().get() < 0.0);
    let b = s.board().battery().unwrap().status().unwrap();
    assert_eq!(b.state, ChargeState::Charging);
    s.board().battery().unwrap().set_charging(false).unwrap();
    s.step(secs(1));
    let b = s.board().battery().unwrap().status().unwrap();
    assert_eq!(b.state, ChargeState::Idle);
    assert!(!b.charging_enabled);
}

#[test]
fn reads_are_pure_the_order_and_number_of_reads_changes_nothing() {
    let cfg = SimConfig {
        seed: 42,
        load_pct: pct(80.0),
        battery: Some(BatteryConfig::default()),
        ..SimConfig::default()
    };
    let (busy, idle) = (sim(&cfg), sim(&cfg));
    let board = busy.board();
    for _ in 0..50 {
        for _ in 0..3 {
            let _ = board.sample();
            let _ = board.thermal_sensor("cpu").unwrap().read();
            let _ = board.power().unwrap().voltage();
            let _ = busy.state();
        }
        busy.step(Duration::from_millis(700));
        idle.step(Duration::from_millis(700));
    }
    assert_eq!(busy.board().sample(), idle.board().sample());
    assert_eq!(busy.state(), idle.state());
}

#[test]
fn security_pins_give_debounced_edges() {
    let s = sim(&quiet(BoardModel::Pi4B));
    let board = s.board();
    let rx = s.subscribe(16);
    let mut case = board.gpio().unwrap().claim_input(5, Pull::Up).unwrap();
    case.watch(Edge::Both, Duration::from_millis(50)).unwrap();
    s.apply(SimAction::CaseOpen);
    s.step(Duration::from_millis(10));
    s.apply(SimAction::CaseClose);
    let ev = drain(&rx);
    assert_eq!(edges(&ev), vec![(5, Level::High)]);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, HalEvent::Security { .. }))
            .count(),
        2,
        "security events are not debounced: {ev:?}"
    );
    s.step(Duration::from_millis(100));
    assert_eq!(edges(&drain(&rx)), vec![(5, Level::Low)]);
}

// ----- properties -----

fn steady_die(load: f64, duty: f64) -> f64 {
    let s = sim(&SimConfig {
        load_pct: pct(load),
        fan_duty_pct: pct(duty),
        ambient_c: Some(Celsius(25.0)),
        ..quiet(BoardModel::Pi4B)
    });
    s.run_for(secs(3000));
    s.state().die_c.get()
}

fn run_script(seed: u64, noise: bool, script: &[ScriptStep]) -> Vec<wrale_core::Sample> {
    let s = sim(&SimConfig {
        seed,
        noise,
        script: script.to_vec(),
        battery: Some(BatteryConfig::default()),
        ..SimConfig::default()
    });
    let board = s.board();
    (0..40)
        .map(|_| {
            s.step(Duration::from_millis(500));
            board.sample()
        })
        .collect()
}

fn action() -> impl Strategy<Value = SimAction> {
    prop_oneof![
        (0.0f64..=100.0).prop_map(|l| SimAction::SetLoad { load_pct: pct(l) }),
        (0.0f64..=100.0).prop_map(|d| SimAction::SetFanDuty { duty_pct: pct(d) }),
        (10.0f64..40.0).prop_map(|t| SimAction::SetAmbient {
            ambient_c: Celsius(t)
        }),
        Just(SimAction::Inject {
            fault: SimFault::FanStall
        }),
        Just(SimAction::CaseOpen),
        (0.1f64..1.5).prop_map(|r| SimAction::Inject {
            fault: SimFault::UnderVoltage { supply_r_ohm: r }
        }),
        Just(SimAction::Inject {
            fault: SimFault::PowerSourceLost {
                source: PowerSourceKind::Main
            }
        }),
        Just(SimAction::ClearFaults),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn temperature_rises_with_load(a in 0.0f64..=100.0, b in 0.0f64..=100.0) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let (t_lo, t_hi) = (steady_die(lo, 0.0), steady_die(hi, 0.0));
        prop_assert!(t_hi >= t_lo - 1e-9, "load {lo} -> {t_lo}, {hi} -> {t_hi}");
        if hi - lo > 10.0 {
            prop_assert!(t_hi > t_lo + 1.0);
        }
    }

    #[test]
    fn temperature_falls_with_fan_duty(a in 0.0f64..=100.0, b in 0.0f64..=100.0) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let (t_lo, t_hi) = (steady_die(100.0, lo), steady_die(100.0, hi));
        prop_assert!(t_hi <= t_lo + 1e-9, "duty {lo} -> {t_lo}, {hi} -> {t_hi}");
        if hi >= 20.0 && hi - lo > 10.0 {
            prop_assert!(t_hi < t_lo - 0.5);
        }
    }

    #[test]
    fn under_voltage_is_set_exactly_below_the_threshold(
        r in 0.0f64..1.2, load in 0.0f64..=100.0, steps in 1usize..30,
    ) {
        let s = sim(&SimConfig {
            load_pct: pct(load),
            supply_r_ohm: Some(Ohms(r)),
            ..quiet(BoardModel::Pi4B)
        });
        let power = s.board().power().unwrap().clone();
        for _ in 0..steps {
            s.step(Duration::from_millis(100));
            let st = s.state();
            let flags = power.throttle().unwrap();
            prop_assert_eq!(flags.under_voltage, st.supply_v.get() < 4.63, "{:?}", st);
            prop_assert_eq!(st.throttle, flags);
        }
    }

    #[test]
    fn same_seed_and_script_same_readings(
        seed in any::<u64>(),
        steps in proptest::collection::vec((0u64..20_000, action()), 0..6),
    ) {
        let script: Vec<ScriptStep> = steps
            .into_iter()
            .map(|(ms, a)| ScriptStep::new(Duration::from_millis(ms), a))
            .collect();
        let a = run_script(seed, true, &script);
        let b = run_script(seed, true, &script);
        prop_assert_eq!(&a, &b);
        let c = run_script(seed.wrapping_add(1), true, &script);
        prop_assert_ne!(&a, &c);
        // Without noise the seed does not matter.
        prop_assert_eq!(run_script(seed, false, &script), run_script(seed ^ 0xFF, false, &script));
    }

    #[test]
    fn splitting_steps_never_changes_the_result(
        splits in proptest::collection::vec(1u64..2_000, 1..20),
    ) {
        let cfg = SimConfig {
            seed: 9,
            load_pct: pct(70.0),
            script: vec![ScriptStep::new(Duration::from_millis(1234), SimAction::SetLoad { load_pct: Percent::FULL })],
            ..SimConfig::default()
        };
        let (a, b) = (sim(&cfg), sim(&cfg));
        let total: u64 = splits.iter().sum();
        for ms in &splits {
            a.step(Duration::from_millis(*ms));
        }
        b.step(Duration::from_millis(total));
        prop_assert_eq!(a.state(), b.state());
        prop_assert_eq!(a.board().sample(), b.board().sample());
    }
}

// ----- boots -----

#[test]
fn the_boot_id_changes_with_every_boot_and_only_then() {
    let c = quiet(BoardModel::Pi4B);
    let s = sim(&c);
    let board = s.board();
    let first = board.boot().unwrap();
    assert_eq!(first.booted_at, DEFAULT_SIM_START);
    assert_eq!(first.boot_id.len(), 36, "{}", first.boot_id);
    // Deterministic: the same config gives the same id; another seed another one.
    assert_eq!(sim(&c).board().boot().unwrap(), first);
    let other = sim(&SimConfig {
        seed: 7,
        ..c.clone()
    })
    .board()
    .boot()
    .unwrap();
    assert_ne!(other.boot_id, first.boot_id);
    // Time passing, load and faults are not boots.
    s.set_load(Percent::FULL);
    s.inject(SimFault::FanStall);
    s.run_for(secs(120));
    assert_eq!(board.boot().unwrap(), first);

    // A reboot command: a new id, booted now, the sticky throttle bits cleared.
    s.run_for(secs(60));
    let at = s.now();
    s.reboot();
    assert!(s.is_powered());
    let second = board.boot().unwrap();
    assert_ne!(second.boot_id, first.boot_id);
    assert_eq!(second.booted_at, at);
    assert!(
        !board
            .power()
            .unwrap()
            .throttle()
            .unwrap()
            .throttled_occurred
    );

    // A scripted reboot, then power off and on: one new id each.
    s.apply(SimAction::Reboot);
    let third = board.boot().unwrap();
    assert_ne!(third.boot_id, second.boot_id);
    s.power_off();
    assert_eq!(board.boot().unwrap_err().kind(), HalErrorKind::Timeout);
    s.run_for(secs(10));
    s.power_on();
    let fourth = board.boot().unwrap();
    assert!(
        ![&first, &second, &third]
            .iter()
            .any(|b| b.boot_id == fourth.boot_id)
    );
    assert_eq!(fourth.booted_at, s.now());
}

#[test]
fn a_brown_out_is_a_reboot() {
    let s = sim(&quiet(BoardModel::Pi4B));
    let before = s.board().boot().unwrap();
    s.inject(SimFault::PowerSourceLost {
        source: PowerSourceKind::Main,
    });
    assert!(!s.is_powered());
    s.run_for(secs(5));
    s.clear_faults();
    assert!(s.is_powered());
    let after = s.board().boot().unwrap();
    assert_ne!(after.boot_id, before.boot_id);
    assert_eq!(after.booted_at, s.now());
}
