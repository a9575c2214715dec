//! Hardware vocabulary shared by the HAL, the safety engine and the wire formats.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::units::{Percent, Volts};

/// The portable kind of a hardware error.
///
/// Every `wrale-hal` backend error maps to one of these, so the safety engine can
/// react to *what* went wrong (a sensor fault leads to the fail-safe action) without
/// knowing which backend produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HalErrorKind {
    /// The device, file, sensor or pin does not exist.
    NotFound,
    /// The OS refused access.
    PermissionDenied,
    /// The resource is in use (for instance a GPIO line claimed twice).
    Busy,
    /// A bus transaction failed (I2C NACK, arbitration loss, ...).
    Bus,
    /// The device did not answer in time.
    Timeout,
    /// The board or backend cannot do this (for instance software PWM).
    Unsupported,
    /// The sensor answered with a value that cannot be trusted (garbage, out of range, bad CRC).
    SensorFault,
    /// The caller passed an invalid argument (pin number, duty, frequency).
    InvalidArgument,
    /// The backend selected at run time was not compiled in.
    BackendNotCompiled,
    /// Anything else.
    Other,
}

impl HalErrorKind {
    /// Stable snake_case code, as used in JSON errors.
    pub fn code(self) -> &'static str {
        match self {
            HalErrorKind::NotFound => "not_found",
            HalErrorKind::PermissionDenied => "permission_denied",
            HalErrorKind::Busy => "busy",
            HalErrorKind::Bus => "bus",
            HalErrorKind::Timeout => "timeout",
            HalErrorKind::Unsupported => "unsupported",
            HalErrorKind::SensorFault => "sensor_fault",
            HalErrorKind::InvalidArgument => "invalid_argument",
            HalErrorKind::BackendNotCompiled => "backend_not_compiled",
            HalErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for HalErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The Raspberry Pi firmware's throttle word (`vcgencmd get_throttled`), decoded.
///
/// Bits 0-3 are "now", bits 16-19 the same conditions "since boot" (sticky).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ThrottleFlags {
    /// Bit 0: under-voltage detected now.
    pub under_voltage: bool,
    /// Bit 1: ARM frequency capped now.
    pub freq_capped: bool,
    /// Bit 2: currently throttled.
    pub throttled: bool,
    /// Bit 3: soft temperature limit active now.
    pub soft_temp_limit: bool,
    /// Bit 16: under-voltage has occurred since boot (or since the last read that cleared it).
    pub under_voltage_occurred: bool,
    /// Bit 17: frequency capping has occurred.
    pub freq_capped_occurred: bool,
    /// Bit 18: throttling has occurred.
    pub throttled_occurred: bool,
    /// Bit 19: the soft temperature limit has occurred.
    pub soft_temp_limit_occurred: bool,
}

impl ThrottleFlags {
    /// Decodes the firmware's 32-bit throttle word.
    pub fn from_bits(bits: u32) -> Self {
        Self {
            under_voltage: bits & 0x1 != 0,
            freq_capped: bits & 0x2 != 0,
            throttled: bits & 0x4 != 0,
            soft_temp_limit: bits & 0x8 != 0,
            under_voltage_occurred: bits & 0x1_0000 != 0,
            freq_capped_occurred: bits & 0x2_0000 != 0,
            throttled_occurred: bits & 0x4_0000 != 0,
            soft_temp_limit_occurred: bits & 0x8_0000 != 0,
        }
    }

    /// Encodes back into the firmware's bit layout.
    pub fn bits(&self) -> u32 {
        (self.under_voltage as u32)
            | (self.freq_capped as u32) << 1
            | (self.throttled as u32) << 2
            | (self.soft_temp_limit as u32) << 3
            | (self.under_voltage_occurred as u32) << 16
            | (self.freq_capped_occurred as u32) << 17
            | (self.throttled_occurred as u32) << 18
            | (self.soft_temp_limit_occurred as u32) << 19
    }

    /// Whether any "now" condition is active.
    pub fn any_now(&self) -> bool {
        self.bits() & 0xF != 0
    }
}

/// Logic level of a GPIO line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Logic low (0 V).
    Low,
    /// Logic high (3.3 V on a Pi).
    High,
}

impl Level {
    /// `true` for [`Level::High`].
    pub fn is_high(self) -> bool {
        self == Level::High
    }
}

impl From<bool> for Level {
    fn from(b: bool) -> Self {
        if b { Level::High } else { Level::Low }
    }
}

/// Input bias of a GPIO line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pull {
    /// No bias (floating unless driven externally).
    #[default]
    None,
    /// Internal pull-up.
    Up,
    /// Internal pull-down.
    Down,
}

/// Which transitions of an input line produce an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    /// Low to high.
    Rising,
    /// High to low.
    Falling,
    /// Both directions.
    Both,
}

/// Which kind of thing a temperature sensor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    /// The SoC / CPU die (the Pi's `thermal_zone0`). Drives the safety engine.
    Cpu,
    /// The GPU (on boards that report it separately).
    Gpu,
    /// Air temperature in the enclosure or room.
    Ambient,
    /// Any other sensor (PMIC, NVMe, hwmon chip, ...).
    Other,
}

impl SensorKind {
    /// The kind a sensor's conventional id names (`cpu`/`soc`, `gpu`,
    /// `ambient`; anything else is `Other`): for sensors a host program
    /// supplies by id, such as the bindings' callback boards.
    pub fn for_sensor_id(id: &str) -> SensorKind {
        match id {
            "cpu" | "soc" => SensorKind::Cpu,
            "gpu" => SensorKind::Gpu,
            "ambient" => SensorKind::Ambient,
            _ => SensorKind::Other,
        }
    }
}

/// A kind of physical-security input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityKind {
    /// Enclosure lid switch: active means the case is open.
    CaseSwitch,
    /// PIR motion detector: active means motion.
    Motion,
    /// Tamper loop / mesh: active means tampering.
    Tamper,
    /// External supply-voltage monitor output: active means the monitored rail is out of range.
    VoltageMonitor,
}

/// A power source feeding the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerSourceKind {
    /// Mains PSU (USB-C / micro-USB / PoE).
    Main,
    /// Battery (UPS HAT).
    Battery,
    /// Solar panel.
    Solar,
}

impl fmt::Display for PowerSourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerSourceKind::Main => "main",
            PowerSourceKind::Battery => "battery",
            PowerSourceKind::Solar => "solar",
        })
    }
}

/// State of one power source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerSourceStatus {
    /// Which source.
    pub kind: PowerSourceKind,
    /// Whether the source can currently deliver power.
    pub available: bool,
    /// Whether the board is running from it now.
    pub active: bool,
    /// Its voltage where measured.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "voltage_v")]
    pub voltage: Option<Volts>,
}

/// Charging state of a battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeState {
    /// Being charged.
    Charging,
    /// Powering the load.
    Discharging,
    /// Full, trickle or idle.
    Full,
    /// Not charging and not discharging (charging disabled, or on main power with a full cell).
    Idle,
}

/// One reading of a battery.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatteryStatus {
    /// State of charge.
    #[serde(rename = "level_pct")]
    pub level: Percent,
    /// Cell (or pack) voltage.
    #[serde(rename = "voltage_v")]
    pub voltage: Volts,
    /// Charging state.
    pub state: ChargeState,
    /// Whether charging is enabled.
    pub charging_enabled: bool,
}

/// Kind of storage device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// eMMC (reports EXT_CSD wear estimates).
    Emmc,
    /// SD card (reports nothing; wear is estimated from write volume).
    Sd,
    /// NVMe, USB or anything else.
    Other,
}

/// eMMC pre-end-of-life indicator (EXT_CSD byte 267).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreEol {
    /// 0x01: normal.
    Normal,
    /// 0x02: 80 % of reserved blocks consumed.
    Warning,
    /// 0x03: 90 % of reserved blocks consumed.
    Urgent,
    /// 0x00 or anything else: not defined.
    Undefined,
}

impl PreEol {
    /// Decodes the EXT_CSD byte.
    pub fn from_byte(b: u8) -> Self {
        match b {
            1 => PreEol::Normal,
            2 => PreEol::Warning,
            3 => PreEol::Urgent,
            _ => PreEol::Undefined,
        }
    }
}

/// Wear state of one storage device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageWear {
    /// Block device name (`mmcblk0`, `sda`).
    pub device: String,
    /// Kind of device.
    pub kind: StorageKind,
    /// eMMC DEVICE_LIFE_TIME_EST_TYP_A (SLC area): 1 = 0-10 % used ... 10 = 90-100 %, 11 = exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub life_time_a: Option<u8>,
    /// eMMC DEVICE_LIFE_TIME_EST_TYP_B (MLC/TLC area), same encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub life_time_b: Option<u8>,
    /// eMMC pre-EOL indicator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_eol: Option<PreEol>,
    /// Bytes written since boot (from `/proc/diskstats`, sectors x 512).
    pub bytes_written: u64,
}

impl StorageWear {
    /// Upper bound of the used-life fraction reported by the device, in percent,
    /// taking the worse of the two areas. `None` when the device reports nothing.
    pub fn life_used_upper_pct(&self) -> Option<Percent> {
        let worst = self
            .life_time_a
            .into_iter()
            .chain(self.life_time_b)
            .filter(|v| *v >= 1)
            .max()?;
        Some(Percent::saturating(f64::from(worst) * 10.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_kinds_from_conventional_ids() {
        assert_eq!(SensorKind::for_sensor_id("cpu"), SensorKind::Cpu);
        assert_eq!(SensorKind::for_sensor_id("soc"), SensorKind::Cpu);
        assert_eq!(SensorKind::for_sensor_id("gpu"), SensorKind::Gpu);
        assert_eq!(SensorKind::for_sensor_id("ambient"), SensorKind::Ambient);
        assert_eq!(SensorKind::for_sensor_id("nvme0"), SensorKind::Other);
    }

    #[test]
    fn throttle_bits_round_trip() {
        let f = ThrottleFlags::from_bits(0x5_0005);
        assert!(f.under_voltage && f.throttled && f.under_voltage_occurred && f.throttled_occurred);
        assert!(!f.freq_capped && !f.soft_temp_limit);
        assert_eq!(f.bits(), 0x5_0005);
        for bits in [0u32, 0xF, 0xF_0000, 0xF_000F, 0x8_0008] {
            assert_eq!(ThrottleFlags::from_bits(bits).bits(), bits);
        }
    }

    #[test]
    fn emmc_life_upper_bound_takes_worse_area() {
        let w = StorageWear {
            device: "mmcblk0".into(),
            kind: StorageKind::Emmc,
            life_time_a: Some(0x02),
            life_time_b: Some(0x04),
            pre_eol: Some(PreEol::Normal),
            bytes_written: 0,
        };
        assert_eq!(w.life_used_upper_pct(), Some(Percent::saturating(40.0)));
        let sd = StorageWear {
            kind: StorageKind::Sd,
            life_time_a: None,
            life_time_b: None,
            pre_eol: None,
            ..w
        };
        assert_eq!(sd.life_used_upper_pct(), None);
    }
}
