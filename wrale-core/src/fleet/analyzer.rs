//! The fleet analyzer: what a window of telemetry says about each device, and
//! what the devices say about each other.
//!
//! Pure and deterministic: [`analyze_device`] and [`analyze_fleet`] take the
//! telemetry windows and `now`, and return plain data (serde). fleetd runs them on a
//! schedule over the last hour of telemetry (or any window it chooses).
//!
//! Per device ([`DeviceAnalysis`]):
//!
//! - **Temperature trend**: the Theil–Sen slope (the median of all pairwise slopes,
//!   which ignores up to ~29 % of wild points) of the CPU temperature, in °C/h, and
//!   the robust level "now" on that line.
//! - **Time to throttle**: at the current trend, how long until the level reaches
//!   the throttle threshold (the board profile's `throttle_c`, or the device's own).
//! - **Thermal headroom**: degrees below the threshold, the measured thermal
//!   resistance `R = (T − T_ambient) / P`, and so the extra watts the device can
//!   take at steady state before it reaches the threshold.
//! - **Fan effectiveness**: from quasi-steady periods, the thermal conductance
//!   `G = P / (T − T_ambient)` against the fan duty. The board's thermal model makes
//!   `G` linear in airflow (`G = G_heatsink + airflow × (G_fan − G_heatsink)`), so
//!   the slope of `G` over duty divided by the profile's `G_fan − G_heatsink` is the
//!   fraction of the expected cooling the fan still delivers. A fan whose tach reads
//!   normally but whose effect vanished (clogged, detached duct) is `failing`.
//! - **Supply stability**: sag below nominal, ripple (robust spread of successive
//!   differences), margin above the under-voltage threshold, under-voltage events
//!   per day.
//! - **Storage wear**: bytes written per day, eMMC life used, predicted end of life.
//! - **Health score** 0–100 with the factors that lowered it.
//!
//! Across the fleet ([`FleetAnalysis`]):
//!
//! - **Anomalies**: robust z-score (median / MAD) of each device against its peers
//!   (same model and location), with the evidence attached.
//! - **Hot spots**: racks and shelves whose devices run hotter than the rest of the
//!   fleet at comparable load.
//! - **Health per site, rack and group**.
//!
//! ```
//! use std::time::Duration;
//! use wrale_core::fleet::analyzer::{analyze_device, AnalyzerConfig, DeviceWindow, TelemetryPoint};
//! use wrale_core::model::{DeviceId, Location};
//! use wrale_core::units::{Celsius, Watts};
//! use wrale_core::{BoardModel, Timestamp};
//!
//! // A Pi 4 warming by 6 °C per hour from 60 °C.
//! let points = (0..60)
//!     .map(|i| TelemetryPoint {
//!         cpu_temp: Some(Celsius(60.0 + 0.1 * f64::from(i))),
//!         power: Some(Watts(5.0)),
//!         ..TelemetryPoint::at(Timestamp::from_secs(60 * i64::from(i)))
//!     })
//!     .collect();
//! let w = DeviceWindow::new(DeviceId::new("pi-1").unwrap(), BoardModel::Pi4B, Location::default(), points);
//! let a = analyze_device(&w, &AnalyzerConfig::default(), Timestamp::from_secs(3600));
//! let trend = a.trend.unwrap();
//! assert!((trend.slope_c_per_h - 6.0).abs() < 0.01);
//! // 80 °C throttle threshold, level ~65.9 °C: about 2.35 h left.
//! let ttt = a.time_to_throttle_s.unwrap();
//! assert!((ttt / 3600.0 - 2.35).abs() < 0.05, "{ttt}");
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::board::{BoardModel, BoardProfile, FanKind};
use crate::model::{DeviceId, GroupId, Location, Sample, SensorKind};
use crate::time::Timestamp;
use crate::units::{Amps, Celsius, KelvinPerWatt, Percent, Rpm, Volts, Watts};

/// Robust statistics used by the analyzer (and the optimizer, the property tests).
pub mod stats {
    /// The median of `v` (reorders `v`); `None` when empty. Non-finite values must
    /// have been removed by the caller.
    pub fn median_mut(v: &mut [f64]) -> Option<f64> {
        let n = v.len();
        if n == 0 {
            return None;
        }
        let mid = n / 2;
        let (lo, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
        let upper = *m;
        if n % 2 == 1 {
            Some(upper)
        } else {
            let lower = lo.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            Some(0.5 * (lower + upper))
        }
    }

    /// The median of the finite values of `v`.
    pub fn median(v: &[f64]) -> Option<f64> {
        let mut c: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        median_mut(&mut c)
    }

    /// The median absolute deviation of `v` around `center` (unscaled).
    pub fn mad(v: &[f64], center: f64) -> Option<f64> {
        let mut d: Vec<f64> = v
            .iter()
            .filter(|x| x.is_finite())
            .map(|x| (x - center).abs())
            .collect();
        median_mut(&mut d)
    }

    /// The `p`-th percentile (0..=100, nearest rank) of the finite values of `v`.
    pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
        let mut c: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        if c.is_empty() {
            return None;
        }
        let k = ((p.clamp(0.0, 100.0) / 100.0) * (c.len() - 1) as f64).round() as usize;
        let (_, x, _) = c.select_nth_unstable_by(k, f64::total_cmp);
        Some(*x)
    }

    /// Theil–Sen line through `(x, y)`: the median of the slopes of all pairs with
    /// distinct `x`, and the median of `y − slope·x` as intercept. `None` with fewer
    /// than two distinct `x`. O(n²): callers thin long series first.
    pub fn theil_sen(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
        let n = x.len().min(y.len());
        let mut slopes = Vec::with_capacity(n * n.saturating_sub(1) / 2);
        for i in 0..n {
            for j in (i + 1)..n {
                let dx = x[j] - x[i];
                if dx.abs() > f64::EPSILON {
                    let s = (y[j] - y[i]) / dx;
                    if s.is_finite() {
                        slopes.push(s);
                    }
                }
            }
        }
        let slope = median_mut(&mut slopes)?;
        let mut icpt: Vec<f64> = (0..n).map(|i| y[i] - slope * x[i]).collect();
        let intercept = median_mut(&mut icpt)?;
        Some((slope, intercept))
    }

    /// Scale that makes the MAD a consistent estimator of the standard deviation
    /// of normally distributed data.
    pub const MAD_TO_SIGMA: f64 = 1.4826;

    /// Robust z-score of `x` against a population with `median` and `mad`:
    /// `(x − median) / (1.4826 · max(mad, mad_floor))`. The floor keeps a tight
    /// population (MAD ≈ 0) from turning measurement noise into anomalies.
    pub fn robust_z(x: f64, median: f64, mad: f64, mad_floor: f64) -> f64 {
        let scale = MAD_TO_SIGMA * mad.max(mad_floor).max(f64::MIN_POSITIVE);
        (x - median) / scale
    }

    /// Indices `0..n` thinned to at most `max` evenly spaced ones (first and last kept).
    pub fn thin(n: usize, max: usize) -> Vec<usize> {
        if n <= max || max < 2 {
            return (0..n).collect();
        }
        (0..max)
            .map(|k| (k * (n - 1) + (max - 1) / 2) / (max - 1))
            .collect()
    }
}

/// One telemetry point: what the analyzer reads from a [`Sample`] (or from
/// fleetd's stored series). Missing values are `None`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TelemetryPoint {
    /// When.
    pub at: Timestamp,
    /// CPU (SoC) temperature.
    #[serde(
        default,
        rename = "cpu_temp_c",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_temp: Option<Celsius>,
    /// Ambient (enclosure or room) temperature, where a sensor exists.
    #[serde(default, rename = "ambient_c", skip_serializing_if = "Option::is_none")]
    pub ambient: Option<Celsius>,
    /// CPU load.
    #[serde(
        default,
        rename = "cpu_load_pct",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_load: Option<Percent>,
    /// Whole-board power.
    #[serde(default, rename = "power_w", skip_serializing_if = "Option::is_none")]
    pub power: Option<Watts>,
    /// Supply voltage at the board.
    #[serde(default, rename = "supply_v", skip_serializing_if = "Option::is_none")]
    pub supply_voltage: Option<Volts>,
    /// Supply current.
    #[serde(default, rename = "current_a", skip_serializing_if = "Option::is_none")]
    pub current: Option<Amps>,
    /// Fan duty (first fan).
    #[serde(
        default,
        rename = "fan_duty_pct",
        skip_serializing_if = "Option::is_none"
    )]
    pub fan_duty: Option<Percent>,
    /// Fan tachometer (first fan), where it has one.
    #[serde(default, rename = "fan_rpm", skip_serializing_if = "Option::is_none")]
    pub fan_rpm: Option<Rpm>,
    /// The firmware throttles now (throttled or soft temperature limit bit).
    #[serde(default)]
    pub throttled: bool,
    /// Under-voltage now, or since the previous read (sticky bit).
    #[serde(default)]
    pub under_voltage: bool,
    /// Bytes written to storage since boot (summed over block devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_written: Option<u64>,
    /// eMMC life used (upper bound of the device's estimate, worst device).
    #[serde(
        default,
        rename = "storage_life_used_pct",
        skip_serializing_if = "Option::is_none"
    )]
    pub storage_life_used: Option<Percent>,
}

impl TelemetryPoint {
    /// An empty point at `at`.
    pub fn at(at: Timestamp) -> Self {
        Self {
            at,
            ..Self::default()
        }
    }

    /// Extracts a point from a full sample (trusted readings only).
    pub fn from_sample(s: &Sample) -> Self {
        let fan = s.fans.first();
        let flags = s.throttle.ok();
        let storage =
            (!s.storage.is_empty()).then(|| s.storage.iter().map(|w| w.bytes_written).sum::<u64>());
        Self {
            at: s.at,
            cpu_temp: s.cpu_temp().ok(),
            ambient: s.temperature(SensorKind::Ambient).ok(),
            cpu_load: s.cpu_load.ok(),
            power: s.power.ok(),
            supply_voltage: s.supply_voltage.ok(),
            current: s.current.ok(),
            fan_duty: fan.and_then(|f| f.duty.ok()),
            fan_rpm: fan.and_then(|f| f.rpm.ok()),
            throttled: flags.is_some_and(|f| f.throttled || f.soft_temp_limit),
            under_voltage: flags.is_some_and(|f| f.under_voltage || f.under_voltage_occurred),
            bytes_written: storage,
            storage_life_used: s
                .storage
                .iter()
                .filter_map(|w| w.life_used_upper_pct())
                .reduce(Percent::max),
        }
    }
}

/// What is known about a device's storage endurance (for the end-of-life estimate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StorageRating {
    /// Rated endurance in bytes written (TBW × 10¹²).
    pub endurance_bytes: u64,
    /// Bytes written over the device's whole life up to the window's end.
    pub lifetime_written_bytes: u64,
}

/// One device's telemetry window and what the analyzer needs to know about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceWindow {
    /// The device.
    pub device: DeviceId,
    /// Its board model (selects the profile: thresholds and thermal figures).
    pub model: BoardModel,
    /// Where it is (peers and hot spots).
    #[serde(default)]
    pub location: Location,
    /// Its group, for per-group health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// The device's effective throttle threshold when its policy tightened the
    /// profile's (`None`: the profile's `throttle_c`).
    #[serde(
        default,
        rename = "throttle_c",
        skip_serializing_if = "Option::is_none"
    )]
    pub throttle: Option<Celsius>,
    /// Storage endurance, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageRating>,
    /// The points, oldest first (the analyzer sorts them if not).
    pub points: Vec<TelemetryPoint>,
}

impl DeviceWindow {
    /// A window with no group, threshold override or storage rating.
    pub fn new(
        device: DeviceId,
        model: BoardModel,
        location: Location,
        points: Vec<TelemetryPoint>,
    ) -> Self {
        Self {
            device,
            model,
            location,
            group: None,
            throttle: None,
            storage: None,
            points,
        }
    }
}

/// Which physical neighbourhood forms a device's peer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerLevel {
    /// Same model on the same site.
    Site,
    /// Same model in the same rack.
    #[default]
    Rack,
    /// Same model on the same shelf.
    Shelf,
}

/// Analyzer thresholds. Defaults are documented in `docs/fleet.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyzerConfig {
    /// Fewer CPU temperature points than this: no thermal analysis.
    pub min_points: usize,
    /// Longest series fed to the O(n²) Theil–Sen estimator (longer ones are thinned).
    pub max_fit_points: usize,
    /// Slopes below this (°C/h) count as flat: no time-to-throttle prediction.
    pub min_trend_c_per_h: f64,
    /// Seconds a point must have been quasi-steady to enter the fan analysis.
    pub steady_window_s: f64,
    /// Largest temperature change over the steady window (°C).
    pub steady_max_change_c: f64,
    /// Smallest duty spread (percentage points) for the differential fan estimate.
    pub fan_min_spread_pct: f64,
    /// Effectiveness below this: fan `degraded`.
    pub fan_degraded_below: f64,
    /// Effectiveness below this: fan `failing`.
    pub fan_failing_below: f64,
    /// Peer group for anomalies.
    pub peer_level: PeerLevel,
    /// Smallest peer group (the device included) for anomalies.
    pub min_peers: usize,
    /// |robust z| at or above this is an anomaly (3.5: Iglewicz and Hoaglin).
    pub anomaly_z: f64,
    /// MAD floor for temperatures (°C).
    pub mad_floor_c: f64,
    /// MAD floor for thermal resistance (K/W).
    pub mad_floor_k_per_w: f64,
    /// MAD floor for supply voltage (V).
    pub mad_floor_v: f64,
    /// Width of the load bands within which temperatures are compared (hot spots).
    pub load_band_pct: f64,
    /// A location is a hot spot when its devices' median excess is at least this (°C).
    pub hot_spot_min_c: f64,
    /// Fewest devices in a location to call it a hot spot.
    pub hot_spot_min_devices: usize,
    /// Electrical power of the fan at 100 % duty, subtracted from the measured
    /// board power to get the heat (0.45 W on a Pi 4, PHYSICS.md 1.1).
    pub fan_power_w: f64,
    /// Health factor: headroom below this (°C) costs points.
    pub low_headroom_c: f64,
    /// Health factor: time to throttle below this (s) costs points.
    pub soon_throttle_s: f64,
    /// Health factor: storage end of life within this many days costs points.
    pub storage_eol_warn_days: f64,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            min_points: 5,
            max_fit_points: 60,
            min_trend_c_per_h: 0.5,
            steady_window_s: 300.0,
            steady_max_change_c: 1.5,
            fan_min_spread_pct: 20.0,
            fan_degraded_below: 0.6,
            fan_failing_below: 0.3,
            peer_level: PeerLevel::Rack,
            min_peers: 4,
            anomaly_z: 3.5,
            mad_floor_c: 1.0,
            mad_floor_k_per_w: 0.3,
            mad_floor_v: 0.02,
            load_band_pct: 25.0,
            hot_spot_min_c: 4.0,
            hot_spot_min_devices: 2,
            fan_power_w: 0.45,
            low_headroom_c: 10.0,
            soon_throttle_s: 6.0 * 3600.0,
            storage_eol_warn_days: 90.0,
        }
    }
}

/// Temperature trend over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TempTrend {
    /// Theil–Sen slope in °C per hour.
    pub slope_c_per_h: f64,
    /// The robust level at the last point (on the fitted line).
    #[serde(rename = "level_c")]
    pub level: Celsius,
    /// The last reading.
    #[serde(rename = "latest_c")]
    pub latest: Celsius,
    /// Points used (after thinning).
    pub points: usize,
}

/// Thermal headroom at the current load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThermalHeadroom {
    /// Throttle threshold used.
    #[serde(rename = "throttle_c")]
    pub throttle: Celsius,
    /// Current temperature (robust level).
    #[serde(rename = "temp_c")]
    pub temp: Celsius,
    /// Degrees below the threshold (negative: above).
    #[serde(rename = "headroom_c")]
    pub headroom: Celsius,
    /// Ambient used.
    #[serde(rename = "ambient_c")]
    pub ambient: Celsius,
    /// Whether the ambient is the profile's default (no sensor).
    pub ambient_assumed: bool,
    /// Board power used.
    #[serde(rename = "power_w")]
    pub power: Watts,
    /// Whether the power was estimated from the CPU load (no power monitor).
    pub power_estimated: bool,
    /// Measured thermal resistance `(T − T_ambient) / P`.
    #[serde(rename = "r_th_k_per_w")]
    pub r_th: KelvinPerWatt,
    /// Extra power the device can take at steady state before the threshold.
    #[serde(rename = "power_headroom_w")]
    pub power_headroom: Watts,
    /// CPU load (median of the recent points), when known.
    #[serde(
        default,
        rename = "cpu_load_pct",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_load: Option<Percent>,
}

/// How the fan estimate was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FanMethod {
    /// Slope of conductance over periods with different duty.
    Differential,
    /// One duty level, compared with the profile's heatsink-only conductance.
    Model,
}

/// Verdict on a fan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FanStatus {
    /// Not enough steady data with the fan running.
    Unknown,
    /// Cools as the profile expects (within the degraded threshold).
    Healthy,
    /// Cools noticeably less than expected.
    Degraded,
    /// Its cooling effect vanished, or its tach reads nothing while driven.
    Failing,
}

/// Fan effectiveness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanEffectiveness {
    /// Verdict.
    pub status: FanStatus,
    /// How it was estimated (`None` when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<FanMethod>,
    /// Fraction of the profile's expected cooling effect (1 = as expected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effectiveness: Option<f64>,
    /// Measured temperature drop per duty percent at the current power and duty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_c_per_duty_pct: Option<f64>,
    /// What a healthy fan would give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_drop_c_per_duty_pct: Option<f64>,
    /// Steady points used.
    pub steady_points: usize,
    /// Duty spread among them (percentage points).
    pub duty_spread_pct: f64,
    /// Whether the tach reads a plausible speed while driven (`None`: no tach).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tach_ok: Option<bool>,
}

/// Supply stability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupplyStability {
    /// Median supply voltage.
    #[serde(rename = "median_v")]
    pub median: Volts,
    /// Lowest reading.
    #[serde(rename = "min_v")]
    pub min: Volts,
    /// Sag: nominal minus the 5th percentile.
    #[serde(rename = "sag_v")]
    pub sag: Volts,
    /// Ripple: robust standard deviation of successive differences / √2.
    #[serde(rename = "ripple_v")]
    pub ripple: Volts,
    /// 5th percentile minus the under-voltage threshold (`None`: no detector).
    #[serde(default, rename = "margin_v", skip_serializing_if = "Option::is_none")]
    pub margin: Option<Volts>,
    /// Under-voltage episodes (rising edges) in the window.
    pub under_voltage_events: u32,
    /// The same, per day of window.
    pub under_voltage_per_day: f64,
}

/// Storage wear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageWearRate {
    /// Write rate (counter resets at reboot are skipped).
    pub bytes_per_day: f64,
    /// eMMC life used (upper bound), where reported.
    #[serde(
        default,
        rename = "life_used_pct",
        skip_serializing_if = "Option::is_none"
    )]
    pub life_used: Option<Percent>,
    /// Days until end of life at the current rate, when predictable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_left: Option<f64>,
    /// The predicted end of life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_end_of_life: Option<Timestamp>,
}

/// One thing that lowered a health score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthFactor {
    /// Stable code (`low_headroom`, `fan_failing`, ...).
    pub code: String,
    /// Points taken off.
    pub penalty: f64,
    /// The values behind it.
    pub detail: String,
}

/// A health score with its contributing factors.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Health {
    /// 0 (broken) to 100 (nothing to say).
    pub score: f64,
    /// What lowered it, largest first.
    pub factors: Vec<HealthFactor>,
}

impl Health {
    fn from_factors(mut factors: Vec<HealthFactor>) -> Self {
        factors.sort_by(|a, b| b.penalty.total_cmp(&a.penalty).then(a.code.cmp(&b.code)));
        let score = (100.0 - factors.iter().map(|f| f.penalty).sum::<f64>()).clamp(0.0, 100.0);
        Health { score, factors }
    }

    fn add(&mut self, f: HealthFactor) {
        let mut v = std::mem::take(&mut self.factors);
        v.push(f);
        *self = Health::from_factors(v);
    }
}

/// Everything the analyzer says about one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceAnalysis {
    /// The device.
    pub device: DeviceId,
    /// Its model.
    pub model: BoardModel,
    /// Its location.
    pub location: Location,
    /// Its group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// Points in the window.
    pub points: usize,
    /// Time of the newest point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// Temperature trend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<TempTrend>,
    /// Seconds until the throttle threshold at the current trend (0: already
    /// there; `None`: flat or cooling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_throttle_s: Option<f64>,
    /// Thermal headroom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<ThermalHeadroom>,
    /// Fan effectiveness (`None`: no fan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan: Option<FanEffectiveness>,
    /// Supply stability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supply: Option<SupplyStability>,
    /// Storage wear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageWearRate>,
    /// Points where the firmware throttled.
    pub throttled_points: usize,
    /// Whether the newest point is throttled.
    pub throttled_now: bool,
    /// Health.
    pub health: Health,
}

impl DeviceAnalysis {
    /// The registry's health level for this analysis (what `GET /devices` shows):
    ///
    /// - `unknown`: no point in the window;
    /// - `critical`: score below [`HEALTH_CRITICAL_BELOW`], throttled at the newest
    ///   point, or a failing fan;
    /// - `warning`: score below [`HEALTH_WARNING_BELOW`], or any factor other than
    ///   `insufficient_data` costing at least 10 points;
    /// - `ok` otherwise.
    pub fn health_level(&self) -> crate::fleet::registry::Health {
        use crate::fleet::registry::Health as Level;
        if self.points == 0 {
            return Level::Unknown;
        }
        let fan_failing = self
            .fan
            .as_ref()
            .is_some_and(|f| f.status == FanStatus::Failing);
        if self.health.score < HEALTH_CRITICAL_BELOW || self.throttled_now || fan_failing {
            return Level::Critical;
        }
        let serious = self
            .health
            .factors
            .iter()
            .any(|f| f.code != "insufficient_data" && f.penalty >= 10.0);
        if self.health.score < HEALTH_WARNING_BELOW || serious {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

/// Scores below this are `critical` in the registry ([`DeviceAnalysis::health_level`]).
pub const HEALTH_CRITICAL_BELOW: f64 = 50.0;
/// Scores below this are at least `warning` in the registry.
pub const HEALTH_WARNING_BELOW: f64 = 80.0;

/// Metric compared between peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyMetric {
    /// CPU temperature level (°C).
    CpuTemp,
    /// Thermal resistance (K/W): hotter at the same load.
    ThermalResistance,
    /// Median supply voltage (V).
    SupplyVoltage,
}

impl AnomalyMetric {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyMetric::CpuTemp => "cpu_temp",
            AnomalyMetric::ThermalResistance => "thermal_resistance",
            AnomalyMetric::SupplyVoltage => "supply_voltage",
        }
    }
}

/// A device unlike its peers, with the evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The device.
    pub device: DeviceId,
    /// What differs.
    pub metric: AnomalyMetric,
    /// Its value.
    pub value: f64,
    /// The peers' median (the device included).
    pub peer_median: f64,
    /// The peers' median absolute deviation (unscaled).
    pub peer_mad: f64,
    /// Robust z-score (with the MAD floor).
    pub z: f64,
    /// The peer group (the device included), by id.
    pub peers: Vec<DeviceId>,
    /// Human summary.
    pub message: String,
}

/// A location whose devices run hotter than the fleet at comparable load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotSpot {
    /// `site/rack` or `site/rack/shelf`.
    pub location: String,
    /// Site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Rack.
    pub rack: String,
    /// Shelf, for a shelf hot spot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelf: Option<String>,
    /// Median of its devices' excess over same-model devices elsewhere in the
    /// same load band (°C).
    #[serde(rename = "excess_c")]
    pub excess: Celsius,
    /// Median ambient of its devices, where measured.
    #[serde(default, rename = "ambient_c", skip_serializing_if = "Option::is_none")]
    pub ambient: Option<Celsius>,
    /// Median ambient of the devices elsewhere, where measured.
    #[serde(
        default,
        rename = "fleet_ambient_c",
        skip_serializing_if = "Option::is_none"
    )]
    pub fleet_ambient: Option<Celsius>,
    /// Its devices.
    pub devices: Vec<DeviceId>,
}

/// A scope of aggregated health.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HealthScope {
    /// The whole fleet.
    Fleet,
    /// A site.
    Site {
        /// Site name.
        site: String,
    },
    /// A rack.
    Rack {
        /// Site name (`-` when unknown).
        site: String,
        /// Rack name.
        rack: String,
    },
    /// A group.
    Group {
        /// Group id.
        group: GroupId,
    },
}

/// Health aggregated over a scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupHealth {
    /// The scope.
    pub scope: HealthScope,
    /// Devices in it.
    pub devices: usize,
    /// Mean score.
    pub mean_score: f64,
    /// Lowest score.
    pub min_score: f64,
    /// The device with the lowest score.
    pub worst_device: DeviceId,
    /// How many devices carry each factor code.
    pub factors: BTreeMap<String, usize>,
}

/// The result of one analyzer pass over the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetAnalysis {
    /// When it was computed.
    pub at: Timestamp,
    /// Per device, sorted by id.
    pub devices: Vec<DeviceAnalysis>,
    /// Devices unlike their peers.
    pub anomalies: Vec<Anomaly>,
    /// Hot racks and shelves, hottest first.
    pub hot_spots: Vec<HotSpot>,
    /// Health per fleet, site, rack and group.
    pub groups: Vec<GroupHealth>,
}

impl FleetAnalysis {
    /// The analysis of one device.
    pub fn device(&self, id: &DeviceId) -> Option<&DeviceAnalysis> {
        self.devices
            .binary_search_by(|d| d.device.cmp(id))
            .ok()
            .map(|i| &self.devices[i])
    }

    /// The anomalies of one device.
    pub fn anomalies_of(&self, id: &DeviceId) -> Vec<&Anomaly> {
        self.anomalies.iter().filter(|a| &a.device == id).collect()
    }
}

fn hours(s: f64) -> f64 {
    s / 3600.0
}

/// Per-model figures, cached for a pass.
struct ModelFigures {
    throttle_c: f64,
    ambient_c: f64,
    idle_w: f64,
    load_w: f64,
    nominal_v: f64,
    undervoltage_v: Option<f64>,
    fan: FanKind,
    max_rpm: Option<f64>,
    min_start_duty: f64,
    g_heatsink: f64,
    g_fan: f64,
}

impl ModelFigures {
    fn of(p: &BoardProfile) -> Self {
        Self {
            throttle_c: p.thermal.throttle_c.get(),
            ambient_c: p.thermal_model.ambient_c.get(),
            idle_w: p.power.idle_w.get(),
            load_w: p.power.load_w.get(),
            nominal_v: p.power.nominal_v.get(),
            undervoltage_v: p.power.undervoltage_v.map(Volts::get),
            fan: p.fan.kind,
            max_rpm: p.fan.max_rpm.map(Rpm::get),
            min_start_duty: p.fan.min_start_duty_pct.get(),
            g_heatsink: 1.0 / p.thermal_model.r_th_heatsink.get(),
            g_fan: 1.0 / p.thermal_model.r_th_fan.get(),
        }
    }
}

fn figures(model: BoardModel) -> ModelFigures {
    ModelFigures::of(&BoardProfile::builtin(model))
}

/// Analyzes one device's window with its model's built-in profile.
pub fn analyze_device(w: &DeviceWindow, cfg: &AnalyzerConfig, now: Timestamp) -> DeviceAnalysis {
    analyze_with(w, cfg, &figures(w.model), now)
}

/// Analyzes one device's window against an explicit board profile (a custom one).
pub fn analyze_device_with_profile(
    w: &DeviceWindow,
    profile: &BoardProfile,
    cfg: &AnalyzerConfig,
    now: Timestamp,
) -> DeviceAnalysis {
    analyze_with(w, cfg, &ModelFigures::of(profile), now)
}

fn analyze_with(
    w: &DeviceWindow,
    cfg: &AnalyzerConfig,
    fig: &ModelFigures,
    now: Timestamp,
) -> DeviceAnalysis {
    let sorted;
    let pts: &[TelemetryPoint] = if w.points.windows(2).all(|p| p[0].at <= p[1].at) {
        &w.points
    } else {
        let mut v = w.points.clone();
        v.sort_by_key(|p| p.at);
        sorted = v;
        &sorted
    };
    let throttle_c = w.throttle.map_or(fig.throttle_c, Celsius::get);
    let t0 = pts.first().map_or(0, |p| p.at.as_millis());
    let secs = |p: &TelemetryPoint| (p.at.as_millis() - t0) as f64 / 1000.0;

    let mut factors = Vec::new();

    // Trend.
    let temp_idx: Vec<usize> = (0..pts.len())
        .filter(|&i| pts[i].cpu_temp.is_some_and(Celsius::is_finite))
        .collect();
    let mut trend = None;
    let mut time_to_throttle_s = None;
    if temp_idx.len() >= cfg.min_points {
        let pick = stats::thin(temp_idx.len(), cfg.max_fit_points);
        let xs: Vec<f64> = pick.iter().map(|&k| secs(&pts[temp_idx[k]])).collect();
        let ys: Vec<f64> = pick
            .iter()
            .map(|&k| pts[temp_idx[k]].cpu_temp.map_or(0.0, Celsius::get))
            .collect();
        if let Some((slope, icpt)) = stats::theil_sen(&xs, &ys) {
            let x_last = xs.last().copied().unwrap_or(0.0);
            let level = icpt + slope * x_last;
            let latest = ys.last().copied().unwrap_or(level);
            let slope_h = slope * 3600.0;
            trend = Some(TempTrend {
                slope_c_per_h: slope_h,
                level: Celsius(level),
                latest: Celsius(latest),
                points: xs.len(),
            });
            if level >= throttle_c {
                time_to_throttle_s = Some(0.0);
            } else if slope_h >= cfg.min_trend_c_per_h {
                time_to_throttle_s = Some((throttle_c - level) / slope_h * 3600.0);
            }
        }
    } else {
        factors.push(HealthFactor {
            code: "insufficient_data".into(),
            penalty: 10.0,
            detail: format!(
                "{} temperature points (need {})",
                temp_idx.len(),
                cfg.min_points
            ),
        });
    }

    // Recent values: the last 10 % of the window, at least 5 points.
    let recent_from = pts.len().saturating_sub((pts.len() / 10).max(5));
    let recent = &pts[recent_from..];
    let med_recent = |f: &dyn Fn(&TelemetryPoint) -> Option<f64>| {
        let v: Vec<f64> = recent.iter().filter_map(f).collect();
        stats::median(&v)
    };
    let ambient_meas = med_recent(&|p| p.ambient.map(Celsius::get));
    let load_recent = med_recent(&|p| p.cpu_load.map(Percent::get));
    // Heat dissipated on the board: measured power minus the fan's own share
    // (its electrical power leaves with the air, not through the die).
    let fan_w = cfg.fan_power_w;
    let heat = move |p: &TelemetryPoint| {
        p.power
            .map(|w| (w.get() - fan_w * p.fan_duty.map_or(0.0, Percent::fraction)).max(0.0))
    };
    let power_meas = med_recent(&heat);
    let est_power =
        |load: Option<f64>| load.map(|l| fig.idle_w + (fig.load_w - fig.idle_w) * l / 100.0);
    let point_power =
        |p: &TelemetryPoint| heat(p).or_else(|| est_power(p.cpu_load.map(Percent::get)));
    let point_ambient = |p: &TelemetryPoint| p.ambient.map_or(fig.ambient_c, Celsius::get);

    // Headroom.
    let headroom = trend.as_ref().and_then(|t| {
        let ambient = ambient_meas.unwrap_or(fig.ambient_c);
        let (power, estimated) = match power_meas {
            Some(p) => (p, false),
            None => (est_power(load_recent)?, true),
        };
        if power <= 0.0 {
            return None;
        }
        let rs: Vec<f64> = recent
            .iter()
            .filter_map(|p| {
                let (t, pw) = (p.cpu_temp?.get(), point_power(p)?);
                (pw > 0.0).then(|| (t - point_ambient(p)) / pw)
            })
            .collect();
        let r = stats::median(&rs).unwrap_or((t.level.get() - ambient) / power);
        let head = throttle_c - t.level.get();
        Some(ThermalHeadroom {
            throttle: Celsius(throttle_c),
            temp: t.level,
            headroom: Celsius(head),
            ambient: Celsius(ambient),
            ambient_assumed: ambient_meas.is_none(),
            power: Watts(power),
            power_estimated: estimated,
            r_th: KelvinPerWatt(r),
            power_headroom: Watts(if r > 0.0 { head / r } else { 0.0 }),
            cpu_load: load_recent.map(Percent::saturating),
        })
    });

    let fan = (fig.fan != FanKind::None)
        .then(|| fan_effectiveness(pts, cfg, fig, &secs, &point_power, &point_ambient));
    let supply = supply_stability(pts, fig);
    let storage = storage_wear(pts, w.storage, now);
    let throttled_points = pts.iter().filter(|p| p.throttled).count();
    let throttled_now = pts.last().is_some_and(|p| p.throttled);

    // Health factors.
    if let Some(h) = &headroom {
        let hd = h.headroom.get();
        if hd < cfg.low_headroom_c {
            let penalty = (25.0 * (cfg.low_headroom_c - hd) / cfg.low_headroom_c).clamp(0.0, 25.0);
            factors.push(HealthFactor {
                code: "low_headroom".into(),
                penalty,
                detail: format!(
                    "{:.1} °C below the {:.1} °C throttle threshold",
                    hd, throttle_c
                ),
            });
        }
    }
    if let Some(s) = time_to_throttle_s.filter(|s| *s > 0.0 && *s < cfg.soon_throttle_s) {
        factors.push(HealthFactor {
            code: "throttle_soon".into(),
            penalty: 15.0 * (1.0 - s / cfg.soon_throttle_s),
            detail: format!(
                "throttle threshold in {:.1} h at the current trend",
                hours(s)
            ),
        });
    }
    if throttled_points > 0 {
        let frac = throttled_points as f64 / pts.len().max(1) as f64;
        factors.push(HealthFactor {
            code: "throttled".into(),
            penalty: 10.0 + 10.0 * frac,
            detail: format!(
                "firmware throttled in {throttled_points} of {} points",
                pts.len()
            ),
        });
    }
    if let Some(f) = &fan {
        let (code, penalty) = match f.status {
            FanStatus::Failing => ("fan_failing", 25.0),
            FanStatus::Degraded => ("fan_degraded", 10.0),
            _ => ("", 0.0),
        };
        if penalty > 0.0 {
            factors.push(HealthFactor {
                code: code.into(),
                penalty,
                detail: match (f.effectiveness, f.tach_ok) {
                    (_, Some(false)) => "tach reads no rotation while driven".into(),
                    (Some(e), tach) => format!(
                        "cooling effect {:.0} % of expected{}",
                        e * 100.0,
                        if tach == Some(true) {
                            " (tach reads normally)"
                        } else {
                            ""
                        }
                    ),
                    _ => "fan not effective".into(),
                },
            });
        }
    }
    if let Some(s) = &supply {
        if s.under_voltage_events > 0 {
            factors.push(HealthFactor {
                code: "under_voltage".into(),
                penalty: (10.0 + 2.0 * f64::from(s.under_voltage_events)).min(25.0),
                detail: format!(
                    "{} under-voltage events ({:.1}/day), minimum {:.2} V",
                    s.under_voltage_events,
                    s.under_voltage_per_day,
                    s.min.get()
                ),
            });
        } else if s.margin.is_some_and(|m| m.get() < 0.1) {
            factors.push(HealthFactor {
                code: "supply_margin".into(),
                penalty: 5.0,
                detail: format!(
                    "supply within {:.2} V of the under-voltage threshold",
                    s.margin.map_or(0.0, Volts::get)
                ),
            });
        }
    }
    if let Some(d) = storage.as_ref().and_then(|s| s.days_left) {
        if d < cfg.storage_eol_warn_days {
            factors.push(HealthFactor {
                code: "storage_wear".into(),
                penalty: if d < 30.0 { 20.0 } else { 10.0 },
                detail: format!("storage end of life in {d:.0} days at the current write rate"),
            });
        }
    }

    DeviceAnalysis {
        device: w.device.clone(),
        model: w.model,
        location: w.location.clone(),
        group: w.group.clone(),
        points: pts.len(),
        last_seen: pts.last().map(|p| p.at),
        trend,
        time_to_throttle_s,
        headroom,
        fan,
        supply,
        storage,
        throttled_points,
        throttled_now,
        health: Health::from_factors(factors),
    }
}

fn fan_effectiveness(
    pts: &[TelemetryPoint],
    cfg: &AnalyzerConfig,
    fig: &ModelFigures,
    secs: &dyn Fn(&TelemetryPoint) -> f64,
    power: &dyn Fn(&TelemetryPoint) -> Option<f64>,
    ambient: &dyn Fn(&TelemetryPoint) -> f64,
) -> FanEffectiveness {
    // Quasi-steady points: over the preceding steady window the temperature moved
    // less than the limit, the duty did not change and the power moved < 10 %.
    let mut duty = Vec::new();
    let mut cond = Vec::new();
    let mut j = 0;
    for i in 0..pts.len() {
        let p = &pts[i];
        let (Some(t), Some(d), Some(pw)) = (p.cpu_temp, p.fan_duty, power(p)) else {
            continue;
        };
        let ti = secs(p);
        while j < i && ti - secs(&pts[j]) > cfg.steady_window_s {
            j += 1;
        }
        if ti - secs(&pts[j]) < 0.8 * cfg.steady_window_s {
            continue; // not enough history yet
        }
        let steady = pts[j..i].iter().all(|q| {
            q.cpu_temp
                .is_some_and(|qt| (qt.get() - t.get()).abs() <= cfg.steady_max_change_c)
                && q.fan_duty
                    .is_some_and(|qd| (qd.get() - d.get()).abs() < 1.0)
                && power(q).is_some_and(|qp| (qp - pw).abs() <= 0.1 * pw)
        });
        let rise = t.get() - ambient(p);
        if steady && rise > 1.0 && pw > 0.0 {
            duty.push(d.fraction());
            cond.push(pw / rise);
        }
    }
    let n = duty.len();
    let spread = duty.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        - duty.iter().copied().fold(f64::INFINITY, f64::min);
    let spread_pct = if n > 0 { spread * 100.0 } else { 0.0 };

    // Tach: with the fan driven above its start duty, does it turn?
    let tach_ok = fig.max_rpm.and_then(|max_rpm| {
        let v: Vec<f64> = pts
            .iter()
            .filter(|p| {
                p.fan_duty
                    .is_some_and(|d| d.get() >= fig.min_start_duty + 5.0)
            })
            .filter_map(|p| {
                let d = p.fan_duty?.fraction();
                p.fan_rpm.map(|r| r.get() / (max_rpm * d))
            })
            .collect();
        stats::median(&v).map(|ratio| ratio > 0.2)
    });

    let expected_slope = fig.g_fan - fig.g_heatsink;
    let (method, slope) = if n >= 3 && spread_pct >= cfg.fan_min_spread_pct {
        let pick = stats::thin(n, cfg.max_fit_points);
        let xs: Vec<f64> = pick.iter().map(|&k| duty[k]).collect();
        let ys: Vec<f64> = pick.iter().map(|&k| cond[k]).collect();
        (
            Some(FanMethod::Differential),
            stats::theil_sen(&xs, &ys).map(|(s, _)| s),
        )
    } else if n >= 3 {
        let d = stats::median(&duty).unwrap_or(0.0);
        let g = stats::median(&cond).unwrap_or(0.0);
        if d * 100.0 >= fig.min_start_duty.max(10.0) {
            (Some(FanMethod::Model), Some((g - fig.g_heatsink) / d))
        } else {
            (None, None)
        }
    } else {
        (None, None)
    };
    let effectiveness = slope
        .filter(|_| expected_slope > 0.0)
        .map(|s| s / expected_slope);

    // Drop per duty percent at the latest steady operating point.
    let (mut drop, mut expected_drop) = (None, None);
    if let (Some(s), Some(&d_now), Some(&g_now)) = (slope, duty.last(), cond.last()) {
        let p_now = pts.iter().rev().find_map(power).unwrap_or(0.0);
        drop = Some(p_now * s / (g_now * g_now) / 100.0);
        let g_exp = fig.g_heatsink + d_now * expected_slope;
        expected_drop = Some(p_now * expected_slope / (g_exp * g_exp) / 100.0);
    }

    let status = if tach_ok == Some(false) {
        FanStatus::Failing
    } else {
        match effectiveness {
            None => FanStatus::Unknown,
            Some(e) if e < cfg.fan_failing_below => FanStatus::Failing,
            Some(e) if e < cfg.fan_degraded_below => FanStatus::Degraded,
            Some(_) => FanStatus::Healthy,
        }
    };
    FanEffectiveness {
        status,
        method: method.filter(|_| effectiveness.is_some()),
        effectiveness,
        drop_c_per_duty_pct: drop,
        expected_drop_c_per_duty_pct: expected_drop,
        steady_points: n,
        duty_spread_pct: spread_pct,
        tach_ok,
    }
}

fn supply_stability(pts: &[TelemetryPoint], fig: &ModelFigures) -> Option<SupplyStability> {
    let v: Vec<f64> = pts
        .iter()
        .filter_map(|p| p.supply_voltage.map(Volts::get))
        .filter(|x| x.is_finite())
        .collect();
    if v.len() < 2 {
        return None;
    }
    let median = stats::median(&v)?;
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let p5 = stats::percentile(&v, 5.0)?;
    let diffs: Vec<f64> = v.windows(2).map(|w| w[1] - w[0]).collect();
    let dmed = stats::median(&diffs).unwrap_or(0.0);
    let ripple = stats::mad(&diffs, dmed).unwrap_or(0.0) * stats::MAD_TO_SIGMA / 2f64.sqrt();
    let uv = |p: &TelemetryPoint| {
        p.under_voltage
            || fig
                .undervoltage_v
                .zip(p.supply_voltage)
                .is_some_and(|(thr, v)| v.get() < thr)
    };
    let mut events = 0u32;
    let mut prev = false;
    for p in pts {
        let now = uv(p);
        if now && !prev {
            events += 1;
        }
        prev = now;
    }
    let span_s = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => ((b.at.as_millis() - a.at.as_millis()) as f64 / 1000.0).max(60.0),
        _ => 60.0,
    };
    Some(SupplyStability {
        median: Volts(median),
        min: Volts(min),
        sag: Volts((fig.nominal_v - p5).max(0.0)),
        ripple: Volts(ripple),
        margin: fig.undervoltage_v.map(|thr| Volts(p5 - thr)),
        under_voltage_events: events,
        under_voltage_per_day: f64::from(events) * 86_400.0 / span_s,
    })
}

fn storage_wear(
    pts: &[TelemetryPoint],
    rating: Option<StorageRating>,
    now: Timestamp,
) -> Option<StorageWearRate> {
    let mut written = 0u64;
    let mut span_ms = 0i64;
    let mut prev: Option<(Timestamp, u64)> = None;
    for p in pts {
        if let Some(b) = p.bytes_written {
            if let Some((t, pb)) = prev {
                // A smaller counter is a reboot: that interval is skipped.
                if b >= pb {
                    written += b - pb;
                    span_ms += p.at.as_millis() - t.as_millis();
                }
            }
            prev = Some((p.at, b));
        }
    }
    let life: Vec<(Timestamp, f64)> = pts
        .iter()
        .filter_map(|p| p.storage_life_used.map(|l| (p.at, l.get())))
        .collect();
    if span_ms <= 0 && life.is_empty() {
        return None;
    }
    let bytes_per_day = if span_ms > 0 {
        written as f64 * 86_400_000.0 / span_ms as f64
    } else {
        0.0
    };
    let mut days: Option<f64> = None;
    if let Some(r) = rating {
        if bytes_per_day > 0.0 {
            let left = r.endurance_bytes.saturating_sub(r.lifetime_written_bytes) as f64;
            days = Some(left / bytes_per_day);
        }
    }
    if let (Some(a), Some(b)) = (life.first(), life.last()) {
        let dt_days = (b.0.as_millis() - a.0.as_millis()) as f64 / 86_400_000.0;
        if b.1 > a.1 && dt_days > 0.0 {
            let d = (100.0 - b.1).max(0.0) / ((b.1 - a.1) / dt_days);
            days = Some(days.map_or(d, |x| x.min(d)));
        }
    }
    Some(StorageWearRate {
        bytes_per_day,
        life_used: life.last().map(|l| Percent::saturating(l.1)),
        days_left: days,
        predicted_end_of_life: days
            .filter(|d| d.is_finite() && *d < 3650.0 * 10.0)
            .map(|d| now + Duration::from_secs_f64(d * 86_400.0)),
    })
}

fn peer_key(
    loc: &Location,
    level: PeerLevel,
) -> Option<(Option<String>, Option<String>, Option<String>)> {
    match level {
        PeerLevel::Site => loc.site.clone().map(|s| (Some(s), None, None)),
        PeerLevel::Rack => loc.rack.clone().map(|r| (loc.site.clone(), Some(r), None)),
        PeerLevel::Shelf => match (&loc.rack, &loc.shelf) {
            (Some(r), Some(s)) => Some((loc.site.clone(), Some(r.clone()), Some(s.clone()))),
            _ => None,
        },
    }
}

/// The peer comparison of one metric over one peer group: returns the anomalies.
/// `values` are `(device index, value)`; `mad_floor` in the metric's unit.
#[allow(clippy::too_many_arguments)]
fn peer_anomalies(
    metric: AnomalyMetric,
    values: &[(usize, f64)],
    devices: &[DeviceAnalysis],
    mad_floor: f64,
    cfg: &AnalyzerConfig,
    unit: &str,
    out: &mut Vec<Anomaly>,
) {
    if values.len() < cfg.min_peers {
        return;
    }
    let xs: Vec<f64> = values.iter().map(|v| v.1).collect();
    let Some(med) = stats::median(&xs) else {
        return;
    };
    let mad = stats::mad(&xs, med).unwrap_or(0.0);
    let mut peers: Vec<DeviceId> = values
        .iter()
        .map(|(i, _)| devices[*i].device.clone())
        .collect();
    peers.sort();
    for &(i, x) in values {
        let z = stats::robust_z(x, med, mad, mad_floor);
        if z.abs() >= cfg.anomaly_z {
            out.push(Anomaly {
                device: devices[i].device.clone(),
                metric,
                value: x,
                peer_median: med,
                peer_mad: mad,
                z,
                peers: peers.clone(),
                message: format!(
                    "{} {:.2} {unit} vs peer median {:.2} {unit} (MAD {:.2}, z {:.1}, {} peers)",
                    metric.as_str(),
                    x,
                    med,
                    mad,
                    z,
                    peers.len()
                ),
            });
        }
    }
}

/// The anomalies of a set of analyses: each device against its peers (same
/// model and [`PeerLevel`] location), for CPU temperature, thermal resistance and
/// supply voltage.
pub fn find_anomalies(devices: &[DeviceAnalysis], cfg: &AnalyzerConfig) -> Vec<Anomaly> {
    type Key = (BoardModel, (Option<String>, Option<String>, Option<String>));
    let mut groups: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    for (i, d) in devices.iter().enumerate() {
        if let Some(k) = peer_key(&d.location, cfg.peer_level) {
            groups.entry((d.model, k)).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    for idx in groups.values() {
        let temp: Vec<(usize, f64)> = idx
            .iter()
            .filter_map(|&i| devices[i].trend.as_ref().map(|t| (i, t.level.get())))
            .collect();
        peer_anomalies(
            AnomalyMetric::CpuTemp,
            &temp,
            devices,
            cfg.mad_floor_c,
            cfg,
            "°C",
            &mut out,
        );
        let r: Vec<(usize, f64)> = idx
            .iter()
            .filter_map(|&i| devices[i].headroom.as_ref().map(|h| (i, h.r_th.get())))
            .collect();
        peer_anomalies(
            AnomalyMetric::ThermalResistance,
            &r,
            devices,
            cfg.mad_floor_k_per_w,
            cfg,
            "K/W",
            &mut out,
        );
        let v: Vec<(usize, f64)> = idx
            .iter()
            .filter_map(|&i| devices[i].supply.as_ref().map(|s| (i, s.median.get())))
            .collect();
        peer_anomalies(
            AnomalyMetric::SupplyVoltage,
            &v,
            devices,
            cfg.mad_floor_v,
            cfg,
            "V",
            &mut out,
        );
    }
    out.sort_by(|a, b| a.device.cmp(&b.device).then(a.metric.cmp(&b.metric)));
    out
}

/// Racks and shelves whose devices run hotter than same-model devices elsewhere
/// in the fleet within the same load band.
pub fn find_hot_spots(devices: &[DeviceAnalysis], cfg: &AnalyzerConfig) -> Vec<HotSpot> {
    let band_of = |h: &ThermalHeadroom| {
        let load = h.cpu_load.map_or(50.0, Percent::get);
        (load / cfg.load_band_pct.max(1.0)).floor() as i64
    };
    // Locations at rack and shelf level, as small integers per device.
    type LocKey = (Option<String>, String, Option<String>);
    let mut loc_ids: BTreeMap<LocKey, usize> = BTreeMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    // Per device: (rack location id, shelf location id).
    let mut dev_locs: Vec<(Option<usize>, Option<usize>)> = vec![(None, None); devices.len()];
    let mut id_of = |k: LocKey, i: usize| {
        let next = loc_ids.len();
        let id = *loc_ids.entry(k).or_insert(next);
        if id == members.len() {
            members.push(Vec::new());
        }
        members[id].push(i);
        id
    };
    // (model, load band) -> device indices.
    let mut bands: BTreeMap<(BoardModel, i64), Vec<usize>> = BTreeMap::new();
    for (i, d) in devices.iter().enumerate() {
        let Some(h) = &d.headroom else { continue };
        bands.entry((d.model, band_of(h))).or_default().push(i);
        if let Some(r) = &d.location.rack {
            let site = d.location.site.clone();
            let rack_id = id_of((site.clone(), r.clone(), None), i);
            let shelf_id = d
                .location
                .shelf
                .as_ref()
                .map(|s| id_of((site, r.clone(), Some(s.clone())), i));
            dev_locs[i] = (Some(rack_id), shelf_id);
        }
    }
    let temp = |i: usize| devices[i].headroom.as_ref().map_or(0.0, |h| h.temp.get());
    let ambient = |i: usize| {
        devices[i]
            .headroom
            .as_ref()
            .filter(|h| !h.ambient_assumed)
            .map(|h| h.ambient.get())
    };
    let all_ambient: Vec<(usize, f64)> = (0..devices.len())
        .filter_map(|i| ambient(i).map(|a| (i, a)))
        .collect();
    let mut out = Vec::new();
    for ((site, rack, shelf), &loc) in &loc_ids {
        let inside = |j: usize| dev_locs[j].0 == Some(loc) || dev_locs[j].1 == Some(loc);
        let mem = &members[loc];
        if mem.len() < cfg.hot_spot_min_devices {
            continue;
        }
        // Baseline per band: the same model and band, outside this location.
        let mut baseline: BTreeMap<(BoardModel, i64), Option<f64>> = BTreeMap::new();
        let mut excess = Vec::new();
        for &i in mem {
            let b = devices[i].headroom.as_ref().map(band_of).unwrap_or(0);
            let key = (devices[i].model, b);
            let base = *baseline.entry(key).or_insert_with(|| {
                let others: Vec<f64> = bands
                    .get(&key)
                    .map(|v| {
                        v.iter()
                            .copied()
                            .filter(|&j| !inside(j))
                            .map(temp)
                            .collect()
                    })
                    .unwrap_or_default();
                (others.len() >= 2)
                    .then(|| stats::median(&others))
                    .flatten()
            });
            if let Some(b) = base {
                excess.push(temp(i) - b);
            }
        }
        if excess.len() < cfg.hot_spot_min_devices {
            continue;
        }
        let Some(ex) = stats::median(&excess) else {
            continue;
        };
        if ex < cfg.hot_spot_min_c {
            continue;
        }
        let here: Vec<f64> = mem.iter().filter_map(|&i| ambient(i)).collect();
        let elsewhere: Vec<f64> = all_ambient
            .iter()
            .filter(|(j, _)| !inside(*j))
            .map(|(_, a)| *a)
            .collect();
        let mut ids: Vec<DeviceId> = mem.iter().map(|&i| devices[i].device.clone()).collect();
        ids.sort();
        out.push(HotSpot {
            location: format!(
                "{}/{}{}",
                site.as_deref().unwrap_or("-"),
                rack,
                shelf.as_ref().map(|s| format!("/{s}")).unwrap_or_default()
            ),
            site: site.clone(),
            rack: rack.clone(),
            shelf: shelf.clone(),
            excess: Celsius(ex),
            ambient: stats::median(&here).map(Celsius),
            fleet_ambient: stats::median(&elsewhere).map(Celsius),
            devices: ids,
        });
    }
    out.sort_by(|a, b| {
        b.excess
            .get()
            .total_cmp(&a.excess.get())
            .then(a.location.cmp(&b.location))
    });
    out
}

/// Health aggregated per fleet, site, rack and group.
pub fn aggregate_health(devices: &[DeviceAnalysis]) -> Vec<GroupHealth> {
    let mut scopes: BTreeMap<HealthScope, Vec<usize>> = BTreeMap::new();
    for (i, d) in devices.iter().enumerate() {
        scopes.entry(HealthScope::Fleet).or_default().push(i);
        let site = d.location.site.clone();
        if let Some(s) = &site {
            scopes
                .entry(HealthScope::Site { site: s.clone() })
                .or_default()
                .push(i);
        }
        if let Some(r) = &d.location.rack {
            scopes
                .entry(HealthScope::Rack {
                    site: site.clone().unwrap_or_else(|| "-".into()),
                    rack: r.clone(),
                })
                .or_default()
                .push(i);
        }
        if let Some(g) = &d.group {
            scopes
                .entry(HealthScope::Group { group: g.clone() })
                .or_default()
                .push(i);
        }
    }
    scopes
        .into_iter()
        .filter_map(|(scope, idx)| {
            let worst = idx.iter().copied().min_by(|&a, &b| {
                devices[a]
                    .health
                    .score
                    .total_cmp(&devices[b].health.score)
                    .then(devices[a].device.cmp(&devices[b].device))
            })?;
            let mut factors = BTreeMap::new();
            for &i in &idx {
                for f in &devices[i].health.factors {
                    *factors.entry(f.code.clone()).or_insert(0) += 1;
                }
            }
            Some(GroupHealth {
                scope,
                devices: idx.len(),
                mean_score: idx.iter().map(|&i| devices[i].health.score).sum::<f64>()
                    / idx.len() as f64,
                min_score: devices[worst].health.score,
                worst_device: devices[worst].device.clone(),
                factors,
            })
        })
        .collect()
}

/// One analyzer pass over the fleet: every device, then anomalies (which lower
/// the anomalous devices' health), hot spots and aggregated health.
pub fn analyze_fleet(
    windows: &[DeviceWindow],
    cfg: &AnalyzerConfig,
    now: Timestamp,
) -> FleetAnalysis {
    let mut figs: BTreeMap<BoardModel, ModelFigures> = BTreeMap::new();
    let mut devices: Vec<DeviceAnalysis> = windows
        .iter()
        .map(|w| {
            let f = figs.entry(w.model).or_insert_with(|| figures(w.model));
            analyze_with(w, cfg, f, now)
        })
        .collect();
    devices.sort_by(|a, b| a.device.cmp(&b.device));
    devices.dedup_by(|a, b| a.device == b.device);
    let anomalies = find_anomalies(&devices, cfg);
    for a in &anomalies {
        if a.z <= 0.0 && a.metric != AnomalyMetric::SupplyVoltage {
            continue; // cooler than its peers is not a health problem
        }
        if let Ok(i) = devices.binary_search_by(|d| d.device.cmp(&a.device)) {
            devices[i].health.add(HealthFactor {
                code: format!("anomaly_{}", a.metric.as_str()),
                penalty: 10.0,
                detail: a.message.clone(),
            });
        }
    }
    let hot_spots = find_hot_spots(&devices, cfg);
    let groups = aggregate_health(&devices);
    FleetAnalysis {
        at: now,
        devices,
        anomalies,
        hot_spots,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::stats::*;

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(mad(&[1.0, 2.0, 3.0, 4.0, 100.0], 3.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 100.0), Some(5.0));
    }

    #[test]
    fn theil_sen_ignores_outliers() {
        let x: Vec<f64> = (0..20).map(f64::from).collect();
        let mut y: Vec<f64> = x.iter().map(|x| 2.0 * x + 1.0).collect();
        y[3] = 500.0;
        y[15] = -300.0;
        let (s, i) = theil_sen(&x, &y).unwrap();
        assert!((s - 2.0).abs() < 1e-9 && (i - 1.0).abs() < 1e-9, "{s} {i}");
        assert_eq!(theil_sen(&[1.0, 1.0], &[2.0, 3.0]), None);
    }

    #[test]
    fn health_levels_follow_score_and_factors() {
        use super::*;
        use crate::fleet::registry::Health as Level;
        let w = DeviceWindow::new(
            DeviceId::new("pi-1").unwrap(),
            BoardModel::Pi4B,
            Location::default(),
            Vec::new(),
        );
        let now = Timestamp::from_secs(0);
        let mut a = analyze_device(&w, &AnalyzerConfig::default(), now);
        assert_eq!(a.points, 0);
        assert_eq!(a.health_level(), Level::Unknown);
        a.points = 3; // insufficient data only: 90, still ok
        assert_eq!(a.health.score, 90.0);
        assert_eq!(a.health_level(), Level::Ok);
        a.health.add(HealthFactor {
            code: "throttled".into(),
            penalty: 12.0,
            detail: String::new(),
        });
        assert_eq!(a.health_level(), Level::Warning);
        a.health.add(HealthFactor {
            code: "fan_failing".into(),
            penalty: 25.0,
            detail: String::new(),
        });
        assert_eq!(a.health.score, 53.0);
        assert_eq!(a.health_level(), Level::Warning);
        a.fan = Some(FanEffectiveness {
            status: FanStatus::Failing,
            method: None,
            effectiveness: Some(0.1),
            drop_c_per_duty_pct: None,
            expected_drop_c_per_duty_pct: None,
            steady_points: 3,
            duty_spread_pct: 0.0,
            tach_ok: Some(true),
        });
        assert_eq!(a.health_level(), Level::Critical);
        a.fan = None;
        a.throttled_now = true;
        assert_eq!(a.health_level(), Level::Critical);
    }

    #[test]
    fn thin_keeps_ends() {
        let t = thin(1000, 60);
        assert_eq!(t.len(), 60);
        assert_eq!(t[0], 0);
        assert_eq!(*t.last().unwrap(), 999);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }
}
