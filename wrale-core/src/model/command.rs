//! Commands: typed requests to change something physical on a device.
//!
//! Every command travels inside a [`CommandRequest`] that says who asked
//! ([`Actor`]) and why. Commands are data (serde, tagged with `"type"`, snake_case),
//! because they cross the local API, the fleet link and the bindings; the safety
//! engine checks every one of them before it touches hardware.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::model::device::DeviceId;
use crate::model::hardware::{Level, PowerSourceKind};
use crate::units::{Hertz, Percent};

/// Who asked for a command.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// An authenticated user (user name).
    User(String),
    /// A device (for instance a neighbour coordinating a shelf).
    Device(DeviceId),
    /// The fleet brain (fleetd) acting on its own (rollouts, scheduling).
    Fleet,
    /// Someone at the device itself (local API, console), with a name if known.
    LocalOperator(String),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(u) => write!(f, "user:{u}"),
            Actor::Device(d) => write!(f, "device:{d}"),
            Actor::Fleet => f.write_str("fleet"),
            Actor::LocalOperator(o) => write!(f, "local:{o}"),
        }
    }
}

/// Error for text that does not name an [`Actor`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("actor {text:?}: {reason}")]
pub struct InvalidActor {
    /// The text that was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl From<InvalidActor> for crate::ErrorReport {
    fn from(e: InvalidActor) -> Self {
        crate::ErrorReport::invalid_input("invalid_actor", e.to_string())
    }
}

/// Parses the [`Display`](fmt::Display) form back: `user:ada`, `device:pi-1`,
/// `local:bob`, `fleet`. A bare name (`ada`) is a user, as operators type it.
impl FromStr for Actor {
    type Err = InvalidActor;
    fn from_str(text: &str) -> Result<Self, InvalidActor> {
        let bad = |reason: String| InvalidActor {
            text: text.to_owned(),
            reason,
        };
        let named = |name: &str| {
            if name.trim().is_empty() {
                Err(bad("the name is empty".into()))
            } else {
                Ok(name.to_owned())
            }
        };
        match text.split_once(':') {
            None if text == "fleet" => Ok(Actor::Fleet),
            None => Ok(Actor::User(named(text)?)),
            Some(("user", u)) => Ok(Actor::User(named(u)?)),
            Some(("local", u)) => Ok(Actor::LocalOperator(named(u)?)),
            Some(("device", d)) => DeviceId::new(d)
                .map(Actor::Device)
                .map_err(|e| bad(e.to_string())),
            Some((kind, _)) => Err(bad(format!(
                "kind {kind:?}: expected user, device, local or fleet"
            ))),
        }
    }
}

/// A fan-curve profile, from the quietest to the most cooling.
///
/// The order matters: `Quiet < Balance < Cool < Max`, and "tighter" means further
/// right (more cooling).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FanProfileName {
    /// Fan off until the board is warm, then gentle steps.
    Quiet,
    /// The default: steps like the Pi 5's firmware curve.
    #[default]
    Balance,
    /// Starts earlier and runs faster.
    Cool,
    /// 100 % all the time.
    Max,
}

impl FanProfileName {
    /// Every profile, quietest first.
    pub const ALL: [FanProfileName; 4] = [
        FanProfileName::Quiet,
        FanProfileName::Balance,
        FanProfileName::Cool,
        FanProfileName::Max,
    ];

    /// The stable name (`quiet`).
    pub fn as_str(self) -> &'static str {
        match self {
            FanProfileName::Quiet => "quiet",
            FanProfileName::Balance => "balance",
            FanProfileName::Cool => "cool",
            FanProfileName::Max => "max",
        }
    }
}

impl fmt::Display for FanProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Drive a GPIO output to a level.
    SetGpio {
        /// BCM pin.
        pin: u8,
        /// Level to drive.
        level: Level,
    },
    /// Set a hardware PWM output.
    SetPwm {
        /// BCM pin.
        pin: u8,
        /// Duty cycle.
        #[serde(rename = "duty_pct")]
        duty: Percent,
        /// Carrier frequency; unchanged when absent.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            rename = "frequency_hz"
        )]
        frequency: Option<Hertz>,
    },
    /// Set a fan's duty by hand (an override on top of the fan curve: the fan
    /// never runs slower than the curve asks).
    SetFanDuty {
        /// Fan id (`fan0`).
        fan: String,
        /// Duty.
        #[serde(rename = "duty_pct")]
        duty: Percent,
    },
    /// Select the fan-curve profile (clears a manual duty override).
    SetFanProfile {
        /// Profile.
        profile: FanProfileName,
    },
    /// Switch the board to a power source.
    SelectPowerSource {
        /// Source.
        source: PowerSourceKind,
    },
    /// Enable or disable battery charging.
    EnableCharging {
        /// Whether charging is enabled.
        enabled: bool,
    },
    /// Reboot the device.
    Reboot,
    /// Shut the device down.
    Shutdown,
    /// Run the hardware diagnostics (they load the CPU and spin the fan).
    RunDiagnostics,
    /// Start a workload (power-hungry).
    StartWorkload {
        /// Workload name.
        workload: String,
    },
    /// Throttle a workload (reduce its CPU share).
    ThrottleWorkload {
        /// Workload name.
        workload: String,
    },
    /// Resume a throttled workload at full speed (power-hungry).
    ResumeWorkload {
        /// Workload name.
        workload: String,
    },
    /// Apply a desired-config version.
    ApplyConfig {
        /// The config version (automerge heads, as a string).
        version: String,
    },
}

/// The kind of a [`Command`] without its arguments: what interlocks and rate
/// limits match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// [`Command::SetGpio`].
    SetGpio,
    /// [`Command::SetPwm`].
    SetPwm,
    /// [`Command::SetFanDuty`].
    SetFanDuty,
    /// [`Command::SetFanProfile`].
    SetFanProfile,
    /// [`Command::SelectPowerSource`].
    SelectPowerSource,
    /// [`Command::EnableCharging`].
    EnableCharging,
    /// [`Command::Reboot`].
    Reboot,
    /// [`Command::Shutdown`].
    Shutdown,
    /// [`Command::RunDiagnostics`].
    RunDiagnostics,
    /// [`Command::StartWorkload`].
    StartWorkload,
    /// [`Command::ThrottleWorkload`].
    ThrottleWorkload,
    /// [`Command::ResumeWorkload`].
    ResumeWorkload,
    /// [`Command::ApplyConfig`].
    ApplyConfig,
}

impl CommandKind {
    /// Every kind.
    pub const ALL: [CommandKind; 13] = [
        CommandKind::SetGpio,
        CommandKind::SetPwm,
        CommandKind::SetFanDuty,
        CommandKind::SetFanProfile,
        CommandKind::SelectPowerSource,
        CommandKind::EnableCharging,
        CommandKind::Reboot,
        CommandKind::Shutdown,
        CommandKind::RunDiagnostics,
        CommandKind::StartWorkload,
        CommandKind::ThrottleWorkload,
        CommandKind::ResumeWorkload,
        CommandKind::ApplyConfig,
    ];

    /// The stable snake_case name (`set_gpio`).
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::SetGpio => "set_gpio",
            CommandKind::SetPwm => "set_pwm",
            CommandKind::SetFanDuty => "set_fan_duty",
            CommandKind::SetFanProfile => "set_fan_profile",
            CommandKind::SelectPowerSource => "select_power_source",
            CommandKind::EnableCharging => "enable_charging",
            CommandKind::Reboot => "reboot",
            CommandKind::Shutdown => "shutdown",
            CommandKind::RunDiagnostics => "run_diagnostics",
            CommandKind::StartWorkload => "start_workload",
            CommandKind::ThrottleWorkload => "throttle_workload",
            CommandKind::ResumeWorkload => "resume_workload",
            CommandKind::ApplyConfig => "apply_config",
        }
    }

    /// Whether the command raises power draw (refused while the supply is weak).
    pub fn is_power_hungry(self) -> bool {
        matches!(
            self,
            CommandKind::StartWorkload | CommandKind::ResumeWorkload | CommandKind::RunDiagnostics
        )
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown command kind name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown command {0:?}")]
pub struct UnknownCommand(pub String);

impl FromStr for CommandKind {
    type Err = UnknownCommand;
    fn from_str(s: &str) -> Result<Self, UnknownCommand> {
        CommandKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownCommand(s.to_owned()))
    }
}

/// What a command acts on, for per-target rate limits and interlock matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandTarget<'a> {
    /// A GPIO pin.
    Pin(u8),
    /// A fan.
    Fan(&'a str),
    /// A workload.
    Workload(&'a str),
    /// A power source.
    Source(PowerSourceKind),
    /// The device as a whole.
    Device,
}

impl fmt::Display for CommandTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandTarget::Pin(p) => write!(f, "gpio{p}"),
            CommandTarget::Fan(s) | CommandTarget::Workload(s) => f.write_str(s),
            CommandTarget::Source(s) => write!(f, "{s}"),
            CommandTarget::Device => f.write_str("device"),
        }
    }
}

impl Command {
    /// The command's kind.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::SetGpio { .. } => CommandKind::SetGpio,
            Command::SetPwm { .. } => CommandKind::SetPwm,
            Command::SetFanDuty { .. } => CommandKind::SetFanDuty,
            Command::SetFanProfile { .. } => CommandKind::SetFanProfile,
            Command::SelectPowerSource { .. } => CommandKind::SelectPowerSource,
            Command::EnableCharging { .. } => CommandKind::EnableCharging,
            Command::Reboot => CommandKind::Reboot,
            Command::Shutdown => CommandKind::Shutdown,
            Command::RunDiagnostics => CommandKind::RunDiagnostics,
            Command::StartWorkload { .. } => CommandKind::StartWorkload,
            Command::ThrottleWorkload { .. } => CommandKind::ThrottleWorkload,
            Command::ResumeWorkload { .. } => CommandKind::ResumeWorkload,
            Command::ApplyConfig { .. } => CommandKind::ApplyConfig,
        }
    }

    /// What the command acts on.
    pub fn target(&self) -> CommandTarget<'_> {
        match self {
            Command::SetGpio { pin, .. } | Command::SetPwm { pin, .. } => CommandTarget::Pin(*pin),
            Command::SetFanDuty { fan, .. } => CommandTarget::Fan(fan),
            Command::StartWorkload { workload }
            | Command::ThrottleWorkload { workload }
            | Command::ResumeWorkload { workload } => CommandTarget::Workload(workload),
            Command::SelectPowerSource { source } => CommandTarget::Source(*source),
            _ => CommandTarget::Device,
        }
    }
}

/// A command with who asked and why: what the engine checks and the audit log records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// Who asked.
    pub actor: Actor,
    /// Why (free text, recorded in the audit log).
    #[serde(default)]
    pub reason: String,
    /// What to do.
    pub command: Command,
}

impl CommandRequest {
    /// A request.
    pub fn new(actor: Actor, reason: impl Into<String>, command: Command) -> Self {
        Self {
            actor,
            reason: reason.into(),
            command,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_parse_their_display_form() {
        for a in [
            Actor::User("ada".into()),
            Actor::Device(DeviceId::new("pi-1").unwrap()),
            Actor::Fleet,
            Actor::LocalOperator("bob".into()),
        ] {
            assert_eq!(a.to_string().parse::<Actor>().unwrap(), a);
        }
        assert_eq!("ada".parse::<Actor>().unwrap(), Actor::User("ada".into()));
        let e = "robot:x".parse::<Actor>().unwrap_err();
        assert!(e.to_string().contains("\"robot\""), "{e}");
        assert!("user:".parse::<Actor>().is_err());
        assert!("device:Not Valid".parse::<Actor>().is_err());
        let r = crate::ErrorReport::from(e);
        assert_eq!(r.code, "invalid_actor");
        assert_eq!(r.category, crate::ErrorCategory::InvalidInput);
    }

    #[test]
    fn commands_are_tagged_snake_case() {
        let c = Command::SetGpio {
            pin: 17,
            level: Level::High,
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"type":"set_gpio","pin":17,"level":"high"}"#
        );
        let r: Command = serde_json::from_str(r#"{"type":"reboot"}"#).unwrap();
        assert_eq!(r, Command::Reboot);
        let f: Command =
            serde_json::from_str(r#"{"type":"set_fan_duty","fan":"fan0","duty_pct":40}"#).unwrap();
        assert_eq!(f.kind(), CommandKind::SetFanDuty);
        assert_eq!(f.target(), CommandTarget::Fan("fan0"));
        assert!(
            serde_json::from_str::<Command>(r#"{"type":"set_fan_duty","fan":"f","duty_pct":120}"#)
                .is_err()
        );
    }

    #[test]
    fn kinds_round_trip_and_json_matches() {
        for k in CommandKind::ALL {
            assert_eq!(k.as_str().parse::<CommandKind>().unwrap(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        assert!("explode".parse::<CommandKind>().is_err());
    }

    #[test]
    fn actor_json_and_display() {
        let a = Actor::User("ada".into());
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"kind":"user","id":"ada"}"#
        );
        assert_eq!(
            serde_json::from_str::<Actor>(r#"{"kind":"fleet"}"#).unwrap(),
            Actor::Fleet
        );
        assert_eq!(Actor::LocalOperator("bob".into()).to_string(), "local:bob");
        assert!(FanProfileName::Quiet < FanProfileName::Max);
    }
}
