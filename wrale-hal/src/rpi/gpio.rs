//! GPIO and hardware PWM through rppal.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rppal::gpio::{Bias, IoPin, Mode, Trigger};
use rppal::pwm::{Channel, Polarity, Pwm};
use rppal::system::SoC;
use wrale_core::Timestamp;
use wrale_core::model::{Edge, Level, Pull};
use wrale_core::units::{Hertz, Percent};

use crate::error::{HalError, Result};
use crate::events::{EventHub, HalEvent};
use crate::gpio::{DropState, Gpio, InputPin, OutputPin, PwmPin};

/// How the hardware PWM channels reach the header pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PwmLayout {
    /// BCM2835/6/7 and BCM2711 (Pi 1–4, Zero, CM3/CM4): two channels, PWM0 on GPIO 12
    /// or 18, PWM1 on GPIO 13 or 19 (one pin per channel at a time, chosen by the
    /// `pwm`/`pwm-2chan` overlay).
    Bcm2835,
    /// BCM2712 with the RP1 south bridge (Pi 5, CM5): four channels, PWM0..3 on
    /// GPIO 12, 13, 18, 19 (rppal's documented default mapping).
    Rp1,
}

impl PwmLayout {
    /// The layout of a SoC (crate-private: rppal types stay out of the public API).
    pub(crate) fn for_soc(soc: SoC) -> Self {
        match soc {
            SoC::Bcm2712 => PwmLayout::Rp1,
            _ => PwmLayout::Bcm2835,
        }
    }

    /// The hardware PWM channel (0..=3) that drives `pin`, if any.
    pub fn channel(self, pin: u8) -> Option<u8> {
        match (self, pin) {
            (PwmLayout::Bcm2835, 12 | 18) => Some(0),
            (PwmLayout::Bcm2835, 13 | 19) => Some(1),
            (PwmLayout::Rp1, 12) => Some(0),
            (PwmLayout::Rp1, 13) => Some(1),
            (PwmLayout::Rp1, 18) => Some(2),
            (PwmLayout::Rp1, 19) => Some(3),
            _ => None,
        }
    }
}

fn rppal_channel(channel: u8) -> Channel {
    match channel {
        0 => Channel::Pwm0,
        1 => Channel::Pwm1,
        2 => Channel::Pwm2,
        _ => Channel::Pwm3,
    }
}

/// Software debounce: a transition closer than the window to the previously
/// accepted one is ignored (the [`InputPin::watch`] contract). Works on the kernel's
/// event timestamps, so a late-running callback thread does not change the outcome.
#[derive(Debug, Clone)]
pub struct Debouncer {
    window: Duration,
    last: Option<Duration>,
}

impl Debouncer {
    /// A debouncer with `window` (zero accepts everything).
    pub fn new(window: Duration) -> Self {
        Self { window, last: None }
    }

    /// Whether an event at `at` (monotonic) is accepted.
    pub fn accept(&mut self, at: Duration) -> bool {
        let too_soon = self
            .last
            .is_some_and(|last| at.saturating_sub(last) < self.window);
        if too_soon {
            return false;
        }
        self.last = Some(at);
        true
    }
}

/// Maps an rppal GPIO error for `pin`.
fn gpio_error(pin: u8, e: rppal::gpio::Error) -> HalError {
    use rppal::gpio::Error as E;
    match e {
        E::UnknownModel => HalError::unsupported(format!(
            "GPIO {pin}: not a Raspberry Pi (rppal could not identify the board)"
        )),
        E::PinUsed(p) => HalError::PinUsed { pin: p },
        E::PinNotAvailable(p) => {
            HalError::InvalidArgument(format!("GPIO {p} does not exist on this board"))
        }
        E::PermissionDenied(path) => HalError::PermissionDenied {
            what: format!("GPIO {pin} ({path}; add the user to the gpio group)"),
        },
        E::Io(io) => HalError::io(format!("GPIO {pin}"), io),
        E::ThreadPanic => HalError::io(
            format!("GPIO {pin}"),
            std::io::Error::other("the edge-event thread panicked"),
        ),
    }
}

/// Maps an rppal PWM error for `pin` / `channel`.
fn pwm_error(pin: u8, channel: u8, e: rppal::pwm::Error) -> HalError {
    use rppal::pwm::Error as E;
    match e {
        E::UnknownModel => HalError::unsupported(format!(
            "PWM on GPIO {pin}: not a Raspberry Pi (rppal could not identify the board)"
        )),
        E::InvalidChannel => HalError::unsupported(format!(
            "PWM channel {channel} (GPIO {pin}) is not available on this board"
        )),
        E::Io(io) if io.kind() == std::io::ErrorKind::NotFound => HalError::not_found(format!(
            "PWM channel {channel} for GPIO {pin} (enable it with dtoverlay=pwm-2chan in \
             config.txt, routed to GPIO {pin})"
        )),
        E::Io(io) => HalError::io(format!("PWM channel {channel} (GPIO {pin})"), io),
    }
}

/// A pin (or PWM channel) reservation, released on drop.
#[derive(Debug)]
struct Claim {
    pin: u8,
    set: Arc<Mutex<BTreeSet<u8>>>,
}

impl Claim {
    fn take(set: &Arc<Mutex<BTreeSet<u8>>>, pin: u8) -> Result<Self> {
        if !crate::drivers::lock(set).insert(pin) {
            return Err(HalError::PinUsed { pin });
        }
        Ok(Self {
            pin,
            set: Arc::clone(set),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        crate::drivers::lock(&self.set).remove(&self.pin);
    }
}

#[derive(Debug)]
struct ChannelClaim {
    channel: u8,
    map: Arc<Mutex<BTreeMap<u8, u8>>>,
}

impl ChannelClaim {
    fn take(map: &Arc<Mutex<BTreeMap<u8, u8>>>, channel: u8, pin: u8) -> Result<Self> {
        let mut m = crate::drivers::lock(map);
        if let Some(owner) = m.get(&channel) {
            return Err(HalError::Busy {
                what: format!(
                    "PWM channel {channel} (already driving GPIO {owner}; GPIO {pin} shares it)"
                ),
            });
        }
        m.insert(channel, pin);
        Ok(Self {
            channel,
            map: Arc::clone(map),
        })
    }
}

impl Drop for ChannelClaim {
    fn drop(&mut self) {
        crate::drivers::lock(&self.map).remove(&self.channel);
    }
}

/// GPIO controller over rppal: owned input and output lines with pulls, edge events
/// (rppal's interrupt thread, debounced, published to the board's event hub) and
/// hardware PWM on the pins that have a PWM channel. Software PWM is refused.
pub struct RppalGpio {
    gpio: rppal::gpio::Gpio,
    layout: PwmLayout,
    claims: Arc<Mutex<BTreeSet<u8>>>,
    channels: Arc<Mutex<BTreeMap<u8, u8>>>,
    events: EventHub,
}

impl fmt::Debug for RppalGpio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RppalGpio")
            .field("layout", &self.layout)
            .field("claimed", &self.claimed())
            .finish_non_exhaustive()
    }
}

impl RppalGpio {
    /// Opens rppal's GPIO; edges go to `events`.
    pub fn new(layout: PwmLayout, events: EventHub) -> Result<Self> {
        let gpio = rppal::gpio::Gpio::new().map_err(|e| match e {
            rppal::gpio::Error::UnknownModel => HalError::unsupported(
                "not a Raspberry Pi: rppal could not identify the board for GPIO",
            ),
            rppal::gpio::Error::PermissionDenied(path) => HalError::PermissionDenied {
                what: format!("{path} (add the user to the gpio group)"),
            },
            rppal::gpio::Error::Io(io) => HalError::io("opening GPIO (/dev/gpiomem)", io),
            other => HalError::io("opening GPIO", std::io::Error::other(other.to_string())),
        })?;
        Ok(Self {
            gpio,
            layout,
            claims: Arc::default(),
            channels: Arc::default(),
            events,
        })
    }
}

impl Gpio for RppalGpio {
    fn claim_input(&self, pin: u8, pull: Pull) -> Result<Box<dyn InputPin>> {
        let claim = Claim::take(&self.claims, pin)?;
        let p = self.gpio.get(pin).map_err(|e| gpio_error(pin, e))?;
        let input = match pull {
            Pull::None => p.into_input(),
            Pull::Up => p.into_input_pullup(),
            Pull::Down => p.into_input_pulldown(),
        };
        Ok(Box::new(RppalInput {
            input,
            events: self.events.clone(),
            _claim: claim,
        }))
    }

    fn claim_output(
        &self,
        pin: u8,
        initial: Level,
        on_drop: DropState,
    ) -> Result<Box<dyn OutputPin>> {
        let claim = Claim::take(&self.claims, pin)?;
        let p = self.gpio.get(pin).map_err(|e| gpio_error(pin, e))?;
        // Keep the current mode while the output latch is set, then switch to output,
        // so the line never shows the wrong level.
        let mode = p.mode();
        let mut io = p.into_io(mode);
        io.write(to_rppal(initial));
        io.set_mode(Mode::Output);
        // rppal would restore the previous mode on drop; the drop state is ours.
        io.set_reset_on_drop(false);
        Ok(Box::new(RppalOutput {
            io,
            level: initial,
            on_drop,
            _claim: claim,
        }))
    }

    fn claim_pwm(
        &self,
        pin: u8,
        frequency: Hertz,
        duty: Percent,
        on_drop: DropState,
    ) -> Result<Box<dyn PwmPin>> {
        let Some(channel) = self.layout.channel(pin) else {
            return Err(HalError::unsupported(format!(
                "hardware PWM on GPIO {pin}: only GPIO 12, 13, 18 and 19 have a PWM channel \
                 (Wrale does not fake PWM in software)"
            )));
        };
        check_frequency(frequency)?;
        let claim = Claim::take(&self.claims, pin)?;
        let channel_claim = ChannelClaim::take(&self.channels, channel, pin)?;
        let mut pwm = Pwm::with_frequency(
            rppal_channel(channel),
            frequency.get(),
            duty.fraction(),
            Polarity::Normal,
            true,
        )
        .map_err(|e| pwm_error(pin, channel, e))?;
        pwm.set_reset_on_drop(false);
        Ok(Box::new(RppalPwm {
            pwm,
            pin,
            channel,
            frequency,
            duty,
            on_drop,
            _channel: channel_claim,
            _claim: claim,
        }))
    }

    fn claimed(&self) -> Vec<u8> {
        crate::drivers::lock(&self.claims).iter().copied().collect()
    }
}

fn check_frequency(f: Hertz) -> Result<()> {
    if f.get().is_finite() && f.get() > 0.0 {
        Ok(())
    } else {
        Err(HalError::InvalidArgument(format!(
            "PWM frequency must be a positive number of hertz, got {}",
            f.get()
        )))
    }
}

fn to_rppal(level: Level) -> rppal::gpio::Level {
    match level {
        Level::Low => rppal::gpio::Level::Low,
        Level::High => rppal::gpio::Level::High,
    }
}

fn from_rppal(level: rppal::gpio::Level) -> Level {
    match level {
        rppal::gpio::Level::Low => Level::Low,
        rppal::gpio::Level::High => Level::High,
    }
}

/// An owned rppal input line.
struct RppalInput {
    input: rppal::gpio::InputPin,
    events: EventHub,
    _claim: Claim,
}

impl fmt::Debug for RppalInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RppalInput")
            .field("pin", &self.input.pin())
            .finish_non_exhaustive()
    }
}

impl InputPin for RppalInput {
    fn pin(&self) -> u8 {
        self.input.pin()
    }

    fn read(&self) -> Result<Level> {
        Ok(from_rppal(self.input.read()))
    }

    fn watch(&mut self, edge: Edge, debounce: Duration) -> Result<()> {
        let pin = self.input.pin();
        let trigger = match edge {
            Edge::Rising => Trigger::RisingEdge,
            Edge::Falling => Trigger::FallingEdge,
            Edge::Both => Trigger::Both,
        };
        let callback = |hub: EventHub, mut debouncer: Debouncer| {
            move |ev: rppal::gpio::Event| {
                if !debouncer.accept(ev.timestamp) {
                    return;
                }
                let level = match ev.trigger {
                    Trigger::RisingEdge => Level::High,
                    Trigger::FallingEdge => Level::Low,
                    _ => return,
                };
                hub.publish(HalEvent::Edge {
                    at: Timestamp::from_system(SystemTime::now()),
                    pin,
                    level,
                });
            }
        };
        // Ask the kernel to debounce too (glitches shorter than the window never
        // reach us); kernels without line debounce refuse, so fall back to the
        // software window alone.
        let kernel = (!debounce.is_zero()).then_some(debounce);
        let first = self.input.set_async_interrupt(
            trigger,
            kernel,
            callback(self.events.clone(), Debouncer::new(debounce)),
        );
        match first {
            Ok(()) => Ok(()),
            Err(_) if kernel.is_some() => self
                .input
                .set_async_interrupt(
                    trigger,
                    None,
                    callback(self.events.clone(), Debouncer::new(debounce)),
                )
                .map_err(|e| gpio_error(pin, e)),
            Err(e) => Err(gpio_error(pin, e)),
        }
    }

    fn unwatch(&mut self) -> Result<()> {
        let pin = self.input.pin();
        self.input
            .clear_async_interrupt()
            .map_err(|e| gpio_error(pin, e))
    }
}

/// An owned rppal output line that goes to its [`DropState`] on drop.
struct RppalOutput {
    io: IoPin,
    level: Level,
    on_drop: DropState,
    _claim: Claim,
}

impl fmt::Debug for RppalOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RppalOutput")
            .field("pin", &self.io.pin())
            .field("level", &self.level)
            .field("on_drop", &self.on_drop)
            .finish()
    }
}

impl OutputPin for RppalOutput {
    fn pin(&self) -> u8 {
        self.io.pin()
    }

    fn write(&mut self, level: Level) -> Result<()> {
        self.io.write(to_rppal(level));
        self.level = level;
        Ok(())
    }

    fn level(&self) -> Level {
        self.level
    }
}

impl Drop for RppalOutput {
    fn drop(&mut self) {
        match self.on_drop {
            DropState::Low => self.io.write(rppal::gpio::Level::Low),
            DropState::High => self.io.write(rppal::gpio::Level::High),
            DropState::Release => {
                self.io.set_mode(Mode::Input);
                self.io.set_bias(Bias::Off);
            }
        }
    }
}

/// An owned hardware PWM channel that goes to its [`DropState`] on drop.
struct RppalPwm {
    pwm: Pwm,
    pin: u8,
    channel: u8,
    frequency: Hertz,
    duty: Percent,
    on_drop: DropState,
    _channel: ChannelClaim,
    _claim: Claim,
}

impl fmt::Debug for RppalPwm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RppalPwm")
            .field("pin", &self.pin)
            .field("channel", &self.channel)
            .field("frequency", &self.frequency)
            .field("duty", &self.duty)
            .field("on_drop", &self.on_drop)
            .finish()
    }
}

impl PwmPin for RppalPwm {
    fn pin(&self) -> u8 {
        self.pin
    }

    fn set_frequency(&mut self, frequency: Hertz) -> Result<()> {
        check_frequency(frequency)?;
        self.pwm
            .set_frequency(frequency.get(), self.duty.fraction())
            .map_err(|e| pwm_error(self.pin, self.channel, e))?;
        self.frequency = frequency;
        Ok(())
    }

    fn set_duty(&mut self, duty: Percent) -> Result<()> {
        self.pwm
            .set_duty_cycle(duty.fraction())
            .map_err(|e| pwm_error(self.pin, self.channel, e))?;
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

impl Drop for RppalPwm {
    fn drop(&mut self) {
        // Errors cannot be returned from drop; the channel keeps its last setting then.
        match self.on_drop {
            DropState::Low => {
                let _ = self.pwm.set_duty_cycle(0.0);
            }
            DropState::High => {
                let _ = self.pwm.set_duty_cycle(1.0);
            }
            DropState::Release => {
                // rppal disables and unexports the channel when the Pwm drops.
                self.pwm.set_reset_on_drop(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pwm_channels_per_layout() {
        let old = PwmLayout::for_soc(SoC::Bcm2711);
        assert_eq!(old, PwmLayout::Bcm2835);
        assert_eq!(old.channel(12), Some(0));
        assert_eq!(old.channel(18), Some(0));
        assert_eq!(old.channel(13), Some(1));
        assert_eq!(old.channel(19), Some(1));
        let pi5 = PwmLayout::for_soc(SoC::Bcm2712);
        assert_eq!(pi5, PwmLayout::Rp1);
        assert_eq!(
            [12, 13, 18, 19].map(|p| pi5.channel(p)),
            [Some(0), Some(1), Some(2), Some(3)]
        );
        for layout in [old, pi5] {
            for pin in (0..=27).filter(|p| ![12, 13, 18, 19].contains(p)) {
                assert_eq!(layout.channel(pin), None, "{layout:?} GPIO {pin}");
            }
        }
    }

    #[test]
    fn debouncer_drops_events_inside_the_window() {
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(50));
        assert!(d.accept(ms(1000)));
        assert!(!d.accept(ms(1010)));
        assert!(!d.accept(ms(1049)));
        assert!(d.accept(ms(1050)));
        assert!(!d.accept(ms(1060)));
        let mut none = Debouncer::new(Duration::ZERO);
        assert!(none.accept(ms(5)));
        assert!(none.accept(ms(5)));
    }

    #[test]
    fn claims_are_exclusive_and_released_on_drop() {
        let set = Arc::default();
        let a = Claim::take(&set, 17).unwrap();
        assert!(matches!(
            Claim::take(&set, 17),
            Err(HalError::PinUsed { pin: 17 })
        ));
        drop(a);
        assert!(Claim::take(&set, 17).is_ok());

        let map = Arc::default();
        let c = ChannelClaim::take(&map, 0, 12).unwrap();
        let e = ChannelClaim::take(&map, 0, 18).unwrap_err();
        assert!(e.to_string().contains("GPIO 12"), "{e}");
        drop(c);
        assert!(ChannelClaim::take(&map, 0, 18).is_ok());
    }

    #[test]
    fn gpio_errors_map_to_portable_kinds() {
        use crate::HalErrorKind;
        use rppal::gpio::Error as E;
        assert!(matches!(
            gpio_error(4, E::PinUsed(4)),
            HalError::PinUsed { pin: 4 }
        ));
        assert_eq!(
            gpio_error(4, E::UnknownModel).kind(),
            HalErrorKind::Unsupported
        );
        assert_eq!(
            gpio_error(40, E::PinNotAvailable(40)).kind(),
            HalErrorKind::InvalidArgument
        );
        assert_eq!(
            pwm_error(
                18,
                0,
                rppal::pwm::Error::Io(std::io::ErrorKind::NotFound.into())
            )
            .kind(),
            HalErrorKind::NotFound
        );
    }
}
