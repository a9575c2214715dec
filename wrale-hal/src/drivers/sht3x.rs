//! Sensirion SHT3x (SHT30/31/35) temperature and relative-humidity sensor.
//!
//! Commands are 16-bit, MSB first (shared/PHYSICS.md §5). A measurement is a
//! single shot at high repeatability without clock stretching (0x2400): the driver
//! sends the command, waits for the conversion with a [`DelayNs`], then reads six
//! bytes `T_msb T_lsb CRC RH_msb RH_lsb CRC`. Both CRCs (CRC-8, polynomial 0x31,
//! init 0xFF) are checked; a mismatch is a [`HalError::SensorFault`], never a value.
//!
//! `T = −45 + 175 · S_T / 65535 °C`, `RH = 100 · S_RH / 65535 %`.

use std::fmt;
use std::sync::Mutex;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;
use wrale_core::model::SensorKind;
use wrale_core::units::{Celsius, RelativeHumidity};

use super::{Chip, debug_chip, lock};
use crate::error::{HalError, Result};
use crate::thermal::ThermalSensor;

/// Address with ADDR low.
pub const ADDRESS_LOW: u8 = 0x44;
/// Address with ADDR high.
pub const ADDRESS_HIGH: u8 = 0x45;

/// Commands.
pub mod cmd {
    /// Single shot, high repeatability, no clock stretching.
    pub const MEASURE_HIGH: u16 = 0x2400;
    /// Soft reset.
    pub const SOFT_RESET: u16 = 0x30A2;
    /// Heater on.
    pub const HEATER_ON: u16 = 0x306D;
    /// Heater off.
    pub const HEATER_OFF: u16 = 0x3066;
    /// Read the status register.
    pub const READ_STATUS: u16 = 0xF32D;
    /// Clear the status register's alert flags.
    pub const CLEAR_STATUS: u16 = 0x3041;
}

/// Wait after a high-repeatability single shot before reading: the datasheet's
/// maximum is 15.5 ms (the Linux driver waits 15 ms); rounded up.
pub const MEASURE_WAIT_MS: u32 = 16;
/// Wait after a soft reset (datasheet: 1.5 ms maximum).
pub const RESET_WAIT_MS: u32 = 2;

/// Status register bit 13: the heater is on.
pub const STATUS_HEATER: u16 = 1 << 13;

/// Sensirion's CRC-8: polynomial 0x31, init 0xFF, no reflection, no final XOR.
/// `crc8(&[0xBE, 0xEF]) == 0x92`.
pub fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0xFFu8;
    for &byte in data {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x31
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Temperature from a raw word: `−45 + 175 · S / 65535`.
pub fn temperature_from_raw(raw: u16) -> Celsius {
    Celsius(-45.0 + 175.0 * f64::from(raw) / 65535.0)
}

/// Relative humidity from a raw word: `100 · S / 65535`.
pub fn humidity_from_raw(raw: u16) -> RelativeHumidity {
    RelativeHumidity(100.0 * f64::from(raw) / 65535.0)
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Air temperature.
    pub temperature: Celsius,
    /// Relative humidity.
    pub humidity: RelativeHumidity,
}

/// The SHT3x driver.
pub struct Sht3x<I2C, D> {
    i2c: I2C,
    delay: D,
    chip: Chip,
}

impl<I2C, D> fmt::Debug for Sht3x<I2C, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_chip(f, &self.chip).finish()
    }
}

impl<I2C: I2c, D: DelayNs> Sht3x<I2C, D> {
    /// A driver for the sensor at `address` (0x44 or 0x45).
    pub fn new(i2c: I2C, delay: D, address: u8) -> Result<Self> {
        if address != ADDRESS_LOW && address != ADDRESS_HIGH {
            return Err(HalError::InvalidArgument(format!(
                "SHT3x address must be 0x44 or 0x45, got 0x{address:02x}"
            )));
        }
        Ok(Self {
            i2c,
            delay,
            chip: Chip::new("SHT3x", address),
        })
    }

    /// Names the bus in errors (`i2c-1`).
    pub fn with_bus_name(mut self, bus: impl Into<String>) -> Self {
        self.chip.bus = bus.into();
        self
    }

    /// The 7-bit address.
    pub fn address(&self) -> u8 {
        self.chip.address
    }

    /// Gives the bus and the delay back.
    pub fn release(self) -> (I2C, D) {
        (self.i2c, self.delay)
    }

    /// Takes one high-repeatability measurement (command, wait 16 ms, read, check
    /// both CRCs).
    pub fn measure(&mut self) -> Result<Measurement> {
        self.command(cmd::MEASURE_HIGH, "starting a measurement")?;
        self.delay.delay_ms(MEASURE_WAIT_MS);
        let mut buf = [0u8; 6];
        self.i2c
            .read(self.chip.address, &mut buf)
            .map_err(|e| self.chip.bus_error("reading the measurement", e))?;
        let t = self.checked_word(&buf[0..3], "temperature")?;
        let rh = self.checked_word(&buf[3..6], "humidity")?;
        Ok(Measurement {
            temperature: temperature_from_raw(t),
            humidity: humidity_from_raw(rh),
        })
    }

    /// Soft reset, then waits for the sensor to come back.
    pub fn soft_reset(&mut self) -> Result<()> {
        self.command(cmd::SOFT_RESET, "resetting")?;
        self.delay.delay_ms(RESET_WAIT_MS);
        Ok(())
    }

    /// Switches the internal heater (used to check the humidity sensor or to dry it
    /// out; it raises the temperature reading by a few °C while on).
    pub fn set_heater(&mut self, on: bool) -> Result<()> {
        if on {
            self.command(cmd::HEATER_ON, "switching the heater on")
        } else {
            self.command(cmd::HEATER_OFF, "switching the heater off")
        }
    }

    /// Reads the status register (CRC checked).
    pub fn status(&mut self) -> Result<u16> {
        let mut buf = [0u8; 3];
        let [hi, lo] = cmd::READ_STATUS.to_be_bytes();
        self.i2c
            .write_read(self.chip.address, &[hi, lo], &mut buf)
            .map_err(|e| self.chip.bus_error("reading the status register", e))?;
        self.checked_word(&buf, "status")
    }

    /// Whether the heater is on (status bit 13).
    pub fn heater_on(&mut self) -> Result<bool> {
        Ok(self.status()? & STATUS_HEATER != 0)
    }

    /// Clears the status register's alert flags.
    pub fn clear_status(&mut self) -> Result<()> {
        self.command(cmd::CLEAR_STATUS, "clearing the status register")
    }

    fn command(&mut self, command: u16, doing: &str) -> Result<()> {
        self.i2c
            .write(self.chip.address, &command.to_be_bytes())
            .map_err(|e| self.chip.bus_error(doing, e))
    }

    fn checked_word(&self, bytes: &[u8], what: &str) -> Result<u16> {
        let (word, crc) = (&bytes[0..2], bytes[2]);
        let expected = crc8(word);
        if crc != expected {
            return Err(self.chip.fault(format!(
                "bad CRC on the {what} word: got 0x{crc:02x}, computed 0x{expected:02x} over \
                 {:02x} {:02x}",
                word[0], word[1]
            )));
        }
        Ok(u16::from_be_bytes([word[0], word[1]]))
    }
}

/// An SHT3x as a [`ThermalSensor`] of kind [`SensorKind::Ambient`], id `ambient`.
pub struct Sht3xThermal<I2C, D> {
    id: String,
    inner: Mutex<Sht3x<I2C, D>>,
}

impl<I2C, D> fmt::Debug for Sht3xThermal<I2C, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sht3xThermal")
            .field("id", &self.id)
            .field("inner", &*lock(&self.inner))
            .finish()
    }
}

impl<I2C: I2c, D: DelayNs> Sht3xThermal<I2C, D> {
    /// Wraps a driver with the id `ambient`.
    pub fn new(driver: Sht3x<I2C, D>) -> Self {
        Self::with_id(driver, "ambient")
    }

    /// Wraps a driver with another id (a second sensor).
    pub fn with_id(driver: Sht3x<I2C, D>, id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            inner: Mutex::new(driver),
        }
    }

    /// Temperature and humidity together.
    pub fn measure(&self) -> Result<Measurement> {
        lock(&self.inner).measure()
    }

    /// Runs `f` on the driver (heater, reset, status).
    pub fn with_driver<T>(&self, f: impl FnOnce(&mut Sht3x<I2C, D>) -> T) -> T {
        f(&mut lock(&self.inner))
    }
}

impl<I2C: I2c + Send, D: DelayNs + Send> ThermalSensor for Sht3xThermal<I2C, D> {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> SensorKind {
        SensorKind::Ambient
    }

    fn read(&self) -> Result<Celsius> {
        self.measure().map(|m| m.temperature)
    }
}
