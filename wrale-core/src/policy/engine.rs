//! `evaluate`: one sample in, actions and alert changes out.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::curve::{self, FAN_HYSTERESIS};
use super::set::PolicySet;
use super::state::{Causes, FanTrack, Latch, SafetyState, ThermalLevel};
use crate::events::Event;
use crate::model::{
    Alert, AlertCode, ChargeState, PowerSourceKind, Reading, Sample, SecurityKind, Severity,
};
use crate::time::Timestamp;
use crate::units::{Celsius, Percent};

/// Something the daemon must do through the HAL, at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Set a fan's duty.
    SetFanDuty {
        /// Fan id.
        fan: String,
        /// Duty.
        #[serde(rename = "duty_pct")]
        duty: Percent,
    },
    /// Throttle the device's workloads (lower their CPU share / frequency).
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
    /// Shut the device down now (after applying the fail-safe fan state).
    EmergencyShutdown {
        /// Why.
        reason: String,
    },
    /// Drive no GPIO output until unlocked (commands are refused meanwhile).
    LockGpioOutputs,
    /// Lift the GPIO lock.
    UnlockGpioOutputs,
}

/// An alert raised or cleared by a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", content = "alert", rename_all = "snake_case")]
pub enum AlertChange {
    /// Raised (once per episode).
    Raised(Alert),
    /// Cleared (once per episode), with `cleared_at` set.
    Cleared(Alert),
}

/// A change of [`ThermalLevel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Before.
    pub from: ThermalLevel,
    /// After.
    pub to: ThermalLevel,
}

/// What [`PolicySet::evaluate`] decided. Empty in the steady state (and then
/// allocation-free).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Decision {
    /// Actions to apply through the HAL, in order.
    pub actions: Vec<Action>,
    /// Alerts raised or cleared.
    pub alerts: Vec<AlertChange>,
    /// Thermal-level changes.
    pub transitions: Vec<Transition>,
}

impl Decision {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.alerts.is_empty() && self.transitions.is_empty()
    }

    /// The decision's alert changes and transitions as bus events (actions become
    /// [`Event::ActionApplied`] once the daemon has applied them).
    pub fn events(&self, at: Timestamp) -> impl Iterator<Item = Event> + '_ {
        let alerts = self.alerts.iter().map(|c| match c {
            AlertChange::Raised(a) => Event::AlertRaised(a.clone()),
            AlertChange::Cleared(a) => Event::AlertCleared(a.clone()),
        });
        let transitions = self
            .transitions
            .iter()
            .map(move |t| Event::StateTransition {
                at,
                from: t.from,
                to: t.to,
            });
        alerts.chain(transitions)
    }
}

struct Ctx<'a> {
    st: &'a mut SafetyState,
    d: &'a mut Decision,
    now: Timestamp,
}

impl Ctx<'_> {
    fn raise(&mut self, code: AlertCode, severity: Severity, message: impl FnOnce() -> String) {
        if self.st.alerts.iter().any(|a| a.code == code) {
            return;
        }
        let a = Alert {
            code,
            severity,
            message: message(),
            since: self.now,
            cleared_at: None,
        };
        self.st.alerts.push(a.clone());
        self.d.alerts.push(AlertChange::Raised(a));
    }

    fn clear(&mut self, code: &AlertCode) {
        if let Some(i) = self.st.alerts.iter().position(|a| &a.code == code) {
            let mut a = self.st.alerts.remove(i);
            a.cleared_at = Some(self.now);
            self.d.alerts.push(AlertChange::Cleared(a));
        }
    }

    /// Raises or clears per a latch change.
    fn follow(
        &mut self,
        change: Option<bool>,
        code: AlertCode,
        severity: Severity,
        message: impl FnOnce() -> String,
    ) {
        match change {
            Some(true) => self.raise(code, severity, message),
            Some(false) => self.clear(&code),
            None => {}
        }
    }
}

fn hour_utc(now: Timestamp) -> u8 {
    now.as_millis().div_euclid(3_600_000).rem_euclid(24) as u8
}

impl PolicySet {
    /// Evaluates one sample: updates `state` and returns the actions to apply and
    /// the alerts raised or cleared. Pure and deterministic: no I/O, no clock
    /// (`now` is the time of the decision, normally the sample's time).
    ///
    /// ```
    /// use wrale_core::{BoardModel, BoardProfile, Timestamp};
    /// use wrale_core::model::{Reading, Sample, SensorKind, TemperatureReading};
    /// use wrale_core::policy::{PolicySet, SafetyState, Action};
    /// use wrale_core::units::Celsius;
    ///
    /// let policy = PolicySet::for_board(&BoardProfile::builtin(BoardModel::Pi4B));
    /// let mut state = SafetyState::new(&policy);
    /// let mut sample = Sample::default();
    /// sample.temperatures.push(TemperatureReading {
    ///     id: "cpu".into(), kind: SensorKind::Cpu, value: Reading::Fault(wrale_core::HalErrorKind::Bus),
    /// });
    /// let d = policy.evaluate(&mut state, &sample, Timestamp::from_secs(0));
    /// // An untrusted sensor: fail-safe, with an alert.
    /// assert!(state.fail_safe());
    /// assert_eq!(d.alerts.len(), 1);
    /// ```
    pub fn evaluate(&self, st: &mut SafetyState, s: &Sample, now: Timestamp) -> Decision {
        let mut d = Decision::default();
        if st.custom.len() != self.rules.len() {
            st.custom.resize(self.rules.len(), Latch::default());
        }
        // A reloaded policy may have raised the minimum profile.
        if st.profile < self.limits.fan.min_profile {
            st.profile = self.limits.fan.min_profile;
            st.fan_step = 0;
        }
        let prev_level = st.level;
        let mut cx = Ctx { st, d: &mut d, now };
        let temp = self.trust(&mut cx, s);
        self.thermal(&mut cx, temp);
        self.fans(&mut cx, s, temp);
        self.power(&mut cx, s);
        self.security(&mut cx, s);
        self.update_facts(&mut cx, s, temp);
        self.custom(&mut cx);
        self.throttle(&mut cx, temp);
        let Ctx { st, d: out, .. } = cx;
        st.level = if st.shutdown_issued {
            ThermalLevel::Shutdown
        } else if st.untrusted.active {
            ThermalLevel::FailSafe
        } else if st.critical.active {
            ThermalLevel::Critical
        } else if st.throttle.active {
            ThermalLevel::Throttle
        } else if st.warn.active {
            ThermalLevel::Warning
        } else {
            ThermalLevel::Normal
        };
        if st.level != prev_level {
            out.transitions.push(Transition {
                from: prev_level,
                to: st.level,
            });
        }
        st.started = true;
        d
    }

    /// The CPU temperature if it can be trusted; raises / clears the sensor alert.
    fn trust(&self, cx: &mut Ctx<'_>, s: &Sample) -> Option<Celsius> {
        let sp = &self.limits.sensors;
        let mut problem: Option<String> = None;
        let value = match s.cpu_temp() {
            Reading::Ok(t)
                if !t.is_finite() || t < sp.plausible_min_c || t > sp.plausible_max_c =>
            {
                if !cx.st.untrusted.active {
                    problem = Some(format!("reads an implausible {:.1}", t));
                }
                cx.st.last_value = None;
                None
            }
            Reading::Ok(t) => match cx.st.last_value {
                Some((v, since)) if v == t.get() => {
                    if cx.now.saturating_since(since) >= sp.stuck_after {
                        if !cx.st.untrusted.active {
                            problem = Some(format!(
                                "is stuck at {:.1} for {}",
                                t,
                                humantime::format_duration(sp.stuck_after)
                            ));
                        }
                        None
                    } else {
                        Some(t)
                    }
                }
                _ => {
                    cx.st.last_value = Some((t.get(), cx.now));
                    Some(t)
                }
            },
            Reading::Missing => {
                if !cx.st.untrusted.active {
                    problem = Some("is missing".into());
                }
                None
            }
            Reading::Fault(k) => {
                if !cx.st.untrusted.active {
                    problem = Some(format!("faulted ({k})"));
                }
                None
            }
        };
        let ch = cx.st.untrusted.update(
            value.is_none(),
            value.is_some(),
            Duration::ZERO,
            self.limits.thermal.clear_hold,
            cx.now,
        );
        let safe = self.limits.fan.safe_duty;
        cx.follow(ch, AlertCode::SensorUntrusted, Severity::Critical, || {
            format!(
                "CPU temperature sensor {}; fan held at its safe duty {safe:.0}",
                problem.unwrap_or_default()
            )
        });
        value
    }

    fn thermal(&self, cx: &mut Ctx<'_>, temp: Option<Celsius>) {
        let th = &self.limits.thermal;
        let Some(t) = temp else { return };
        let h = th.hysteresis_c;
        let ch = th.clear_hold;
        let c = cx
            .st
            .warn
            .update(t >= th.warn_c, t < th.warn_c - h, th.warn_hold, ch, cx.now);
        cx.follow(c, AlertCode::ThermalWarning, Severity::Warning, || {
            format!(
                "CPU at {t:.1}, above the warning threshold {:.1}",
                th.warn_c
            )
        });
        let c = cx.st.throttle.update(
            t >= th.throttle_c,
            t < th.throttle_c - h,
            th.throttle_hold,
            ch,
            cx.now,
        );
        cx.follow(c, AlertCode::ThermalThrottle, Severity::Warning, || {
            format!(
                "CPU at {t:.1}, above the throttle threshold {:.1}; throttling workloads",
                th.throttle_c
            )
        });
        let c = cx.st.critical.update(
            t >= th.critical_c,
            t < th.critical_c - h,
            Duration::ZERO,
            ch,
            cx.now,
        );
        match c {
            Some(true) => cx.st.critical_since = Some(cx.now),
            Some(false) => cx.st.critical_since = None,
            None => {}
        }
        cx.follow(c, AlertCode::ThermalCritical, Severity::Critical, || {
            format!(
                "CPU at {t:.1}, above the critical threshold {:.1}; emergency shutdown in {} if it persists",
                th.critical_c,
                humantime::format_duration(th.shutdown_after)
            )
        });
        if let Some(since) = cx.st.critical_since {
            if !cx.st.shutdown_issued && cx.now.saturating_since(since) >= th.shutdown_after {
                cx.st.shutdown_issued = true;
                cx.d.actions.push(Action::EmergencyShutdown {
                    reason: format!(
                        "CPU at {t:.1} has stayed above the critical threshold {:.1} for {}",
                        th.critical_c,
                        humantime::format_duration(th.shutdown_after)
                    ),
                });
            }
        }
    }

    /// The duty the policy requires now, without a manual override.
    pub(crate) fn required_duty(&self, st: &SafetyState) -> Percent {
        let f = &self.limits.fan;
        if st.untrusted.active || st.facts.cpu_temp.is_none() {
            return f.safe_duty;
        }
        curve::step_duty(st.profile, st.fan_step).max(f.min_duty)
    }

    fn fans(&self, cx: &mut Ctx<'_>, s: &Sample, temp: Option<Celsius>) {
        let f = &self.limits.fan;
        let target = match temp {
            Some(t) if !cx.st.untrusted.active => {
                cx.st.fan_step = curve::next_step(cx.st.profile, cx.st.fan_step, t, FAN_HYSTERESIS);
                let mut duty = curve::step_duty(cx.st.profile, cx.st.fan_step).max(f.min_duty);
                if let Some(o) = cx.st.fan_override {
                    duty = duty.max(o);
                }
                duty
            }
            _ => f.safe_duty.max(cx.st.fan_override.unwrap_or(Percent::ZERO)),
        };
        let changed = target != cx.st.fan_target || !cx.st.started;
        cx.st.fan_target = target;
        for fan in &s.fans {
            let drifted = match fan.duty {
                Reading::Ok(d) => (d.get() - target.get()).abs() > 0.5,
                _ => false,
            };
            if changed || drifted {
                cx.d.actions.push(Action::SetFanDuty {
                    fan: fan.id.clone(),
                    duty: target,
                });
            }
        }
        // Stall: commanded to spin (above its start duty) but the tachometer sees
        // (almost) nothing, for longer than the spin-up allowance.
        if cx.st.fans.len() != s.fans.len() {
            cx.st.fans.resize(s.fans.len(), FanTrack::default());
        }
        let spinning = target >= f.min_start_duty.max(Percent::saturating(1.0));
        let floor_rpm = f
            .max_rpm
            .map_or(100.0, |m| (m.get() * target.fraction() * 0.25).max(100.0));
        for (fan, track) in s.fans.iter().zip(cx.st.fans.iter_mut()) {
            let (on, off) = match fan.rpm {
                Reading::Ok(r) => {
                    let stalled = spinning && r.get() < floor_rpm;
                    (stalled, !stalled)
                }
                _ => (false, false),
            };
            track.stall.update(
                on,
                off,
                f.stall_hold,
                self.limits.thermal.clear_hold,
                cx.now,
            );
        }
        let stalled = cx.st.fans.iter().any(|t| t.stall.active);
        if stalled != cx.st.stalled {
            cx.st.stalled = stalled;
            cx.follow(
                Some(stalled),
                AlertCode::FanStall,
                Severity::Critical,
                || format!("fan commanded to {target:.0} shows no rotation"),
            );
        }
    }

    fn power(&self, cx: &mut Ctx<'_>, s: &Sample) {
        let p = &self.limits.power;
        let ch = self.limits.thermal.clear_hold;
        let flags = s.throttle.ok();
        let v = s.supply_voltage.ok().filter(|v| v.is_finite());
        let flag_now = flags.is_some_and(|f| f.under_voltage);
        let on = flag_now || v.is_some_and(|v| v < p.undervoltage_v);
        let off = !flag_now && v.is_none_or(|v| v >= p.undervoltage_v + p.hysteresis_v);
        let c = cx.st.uv.update(on, off, p.undervoltage_hold, ch, cx.now);
        cx.follow(c, AlertCode::UnderVoltage, Severity::Warning, || match v {
            Some(v) => format!(
                "supply at {v:.2}, under-voltage (threshold {:.2}); power-hungry commands refused",
                p.undervoltage_v
            ),
            None => "firmware reports under-voltage; power-hungry commands refused".to_owned(),
        });
        if let Some(f) = flags {
            let c = cx.st.uv_sticky.update(
                f.under_voltage_occurred,
                !f.under_voltage_occurred,
                Duration::ZERO,
                Duration::ZERO,
                cx.now,
            );
            cx.follow(c, AlertCode::UnderVoltageOccurred, Severity::Info, || {
                "firmware reports under-voltage since the last read (sticky flag)".to_owned()
            });
        }
        if let Some(v) = v {
            let c = cx.st.brownout.update(
                v < p.brownout_v,
                v >= p.brownout_v + p.hysteresis_v,
                Duration::ZERO,
                ch,
                cx.now,
            );
            cx.follow(c, AlertCode::BrownOut, Severity::Critical, || {
                format!(
                    "supply at {v:.2}, below the brown-out threshold {:.2}",
                    p.brownout_v
                )
            });
        }
        cx.st.causes.set(Causes::POWER, cx.st.brownout.active);
        if let Reading::Ok(b) = s.battery {
            let charging = matches!(b.state, ChargeState::Charging | ChargeState::Full);
            let lvl = b.level;
            let hy = p.battery_hysteresis.get();
            let c = cx.st.batt_low.update(
                !charging && lvl <= p.battery_warn,
                charging || lvl.get() > p.battery_warn.get() + hy,
                Duration::ZERO,
                ch,
                cx.now,
            );
            cx.follow(c, AlertCode::BatteryLow, Severity::Warning, || {
                format!("battery at {lvl:.0}, below {:.0}", p.battery_warn)
            });
            let c = cx.st.batt_crit.update(
                !charging && lvl <= p.battery_critical,
                charging || lvl.get() > p.battery_critical.get() + hy,
                Duration::ZERO,
                ch,
                cx.now,
            );
            cx.follow(c, AlertCode::BatteryCritical, Severity::Critical, || {
                format!(
                    "battery at {lvl:.0}, below {:.0}; throttling workloads",
                    p.battery_critical
                )
            });
        }
        cx.st.causes.set(Causes::BATTERY, cx.st.batt_crit.active);
        let (on, off) = match s.main_power_available {
            Reading::Ok(avail) => (!avail, avail),
            _ => (false, false),
        };
        let c = cx.st.main_lost.update(on, off, Duration::ZERO, ch, cx.now);
        cx.follow(c, AlertCode::MainPowerLost, Severity::Warning, || {
            "main power supply lost".to_owned()
        });
        let source = s.power_source.ok();
        if cx.st.main_lost.active
            && p.failover
            && !cx.st.failed_over
            && source == Some(PowerSourceKind::Main)
        {
            let battery_usable = match s.battery {
                Reading::Ok(b) => b.level > p.battery_critical,
                _ => false,
            };
            if battery_usable {
                cx.st.failed_over = true;
                cx.d.actions.push(Action::SelectPowerSource {
                    source: PowerSourceKind::Battery,
                });
            }
        }
        if !cx.st.main_lost.active && cx.st.failed_over {
            cx.st.failed_over = false;
            if source == Some(PowerSourceKind::Battery) {
                cx.d.actions.push(Action::SelectPowerSource {
                    source: PowerSourceKind::Main,
                });
            }
        }
    }

    fn security(&self, cx: &mut Ctx<'_>, s: &Sample) {
        let sp = &self.limits.security;
        let ch = self.limits.thermal.clear_hold;
        let onoff = |v: Option<bool>| match v {
            Some(a) => (a, !a),
            None => (false, false),
        };
        let (on, off) = onoff(s.security_active(SecurityKind::CaseSwitch));
        let c = cx
            .st
            .case
            .update(on, off, Duration::ZERO, Duration::ZERO, cx.now);
        let lock = sp.lock_gpio_when_case_open;
        cx.follow(c, AlertCode::CaseOpen, sp.case_open_severity, || {
            if lock {
                "enclosure opened; GPIO outputs locked".to_owned()
            } else {
                "enclosure opened".to_owned()
            }
        });
        let want_lock = lock && cx.st.case.active;
        if want_lock != cx.st.gpio_locked {
            cx.st.gpio_locked = want_lock;
            cx.d.actions.push(if want_lock {
                Action::LockGpioOutputs
            } else {
                Action::UnlockGpioOutputs
            });
        }
        let (on, off) = onoff(s.security_active(SecurityKind::Tamper));
        let c = cx.st.tamper.update(on, off, Duration::ZERO, ch, cx.now);
        cx.follow(c, AlertCode::Tamper, sp.tamper_severity, || {
            "tamper loop broken".to_owned()
        });
        let motion = s.security_active(SecurityKind::Motion);
        let hour = hour_utc(cx.now);
        let quiet = sp.quiet_hours.iter().any(|q| q.contains(hour));
        let c = cx.st.motion.update(
            motion == Some(true) && quiet,
            motion == Some(false) || !quiet,
            Duration::ZERO,
            sp.motion_clear_after,
            cx.now,
        );
        cx.follow(c, AlertCode::MotionQuietHours, sp.motion_severity, || {
            format!("motion detected during quiet hours ({hour:02}:00 UTC)")
        });
    }

    fn update_facts(&self, cx: &mut Ctx<'_>, s: &Sample, temp: Option<Celsius>) {
        let st = &mut *cx.st;
        let f = &mut st.facts;
        f.cpu_temp = if st.untrusted.active { None } else { temp };
        f.supply_v = s.supply_voltage.ok();
        f.battery = s.battery.ok().map(|b| b.level);
        f.cpu_load = s.cpu_load.ok();
        f.fan_duty = st.fan_target;
        f.case_open = s.security_active(SecurityKind::CaseSwitch);
        f.tamper = s.security_active(SecurityKind::Tamper);
        f.motion = s.security_active(SecurityKind::Motion);
        f.under_voltage = st.uv.active || st.brownout.active;
        f.on_battery = s.power_source.ok() == Some(PowerSourceKind::Battery);
        f.main_available = s.main_power_available.ok().unwrap_or(true);
        f.throttled = st.throttled;
        f.hour_utc = hour_utc(cx.now);
    }

    fn custom(&self, cx: &mut Ctx<'_>) {
        let mut throttle = false;
        for (rule, latch_i) in self.rules.iter().zip(0..) {
            let v = rule.expr.eval(&cx.st.facts, None);
            let hold = rule.rule.hold.unwrap_or(Duration::ZERO);
            let c = match v {
                Some(b) => cx.st.custom[latch_i].update(
                    b,
                    !b,
                    hold,
                    self.limits.thermal.clear_hold,
                    cx.now,
                ),
                None => None,
            };
            let r = &rule.rule;
            cx.follow(c, AlertCode::Custom(r.id.clone()), r.severity, || {
                r.message
                    .clone()
                    .unwrap_or_else(|| format!("rule {} holds: {}", r.id, r.when))
            });
            throttle |= r.throttle && cx.st.custom[latch_i].active;
        }
        cx.st.causes.set(Causes::CUSTOM, throttle);
    }

    fn throttle(&self, cx: &mut Ctx<'_>, temp: Option<Celsius>) {
        let st = &mut *cx.st;
        st.causes.set(Causes::THERMAL, st.throttle.active);
        // A stalled fan throttles once the board is warm (or its temperature is unknown).
        let warm = st.warn.active || temp.is_none() || st.untrusted.active;
        st.causes.set(Causes::FAN_STALL, st.stalled && warm);
        let want = st.causes.0 != 0;
        if want && !st.throttled {
            st.throttled = true;
            cx.d.actions.push(Action::ThrottleWorkloads {
                reason: st.causes.describe(),
            });
        } else if !want && st.throttled {
            st.throttled = false;
            cx.d.actions.push(Action::ResumeWorkloads);
        }
        st.facts.throttled = st.throttled;
    }
}
