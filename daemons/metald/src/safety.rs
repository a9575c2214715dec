//! The seam between the sampling loop and the safety/policy engine.
//!
//! Every sample and every hardware event goes through a [`SafetyHook`], which
//! answers with [`Action`]s that the sampling loop applies through the HAL at once;
//! every command (local API, later the fleet) is checked by the same hook before it
//! touches hardware. The hook decides; metald only applies.
//!
//! metald runs [`PolicyHook`], the policy engine of `wrale-core`
//! ([`PolicySet::evaluate`] and [`PolicySet::admit`]) with the board profile's
//! built-in policy. [`FailSafeHook`] is a minimal stand-alone hook (fans to the safe
//! duty while the CPU temperature cannot be trusted) for tests and embedding.

use serde::Serialize;
use wrale_core::Timestamp;
use wrale_core::board::BoardProfile;
use wrale_core::model::{Actor, PowerSourceKind, Reading, Sample};
use wrale_core::policy::{self, AlertChange, PolicySet, SafetyState};
use wrale_core::units::Percent;
use wrale_hal::HalEvent;

/// How serious an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For information.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

/// An active alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Stable id (`cpu_temperature_unreadable`, `security:case`).
    pub id: String,
    /// How serious.
    pub severity: Severity,
    /// Human-readable text.
    pub message: String,
    /// When it was raised.
    pub since: Timestamp,
}

/// Something the safety engine wants done, applied by the sampling loop.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Sets a fan's duty (`fan: None` means every fan).
    SetFanDuty {
        /// Fan id, or every fan.
        fan: Option<String>,
        /// The duty.
        #[serde(rename = "duty_pct")]
        duty: Percent,
        /// Why.
        reason: String,
    },
    /// Throttles the workloads that allow it.
    ThrottleWorkloads {
        /// Why.
        reason: String,
    },
    /// Lifts a throttle.
    ResumeWorkloads,
    /// Raises (or refreshes) an alert.
    RaiseAlert(Alert),
    /// Clears an alert.
    ClearAlert {
        /// The alert's id.
        id: String,
    },
    /// Switches the power source.
    SelectPowerSource {
        /// The source.
        source: PowerSourceKind,
    },
    /// Drive no GPIO output until unlocked (GPIO commands are refused meanwhile).
    LockGpioOutputs,
    /// Lifts the GPIO lock.
    UnlockGpioOutputs,
    /// Powers the device off now: fans to safe duty, workloads stopped, then the
    /// configured shutdown command (on `sim`, the simulated board powers off).
    /// Deciding *when* (the hold time of a critical condition) is the engine's job.
    EmergencyShutdown {
        /// Why.
        reason: String,
    },
}

/// A command to validate and apply: `wrale_core`'s command (the engine's, the
/// audit log's and the fleet's), tagged with `"type"`.
pub use wrale_core::model::Command;
use wrale_core::model::CommandRequest;

/// The engine's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// Refused: the command would break a safety rule.
    Refused {
        /// The rule.
        rule: String,
        /// Why, for a human.
        reason: String,
    },
}

/// The answer to phase one of a two-phase command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validation {
    /// The verdict now.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The token to confirm with, when allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
}

/// A confirmation token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Token {
    /// Pass it to the confirm call.
    pub id: u64,
    /// When it expires (the board's clock).
    pub expires_at: Timestamp,
}

/// What the hook gets besides the sample.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The effective board profile (thresholds, fan safe duty).
    pub profile: &'a BoardProfile,
    /// Now, on the board's clock.
    pub now: Timestamp,
}

/// The safety engine as metald sees it. Implementations are pure decisions: no I/O.
pub trait SafetyHook: Send + 'static {
    /// Short name for logs and `/api/v1/state`.
    fn name(&self) -> &'static str;

    /// Decides on a fresh sample.
    fn on_sample(&mut self, sample: &Sample, ctx: &Context<'_>) -> Vec<Action>;

    /// Decides on a hardware event (tamper switch, GPIO edge, power change).
    fn on_event(&mut self, event: &HalEvent, ctx: &Context<'_>) -> Vec<Action>;

    /// Validates a command from `actor` (the API token's name) against the latest
    /// sample. An allowed command is applied at once by the caller, so the hook may
    /// record it (a fan override the next evaluation follows).
    fn check_command(
        &mut self,
        command: &Command,
        actor: &str,
        latest: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Verdict;

    /// Validates a whole request (who asked, why, what). The default checks the
    /// command with [`check_command`](Self::check_command) and the actor's name.
    fn check_request(
        &mut self,
        req: &CommandRequest,
        latest: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Verdict {
        self.check_command(&req.command, &actor_name(&req.actor), latest, ctx)
    }

    /// Checks a request without recording anything (no rate-limit history, no fan
    /// override): the rule a command would break, asked before metald's own
    /// refusals (safe mode) so a refusal names the engine's rule first. The
    /// default allows; the command is checked for real by
    /// [`check_request`](Self::check_request).
    fn peek_request(
        &self,
        req: &CommandRequest,
        latest: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Verdict {
        let _ = (req, latest, ctx);
        Verdict::Allowed
    }

    /// Phase one for a whole request; the default calls
    /// [`validate_command`](Self::validate_command).
    fn validate_request(
        &mut self,
        req: &CommandRequest,
        latest: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Validation {
        self.validate_command(&req.command, &actor_name(&req.actor), latest, ctx)
    }

    /// Why the engine holds the outputs at their fail-safe state because of a
    /// hardware fault (an untrusted or unreadable sensor), if it does now. metald
    /// enters safe mode while this answers `Some`.
    fn fault(&self) -> Option<String> {
        None
    }

    /// Phase one of a two-phase command: the verdict and, if allowed, a token to
    /// confirm it with. Nothing is applied. Hooks without two-phase support refuse.
    fn validate_command(
        &mut self,
        command: &Command,
        actor: &str,
        latest: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Validation {
        let _ = (command, actor, latest, ctx);
        Validation {
            verdict: Verdict::Refused {
                rule: "two_phase.unsupported".into(),
                reason: format!("the {} engine has no two-phase commands", self.name()),
            },
            token: None,
        }
    }

    /// Phase two: the validated command to apply now, if the token is known,
    /// unexpired and the state still allows it; else the refusal.
    fn confirm_command(&mut self, token: u64, ctx: &Context<'_>) -> Result<Command, Verdict> {
        self.confirm_request(token, ctx).map(|r| r.command)
    }

    /// Phase two with the whole validated request (who asked and why).
    fn confirm_request(
        &mut self,
        token: u64,
        ctx: &Context<'_>,
    ) -> Result<CommandRequest, Verdict> {
        let _ = ctx;
        Err(Verdict::Refused {
            rule: "confirm.unknown_token".into(),
            reason: format!("token {token} is unknown"),
        })
    }

    /// Puts a new assembled policy in force (the fleet's desired config as a
    /// policy layer on the board floor); the engine's state carries over. Hooks
    /// without a policy engine refuse.
    fn set_policy(&mut self, policy: PolicySet) -> Result<(), String> {
        let _ = policy;
        Err(format!("the {} engine takes no policy", self.name()))
    }

    /// The fail-safe state of every output: applied on exit, and whenever the
    /// engine stops answering (panics).
    fn fail_safe(&self, ctx: &Context<'_>) -> Vec<Action> {
        vec![Action::SetFanDuty {
            fan: None,
            duty: ctx.profile.fan.safe_duty_pct,
            reason: "fail-safe".into(),
        }]
    }
}

/// The interim engine: fail-safe only (see the module docs).
#[derive(Debug, Default)]
pub struct FailSafeHook {
    sensor_alert: bool,
}

const SENSOR_ALERT: &str = "cpu_temperature_unreadable";

impl SafetyHook for FailSafeHook {
    fn name(&self) -> &'static str {
        "fail-safe"
    }

    fn on_sample(&mut self, sample: &Sample, ctx: &Context<'_>) -> Vec<Action> {
        match sample.cpu_temp() {
            Reading::Ok(_) => {
                if std::mem::take(&mut self.sensor_alert) {
                    vec![Action::ClearAlert {
                        id: SENSOR_ALERT.into(),
                    }]
                } else {
                    Vec::new()
                }
            }
            bad => {
                let what = match bad {
                    Reading::Fault(kind) => format!("faulted ({kind})"),
                    _ => "missing".into(),
                };
                let mut actions = self.fail_safe(ctx);
                if let Some(Action::SetFanDuty { reason, .. }) = actions.first_mut() {
                    *reason = format!("CPU temperature {what}");
                }
                if !self.sensor_alert {
                    self.sensor_alert = true;
                    actions.push(Action::RaiseAlert(Alert {
                        id: SENSOR_ALERT.into(),
                        severity: Severity::Critical,
                        message: format!(
                            "CPU temperature {what}: fans held at the safe duty of {:.0}",
                            ctx.profile.fan.safe_duty_pct
                        ),
                        since: ctx.now,
                    }));
                }
                actions
            }
        }
    }

    fn on_event(&mut self, event: &HalEvent, ctx: &Context<'_>) -> Vec<Action> {
        match event {
            HalEvent::Security {
                id, kind, active, ..
            } => {
                let alert_id = format!("security:{id}");
                if *active {
                    vec![Action::RaiseAlert(Alert {
                        id: alert_id,
                        severity: Severity::Warning,
                        message: format!("{kind:?} input {id:?} is active"),
                        since: ctx.now,
                    })]
                } else {
                    vec![Action::ClearAlert { id: alert_id }]
                }
            }
            HalEvent::UnderVoltage { active, .. } => {
                let id = "under_voltage".to_owned();
                if *active {
                    vec![Action::RaiseAlert(Alert {
                        id,
                        severity: Severity::Warning,
                        message: "supply under-voltage".into(),
                        since: ctx.now,
                    })]
                } else {
                    vec![Action::ClearAlert { id }]
                }
            }
            _ => Vec::new(),
        }
    }

    fn fault(&self) -> Option<String> {
        self.sensor_alert
            .then(|| "the CPU temperature cannot be read".to_owned())
    }

    fn check_command(
        &mut self,
        command: &Command,
        _actor: &str,
        latest: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Verdict {
        match command {
            Command::SetFanDuty { duty, .. } => {
                let safe = ctx.profile.fan.safe_duty_pct;
                if *duty >= safe {
                    return Verdict::Allowed;
                }
                match latest.map(Sample::cpu_temp) {
                    Some(Reading::Ok(t)) if t < ctx.profile.thermal.warn_c => Verdict::Allowed,
                    Some(Reading::Ok(t)) => Verdict::Refused {
                        rule: "fail_safe.fan_minimum_when_hot".into(),
                        reason: format!(
                            "CPU is at {t:.1} (warning at {:.1}): the fan may not go below {safe:.0}",
                            ctx.profile.thermal.warn_c
                        ),
                    },
                    _ => Verdict::Refused {
                        rule: "fail_safe.fan_minimum_without_temperature".into(),
                        reason: format!(
                            "the CPU temperature is unknown: the fan may not go below {safe:.0}"
                        ),
                    },
                }
            }
            _ => Verdict::Allowed,
        }
    }
}

/// The name an actor is checked and logged under (`ops`, `user:ada`, `fleet`).
pub fn actor_name(actor: &Actor) -> String {
    match actor {
        Actor::LocalOperator(name) => name.clone(),
        other => other.to_string(),
    }
}

fn request(command: &Command, actor: &str) -> CommandRequest {
    CommandRequest::new(
        Actor::LocalOperator(actor.to_owned()),
        "local API",
        command.clone(),
    )
}

fn verdict(v: policy::Verdict) -> Verdict {
    match v {
        policy::Verdict::Allowed => Verdict::Allowed,
        policy::Verdict::Refused { rule, reason } => Verdict::Refused {
            rule: rule.to_string(),
            reason,
        },
    }
}

/// The policy engine of `wrale-core` as metald's safety hook.
#[derive(Debug)]
pub struct PolicyHook {
    policy: PolicySet,
    state: SafetyState,
}

impl PolicyHook {
    /// The built-in policy of a board (its profile's thresholds and fan curve).
    pub fn for_board(profile: &BoardProfile) -> Self {
        Self::new(PolicySet::for_board(profile))
    }

    /// A hook for an assembled policy set.
    pub fn new(policy: PolicySet) -> Self {
        let state = SafetyState::new(&policy);
        Self { policy, state }
    }

    /// The engine's state (thermal level, fan target, throttle, latches).
    pub fn state(&self) -> &SafetyState {
        &self.state
    }

    fn convert(decision: policy::Decision) -> Vec<Action> {
        let mut out = Vec::with_capacity(decision.actions.len() + decision.alerts.len());
        for a in decision.actions {
            out.push(match a {
                policy::Action::SetFanDuty { fan, duty } => Action::SetFanDuty {
                    fan: Some(fan),
                    duty,
                    reason: "policy".into(),
                },
                policy::Action::ThrottleWorkloads { reason } => {
                    Action::ThrottleWorkloads { reason }
                }
                policy::Action::ResumeWorkloads => Action::ResumeWorkloads,
                policy::Action::SelectPowerSource { source } => {
                    Action::SelectPowerSource { source }
                }
                policy::Action::EmergencyShutdown { reason } => {
                    Action::EmergencyShutdown { reason }
                }
                policy::Action::LockGpioOutputs => Action::LockGpioOutputs,
                policy::Action::UnlockGpioOutputs => Action::UnlockGpioOutputs,
            });
        }
        for change in decision.alerts {
            out.push(match change {
                AlertChange::Raised(a) => Action::RaiseAlert(Alert {
                    id: a.code.as_str().to_owned(),
                    severity: match a.severity {
                        wrale_core::model::Severity::Info => Severity::Info,
                        wrale_core::model::Severity::Warning => Severity::Warning,
                        wrale_core::model::Severity::Critical => Severity::Critical,
                    },
                    message: a.message,
                    since: a.since,
                }),
                AlertChange::Cleared(a) => Action::ClearAlert {
                    id: a.code.as_str().to_owned(),
                },
            });
        }
        out
    }
}

impl SafetyHook for PolicyHook {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn on_sample(&mut self, sample: &Sample, ctx: &Context<'_>) -> Vec<Action> {
        Self::convert(self.policy.evaluate(&mut self.state, sample, ctx.now))
    }

    /// The engine reads security inputs and power from samples; the sampling loop
    /// takes a sample at once after such an event, so nothing to do here.
    fn on_event(&mut self, _event: &HalEvent, _ctx: &Context<'_>) -> Vec<Action> {
        Vec::new()
    }

    fn check_command(
        &mut self,
        command: &Command,
        actor: &str,
        latest: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Verdict {
        self.check_request(&request(command, actor), latest, ctx)
    }

    fn check_request(
        &mut self,
        req: &CommandRequest,
        _latest: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Verdict {
        verdict(self.policy.admit(&mut self.state, req, ctx.now))
    }

    fn peek_request(
        &self,
        req: &CommandRequest,
        _latest: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Verdict {
        verdict(self.policy.check(&self.state, req, ctx.now))
    }

    fn fault(&self) -> Option<String> {
        self.state.fail_safe().then(|| {
            "the CPU temperature is untrusted (faulted, missing, stuck or implausible)".to_owned()
        })
    }

    fn validate_command(
        &mut self,
        command: &Command,
        actor: &str,
        latest: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Validation {
        self.validate_request(&request(command, actor), latest, ctx)
    }

    fn validate_request(
        &mut self,
        req: &CommandRequest,
        _latest: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Validation {
        let v = self.policy.validate(&mut self.state, req, ctx.now);
        Validation {
            verdict: verdict(v.verdict),
            token: v.token.map(|t| Token {
                id: t.id,
                expires_at: t.expires_at,
            }),
        }
    }

    fn set_policy(&mut self, policy: PolicySet) -> Result<(), String> {
        self.policy = policy;
        Ok(())
    }

    fn confirm_request(
        &mut self,
        token: u64,
        ctx: &Context<'_>,
    ) -> Result<CommandRequest, Verdict> {
        self.policy
            .confirm(&mut self.state, token, ctx.now)
            .map_err(|r| Verdict::Refused {
                rule: r.rule.to_string(),
                reason: r.reason,
            })
    }

    fn fail_safe(&self, ctx: &Context<'_>) -> Vec<Action> {
        vec![Action::SetFanDuty {
            fan: None,
            duty: self
                .policy
                .limits()
                .fan
                .safe_duty
                .max(ctx.profile.fan.safe_duty_pct),
            reason: "fail-safe".into(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrale_core::BoardModel;
    use wrale_core::model::{HalErrorKind, SensorKind, TemperatureReading};
    use wrale_core::units::Celsius;

    fn sample(temp: Reading<Celsius>) -> Sample {
        Sample {
            temperatures: vec![TemperatureReading {
                id: "cpu".into(),
                kind: SensorKind::Cpu,
                value: temp,
            }],
            ..Sample::default()
        }
    }

    #[test]
    fn sensor_fault_drives_fans_to_safe_duty_and_alerts_once() {
        let profile = BoardProfile::builtin(BoardModel::Pi4B);
        let ctx = Context {
            profile: &profile,
            now: Timestamp::from_secs(1),
        };
        let mut hook = FailSafeHook::default();
        assert!(
            hook.on_sample(&sample(Reading::Ok(Celsius(50.0))), &ctx)
                .is_empty()
        );
        let a = hook.on_sample(&sample(Reading::Fault(HalErrorKind::Bus)), &ctx);
        assert!(
            matches!(&a[0], Action::SetFanDuty { fan: None, duty, .. } if *duty == profile.fan.safe_duty_pct)
        );
        assert!(
            matches!(&a[1], Action::RaiseAlert(al) if al.id == SENSOR_ALERT && al.severity == Severity::Critical)
        );
        let again = hook.on_sample(&sample(Reading::Missing), &ctx);
        assert_eq!(again.len(), 1, "alert raised once: {again:?}");
        let ok = hook.on_sample(&sample(Reading::Ok(Celsius(50.0))), &ctx);
        assert_eq!(
            ok,
            vec![Action::ClearAlert {
                id: SENSOR_ALERT.into()
            }]
        );
    }

    #[test]
    fn fan_commands_below_safe_duty_need_a_cool_known_temperature() {
        let profile = BoardProfile::builtin(BoardModel::Pi4B);
        let ctx = Context {
            profile: &profile,
            now: Timestamp::EPOCH,
        };
        let mut hook = FailSafeHook::default();
        let low = Command::SetFanDuty {
            fan: "fan0".into(),
            duty: Percent::ZERO,
        };
        let full = Command::SetFanDuty {
            fan: "fan0".into(),
            duty: Percent::FULL,
        };
        let cool = sample(Reading::Ok(Celsius(40.0)));
        let hot = sample(Reading::Ok(profile.thermal.warn_c));
        let faulty = sample(Reading::Fault(HalErrorKind::SensorFault));
        assert_eq!(
            hook.check_command(&low, "t", Some(&cool), &ctx),
            Verdict::Allowed
        );
        assert!(
            matches!(hook.check_command(&low, "t", Some(&hot), &ctx), Verdict::Refused { rule, .. } if rule.contains("hot"))
        );
        assert!(matches!(
            hook.check_command(&low, "t", Some(&faulty), &ctx),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            hook.check_command(&low, "t", None, &ctx),
            Verdict::Refused { .. }
        ));
        assert_eq!(
            hook.check_command(&full, "t", Some(&faulty), &ctx),
            Verdict::Allowed
        );
    }

    #[test]
    fn policy_hook_fails_safe_on_an_untrusted_sensor_and_refuses_lowering_the_fan() {
        let profile = BoardProfile::builtin(BoardModel::Pi4B);
        let mut hook = PolicyHook::for_board(&profile);
        let ctx = Context {
            profile: &profile,
            now: Timestamp::from_secs(10),
        };
        let mut s = sample(Reading::Fault(HalErrorKind::Bus));
        s.fans.push(wrale_core::model::FanReading {
            id: "fan0".into(),
            duty: Reading::Ok(Percent::ZERO),
            rpm: Reading::Missing,
        });
        let actions = hook.on_sample(&s, &ctx);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::SetFanDuty { fan: Some(f), .. } if f == "fan0")),
            "{actions:?}"
        );
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::RaiseAlert(al) if al.id == "sensor_untrusted")),
            "{actions:?}"
        );
        let low = Command::SetFanDuty {
            fan: "fan0".into(),
            duty: Percent::ZERO,
        };
        let req = request(&low, "ops");
        assert!(matches!(
            hook.peek_request(&req, Some(&s), &ctx),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            hook.check_command(&low, "ops", Some(&s), &ctx),
            Verdict::Refused { .. }
        ));
        let full = Command::SetFanDuty {
            fan: "fan0".into(),
            duty: Percent::FULL,
        };
        assert_eq!(
            hook.check_command(&full, "ops", Some(&s), &ctx),
            Verdict::Allowed
        );
    }
}
