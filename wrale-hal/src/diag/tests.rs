//! Unit tests of the diagnostics on small fake parts (the `sim` backend is
//! exercised in `tests/diag.rs`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wrale_core::Timestamp;
use wrale_core::board::{BoardModel, BoardProfile};
use wrale_core::model::{Level, PreEol, Pull, SensorKind, StorageKind, StorageWear, ThrottleFlags};
use wrale_core::units::{Amps, Celsius, Hertz, MegaHertz, Percent, Rpm, Volts, Watts};

use super::*;
use crate::error::{HalError, Result};
use crate::gpio::{DropState, Gpio, InputPin, OutputPin, PwmPin};
use crate::platform::{I2cBus, LoadGenerator, Platform};
use crate::power::PowerMonitor;
use crate::thermal::{Fan, ThermalSensor};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

/// Virtual clock: `sleep` advances it.
#[derive(Debug, Default)]
struct FakeClock(AtomicI64);

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + self.0.load(Ordering::SeqCst))
    }
    fn sleep(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}
use crate::board::Clock;

/// Returns the scripted values in turn (the last one forever).
#[derive(Debug)]
struct FakeSensor {
    id: &'static str,
    kind: SensorKind,
    values: Mutex<Vec<Result<f64, ()>>>,
}

impl FakeSensor {
    fn new(id: &'static str, kind: SensorKind, values: &[f64]) -> Arc<Self> {
        Arc::new(Self {
            id,
            kind,
            values: Mutex::new(values.iter().map(|v| Ok(*v)).collect()),
        })
    }
    fn broken(id: &'static str) -> Arc<Self> {
        Arc::new(Self {
            id,
            kind: SensorKind::Ambient,
            values: Mutex::new(vec![Err(())]),
        })
    }
}

impl ThermalSensor for FakeSensor {
    fn id(&self) -> &str {
        self.id
    }
    fn kind(&self) -> SensorKind {
        self.kind
    }
    fn read(&self) -> Result<Celsius> {
        let mut v = lock(&self.values);
        let x = if v.len() > 1 { v.remove(0) } else { v[0] };
        x.map(Celsius).map_err(|()| HalError::Bus {
            bus: "i2c-1@0x44".into(),
            detail: "no ack".into(),
        })
    }
}

#[derive(Debug)]
struct FakeFan {
    tach: bool,
    duty: Mutex<Percent>,
    /// rpm per % duty; 0 = stalled.
    rpm_per_pct: f64,
    /// `set_duty` to exactly this value fails.
    fail_at: Option<Percent>,
    history: Mutex<Vec<Percent>>,
}

impl FakeFan {
    fn new(rpm_per_pct: f64) -> Self {
        Self {
            tach: true,
            duty: Mutex::new(Percent::saturating(40.0)),
            rpm_per_pct,
            fail_at: None,
            history: Mutex::new(Vec::new()),
        }
    }
}

impl Fan for FakeFan {
    fn id(&self) -> &str {
        "fan0"
    }
    fn set_duty(&self, duty: Percent) -> Result<()> {
        if self.fail_at == Some(duty) {
            return Err(HalError::Busy {
                what: "pwm0".into(),
            });
        }
        lock(&self.history).push(duty);
        *lock(&self.duty) = duty;
        Ok(())
    }
    fn duty(&self) -> Result<Percent> {
        Ok(*lock(&self.duty))
    }
    fn has_tach(&self) -> bool {
        self.tach
    }
    fn rpm(&self) -> Result<Rpm> {
        if !self.tach {
            return Err(HalError::unsupported("no tach"));
        }
        Ok(Rpm(lock(&self.duty).get() * self.rpm_per_pct))
    }
}

/// Load generator whose load the power monitor sees.
#[derive(Debug, Default)]
struct FakeLoad {
    load: Mutex<Percent>,
    calls: Mutex<Vec<Percent>>,
    fail_start: bool,
}

impl LoadGenerator for FakeLoad {
    fn set_load(&self, load: Percent) -> Result<()> {
        lock(&self.calls).push(load);
        if self.fail_start && load > Percent::ZERO {
            return Err(HalError::Busy {
                what: "stress".into(),
            });
        }
        *lock(&self.load) = load;
        Ok(())
    }
}

/// Supply that sags linearly with load: `idle_v - sag_v * load`.
#[derive(Debug)]
struct FakePower {
    load: Arc<FakeLoad>,
    idle_v: f64,
    sag_v: f64,
    has_voltage: bool,
    uv_below: Option<f64>,
    sticky: bool,
}

impl FakePower {
    fn volts(&self) -> f64 {
        self.idle_v - self.sag_v * lock(&self.load.load).fraction()
    }
}

impl PowerMonitor for FakePower {
    fn voltage(&self) -> Result<Volts> {
        if self.has_voltage {
            Ok(Volts(self.volts()))
        } else {
            Err(HalError::unsupported("voltage"))
        }
    }
    fn current(&self) -> Result<Amps> {
        Err(HalError::unsupported("current"))
    }
    fn power(&self) -> Result<Watts> {
        Err(HalError::unsupported("power"))
    }
    fn throttle(&self) -> Result<ThrottleFlags> {
        let uv = self.uv_below.is_some_and(|t| self.volts() < t);
        Ok(ThrottleFlags {
            under_voltage: uv,
            under_voltage_occurred: uv || self.sticky,
            ..ThrottleFlags::default()
        })
    }
}

#[derive(Debug)]
struct FakePlatform(Vec<StorageWear>);

impl Platform for FakePlatform {
    fn cpu_load(&self) -> Result<Percent> {
        Ok(Percent::ZERO)
    }
    fn cpu_freq(&self) -> Result<MegaHertz> {
        Ok(MegaHertz(1500.0))
    }
    fn storage(&self) -> Result<Vec<StorageWear>> {
        Ok(self.0.clone())
    }
}

#[derive(Debug)]
struct FakeBus(Result<Vec<u8>, ()>);

impl I2cBus for FakeBus {
    fn name(&self) -> &str {
        "i2c-1"
    }
    fn scan(&self) -> Result<Vec<u8>> {
        self.0.clone().map_err(|()| HalError::Bus {
            bus: "i2c-1".into(),
            detail: "arbitration lost".into(),
        })
    }
}

/// Two pins wired together (or not); pins in `held` are claimed by someone else.
#[derive(Debug)]
struct FakeGpio {
    wired: bool,
    held: BTreeSet<u8>,
    state: Arc<Mutex<(BTreeSet<u8>, Level)>>,
}

#[derive(Debug)]
struct FakeOut(u8, Arc<Mutex<(BTreeSet<u8>, Level)>>, Level);
#[derive(Debug)]
struct FakeIn(u8, Arc<Mutex<(BTreeSet<u8>, Level)>>, bool);

impl Drop for FakeOut {
    fn drop(&mut self) {
        lock(&self.1).0.remove(&self.0);
    }
}
impl Drop for FakeIn {
    fn drop(&mut self) {
        lock(&self.1).0.remove(&self.0);
    }
}

impl OutputPin for FakeOut {
    fn pin(&self) -> u8 {
        self.0
    }
    fn write(&mut self, level: Level) -> Result<()> {
        self.2 = level;
        lock(&self.1).1 = level;
        Ok(())
    }
    fn level(&self) -> Level {
        self.2
    }
}

impl InputPin for FakeIn {
    fn pin(&self) -> u8 {
        self.0
    }
    fn read(&self) -> Result<Level> {
        // Not wired: the pull-down wins.
        Ok(if self.2 { lock(&self.1).1 } else { Level::Low })
    }
    fn watch(&mut self, _edge: wrale_core::model::Edge, _debounce: Duration) -> Result<()> {
        Ok(())
    }
    fn unwatch(&mut self) -> Result<()> {
        Ok(())
    }
}

impl FakeGpio {
    fn claim(&self, pin: u8) -> Result<()> {
        let mut s = lock(&self.state);
        if self.held.contains(&pin) || !s.0.insert(pin) {
            return Err(HalError::PinUsed { pin });
        }
        Ok(())
    }
}

impl Gpio for FakeGpio {
    fn claim_input(&self, pin: u8, _pull: Pull) -> Result<Box<dyn InputPin>> {
        self.claim(pin)?;
        Ok(Box::new(FakeIn(pin, self.state.clone(), self.wired)))
    }
    fn claim_output(
        &self,
        pin: u8,
        initial: Level,
        _on_drop: DropState,
    ) -> Result<Box<dyn OutputPin>> {
        self.claim(pin)?;
        lock(&self.state).1 = initial;
        Ok(Box::new(FakeOut(pin, self.state.clone(), initial)))
    }
    fn claim_pwm(
        &self,
        _pin: u8,
        _frequency: Hertz,
        _duty: Percent,
        _on_drop: DropState,
    ) -> Result<Box<dyn PwmPin>> {
        Err(HalError::unsupported("pwm"))
    }
    fn claimed(&self) -> Vec<u8> {
        lock(&self.state).0.iter().copied().collect()
    }
}

fn gpio(wired: bool, held: &[u8]) -> Arc<FakeGpio> {
    Arc::new(FakeGpio {
        wired,
        held: held.iter().copied().collect(),
        state: Arc::new(Mutex::new((BTreeSet::new(), Level::Low))),
    })
}

fn builder() -> crate::BoardBuilder {
    Board::builder(BoardProfile::builtin(BoardModel::Pi4B), "fake")
        .clock(Arc::new(FakeClock::default()))
}

fn power(load: &Arc<FakeLoad>, idle_v: f64, sag_v: f64) -> Arc<FakePower> {
    Arc::new(FakePower {
        load: load.clone(),
        idle_v,
        sag_v,
        has_voltage: true,
        uv_below: Some(4.63),
        sticky: false,
    })
}

fn emmc(a: u8, b: u8, eol: PreEol) -> StorageWear {
    StorageWear {
        device: "mmcblk0".into(),
        kind: StorageKind::Emmc,
        life_time_a: Some(a),
        life_time_b: Some(b),
        pre_eol: Some(eol),
        bytes_written: 1 << 30,
    }
}

fn only(results: Vec<CheckResult>) -> CheckResult {
    assert_eq!(results.len(), 1, "{results:#?}");
    results.into_iter().next().unwrap()
}

#[test]
fn status_order_and_overall_worst() {
    assert!(CheckStatus::Skip < CheckStatus::Pass);
    assert!(CheckStatus::Pass < CheckStatus::Warn);
    assert!(CheckStatus::Warn < CheckStatus::Fail);
    let board = builder().build();
    let report = run(&board, &DiagOptions::default());
    // A board with nothing: every check skips, and says why.
    assert_eq!(report.status, CheckStatus::Skip);
    assert_eq!(report.checks.len(), CheckKind::ALL.len());
    assert!(report.checks.iter().all(|c| !c.message.is_empty()));
}

#[test]
fn report_serde_is_snake_case_and_round_trips() {
    let load = Arc::new(FakeLoad::default());
    let board = builder()
        .platform(Arc::new(FakePlatform(vec![emmc(9, 2, PreEol::Normal)])))
        .power(power(&load, 5.05, 0.1))
        .load_generator(load)
        .build();
    let report = run(
        &board,
        &DiagOptions::only(&[CheckKind::StorageWear, CheckKind::SupplyUnderLoad]),
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["status"], "warn");
    assert_eq!(json["model"], "pi4b");
    assert_eq!(json["backend"], "fake");
    assert_eq!(json["checks"][0]["name"], "storage_wear");
    assert_eq!(json["checks"][0]["subject"], "mmcblk0");
    assert_eq!(json["checks"][0]["measured"]["life_time_a"], 9);
    assert_eq!(json["checks"][1]["name"], "supply_under_load");
    assert_eq!(json["checks"][1]["measured"]["min_supply_v"], 4.95);
    assert!(json["started_at"].as_str().unwrap().ends_with('Z'));
    let back: DiagReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
    // Virtual time moved by the load test's duration.
    assert_eq!(
        report.finished_at.saturating_since(report.started_at),
        Duration::from_secs(10)
    );
}

#[test]
fn options_parse_from_partial_toml() {
    let o: DiagOptions = toml::from_str(
        r#"
        checks = ["fan_spin", "i2c_scan"]
        [supply]
        load_duration = "30s"
        [[i2c.expected]]
        address = 0x40
        name = "ina219"
        "#,
    )
    .unwrap();
    assert_eq!(o.checks, vec![CheckKind::FanSpin, CheckKind::I2cScan]);
    assert_eq!(o.supply.load_duration, Duration::from_secs(30));
    assert_eq!(o.supply.min_margin_v, Volts(0.1));
    assert_eq!(
        o.i2c.expected,
        vec![ExpectedI2cDevice::new("i2c-1", 0x40, "ina219")]
    );
    assert!(toml::from_str::<DiagOptions>("chekcs = []").is_err());
}

#[test]
fn storage_thresholds() {
    let sd = StorageWear {
        device: "mmcblk1".into(),
        kind: StorageKind::Sd,
        life_time_a: None,
        life_time_b: None,
        pre_eol: None,
        bytes_written: 123_456_789,
    };
    let cases = [
        (emmc(1, 8, PreEol::Normal), CheckStatus::Pass),
        (emmc(1, 9, PreEol::Normal), CheckStatus::Warn),
        (emmc(0x0B, 2, PreEol::Normal), CheckStatus::Fail),
        (emmc(1, 1, PreEol::Warning), CheckStatus::Warn),
        (emmc(1, 1, PreEol::Urgent), CheckStatus::Fail),
        (emmc(0, 0, PreEol::Undefined), CheckStatus::Pass),
        (sd.clone(), CheckStatus::Pass),
    ];
    for (w, want) in cases {
        let board = builder()
            .platform(Arc::new(FakePlatform(vec![w.clone()])))
            .build();
        let r = only(storage_wear(&board, &DiagOptions::default()));
        assert_eq!(r.status, want, "{w:?}: {}", r.message);
        assert_eq!(r.subject.as_deref(), Some(w.device.as_str()));
    }
    let board = builder().platform(Arc::new(FakePlatform(vec![sd]))).build();
    let r = only(storage_wear(&board, &DiagOptions::default()));
    assert_eq!(
        r.measured("bytes_written"),
        Some(&DiagValue::Int(123_456_789))
    );
    assert!(r.message.contains("no wear estimate"), "{}", r.message);
}

#[test]
fn supply_at_rest_bands() {
    for (v, want) in [
        (5.05, CheckStatus::Pass),
        (4.8, CheckStatus::Warn),
        (4.62, CheckStatus::Fail),
        (5.7, CheckStatus::Fail),
    ] {
        let load = Arc::new(FakeLoad::default());
        let board = builder().power(power(&load, v, 0.0)).build();
        let r = only(supply_voltage(&board, &DiagOptions::default()));
        assert_eq!(r.status, want, "{v} V: {}", r.message);
        assert_eq!(r.measured("supply_v"), Some(&DiagValue::Number(v)));
    }
    // Flags only (no voltage reading): judged on the flags.
    let load = Arc::new(FakeLoad::default());
    let p = FakePower {
        has_voltage: false,
        sticky: true,
        ..(*power(&load, 5.0, 0.0)).clone_parts()
    };
    let board = builder().power(Arc::new(p)).build();
    let r = only(supply_voltage(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Warn, "{}", r.message);
    assert!(r.measured("supply_v").is_none());
}

impl FakePower {
    fn clone_parts(&self) -> FakePower {
        FakePower {
            load: self.load.clone(),
            ..*self
        }
    }
}

#[test]
fn supply_under_load_margin_and_reset() {
    // 5.05 V idle, sags 0.38 V at full load: 4.67 V, 0.04 V above 4.63 V -> warn.
    let load = Arc::new(FakeLoad::default());
    let board = builder()
        .power(power(&load, 5.05, 0.38))
        .load_generator(load.clone())
        .build();
    let r = only(supply_under_load(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Warn, "{}", r.message);
    assert_eq!(r.measured("min_supply_v"), Some(&DiagValue::Number(4.67)));
    assert_eq!(r.measured("samples"), Some(&DiagValue::Int(10)));
    assert_eq!(*lock(&load.load), Percent::ZERO);
    assert_eq!(lock(&load.calls).last(), Some(&Percent::ZERO));

    // Sags through the threshold: the firmware flag appears -> fail.
    let load = Arc::new(FakeLoad::default());
    let board = builder()
        .power(power(&load, 5.0, 0.6))
        .load_generator(load.clone())
        .build();
    let r = only(supply_under_load(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Fail, "{}", r.message);
    assert_eq!(
        r.measured("under_voltage_seen"),
        Some(&DiagValue::Bool(true))
    );
    assert_eq!(*lock(&load.load), Percent::ZERO);

    // A sticky flag from before the test does not count as appearing under load.
    let load = Arc::new(FakeLoad::default());
    let p = FakePower {
        sticky: true,
        ..power(&load, 5.05, 0.1).clone_parts()
    };
    let board = builder()
        .power(Arc::new(p))
        .load_generator(load.clone())
        .build();
    let r = only(supply_under_load(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Pass, "{}", r.message);
}

#[test]
fn supply_under_load_start_failure_is_fail_and_load_is_zeroed() {
    let load = Arc::new(FakeLoad {
        fail_start: true,
        ..FakeLoad::default()
    });
    let board = builder()
        .power(power(&load, 5.05, 0.1))
        .load_generator(load.clone())
        .build();
    let r = only(supply_under_load(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.message.contains("busy"), "{}", r.message);
    assert_eq!(lock(&load.calls).last(), Some(&Percent::ZERO));
}

#[test]
fn fan_spin_pass_restores_previous_duty() {
    let fan = Arc::new(FakeFan::new(50.0));
    let board = builder().fan(fan.clone()).build();
    let r = only(fan_spin(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Pass, "{}", r.message);
    assert_eq!(r.measured("rpm_full"), Some(&DiagValue::Number(5000.0)));
    assert_eq!(r.measured("rpm_low"), Some(&DiagValue::Number(0.0)));
    assert_eq!(
        *lock(&fan.history),
        vec![Percent::FULL, Percent::ZERO, Percent::saturating(40.0)]
    );
}

#[test]
fn fan_spin_stall_degraded_and_step_error() {
    let fan = Arc::new(FakeFan::new(0.0));
    let board = builder().fan(fan.clone()).build();
    let r = only(fan_spin(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Fail);
    assert_eq!(r.measured("rpm_full"), Some(&DiagValue::Number(0.0)));
    assert!(r.message.contains("stalled"), "{}", r.message);
    assert_eq!(*lock(&fan.duty), Percent::saturating(40.0));

    let board = builder().fan(Arc::new(FakeFan::new(20.0))).build();
    let r = only(fan_spin(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Warn, "{}", r.message);
    assert!(r.message.contains("degraded"), "{}", r.message);

    // The low step fails: fail with the error, and the duty is still restored.
    let fan = Arc::new(FakeFan {
        fail_at: Some(Percent::ZERO),
        ..FakeFan::new(50.0)
    });
    let board = builder().fan(fan.clone()).build();
    let r = only(fan_spin(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Fail);
    assert_eq!(r.measured("error_kind"), Some(&DiagValue::from("busy")));
    assert_eq!(*lock(&fan.duty), Percent::saturating(40.0));
}

#[test]
fn fan_without_tach_skips_and_hot_die_keeps_the_fan_up() {
    let fan = Arc::new(FakeFan {
        tach: false,
        ..FakeFan::new(50.0)
    });
    let board = builder().fan(fan.clone()).build();
    let r = only(fan_spin(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Skip);
    assert!(r.message.contains("no tachometer"));
    assert!(lock(&fan.history).is_empty());

    let fan = Arc::new(FakeFan::new(50.0));
    let board = builder()
        .fan(fan.clone())
        .thermal(FakeSensor::new("cpu", SensorKind::Cpu, &[75.0]))
        .build();
    let r = only(fan_spin(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Pass, "{}", r.message);
    assert!(
        lock(&fan.history)
            .iter()
            .all(|d| *d >= Percent::saturating(40.0))
    );
    assert!(r.measured("rpm_low").is_none());
}

#[test]
fn loopback_pass_open_wire_and_pin_used() {
    let g = gpio(true, &[]);
    let board = builder().gpio(g.clone()).build();
    let r = only(gpio_loopback(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Pass, "{}", r.message);
    assert_eq!(r.subject.as_deref(), Some("gpio20-21"));
    assert!(g.claimed().is_empty(), "lines released");

    let board = builder().gpio(gpio(false, &[])).build();
    let r = only(gpio_loopback(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(
        r.message.contains("read low while GPIO 20 drove high"),
        "{}",
        r.message
    );

    let g = gpio(true, &[21]);
    let board = builder().gpio(g.clone()).build();
    let r = only(gpio_loopback(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.message.contains("PinUsed"), "{}", r.message);
    assert_eq!(r.measured("blocked_pin"), Some(&DiagValue::Int(21)));
    assert!(g.claimed().is_empty(), "pin 20 released after 21 failed");

    let r = only(gpio_loopback(&builder().build(), &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Skip);
}

#[test]
fn i2c_expected_missing_bus_error_and_absent_bus() {
    let mut o = DiagOptions::default();
    o.i2c.expected = vec![
        ExpectedI2cDevice::new("i2c-1", 0x40, "ina219"),
        ExpectedI2cDevice::new("i2c-1", 0x36, "fuel gauge"),
    ];
    let board = builder()
        .i2c(Arc::new(FakeBus(Ok(vec![0x44, 0x40]))))
        .build();
    let r = only(i2c_scan(&board, &o));
    assert_eq!(r.status, CheckStatus::Fail);
    assert_eq!(r.measured("found"), Some(&DiagValue::from("0x40 0x44")));
    assert_eq!(
        r.measured("missing"),
        Some(&DiagValue::from("0x36 (fuel gauge)"))
    );

    o.i2c.expected.truncate(1);
    assert_eq!(only(i2c_scan(&board, &o)).status, CheckStatus::Pass);

    let board = builder().i2c(Arc::new(FakeBus(Err(())))).build();
    let r = only(i2c_scan(&board, &o));
    assert_eq!(r.status, CheckStatus::Fail);
    assert_eq!(r.measured("error_kind"), Some(&DiagValue::from("bus")));

    let r = only(i2c_scan(&builder().build(), &o));
    assert_eq!(r.status, CheckStatus::Fail);
    assert!(r.message.contains("does not exist"), "{}", r.message);
    assert_eq!(
        only(i2c_scan(&builder().build(), &DiagOptions::default())).status,
        CheckStatus::Skip
    );
}

#[test]
fn sensor_rules() {
    let load = Arc::new(FakeLoad::default());
    let board = builder()
        .load_generator(load.clone())
        .thermal(FakeSensor::new(
            "cpu",
            SensorKind::Cpu,
            &[50.0, 50.4, 50.9, 51.2, 51.6],
        ))
        .thermal(FakeSensor::new("stuck", SensorKind::Cpu, &[48.0]))
        .thermal(FakeSensor::new("ambient", SensorKind::Ambient, &[22.0]))
        .thermal(FakeSensor::new(
            "jumpy",
            SensorKind::Other,
            &[40.0, 40.0, 65.0],
        ))
        .thermal(FakeSensor::new("hot", SensorKind::Other, &[140.0]))
        .thermal(FakeSensor::broken("sht3x"))
        .build();
    let results = sensor_plausibility(&board, &DiagOptions::default());
    let status = |id: &str| {
        results
            .iter()
            .find(|r| r.subject.as_deref() == Some(id))
            .unwrap()
            .status
    };
    assert_eq!(status("cpu"), CheckStatus::Pass);
    assert_eq!(status("stuck"), CheckStatus::Warn);
    assert_eq!(status("ambient"), CheckStatus::Pass, "air may sit still");
    assert_eq!(status("jumpy"), CheckStatus::Fail);
    assert_eq!(status("hot"), CheckStatus::Fail);
    assert_eq!(status("sht3x"), CheckStatus::Fail);
    assert_eq!(*lock(&load.calls), vec![Percent::FULL, Percent::ZERO]);

    // Without a load generator a still die sensor is not judged.
    let board = builder()
        .thermal(FakeSensor::new("stuck", SensorKind::Cpu, &[48.0]))
        .build();
    let r = only(sensor_plausibility(&board, &DiagOptions::default()));
    assert_eq!(r.status, CheckStatus::Pass);
    assert_eq!(
        r.measured("stuck_check"),
        Some(&DiagValue::from("not_evaluated"))
    );
}
