//! Simulated GPIO: pin ownership, line levels (pulls, loopback wiring, external
//! drivers such as the case switch), drop states, debounced edges and hardware PWM.
//!
//! The pin table lives inside the model (one lock for everything), so a level
//! change and the edge it causes are stamped with the same virtual time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wrale_core::board::PinMap;
use wrale_core::model::{Edge, Level, Pull};
use wrale_core::units::{Hertz, Percent};

use crate::error::{HalError, Result};
use crate::gpio::{DropState, Gpio, InputPin, OutputPin, PwmPin};

use super::Shared;

/// Highest PWM carrier the simulated controller accepts (the Pi's PWM clock
/// divides a 19.2-54 MHz source; anything above a few MHz is meaningless here).
const MAX_PWM_HZ: f64 = 25_000_000.0;

/// What a pin is being used for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Claim {
    /// Not claimed.
    Free,
    /// Owned by a built-in part (the fan's PWM output or tachometer).
    Reserved,
    /// An input with a bias.
    Input(Pull),
    /// A driven output.
    Output(Level),
    /// A hardware PWM output.
    Pwm { duty: Percent },
}

/// Edge watching state of an input (a debouncer).
#[derive(Debug, Clone, Copy)]
struct Watch {
    edge: Edge,
    debounce: Duration,
    /// The level last accepted (reported) by the debouncer.
    reported: Level,
    /// Virtual time of the last accepted transition.
    last_accepted: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct PinState {
    claim: Claim,
    /// Level a dropped output keeps driving (its [`DropState`]); `None` = floating.
    residual: Option<Level>,
    watch: Option<Watch>,
}

/// The GPIO controller's state.
#[derive(Debug)]
pub(crate) struct GpioState {
    max_gpio: u8,
    hardware_pwm: Vec<u8>,
    loopback: Option<[u8; 2]>,
    pins: Vec<PinState>,
    /// Lines driven by simulated external circuits (security inputs), by pin.
    external: BTreeMap<u8, Level>,
}

/// An edge accepted by a debouncer: (pin, new level).
pub(crate) type AcceptedEdge = (u8, Level);

impl GpioState {
    pub(crate) fn new(pins: &PinMap, reserved: &[u8]) -> Self {
        let mut table = vec![
            PinState {
                claim: Claim::Free,
                residual: None,
                watch: None,
            };
            usize::from(pins.max_gpio) + 1
        ];
        for p in reserved {
            if let Some(s) = table.get_mut(usize::from(*p)) {
                s.claim = Claim::Reserved;
            }
        }
        Self {
            max_gpio: pins.max_gpio,
            hardware_pwm: pins.hardware_pwm.clone(),
            loopback: pins.loopback,
            pins: table,
            external: BTreeMap::new(),
        }
    }

    fn state(&self, pin: u8) -> Result<&PinState> {
        self.pins.get(usize::from(pin)).ok_or_else(|| {
            HalError::InvalidArgument(format!(
                "GPIO {pin} does not exist on this board (0..={})",
                self.max_gpio
            ))
        })
    }

    fn state_mut(&mut self, pin: u8) -> Result<&mut PinState> {
        let max = self.max_gpio;
        self.pins.get_mut(usize::from(pin)).ok_or_else(|| {
            HalError::InvalidArgument(format!(
                "GPIO {pin} does not exist on this board (0..={max})"
            ))
        })
    }

    /// Claims a free pin.
    pub(crate) fn claim(&mut self, pin: u8, claim: Claim) -> Result<()> {
        let s = self.state_mut(pin)?;
        if s.claim != Claim::Free {
            return Err(HalError::PinUsed { pin });
        }
        s.claim = claim;
        s.residual = None;
        s.watch = None;
        Ok(())
    }

    /// Checks that a hardware PWM claim is possible (before claiming).
    pub(crate) fn check_pwm(&self, pin: u8, frequency: Hertz) -> Result<()> {
        self.state(pin)?;
        if !self.hardware_pwm.contains(&pin) {
            let list: Vec<String> = self.hardware_pwm.iter().map(u8::to_string).collect();
            return Err(HalError::unsupported(format!(
                "GPIO {pin} has no hardware PWM channel (hardware PWM pins: {}); software PWM is refused",
                list.join(", ")
            )));
        }
        check_frequency(frequency)
    }

    /// Releases a pin, leaving the line driven per `on_drop` (`None` = floating).
    pub(crate) fn release(&mut self, pin: u8, on_drop: Option<DropState>) {
        if let Ok(s) = self.state_mut(pin) {
            s.claim = Claim::Free;
            s.watch = None;
            s.residual = match on_drop {
                Some(DropState::Low) => Some(Level::Low),
                Some(DropState::High) => Some(Level::High),
                Some(DropState::Release) | None => None,
            };
        }
    }

    /// Sets what an owned pin does (output level, PWM duty).
    pub(crate) fn set_claim(&mut self, pin: u8, claim: Claim) {
        if let Ok(s) = self.state_mut(pin) {
            s.claim = claim;
        }
    }

    /// Sets the level an external circuit drives onto `pin` (`None`: not driven).
    pub(crate) fn set_external(&mut self, pin: u8, level: Option<Level>) {
        match level {
            Some(l) => self.external.insert(pin, l),
            None => self.external.remove(&pin),
        };
    }

    pub(crate) fn claimed(&self) -> Vec<u8> {
        self.pins
            .iter()
            .enumerate()
            .filter(|(_, s)| s.claim != Claim::Free)
            .filter_map(|(i, _)| u8::try_from(i).ok())
            .collect()
    }

    fn partner(&self, pin: u8) -> Option<u8> {
        match self.loopback {
            Some([a, b]) if a == pin => Some(b),
            Some([a, b]) if b == pin => Some(a),
            _ => None,
        }
    }

    /// The level this pin drives itself, if any (output, PWM mean level, or a
    /// dropped output's residual drive).
    fn drive(&self, pin: u8) -> Option<Level> {
        let s = self.pins.get(usize::from(pin))?;
        match s.claim {
            Claim::Output(l) => Some(l),
            // A PWM line read back shows its mean level.
            Claim::Pwm { duty } => Some(Level::from(duty.get() >= 50.0)),
            Claim::Free => s.residual,
            Claim::Input(_) | Claim::Reserved => None,
        }
    }

    fn pull(&self, pin: u8) -> Pull {
        match self.pins.get(usize::from(pin)).map(|s| s.claim) {
            Some(Claim::Input(p)) => p,
            _ => Pull::None,
        }
    }

    /// The level the line at `pin` is at.
    ///
    /// Precedence: the pin's own drive, an external circuit, the loopback
    /// partner's drive, then the pulls of both ends. A line nobody drives or
    /// pulls reads low (deterministic; real floating lines are not).
    pub(crate) fn level(&self, pin: u8) -> Level {
        if let Some(l) = self.drive(pin) {
            return l;
        }
        if let Some(l) = self.external.get(&pin) {
            return *l;
        }
        let partner = self.partner(pin);
        if let Some(l) = partner.and_then(|q| self.drive(q)) {
            return l;
        }
        let pulls = [Some(self.pull(pin)), partner.map(|q| self.pull(q))];
        let up = pulls.contains(&Some(Pull::Up));
        let down = pulls.contains(&Some(Pull::Down));
        Level::from(up && !down)
    }

    /// Starts watching an input pin.
    pub(crate) fn watch(&mut self, pin: u8, edge: Edge, debounce: Duration) -> Result<()> {
        let level = self.level(pin);
        let s = self.state_mut(pin)?;
        s.watch = Some(Watch {
            edge,
            debounce,
            reported: level,
            last_accepted: None,
        });
        Ok(())
    }

    pub(crate) fn unwatch(&mut self, pin: u8) {
        if let Ok(s) = self.state_mut(pin) {
            s.watch = None;
        }
    }

    /// Runs every debouncer at virtual time `now`; returns the edges to publish.
    ///
    /// A transition is accepted when at least `debounce` has passed since the
    /// previous accepted one; a transition inside the window is held back and
    /// accepted later (at the next refresh after the window) if the line still
    /// differs from the reported level, so the reported level always settles on
    /// the real one.
    pub(crate) fn refresh(&mut self, now: Duration) -> Vec<AcceptedEdge> {
        if self.pins.iter().all(|s| s.watch.is_none()) {
            return Vec::new();
        }
        let levels: Vec<Level> = (0..=self.max_gpio).map(|p| self.level(p)).collect();
        let mut out = Vec::new();
        for (i, s) in self.pins.iter_mut().enumerate() {
            let Some(w) = s.watch.as_mut() else { continue };
            let raw = levels[i];
            if raw == w.reported {
                continue;
            }
            let open = w
                .last_accepted
                .is_none_or(|t| now.saturating_sub(t) >= w.debounce);
            if !open {
                continue;
            }
            w.reported = raw;
            w.last_accepted = Some(now);
            let wanted = match w.edge {
                Edge::Both => true,
                Edge::Rising => raw == Level::High,
                Edge::Falling => raw == Level::Low,
            };
            if wanted {
                if let Ok(pin) = u8::try_from(i) {
                    out.push((pin, raw));
                }
            }
        }
        out
    }
}

fn check_frequency(frequency: Hertz) -> Result<()> {
    let f = frequency.get();
    if f.is_finite() && f > 0.0 && f <= MAX_PWM_HZ {
        Ok(())
    } else {
        Err(HalError::InvalidArgument(format!(
            "PWM frequency {f} Hz is outside 0 < f <= {MAX_PWM_HZ} Hz"
        )))
    }
}

/// The simulated GPIO controller.
#[derive(Debug)]
pub(crate) struct SimGpio {
    pub(crate) shared: Arc<Shared>,
}

impl Gpio for SimGpio {
    fn claim_input(&self, pin: u8, pull: Pull) -> Result<Box<dyn InputPin>> {
        self.shared.with(|m| {
            m.check_powered()?;
            m.gpio.claim(pin, Claim::Input(pull))?;
            m.refresh_lines();
            Ok(())
        })?;
        Ok(Box::new(SimInputPin {
            shared: self.shared.clone(),
            pin,
        }))
    }

    fn claim_output(
        &self,
        pin: u8,
        initial: Level,
        on_drop: DropState,
    ) -> Result<Box<dyn OutputPin>> {
        self.shared.with(|m| {
            m.check_powered()?;
            m.gpio.claim(pin, Claim::Output(initial))?;
            m.refresh_lines();
            Ok(())
        })?;
        Ok(Box::new(SimOutputPin {
            shared: self.shared.clone(),
            pin,
            level: initial,
            on_drop,
        }))
    }

    fn claim_pwm(
        &self,
        pin: u8,
        frequency: Hertz,
        duty: Percent,
        on_drop: DropState,
    ) -> Result<Box<dyn PwmPin>> {
        self.shared.with(|m| {
            m.check_powered()?;
            m.gpio.check_pwm(pin, frequency)?;
            m.gpio.claim(pin, Claim::Pwm { duty })?;
            m.refresh_lines();
            Ok(())
        })?;
        Ok(Box::new(SimPwmPin {
            shared: self.shared.clone(),
            pin,
            frequency,
            duty,
            on_drop,
        }))
    }

    fn claimed(&self) -> Vec<u8> {
        self.shared.with(|m| m.gpio.claimed())
    }
}

/// An owned simulated input line.
#[derive(Debug)]
struct SimInputPin {
    shared: Arc<Shared>,
    pin: u8,
}

impl InputPin for SimInputPin {
    fn pin(&self) -> u8 {
        self.pin
    }

    fn read(&self) -> Result<Level> {
        self.shared.with(|m| {
            m.check_powered()?;
            Ok(m.gpio.level(self.pin))
        })
    }

    fn watch(&mut self, edge: Edge, debounce: Duration) -> Result<()> {
        self.shared.with(|m| {
            m.check_powered()?;
            m.gpio.watch(self.pin, edge, debounce)
        })
    }

    fn unwatch(&mut self) -> Result<()> {
        self.shared.with(|m| m.gpio.unwatch(self.pin));
        Ok(())
    }
}

impl Drop for SimInputPin {
    fn drop(&mut self) {
        self.shared.with(|m| {
            m.gpio.release(self.pin, None);
            m.refresh_lines();
        });
    }
}

/// An owned simulated output line.
#[derive(Debug)]
struct SimOutputPin {
    shared: Arc<Shared>,
    pin: u8,
    level: Level,
    on_drop: DropState,
}

impl OutputPin for SimOutputPin {
    fn pin(&self) -> u8 {
        self.pin
    }

    fn write(&mut self, level: Level) -> Result<()> {
        self.shared.with(|m| {
            m.check_powered()?;
            m.gpio.set_claim(self.pin, Claim::Output(level));
            m.refresh_lines();
            Ok(())
        })?;
        self.level = level;
        Ok(())
    }

    fn level(&self) -> Level {
        self.level
    }
}

impl Drop for SimOutputPin {
    fn drop(&mut self) {
        self.shared.with(|m| {
            m.gpio.release(self.pin, Some(self.on_drop));
            m.refresh_lines();
        });
    }
}

/// An owned simulated hardware PWM line.
#[derive(Debug)]
struct SimPwmPin {
    shared: Arc<Shared>,
    pin: u8,
    frequency: Hertz,
    duty: Percent,
    on_drop: DropState,
}

impl PwmPin for SimPwmPin {
    fn pin(&self) -> u8 {
        self.pin
    }

    fn set_frequency(&mut self, frequency: Hertz) -> Result<()> {
        check_frequency(frequency)?;
        self.shared.with(|m| m.check_powered())?;
        self.frequency = frequency;
        Ok(())
    }

    fn set_duty(&mut self, duty: Percent) -> Result<()> {
        self.shared.with(|m| {
            m.check_powered()?;
            m.gpio.set_claim(self.pin, Claim::Pwm { duty });
            m.refresh_lines();
            Ok(())
        })?;
        self.duty = duty;
        Ok(())
    }

    fn frequency(&self) -> Hertz {
        self.frequency
    }

    fn duty(&self) -> Percent {
        self.duty
    }
}

impl Drop for SimPwmPin {
    fn drop(&mut self) {
        self.shared.with(|m| {
            m.gpio.release(self.pin, Some(self.on_drop));
            m.refresh_lines();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins() -> PinMap {
        PinMap {
            loopback: Some([20, 21]),
            hardware_pwm: vec![12, 18],
            max_gpio: 27,
            ..PinMap::default()
        }
    }

    #[test]
    fn pulls_and_loopback_resolve() {
        let mut g = GpioState::new(&pins(), &[18]);
        assert!(matches!(
            g.claim(18, Claim::Input(Pull::Up)),
            Err(HalError::PinUsed { pin: 18 })
        ));
        g.claim(5, Claim::Input(Pull::Up)).unwrap();
        assert_eq!(g.level(5), Level::High);
        g.claim(6, Claim::Input(Pull::None)).unwrap();
        assert_eq!(g.level(6), Level::Low);
        g.claim(21, Claim::Input(Pull::None)).unwrap();
        g.claim(20, Claim::Input(Pull::Up)).unwrap();
        assert_eq!(g.level(21), Level::High, "partner's pull-up holds the wire");
        g.release(20, None);
        g.claim(20, Claim::Output(Level::Low)).unwrap();
        assert_eq!(g.level(21), Level::Low);
        g.release(20, Some(DropState::High));
        assert_eq!(
            g.level(21),
            Level::High,
            "dropped output keeps driving high"
        );
        assert!(g.claim(28, Claim::Input(Pull::None)).is_err());
    }

    #[test]
    fn debouncer_holds_back_and_settles() {
        let mut g = GpioState::new(&pins(), &[]);
        g.claim(21, Claim::Input(Pull::Down)).unwrap();
        g.claim(20, Claim::Output(Level::Low)).unwrap();
        g.watch(21, Edge::Both, Duration::from_millis(10)).unwrap();
        g.set_claim(20, Claim::Output(Level::High));
        assert_eq!(g.refresh(Duration::from_millis(0)), vec![(21, Level::High)]);
        g.set_claim(20, Claim::Output(Level::Low));
        assert!(g.refresh(Duration::from_millis(3)).is_empty());
        assert_eq!(g.refresh(Duration::from_millis(10)), vec![(21, Level::Low)]);
    }
}
