//! GPIO through the Linux GPIO character device (`/dev/gpiochipN`, uAPI v1 via
//! the `gpio-cdev` crate), never the deprecated sysfs GPIO interface.
//!
//! Pin numbers are line offsets on the chip, which equal BCM numbers on the Pi's
//! header chip (`gpiochip0` on Pi 4 and on Pi 5 with kernel 6.6+; `gpiochip4` on
//! early Pi 5 kernels: set `gpio_chip` accordingly).
//!
//! Edge events: watching an input re-requests its line as an event line; a thread
//! per watched pin waits on it with `poll(2)` (so it can be stopped), debounces by
//! the kernel's event timestamps and publishes [`HalEvent::Edge`] on the board's
//! [`EventHub`].
//!
//! Pull resistors use the uAPI v1 bias flags (Linux 5.5 and later).
//!
//! Hardware PWM goes through the kernel's PWM class (see [`SysfsPwmPin`](super::SysfsPwmPin)) when the
//! controller was given the board's root and model ([`CdevGpio::with_pwm`]);
//! otherwise `claim_pwm` is refused with [`HalError::Unsupported`]. Wrale never
//! fakes PWM in software.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gpio_cdev::{Chip, EventRequestFlags, Line, LineEventHandle, LineHandle, LineRequestFlags};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use wrale_core::board::BoardModel;
use wrale_core::model::{Edge, Level, Pull};
use wrale_core::units::{Hertz, Percent};

use crate::board::Clock;
use crate::error::{HalError, Result};
use crate::events::{EventHub, HalEvent};
use crate::gpio::{DropState, Gpio, InputPin, OutputPin, PwmPin};

use super::pwm::SysfsPwm;

/// Consumer label the kernel shows for lines Wrale holds (`gpioinfo`).
const CONSUMER: &str = "wrale";

/// uAPI v1 `GPIOHANDLE_REQUEST_BIAS_*` flags (Linux 5.5+); `gpio-cdev` 0.6 has no
/// names for them, the kernel accepts them in the same flags word.
const BIAS_PULL_UP: u32 = 1 << 5;
const BIAS_PULL_DOWN: u32 = 1 << 6;
const BIAS_DISABLE: u32 = 1 << 7;

/// How long the edge thread waits in `poll(2)` before checking its stop flag.
const POLL_MS: i32 = 100;

fn input_flags(pull: Pull) -> LineRequestFlags {
    let bias = match pull {
        Pull::None => BIAS_DISABLE,
        Pull::Up => BIAS_PULL_UP,
        Pull::Down => BIAS_PULL_DOWN,
    };
    LineRequestFlags::INPUT | LineRequestFlags::from_bits_retain(bias)
}

/// Maps a `gpio-cdev` error to a [`HalError`]: missing device -> NotFound, line in
/// use -> PinUsed, not a GPIO chip -> InvalidArgument, and so on.
fn cdev_error(context: &str, pin: Option<u8>, e: &gpio_cdev::Error) -> HalError {
    use std::error::Error as _;
    let errno = e.source().and_then(|s| {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            io.raw_os_error().or(match io.kind() {
                io::ErrorKind::NotFound => Some(Errno::ENOENT as i32),
                io::ErrorKind::PermissionDenied => Some(Errno::EACCES as i32),
                _ => None,
            })
        } else {
            s.downcast_ref::<Errno>().map(|n| *n as i32)
        }
    });
    match errno.map(Errno::from_i32) {
        Some(Errno::ENOENT | Errno::ENODEV | Errno::ENXIO) => HalError::not_found(context),
        Some(Errno::EBUSY) => match pin {
            Some(pin) => HalError::PinUsed { pin },
            None => HalError::Busy {
                what: context.to_owned(),
            },
        },
        Some(Errno::EACCES | Errno::EPERM) => HalError::PermissionDenied {
            what: context.to_owned(),
        },
        Some(Errno::ENOTTY) => {
            HalError::InvalidArgument(format!("{context} is not a GPIO character device"))
        }
        Some(Errno::EINVAL) => HalError::InvalidArgument(format!(
            "{context}: request rejected by the kernel (EINVAL; pull resistors need Linux 5.5+)"
        )),
        Some(n) => HalError::io(context, io::Error::from_raw_os_error(n as i32)),
        None => HalError::io(context, io::Error::other(e.to_string())),
    }
}

/// The set of pins claimed through one controller, shared with the pin handles.
type ClaimSet = Arc<Mutex<BTreeSet<u8>>>;

fn lock_set(set: &ClaimSet) -> std::sync::MutexGuard<'_, BTreeSet<u8>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// A pin's entry in the claim set, removed when the pin handle is dropped (after
/// the line itself has been released, since it is the handles' last field).
#[derive(Debug)]
struct Claim {
    pin: u8,
    set: ClaimSet,
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock_set(&self.set).remove(&self.pin);
    }
}

/// Enters `pin` (of a chip with `lines` lines, at `path`) in `set`: a pin already
/// there is [`HalError::PinUsed`], a pin past the chip's end an invalid argument.
fn reserve_in(set: &ClaimSet, pin: u8, lines: u32, path: &Path) -> Result<Claim> {
    if u32::from(pin) >= lines {
        return Err(HalError::InvalidArgument(format!(
            "GPIO {pin}: {} has lines 0..{lines}",
            path.display()
        )));
    }
    if !lock_set(set).insert(pin) {
        return Err(HalError::PinUsed { pin });
    }
    Ok(Claim {
        pin,
        set: Arc::clone(set),
    })
}

/// A GPIO controller on a Linux GPIO character device.
pub struct CdevGpio {
    path: PathBuf,
    chip: Mutex<Chip>,
    lines: u32,
    claimed: ClaimSet,
    events: EventHub,
    clock: Arc<dyn Clock>,
    pwm: Option<SysfsPwm>,
}

impl fmt::Debug for CdevGpio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdevGpio")
            .field("path", &self.path)
            .field("lines", &self.lines)
            .field("claimed", &self.claimed())
            .finish_non_exhaustive()
    }
}

impl CdevGpio {
    /// Opens the chip at `path`; edge events go to `events`, stamped by `clock`.
    /// A missing device is [`HalError::NotFound`] naming the path.
    pub fn open(path: &Path, events: EventHub, clock: Arc<dyn Clock>) -> Result<Self> {
        let context = format!("GPIO character device {}", path.display());
        let chip = Chip::new(path).map_err(|e| cdev_error(&context, None, &e))?;
        Ok(Self {
            path: path.to_owned(),
            lines: chip.num_lines(),
            chip: Mutex::new(chip),
            claimed: Arc::new(Mutex::new(BTreeSet::new())),
            events,
            clock,
            pwm: None,
        })
    }

    /// Enables hardware PWM through `sys/class/pwm` under `root`, with the header
    /// pin map of `model`.
    pub fn with_pwm(mut self, root: &Path, model: BoardModel) -> Self {
        self.pwm = Some(SysfsPwm::new(root, model));
        self
    }

    /// Number of lines on the chip.
    pub fn lines(&self) -> u32 {
        self.lines
    }

    /// Enters `pin` in the claim set (without touching the line).
    fn reserve_pin(&self, pin: u8) -> Result<Claim> {
        reserve_in(&self.claimed, pin, self.lines, &self.path)
    }

    fn reserve(&self, pin: u8) -> Result<(Claim, Line)> {
        let claim = self.reserve_pin(pin)?;
        let line = self
            .chip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_line(u32::from(pin))
            .map_err(|e| cdev_error(&format!("GPIO {pin}"), Some(pin), &e))?;
        Ok((claim, line))
    }
}

impl Gpio for CdevGpio {
    fn claim_input(&self, pin: u8, pull: Pull) -> Result<Box<dyn InputPin>> {
        let (claim, line) = self.reserve(pin)?;
        let handle = line
            .request(input_flags(pull), 0, CONSUMER)
            .map_err(|e| cdev_error(&format!("GPIO {pin}"), Some(pin), &e))?;
        Ok(Box::new(CdevInput {
            pin,
            line,
            pull,
            state: InputState::Idle(handle),
            events: self.events.clone(),
            clock: Arc::clone(&self.clock),
            _claim: claim,
        }))
    }

    fn claim_output(
        &self,
        pin: u8,
        initial: Level,
        on_drop: DropState,
    ) -> Result<Box<dyn OutputPin>> {
        let (claim, line) = self.reserve(pin)?;
        let handle = line
            .request(
                LineRequestFlags::OUTPUT,
                u8::from(initial.is_high()),
                CONSUMER,
            )
            .map_err(|e| cdev_error(&format!("GPIO {pin}"), Some(pin), &e))?;
        Ok(Box::new(CdevOutput {
            pin,
            line,
            handle: Some(handle),
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
        let pwm = self.pwm.as_ref().ok_or_else(|| {
            HalError::unsupported(format!(
                "hardware PWM on GPIO {pin}: this controller has no PWM class access \
                 (Wrale never generates PWM in software)"
            ))
        })?;
        // The line is not requested through the character device: that would switch
        // the pin from its PWM function to plain GPIO.
        let claim = self.reserve_pin(pin)?;
        Ok(Box::new(pwm.claim(pin, frequency, duty, on_drop, claim)?))
    }

    fn claimed(&self) -> Vec<u8> {
        lock_set(&self.claimed).iter().copied().collect()
    }
}

/// Accepts a transition only when it comes at least `debounce` after the previous
/// accepted one (timestamps in nanoseconds, from the kernel).
#[derive(Debug, Clone)]
pub(crate) struct Debouncer {
    debounce_ns: u64,
    last: Option<u64>,
}

impl Debouncer {
    pub(crate) fn new(debounce: Duration) -> Self {
        Self {
            debounce_ns: u64::try_from(debounce.as_nanos()).unwrap_or(u64::MAX),
            last: None,
        }
    }

    pub(crate) fn accept(&mut self, ts_ns: u64) -> bool {
        if let Some(last) = self.last {
            if ts_ns.saturating_sub(last) < self.debounce_ns {
                return false;
            }
        }
        self.last = Some(ts_ns);
        true
    }
}

/// Size of the kernel's `struct gpioevent_data { u64 timestamp; u32 id; }`,
/// including the tail padding to the alignment of `u64` on this target.
fn event_size() -> usize {
    let align = std::mem::align_of::<u64>();
    12_usize.div_ceil(align) * align
}

/// Decodes one `gpioevent_data` record: (timestamp ns, level after the edge).
pub(crate) fn decode_event(buf: &[u8]) -> Option<(u64, Level)> {
    let ts = u64::from_ne_bytes(buf.get(0..8)?.try_into().ok()?);
    let id = u32::from_ne_bytes(buf.get(8..12)?.try_into().ok()?);
    // GPIOEVENT_EVENT_RISING_EDGE = 1, GPIOEVENT_EVENT_FALLING_EDGE = 2.
    match id {
        1 => Some((ts, Level::High)),
        2 => Some((ts, Level::Low)),
        _ => None,
    }
}

struct EdgeThread {
    file: File,
    pin: u8,
    debouncer: Debouncer,
    stop: Arc<AtomicBool>,
    events: EventHub,
    clock: Arc<dyn Clock>,
}

impl EdgeThread {
    fn run(mut self) {
        let size = event_size();
        let mut buf = [0u8; 16];
        while !self.stop.load(Ordering::Relaxed) {
            let revents = {
                let mut fds = [PollFd::new(&self.file, PollFlags::POLLIN)];
                match poll(&mut fds, POLL_MS) {
                    Ok(0) | Err(Errno::EINTR) => continue,
                    Ok(_) => fds[0].revents().unwrap_or(PollFlags::empty()),
                    Err(_) => return,
                }
            };
            if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL) {
                return;
            }
            if !revents.contains(PollFlags::POLLIN) {
                continue;
            }
            let n = match self.file.read(&mut buf[..size]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let Some((ts, level)) = buf
                .get(..n.min(size))
                .filter(|b| b.len() == size)
                .and_then(decode_event)
            else {
                continue;
            };
            if self.debouncer.accept(ts) {
                self.events.publish(HalEvent::Edge {
                    at: self.clock.now(),
                    pin: self.pin,
                    level,
                });
            }
        }
    }
}

/// A watched line: the event handle (kept for reading the level) and the thread
/// reading its events from a duplicate of its file descriptor.
struct Watch {
    handle: LineEventHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The thread exits within one poll timeout; it cannot panic.
            let _ = t.join();
        }
    }
}

enum InputState {
    Idle(LineHandle),
    Watching(Watch),
    /// Between two requests (only seen if re-requesting the line failed).
    Released,
}

/// An input line on a GPIO character device.
pub struct CdevInput {
    pin: u8,
    line: Line,
    pull: Pull,
    state: InputState,
    events: EventHub,
    clock: Arc<dyn Clock>,
    _claim: Claim,
}

impl fmt::Debug for CdevInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            InputState::Idle(_) => "idle",
            InputState::Watching(_) => "watching",
            InputState::Released => "released",
        };
        f.debug_struct("CdevInput")
            .field("pin", &self.pin)
            .field("pull", &self.pull)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl CdevInput {
    fn context(&self) -> String {
        format!("GPIO {}", self.pin)
    }

    fn request_idle(&mut self) -> Result<()> {
        let handle = self
            .line
            .request(input_flags(self.pull), 0, CONSUMER)
            .map_err(|e| cdev_error(&self.context(), Some(self.pin), &e))?;
        self.state = InputState::Idle(handle);
        Ok(())
    }
}

impl InputPin for CdevInput {
    fn pin(&self) -> u8 {
        self.pin
    }

    fn read(&self) -> Result<Level> {
        let v = match &self.state {
            InputState::Idle(h) => h.get_value(),
            InputState::Watching(w) => w.handle.get_value(),
            InputState::Released => {
                return Err(HalError::Busy {
                    what: format!("{} (line could not be re-requested)", self.context()),
                });
            }
        };
        v.map(|v| Level::from(v != 0))
            .map_err(|e| cdev_error(&self.context(), Some(self.pin), &e))
    }

    fn watch(&mut self, edge: Edge, debounce: Duration) -> Result<()> {
        // A line is either a value handle or an event handle: release, then re-request.
        self.state = InputState::Released;
        let flags = match edge {
            Edge::Rising => EventRequestFlags::RISING_EDGE,
            Edge::Falling => EventRequestFlags::FALLING_EDGE,
            Edge::Both => EventRequestFlags::BOTH_EDGES,
        };
        let handle = match self.line.events(input_flags(self.pull), flags, CONSUMER) {
            Ok(h) => h,
            Err(e) => {
                let err = cdev_error(&self.context(), Some(self.pin), &e);
                self.request_idle()?;
                return Err(err);
            }
        };
        let file = handle
            .file()
            .try_clone()
            .map_err(|e| HalError::io(self.context(), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let worker = EdgeThread {
            file,
            pin: self.pin,
            debouncer: Debouncer::new(debounce),
            stop: Arc::clone(&stop),
            events: self.events.clone(),
            clock: Arc::clone(&self.clock),
        };
        let thread = std::thread::Builder::new()
            .name(format!("wrale-gpio{}", self.pin))
            .spawn(move || worker.run())
            .map_err(|e| HalError::io("spawning the GPIO edge thread", e))?;
        self.state = InputState::Watching(Watch {
            handle,
            stop,
            thread: Some(thread),
        });
        Ok(())
    }

    fn unwatch(&mut self) -> Result<()> {
        match self.state {
            InputState::Idle(_) => Ok(()),
            InputState::Watching(_) | InputState::Released => {
                // Dropping the watch stops and joins its thread and releases the line.
                self.state = InputState::Released;
                self.request_idle()
            }
        }
    }
}

/// An output line on a GPIO character device.
pub struct CdevOutput {
    pin: u8,
    line: Line,
    handle: Option<LineHandle>,
    level: Level,
    on_drop: DropState,
    _claim: Claim,
}

impl fmt::Debug for CdevOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdevOutput")
            .field("pin", &self.pin)
            .field("level", &self.level)
            .field("on_drop", &self.on_drop)
            .finish_non_exhaustive()
    }
}

impl OutputPin for CdevOutput {
    fn pin(&self) -> u8 {
        self.pin
    }

    fn write(&mut self, level: Level) -> Result<()> {
        let h = self.handle.as_ref().ok_or_else(|| HalError::Busy {
            what: format!("GPIO {} was released", self.pin),
        })?;
        h.set_value(u8::from(level.is_high()))
            .map_err(|e| cdev_error(&format!("GPIO {}", self.pin), Some(self.pin), &e))?;
        self.level = level;
        Ok(())
    }

    fn level(&self) -> Level {
        self.level
    }
}

impl Drop for CdevOutput {
    fn drop(&mut self) {
        let Some(h) = self.handle.take() else { return };
        // Best effort: a destructor has nobody to report to. After release the Pi's
        // pin controller keeps a line's direction and last driven value.
        match self.on_drop {
            DropState::Low => {
                let _ = h.set_value(0);
            }
            DropState::High => {
                let _ = h.set_value(1);
            }
            DropState::Release => {
                drop(h);
                // Re-request as a plain input and let go: the line floats.
                let _ = self
                    .line
                    .request(LineRequestFlags::INPUT, 0, CONSUMER)
                    .map(drop);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HalErrorKind, SystemClock};

    #[test]
    fn claims_are_exclusive_until_dropped() {
        let set: ClaimSet = Arc::default();
        let chip = Path::new("/dev/gpiochip0");
        let a = reserve_in(&set, 17, 54, chip).unwrap();
        let _b = reserve_in(&set, 4, 54, chip).unwrap();
        let e = reserve_in(&set, 17, 54, chip).unwrap_err();
        assert!(matches!(e, HalError::PinUsed { pin: 17 }), "{e}");
        assert_eq!(e.kind(), HalErrorKind::Busy);
        assert_eq!(lock_set(&set).iter().copied().collect::<Vec<_>>(), [4, 17]);
        drop(a);
        let _a2 = reserve_in(&set, 17, 54, chip).unwrap();
        let e = reserve_in(&set, 54, 54, chip).unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::InvalidArgument);
    }

    #[test]
    fn debounce_ignores_close_transitions() {
        let mut d = Debouncer::new(Duration::from_millis(10));
        assert!(d.accept(1_000_000));
        assert!(!d.accept(5_000_000)); // 4 ms later: bounce
        assert!(!d.accept(10_999_999)); // still < 10 ms after the accepted one
        assert!(d.accept(11_000_000));
        let mut none = Debouncer::new(Duration::ZERO);
        assert!(none.accept(5) && none.accept(5) && none.accept(6));
    }

    #[test]
    fn event_records_decode() {
        let mut rec = vec![0u8; event_size()];
        rec[..8].copy_from_slice(&123_456_789u64.to_ne_bytes());
        rec[8..12].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(decode_event(&rec), Some((123_456_789, Level::High)));
        rec[8..12].copy_from_slice(&2u32.to_ne_bytes());
        assert_eq!(decode_event(&rec), Some((123_456_789, Level::Low)));
        rec[8..12].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(decode_event(&rec), None);
        assert_eq!(decode_event(&rec[..10]), None);
        assert!(event_size() == 16 || event_size() == 12);
    }

    #[test]
    fn bias_flags_ride_along() {
        assert_eq!(input_flags(Pull::Up).bits(), 1 | (1 << 5));
        assert_eq!(input_flags(Pull::Down).bits(), 1 | (1 << 6));
        assert_eq!(input_flags(Pull::None).bits(), 1 | (1 << 7));
    }

    #[test]
    fn missing_chip_is_not_found_and_a_plain_file_is_refused() {
        let e = CdevGpio::open(
            Path::new("/nonexistent/gpiochip9"),
            EventHub::new(),
            Arc::new(SystemClock),
        )
        .unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::NotFound);
        assert!(e.to_string().contains("/nonexistent/gpiochip9"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("gpiochip0");
        std::fs::write(&fake, "not a chip").unwrap();
        let e = CdevGpio::open(&fake, EventHub::new(), Arc::new(SystemClock)).unwrap_err();
        assert_eq!(e.kind(), HalErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("not a GPIO character device"), "{e}");
    }
}
