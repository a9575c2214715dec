//! Diagnostics: self-tests on a [`Board`], returned as a structured [`DiagReport`].
//!
//! [`run`] executes the checks selected in [`DiagOptions`] one after the other and
//! collects one [`CheckResult`] per tested part (per sensor, per fan, per I2C bus,
//! per block device, ...). Each result has a [`CheckStatus`] (`pass`, `warn`,
//! `fail`, `skip`), the values it measured (unit in the key: `min_supply_v`,
//! `rpm_full`), the thresholds it used, and a message for humans. The report's
//! status is the worst of its checks.
//!
//! The checks:
//!
//! | check | what it does |
//! |---|---|
//! | [`storage_wear`] | eMMC life-time estimates and pre-EOL flag; bytes written for SD cards |
//! | [`supply_voltage`] | supply voltage at rest within a band around the profile's nominal voltage |
//! | [`i2c_scan`] | scans every I2C bus, compares with the expected devices |
//! | [`gpio_loopback`] | drives one pin of the profile's loopback pair and reads it on the other, both ways |
//! | [`sensor_plausibility`] | temperature range, rate of change, stuck die sensor under load |
//! | [`fan_spin`] | steps each tachometer fan to 100 % and to a low duty, checks the rpm follows |
//! | [`supply_under_load`] | 100 % CPU load for a while: minimum supply voltage and under-voltage flag |
//!
//! Rules every check follows:
//!
//! - It never panics on a hardware error: the error becomes `fail` with the
//!   [`HalError`] text (and its portable kind in
//!   `measured.error_kind`), or `skip` where the hardware is simply absent.
//! - What it changes, it puts back, also on error and on unwinding: the fan's
//!   previous duty, the load generator at zero, GPIO lines released.
//! - It waits with [`Board::sleep`], so on the `sim` backend (virtual clock) a full
//!   run takes no wall-clock time and is deterministic.
//!
//! The checks drive hardware (fan duty, CPU load, GPIO lines): run them while the
//! device's own fan controller and workloads are paused, or accept that they will
//! briefly compete. `docs/diagnostics.md` describes every check, its inputs,
//! thresholds and statuses.
//!
//! ```
//! use wrale_hal::diag::{self, CheckStatus, DiagOptions, ExpectedI2cDevice};
//! use wrale_hal::{BackendConfig, SimConfig};
//!
//! # #[cfg(feature = "sim")]
//! # fn main() -> Result<(), wrale_hal::HalError> {
//! // A simulated Pi 4 (virtual clock: the whole run takes milliseconds).
//! let board = wrale_hal::open(&BackendConfig::Sim(SimConfig::default()))?;
//! let mut options = DiagOptions::default();
//! options.i2c.expected.push(ExpectedI2cDevice::new("i2c-1", 0x40, "ina219"));
//! let report = diag::run(&board, &options);
//! for check in report.problems() {
//!     eprintln!("{}: {}", check.label(), check.message);
//! }
//! assert_eq!(report.status, CheckStatus::Pass);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sim"))]
//! # fn main() {}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wrale_core::Timestamp;
use wrale_core::board::BoardModel;
use wrale_core::time::duration_str;
use wrale_core::units::{Celsius, Percent, Rpm, Volts};

use crate::board::Board;
use crate::error::HalError;
use crate::platform::LoadGenerator;

mod fan;
mod i2c;
mod loopback;
mod sensors;
mod storage;
mod supply;

#[cfg(test)]
mod tests;

pub use fan::fan_spin;
pub use i2c::i2c_scan;
pub use loopback::gpio_loopback;
pub use sensors::sensor_plausibility;
pub use storage::storage_wear;
pub use supply::{supply_under_load, supply_voltage};

/// Outcome of one check. Ordered from best to worst for the overall status:
/// `skip < pass < warn < fail` (a report whose checks were all skipped is `skip`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Not run: the hardware is absent or not configured (the message says why).
    #[default]
    Skip,
    /// Ran and found nothing wrong.
    Pass,
    /// Ran and found something that needs attention soon (worn storage, thin supply margin, a suspect sensor).
    Warn,
    /// Ran and found a fault, or the hardware failed while being tested.
    Fail,
}

impl CheckStatus {
    /// Stable snake_case name (`pass`, `warn`, `fail`, `skip`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Skip => "skip",
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        }
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which check a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Temperature sensors: range, rate of change, stuck die sensor under load.
    SensorPlausibility,
    /// Supply voltage at rest within a band around the profile's nominal voltage.
    SupplyVoltage,
    /// Fan spin test through the tachometer.
    FanSpin,
    /// GPIO loopback between the profile's two loopback pins.
    GpioLoopback,
    /// I2C bus scan against the expected devices.
    I2cScan,
    /// Supply voltage and under-voltage flag under 100 % CPU load.
    SupplyUnderLoad,
    /// eMMC wear estimates and SD-card write volume.
    StorageWear,
}

impl CheckKind {
    /// Every check, in the order [`run`] executes them: passive checks first, then
    /// the ones that drive hardware, the supply load test last.
    pub const ALL: [CheckKind; 7] = [
        CheckKind::StorageWear,
        CheckKind::SupplyVoltage,
        CheckKind::I2cScan,
        CheckKind::GpioLoopback,
        CheckKind::SensorPlausibility,
        CheckKind::FanSpin,
        CheckKind::SupplyUnderLoad,
    ];

    /// Stable snake_case name (`fan_spin`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::SensorPlausibility => "sensor_plausibility",
            CheckKind::SupplyVoltage => "supply_voltage",
            CheckKind::FanSpin => "fan_spin",
            CheckKind::GpioLoopback => "gpio_loopback",
            CheckKind::I2cScan => "i2c_scan",
            CheckKind::SupplyUnderLoad => "supply_under_load",
            CheckKind::StorageWear => "storage_wear",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A measured value or a threshold: a number, an integer, a flag or a text.
/// In JSON it is the plain value (`4.87`, `3`, `true`, `"0x40 0x44"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DiagValue {
    /// A flag.
    Bool(bool),
    /// An integer (counts, bytes, register values).
    Int(i64),
    /// A measurement; the unit is in the key (`min_supply_v`).
    Number(f64),
    /// Anything else (addresses, levels, error texts).
    Text(String),
}

impl DiagValue {
    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            DiagValue::Int(i) => Some(*i as f64),
            DiagValue::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The value as a text, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            DiagValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a flag, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            DiagValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl fmt::Display for DiagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiagValue::Bool(b) => write!(f, "{b}"),
            DiagValue::Int(i) => write!(f, "{i}"),
            DiagValue::Number(n) => write!(f, "{n}"),
            DiagValue::Text(s) => f.write_str(s),
        }
    }
}

impl From<bool> for DiagValue {
    fn from(v: bool) -> Self {
        DiagValue::Bool(v)
    }
}
impl From<i64> for DiagValue {
    fn from(v: i64) -> Self {
        DiagValue::Int(v)
    }
}
impl From<u64> for DiagValue {
    fn from(v: u64) -> Self {
        DiagValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u32> for DiagValue {
    fn from(v: u32) -> Self {
        DiagValue::Int(i64::from(v))
    }
}
impl From<u8> for DiagValue {
    fn from(v: u8) -> Self {
        DiagValue::Int(i64::from(v))
    }
}
impl From<usize> for DiagValue {
    fn from(v: usize) -> Self {
        DiagValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for DiagValue {
    fn from(v: f64) -> Self {
        DiagValue::Number(v)
    }
}
impl From<Celsius> for DiagValue {
    fn from(v: Celsius) -> Self {
        DiagValue::Number(v.get())
    }
}
impl From<Volts> for DiagValue {
    fn from(v: Volts) -> Self {
        DiagValue::Number(v.get())
    }
}
impl From<Rpm> for DiagValue {
    fn from(v: Rpm) -> Self {
        DiagValue::Number(v.get())
    }
}
impl From<Percent> for DiagValue {
    fn from(v: Percent) -> Self {
        DiagValue::Number(v.get())
    }
}
impl From<String> for DiagValue {
    fn from(v: String) -> Self {
        DiagValue::Text(v)
    }
}
impl From<&str> for DiagValue {
    fn from(v: &str) -> Self {
        DiagValue::Text(v.to_owned())
    }
}

/// The result of one check on one part of the board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Which check.
    pub name: CheckKind,
    /// The part tested (`cpu`, `fan0`, `i2c-1`, `mmcblk0`, `gpio20-21`); absent for
    /// board-wide checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Outcome.
    pub status: CheckStatus,
    /// What was measured; the unit is in the key (`min_supply_v`, `rpm_full`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub measured: BTreeMap<String, DiagValue>,
    /// The thresholds the status was decided with (`undervoltage_v`, `max_rate_c_per_s`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub thresholds: BTreeMap<String, DiagValue>,
    /// What happened, for humans.
    pub message: String,
}

impl CheckResult {
    /// A result with no measurements.
    pub fn new(name: CheckKind, status: CheckStatus, message: impl Into<String>) -> Self {
        Self {
            name,
            subject: None,
            status,
            measured: BTreeMap::new(),
            thresholds: BTreeMap::new(),
            message: message.into(),
        }
    }

    /// A `skip` result with the reason.
    pub fn skip(name: CheckKind, reason: impl Into<String>) -> Self {
        Self::new(name, CheckStatus::Skip, reason)
    }

    /// Sets the part tested.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Adds a measured value.
    pub fn with_measured(mut self, key: &str, value: impl Into<DiagValue>) -> Self {
        self.measured.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a threshold.
    pub fn with_threshold(mut self, key: &str, value: impl Into<DiagValue>) -> Self {
        self.thresholds.insert(key.to_owned(), value.into());
        self
    }

    /// Records a hardware error: `measured.error` (its text) and
    /// `measured.error_kind` (its portable kind, `bus`, `busy`, ...).
    pub fn with_error(self, e: &HalError) -> Self {
        self.with_measured("error", e.to_string())
            .with_measured("error_kind", e.kind().code())
    }

    /// Sets status and message.
    pub fn with_status(mut self, status: CheckStatus, message: impl Into<String>) -> Self {
        self.status = status;
        self.message = message.into();
        self
    }

    /// `name` or `name:subject`, for logs.
    pub fn label(&self) -> String {
        match &self.subject {
            Some(s) => format!("{}:{s}", self.name),
            None => self.name.to_string(),
        }
    }

    /// A measured value by key.
    pub fn measured(&self, key: &str) -> Option<&DiagValue> {
        self.measured.get(key)
    }
}

/// The outcome of a diagnostics run on one board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagReport {
    /// Board model (from the profile).
    pub model: BoardModel,
    /// Backend the board was opened with (`sim`, `linux`, `rpi`).
    pub backend: String,
    /// When the run started ([`Board::now`]: virtual time on `sim`).
    pub started_at: Timestamp,
    /// When it finished.
    pub finished_at: Timestamp,
    /// The worst status of all checks (`skip` when there are none).
    pub status: CheckStatus,
    /// Every result, in the order the checks ran.
    pub checks: Vec<CheckResult>,
}

impl DiagReport {
    /// Results of one check (several for per-part checks).
    pub fn results(&self, name: CheckKind) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(move |c| c.name == name)
    }

    /// The result of `name` for `subject` (`None` for board-wide checks).
    pub fn find(&self, name: CheckKind, subject: Option<&str>) -> Option<&CheckResult> {
        self.checks
            .iter()
            .find(|c| c.name == name && c.subject.as_deref() == subject)
    }

    /// The worst status among the results of one check (`skip` if it has none).
    pub fn status_of(&self, name: CheckKind) -> CheckStatus {
        worst(self.results(name))
    }

    /// Results that are `warn` or `fail`.
    pub fn problems(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.status >= CheckStatus::Warn)
    }
}

fn worst<'a>(checks: impl IntoIterator<Item = &'a CheckResult>) -> CheckStatus {
    checks
        .into_iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(CheckStatus::Skip)
}

/// Settings of the temperature-sensor plausibility check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorCheckOptions {
    /// Lowest plausible reading (below: `fail`).
    pub min_c: Celsius,
    /// Highest plausible reading (above: `fail`).
    pub max_c: Celsius,
    /// Fastest plausible change between two reads, in °C per second (faster: `fail`).
    pub max_rate_c_per_s: f64,
    /// Number of reads per sensor (at least 2).
    pub reads: u32,
    /// Time between reads.
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// Put the CPU under 100 % load (when the board has a load generator) while
    /// reading, so that a die sensor that does not move can be flagged as stuck.
    pub apply_load: bool,
}

impl Default for SensorCheckOptions {
    fn default() -> Self {
        Self {
            min_c: Celsius(-40.0),
            max_c: Celsius(125.0),
            max_rate_c_per_s: 10.0,
            reads: 5,
            interval: Duration::from_secs(1),
            apply_load: true,
        }
    }
}

/// Settings of the supply checks (at rest and under load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupplyCheckOptions {
    /// At rest: further than this from the profile's nominal voltage is `warn`.
    pub warn_band_v: Volts,
    /// At rest: further than this from nominal is `fail` (as is anything below the
    /// profile's under-voltage threshold, or the firmware's under-voltage flag).
    pub fail_band_v: Volts,
    /// Under load: a minimum voltage closer than this to the under-voltage
    /// threshold is `warn`.
    pub min_margin_v: Volts,
    /// How long to hold 100 % load.
    #[serde(with = "duration_str")]
    pub load_duration: Duration,
    /// How often to read the monitor while under load.
    #[serde(with = "duration_str")]
    pub sample_interval: Duration,
}

impl Default for SupplyCheckOptions {
    fn default() -> Self {
        Self {
            warn_band_v: Volts(0.25),
            fail_band_v: Volts(0.5),
            min_margin_v: Volts(0.1),
            load_duration: Duration::from_secs(10),
            sample_interval: Duration::from_secs(1),
        }
    }
}

/// Settings of the fan spin test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanCheckOptions {
    /// Added to the profile's `fan.spin_up_s` before reading the tachometer.
    #[serde(with = "duration_str")]
    pub spin_up_margin: Duration,
    /// The low step of the test (0 % stops the fan).
    pub low_duty_pct: Percent,
    /// At 100 % duty, fewer rpm than this is a stall (`fail`).
    pub stall_rpm: Rpm,
    /// At 100 % duty, less than this fraction of the profile's `max_rpm` is `warn`
    /// (worn bearing, blocked intake).
    pub min_full_fraction: f64,
    /// At the low step the fan must be slower than this fraction of its full
    /// speed, or it is not following its duty (`warn`).
    pub follow_fraction: f64,
}

impl Default for FanCheckOptions {
    fn default() -> Self {
        Self {
            spin_up_margin: Duration::from_secs(1),
            low_duty_pct: Percent::ZERO,
            stall_rpm: Rpm(200.0),
            min_full_fraction: 0.5,
            follow_fraction: 0.9,
        }
    }
}

/// A device expected on an I2C bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedI2cDevice {
    /// Bus name (`i2c-1`).
    #[serde(default = "default_i2c_bus")]
    pub bus: String,
    /// 7-bit address.
    pub address: u8,
    /// What it is (`ina219`), for messages.
    #[serde(default)]
    pub name: String,
}

fn default_i2c_bus() -> String {
    "i2c-1".to_owned()
}

impl ExpectedI2cDevice {
    /// A device `name` at `address` on `bus`.
    pub fn new(bus: impl Into<String>, address: u8, name: impl Into<String>) -> Self {
        Self {
            bus: bus.into(),
            address,
            name: name.into(),
        }
    }
}

/// Settings of the I2C scan.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct I2cCheckOptions {
    /// Devices that must answer (e.g. INA219 at 0x40, a fuel gauge at 0x36, an
    /// SHT3x at 0x44). Empty by default: which HATs are fitted is a per-device
    /// fact, not a board-model one.
    pub expected: Vec<ExpectedI2cDevice>,
}

/// What to run and with which thresholds. Every field has a default; in TOML or
/// JSON, give only what differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiagOptions {
    /// Checks to run (default: all). They always run in the order of [`CheckKind::ALL`].
    pub checks: Vec<CheckKind>,
    /// Temperature-sensor plausibility.
    pub sensors: SensorCheckOptions,
    /// Supply at rest and under load.
    pub supply: SupplyCheckOptions,
    /// Fan spin test.
    pub fan: FanCheckOptions,
    /// I2C scan.
    pub i2c: I2cCheckOptions,
}

impl Default for DiagOptions {
    fn default() -> Self {
        Self {
            checks: CheckKind::ALL.to_vec(),
            sensors: SensorCheckOptions::default(),
            supply: SupplyCheckOptions::default(),
            fan: FanCheckOptions::default(),
            i2c: I2cCheckOptions::default(),
        }
    }
}

impl DiagOptions {
    /// Default options running only `checks`.
    pub fn only(checks: &[CheckKind]) -> Self {
        Self {
            checks: checks.to_vec(),
            ..Self::default()
        }
    }

    /// Whether `check` is selected.
    pub fn runs(&self, check: CheckKind) -> bool {
        self.checks.contains(&check)
    }
}

/// Runs the selected checks on `board` and returns the report. Never fails:
/// hardware errors become `fail` (or `skip`) results.
pub fn run(board: &Board, options: &DiagOptions) -> DiagReport {
    let started_at = board.now();
    let mut checks = Vec::new();
    for kind in CheckKind::ALL {
        if !options.runs(kind) {
            continue;
        }
        let results = match kind {
            CheckKind::StorageWear => storage_wear(board, options),
            CheckKind::SupplyVoltage => supply_voltage(board, options),
            CheckKind::I2cScan => i2c_scan(board, options),
            CheckKind::GpioLoopback => gpio_loopback(board, options),
            CheckKind::SensorPlausibility => sensor_plausibility(board, options),
            CheckKind::FanSpin => fan_spin(board, options),
            CheckKind::SupplyUnderLoad => supply_under_load(board, options),
        };
        checks.extend(results);
    }
    DiagReport {
        model: board.profile().model,
        backend: board.backend().to_owned(),
        started_at,
        finished_at: board.now(),
        status: worst(&checks),
        checks,
    }
}

/// A fail result for a hardware error, or a skip when the error says the hardware
/// is not there (`not_found`, `unsupported`).
pub(crate) fn from_error(name: CheckKind, what: &str, e: &HalError) -> CheckResult {
    use wrale_core::HalErrorKind;
    let status = match e.kind() {
        HalErrorKind::NotFound | HalErrorKind::Unsupported => CheckStatus::Skip,
        _ => CheckStatus::Fail,
    };
    CheckResult::new(name, status, format!("{what}: {e}")).with_error(e)
}

/// Rounds for messages and measured values (sensor noise below this is meaningless).
pub(crate) fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// Whether an error says the hardware or the feature is simply not there.
pub(crate) fn is_absent(e: &HalError) -> bool {
    matches!(
        e.kind(),
        wrale_core::HalErrorKind::NotFound | wrale_core::HalErrorKind::Unsupported
    )
}

/// Keeps the subject and thresholds of `base`; takes status, message and
/// measurements from `err`.
pub(crate) fn merge(base: CheckResult, err: CheckResult) -> CheckResult {
    let mut r = base;
    r.status = err.status;
    r.message = err.message;
    r.measured.extend(err.measured);
    r
}

/// Sets the load generator back to zero when dropped (unwinding included) unless
/// [`LoadGuard::finish`] already did and reported the result.
#[derive(Debug)]
pub(crate) struct LoadGuard<'a> {
    load: &'a dyn LoadGenerator,
    armed: bool,
}

impl<'a> LoadGuard<'a> {
    /// Arms the guard; the caller then starts the load.
    pub(crate) fn new(load: &'a dyn LoadGenerator) -> Self {
        Self { load, armed: true }
    }

    /// Sets the load to zero now and reports whether that worked.
    pub(crate) fn finish(mut self) -> crate::error::Result<()> {
        self.armed = false;
        self.load.set_load(Percent::ZERO)
    }
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Best effort on the error/unwind path; the normal path reports the result.
            let _ = self.load.set_load(Percent::ZERO);
        }
    }
}
