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

/// The pins a program drives through one board, claimed on first use and kept
/// until the set is cleared or dropped: GPIO outputs (released on drop), inputs
/// read without pull, and hardware PWM (low on drop). The bindings' boards and
/// the embedded device runtime drive pins through it.
#[derive(Debug, Default)]
pub struct PinSet {
    outputs: std::sync::Mutex<std::collections::BTreeMap<u8, Box<dyn OutputPin>>>,
    inputs: std::sync::Mutex<std::collections::BTreeMap<u8, Box<dyn InputPin>>>,
    pwms: std::sync::Mutex<std::collections::BTreeMap<u8, Box<dyn PwmPin>>>,
}

fn held<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PinSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drives `pin` to `level`: the output already claimed, or a new claim (an
    /// input claimed on the same pin is given up first).
    pub fn write(&self, board: &crate::Board, pin: u8, level: Level) -> Result<()> {
        let mut outs = held(&self.outputs);
        if let Some(o) = outs.get_mut(&pin) {
            return o.write(level);
        }
        held(&self.inputs).remove(&pin);
        let o = board.gpio()?.claim_output(pin, level, DropState::Release)?;
        outs.insert(pin, o);
        Ok(())
    }

    /// The level of `pin`: the driven level of an output of this set, else the
    /// line read as an input without pull (claimed on first read).
    pub fn read(&self, board: &crate::Board, pin: u8) -> Result<Level> {
        if let Some(o) = held(&self.outputs).get(&pin) {
            return Ok(o.level());
        }
        let mut ins = held(&self.inputs);
        if let Some(i) = ins.get(&pin) {
            return i.read();
        }
        let i = board.gpio()?.claim_input(pin, Pull::None)?;
        let level = i.read()?;
        ins.insert(pin, i);
        Ok(level)
    }

    /// Sets hardware PWM on `pin`: the duty, and the frequency when given (a new
    /// claim starts at `frequency` or 1 kHz).
    pub fn pwm(
        &self,
        board: &crate::Board,
        pin: u8,
        duty: Percent,
        frequency: Option<Hertz>,
    ) -> Result<()> {
        let mut pwms = held(&self.pwms);
        if let Some(p) = pwms.get_mut(&pin) {
            if let Some(f) = frequency {
                p.set_frequency(f)?;
            }
            return p.set_duty(duty);
        }
        let f = frequency.unwrap_or(Hertz(1000.0));
        let p = board.gpio()?.claim_pwm(pin, f, duty, DropState::Low)?;
        pwms.insert(pin, p);
        Ok(())
    }

    /// Gives every pin up (each to its drop state).
    pub fn clear(&self) {
        held(&self.outputs).clear();
        held(&self.inputs).clear();
        held(&self.pwms).clear();
    }
}

#[cfg(all(test, feature = "sim"))]
mod pin_set_tests {
    use super::*;
    use crate::sim::{SimBoard, SimConfig};

    #[test]
    fn pins_are_claimed_once_reused_and_given_up() {
        let sim = SimBoard::new(&SimConfig::default()).unwrap();
        let board = sim.board();
        let gpio = board.gpio().unwrap().clone();
        // The sim board itself holds some lines (the fan pin).
        let own = gpio.claimed();
        let ours = || {
            let mut c: Vec<u8> = gpio
                .claimed()
                .into_iter()
                .filter(|p| !own.contains(p))
                .collect();
            c.sort_unstable();
            c
        };
        let pins = PinSet::new();
        pins.write(&board, 17, Level::High).unwrap();
        pins.write(&board, 17, Level::Low).unwrap();
        assert_eq!(pins.read(&board, 17).unwrap(), Level::Low);
        pins.pwm(&board, 12, Percent::new(40.0).unwrap(), None)
            .unwrap();
        pins.pwm(&board, 12, Percent::new(60.0).unwrap(), Some(Hertz(500.0)))
            .unwrap();
        pins.read(&board, 22).unwrap();
        assert_eq!(ours(), [12, 17, 22], "one claim per pin");
        // An input becomes an output on write.
        pins.write(&board, 22, Level::High).unwrap();
        assert_eq!(pins.read(&board, 22).unwrap(), Level::High);
        pins.clear();
        assert!(ours().is_empty());
    }
}
