//! Settings of the `sim` backend (always compiled, so configs parse in any build).
//!
//! Everything here is plain data with serde: a [`SimConfig`] names the board model,
//! the seed, the room, the cooling, optional battery and solar sources, the initial
//! faults and a script of timed steps ([`ScriptStep`]). In TOML:
//!
//! ```toml
//! backend = "sim"
//! model = "pi4b"
//! seed = 7
//! ambient_c = 25.0
//! battery = { capacity_mah = 3400.0 }
//! faults = [{ kind = "sensor_noisy", sensor = "cpu", sigma_c = 0.5 }]
//!
//! [[script]]
//! at = "60s"
//! action = "set_load"
//! load_pct = 100.0
//!
//! [[script]]
//! at = "5m"
//! action = "inject"
//! fault = { kind = "fan_stall" }
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wrale_core::Timestamp;
use wrale_core::board::{BoardModel, BoardProfile};
use wrale_core::model::{PowerSourceKind, SecurityKind};
use wrale_core::units::{Celsius, Ohms, Percent};

/// Default start of virtual time: 2026-01-01T00:00:00Z (fixed, so runs are reproducible).
pub const DEFAULT_SIM_START: Timestamp = Timestamp::from_secs(1_767_225_600);

/// Sensor ids the simulator knows (for faults): the SoC sensor, the SHT3x-like
/// ambient sensor, the INA219-like power monitor, the fuel gauge and the fan tachometer.
pub const SIM_SENSORS: [&str; 5] = ["cpu", "ambient", "power", "battery", "fan0"];

/// The simulated I2C bus.
pub const SIM_I2C_BUS: &str = "i2c-1";

/// Settings of the `sim` backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Board model whose built-in profile parameterises the physics.
    pub model: BoardModel,
    /// A full board profile to use instead of the model's built-in one (for
    /// per-board variety in a simulated fleet: another under-voltage threshold,
    /// other thermal figures). Its own `model` field then names the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Box<BoardProfile>>,
    /// Seed of the noise generator: same seed and script, same readings.
    pub seed: u64,
    /// Virtual time (default, stepped explicitly or by `Clock::sleep`) or real time.
    pub time: SimTime,
    /// Virtual time at start. Unset: [`DEFAULT_SIM_START`] (2026-01-01T00:00:00Z),
    /// so runs are reproducible; a daemon running in real time sets it to the wall
    /// clock when the config leaves it unset (metald does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// Room temperature; default: the profile's `thermal_model.ambient_c` (22 °C for Pis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ambient_c: Option<Celsius>,
    /// Initial CPU load.
    pub load_pct: Percent,
    /// How the board is cooled; default: `fan` when the profile has a fan, else `bare`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooling: Option<Cooling>,
    /// Initial fan duty (with `cooling = "fan"`).
    pub fan_duty_pct: Percent,
    /// Source resistance of PSU plus cable; default: the profile's `power.supply_r_ohm`
    /// (0.08 Ω for a Pi 4 on the official PSU; a thin micro-USB cable is 0.2-1 Ω,
    /// PHYSICS.md 1.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supply_r_ohm: Option<Ohms>,
    /// A UPS HAT battery, if fitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<BatteryConfig>,
    /// Whether a solar source is fitted (available unless a
    /// `power_source_lost` fault says the sun is gone).
    pub solar: bool,
    /// Measurement noise on (realistic) or off (exact readings, for tests).
    pub noise: bool,
    /// Timed steps, applied when virtual time reaches them.
    pub script: Vec<ScriptStep>,
    /// Faults present from the start.
    pub faults: Vec<SimFault>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            model: BoardModel::Pi4B,
            profile: None,
            seed: 0,
            time: SimTime::Virtual,
            start: None,
            ambient_c: None,
            load_pct: Percent::ZERO,
            cooling: None,
            fan_duty_pct: Percent::ZERO,
            supply_r_ohm: None,
            battery: None,
            solar: false,
            noise: true,
            script: Vec::new(),
            faults: Vec::new(),
        }
    }
}

impl SimConfig {
    /// When virtual time starts: [`start`](Self::start), or [`DEFAULT_SIM_START`].
    pub fn start_or_default(&self) -> Timestamp {
        self.start.unwrap_or(DEFAULT_SIM_START)
    }

    /// A default config for `model`.
    pub fn for_model(model: BoardModel) -> Self {
        Self {
            model,
            ..Self::default()
        }
    }
}

/// How the simulator's time passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimTime {
    /// Virtual time: advances only when stepped (or on `Clock::sleep`). Fast and exact.
    #[default]
    Virtual,
    /// Real time: every access first advances the model to the wall clock, in fixed
    /// sub-steps, at most one minute of catch-up per access.
    Realtime,
}

/// How the board is cooled (selects the thermal resistance, PHYSICS.md 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cooling {
    /// No heatsink, no fan: `r_th_bare`.
    Bare,
    /// A passive heatsink: `r_th_heatsink`.
    Heatsink,
    /// Heatsink plus the profile's fan: `r_th_heatsink` with the fan stopped,
    /// `r_th_fan` at full airflow.
    Fan,
}

/// A UPS HAT battery (PHYSICS.md section 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatteryConfig {
    /// Capacity of one cell (NCR18650B-class: 3400 mAh).
    pub capacity_mah: f64,
    /// Cells in series (1 for MAX17048-gauge HATs; 2 for the Waveshare UPS HAT).
    pub cells: u8,
    /// Initial state of charge.
    pub level_pct: Percent,
    /// Internal resistance per cell including holder and protection FET
    /// (new cell < 20 mΩ, PHYSICS.md 4; 50 mΩ with the rest).
    pub r_int_ohm: Ohms,
    /// Whether charging is enabled at start.
    pub charging: bool,
}

impl Default for BatteryConfig {
    fn default() -> Self {
        Self {
            capacity_mah: 3400.0,
            cells: 1,
            level_pct: Percent::FULL,
            r_int_ohm: Ohms(0.05),
            charging: true,
        }
    }
}

/// One timed step of a simulator script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptStep {
    /// Virtual time since start when the step applies (`"90s"`, `"5m"`).
    #[serde(with = "wrale_core::time::duration_str")]
    pub at: Duration,
    /// What happens.
    #[serde(flatten)]
    pub action: SimAction,
}

impl ScriptStep {
    /// A step at `at`.
    pub fn new(at: Duration, action: SimAction) -> Self {
        Self { at, action }
    }
}

/// Something a script (or the fleet demo) does to a simulated board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SimAction {
    /// Sets the CPU load.
    SetLoad {
        /// The new load.
        load_pct: Percent,
    },
    /// Sets the room temperature.
    SetAmbient {
        /// The new ambient temperature.
        ambient_c: Celsius,
    },
    /// Sets the fan duty (as a controller would).
    SetFanDuty {
        /// The new duty.
        duty_pct: Percent,
    },
    /// Injects a fault.
    Inject {
        /// The fault.
        fault: SimFault,
    },
    /// Clears a fault (matched by kind and target, not by parameters).
    Clear {
        /// The fault.
        fault: SimFault,
    },
    /// Clears every fault.
    ClearFaults,
    /// Opens the case (case switch active).
    CaseOpen,
    /// Closes the case.
    CaseClose,
    /// Sets the motion detector.
    Motion {
        /// Motion seen.
        active: bool,
    },
    /// Sets the tamper loop.
    Tamper {
        /// Tampering.
        active: bool,
    },
    /// Sets any security input.
    Security {
        /// Which input.
        kind: SecurityKind,
        /// Active or not.
        active: bool,
    },
    /// Powers the board off (as an emergency shutdown would).
    PowerOff,
    /// Powers the board back on.
    PowerOn,
    /// Reboots the board: a power cycle it comes back from at once (when a source
    /// can feed it), with a new boot id and the firmware's sticky bits cleared.
    Reboot,
}

/// A fault the simulator can inject (and clear) at any time.
///
/// Sensor names: `cpu` (SoC sensor), `ambient` (SHT3x-like on `i2c-1` at 0x44),
/// `power` (INA219-like on `i2c-1` at 0x40), `battery` (fuel gauge on `i2c-1` at
/// 0x36), `fan0` (the fan's tachometer). In JSON/TOML the variant is the `kind` key:
/// `{ kind = "sensor_stuck", sensor = "cpu" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SimFault {
    /// The sensor keeps returning the last value it measured.
    SensorStuck {
        /// Sensor id.
        sensor: String,
    },
    /// Extra Gaussian noise on a temperature sensor (`cpu` or `ambient`).
    SensorNoisy {
        /// Sensor id.
        sensor: String,
        /// Standard deviation of the extra noise in °C.
        sigma_c: f64,
    },
    /// The sensor is gone: reads fail with `NotFound`, and an I2C device no longer
    /// answers a scan.
    SensorMissing {
        /// Sensor id.
        sensor: String,
    },
    /// The sensor answers garbage (bad CRC, impossible value): reads fail with
    /// `SensorFault`.
    SensorFault {
        /// Sensor id.
        sensor: String,
    },
    /// Every transaction on the bus fails: I2C sensors read `HalError::Bus` and a
    /// scan fails.
    BusError {
        /// Bus name (`i2c-1`).
        bus: String,
    },
    /// A bad cable or PSU: the main supply's source resistance becomes `supply_r_ohm`
    /// (0.6-0.9 Ω reproduces under-voltage on a Pi 4 under load, PHYSICS.md 7).
    UnderVoltage {
        /// Source resistance of PSU plus cable in ohms.
        supply_r_ohm: f64,
    },
    /// A failing PSU: the main supply delivers exactly `voltage_v` whatever the load.
    SupplyVoltage {
        /// Voltage at the board in volts.
        voltage_v: f64,
    },
    /// The fan's rotor is blocked: 0 rpm and no airflow, whatever the duty.
    FanStall,
    /// The fan turns (the tach reads normally) but moves less air: clogged filter,
    /// blocked vent, detached duct. `effectiveness` 1 = healthy, 0 = no cooling.
    FanDegraded {
        /// Fraction of the healthy airflow that still cools (0..=1).
        effectiveness: f64,
    },
    /// A power source is gone (mains cut, battery removed, night for solar).
    PowerSourceLost {
        /// Which source.
        source: PowerSourceKind,
    },
    /// The case is opened (case switch active until cleared).
    CaseOpened,
}

impl SimFault {
    /// Whether `other` is the same fault on the same target (parameters ignored):
    /// injecting replaces it, clearing removes it.
    pub fn same_target(&self, other: &SimFault) -> bool {
        use SimFault::*;
        match (self, other) {
            (SensorStuck { sensor: a }, SensorStuck { sensor: b })
            | (SensorNoisy { sensor: a, .. }, SensorNoisy { sensor: b, .. })
            | (SensorMissing { sensor: a }, SensorMissing { sensor: b })
            | (SensorFault { sensor: a }, SensorFault { sensor: b })
            | (BusError { bus: a }, BusError { bus: b }) => a == b,
            (PowerSourceLost { source: a }, PowerSourceLost { source: b }) => a == b,
            (UnderVoltage { .. }, UnderVoltage { .. })
            | (SupplyVoltage { .. }, SupplyVoltage { .. })
            | (FanStall, FanStall)
            | (FanDegraded { .. }, FanDegraded { .. })
            | (CaseOpened, CaseOpened) => true,
            _ => false,
        }
    }

    /// Checks names and parameters; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let sensor_ok = |s: &str| {
            if SIM_SENSORS.contains(&s) {
                Ok(())
            } else {
                Err(format!(
                    "unknown simulated sensor {s:?} (known: {})",
                    SIM_SENSORS.join(", ")
                ))
            }
        };
        match self {
            SimFault::SensorStuck { sensor }
            | SimFault::SensorMissing { sensor }
            | SimFault::SensorFault { sensor } => sensor_ok(sensor),
            SimFault::SensorNoisy { sensor, sigma_c } => {
                if sensor != "cpu" && sensor != "ambient" {
                    return Err(format!(
                        "sensor_noisy applies to temperature sensors (cpu, ambient), not {sensor:?}"
                    ));
                }
                if !(sigma_c.is_finite() && *sigma_c >= 0.0) {
                    return Err(format!("sensor_noisy: sigma_c must be >= 0, got {sigma_c}"));
                }
                Ok(())
            }
            SimFault::BusError { bus } => {
                if bus == SIM_I2C_BUS {
                    Ok(())
                } else {
                    Err(format!(
                        "unknown simulated bus {bus:?} (known: {SIM_I2C_BUS})"
                    ))
                }
            }
            SimFault::UnderVoltage { supply_r_ohm } => {
                if supply_r_ohm.is_finite() && *supply_r_ohm >= 0.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "under_voltage: supply_r_ohm must be >= 0, got {supply_r_ohm}"
                    ))
                }
            }
            SimFault::SupplyVoltage { voltage_v } => {
                if voltage_v.is_finite() && *voltage_v > 0.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "supply_voltage: voltage_v must be > 0, got {voltage_v}"
                    ))
                }
            }
            SimFault::FanDegraded { effectiveness } => {
                if (0.0..=1.0).contains(effectiveness) {
                    Ok(())
                } else {
                    Err(format!(
                        "fan_degraded: effectiveness must be in 0..=1, got {effectiveness}"
                    ))
                }
            }
            SimFault::FanStall | SimFault::PowerSourceLost { .. } | SimFault::CaseOpened => Ok(()),
        }
    }
}

impl fmt::Display for SimFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimFault::SensorStuck { sensor } => write!(f, "sensor {sensor} stuck"),
            SimFault::SensorNoisy { sensor, sigma_c } => {
                write!(f, "sensor {sensor} noisy (sigma {sigma_c} °C)")
            }
            SimFault::SensorMissing { sensor } => write!(f, "sensor {sensor} missing"),
            SimFault::SensorFault { sensor } => write!(f, "sensor {sensor} answers garbage"),
            SimFault::BusError { bus } => write!(f, "bus {bus} failing"),
            SimFault::UnderVoltage { supply_r_ohm } => {
                write!(f, "supply resistance {supply_r_ohm} Ω")
            }
            SimFault::SupplyVoltage { voltage_v } => write!(f, "supply forced to {voltage_v} V"),
            SimFault::FanStall => f.write_str("fan stalled"),
            SimFault::FanDegraded { effectiveness } => {
                write!(f, "fan degraded (effectiveness {effectiveness})")
            }
            SimFault::PowerSourceLost { source } => write!(f, "power source {source} lost"),
            SimFault::CaseOpened => f.write_str("case opened"),
        }
    }
}
