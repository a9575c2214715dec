//! Alerts: a condition that someone should know about, raised once and cleared once.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::time::Timestamp;

/// How bad an alert is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

/// What an alert is about. Built-in codes are stable snake_case strings; policy
/// rules written by users raise [`AlertCode::Custom`] with the rule's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertCode {
    /// CPU temperature above the warning threshold.
    ThermalWarning,
    /// CPU temperature above the throttle threshold; workloads are throttled.
    ThermalThrottle,
    /// CPU temperature above the critical threshold; shutdown follows if it persists.
    ThermalCritical,
    /// The CPU temperature sensor is missing, faulted, implausible or stuck.
    SensorUntrusted,
    /// A fan is commanded to spin but its tachometer reads (almost) nothing.
    FanStall,
    /// The supply is below the under-voltage threshold now.
    UnderVoltage,
    /// The firmware's sticky flag says under-voltage happened since the last read.
    UnderVoltageOccurred,
    /// The supply is below the brown-out threshold.
    BrownOut,
    /// Battery below its warning level.
    BatteryLow,
    /// Battery below its critical level.
    BatteryCritical,
    /// The main supply is gone.
    MainPowerLost,
    /// The enclosure is open.
    CaseOpen,
    /// Motion seen during quiet hours.
    MotionQuietHours,
    /// The tamper loop is broken.
    Tamper,
    /// An alert raised by a custom policy rule (the rule's id).
    Custom(String),
}

impl AlertCode {
    /// The stable code (`thermal_warning`; custom rules: `custom:<id>`).
    pub fn as_str(&self) -> &str {
        match self {
            AlertCode::ThermalWarning => "thermal_warning",
            AlertCode::ThermalThrottle => "thermal_throttle",
            AlertCode::ThermalCritical => "thermal_critical",
            AlertCode::SensorUntrusted => "sensor_untrusted",
            AlertCode::FanStall => "fan_stall",
            AlertCode::UnderVoltage => "under_voltage",
            AlertCode::UnderVoltageOccurred => "under_voltage_occurred",
            AlertCode::BrownOut => "brown_out",
            AlertCode::BatteryLow => "battery_low",
            AlertCode::BatteryCritical => "battery_critical",
            AlertCode::MainPowerLost => "main_power_lost",
            AlertCode::CaseOpen => "case_open",
            AlertCode::MotionQuietHours => "motion_quiet_hours",
            AlertCode::Tamper => "tamper",
            AlertCode::Custom(id) => id,
        }
    }
}

impl fmt::Display for AlertCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertCode::Custom(id) => write!(f, "custom:{id}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What it is about.
    pub code: AlertCode,
    /// How bad.
    pub severity: Severity,
    /// Human-readable message with the values that caused it.
    pub message: String,
    /// When it was raised.
    pub since: Timestamp,
    /// When it was cleared; `None` while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<Timestamp>,
}

impl Alert {
    /// Whether the alert is still active.
    pub fn is_active(&self) -> bool {
        self.cleared_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_json_shape() {
        let a = Alert {
            code: AlertCode::ThermalWarning,
            severity: Severity::Warning,
            message: "cpu 72 °C".into(),
            since: Timestamp::from_secs(0),
            cleared_at: None,
        };
        let j = serde_json::to_value(&a).unwrap();
        assert_eq!(j["code"], "thermal_warning");
        assert_eq!(j["severity"], "warning");
        assert!(j.get("cleared_at").is_none());
        assert!(a.is_active());
        let c = AlertCode::Custom("hot-on-battery".into());
        assert_eq!(c.to_string(), "custom:hot-on-battery");
        assert!(Severity::Info < Severity::Critical);
    }
}
