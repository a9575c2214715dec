//! The core values as uniffi records and enums, with `From` impls both ways
//! (STYLE.md 2.7): samples, decisions, verdicts, device summaries. Unit enums
//! of the crates are restated with `#[uniffi::remote(Enum)]`.

use std::collections::HashMap;

use wrale_core::model::{
    ChargeState, HalErrorKind, PowerSourceKind, PreEol, SecurityKind, SensorKind, Severity,
    StorageKind, ThrottleFlags,
};
use wrale_core::policy::{AlertChange as CoreAlertChange, ThermalLevel};
use wrale_core::units::{Amps, Celsius, MegaHertz, Percent, Rpm, Volts, Watts};

use crate::{WraleError, from_name, name_of, ts};

#[uniffi::remote(Enum)]
pub enum SensorKind {
    Cpu,
    Gpu,
    Ambient,
    Other,
}

#[uniffi::remote(Enum)]
pub enum SecurityKind {
    CaseSwitch,
    Motion,
    Tamper,
    VoltageMonitor,
}

#[uniffi::remote(Enum)]
pub enum PowerSourceKind {
    Main,
    Battery,
    Solar,
}

#[uniffi::remote(Enum)]
pub enum ChargeState {
    Charging,
    Discharging,
    Full,
    Idle,
}

#[uniffi::remote(Enum)]
pub enum StorageKind {
    Emmc,
    Sd,
    Other,
}

#[uniffi::remote(Enum)]
pub enum PreEol {
    Normal,
    Warning,
    Urgent,
    Undefined,
}

#[uniffi::remote(Enum)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[uniffi::remote(Enum)]
pub enum ThermalLevel {
    Normal,
    Warning,
    Throttle,
    Critical,
    Shutdown,
    FailSafe,
}

#[uniffi::remote(Record)]
pub struct ThrottleFlags {
    pub under_voltage: bool,
    pub freq_capped: bool,
    pub throttled: bool,
    pub soft_temp_limit: bool,
    pub under_voltage_occurred: bool,
    pub freq_capped_occurred: bool,
    pub throttled_occurred: bool,
    pub soft_temp_limit_occurred: bool,
}

fn fault_kind(name: &str) -> Result<HalErrorKind, WraleError> {
    from_name("fault kind", name)
}

/// Declares a reading enum (`wrale_core::Reading<T>` for one `T`) and its
/// conversions both ways.
macro_rules! reading {
    ($(#[$doc:meta])* $name:ident, $value:ty, $core:ty, |$a:ident| $to:expr, |$b:ident| $from:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, uniffi::Enum)]
        pub enum $name {
            /// A trusted value.
            Ok {
                /// The value.
                value: $value,
            },
            /// No such sensor, or it could not be found.
            Missing,
            /// The read failed (`kind`: the HAL error kind, `sensor_fault`, `bus`, ...).
            Fault {
                /// The HAL error kind's snake_case name.
                kind: String,
            },
        }

        impl From<wrale_core::Reading<$core>> for $name {
            fn from(r: wrale_core::Reading<$core>) -> Self {
                match r {
                    wrale_core::Reading::Ok($a) => $name::Ok { value: $to },
                    wrale_core::Reading::Missing => $name::Missing,
                    wrale_core::Reading::Fault(k) => $name::Fault { kind: name_of(&k) },
                }
            }
        }

        impl TryFrom<$name> for wrale_core::Reading<$core> {
            type Error = WraleError;
            fn try_from(r: $name) -> Result<Self, WraleError> {
                Ok(match r {
                    $name::Ok { value: $b } => wrale_core::Reading::Ok($from),
                    $name::Missing => wrale_core::Reading::Missing,
                    $name::Fault { kind } => wrale_core::Reading::Fault(fault_kind(&kind)?),
                })
            }
        }
    };
}

/// Declares `From`/`TryFrom` between [`Reading`] and a float unit reading.
macro_rules! float_reading {
    ($($unit:ty => |$b:ident| $from:expr),* $(,)?) => {$(
        impl From<wrale_core::Reading<$unit>> for Reading {
            fn from(r: wrale_core::Reading<$unit>) -> Self {
                match r {
                    wrale_core::Reading::Ok(v) => Reading::Ok { value: v.get() },
                    wrale_core::Reading::Missing => Reading::Missing,
                    wrale_core::Reading::Fault(k) => Reading::Fault { kind: name_of(&k) },
                }
            }
        }

        impl TryFrom<Reading> for wrale_core::Reading<$unit> {
            type Error = WraleError;
            fn try_from(r: Reading) -> Result<Self, WraleError> {
                Ok(match r {
                    Reading::Ok { value: $b } => wrale_core::Reading::Ok($from),
                    Reading::Missing => wrale_core::Reading::Missing,
                    Reading::Fault { kind } => wrale_core::Reading::Fault(fault_kind(&kind)?),
                })
            }
        }
    )*};
}

reading!(
    /// A numeric reading (`wrale_core::Reading` of a unit: °C, %, rpm, V, A, W, MHz).
    Reading, f64, Celsius, |c| c.get(), |v| Celsius(v)
);
float_reading!(
    Rpm => |v| Rpm(v),
    Volts => |v| Volts(v),
    Amps => |v| Amps(v),
    Watts => |v| Watts(v),
    MegaHertz => |v| MegaHertz(v),
    Percent => |v| Percent::new(v).map_err(|e| WraleError::invalid_argument(format!("percent: {e}")))?,
);
reading!(
    /// A yes/no reading (main power available, a security input active).
    BoolReading, bool, bool, |v| v, |v| v
);
reading!(
    /// The firmware's throttle flags.
    ThrottleReading, ThrottleFlags, ThrottleFlags, |v| v, |v| v
);
reading!(
    /// The power source in use.
    PowerSourceReading, PowerSourceKind, PowerSourceKind, |v| v, |v| v
);
reading!(
    /// A battery's state.
    BatteryReading, BatteryStatus, wrale_core::model::BatteryStatus, |v| v.into(), |v| v.try_into()?
);

/// One reading of a battery (`wrale_core::model::BatteryStatus`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct BatteryStatus {
    /// State of charge, %.
    pub level_pct: f64,
    /// Cell or pack voltage, V.
    pub voltage_v: f64,
    /// Charging state.
    pub state: ChargeState,
    /// Whether charging is enabled.
    pub charging_enabled: bool,
}

impl From<wrale_core::model::BatteryStatus> for BatteryStatus {
    fn from(b: wrale_core::model::BatteryStatus) -> Self {
        BatteryStatus {
            level_pct: b.level.get(),
            voltage_v: b.voltage.get(),
            state: b.state,
            charging_enabled: b.charging_enabled,
        }
    }
}

impl TryFrom<BatteryStatus> for wrale_core::model::BatteryStatus {
    type Error = WraleError;
    fn try_from(b: BatteryStatus) -> Result<Self, WraleError> {
        Ok(wrale_core::model::BatteryStatus {
            level: Percent::new(b.level_pct)
                .map_err(|e| WraleError::invalid_argument(format!("battery level: {e}")))?,
            voltage: Volts(b.voltage_v),
            state: b.state,
            charging_enabled: b.charging_enabled,
        })
    }
}

/// A temperature sensor's reading.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct TemperatureReading {
    /// Sensor id (`cpu`, `gpu`, `ambient`, ...).
    pub id: String,
    /// What it measures.
    pub kind: SensorKind,
    /// The value, °C.
    pub temp_c: Reading,
}

/// A fan's reading.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FanReading {
    /// Fan id (`fan0`).
    pub id: String,
    /// Commanded duty, %.
    pub duty_pct: Reading,
    /// Tachometer, rpm (missing when the fan has none).
    pub rpm: Reading,
}

/// A physical-security input's reading.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SecurityReading {
    /// Input id (`case`, `pir0`).
    pub id: String,
    /// Kind of input.
    pub kind: SecurityKind,
    /// Whether the input is active (case open, motion seen, tamper).
    pub active: BoolReading,
}

/// Storage wear of one block device.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct StorageWear {
    /// Block device name (`mmcblk0`).
    pub device: String,
    /// Kind of device.
    pub kind: StorageKind,
    /// eMMC life-time estimate A (1 = 0-10 % used ... 11 = exceeded).
    pub life_time_a: Option<u8>,
    /// eMMC life-time estimate B.
    pub life_time_b: Option<u8>,
    /// eMMC pre-end-of-life indicator.
    pub pre_eol: Option<PreEol>,
    /// Bytes written since boot.
    pub bytes_written: u64,
}

/// One timestamped reading of every sensor of a board (`wrale_core::Sample`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Sample {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Every temperature sensor.
    pub temperatures: Vec<TemperatureReading>,
    /// Every fan.
    pub fans: Vec<FanReading>,
    /// Supply voltage, V.
    pub supply_v: Reading,
    /// Supply current, A.
    pub current_a: Reading,
    /// Power drawn, W.
    pub power_w: Reading,
    /// Firmware throttle and under-voltage flags.
    pub throttle: ThrottleReading,
    /// The power source in use.
    pub power_source: PowerSourceReading,
    /// Whether the main supply is available.
    pub main_power_available: BoolReading,
    /// The battery (missing when there is none).
    pub battery: BatteryReading,
    /// Physical-security inputs.
    pub security: Vec<SecurityReading>,
    /// CPU load, %.
    pub cpu_load_pct: Reading,
    /// CPU frequency, MHz.
    pub cpu_freq_mhz: Reading,
    /// Storage wear per block device.
    pub storage: Vec<StorageWear>,
}

#[uniffi::export]
impl Sample {
    /// The CPU temperature in °C; `null` when the sensor is missing or faulted.
    pub fn cpu_temp_c(&self) -> Option<f64> {
        self.temperatures
            .iter()
            .find(|t| t.kind == SensorKind::Cpu)
            .and_then(|t| match t.temp_c {
                Reading::Ok { value } => Some(value),
                _ => None,
            })
    }

    /// The sample in the crate's JSON shape.
    pub fn to_json(&self) -> Result<String, WraleError> {
        crate::to_json(&wrale_core::Sample::try_from(self.clone())?)
    }
}

/// A sample from the crate's JSON shape (what `Sample.toJson()` gives).
#[uniffi::export]
pub fn sample_from_json(json: String) -> Result<Sample, WraleError> {
    let s: wrale_core::Sample = crate::from_json("sample", &json)?;
    Ok(s.into())
}

impl From<wrale_core::Sample> for Sample {
    fn from(s: wrale_core::Sample) -> Self {
        Sample {
            at_ms: s.at.as_millis(),
            temperatures: s
                .temperatures
                .into_iter()
                .map(|t| TemperatureReading {
                    id: t.id,
                    kind: t.kind,
                    temp_c: t.value.into(),
                })
                .collect(),
            fans: s
                .fans
                .into_iter()
                .map(|f| FanReading {
                    id: f.id,
                    duty_pct: f.duty.into(),
                    rpm: f.rpm.into(),
                })
                .collect(),
            supply_v: s.supply_voltage.into(),
            current_a: s.current.into(),
            power_w: s.power.into(),
            throttle: s.throttle.into(),
            power_source: s.power_source.into(),
            main_power_available: s.main_power_available.into(),
            battery: s.battery.into(),
            security: s
                .security
                .into_iter()
                .map(|r| SecurityReading {
                    id: r.id,
                    kind: r.kind,
                    active: r.active.into(),
                })
                .collect(),
            cpu_load_pct: s.cpu_load.into(),
            cpu_freq_mhz: s.cpu_freq.into(),
            storage: s
                .storage
                .into_iter()
                .map(|w| StorageWear {
                    device: w.device,
                    kind: w.kind,
                    life_time_a: w.life_time_a,
                    life_time_b: w.life_time_b,
                    pre_eol: w.pre_eol,
                    bytes_written: w.bytes_written,
                })
                .collect(),
        }
    }
}

impl TryFrom<Sample> for wrale_core::Sample {
    type Error = WraleError;
    fn try_from(s: Sample) -> Result<Self, WraleError> {
        use wrale_core::model::{FanReading as F, SecurityReading as S, TemperatureReading as T};
        Ok(wrale_core::Sample {
            at: ts(s.at_ms),
            temperatures: s
                .temperatures
                .into_iter()
                .map(|t| {
                    Ok(T {
                        id: t.id,
                        kind: t.kind,
                        value: t.temp_c.try_into()?,
                    })
                })
                .collect::<Result<_, WraleError>>()?,
            fans: s
                .fans
                .into_iter()
                .map(|f| {
                    Ok(F {
                        id: f.id,
                        duty: f.duty_pct.try_into()?,
                        rpm: f.rpm.try_into()?,
                    })
                })
                .collect::<Result<_, WraleError>>()?,
            supply_voltage: s.supply_v.try_into()?,
            current: s.current_a.try_into()?,
            power: s.power_w.try_into()?,
            throttle: s.throttle.try_into()?,
            power_source: s.power_source.try_into()?,
            main_power_available: s.main_power_available.try_into()?,
            battery: s.battery.try_into()?,
            security: s
                .security
                .into_iter()
                .map(|r| {
                    Ok(S {
                        id: r.id,
                        kind: r.kind,
                        active: r.active.try_into()?,
                    })
                })
                .collect::<Result<_, WraleError>>()?,
            cpu_load: s.cpu_load_pct.try_into()?,
            cpu_freq: s.cpu_freq_mhz.try_into()?,
            storage: s
                .storage
                .into_iter()
                .map(|w| wrale_core::model::StorageWear {
                    device: w.device,
                    kind: w.kind,
                    life_time_a: w.life_time_a,
                    life_time_b: w.life_time_b,
                    pre_eol: w.pre_eol,
                    bytes_written: w.bytes_written,
                })
                .collect(),
        })
    }
}

/// What the safety engine asks the HAL to do (`wrale_core::Action`).
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Action {
    /// Set a fan's duty.
    SetFanDuty {
        /// Fan id.
        fan: String,
        /// Duty, %.
        duty_pct: f64,
    },
    /// Throttle the device's workloads.
    ThrottleWorkloads {
        /// Why.
        reason: String,
    },
    /// Let workloads run at full speed again.
    ResumeWorkloads,
    /// Switch the power source.
    SelectPowerSource {
        /// The source.
        source: PowerSourceKind,
    },
    /// Shut the device down now.
    EmergencyShutdown {
        /// Why.
        reason: String,
    },
    /// Drive no GPIO output until unlocked.
    LockGpioOutputs,
    /// Lift the GPIO lock.
    UnlockGpioOutputs,
}

impl From<wrale_core::Action> for Action {
    fn from(a: wrale_core::Action) -> Self {
        use wrale_core::Action as A;
        match a {
            A::SetFanDuty { fan, duty } => Action::SetFanDuty {
                fan,
                duty_pct: duty.get(),
            },
            A::ThrottleWorkloads { reason } => Action::ThrottleWorkloads { reason },
            A::ResumeWorkloads => Action::ResumeWorkloads,
            A::SelectPowerSource { source } => Action::SelectPowerSource { source },
            A::EmergencyShutdown { reason } => Action::EmergencyShutdown { reason },
            A::LockGpioOutputs => Action::LockGpioOutputs,
            A::UnlockGpioOutputs => Action::UnlockGpioOutputs,
        }
    }
}

/// An alert (`wrale_core::model::Alert`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Alert {
    /// What it is about (`thermal_warning`, `fan_stall`, a custom rule's id).
    pub code: String,
    /// How bad.
    pub severity: Severity,
    /// The message with the values that caused it.
    pub message: String,
    /// Raised at, ms since the Unix epoch.
    pub since_ms: i64,
    /// Cleared at, ms since the Unix epoch; `null` while active.
    pub cleared_at_ms: Option<i64>,
}

impl From<wrale_core::model::Alert> for Alert {
    fn from(a: wrale_core::model::Alert) -> Self {
        Alert {
            code: a.code.to_string(),
            severity: a.severity,
            message: a.message,
            since_ms: a.since.as_millis(),
            cleared_at_ms: a.cleared_at.map(|t| t.as_millis()),
        }
    }
}

/// An alert raised or cleared by a decision.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum AlertChange {
    /// Raised (once per episode).
    Raised {
        /// The alert.
        alert: Alert,
    },
    /// Cleared (once per episode).
    Cleared {
        /// The alert, with `cleared_at_ms` set.
        alert: Alert,
    },
}

/// A change of thermal level.
#[derive(Debug, Clone, Copy, PartialEq, uniffi::Record)]
pub struct Transition {
    /// Before.
    pub from: ThermalLevel,
    /// After.
    pub to: ThermalLevel,
}

/// What the safety engine decided for one sample (`wrale_core::Decision`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Decision {
    /// Actions to apply through the HAL, in order.
    pub actions: Vec<Action>,
    /// Alerts raised or cleared.
    pub alerts: Vec<AlertChange>,
    /// Thermal-level changes.
    pub transitions: Vec<Transition>,
}

impl From<wrale_core::Decision> for Decision {
    fn from(d: wrale_core::Decision) -> Self {
        Decision {
            actions: d.actions.into_iter().map(Action::from).collect(),
            alerts: d
                .alerts
                .into_iter()
                .map(|c| match c {
                    CoreAlertChange::Raised(a) => AlertChange::Raised { alert: a.into() },
                    CoreAlertChange::Cleared(a) => AlertChange::Cleared { alert: a.into() },
                })
                .collect(),
            transitions: d
                .transitions
                .into_iter()
                .map(|t| Transition {
                    from: t.from,
                    to: t.to,
                })
                .collect(),
        }
    }
}

/// The policy's answer to a command (`wrale_core::Verdict`).
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum Verdict {
    /// The command may run.
    Allowed,
    /// The command is refused.
    Refused {
        /// The rule that refused.
        rule: String,
        /// Why, with the values involved.
        reason: String,
    },
}

impl From<wrale_core::Verdict> for Verdict {
    fn from(v: wrale_core::Verdict) -> Self {
        match v {
            wrale_core::Verdict::Allowed => Verdict::Allowed,
            wrale_core::Verdict::Refused { rule, reason } => Verdict::Refused {
                rule: rule.to_string(),
                reason,
            },
        }
    }
}

/// A device as fleetd's registry holds it (`wrale_core::fleet::registry::DeviceRecord`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DeviceSummary {
    /// Device id.
    pub id: String,
    /// Board model (`pi4b`, ...).
    pub model: String,
    /// Hardware serial.
    pub serial: Option<String>,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// Site.
    pub site: Option<String>,
    /// Rack.
    pub rack: Option<String>,
    /// Shelf.
    pub shelf: Option<String>,
    /// Slot.
    pub slot: Option<String>,
    /// Group.
    pub group: Option<String>,
    /// Connection status (`online`, `offline`, ...).
    pub status: String,
    /// Health (`ok`, `degraded`, ...).
    pub health: String,
    /// Whether its credential is revoked.
    pub revoked: bool,
    /// Enrolled at, ms since the Unix epoch.
    pub enrolled_at_ms: i64,
    /// Last connected at, ms since the Unix epoch.
    pub last_seen_ms: Option<i64>,
    /// Agent version it last reported.
    pub agent_version: Option<String>,
}

impl From<wrale_client::models::Device> for DeviceSummary {
    fn from(d: wrale_client::models::Device) -> Self {
        DeviceSummary {
            id: d.id.to_string(),
            model: d.model.as_str().to_owned(),
            serial: d.serial,
            labels: d.labels.into_iter().collect(),
            site: d.location.site,
            rack: d.location.rack,
            shelf: d.location.shelf,
            slot: d.location.slot,
            group: d.group.map(|g| g.to_string()),
            status: name_of(&d.status),
            health: name_of(&d.health),
            revoked: d.revoked,
            enrolled_at_ms: d.enrolled_at.as_millis(),
            last_seen_ms: d.last_seen.map(|t| t.as_millis()),
            agent_version: d.agent_version,
        }
    }
}

/// A group of devices (`wrale_client::models::Group`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Group {
    /// Group id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Parent group.
    pub parent: Option<String>,
    /// Created at, ms since the Unix epoch.
    pub created_at_ms: Option<i64>,
    /// Direct subgroups (filled by `group(id)` only).
    pub children: Vec<String>,
    /// Parent, grandparent, ... (filled by `group(id)` only).
    pub ancestors: Vec<String>,
}

impl From<wrale_client::models::Group> for Group {
    fn from(g: wrale_client::models::Group) -> Self {
        Group {
            id: g.id.to_string(),
            name: g.name,
            parent: g.parent.map(|p| p.to_string()),
            created_at_ms: g.created_at.map(|t| t.as_millis()),
            children: g.children.iter().map(ToString::to_string).collect(),
            ancestors: g.ancestors.iter().map(ToString::to_string).collect(),
        }
    }
}
