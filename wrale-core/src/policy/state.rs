//! The safety engine's state: an explicit value owned by the caller.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use super::set::PolicySet;
use crate::model::{
    Alert, AlertCode, CommandKind, CommandRequest, CommandTarget, FanProfileName, PowerSourceKind,
};
use crate::time::Timestamp;
use crate::units::{Celsius, Percent, Volts};

/// The thermal state of the device, as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThermalLevel {
    /// Below every threshold.
    Normal,
    /// Above the warning threshold.
    Warning,
    /// Above the throttle threshold: workloads throttled.
    Throttle,
    /// Above the critical threshold: shutdown follows if it persists.
    Critical,
    /// Emergency shutdown issued.
    Shutdown,
    /// The temperature cannot be trusted: the fan runs at its safe duty.
    FailSafe,
}

impl fmt::Display for ThermalLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ThermalLevel::Normal => "normal",
            ThermalLevel::Warning => "warning",
            ThermalLevel::Throttle => "throttle",
            ThermalLevel::Critical => "critical",
            ThermalLevel::Shutdown => "shutdown",
            ThermalLevel::FailSafe => "fail_safe",
        })
    }
}

/// A hysteresis latch with hold times: turns on when `on` has held for `hold_on`,
/// off when `off` has held for `hold_off`. With `off` strictly stronger than
/// `!on` (a threshold minus a band), noise inside the band cannot make it flap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Latch {
    pub(crate) active: bool,
    pending_since: Option<Timestamp>,
}

impl Latch {
    /// Feeds one observation; returns `Some(new_state)` on a change.
    pub(crate) fn update(
        &mut self,
        on: bool,
        off: bool,
        hold_on: Duration,
        hold_off: Duration,
        now: Timestamp,
    ) -> Option<bool> {
        let (cond, hold) = if self.active {
            (off, hold_off)
        } else {
            (on, hold_on)
        };
        if !cond {
            self.pending_since = None;
            return None;
        }
        let since = *self.pending_since.get_or_insert(now);
        if now.saturating_since(since) >= hold {
            self.active = !self.active;
            self.pending_since = None;
            Some(self.active)
        } else {
            None
        }
    }
}

/// The latest trusted facts about the device, kept for command checks (which see
/// no sample) and CEL conditions. `None` means unknown or untrusted.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Facts {
    /// CPU temperature.
    pub cpu_temp: Option<Celsius>,
    /// Supply voltage.
    pub supply_v: Option<Volts>,
    /// Battery level.
    pub battery: Option<Percent>,
    /// CPU load.
    pub cpu_load: Option<Percent>,
    /// The duty the engine holds the fan at.
    pub fan_duty: Percent,
    /// Case open.
    pub case_open: Option<bool>,
    /// Tamper.
    pub tamper: Option<bool>,
    /// Motion.
    pub motion: Option<bool>,
    /// Under-voltage persists (latched).
    pub under_voltage: bool,
    /// Running from the battery.
    pub on_battery: bool,
    /// Main supply available (true when unknown).
    pub main_available: bool,
    /// The engine is throttling workloads.
    pub throttled: bool,
    /// Hour of day, UTC, of the last sample.
    pub hour_utc: u8,
}

/// Why workloads are throttled (a bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Causes(pub(crate) u8);

impl Causes {
    pub(crate) const THERMAL: u8 = 1;
    pub(crate) const FAN_STALL: u8 = 2;
    pub(crate) const POWER: u8 = 4;
    pub(crate) const BATTERY: u8 = 8;
    pub(crate) const CUSTOM: u8 = 16;

    pub(crate) fn set(&mut self, bit: u8, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }

    pub(crate) fn describe(self) -> String {
        let names = [
            (Self::THERMAL, "temperature above the throttle threshold"),
            (Self::FAN_STALL, "fan stalled while warm"),
            (Self::POWER, "supply brown-out"),
            (Self::BATTERY, "battery critical"),
            (Self::CUSTOM, "custom rule"),
        ];
        names
            .iter()
            .filter(|(b, _)| self.0 & b != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Per-fan tracking (stall detection).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct FanTrack {
    pub(crate) stall: Latch,
}

/// A rate-limit bucket: accepted command times for one kind and target.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RateBucket {
    pub(crate) kind: CommandKind,
    pub(crate) target: OwnedTarget,
    pub(crate) times: VecDeque<Timestamp>,
}

/// An owned [`CommandTarget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnedTarget {
    Pin(u8),
    Name(String),
    Source(PowerSourceKind),
    Device,
}

impl OwnedTarget {
    pub(crate) fn matches(&self, t: CommandTarget<'_>) -> bool {
        match (self, t) {
            (OwnedTarget::Pin(a), CommandTarget::Pin(b)) => *a == b,
            (OwnedTarget::Name(a), CommandTarget::Fan(b) | CommandTarget::Workload(b)) => a == b,
            (OwnedTarget::Source(a), CommandTarget::Source(b)) => *a == b,
            (OwnedTarget::Device, CommandTarget::Device) => true,
            _ => false,
        }
    }

    pub(crate) fn from_target(t: CommandTarget<'_>) -> Self {
        match t {
            CommandTarget::Pin(p) => OwnedTarget::Pin(p),
            CommandTarget::Fan(n) | CommandTarget::Workload(n) => OwnedTarget::Name(n.to_owned()),
            CommandTarget::Source(s) => OwnedTarget::Source(s),
            CommandTarget::Device => OwnedTarget::Device,
        }
    }
}

/// A command validated and waiting for confirmation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    pub(crate) token: u64,
    pub(crate) expires_at: Timestamp,
    pub(crate) request: CommandRequest,
}

/// The engine's state for one device: hold timers, hysteresis latches, active
/// alerts, fan profile and duty, throttling, security locks, rate-limit history
/// and pending confirmations.
///
/// Owned by the caller (metald), created with [`SafetyState::new`], and updated
/// only by the engine's methods on [`PolicySet`]. It holds no clock: everything
/// time-related comes from the `now` passed in.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyState {
    pub(crate) started: bool,
    // thermal
    pub(crate) level: ThermalLevel,
    pub(crate) warn: Latch,
    pub(crate) throttle: Latch,
    pub(crate) critical: Latch,
    pub(crate) critical_since: Option<Timestamp>,
    pub(crate) shutdown_issued: bool,
    // sensor trust
    pub(crate) untrusted: Latch,
    pub(crate) last_value: Option<(f64, Timestamp)>,
    // fan
    pub(crate) profile: FanProfileName,
    pub(crate) fan_step: usize,
    pub(crate) fan_override: Option<Percent>,
    pub(crate) fan_target: Percent,
    pub(crate) fans: Vec<FanTrack>,
    pub(crate) stalled: bool,
    // power
    pub(crate) uv: Latch,
    pub(crate) uv_sticky: Latch,
    pub(crate) brownout: Latch,
    pub(crate) batt_low: Latch,
    pub(crate) batt_crit: Latch,
    pub(crate) main_lost: Latch,
    pub(crate) failed_over: bool,
    // security
    pub(crate) case: Latch,
    pub(crate) tamper: Latch,
    pub(crate) motion: Latch,
    pub(crate) gpio_locked: bool,
    // custom rules, by index in the policy's rule list
    pub(crate) custom: Vec<Latch>,
    // throttling
    pub(crate) causes: Causes,
    pub(crate) throttled: bool,
    // alerts, commands
    pub(crate) alerts: Vec<Alert>,
    pub(crate) facts: Facts,
    pub(crate) rate: Vec<RateBucket>,
    pub(crate) pending: Vec<Pending>,
    pub(crate) next_token: u64,
}

impl SafetyState {
    /// A fresh state for `policy`: normal, fan on the policy's default profile.
    pub fn new(policy: &PolicySet) -> Self {
        SafetyState {
            started: false,
            level: ThermalLevel::Normal,
            warn: Latch::default(),
            throttle: Latch::default(),
            critical: Latch::default(),
            critical_since: None,
            shutdown_issued: false,
            untrusted: Latch::default(),
            last_value: None,
            profile: policy.limits.fan.default_profile,
            fan_step: 0,
            fan_override: None,
            fan_target: policy.limits.fan.safe_duty,
            fans: Vec::new(),
            stalled: false,
            uv: Latch::default(),
            uv_sticky: Latch::default(),
            brownout: Latch::default(),
            batt_low: Latch::default(),
            batt_crit: Latch::default(),
            main_lost: Latch::default(),
            failed_over: false,
            case: Latch::default(),
            tamper: Latch::default(),
            motion: Latch::default(),
            gpio_locked: false,
            custom: vec![Latch::default(); policy.rules.len()],
            causes: Causes::default(),
            throttled: false,
            alerts: Vec::new(),
            facts: Facts {
                main_available: true,
                ..Facts::default()
            },
            rate: Vec::new(),
            pending: Vec::new(),
            next_token: 1,
        }
    }

    /// The thermal level.
    pub fn thermal_level(&self) -> ThermalLevel {
        self.level
    }

    /// The duty the engine holds the fans at.
    pub fn fan_target(&self) -> Percent {
        self.fan_target
    }

    /// The fan-curve profile in force.
    pub fn fan_profile(&self) -> FanProfileName {
        self.profile
    }

    /// A manual fan duty override, if a command set one.
    pub fn fan_override(&self) -> Option<Percent> {
        self.fan_override
    }

    /// Whether the engine is throttling workloads.
    pub fn throttled(&self) -> bool {
        self.throttled
    }

    /// Whether GPIO outputs are locked (case open under a locking policy).
    pub fn gpio_locked(&self) -> bool {
        self.gpio_locked
    }

    /// Whether under-voltage persists.
    pub fn under_voltage(&self) -> bool {
        self.uv.active
    }

    /// Whether an emergency shutdown has been issued.
    pub fn shutdown_issued(&self) -> bool {
        self.shutdown_issued
    }

    /// Whether the CPU temperature is currently untrusted (fail-safe).
    pub fn fail_safe(&self) -> bool {
        self.untrusted.active
    }

    /// Active alerts, in the order they were raised.
    pub fn active_alerts(&self) -> &[Alert] {
        &self.alerts
    }

    /// Whether an alert with this code is active.
    pub fn alert_active(&self, code: &AlertCode) -> bool {
        self.alerts.iter().any(|a| &a.code == code)
    }

    /// The latest trusted facts.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latch_needs_hold_and_band() {
        let mut l = Latch::default();
        let s = Duration::from_secs(2);
        let t = Timestamp::from_secs;
        assert_eq!(l.update(true, false, s, s, t(0)), None);
        assert_eq!(l.update(true, false, s, s, t(1)), None);
        assert_eq!(l.update(true, false, s, s, t(2)), Some(true));
        // Not off-condition: stays on whatever `on` says.
        assert_eq!(l.update(false, false, s, s, t(3)), None);
        assert_eq!(l.update(false, true, s, s, t(4)), None);
        // Off condition interrupted: timer restarts.
        assert_eq!(l.update(false, false, s, s, t(5)), None);
        assert_eq!(l.update(false, true, s, s, t(6)), None);
        assert_eq!(l.update(false, true, s, s, t(8)), Some(false));
        assert!(!l.active);
    }

    #[test]
    fn causes_describe() {
        let mut c = Causes::default();
        c.set(Causes::THERMAL, true);
        c.set(Causes::BATTERY, true);
        assert_eq!(
            c.describe(),
            "temperature above the throttle threshold, battery critical"
        );
        c.set(Causes::THERMAL, false);
        assert_eq!(c.0, Causes::BATTERY);
    }
}
