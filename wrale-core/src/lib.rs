//! # wrale-core
//!
//! The lowest layer of Wrale: the domain model with physical units, board profiles,
//! the on-device safety/policy engine, the event bus, audit records and fleet logic.
//! It performs no I/O and never reads a clock: time is passed in as a
//! [`Timestamp`], so every decision is deterministic and testable.
//!
//! `wrale-hal`, `wrale-sync`, the daemons and the bindings all depend on this crate;
//! it depends on none of them.
//!
//! ```
//! use wrale_core::units::{Volts, Amps, Watts};
//! use wrale_core::board::{BoardModel, BoardProfile};
//!
//! let p = Volts(5.1) * Amps(1.25);
//! assert!((p.get() - 6.375).abs() < 1e-9);
//! let pi4 = BoardProfile::builtin(BoardModel::Pi4B);
//! assert_eq!(pi4.thermal.critical_c.get(), 85.0);
//! ```

pub mod audit;
pub mod board;
mod error;
pub mod events;
pub mod fleet;
pub mod layered;
pub mod model;
pub mod policy;
pub mod time;
pub mod units;

pub use board::{BoardModel, BoardProfile};
pub use error::{Error, ErrorCategory, ErrorReport, Refused, Result, RuleId};
pub use events::{Event, EventBus};
pub use model::{DeviceId, GroupId, HalErrorKind, Reading, Sample};
pub use policy::{Action, Decision, PolicySet, PolicyStore, SafetyState, Verdict};
pub use time::Timestamp;
