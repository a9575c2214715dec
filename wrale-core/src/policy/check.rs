//! `check`, `admit` and the two-phase `validate` / `confirm` of commands.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

use super::cel::Expr;
use super::curve;
use super::layer::{CommandMatch, Condition};
use super::set::PolicySet;
use super::state::{Facts, OwnedTarget, Pending, RateBucket, SafetyState};
use crate::error::{Refused, RuleId};
use crate::model::{Command, CommandKind, CommandRequest, PowerSourceKind};
use crate::time::Timestamp;

/// The verdict on a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The command may run.
    Allowed,
    /// The command is refused.
    Refused {
        /// The rule that refused.
        rule: RuleId,
        /// Why, with the values involved.
        reason: String,
    },
}

impl Verdict {
    /// Whether the command may run.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed)
    }

    /// As a `Result`.
    pub fn into_result(self) -> Result<(), Refused> {
        match self {
            Verdict::Allowed => Ok(()),
            Verdict::Refused { rule, reason } => Err(Refused { rule, reason }),
        }
    }
}

impl From<Result<(), Refused>> for Verdict {
    fn from(r: Result<(), Refused>) -> Self {
        match r {
            Ok(()) => Verdict::Allowed,
            Err(Refused { rule, reason }) => Verdict::Refused { rule, reason },
        }
    }
}

/// A short-lived token confirming a validated command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConfirmToken {
    /// Token id (deterministic: a counter in the state).
    pub id: u64,
    /// After this the token is refused.
    pub expires_at: Timestamp,
}

/// The first phase of a two-phase command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// The verdict now.
    pub verdict: Verdict,
    /// A token to confirm with, when allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<ConfirmToken>,
}

/// Most pending confirmations kept; the oldest is dropped beyond this.
const MAX_PENDING: usize = 32;

fn refuse(rule: &'static str, reason: String) -> Result<(), Refused> {
    Err(Refused::new(RuleId::builtin(rule), reason))
}

fn is_power_hungry(c: &Command) -> bool {
    c.kind().is_power_hungry() || matches!(c, Command::EnableCharging { enabled: true })
}

/// Whether `m` matches command `c`: every field that is set must apply and match.
fn matches(m: &CommandMatch, c: &Command) -> bool {
    if m.command != c.kind() {
        return false;
    }
    let (pin, level, fan, workload, source, duty, profile) = match c {
        Command::SetGpio { pin, level } => (Some(*pin), Some(*level), None, None, None, None, None),
        Command::SetPwm { pin, duty, .. } => {
            (Some(*pin), None, None, None, None, Some(*duty), None)
        }
        Command::SetFanDuty { fan, duty } => (
            None,
            None,
            Some(fan.as_str()),
            None,
            None,
            Some(*duty),
            None,
        ),
        Command::SetFanProfile { profile } => (None, None, None, None, None, None, Some(*profile)),
        Command::SelectPowerSource { source } => {
            (None, None, None, None, Some(*source), None, None)
        }
        Command::StartWorkload { workload }
        | Command::ThrottleWorkload { workload }
        | Command::ResumeWorkload { workload } => {
            (None, None, None, Some(workload.as_str()), None, None, None)
        }
        _ => (None, None, None, None, None, None, None),
    };
    fn eq<T: PartialEq>(want: &Option<T>, have: Option<T>) -> bool {
        match want {
            None => true,
            Some(w) => have.as_ref() == Some(w),
        }
    }
    eq(&m.pin, pin)
        && eq(&m.level, level)
        && eq(&m.fan.as_deref(), fan)
        && eq(&m.workload.as_deref(), workload)
        && eq(&m.source, source)
        && m.duty_below_pct.is_none_or(|x| duty.is_some_and(|d| d < x))
        && m.duty_above_pct.is_none_or(|x| duty.is_some_and(|d| d > x))
        && m.profile_below
            .is_none_or(|x| profile.is_some_and(|p| p < x))
}

/// Whether a condition holds. Unknown facts count as holding (fail closed).
fn holds(c: &Condition, expr: Option<&Expr>, f: &Facts, kind: CommandKind) -> bool {
    fn flag(want: Option<bool>, have: Option<bool>) -> bool {
        match want {
            None => true,
            Some(w) => have.is_none_or(|h| h == w),
        }
    }
    flag(c.case_open, f.case_open)
        && flag(c.tamper, f.tamper)
        && flag(c.motion, f.motion)
        && c.temp_above_c
            .is_none_or(|x| f.cpu_temp.is_none_or(|t| t > x))
        && c.temp_below_c
            .is_none_or(|x| f.cpu_temp.is_none_or(|t| t < x))
        && c.under_voltage.is_none_or(|w| f.under_voltage == w)
        && c.on_battery.is_none_or(|w| f.on_battery == w)
        && c.throttled.is_none_or(|w| f.throttled == w)
        && c.battery_below_pct
            .is_none_or(|x| f.battery.is_none_or(|b| b < x))
        && expr.is_none_or(|e| e.eval(f, Some(kind)).unwrap_or(true))
}

impl PolicySet {
    /// Checks a command against the safety floor, the layers' interlocks and the
    /// rate limits, in the device's current state. Pure: the state is not changed
    /// (use [`admit`](Self::admit) to also record an accepted command).
    pub fn check(&self, st: &SafetyState, req: &CommandRequest, now: Timestamp) -> Verdict {
        self.check_command(st, &req.command, now).into()
    }

    fn check_command(&self, st: &SafetyState, c: &Command, now: Timestamp) -> Result<(), Refused> {
        let l = &self.limits;
        let kind = c.kind();
        if st.shutdown_issued && kind != CommandKind::Shutdown {
            return refuse(
                "safety.shutting_down",
                "an emergency shutdown is in progress".into(),
            );
        }
        match c {
            Command::SetGpio { pin, .. } | Command::SetPwm { pin, .. } => {
                if *pin > l.commands.max_gpio {
                    return refuse(
                        "gpio.invalid_pin",
                        format!(
                            "GPIO {pin} does not exist (highest is {})",
                            l.commands.max_gpio
                        ),
                    );
                }
                if l.commands.reserved_pins.contains(pin) {
                    return refuse(
                        "gpio.reserved_pin",
                        format!("GPIO {pin} is wired to the fan or a security/voltage input"),
                    );
                }
                if st.gpio_locked {
                    return refuse(
                        "security.gpio_locked",
                        "GPIO outputs are locked while the enclosure is open".into(),
                    );
                }
            }
            Command::SetFanDuty { duty, .. } => {
                let req = self.required_duty(st);
                if *duty < req {
                    let why = match st.facts.cpu_temp {
                        Some(t) if !st.untrusted.active => format!(
                            "the {} fan curve needs at least {req:.0} at {t:.1}",
                            st.profile
                        ),
                        _ => format!(
                            "the temperature is untrusted, so the fan stays at its safe duty {req:.0}"
                        ),
                    };
                    return refuse(
                        "thermal.fan_below_curve",
                        format!("{duty:.0} refused: {why}"),
                    );
                }
            }
            Command::SetFanProfile { profile } if *profile < l.fan.min_profile => {
                return refuse(
                    "fan.min_profile",
                    format!(
                        "profile {profile} is quieter than the policy's minimum {}",
                        l.fan.min_profile
                    ),
                );
            }
            Command::SelectPowerSource {
                source: PowerSourceKind::Main,
            } if !st.facts.main_available => {
                return refuse(
                    "power.source_unavailable",
                    "the main supply is not available".into(),
                );
            }
            _ => {}
        }
        if is_power_hungry(c) {
            if st.uv.active || st.brownout.active {
                return refuse(
                    "power.under_voltage",
                    format!("{kind} draws more power and the supply is in under-voltage"),
                );
            }
            if st.throttled
                && matches!(
                    kind,
                    CommandKind::StartWorkload | CommandKind::ResumeWorkload
                )
            {
                return refuse(
                    "safety.throttled",
                    format!(
                        "workloads are throttled by the safety engine ({})",
                        st.causes.describe()
                    ),
                );
            }
        }
        for ci in &self.interlocks {
            let i = &ci.interlock;
            if matches(&i.deny, c) && holds(&i.when, ci.expr.as_ref(), &st.facts, kind) {
                return Err(Refused::new(
                    RuleId::new(format!("interlock:{}", i.id)),
                    i.reason
                        .clone()
                        .unwrap_or_else(|| format!("{kind} denied by interlock {}", i.id)),
                ));
            }
        }
        let target = c.target();
        for lim in self.rate_limits.iter().filter(|r| r.command == kind) {
            let since = now - lim.per;
            let n = st
                .rate
                .iter()
                .find(|b| b.kind == kind && b.target.matches(target))
                .map_or(0, |b| b.times.iter().filter(|t| **t > since).count());
            if n >= lim.max as usize {
                return refuse(
                    "rate_limit",
                    format!(
                        "{kind} on {target}: at most {} per {}",
                        lim.max,
                        humantime::format_duration(lim.per)
                    ),
                );
            }
        }
        Ok(())
    }

    /// Checks a command and, if allowed, records it in the state (rate-limit
    /// history, fan profile or override) so the next [`evaluate`](Self::evaluate)
    /// follows it. The caller then executes it through the HAL.
    pub fn admit(&self, st: &mut SafetyState, req: &CommandRequest, now: Timestamp) -> Verdict {
        if let Err(r) = self.check_command(st, &req.command, now) {
            return Err(r).into();
        }
        self.record(st, &req.command, now);
        Verdict::Allowed
    }

    fn record(&self, st: &mut SafetyState, c: &Command, now: Timestamp) {
        let kind = c.kind();
        let window = self
            .rate_limits
            .iter()
            .filter(|r| r.command == kind)
            .map(|r| r.per)
            .max();
        if let Some(window) = window {
            let target = c.target();
            let i = match st
                .rate
                .iter()
                .position(|b| b.kind == kind && b.target.matches(target))
            {
                Some(i) => i,
                None => {
                    st.rate.push(RateBucket {
                        kind,
                        target: OwnedTarget::from_target(target),
                        times: VecDeque::new(),
                    });
                    st.rate.len() - 1
                }
            };
            let b = &mut st.rate[i];
            let since = now - window;
            while b.times.front().is_some_and(|t| *t <= since) {
                b.times.pop_front();
            }
            b.times.push_back(now);
        }
        match c {
            Command::SetFanDuty { duty, .. } => {
                st.fan_override = Some(*duty);
                st.fan_target = st.fan_target.max(*duty);
            }
            Command::SetFanProfile { profile } => {
                st.profile = *profile;
                st.fan_override = None;
                st.fan_step = st
                    .facts
                    .cpu_temp
                    .map_or(0, |t| curve::engaged_step(*profile, t));
            }
            _ => {}
        }
    }

    /// Phase one of a two-phase command: the verdict now and, if allowed, a
    /// token valid for the policy's `confirm_ttl`. Nothing is executed.
    pub fn validate(
        &self,
        st: &mut SafetyState,
        req: &CommandRequest,
        now: Timestamp,
    ) -> Validation {
        let verdict: Verdict = self.check_command(st, &req.command, now).into();
        if !verdict.is_allowed() {
            return Validation {
                verdict,
                token: None,
            };
        }
        st.pending.retain(|p| p.expires_at >= now);
        if st.pending.len() >= MAX_PENDING {
            st.pending.remove(0);
        }
        let token = ConfirmToken {
            id: st.next_token,
            expires_at: now + self.limits.commands.confirm_ttl,
        };
        st.next_token += 1;
        st.pending.push(Pending {
            token: token.id,
            expires_at: token.expires_at,
            request: req.clone(),
        });
        Validation {
            verdict,
            token: Some(token),
        }
    }

    /// Phase two: executes (admits) the validated command only if the token is
    /// known and unexpired and the state *still* allows the command. A token is
    /// single-use.
    pub fn confirm(
        &self,
        st: &mut SafetyState,
        token: u64,
        now: Timestamp,
    ) -> Result<CommandRequest, Refused> {
        let Some(i) = st.pending.iter().position(|p| p.token == token) else {
            return Err(Refused::new(
                RuleId::builtin("confirm.unknown_token"),
                format!("token {token} is unknown or already used"),
            ));
        };
        let p = st.pending.remove(i);
        if now > p.expires_at {
            return Err(Refused::new(
                RuleId::builtin("confirm.expired"),
                format!("token {token} expired at {}", p.expires_at),
            ));
        }
        self.admit(st, &p.request, now).into_result()?;
        Ok(p.request)
    }
}
