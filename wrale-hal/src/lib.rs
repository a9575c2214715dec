//! # wrale-hal
//!
//! Hardware abstraction for Wrale: synchronous, dyn-compatible traits per subsystem
//! (GPIO with pulls, edges and hardware PWM; temperature sensors and fans; supply
//! monitoring, throttle flags, power sources and batteries; physical-security
//! inputs; CPU and storage figures), a [`Board`] that holds one device's set of
//! them, and backends chosen at run time and compiled in by cargo features:
//!
//! - `sim` (default): a deterministic, seeded physical model on virtual time.
//! - `linux`: sysfs thermal zones, hwmon, cpufreq, eMMC wear, `/proc`, GPIO over the
//!   character device. Its root path is configurable, so tests run it on fixture trees.
//! - `rpi`: rppal GPIO/PWM/I2C plus I2C sensor drivers written against
//!   `embedded-hal` (INA219, MAX17048, SHT3x).
//!
//! Operations are short blocking syscalls; async lives in the daemons. Every error
//! has a portable [`HalErrorKind`] that the safety engine matches on.
//!
//! Units come from `wrale-core` ([`wrale_core::units`]) and are re-exported here.

pub mod board;
mod config;
pub mod diag;
pub mod drivers;
pub mod error;
pub mod events;
pub mod gpio;
pub mod platform;
pub mod power;
pub mod security;
mod sim_config;
pub mod thermal;

#[cfg(feature = "sim")]
pub mod sim;

#[cfg(all(feature = "linux", target_os = "linux"))]
pub mod linux;

#[cfg(all(feature = "rpi", target_os = "linux"))]
pub mod rpi;

pub use board::{Board, BoardBuilder, Clock, SystemClock};
pub use config::{BackendConfig, Ina219Config, LinuxConfig, RpiConfig, SimConfig, open};
pub use error::{HalError, HalErrorKind, Result};
pub use events::{EventHub, HalEvent};
pub use platform::BootInfo;
/// Simulator settings are always compiled, so configs and scripts can name them in
/// any build (opening the `sim` backend still needs the `sim` feature).
pub use sim_config::{BatteryConfig, Cooling, ScriptStep, SimAction, SimFault, SimTime};
pub use wrale_core::units;

/// The HAL traits, for `use wrale_hal::prelude::*` (trait methods need the trait in scope).
pub mod prelude {
    pub use crate::board::Clock;
    pub use crate::gpio::{DropState, Gpio, InputPin, OutputPin, PwmPin};
    pub use crate::platform::{I2cBus, LoadGenerator, Platform};
    pub use crate::power::{Battery, PowerMonitor, PowerSupply};
    pub use crate::security::SecurityInput;
    pub use crate::thermal::{Fan, ThermalSensor};
}
