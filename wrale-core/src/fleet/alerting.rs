//! Fleet alerting: rules over the analyzer's output, an alert book with
//! de-duplication, acknowledgement and silences, and a webhook delivery plan.
//!
//! Three pure pieces:
//!
//! 1. [`evaluate`]`(rules, analysis, devices, now) -> Vec<Firing>`: which rules
//!    fire now, each with a de-duplication key (`rule/subject`).
//! 2. [`AlertBook::step`]`(input, now) -> Vec<Notification>`: the alert state
//!    machine. A new key raises an alert (and notifies), a higher severity
//!    escalates it, a key absent from a full evaluation resolves it. An
//!    acknowledged alert does not notify again until it escalates or resolves; an
//!    alert matching an active silence is kept but not notified (when the silence
//!    ends and it still fires, it notifies then).
//! 3. [`DeliveryQueue`]: one delivery per notification and webhook, attempts and
//!    outcomes recorded, exponential backoff, dead letter after `max_attempts` or
//!    a permanent HTTP error. fleetd does the HTTP and reports each outcome.
//!
//! ```
//! use wrale_core::fleet::alerting::*;
//! use wrale_core::model::Severity;
//! use wrale_core::Timestamp;
//!
//! let mut book = AlertBook::default();
//! let f = Firing::device("fan", Severity::Warning, "pi-1".parse().unwrap(), "fan degraded");
//! let n = book.step(&AlertInput::Evaluation { firings: vec![f.clone()] }, Timestamp::from_secs(0));
//! assert_eq!(n.len(), 1);                       // raised
//! let n = book.step(&AlertInput::Evaluation { firings: vec![f] }, Timestamp::from_secs(60));
//! assert!(n.is_empty());                         // de-duplicated
//! let n = book.step(&AlertInput::Evaluation { firings: vec![] }, Timestamp::from_secs(120));
//! assert_eq!(n[0].kind, NotificationKind::Resolved);
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::fleet::analyzer::{AnomalyMetric, FanStatus, FleetAnalysis};
use crate::model::{Alert, DeviceId, Location, Severity};
use crate::time::{Timestamp, duration_str};

/// What a rule tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// Device health score below `score`.
    HealthBelow {
        /// Threshold.
        score: f64,
    },
    /// Predicted time to the throttle threshold shorter than `within`.
    ThrottleWithin {
        /// Horizon.
        #[serde(with = "duration_str")]
        within: Duration,
    },
    /// Fan verdict at least this bad (`degraded` or `failing`).
    Fan {
        /// Threshold.
        status: FanStatus,
    },
    /// Under-voltage events per day above `per_day`.
    UnderVoltage {
        /// Threshold.
        per_day: f64,
    },
    /// Storage end of life within `days`.
    StorageEol {
        /// Horizon.
        days: f64,
    },
    /// An anomaly against peers (any metric, or this one).
    Anomaly {
        /// Metric filter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<AnomalyMetric>,
    },
    /// A hot spot at least `min_excess_c` hotter than the fleet.
    HotSpot {
        /// Threshold (°C).
        min_excess_c: f64,
    },
    /// No data from the device for longer than `after`.
    Offline {
        /// Grace time.
        #[serde(with = "duration_str")]
        after: Duration,
    },
    /// An active device alert (from its twin) at least this severe.
    DeviceAlert {
        /// Threshold.
        min_severity: Severity,
    },
    /// Many devices of one rack firing device-level rules at once.
    RackStorm {
        /// At least this many devices.
        min_devices: usize,
        /// And at least this fraction of the rack's devices.
        min_fraction: f64,
    },
}

/// A fleet alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Stable id (part of the de-duplication key).
    pub id: String,
    /// What it tests.
    pub condition: Condition,
    /// Severity of what it raises.
    pub severity: Severity,
}

impl Rule {
    /// A rule.
    pub fn new(id: impl Into<String>, condition: Condition, severity: Severity) -> Self {
        Self {
            id: id.into(),
            condition,
            severity,
        }
    }
}

/// What fleetd knows of a device besides its analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// The device.
    pub device: DeviceId,
    /// Where it is.
    #[serde(default)]
    pub location: Location,
    /// When it was last heard from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// Its active alerts, from its twin.
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    /// A device.
    Device {
        /// Device.
        device: DeviceId,
    },
    /// A rack (`site/rack`).
    Rack {
        /// `site/rack`.
        rack: String,
    },
    /// A location (`site/rack[/shelf]`).
    Location {
        /// Location.
        location: String,
    },
}

impl Subject {
    fn key(&self) -> String {
        match self {
            Subject::Device { device } => format!("device:{device}"),
            Subject::Rack { rack } => format!("rack:{rack}"),
            Subject::Location { location } => format!("location:{location}"),
        }
    }
}

/// A rule firing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    /// De-duplication key: `rule/subject`.
    pub key: String,
    /// Rule id.
    pub rule: String,
    /// Severity.
    pub severity: Severity,
    /// Subject.
    pub subject: Subject,
    /// Message with the values.
    pub message: String,
}

impl Firing {
    /// A firing about one device.
    pub fn device(
        rule: &str,
        severity: Severity,
        device: DeviceId,
        message: impl Into<String>,
    ) -> Self {
        Self::new(rule, severity, Subject::Device { device }, message)
    }

    /// A firing.
    pub fn new(
        rule: &str,
        severity: Severity,
        subject: Subject,
        message: impl Into<String>,
    ) -> Self {
        Self {
            key: format!("{rule}/{}", subject.key()),
            rule: rule.into(),
            severity,
            subject,
            message: message.into(),
        }
    }
}

fn rack_of(l: &Location) -> Option<String> {
    l.rack
        .as_ref()
        .map(|r| format!("{}/{r}", l.site.as_deref().unwrap_or("-")))
}

/// Evaluates every rule. Firings are sorted by key; a key appears once (the most
/// severe rule wins when two rules share an id).
pub fn evaluate(
    rules: &[Rule],
    analysis: &FleetAnalysis,
    devices: &[DeviceStatus],
    now: Timestamp,
) -> Vec<Firing> {
    let mut out: BTreeMap<String, Firing> = BTreeMap::new();
    let mut push = |f: Firing| {
        let keep = out.get(&f.key).is_none_or(|o| o.severity < f.severity);
        if keep {
            out.insert(f.key.clone(), f);
        }
    };
    for rule in rules {
        let sev = rule.severity;
        let id = rule.id.as_str();
        match &rule.condition {
            Condition::HealthBelow { score } => {
                for d in analysis.devices.iter().filter(|d| d.health.score < *score) {
                    let top = d
                        .health
                        .factors
                        .first()
                        .map(|f| format!(": {} ({})", f.code, f.detail))
                        .unwrap_or_default();
                    push(Firing::device(
                        id,
                        sev,
                        d.device.clone(),
                        format!("health {:.0} < {score:.0}{top}", d.health.score),
                    ));
                }
            }
            Condition::ThrottleWithin { within } => {
                for d in &analysis.devices {
                    if let Some(s) = d.time_to_throttle_s.filter(|s| *s < within.as_secs_f64()) {
                        push(Firing::device(
                            id,
                            sev,
                            d.device.clone(),
                            format!(
                                "throttle threshold in {:.1} h at the current trend",
                                s / 3600.0
                            ),
                        ));
                    }
                }
            }
            Condition::Fan { status } => {
                for d in &analysis.devices {
                    if let Some(f) = d.fan.as_ref().filter(|f| f.status >= *status) {
                        push(Firing::device(
                            id,
                            sev,
                            d.device.clone(),
                            format!(
                                "fan {:?}: effect {} of expected, tach {}",
                                f.status,
                                f.effectiveness
                                    .map_or("unknown".into(), |e| format!("{:.0} %", e * 100.0)),
                                match f.tach_ok {
                                    Some(true) => "reads normally",
                                    Some(false) => "reads no rotation",
                                    None => "absent",
                                }
                            ),
                        ));
                    }
                }
            }
            Condition::UnderVoltage { per_day } => {
                for d in &analysis.devices {
                    if let Some(s) = d
                        .supply
                        .as_ref()
                        .filter(|s| s.under_voltage_per_day > *per_day)
                    {
                        push(Firing::device(
                            id,
                            sev,
                            d.device.clone(),
                            format!(
                                "{:.1} under-voltage events/day (min {:.2} V)",
                                s.under_voltage_per_day,
                                s.min.get()
                            ),
                        ));
                    }
                }
            }
            Condition::StorageEol { days } => {
                for d in &analysis.devices {
                    if let Some(left) = d
                        .storage
                        .as_ref()
                        .and_then(|s| s.days_left)
                        .filter(|l| l < days)
                    {
                        push(Firing::device(
                            id,
                            sev,
                            d.device.clone(),
                            format!("storage end of life in {left:.0} days"),
                        ));
                    }
                }
            }
            Condition::Anomaly { metric } => {
                for a in &analysis.anomalies {
                    if metric.is_none_or(|m| m == a.metric) {
                        push(Firing::device(id, sev, a.device.clone(), a.message.clone()));
                    }
                }
            }
            Condition::HotSpot { min_excess_c } => {
                for h in analysis
                    .hot_spots
                    .iter()
                    .filter(|h| h.excess.get() >= *min_excess_c)
                {
                    push(Firing::new(
                        id,
                        sev,
                        Subject::Location {
                            location: h.location.clone(),
                        },
                        format!(
                            "{} runs {:.1} °C hotter than the fleet at comparable load ({} devices)",
                            h.location,
                            h.excess.get(),
                            h.devices.len()
                        ),
                    ));
                }
            }
            Condition::Offline { after } => {
                for d in devices {
                    let gone = match d.last_seen {
                        Some(t) => now.saturating_since(t) > *after,
                        None => true,
                    };
                    if gone {
                        push(Firing::device(
                            id,
                            sev,
                            d.device.clone(),
                            match d.last_seen {
                                Some(t) => format!("offline since {t}"),
                                None => "never seen".into(),
                            },
                        ));
                    }
                }
            }
            Condition::DeviceAlert { min_severity } => {
                for d in devices {
                    for a in d
                        .alerts
                        .iter()
                        .filter(|a| a.is_active() && a.severity >= *min_severity)
                    {
                        push(Firing::new(
                            &format!("{id}:{}", a.code),
                            a.severity,
                            Subject::Device {
                                device: d.device.clone(),
                            },
                            a.message.clone(),
                        ));
                    }
                }
            }
            Condition::RackStorm { .. } => {} // below, over the device-level firings
        }
    }
    // Rack storms: distinct devices of a rack with any device-level firing.
    let rack_members: BTreeMap<String, BTreeSet<&DeviceId>> =
        devices.iter().fold(BTreeMap::new(), |mut m, d| {
            if let Some(r) = rack_of(&d.location) {
                m.entry(r).or_default().insert(&d.device);
            }
            m
        });
    let rack_of_device: BTreeMap<&DeviceId, &String> = rack_members
        .iter()
        .flat_map(|(r, ds)| ds.iter().map(move |d| (*d, r)))
        .collect();
    let mut firing_per_rack: BTreeMap<&String, BTreeSet<&DeviceId>> = BTreeMap::new();
    for f in out.values() {
        if let Subject::Device { device } = &f.subject {
            if let Some(r) = rack_of_device.get(device) {
                firing_per_rack.entry(r).or_default().insert(device);
            }
        }
    }
    let mut storms = Vec::new();
    for rule in rules {
        if let Condition::RackStorm {
            min_devices,
            min_fraction,
        } = &rule.condition
        {
            for (rack, firing) in &firing_per_rack {
                let total = rack_members.get(*rack).map_or(1, BTreeSet::len).max(1);
                let frac = firing.len() as f64 / total as f64;
                if firing.len() >= *min_devices && frac >= *min_fraction {
                    storms.push(Firing::new(
                        &rule.id,
                        rule.severity,
                        Subject::Rack {
                            rack: (*rack).clone(),
                        },
                        format!(
                            "{} of {} devices in rack {rack} alerting at once (a shared cause: power, cooling, network?)",
                            firing.len(),
                            total
                        ),
                    ));
                }
            }
        }
    }
    for s in storms {
        out.insert(s.key.clone(), s);
    }
    out.into_values().collect()
}

/// Lifecycle of a fleet alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Firing, nobody acknowledged it.
    Firing,
    /// Firing, acknowledged.
    Acknowledged,
    /// No longer firing (or cleared by an operator).
    Resolved,
}

/// A fleet alert in the book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetAlert {
    /// De-duplication key.
    pub key: String,
    /// Rule.
    pub rule: String,
    /// Current severity.
    pub severity: Severity,
    /// Subject.
    pub subject: Subject,
    /// Latest message.
    pub message: String,
    /// Status.
    pub status: AlertStatus,
    /// First raised.
    pub first_seen: Timestamp,
    /// Last seen firing.
    pub last_seen: Timestamp,
    /// Who acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_by: Option<String>,
    /// When it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// Highest severity notified so far (`None`: not notified yet, e.g. silenced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified: Option<Severity>,
}

/// What a silence matches (every given field must match).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SilenceMatch {
    /// Rule id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// De-duplication key prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

/// A silence window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Id.
    pub id: String,
    /// What it matches.
    pub matcher: SilenceMatch,
    /// Start.
    pub from: Timestamp,
    /// End.
    pub until: Timestamp,
    /// Who set it and why.
    #[serde(default)]
    pub comment: String,
}

impl Silence {
    /// Whether this silence covers alert `a` at `now` (in its window and every
    /// given matcher field matches).
    pub fn covers(&self, a: &FleetAlert, now: Timestamp) -> bool {
        let m = &self.matcher;
        now >= self.from
            && now < self.until
            && m.rule.as_ref().is_none_or(|r| *r == a.rule)
            && m.device
                .as_ref()
                .is_none_or(|d| matches!(&a.subject, Subject::Device { device } if device == d))
            && m.key_prefix.as_ref().is_none_or(|p| a.key.starts_with(p))
    }
}

/// An input to the alert state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AlertInput {
    /// A full evaluation: these fire now; every other open alert resolves.
    Evaluation {
        /// Firings.
        firings: Vec<Firing>,
    },
    /// An operator acknowledges an alert.
    Ack {
        /// Key.
        key: String,
        /// Who.
        by: String,
    },
    /// An operator clears an alert by hand (it re-raises if it fires again).
    Clear {
        /// Key.
        key: String,
        /// Who.
        by: String,
    },
    /// Adds (or replaces, by id) a silence.
    Silence {
        /// The silence.
        silence: Silence,
    },
    /// Removes a silence.
    Unsilence {
        /// Id.
        id: String,
    },
}

/// Kind of notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A new alert.
    Raised,
    /// Its severity rose.
    Escalated,
    /// It stopped firing.
    Resolved,
}

/// Something to tell people about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Kind.
    pub kind: NotificationKind,
    /// The alert as of now.
    pub alert: FleetAlert,
    /// When.
    pub at: Timestamp,
}

/// The alert book: open and recently resolved alerts, and silences. Serde data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AlertBook {
    /// Alerts by key.
    pub alerts: BTreeMap<String, FleetAlert>,
    /// Silences.
    pub silences: Vec<Silence>,
}

/// How long resolved alerts stay in the book.
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(24 * 3600);

impl AlertBook {
    fn silenced(&self, a: &FleetAlert, now: Timestamp) -> bool {
        self.silences.iter().any(|s| s.covers(a, now))
    }

    /// Open (firing or acknowledged) alerts.
    pub fn open(&self) -> impl Iterator<Item = &FleetAlert> {
        self.alerts
            .values()
            .filter(|a| a.status != AlertStatus::Resolved)
    }

    /// The state machine: applies one input at `now` and returns the
    /// notifications to deliver.
    pub fn step(&mut self, input: &AlertInput, now: Timestamp) -> Vec<Notification> {
        let mut out = Vec::new();
        match input {
            AlertInput::Evaluation { firings } => {
                let firing_keys: BTreeSet<&str> = firings.iter().map(|f| f.key.as_str()).collect();
                for f in firings {
                    let a = self
                        .alerts
                        .entry(f.key.clone())
                        .or_insert_with(|| FleetAlert {
                            key: f.key.clone(),
                            rule: f.rule.clone(),
                            severity: f.severity,
                            subject: f.subject.clone(),
                            message: f.message.clone(),
                            status: AlertStatus::Firing,
                            first_seen: now,
                            last_seen: now,
                            acked_by: None,
                            resolved_at: None,
                            notified: None,
                        });
                    if a.status == AlertStatus::Resolved {
                        // Fires again: a new episode.
                        a.status = AlertStatus::Firing;
                        a.first_seen = now;
                        a.acked_by = None;
                        a.resolved_at = None;
                        a.notified = None;
                    }
                    let escalated = f.severity > a.severity;
                    if escalated && a.status == AlertStatus::Acknowledged {
                        a.status = AlertStatus::Firing;
                        a.acked_by = None;
                    }
                    a.severity = f.severity;
                    a.message = f.message.clone();
                    a.last_seen = now;
                }
                // Notify what is firing, unacknowledged, unsilenced and not yet
                // notified at this severity.
                let keys: Vec<String> = self.alerts.keys().cloned().collect();
                for k in keys {
                    let a = &self.alerts[&k];
                    if !firing_keys.contains(k.as_str()) {
                        if a.status != AlertStatus::Resolved {
                            let notify = a.notified.is_some();
                            let a = self.alerts.get_mut(&k).expect("key");
                            a.status = AlertStatus::Resolved;
                            a.resolved_at = Some(now);
                            if notify {
                                out.push(Notification {
                                    kind: NotificationKind::Resolved,
                                    alert: a.clone(),
                                    at: now,
                                });
                            }
                        }
                        continue;
                    }
                    if a.status != AlertStatus::Firing || self.silenced(a, now) {
                        continue;
                    }
                    let kind = match a.notified {
                        None => Some(NotificationKind::Raised),
                        Some(s) if s < a.severity => Some(NotificationKind::Escalated),
                        _ => None,
                    };
                    if let Some(kind) = kind {
                        let a = self.alerts.get_mut(&k).expect("key");
                        a.notified = Some(a.severity);
                        out.push(Notification {
                            kind,
                            alert: a.clone(),
                            at: now,
                        });
                    }
                }
                // Forget resolved alerts after the retention time, and old silences.
                self.alerts.retain(|_, a| {
                    a.resolved_at
                        .is_none_or(|t| now.saturating_since(t) < RESOLVED_RETENTION)
                });
                self.silences.retain(|s| s.until > now);
            }
            AlertInput::Ack { key, by } => {
                if let Some(a) = self.alerts.get_mut(key) {
                    if a.status == AlertStatus::Firing {
                        a.status = AlertStatus::Acknowledged;
                        a.acked_by = Some(by.clone());
                    }
                }
            }
            AlertInput::Clear { key, by } => {
                if let Some(a) = self.alerts.get_mut(key) {
                    if a.status != AlertStatus::Resolved {
                        a.status = AlertStatus::Resolved;
                        a.resolved_at = Some(now);
                        a.acked_by.get_or_insert_with(|| by.clone());
                        if a.notified.is_some() {
                            out.push(Notification {
                                kind: NotificationKind::Resolved,
                                alert: a.clone(),
                                at: now,
                            });
                        }
                    }
                }
            }
            AlertInput::Silence { silence } => {
                self.silences.retain(|s| s.id != silence.id);
                self.silences.push(silence.clone());
            }
            AlertInput::Unsilence { id } => self.silences.retain(|s| &s.id != id),
        }
        out
    }
}

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    /// Id.
    pub id: String,
    /// URL (fleetd posts the notification as JSON).
    pub url: String,
    /// Only notifications at least this severe.
    #[serde(default = "info")]
    pub min_severity: Severity,
}

fn info() -> Severity {
    Severity::Info
}

/// Retry policy for webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts before the delivery goes to the dead letters.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    #[serde(with = "duration_str")]
    pub initial_backoff: Duration,
    /// Multiplier per attempt.
    pub factor: f64,
    /// Longest delay.
    #[serde(with = "duration_str")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(10),
            factor: 2.0,
            max_backoff: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Delay after the `attempts`-th failed attempt (1-based).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = self
            .factor
            .max(1.0)
            .powi(attempts.saturating_sub(1).min(60) as i32);
        let secs = (self.initial_backoff.as_secs_f64() * exp).min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(secs)
    }
}

/// "Equal jitter" on a retry delay: between half of `base` and `base`, `unit`
/// (a uniform draw in `[0, 1)`) choosing where; values outside are clamped, and
/// a non-finite one counts as 0. Receivers that failed together do not retry
/// together.
pub fn equal_jitter(base: Duration, unit: f64) -> Duration {
    let u = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let half = base / 2;
    half + (base - half).mul_f64(u)
}

/// Outcome of one HTTP attempt, as fleetd saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// An HTTP status (2xx is success).
    Status {
        /// Status code.
        code: u16,
    },
    /// Connection refused, DNS, TLS...
    NetworkError {
        /// What.
        message: String,
    },
    /// No answer in time.
    Timeout,
}

impl Outcome {
    fn success(&self) -> bool {
        matches!(self, Outcome::Status { code } if (200..300).contains(code))
    }

    /// A 4xx other than 408 (timeout) and 429 (rate limit) will not get better.
    fn permanent(&self) -> bool {
        matches!(self, Outcome::Status { code } if (400..500).contains(code) && *code != 408 && *code != 429)
    }
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When.
    pub at: Timestamp,
    /// How it went.
    pub outcome: Outcome,
}

/// State of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// Delivered.
    Delivered,
    /// Given up; kept as a dead-letter record.
    DeadLetter,
}

/// One notification to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Id.
    pub id: u64,
    /// Webhook id.
    pub webhook: String,
    /// URL.
    pub url: String,
    /// What to send.
    pub notification: Notification,
    /// Attempts so far.
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due (`None` once delivered or dead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    /// State.
    pub status: DeliveryStatus,
}

/// The webhook delivery plan. Serde data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeliveryQueue {
    /// Retry policy.
    pub policy: RetryPolicy,
    /// Deliveries by id.
    pub deliveries: BTreeMap<u64, Delivery>,
    next_id: u64,
}

impl DeliveryQueue {
    /// An empty queue with a policy.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            deliveries: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// A queue holding stored deliveries (after a restart); new ids continue after
    /// the largest one.
    pub fn restore(policy: RetryPolicy, deliveries: impl IntoIterator<Item = Delivery>) -> Self {
        let deliveries: BTreeMap<u64, Delivery> =
            deliveries.into_iter().map(|d| (d.id, d)).collect();
        let next_id = deliveries.keys().next_back().map_or(1, |m| m + 1);
        Self {
            policy,
            deliveries,
            next_id,
        }
    }

    /// One delivery per matching webhook, due now. Returns their ids.
    pub fn enqueue(&mut self, n: &Notification, hooks: &[Webhook], now: Timestamp) -> Vec<u64> {
        let mut ids = Vec::new();
        for h in hooks.iter().filter(|h| n.alert.severity >= h.min_severity) {
            self.next_id = self.next_id.max(1);
            let id = self.next_id;
            self.next_id += 1;
            self.deliveries.insert(
                id,
                Delivery {
                    id,
                    webhook: h.id.clone(),
                    url: h.url.clone(),
                    notification: n.clone(),
                    attempts: Vec::new(),
                    next_attempt_at: Some(now),
                    status: DeliveryStatus::Pending,
                },
            );
            ids.push(id);
        }
        ids
    }

    /// Deliveries due at `now`, oldest first.
    pub fn due(&self, now: Timestamp) -> Vec<u64> {
        self.deliveries
            .values()
            .filter(|d| {
                d.status == DeliveryStatus::Pending && d.next_attempt_at.is_some_and(|t| t <= now)
            })
            .map(|d| d.id)
            .collect()
    }

    /// Records an attempt's outcome and plans the next one. Returns the new
    /// status (`None` for an unknown id).
    pub fn record(&mut self, id: u64, outcome: Outcome, now: Timestamp) -> Option<DeliveryStatus> {
        let policy = self.policy.clone();
        let d = self.deliveries.get_mut(&id)?;
        if d.status != DeliveryStatus::Pending {
            return Some(d.status);
        }
        let ok = outcome.success();
        let permanent = outcome.permanent();
        d.attempts.push(Attempt { at: now, outcome });
        let n = d.attempts.len() as u32;
        if ok {
            d.status = DeliveryStatus::Delivered;
            d.next_attempt_at = None;
        } else if permanent || n >= policy.max_attempts {
            d.status = DeliveryStatus::DeadLetter;
            d.next_attempt_at = None;
        } else {
            d.next_attempt_at = Some(now + policy.backoff(n));
        }
        Some(d.status)
    }

    /// The dead-letter records.
    pub fn dead_letters(&self) -> impl Iterator<Item = &Delivery> {
        self.deliveries
            .values()
            .filter(|d| d.status == DeliveryStatus::DeadLetter)
    }

    /// Drops delivered records older than `age` (dead letters stay until
    /// removed by an operator).
    pub fn prune_delivered(&mut self, now: Timestamp, age: Duration) {
        self.deliveries.retain(|_, d| {
            d.status != DeliveryStatus::Delivered
                || d.attempts
                    .last()
                    .is_none_or(|a| now.saturating_since(a.at) < age)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        let base = Duration::from_secs(10);
        assert_eq!(equal_jitter(base, 0.0), Duration::from_secs(5));
        assert_eq!(equal_jitter(base, 0.5), Duration::from_millis(7500));
        assert_eq!(equal_jitter(base, 1.0), base);
        assert_eq!(equal_jitter(base, -3.0), Duration::from_secs(5));
        assert_eq!(equal_jitter(base, f64::NAN), Duration::from_secs(5));
        assert_eq!(equal_jitter(Duration::ZERO, 0.7), Duration::ZERO);
    }

    fn f(sev: Severity) -> Firing {
        Firing::device("hot", sev, DeviceId::new("pi-1").unwrap(), "hot")
    }

    #[test]
    fn ack_silence_escalate() {
        let mut b = AlertBook::default();
        let t = Timestamp::from_secs;
        assert_eq!(
            b.step(
                &AlertInput::Evaluation {
                    firings: vec![f(Severity::Warning)]
                },
                t(0)
            )
            .len(),
            1
        );
        let key = f(Severity::Warning).key;
        b.step(
            &AlertInput::Ack {
                key: key.clone(),
                by: "ada".into(),
            },
            t(1),
        );
        assert!(
            b.step(
                &AlertInput::Evaluation {
                    firings: vec![f(Severity::Warning)]
                },
                t(2)
            )
            .is_empty()
        );
        // Escalation re-opens an acknowledged alert.
        let n = b.step(
            &AlertInput::Evaluation {
                firings: vec![f(Severity::Critical)],
            },
            t(3),
        );
        assert_eq!(n[0].kind, NotificationKind::Escalated);
        assert_eq!(b.alerts[&key].status, AlertStatus::Firing);
        // Resolve, then a silenced new episode: kept, not notified until the silence ends.
        assert_eq!(
            b.step(&AlertInput::Evaluation { firings: vec![] }, t(4))[0].kind,
            NotificationKind::Resolved
        );
        b.step(
            &AlertInput::Silence {
                silence: Silence {
                    id: "s".into(),
                    matcher: SilenceMatch {
                        rule: Some("hot".into()),
                        ..Default::default()
                    },
                    from: t(0),
                    until: t(100),
                    comment: "maintenance".into(),
                },
            },
            t(5),
        );
        assert!(
            b.step(
                &AlertInput::Evaluation {
                    firings: vec![f(Severity::Warning)]
                },
                t(6)
            )
            .is_empty()
        );
        assert_eq!(b.open().count(), 1);
        let n = b.step(
            &AlertInput::Evaluation {
                firings: vec![f(Severity::Warning)],
            },
            t(100),
        );
        assert_eq!(n[0].kind, NotificationKind::Raised);
    }

    #[test]
    fn retries_back_off_then_dead_letter() {
        let mut q = DeliveryQueue::new(RetryPolicy::default());
        let mut b = AlertBook::default();
        let n = b.step(
            &AlertInput::Evaluation {
                firings: vec![f(Severity::Critical)],
            },
            Timestamp::from_secs(0),
        );
        let hooks = [
            Webhook {
                id: "ops".into(),
                url: "http://127.0.0.1:1/hook".into(),
                min_severity: Severity::Warning,
            },
            Webhook {
                id: "pager".into(),
                url: "http://127.0.0.1:2/hook".into(),
                min_severity: Severity::Critical,
            },
        ];
        let ids = q.enqueue(&n[0], &hooks, Timestamp::from_secs(0));
        assert_eq!(ids.len(), 2);
        let mut now = Timestamp::from_secs(0);
        let mut delays = Vec::new();
        loop {
            let due = q.due(now);
            if due.is_empty() {
                match q.deliveries[&ids[0]].next_attempt_at {
                    Some(t) => {
                        delays.push(t.saturating_since(now).as_secs());
                        now = t;
                        continue;
                    }
                    None => break,
                }
            }
            for id in due {
                let outcome = if id == ids[0] {
                    Outcome::Timeout
                } else {
                    Outcome::Status { code: 204 }
                };
                q.record(id, outcome, now);
            }
        }
        assert_eq!(delays, vec![10, 20, 40, 80]);
        assert_eq!(q.deliveries[&ids[0]].status, DeliveryStatus::DeadLetter);
        assert_eq!(q.deliveries[&ids[0]].attempts.len(), 5);
        assert_eq!(q.deliveries[&ids[1]].status, DeliveryStatus::Delivered);
        assert_eq!(q.dead_letters().count(), 1);
        // Restored after a restart: ids continue after the largest.
        let mut r = DeliveryQueue::restore(q.policy.clone(), q.deliveries.values().cloned());
        assert_eq!(r.deliveries.len(), 2);
        let more = r.enqueue(&n[0], &hooks[..1], now);
        assert_eq!(more, vec![ids[1] + 1]);
        // A 404 will not get better: dead at once.
        let id = q.enqueue(&n[0], &hooks[..1], now)[0];
        assert_eq!(
            q.record(id, Outcome::Status { code: 404 }, now),
            Some(DeliveryStatus::DeadLetter)
        );
    }
}
