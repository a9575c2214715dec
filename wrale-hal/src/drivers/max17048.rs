//! Maxim MAX17048 (and MAX17049) Li-ion fuel gauge.
//!
//! Registers (16-bit, MSB first; shared/PHYSICS.md §5): 0x02 VCELL (78.125 µV/LSB),
//! 0x04 SOC (1/256 % per LSB), 0x06 MODE (QuickStart = bit 14), 0x08 VERSION (0x001x),
//! 0x16 CRATE (signed, 0.208 %/h per LSB), 0xFE CMD (0x5400 = power-on reset).
//!
//! The older MAX17040/43 sit at the same address with a different VCELL scale and
//! no CRATE; [`Max17048::init`] checks VERSION so such a chip is refused with a clear
//! error instead of read with the wrong scale.

use std::fmt;
use std::sync::Mutex;

use embedded_hal::i2c::{ErrorKind, I2c};
use wrale_core::model::{BatteryStatus, ChargeState};
use wrale_core::units::{Percent, Volts};

use super::{Chip, debug_chip, lock};
use crate::error::{HalError, Result};
use crate::power::Battery;

/// The gauge's fixed address.
pub const DEFAULT_ADDRESS: u8 = 0x36;

/// Register addresses.
pub mod reg {
    /// Cell voltage.
    pub const VCELL: u8 = 0x02;
    /// State of charge.
    pub const SOC: u8 = 0x04;
    /// Mode (QuickStart, EnSleep, HibStat).
    pub const MODE: u8 = 0x06;
    /// Production version (0x001x).
    pub const VERSION: u8 = 0x08;
    /// Configuration (RCOMP, sleep, alert threshold).
    pub const CONFIG: u8 = 0x0C;
    /// Charge or discharge rate.
    pub const CRATE: u8 = 0x16;
    /// Status flags (high byte).
    pub const STATUS: u8 = 0x1A;
    /// Command (power-on reset).
    pub const CMD: u8 = 0xFE;
}

/// MODE value that starts a QuickStart (restart of the SOC estimate).
const MODE_QUICK_START: u16 = 0x4000;
/// CMD value for a power-on reset (the chip NACKs it as it resets).
const CMD_POR: u16 = 0x5400;

/// Volts per VCELL LSB.
pub const VCELL_LSB: f64 = 78.125e-6;
/// Percent per hour per CRATE LSB.
pub const CRATE_LSB: f64 = 0.208;
/// Default dead band of the charge rate, %/h: inside it, the cell is idle (or full).
pub const DEFAULT_RATE_DEADBAND: f64 = 1.0;
/// A state of charge at or above this counts as full.
pub const FULL_SOC: f64 = 99.5;
/// The gauge may report a little above 100 % before it has learned the cell; above
/// this the value is treated as garbage.
const MAX_PLAUSIBLE_SOC: f64 = 110.0;

/// Classifies a gauge reading: charging when the rate is above `deadband` (%/h),
/// discharging below `-deadband`, otherwise full (state of charge ≥ 99.5 %) or idle.
/// A full cell held on a charger reads slightly positive, so full wins over charging
/// once the cell is at the top.
pub fn charge_state(soc: Percent, rate_pct_per_h: f64, deadband: f64) -> ChargeState {
    if soc.get() >= FULL_SOC && rate_pct_per_h > -deadband {
        ChargeState::Full
    } else if rate_pct_per_h >= deadband {
        ChargeState::Charging
    } else if rate_pct_per_h <= -deadband {
        ChargeState::Discharging
    } else {
        ChargeState::Idle
    }
}

/// The MAX17048 driver.
pub struct Max17048<I2C> {
    i2c: I2C,
    chip: Chip,
    deadband: f64,
}

impl<I2C> fmt::Debug for Max17048<I2C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_chip(f, &self.chip)
            .field("deadband", &self.deadband)
            .finish()
    }
}

impl<I2C: I2c> Max17048<I2C> {
    /// A driver for the gauge at 0x36. Call [`init`](Self::init) to check the chip.
    pub fn new(i2c: I2C) -> Self {
        Self {
            i2c,
            chip: Chip::new("MAX17048", DEFAULT_ADDRESS),
            deadband: DEFAULT_RATE_DEADBAND,
        }
    }

    /// Uses another address (an I2C address translator in front of the gauge).
    pub fn with_address(mut self, address: u8) -> Self {
        self.chip.address = address;
        self
    }

    /// Names the bus in errors (`i2c-1`).
    pub fn with_bus_name(mut self, bus: impl Into<String>) -> Self {
        self.chip.bus = bus.into();
        self
    }

    /// Sets the charge-rate dead band (%/h) used by [`status`](Self::status).
    pub fn with_rate_deadband(mut self, deadband: f64) -> Self {
        self.deadband = deadband.abs();
        self
    }

    /// The 7-bit address.
    pub fn address(&self) -> u8 {
        self.chip.address
    }

    /// Gives the bus back.
    pub fn release(self) -> I2C {
        self.i2c
    }

    /// Checks that a MAX17048/49 answers (VERSION = 0x001x) and returns VERSION.
    ///
    /// Another chip (a MAX17040/43, or anything else at that address) is refused with
    /// [`HalError::NotFound`] naming what was read.
    pub fn init(&mut self) -> Result<u16> {
        let version = self.version()?;
        if version & 0xFFF0 != 0x0010 {
            return Err(HalError::not_found(format!(
                "MAX17048 at {}: VERSION reads 0x{version:04x}, a MAX17048/49 reads 0x001x \
                 (a MAX17040/43 or another chip answers at this address)",
                self.chip.location()
            )));
        }
        Ok(version)
    }

    /// The VERSION register.
    pub fn version(&mut self) -> Result<u16> {
        self.chip.read_u16(&mut self.i2c, reg::VERSION)
    }

    /// Cell voltage, 78.125 µV/LSB.
    pub fn voltage(&mut self) -> Result<Volts> {
        let raw = self.chip.read_u16(&mut self.i2c, reg::VCELL)?;
        Ok(Volts(f64::from(raw) * VCELL_LSB))
    }

    /// State of charge, 1/256 % per LSB. Values up to 110 % (a gauge that has not yet
    /// learned the cell) are clamped to 100 %; anything above is a
    /// [`HalError::SensorFault`].
    pub fn soc(&mut self) -> Result<Percent> {
        let raw = self.chip.read_u16(&mut self.i2c, reg::SOC)?;
        let pct = f64::from(raw) / 256.0;
        if pct > MAX_PLAUSIBLE_SOC {
            return Err(self.chip.fault(format!(
                "state of charge reads {pct:.2} % (SOC = 0x{raw:04x})"
            )));
        }
        Ok(Percent::saturating(pct))
    }

    /// Charge (+) or discharge (−) rate in % of capacity per hour, 0.208 %/h per LSB.
    pub fn charge_rate(&mut self) -> Result<f64> {
        let raw = self.chip.read_u16(&mut self.i2c, reg::CRATE)? as i16;
        Ok(f64::from(raw) * CRATE_LSB)
    }

    /// Voltage, state of charge and charging state (from the charge rate).
    ///
    /// `charging_enabled` is reported `true`: the gauge only measures, it cannot tell
    /// or switch whether the charger is enabled.
    pub fn status(&mut self) -> Result<BatteryStatus> {
        let voltage = self.voltage()?;
        let level = self.soc()?;
        let rate = self.charge_rate()?;
        Ok(BatteryStatus {
            level,
            voltage,
            state: charge_state(level, rate, self.deadband),
            charging_enabled: true,
        })
    }

    /// Restarts the state-of-charge estimate from the present cell voltage (MODE bit
    /// 14). Use only right after the cell was connected, at rest.
    pub fn quick_start(&mut self) -> Result<()> {
        self.chip
            .write_u16(&mut self.i2c, reg::MODE, MODE_QUICK_START)
    }

    /// Power-on reset (CMD = 0x5400). The chip resets while the write is in flight and
    /// does not acknowledge it, so a NACK is success here.
    pub fn power_on_reset(&mut self) -> Result<()> {
        let [hi, lo] = CMD_POR.to_be_bytes();
        match self.i2c.write(self.chip.address, &[reg::CMD, hi, lo]) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    embedded_hal::i2c::Error::kind(&e),
                    ErrorKind::NoAcknowledge(_)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(self.chip.bus_error("sending the power-on reset command", e)),
        }
    }
}

/// A MAX17048 as the board's [`Battery`].
///
/// [`Battery::set_charging`] is [`HalError::Unsupported`]: a fuel gauge measures the
/// cell, it cannot switch the charger.
pub struct Max17048Battery<I2C> {
    inner: Mutex<Max17048<I2C>>,
}

impl<I2C> fmt::Debug for Max17048Battery<I2C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Max17048Battery")
            .field("inner", &*lock(&self.inner))
            .finish()
    }
}

impl<I2C: I2c> Max17048Battery<I2C> {
    /// Wraps a driver (call [`Max17048::init`] first).
    pub fn new(driver: Max17048<I2C>) -> Self {
        Self {
            inner: Mutex::new(driver),
        }
    }

    /// Runs `f` on the driver (QuickStart, raw registers).
    pub fn with_driver<T>(&self, f: impl FnOnce(&mut Max17048<I2C>) -> T) -> T {
        f(&mut lock(&self.inner))
    }
}

impl<I2C: I2c + Send> Battery for Max17048Battery<I2C> {
    fn status(&self) -> Result<BatteryStatus> {
        lock(&self.inner).status()
    }

    fn set_charging(&self, _enabled: bool) -> Result<()> {
        Err(HalError::unsupported(
            "switching charging: a MAX17048 fuel gauge only measures the cell, it cannot \
             control the charger",
        ))
    }
}
