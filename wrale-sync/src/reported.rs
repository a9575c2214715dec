//! The typed `reported` section: what the device says about itself, and the
//! deadband / minimum-interval rules that keep it from growing history.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use wrale_core::model::ThrottleFlags;
use wrale_core::units::{Celsius, Volts};
use wrale_core::{Reading, Sample, Timestamp};

use crate::config::Rejection;
use crate::schema::FieldValue;

/// Overall health as the device judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Everything within limits.
    Ok,
    /// A warning is active.
    Warning,
    /// A critical condition is active.
    Critical,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
    fn parse(s: &str) -> Option<Health> {
        [Health::Ok, Health::Warning, Health::Critical]
            .into_iter()
            .find(|h| h.as_str() == s)
    }
}

/// Which desired config the device applied, and whether it accepted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// `config_version` of the config the device last evaluated.
    pub version: u64,
    /// Whether it was accepted and applied.
    pub accepted: bool,
    /// Why not, when it was refused.
    pub rejection: Option<Rejection>,
}

/// The typed `reported` section.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Reported {
    /// Overall health.
    pub health: Option<Health>,
    /// Active alerts: id to message.
    pub alerts: BTreeMap<String, String>,
    /// Firmware throttle and under-voltage flags.
    pub throttle: Option<ThrottleFlags>,
    /// The last desired config evaluated.
    pub config: Option<ConfigStatus>,
    /// Command acknowledgements: command id to status.
    pub acks: BTreeMap<String, String>,
    /// Version of the agent.
    pub agent_version: Option<String>,
    /// Slow-changing readings, written with a deadband (`cpu_temp_c`, `supply_v`).
    pub readings: BTreeMap<String, f64>,
    /// The running boot's id (`boot_id`): a new one after every reboot.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// When the running boot happened (`booted_at`).
    #[serde(default)]
    pub booted_at: Option<Timestamp>,
    /// Whether the device's safety engine throttles its workloads / CPU now
    /// (`engine_throttled`; not the firmware's flags, see `throttle`).
    #[serde(default)]
    pub engine_throttled: Option<bool>,
    /// How many times the safety engine started throttling, counted in the twin
    /// (`engine_throttle_count`; survives restarts of the agent).
    #[serde(default)]
    pub engine_throttle_count: Option<u64>,
}

impl Reported {
    /// The CPU temperature reading, if reported.
    pub fn cpu_temp(&self) -> Option<Celsius> {
        self.readings.get(R_CPU_TEMP).copied().map(Celsius)
    }

    /// The supply voltage reading, if reported.
    pub fn supply_voltage(&self) -> Option<Volts> {
        self.readings.get(R_SUPPLY).copied().map(Volts)
    }

    pub(crate) fn from_fields(fields: &BTreeMap<String, FieldValue>) -> Reported {
        let mut r = Reported::default();
        let mut version = None;
        let mut accepted = None;
        let mut rejection = None;
        for (k, v) in fields {
            match (k.as_str(), v) {
                ("health", FieldValue::Str(s)) => r.health = Health::parse(s),
                ("throttle_bits", FieldValue::Int(b)) => {
                    r.throttle = u32::try_from(*b).ok().map(ThrottleFlags::from_bits)
                }
                ("agent_version", FieldValue::Str(s)) => r.agent_version = Some(s.clone()),
                (F_BOOT_ID, FieldValue::Str(s)) => r.boot_id = Some(s.clone()),
                (F_ENGINE_THROTTLED, FieldValue::Bool(b)) => r.engine_throttled = Some(*b),
                (F_ENGINE_THROTTLES, FieldValue::Int(n)) => {
                    r.engine_throttle_count = u64::try_from(*n).ok()
                }
                (F_BOOTED_AT, FieldValue::Str(s)) => r.booted_at = Timestamp::parse_rfc3339(s).ok(),
                ("config.version", FieldValue::Int(i)) => version = u64::try_from(*i).ok(),
                ("config.accepted", FieldValue::Bool(b)) => accepted = Some(*b),
                ("config.rejection", FieldValue::Str(s)) => {
                    let (rule, reason) = s.split_once(": ").unwrap_or((s.as_str(), ""));
                    rejection = Some(Rejection::new(rule, reason));
                }
                (k, v) => {
                    if let (Some(id), FieldValue::Str(m)) = (k.strip_prefix(P_ALERT), v) {
                        r.alerts.insert(id.to_owned(), m.clone());
                    } else if let (Some(id), FieldValue::Str(s)) = (k.strip_prefix(P_ACK), v) {
                        r.acks.insert(id.to_owned(), s.clone());
                    } else if let Some(name) = k.strip_prefix(P_READING) {
                        if let Some(x) = v.as_f64() {
                            r.readings.insert(name.to_owned(), x);
                        }
                    }
                }
            }
        }
        if let (Some(version), Some(accepted)) = (version, accepted) {
            r.config = Some(ConfigStatus {
                version,
                accepted,
                rejection: if accepted { None } else { rejection },
            });
        }
        r
    }
}

pub(crate) const P_ALERT: &str = "alert.";
pub(crate) const P_ACK: &str = "ack.";
pub(crate) const P_READING: &str = "reading.";
const F_BOOT_ID: &str = "boot_id";
const F_BOOTED_AT: &str = "booted_at";
const F_ENGINE_THROTTLED: &str = "engine_throttled";
const F_ENGINE_THROTTLES: &str = "engine_throttle_count";
const R_CPU_TEMP: &str = "cpu_temp_c";
const R_SUPPLY: &str = "supply_v";

/// What the device wants to report this tick. `None` / empty means "unchanged".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportedUpdate {
    /// Overall health.
    pub health: Option<Health>,
    /// The complete set of active alerts (alerts missing from it are cleared).
    pub alerts: Option<BTreeMap<String, String>>,
    /// Throttle flags.
    pub throttle: Option<ThrottleFlags>,
    /// Result of evaluating a desired config.
    pub config: Option<ConfigStatus>,
    /// Command acknowledgements to add or update.
    pub acks: BTreeMap<String, String>,
    /// Agent version.
    pub agent_version: Option<String>,
    /// Readings, subject to the [`ReportPolicy`] deadband and minimum interval.
    pub readings: BTreeMap<String, f64>,
    /// The running boot's id (written when it differs: a reboot).
    pub boot_id: Option<String>,
    /// When the running boot happened.
    pub booted_at: Option<Timestamp>,
    /// Whether the safety engine throttles workloads / the CPU now. A change from
    /// not throttling to throttling also adds one to `engine_throttle_count`.
    pub engine_throttled: Option<bool>,
}

impl ReportedUpdate {
    /// The slow-changing projection of a sample: CPU temperature, supply voltage,
    /// power and throttle flags. Missing or faulted readings are left out.
    pub fn from_sample(sample: &Sample) -> ReportedUpdate {
        let mut u = ReportedUpdate::default();
        let mut put = |name: &str, r: Reading<f64>| {
            if let Reading::Ok(v) = r {
                u.readings.insert(name.to_owned(), v);
            }
        };
        put(R_CPU_TEMP, sample.cpu_temp().map(|c| c.get()));
        put(R_SUPPLY, sample.supply_voltage.map(|v| v.get()));
        put("power_w", sample.power.map(|w| w.get()));
        u.throttle = sample.throttle.ok();
        u
    }

    /// Sets the running boot's id and time (builder style).
    pub fn boot(mut self, boot_id: impl Into<String>, booted_at: Timestamp) -> Self {
        self.boot_id = Some(boot_id.into());
        self.booted_at = Some(booted_at);
        self
    }

    /// Sets one reading (builder style).
    pub fn reading(mut self, name: &str, value: f64) -> Self {
        self.readings.insert(name.to_owned(), value);
        self
    }

    /// The discrete (non-reading) fields as flat writes; `None` deletes the key.
    pub(crate) fn discrete_fields(
        &self,
        current: &BTreeMap<String, FieldValue>,
    ) -> Vec<(String, Option<FieldValue>)> {
        let mut w: Vec<(String, Option<FieldValue>)> = Vec::new();
        if let Some(h) = self.health {
            w.push(("health".into(), Some(h.as_str().into())));
        }
        if let Some(t) = self.throttle {
            w.push((
                "throttle_bits".into(),
                Some(FieldValue::Int(t.bits() as i64)),
            ));
        }
        if let Some(v) = &self.agent_version {
            w.push(("agent_version".into(), Some(v.as_str().into())));
        }
        if let Some(id) = &self.boot_id {
            w.push((F_BOOT_ID.into(), Some(id.as_str().into())));
        }
        if let Some(t) = self.booted_at {
            w.push((F_BOOTED_AT.into(), Some(t.to_string().into())));
        }
        if let Some(on) = self.engine_throttled {
            let was = matches!(
                current.get(F_ENGINE_THROTTLED),
                Some(FieldValue::Bool(true))
            );
            if on && !was {
                let n = match current.get(F_ENGINE_THROTTLES) {
                    Some(FieldValue::Int(n)) if *n >= 0 => *n,
                    _ => 0,
                };
                w.push((
                    F_ENGINE_THROTTLES.into(),
                    Some(FieldValue::Int(n.saturating_add(1))),
                ));
            }
            w.push((F_ENGINE_THROTTLED.into(), Some(on.into())));
        }
        if let Some(c) = &self.config {
            w.push((
                "config.version".into(),
                Some(FieldValue::Int(c.version as i64)),
            ));
            w.push(("config.accepted".into(), Some(c.accepted.into())));
            let rej = c
                .rejection
                .as_ref()
                .filter(|_| !c.accepted)
                .map(|r| FieldValue::from(format!("{}: {}", r.rule, r.reason)));
            w.push(("config.rejection".into(), rej));
        }
        if let Some(alerts) = &self.alerts {
            for k in current.keys().filter(|k| k.starts_with(P_ALERT)) {
                if !alerts.contains_key(&k[P_ALERT.len()..]) {
                    w.push((k.clone(), None));
                }
            }
            for (id, m) in alerts {
                w.push((format!("{P_ALERT}{id}"), Some(m.as_str().into())));
            }
        }
        for (id, s) in &self.acks {
            w.push((format!("{P_ACK}{id}"), Some(s.as_str().into())));
        }
        w
    }
}

/// Deadband and rate limit for readings in `reported`.
///
/// A reading is written when it was never written, or when it moved by at least
/// its deadband **and** at least `min_interval` passed since it was last written.
/// Discrete state (health, alerts, flags, config status, acks) is written as soon
/// as it changes: those are the facts a fleet acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportPolicy {
    /// Deadband for readings without their own entry.
    pub default_deadband: f64,
    /// Per-reading deadbands (`cpu_temp_c` -> 1.0).
    pub deadbands: BTreeMap<String, f64>,
    /// Minimum time between two writes of one reading.
    pub min_interval: Duration,
}

impl Default for ReportPolicy {
    fn default() -> Self {
        Self {
            default_deadband: 1.0,
            deadbands: [
                (R_CPU_TEMP.to_owned(), 1.0),
                (R_SUPPLY.to_owned(), 0.05),
                ("power_w".to_owned(), 0.5),
            ]
            .into(),
            min_interval: Duration::from_secs(60),
        }
    }
}

impl ReportPolicy {
    /// The deadband of a reading.
    pub fn deadband(&self, name: &str) -> f64 {
        self.deadbands
            .get(name)
            .copied()
            .unwrap_or(self.default_deadband)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Author, Twin};
    use wrale_core::model::DeviceInfo;
    use wrale_core::{BoardModel, DeviceId};

    #[test]
    fn boot_identity_is_written_once_per_boot() {
        let id = DeviceId::new("pi-1").unwrap();
        let info = DeviceInfo {
            id: id.clone(),
            model: BoardModel::Pi4B,
            serial: None,
            firmware_version: None,
            agent_version: None,
            labels: BTreeMap::new(),
            location: Default::default(),
            group: None,
        };
        let t = |s: i64| Timestamp::from_secs(1_800_000_000 + s);
        let mut twin = Twin::new(&info, Author::device(&id), t(0)).unwrap();
        assert_eq!(twin.reported().unwrap().boot_id, None);
        let boot = ReportedUpdate::default().boot("boot-a", t(-100));
        assert!(twin.report(&boot, t(1)).unwrap());
        let r = twin.reported().unwrap();
        assert_eq!(r.boot_id.as_deref(), Some("boot-a"));
        assert_eq!(r.booted_at, Some(t(-100)));
        // The same boot again writes nothing (no history growth per sample).
        assert!(!twin.report(&boot, t(2)).unwrap());
        // A reboot is written at once.
        let again = ReportedUpdate::default().boot("boot-b", t(3));
        assert!(twin.report(&again, t(4)).unwrap());
        let r = twin.reported().unwrap();
        assert_eq!(r.boot_id.as_deref(), Some("boot-b"));
        assert_eq!(r.booted_at, Some(t(3)));
        // An update without boot fields leaves them alone.
        assert!(
            twin.report(&ReportedUpdate::default().reading("cpu_temp_c", 50.0), t(5))
                .unwrap()
        );
        assert_eq!(twin.reported().unwrap().boot_id.as_deref(), Some("boot-b"));
    }

    #[test]
    fn engine_throttling_is_counted_in_the_twin() {
        let id = DeviceId::new("pi-1").unwrap();
        let info = DeviceInfo {
            id: id.clone(),
            model: BoardModel::Pi4B,
            serial: None,
            firmware_version: None,
            agent_version: None,
            labels: BTreeMap::new(),
            location: Default::default(),
            group: None,
        };
        let t = |s: i64| Timestamp::from_secs(1_800_000_000 + s);
        let mut twin = Twin::new(&info, Author::device(&id), t(0)).unwrap();
        let set = |on| ReportedUpdate {
            engine_throttled: Some(on),
            ..Default::default()
        };
        let state = |twin: &Twin| {
            let r = twin.reported().unwrap();
            (r.engine_throttled, r.engine_throttle_count)
        };
        assert!(twin.report(&set(false), t(1)).unwrap());
        assert_eq!(state(&twin), (Some(false), None));
        assert!(twin.report(&set(true), t(2)).unwrap());
        assert_eq!(state(&twin), (Some(true), Some(1)));
        // Still throttling: nothing new, nothing written.
        assert!(!twin.report(&set(true), t(3)).unwrap());
        assert!(twin.report(&set(false), t(4)).unwrap());
        assert!(!twin.report(&set(false), t(5)).unwrap());
        assert!(twin.report(&set(true), t(6)).unwrap());
        assert_eq!(state(&twin), (Some(true), Some(2)));
        // A reloaded twin (an agent restart) goes on counting from there.
        let bytes = twin.save();
        let mut again = Twin::load(&bytes, Author::device(&id)).unwrap();
        assert!(again.report(&set(false), t(7)).unwrap());
        assert!(again.report(&set(true), t(8)).unwrap());
        assert_eq!(state(&again), (Some(true), Some(3)));
    }
}
