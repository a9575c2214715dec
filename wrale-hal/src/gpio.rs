//! GPIO: owned input, output and hardware-PWM lines.
//!
//! A pin is claimed once and owned by the returned handle; claiming it again
//! fails with [`HalError::PinUsed`](crate::HalError::PinUsed) until the handle is
//! dropped. What happens to the line on drop is an explicit safety decision
//! ([`DropState`]): a fan output should fail safe (full on), a heater should fail off.

use std::fmt;
use std::time::Duration;

use wrale_core::model::{Edge, Level, Pull};
use wrale_core::units::{Hertz, Percent};

use crate::error::Result;

/// What an output or PWM line does when its handle is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropState {
    /// Drive low (PWM: 0 % duty).
    Low,
    /// Drive high (PWM: 100 % duty).
    High,
    /// Release the line (back to a floating input); the external circuit decides.
    Release,
}

/// A GPIO controller: hands out owned lines.
pub trait Gpio: Send + Sync + fmt::Debug {
    /// Claims `pin` as an input with the given bias.
    fn claim_input(&self, pin: u8, pull: Pull) -> Result<Box<dyn InputPin>>;

    /// Claims `pin` as an output, driven to `initial` at once, and to `on_drop`
    /// when the handle is dropped.
    fn claim_output(
        &self,
        pin: u8,
        initial: Level,
        on_drop: DropState,
    ) -> Result<Box<dyn OutputPin>>;

    /// Claims `pin` as a hardware PWM output. Pins without a hardware PWM channel
    /// are refused with [`HalError::Unsupported`](crate::HalError::Unsupported):
    /// Wrale never fakes PWM in software.
    fn claim_pwm(
        &self,
        pin: u8,
        frequency: Hertz,
        duty: Percent,
        on_drop: DropState,
    ) -> Result<Box<dyn PwmPin>>;

    /// Pins currently claimed through this controller, ascending.
    fn claimed(&self) -> Vec<u8>;
}

/// An owned input line.
pub trait InputPin: Send + fmt::Debug {
    /// BCM pin number.
    fn pin(&self) -> u8;
    /// Current level.
    fn read(&self) -> Result<Level>;
    /// Starts delivering edge events for this pin to the board's
    /// [`EventHub`](crate::EventHub) as [`HalEvent::Edge`](crate::HalEvent::Edge).
    /// Transitions closer than `debounce` to the previous accepted one are ignored.
    fn watch(&mut self, edge: Edge, debounce: Duration) -> Result<()>;
    /// Stops edge delivery.
    fn unwatch(&mut self) -> Result<()>;
}

/// An owned output line.
pub trait OutputPin: Send + fmt::Debug {
    /// BCM pin number.
    fn pin(&self) -> u8;
    /// Drives the line.
    fn write(&mut self, level: Level) -> Result<()>;
    /// The level last written.
    fn level(&self) -> Level;
}

/// An owned hardware PWM line.
pub trait PwmPin: Send + fmt::Debug {
    /// BCM pin number.
    fn pin(&self) -> u8;
    /// Sets the carrier frequency.
    fn set_frequency(&mut self, frequency: Hertz) -> Result<()>;
    /// Sets the duty cycle.
    fn set_duty(&mut self, duty: Percent) -> Result<()>;
    /// Current carrier frequency.
    fn frequency(&self) -> Hertz;
    /// Current duty cycle.
    fn duty(&self) -> Percent;
}
