//! I2C sensor drivers, generic over `embedded-hal` 1.0.
//!
//! Each driver owns a bus handle of any type implementing
//! [`embedded_hal::i2c::I2c`] (rppal's `I2c`, linux-embedded-hal's `I2cdev`, or
//! embedded-hal-mock's `Mock` in tests) and, where the chip needs time to convert, a
//! [`embedded_hal::delay::DelayNs`]. They turn registers into `wrale-core` units and
//! never invent a value: a failed transfer is a [`HalError::Bus`] naming the chip and
//! its address, a reply that cannot be trusted (bad CRC, overflow flag, a chip that
//! lost its calibration) is a [`HalError::SensorFault`].
//!
//! | driver | chip | HAL adapter |
//! |---|---|---|
//! | [`Ina219`] | TI INA219 bus voltage / shunt current / power monitor | [`Ina219PowerMonitor`]: [`PowerMonitor`](crate::power::PowerMonitor) |
//! | [`Max17048`] | Maxim MAX17048 Li-ion fuel gauge | [`Max17048Battery`]: [`Battery`](crate::power::Battery) |
//! | [`Sht3x`] | Sensirion SHT30/31/35 temperature and humidity | [`Sht3xThermal`]: [`ThermalSensor`](crate::thermal::ThermalSensor) |
//!
//! The adapters hold their driver behind a `Mutex`, because the HAL traits take
//! `&self` and may be called from several threads.
//!
//! ```
//! use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
//! use wrale_hal::drivers::Max17048;
//!
//! // VCELL = 0xD000 -> 53248 x 78.125 µV = 4.16 V
//! let mut bus = Mock::new(&[Transaction::write_read(0x36, vec![0x02], vec![0xD0, 0x00])]);
//! let mut gauge = Max17048::new(bus.clone());
//! assert!((gauge.voltage().unwrap().get() - 4.16).abs() < 1e-9);
//! bus.done();
//! ```

use std::fmt;
use std::time::Duration;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{Error as _, ErrorKind, I2c, NoAcknowledgeSource};

use crate::error::{HalError, Result};

pub mod ina219;
pub mod max17048;
pub mod sht3x;

pub use ina219::{Ina219, Ina219PowerMonitor};
pub use max17048::{Max17048, Max17048Battery};
pub use sht3x::{Sht3x, Sht3xThermal};

/// Where a chip sits: its name, the bus name and its 7-bit address. Used to word
/// errors (`bus error on i2c-1@0x40: INA219: no acknowledge ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chip {
    pub(crate) name: &'static str,
    pub(crate) bus: String,
    pub(crate) address: u8,
}

impl Chip {
    pub(crate) fn new(name: &'static str, address: u8) -> Self {
        Self {
            name,
            bus: DEFAULT_BUS_NAME.to_owned(),
            address,
        }
    }

    /// `i2c-1@0x40`.
    pub(crate) fn location(&self) -> String {
        format!("{}@0x{:02x}", self.bus, self.address)
    }

    /// Maps an embedded-hal I2C error to [`HalError::Bus`], naming the chip, the
    /// address and what was being done.
    pub(crate) fn bus_error<E: embedded_hal::i2c::Error>(&self, doing: &str, e: E) -> HalError {
        HalError::Bus {
            bus: self.location(),
            detail: format!(
                "{} at 0x{:02x}: {} while {doing} ({e:?})",
                self.name,
                self.address,
                describe_kind(e.kind())
            ),
        }
    }

    /// A [`HalError::SensorFault`] for this chip.
    pub(crate) fn fault(&self, detail: impl Into<String>) -> HalError {
        HalError::sensor_fault(format!("{} {}", self.name, self.location()), detail)
    }

    /// Reads a 16-bit big-endian register (pointer write, repeated start, 2-byte read).
    pub(crate) fn read_u16<I: I2c>(&self, i2c: &mut I, reg: u8) -> Result<u16> {
        let mut buf = [0u8; 2];
        i2c.write_read(self.address, &[reg], &mut buf)
            .map_err(|e| self.bus_error(&format!("reading register 0x{reg:02x}"), e))?;
        Ok(u16::from_be_bytes(buf))
    }

    /// Writes a 16-bit big-endian register.
    pub(crate) fn write_u16<I: I2c>(&self, i2c: &mut I, reg: u8, value: u16) -> Result<()> {
        let [hi, lo] = value.to_be_bytes();
        i2c.write(self.address, &[reg, hi, lo]).map_err(|e| {
            self.bus_error(&format!("writing 0x{value:04x} to register 0x{reg:02x}"), e)
        })
    }
}

/// Bus name used in errors until a backend names the bus (`with_bus_name("i2c-1")`).
pub const DEFAULT_BUS_NAME: &str = "i2c";

/// Words an embedded-hal error kind for a human.
fn describe_kind(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address) => {
            "no acknowledge to its address (missing, unpowered or wrong address?)"
        }
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data) => "no acknowledge to a data byte",
        ErrorKind::NoAcknowledge(_) => "no acknowledge",
        ErrorKind::Bus => "bus error (misplaced START/STOP: wiring, noise or pull-ups)",
        ErrorKind::ArbitrationLoss => "arbitration lost (another master or a stuck line)",
        ErrorKind::Overrun => "receive overrun",
        _ => "I2C transfer failed",
    }
}

/// Probes every 7-bit address from 0x03 to 0x77 with a one-byte read and returns
/// those that acknowledge, ascending.
///
/// A [`ErrorKind::NoAcknowledge`] means "nobody there"; any other error aborts the
/// scan with [`HalError::Bus`], because the bus itself is in trouble. A one-byte read
/// is what `i2cdetect -r` does; it has no side effect on the chips Wrale drives.
pub fn scan<I: I2c>(i2c: &mut I, bus: &str) -> Result<Vec<u8>> {
    scan_with(i2c, bus, |_| false)
}

/// Like [`scan`], with a backend-specific test for errors that nevertheless mean
/// "a device is there" (on Linux, `EBUSY`: the address is bound to a kernel driver,
/// shown as `UU` by `i2cdetect`).
pub fn scan_with<I: I2c>(
    i2c: &mut I,
    bus: &str,
    present_anyway: impl Fn(&I::Error) -> bool,
) -> Result<Vec<u8>> {
    let mut found = Vec::new();
    for address in 0x03..=0x77u8 {
        let mut buf = [0u8; 1];
        match i2c.read(address, &mut buf) {
            Ok(()) => found.push(address),
            Err(e) if present_anyway(&e) => found.push(address),
            Err(e) if matches!(e.kind(), ErrorKind::NoAcknowledge(_)) => {}
            Err(e) => {
                return Err(HalError::Bus {
                    bus: bus.to_owned(),
                    detail: format!(
                        "scan stopped at 0x{address:02x}: {} ({e:?})",
                        describe_kind(e.kind())
                    ),
                });
            }
        }
    }
    Ok(found)
}

/// A [`DelayNs`] that sleeps the calling thread (`std::thread::sleep`), for drivers
/// running on a real bus.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdDelay;

impl DelayNs for StdDelay {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(Duration::from_nanos(u64::from(ns)));
    }
}

/// Locks a driver mutex; a panic in another thread while it held the lock cannot
/// leave a driver in a state worse than a failed transfer, so poisoning is ignored.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Formats a driver for `Debug` without requiring the bus type to be `Debug`
/// (linux-embedded-hal's `I2cdev` is not).
pub(crate) fn debug_chip<'a, 'b: 'a>(
    f: &'a mut fmt::Formatter<'b>,
    chip: &Chip,
) -> fmt::DebugStruct<'a, 'b> {
    let mut d = f.debug_struct(chip.name);
    d.field("bus", &chip.bus)
        .field("address", &format_args!("0x{:02x}", chip.address));
    d
}
