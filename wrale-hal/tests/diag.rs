//! Diagnostics on the simulator (healthy and with injected faults) and on the
//! linux backend's fixture trees.
#![cfg(feature = "sim")]

use std::time::Duration;

use wrale_core::board::BoardModel;
use wrale_core::model::Level;
use wrale_core::units::Percent;
use wrale_hal::SimConfig;
use wrale_hal::diag::{
    self, CheckKind, CheckResult, CheckStatus, DiagOptions, DiagReport, DiagValue,
    ExpectedI2cDevice,
};
use wrale_hal::gpio::DropState;
use wrale_hal::sim::{SimBoard, SimFault};

/// Options that expect the simulated HAT devices on `i2c-1`.
fn options() -> DiagOptions {
    let mut o = DiagOptions::default();
    o.i2c.expected = vec![
        ExpectedI2cDevice::new("i2c-1", 0x40, "ina219"),
        ExpectedI2cDevice::new("i2c-1", 0x44, "sht3x"),
    ];
    o
}

fn sim(model: BoardModel) -> SimBoard {
    let config = SimConfig {
        model,
        seed: 7,
        ..SimConfig::default()
    };
    SimBoard::new(&config).expect("sim board")
}

fn pi4() -> SimBoard {
    sim(BoardModel::Pi4B)
}

/// The report as pretty JSON, for assertion messages.
fn dump(report: &DiagReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

fn one(report: &DiagReport, name: CheckKind, subject: Option<&str>) -> CheckResult {
    report
        .find(name, subject)
        .unwrap_or_else(|| panic!("no {name} {subject:?} in {}", dump(report)))
        .clone()
}

fn number(r: &CheckResult, key: &str) -> f64 {
    r.measured(key)
        .and_then(DiagValue::as_f64)
        .unwrap_or_else(|| panic!("no number {key} in {r:#?}"))
}

fn gen_load(sim: &SimBoard) -> Percent {
    sim.state().load_pct
}

#[test]
fn healthy_pi4_passes_every_check() {
    let sim = pi4();
    let board = sim.board();
    let report = diag::run(&board, &options());
    assert_eq!(report.status, CheckStatus::Pass, "{}", dump(&report));
    for kind in CheckKind::ALL {
        assert_eq!(
            report.status_of(kind),
            CheckStatus::Pass,
            "{kind}: {}",
            dump(&report)
        );
    }
    assert_eq!(report.model, BoardModel::Pi4B);
    assert_eq!(report.backend, "sim");
    // Virtual time moved by what the checks waited for, at least the 10 s load test.
    assert!(
        report.finished_at.saturating_since(report.started_at) >= Duration::from_secs(10),
        "{} -> {}",
        report.started_at,
        report.finished_at
    );
    let fan = one(&report, CheckKind::FanSpin, Some("fan0"));
    assert!(number(&fan, "rpm_full") > 4000.0, "{fan:#?}");
    let i2c = one(&report, CheckKind::I2cScan, Some("i2c-1"));
    assert_eq!(
        i2c.measured("found").and_then(DiagValue::as_str),
        Some("0x40 0x44")
    );
    let load = one(&report, CheckKind::SupplyUnderLoad, None);
    let min = number(&load, "min_supply_v");
    assert!(min > 4.73 && min < 5.1, "{load:#?}");

    // The report is JSON for APIs and twins: snake_case, and it round-trips.
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["status"], "pass");
    assert_eq!(json["checks"][0]["name"], "storage_wear");
    let back: DiagReport = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, report);
    if std::env::var_os("WRALE_DIAG_DUMP").is_some() {
        println!("{}", dump(&report));
    }
}

#[test]
fn same_seed_same_report() {
    let a = diag::run(&pi4().board(), &options());
    let b = diag::run(&pi4().board(), &options());
    assert_eq!(a, b);
}

#[test]
fn fan_stall_fails_with_zero_rpm_and_duty_is_restored() {
    let sim = pi4();
    let board = sim.board();
    let fan = board.fan("fan0").expect("fan0").clone();
    fan.set_duty(Percent::new(35.0).expect("pct"))
        .expect("duty");
    sim.inject(SimFault::FanStall);
    let report = diag::run(&board, &options());
    let r = one(&report, CheckKind::FanSpin, Some("fan0"));
    assert_eq!(r.status, CheckStatus::Fail, "{r:#?}");
    assert_eq!(number(&r, "rpm_full"), 0.0);
    assert!(r.message.contains("stalled"), "{}", r.message);
    assert_eq!(report.status, CheckStatus::Fail);
    assert_eq!(fan.duty().expect("duty").get(), 35.0);
    assert_eq!(number(&r, "restored_duty_pct"), 35.0);
}

#[test]
fn previous_fan_duty_is_restored_after_the_spin_test() {
    let sim = pi4();
    let board = sim.board();
    let fan = board.fan("fan0").expect("fan0").clone();
    for duty in [0.0, 42.0, 100.0] {
        fan.set_duty(Percent::new(duty).expect("pct"))
            .expect("duty");
        let results = diag::fan_spin(&board, &options());
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].status, CheckStatus::Pass, "{:#?}", results[0]);
        assert_eq!(number(&results[0], "previous_duty_pct"), duty);
        assert_eq!(
            fan.duty().expect("duty").get(),
            duty,
            "after a test from {duty} %"
        );
    }
}

#[test]
fn undervoltage_fails_the_supply_check_under_load() {
    let sim = pi4();
    sim.inject(SimFault::UnderVoltage { supply_r_ohm: 0.8 });
    let board = sim.board();
    let report = diag::run(&board, &options());
    let r = one(&report, CheckKind::SupplyUnderLoad, None);
    assert_eq!(r.status, CheckStatus::Fail, "{r:#?}");
    assert!(number(&r, "min_supply_v") < 4.63, "{r:#?}");
    assert_eq!(
        r.measured("under_voltage_seen"),
        Some(&DiagValue::Bool(true))
    );
    assert_eq!(report.status, CheckStatus::Fail);
    assert_eq!(gen_load(&sim), Percent::ZERO, "load reset after the test");
}

#[test]
fn load_is_reset_to_zero_after_the_load_checks() {
    let sim = pi4();
    let board = sim.board();
    let r = diag::supply_under_load(&board, &options());
    assert_eq!(r[0].status, CheckStatus::Pass, "{:#?}", r[0]);
    assert_eq!(gen_load(&sim), Percent::ZERO);
    let r = diag::sensor_plausibility(&board, &options());
    assert!(r.iter().all(|c| c.status == CheckStatus::Pass), "{r:#?}");
    assert_eq!(gen_load(&sim), Percent::ZERO);
    // Also when the monitor fails half-way (the bus dies).
    sim.inject(SimFault::BusError {
        bus: "i2c-1".into(),
    });
    let r = diag::supply_under_load(&board, &options());
    assert_eq!(r[0].status, CheckStatus::Fail, "{:#?}", r[0]);
    assert_eq!(gen_load(&sim), Percent::ZERO);
}

#[test]
fn bus_error_fails_the_scan_and_the_ambient_sensor() {
    let sim = pi4();
    sim.inject(SimFault::BusError {
        bus: "i2c-1".into(),
    });
    let board = sim.board();
    let report = diag::run(&board, &options());
    let scan = one(&report, CheckKind::I2cScan, Some("i2c-1"));
    assert_eq!(scan.status, CheckStatus::Fail, "{scan:#?}");
    assert_eq!(
        scan.measured("error_kind").and_then(DiagValue::as_str),
        Some("bus")
    );
    assert!(scan.message.contains("0x40 (ina219)"), "{}", scan.message);
    let ambient = one(&report, CheckKind::SensorPlausibility, Some("ambient"));
    assert_eq!(ambient.status, CheckStatus::Fail, "{ambient:#?}");
    let cpu = one(&report, CheckKind::SensorPlausibility, Some("cpu"));
    assert_eq!(
        cpu.status,
        CheckStatus::Pass,
        "the SoC sensor is not on I2C"
    );
    // Fan, GPIO and storage do not depend on the bus.
    assert_eq!(report.status_of(CheckKind::FanSpin), CheckStatus::Pass);
    assert_eq!(report.status_of(CheckKind::GpioLoopback), CheckStatus::Pass);
    assert_eq!(report.status_of(CheckKind::StorageWear), CheckStatus::Pass);
}

#[test]
fn missing_device_fails_the_scan_naming_it() {
    let sim = pi4();
    sim.inject(SimFault::SensorMissing {
        sensor: "ambient".into(),
    });
    let report = diag::run(&sim.board(), &DiagOptions::only(&[CheckKind::I2cScan]));
    // Nothing expected: the scan only lists what answers.
    assert_eq!(report.status, CheckStatus::Pass, "{}", dump(&report));
    let report = diag::run(
        &sim.board(),
        &DiagOptions {
            checks: vec![CheckKind::I2cScan],
            ..options()
        },
    );
    let r = one(&report, CheckKind::I2cScan, Some("i2c-1"));
    assert_eq!(r.status, CheckStatus::Fail);
    assert_eq!(
        r.measured("missing").and_then(DiagValue::as_str),
        Some("0x44 (sht3x)")
    );
}

#[test]
fn stuck_cpu_sensor_under_load_warns() {
    let sim = pi4();
    sim.inject(SimFault::SensorStuck {
        sensor: "cpu".into(),
    });
    let board = sim.board();
    let report = diag::run(&board, &options());
    let cpu = one(&report, CheckKind::SensorPlausibility, Some("cpu"));
    assert_eq!(cpu.status, CheckStatus::Warn, "{cpu:#?}");
    assert_eq!(cpu.measured("stuck_suspect"), Some(&DiagValue::Bool(true)));
    assert_eq!(report.status, CheckStatus::Warn, "{}", dump(&report));

    // Without load the same sensor is not judged (no false positive at idle).
    let mut o = options();
    o.sensors.apply_load = false;
    let r = diag::sensor_plausibility(&board, &o);
    let cpu = r
        .iter()
        .find(|c| c.subject.as_deref() == Some("cpu"))
        .expect("cpu");
    assert_eq!(cpu.status, CheckStatus::Pass, "{cpu:#?}");
}

#[test]
fn noisy_sensor_fails_on_rate_of_change() {
    let sim = pi4();
    sim.inject(SimFault::SensorNoisy {
        sensor: "ambient".into(),
        sigma_c: 25.0,
    });
    let r = diag::sensor_plausibility(&sim.board(), &options());
    let ambient = r
        .iter()
        .find(|c| c.subject.as_deref() == Some("ambient"))
        .expect("ambient");
    assert_eq!(ambient.status, CheckStatus::Fail, "{ambient:#?}");
}

#[test]
fn pin_held_by_someone_else_fails_the_loopback() {
    let sim = pi4();
    let board = sim.board();
    let gpio = board.gpio().expect("gpio").clone();
    let holder = gpio
        .claim_output(21, Level::Low, DropState::Release)
        .expect("claim 21");
    let r = diag::gpio_loopback(&board, &options());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, CheckStatus::Fail, "{:#?}", r[0]);
    assert!(r[0].message.contains("PinUsed"), "{}", r[0].message);
    assert_eq!(r[0].measured("blocked_pin"), Some(&DiagValue::Int(21)));
    let claimed = gpio.claimed();
    assert!(
        claimed.contains(&21) && !claimed.contains(&20),
        "the check released its own pin: {claimed:?}"
    );

    drop(holder);
    let r = diag::gpio_loopback(&board, &options());
    assert_eq!(r[0].status, CheckStatus::Pass, "{:#?}", r[0]);
    let claimed = gpio.claimed();
    assert!(
        !claimed.contains(&20) && !claimed.contains(&21),
        "{claimed:?}"
    );
}

#[test]
fn other_models() {
    // Zero 2 W: no fan, no under-voltage detector.
    let report = diag::run(&sim(BoardModel::Zero2W).board(), &options());
    assert_eq!(
        report.status_of(CheckKind::FanSpin),
        CheckStatus::Skip,
        "{}",
        dump(&report)
    );
    assert!(report.status <= CheckStatus::Pass, "{}", dump(&report));

    // Pi 5 and CM4 (eMMC) pass.
    for model in [BoardModel::Pi5, BoardModel::Cm4] {
        let report = diag::run(&sim(model).board(), &options());
        assert_eq!(
            report.status,
            CheckStatus::Pass,
            "{model}: {}",
            dump(&report)
        );
    }
    let report = diag::run(
        &sim(BoardModel::Cm4).board(),
        &DiagOptions::only(&[CheckKind::StorageWear]),
    );
    let r = one(&report, CheckKind::StorageWear, Some("mmcblk0"));
    assert_eq!(r.measured("kind").and_then(DiagValue::as_str), Some("emmc"));
}

/// A board from the fixture tree: no GPIO, no load generator use.
#[cfg(all(feature = "linux", target_os = "linux"))]
fn fixture(name: &str) -> wrale_hal::Board {
    use wrale_hal::{BackendConfig, LinuxConfig};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sysfs")
        .join(name);
    wrale_hal::open(&BackendConfig::Linux(LinuxConfig {
        root,
        gpio_chip: None,
        ..Default::default()
    }))
    .expect("open fixture")
}

/// Fixture files do not change and the wall clock is real here: read quickly, and
/// leave out the checks that would drive the test machine's CPU or write to the
/// fixture (a fan's `pwm1`).
#[cfg(all(feature = "linux", target_os = "linux"))]
fn fixture_options() -> DiagOptions {
    let mut o = DiagOptions::default();
    o.checks
        .retain(|c| !matches!(c, CheckKind::SupplyUnderLoad | CheckKind::FanSpin));
    o.sensors.apply_load = false;
    o.sensors.reads = 3;
    o.sensors.interval = Duration::from_millis(5);
    o
}

#[cfg(all(feature = "linux", target_os = "linux"))]
#[test]
fn linux_fixture_pi4() {
    let board = fixture("pi4");
    let report = diag::run(&board, &fixture_options());
    assert_eq!(report.backend, "linux");
    assert_eq!(report.model, BoardModel::Pi4B);
    // SD card: pass, bytes written from /proc/diskstats (409600 sectors).
    let sd = one(&report, CheckKind::StorageWear, Some("mmcblk0"));
    assert_eq!(sd.status, CheckStatus::Pass, "{sd:#?}");
    assert_eq!(
        sd.measured("bytes_written"),
        Some(&DiagValue::Int(409_600 * 512))
    );
    // The SoC zone reads 54.53 °C: plausible; a still die is not judged without load.
    let cpu = one(&report, CheckKind::SensorPlausibility, Some("cpu"));
    assert_eq!(cpu.status, CheckStatus::Pass, "{cpu:#?}");
    assert_eq!(number(&cpu, "first_c"), 54.53);
    assert!(
        report
            .results(CheckKind::SensorPlausibility)
            .all(|c| c.status == CheckStatus::Pass),
        "{}",
        dump(&report)
    );
    // get_throttled = 0x40005: under-voltage now.
    let supply = one(&report, CheckKind::SupplyVoltage, None);
    assert_eq!(supply.status, CheckStatus::Fail, "{supply:#?}");
    assert_eq!(
        supply.measured("under_voltage_now"),
        Some(&DiagValue::Bool(true))
    );
    assert_eq!(report.status_of(CheckKind::GpioLoopback), CheckStatus::Skip);
    assert_eq!(report.status, CheckStatus::Fail);
}

#[cfg(all(feature = "linux", target_os = "linux"))]
#[test]
fn linux_fixture_cm4_emmc() {
    let board = fixture("cm4");
    let report = diag::run(&board, &fixture_options());
    // life_time "0x01 0x02", pre_eol 0x01: at most 20 % used.
    let emmc = one(&report, CheckKind::StorageWear, Some("mmcblk0"));
    assert_eq!(emmc.status, CheckStatus::Pass, "{emmc:#?}");
    assert_eq!(emmc.measured("life_time_b"), Some(&DiagValue::Int(2)));
    assert_eq!(
        emmc.measured("pre_eol").and_then(DiagValue::as_str),
        Some("normal")
    );
    assert_eq!(report.status_of(CheckKind::StorageWear), CheckStatus::Pass);
}

#[cfg(all(feature = "linux", target_os = "linux"))]
#[test]
fn linux_fixture_pi5_healthy() {
    let report = diag::run(&fixture("pi5"), &fixture_options());
    assert_eq!(report.model, BoardModel::Pi5);
    for kind in [
        CheckKind::StorageWear,
        CheckKind::SupplyVoltage,
        CheckKind::SensorPlausibility,
    ] {
        assert_eq!(
            report.status_of(kind),
            CheckStatus::Pass,
            "{}",
            dump(&report)
        );
    }
    assert!(report.status <= CheckStatus::Pass, "{}", dump(&report));
}

#[cfg(all(feature = "linux", target_os = "linux"))]
#[test]
fn linux_fixture_with_garbage_fails_without_panicking() {
    let report = diag::run(&fixture("broken"), &fixture_options());
    if std::env::var_os("WRALE_DIAG_DUMP").is_some() {
        println!("{}", dump(&report));
    }
    assert_eq!(report.status, CheckStatus::Fail, "{}", dump(&report));
    // "not a number" in the SoC zone: the sensor fails with the backend's error.
    let cpu = one(&report, CheckKind::SensorPlausibility, Some("cpu"));
    assert_eq!(cpu.status, CheckStatus::Fail, "{cpu:#?}");
    assert!(cpu.measured("error").is_some(), "{cpu:#?}");
    assert!(report.checks.iter().all(|c| !c.message.is_empty()));
}
