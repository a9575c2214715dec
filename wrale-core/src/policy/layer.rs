//! Policy layers: what a fleet, group or device policy file says.
//!
//! A layer only *overrides*: every field is optional, and what it leaves out
//! comes from the board's built-in safety floor. Layers are TOML (see
//! `docs/policies.md` for a complete example).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;
use crate::model::{
    CommandKind, DeviceId, FanProfileName, GroupId, Level, PowerSourceKind, Severity,
};
use crate::units::{Celsius, Percent, Volts};

/// Which devices a layer applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every device of the fleet.
    Fleet,
    /// Every device of a group.
    Group(GroupId),
    /// One device.
    Device(DeviceId),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Fleet => f.write_str("fleet"),
            Scope::Group(g) => write!(f, "group:{g}"),
            Scope::Device(d) => write!(f, "device:{d}"),
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "fleet" {
            return Ok(Scope::Fleet);
        }
        if let Some(g) = s.strip_prefix("group:") {
            return GroupId::new(g).map(Scope::Group).map_err(|e| e.to_string());
        }
        if let Some(d) = s.strip_prefix("device:") {
            return DeviceId::new(d)
                .map(Scope::Device)
                .map_err(|e| e.to_string());
        }
        Err(format!(
            "invalid scope {s:?}: use \"fleet\", \"group:<id>\" or \"device:<id>\""
        ))
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde helper for `Option<Duration>` written as humane strings (`"30s"`).
pub(crate) mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

/// Thermal overrides. Lower temperatures, longer hysteresis and shorter holds are tighter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThermalOverrides {
    /// Warning threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_c: Option<Celsius>,
    /// Throttle threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_c: Option<Celsius>,
    /// Critical threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_c: Option<Celsius>,
    /// Hysteresis band: an alert clears only this far below its threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hysteresis_c: Option<Celsius>,
    /// How long the warning condition must hold before the alert is raised.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub warn_hold: Option<Duration>,
    /// How long the throttle condition must hold before workloads are throttled.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub throttle_hold: Option<Duration>,
    /// How long the critical condition must persist before an emergency shutdown.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub shutdown_after: Option<Duration>,
}

/// Fan overrides. More cooling is tighter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOverrides {
    /// The quietest profile a command may select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_profile: Option<FanProfileName>,
    /// The profile in force until a command selects another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<FanProfileName>,
    /// The fan never runs below this duty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duty_pct: Option<Percent>,
    /// How long a commanded fan may show no rotation before it counts as stalled.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub stall_hold: Option<Duration>,
}

/// Power overrides. Higher voltage thresholds, higher battery levels, shorter holds are tighter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerOverrides {
    /// Supply voltage below which under-voltage is declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undervoltage_v: Option<Volts>,
    /// Supply voltage below which a brown-out is declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brownout_v: Option<Volts>,
    /// How long under-voltage must persist before it counts.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub undervoltage_hold: Option<Duration>,
    /// Battery warning level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_warn_pct: Option<Percent>,
    /// Battery critical level (workloads throttled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_critical_pct: Option<Percent>,
    /// Switch to the battery when the main supply is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<bool>,
}

/// A daily window in UTC, `start_hour` inclusive to `end_hour` exclusive; it may
/// wrap midnight (`22` to `6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// First hour of the window (0-23).
    pub start_hour: u8,
    /// Hour the window ends (0-23, exclusive).
    pub end_hour: u8,
}

impl QuietHours {
    /// Whether the UTC hour `h` falls in the window.
    pub fn contains(&self, h: u8) -> bool {
        if self.start_hour <= self.end_hour {
            (self.start_hour..self.end_hour).contains(&h)
        } else {
            h >= self.start_hour || h < self.end_hour
        }
    }
}

/// Physical-security overrides. Higher severities and locking are tighter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityOverrides {
    /// Severity of the case-open alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_open_severity: Option<Severity>,
    /// Severity of the motion-in-quiet-hours alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion_severity: Option<Severity>,
    /// Severity of the tamper alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper_severity: Option<Severity>,
    /// Lock every GPIO output while the case is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_gpio_when_case_open: Option<bool>,
    /// Quiet-hours windows (added to those of other layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiet_hours: Vec<QuietHours>,
}

/// Sensor-trust overrides. Shorter stuck windows and narrower plausible ranges are tighter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorOverrides {
    /// A temperature that does not change at all for this long is treated as stuck.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub stuck_after: Option<Duration>,
    /// Readings below this are implausible (untrusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plausible_min_c: Option<Celsius>,
    /// Readings above this are implausible (untrusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plausible_max_c: Option<Celsius>,
}

/// Command-handling overrides.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandOverrides {
    /// Lifetime of a two-phase confirmation token (shorter is tighter).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub confirm_ttl: Option<Duration>,
}

/// Which commands an interlock denies. Every field that is set must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandMatch {
    /// The command kind.
    pub command: CommandKind,
    /// GPIO / PWM pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<u8>,
    /// GPIO level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Fan id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan: Option<String>,
    /// Workload name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Power source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PowerSourceKind>,
    /// Matches a fan or PWM duty strictly below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duty_below_pct: Option<Percent>,
    /// Matches a fan or PWM duty strictly above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duty_above_pct: Option<Percent>,
    /// Matches a fan profile quieter than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_below: Option<FanProfileName>,
}

/// When an interlock applies. Every field that is set must hold (AND); an empty
/// condition always holds. A condition on a value the engine does not trust (a
/// faulted sensor) counts as holding: interlocks fail closed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The case is open (or closed, with `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_open: Option<bool>,
    /// The tamper loop is broken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper: Option<bool>,
    /// Motion is seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion: Option<bool>,
    /// The CPU is hotter than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_above_c: Option<Celsius>,
    /// The CPU is cooler than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_below_c: Option<Celsius>,
    /// Under-voltage persists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under_voltage: Option<bool>,
    /// The board runs from its battery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_battery: Option<bool>,
    /// The battery is below this level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_below_pct: Option<Percent>,
    /// The safety engine is throttling workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled: Option<bool>,
    /// A CEL expression over the device's facts (see `docs/policies.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
}

/// "Deny COMMAND while CONDITION".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interlock {
    /// Rule id (refusals name it as `interlock:<id>`).
    pub id: String,
    /// The commands denied.
    pub deny: CommandMatch,
    /// While this holds.
    #[serde(default)]
    pub when: Condition,
    /// Why, for the refusal message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// At most `max` accepted commands of a kind per target within `per`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// The command kind.
    pub command: CommandKind,
    /// Maximum accepted commands in the window, per target.
    pub max: u32,
    /// The window.
    #[serde(with = "crate::time::duration_str")]
    pub per: Duration,
}

/// A user condition in CEL that raises an alert (and optionally throttles).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    /// Rule id; the alert code is `custom:<id>`.
    pub id: String,
    /// A CEL expression that yields a bool.
    pub when: String,
    /// Severity of the alert.
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Alert message; the rule id and expression when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Throttle workloads while the rule holds.
    #[serde(default)]
    pub throttle: bool,
    /// How long the expression must hold before the alert is raised.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub hold: Option<Duration>,
}

fn default_severity() -> Severity {
    Severity::Warning
}

/// One policy layer (fleet, group or device), as parsed from a TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyLayer {
    /// Which devices it applies to.
    pub scope: Scope,
    /// Thermal limits.
    #[serde(default)]
    pub thermal: ThermalOverrides,
    /// Fan.
    #[serde(default)]
    pub fan: FanOverrides,
    /// Power.
    #[serde(default)]
    pub power: PowerOverrides,
    /// Physical security.
    #[serde(default)]
    pub security: SecurityOverrides,
    /// Sensor trust.
    #[serde(default)]
    pub sensors: SensorOverrides,
    /// Command handling.
    #[serde(default)]
    pub commands: CommandOverrides,
    /// Interlocks (`[[interlock]]`).
    #[serde(default, rename = "interlock", skip_serializing_if = "Vec::is_empty")]
    pub interlocks: Vec<Interlock>,
    /// Rate limits (`[[rate_limit]]`).
    #[serde(default, rename = "rate_limit", skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
    /// Custom CEL rules (`[[rule]]`).
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<CustomRule>,
}

impl PolicyLayer {
    /// An empty layer for `scope` (changes nothing).
    pub fn empty(scope: Scope) -> Self {
        Self {
            scope,
            thermal: ThermalOverrides::default(),
            fan: FanOverrides::default(),
            power: PowerOverrides::default(),
            security: SecurityOverrides::default(),
            sensors: SensorOverrides::default(),
            commands: CommandOverrides::default(),
            interlocks: Vec::new(),
            rate_limits: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Parses and checks a layer from TOML. Errors name `source_name`, the line and
    /// the key, and say what is wrong. Whether the layer loosens the board's floor
    /// is checked later, by [`PolicySet::assemble`](super::PolicySet::assemble).
    pub fn from_toml(text: &str, source_name: &str) -> Result<PolicyLayer, Error> {
        let layer: PolicyLayer = toml::from_str(text).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => {
                    let line = line_at(text, span.start);
                    (Some(line), key_on_line(text, line))
                }
                None => (None, None),
            };
            Error::InvalidPolicy {
                source_name: source_name.to_owned(),
                line,
                key,
                message: e.message().trim().to_owned(),
            }
        })?;
        layer
            .check()
            .map_err(|(key, needle, message)| Error::InvalidPolicy {
                source_name: source_name.to_owned(),
                line: needle.and_then(|n| line_of(text, &n)),
                key: Some(key),
                message,
            })?;
        Ok(layer)
    }

    /// Checks the layer's own consistency: (key, text to locate, message).
    fn check(&self) -> Result<(), (String, Option<String>, String)> {
        let t = &self.thermal;
        let temps = [
            ("warn_c", t.warn_c),
            ("throttle_c", t.throttle_c),
            ("critical_c", t.critical_c),
        ];
        for (k, v) in temps
            .iter()
            .chain([("hysteresis_c", t.hysteresis_c)].iter())
        {
            if let Some(v) = v {
                if !v.is_finite() {
                    return Err((
                        k.to_string(),
                        Some(k.to_string()),
                        "must be a finite number".into(),
                    ));
                }
            }
        }
        if let (Some(w), Some(th)) = (t.warn_c, t.throttle_c) {
            if w > th {
                return Err((
                    "warn_c".into(),
                    Some("warn_c".into()),
                    format!("warn_c {} is above throttle_c {}", w.get(), th.get()),
                ));
            }
        }
        if let (Some(th), Some(c)) = (t.throttle_c, t.critical_c) {
            if th > c {
                return Err((
                    "throttle_c".into(),
                    Some("throttle_c".into()),
                    format!("throttle_c {} is above critical_c {}", th.get(), c.get()),
                ));
            }
        }
        if let Some(h) = t.hysteresis_c {
            if h.get() < 0.0 {
                return Err((
                    "hysteresis_c".into(),
                    Some("hysteresis_c".into()),
                    "must not be negative".into(),
                ));
            }
        }
        for (k, v) in [
            ("undervoltage_v", self.power.undervoltage_v),
            ("brownout_v", self.power.brownout_v),
        ] {
            if let Some(v) = v {
                if !v.is_finite() || v.get() < 0.0 {
                    return Err((
                        k.into(),
                        Some(k.into()),
                        "must be a finite, non-negative voltage".into(),
                    ));
                }
            }
        }
        for q in &self.security.quiet_hours {
            if q.start_hour > 23 || q.end_hour > 23 {
                return Err((
                    "quiet_hours".into(),
                    Some("quiet_hours".into()),
                    format!("hours must be 0-23, got {}-{}", q.start_hour, q.end_hour),
                ));
            }
        }
        let mut ids: Vec<&str> = self.interlocks.iter().map(|i| i.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err((
                "interlock.id".into(),
                Some(format!("\"{}\"", w[0])),
                format!("duplicate interlock id {:?}", w[0]),
            ));
        }
        for i in &self.interlocks {
            if i.id.is_empty() {
                return Err((
                    "interlock.id".into(),
                    Some("[[interlock]]".into()),
                    "interlock id must not be empty".into(),
                ));
            }
            if let Some(expr) = &i.when.expr {
                super::cel::compile(expr).map_err(|m| {
                    (
                        "interlock.when.expr".to_string(),
                        Some(expr.clone()),
                        format!("interlock {:?}: {m}", i.id),
                    )
                })?;
            }
        }
        for r in &self.rules {
            if r.id.is_empty() {
                return Err((
                    "rule.id".into(),
                    Some("[[rule]]".into()),
                    "rule id must not be empty".into(),
                ));
            }
            super::cel::compile(&r.when).map_err(|m| {
                (
                    "rule.when".to_string(),
                    Some(r.when.clone()),
                    format!("rule {:?}: {m}", r.id),
                )
            })?;
        }
        for l in &self.rate_limits {
            if l.per.is_zero() {
                return Err((
                    "rate_limit.per".into(),
                    Some("per".into()),
                    "the window must be longer than zero".into(),
                ));
            }
        }
        Ok(())
    }
}

/// 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The key assigned on a 1-based line (`key = value`), if any.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (k, _) = l.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && !k.starts_with('#')).then(|| k.to_owned())
}

/// 1-based line of the first occurrence of `needle`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.find(needle).map(|o| line_at(text, o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parses_and_prints() {
        assert_eq!("fleet".parse::<Scope>().unwrap(), Scope::Fleet);
        let g: Scope = "group:lab-a".parse().unwrap();
        assert_eq!(g.to_string(), "group:lab-a");
        assert!("group:Bad".parse::<Scope>().is_err());
        assert!("rack:1".parse::<Scope>().is_err());
    }

    #[test]
    fn quiet_hours_wrap_midnight() {
        let q = QuietHours {
            start_hour: 22,
            end_hour: 6,
        };
        assert!(q.contains(23) && q.contains(0) && q.contains(5));
        assert!(!q.contains(6) && !q.contains(12));
        let d = QuietHours {
            start_hour: 9,
            end_hour: 17,
        };
        assert!(d.contains(9) && !d.contains(17));
    }

    #[test]
    fn type_error_names_file_line_and_key() {
        let text = "scope = \"fleet\"\n\n[thermal]\nwarn_c = \"hot\"\n";
        let e = PolicyLayer::from_toml(text, "fleet.toml").unwrap_err();
        let Error::InvalidPolicy {
            source_name,
            line,
            key,
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(source_name, "fleet.toml");
        assert_eq!(*line, Some(4));
        assert_eq!(key.as_deref(), Some("warn_c"));
        assert!(
            e.to_string().starts_with("fleet.toml:4 (key `warn_c`)"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_and_bad_duration_are_reported() {
        let e = PolicyLayer::from_toml("scope = \"fleet\"\n[thermal]\nwarm_c = 60.0\n", "a.toml")
            .unwrap_err();
        assert!(
            e.to_string().contains("a.toml:3") && e.to_string().contains("warm_c"),
            "{e}"
        );
        let e = PolicyLayer::from_toml(
            "scope = \"fleet\"\n[thermal]\nshutdown_after = \"soon\"\n",
            "b.toml",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("b.toml:3") && e.to_string().contains("soon"),
            "{e}"
        );
        let e = PolicyLayer::from_toml("scope = \"everywhere\"\n", "c.toml").unwrap_err();
        assert!(
            e.to_string().contains("c.toml:1") && e.to_string().contains("invalid scope"),
            "{e}"
        );
    }

    #[test]
    fn semantic_errors_are_located() {
        let text = "scope = \"fleet\"\n[thermal]\nwarn_c = 82.0\nthrottle_c = 75.0\n";
        let e = PolicyLayer::from_toml(text, "x.toml").unwrap_err();
        assert!(
            e.to_string().contains("x.toml:3") && e.to_string().contains("warn_c"),
            "{e}"
        );
        let text = "scope = \"fleet\"\n\n[[rule]]\nid = \"r\"\nwhen = \"cpu_temp_c >\"\n";
        let e = PolicyLayer::from_toml(text, "y.toml").unwrap_err();
        assert_eq!(e.code(), "invalid_policy");
        assert!(e.to_string().contains("y.toml:5"), "{e}");
    }
}
