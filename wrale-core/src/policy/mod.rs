//! The on-device safety and policy engine: pure, deterministic and fast.
//!
//! - [`PolicySet::evaluate`]`(&mut state, &sample, now) -> Decision`: one sample in,
//!   [`Action`]s (fan duty, throttle, power source, emergency shutdown, GPIO lock)
//!   and alert changes out.
//! - [`PolicySet::check`]`(&state, &request, now) -> Verdict`: `Allowed` or
//!   `Refused { rule, reason }`; [`PolicySet::admit`] also records an accepted
//!   command; [`PolicySet::validate`] / [`PolicySet::confirm`] are the two-phase
//!   form for physical operations.
//!
//! No I/O and no clock: `now` is passed in and [`SafetyState`] is an explicit value
//! owned by the caller, so tests drive time exactly.
//!
//! **Layering.** Each board model has a built-in safety floor ([`BoardFloor`], from
//! its [`BoardProfile`](crate::BoardProfile)). Fleet, group and device layers
//! ([`PolicyLayer`], TOML files) may tighten the floor but never loosen it; a
//! loosening layer is refused with the rule it would break. Where layers disagree,
//! the strictest value wins, so the result does not depend on the order in which
//! the layers arrive. [`PolicyStore`] swaps in a new policy only once it parsed and
//! assembled cleanly; otherwise the previous one stays in force.
//!
//! ```
//! use wrale_core::{BoardModel, BoardProfile, Timestamp};
//! use wrale_core::model::{Actor, Command, CommandRequest, Level};
//! use wrale_core::policy::{PolicyStore, SafetyState, Verdict};
//!
//! let mut store = PolicyStore::new(&BoardProfile::builtin(BoardModel::Pi4B));
//! store.reload(r#"
//!     scope = "fleet"
//!     [security]
//!     lock_gpio_when_case_open = true
//!     [[interlock]]
//!     id = "gpio17-case-open"
//!     deny = { command = "set_gpio", pin = 17, level = "high" }
//!     when = { case_open = true }
//! "#, "fleet.toml").unwrap();
//! // Loosening the floor is refused, and the previous policy stays.
//! let err = store.reload("scope = \"fleet\"\n[thermal]\ncritical_c = 95.0\n", "fleet.toml").unwrap_err();
//! assert_eq!(err.code(), "policy_violation");
//!
//! let policy = store.current();
//! let state = SafetyState::new(&policy);
//! let req = CommandRequest::new(Actor::User("ada".into()), "test", Command::SetGpio { pin: 17, level: Level::High });
//! // Case state unknown: the interlock fails closed.
//! assert!(matches!(policy.check(&state, &req, Timestamp::from_secs(0)), Verdict::Refused { .. }));
//! ```

mod cel;
mod check;
pub mod curve;
mod engine;
mod layer;
mod set;
mod state;

pub use check::{ConfirmToken, Validation, Verdict};
pub use engine::{Action, AlertChange, Decision, Transition};
pub use layer::{
    CommandMatch, CommandOverrides, Condition, CustomRule, FanOverrides, Interlock, PolicyLayer,
    PowerOverrides, QuietHours, RateLimit, Scope, SecurityOverrides, SensorOverrides,
    ThermalOverrides,
};
pub use set::{
    BoardFloor, CommandPolicy, FanPolicy, Limits, PolicySet, PolicyStore, PowerPolicy,
    SecurityPolicy, SensorPolicy, ThermalPolicy,
};
pub use state::{Facts, SafetyState, ThermalLevel};
