//! One timestamped reading of every sensor of a board.

use serde::{Deserialize, Serialize};

use crate::model::hardware::{
    BatteryStatus, HalErrorKind, PowerSourceKind, SecurityKind, SensorKind, StorageWear,
    ThrottleFlags,
};
use crate::time::Timestamp;
use crate::units::{Amps, Celsius, MegaHertz, Percent, Rpm, Volts, Watts};

/// One value of a sample: present, missing (the board has no such sensor, or it
/// vanished), or faulted (the read failed, with the HAL error kind).
///
/// The safety engine never acts on anything but [`Reading::Ok`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "status", content = "value", rename_all = "snake_case")]
pub enum Reading<T> {
    /// A trusted value.
    Ok(T),
    /// No such sensor, or it could not be found.
    #[default]
    Missing,
    /// The read failed.
    Fault(HalErrorKind),
}

impl<T> Reading<T> {
    /// The value if present.
    pub fn ok(self) -> Option<T> {
        match self {
            Reading::Ok(v) => Some(v),
            _ => None,
        }
    }

    /// The value by reference if present.
    pub fn as_ref(&self) -> Reading<&T> {
        match self {
            Reading::Ok(v) => Reading::Ok(v),
            Reading::Missing => Reading::Missing,
            Reading::Fault(k) => Reading::Fault(*k),
        }
    }

    /// Whether this reading carries a value.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reading::Ok(_))
    }

    /// Maps the value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Reading<U> {
        match self {
            Reading::Ok(v) => Reading::Ok(f(v)),
            Reading::Missing => Reading::Missing,
            Reading::Fault(k) => Reading::Fault(k),
        }
    }

    /// Builds a reading from a HAL result: `NotFound` and `Unsupported` become
    /// [`Reading::Missing`], any other error [`Reading::Fault`].
    pub fn from_result<E>(r: Result<T, E>, kind: impl FnOnce(&E) -> HalErrorKind) -> Self {
        match r {
            Ok(v) => Reading::Ok(v),
            Err(e) => match kind(&e) {
                HalErrorKind::NotFound | HalErrorKind::Unsupported => Reading::Missing,
                k => Reading::Fault(k),
            },
        }
    }
}

/// A temperature sensor's reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemperatureReading {
    /// Sensor id (`cpu`, `gpu`, `ambient`, `hwmon1/temp1`, ...).
    pub id: String,
    /// What it measures.
    pub kind: SensorKind,
    /// The value.
    #[serde(rename = "temp_c")]
    pub value: Reading<Celsius>,
}

/// A fan's reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanReading {
    /// Fan id (`fan0`).
    pub id: String,
    /// Commanded duty.
    #[serde(rename = "duty_pct")]
    pub duty: Reading<Percent>,
    /// Tachometer, [`Reading::Missing`] when the fan has none.
    pub rpm: Reading<Rpm>,
}

/// A physical-security input's reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityReading {
    /// Input id (`case`, `pir0`).
    pub id: String,
    /// Kind of input.
    pub kind: SecurityKind,
    /// `true` when the input is active (case open, motion seen, tamper).
    pub active: Reading<bool>,
}

/// One timestamped reading of every sensor of a board.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sample {
    /// When the sample was taken.
    pub at: Timestamp,
    /// Every temperature sensor.
    pub temperatures: Vec<TemperatureReading>,
    /// Every fan.
    pub fans: Vec<FanReading>,
    /// Supply voltage at the board.
    #[serde(rename = "supply_v")]
    pub supply_voltage: Reading<Volts>,
    /// Supply current.
    #[serde(rename = "current_a")]
    pub current: Reading<Amps>,
    /// Power drawn.
    #[serde(rename = "power_w")]
    pub power: Reading<Watts>,
    /// Firmware throttle / under-voltage flags.
    pub throttle: Reading<ThrottleFlags>,
    /// The power source the board is running from.
    pub power_source: Reading<PowerSourceKind>,
    /// Whether the main supply is available (for failover decisions).
    pub main_power_available: Reading<bool>,
    /// Battery, [`Reading::Missing`] when there is none.
    pub battery: Reading<BatteryStatus>,
    /// Physical-security inputs.
    pub security: Vec<SecurityReading>,
    /// CPU load over the last sampling interval.
    #[serde(rename = "cpu_load_pct")]
    pub cpu_load: Reading<Percent>,
    /// Current CPU frequency.
    #[serde(rename = "cpu_freq_mhz")]
    pub cpu_freq: Reading<MegaHertz>,
    /// Storage wear, one entry per block device.
    pub storage: Vec<StorageWear>,
}

impl Sample {
    /// The first temperature sensor of the given kind.
    pub fn temperature(&self, kind: SensorKind) -> Reading<Celsius> {
        self.temperatures
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| t.value)
            .unwrap_or(Reading::Missing)
    }

    /// The CPU temperature (the one the safety engine drives on).
    pub fn cpu_temp(&self) -> Reading<Celsius> {
        self.temperature(SensorKind::Cpu)
    }

    /// Whether any input of the given kind is active; `None` if none is readable.
    pub fn security_active(&self, kind: SecurityKind) -> Option<bool> {
        let mut seen = false;
        for s in self.security.iter().filter(|s| s.kind == kind) {
            if let Reading::Ok(active) = s.active {
                if active {
                    return Some(true);
                }
                seen = true;
            }
        }
        seen.then_some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_json_shape() {
        let r: Reading<Celsius> = Reading::Ok(Celsius(51.5));
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"status":"ok","value":51.5}"#
        );
        let f: Reading<Celsius> = Reading::Fault(HalErrorKind::SensorFault);
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"status":"fault","value":"sensor_fault"}"#
        );
        let m: Reading<Celsius> = serde_json::from_str(r#"{"status":"missing"}"#).unwrap();
        assert_eq!(m, Reading::Missing);
    }

    #[test]
    fn from_result_maps_kinds() {
        let nf: Reading<u8> = Reading::from_result(Err(HalErrorKind::NotFound), |k| *k);
        assert_eq!(nf, Reading::Missing);
        let bus: Reading<u8> = Reading::from_result(Err(HalErrorKind::Bus), |k| *k);
        assert_eq!(bus, Reading::Fault(HalErrorKind::Bus));
    }

    #[test]
    fn security_lookup() {
        let mut s = Sample::default();
        assert_eq!(s.security_active(SecurityKind::CaseSwitch), None);
        s.security.push(SecurityReading {
            id: "case".into(),
            kind: SecurityKind::CaseSwitch,
            active: Reading::Ok(false),
        });
        assert_eq!(s.security_active(SecurityKind::CaseSwitch), Some(false));
        s.security.push(SecurityReading {
            id: "case2".into(),
            kind: SecurityKind::CaseSwitch,
            active: Reading::Ok(true),
        });
        assert_eq!(s.security_active(SecurityKind::CaseSwitch), Some(true));
    }
}
