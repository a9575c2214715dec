//! TI INA219: bus voltage, shunt voltage, current and power over I2C.
//!
//! Registers (16-bit, MSB first; shared/PHYSICS.md §5): 0x00 CONFIG (power-on value
//! 0x399F), 0x01 SHUNT (signed, 10 µV/LSB), 0x02 BUS (bits 15:3 at 4 mV/LSB, bit 1
//! CNVR, bit 0 OVF), 0x03 POWER (20 × Current_LSB), 0x04 CURRENT (signed,
//! Current_LSB), 0x05 CALIBRATION.
//!
//! The chip computes current and power itself from the calibration register:
//! `Current = Shunt × Cal / 4096`, `Power = Current × Bus / 5000`. A chip that was
//! reset (brown-out, hot-plugged HAT) reads CALIBRATION = 0 and then reports 0 A and
//! 0 W forever; this driver notices (a zero current or power triggers a read of
//! CALIBRATION, as the Linux `ina2xx` driver does) and re-calibrates or reports it,
//! per [`ResetPolicy`]. Either way that reading is a
//! [`HalError::SensorFault`], never a made-up 0 A.

use std::fmt;
use std::sync::Mutex;

use embedded_hal::i2c::I2c;
use wrale_core::model::ThrottleFlags;
use wrale_core::units::{Amps, Ohms, Volts, Watts};

use super::{Chip, debug_chip, lock};
use crate::Ina219Config;
use crate::error::{HalError, Result};
use crate::power::PowerMonitor;

/// Address with A1 = A0 = GND.
pub const DEFAULT_ADDRESS: u8 = 0x40;

/// Register addresses.
pub mod reg {
    /// Configuration.
    pub const CONFIG: u8 = 0x00;
    /// Shunt voltage (signed, 10 µV/LSB).
    pub const SHUNT: u8 = 0x01;
    /// Bus voltage (bits 15:3, 4 mV/LSB; CNVR bit 1, OVF bit 0).
    pub const BUS: u8 = 0x02;
    /// Power (20 × Current_LSB per LSB).
    pub const POWER: u8 = 0x03;
    /// Current (signed, Current_LSB per LSB).
    pub const CURRENT: u8 = 0x04;
    /// Calibration.
    pub const CALIBRATION: u8 = 0x05;
}

/// CONFIG value after power-on (32 V, ÷8, 12-bit, continuous shunt and bus).
pub const POWER_ON_CONFIG: u16 = 0x399F;
/// CONFIG bit 15: reset.
const CONFIG_RST: u16 = 1 << 15;
/// BUS bit 0: the current or power computation overflowed.
const BUS_OVF: u16 = 1 << 0;
/// The chip's fixed scaling constant (datasheet: 0.04096 = 4096 × 10 µV).
const CAL_SCALE: f64 = 0.04096;

/// Bus voltage full-scale range (CONFIG bit 13, BRNG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BusVoltageRange {
    /// 0–16 V.
    V16,
    /// 0–32 V (power-on default).
    V32,
}

/// Shunt programmable-gain amplifier (CONFIG bits 12:11, PG): the shunt voltage range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShuntGain {
    /// ÷1, ±40 mV.
    Div1,
    /// ÷2, ±80 mV.
    Div2,
    /// ÷4, ±160 mV.
    Div4,
    /// ÷8, ±320 mV (power-on default).
    Div8,
}

impl ShuntGain {
    /// The full-scale shunt voltage.
    pub fn range(self) -> Volts {
        Volts(match self {
            ShuntGain::Div1 => 0.040,
            ShuntGain::Div2 => 0.080,
            ShuntGain::Div4 => 0.160,
            ShuntGain::Div8 => 0.320,
        })
    }

    /// The most sensitive gain whose range covers `shunt_voltage`, if any.
    pub fn smallest_for(shunt_voltage: Volts) -> Option<ShuntGain> {
        [
            ShuntGain::Div1,
            ShuntGain::Div2,
            ShuntGain::Div4,
            ShuntGain::Div8,
        ]
        .into_iter()
        // A hair of tolerance: 0.4 A × 0.1 Ω is 40 mV, not 40.000000000000004 mV.
        .find(|g| shunt_voltage.get().abs() <= g.range().get() * (1.0 + 1e-9))
    }

    fn bits(self) -> u16 {
        match self {
            ShuntGain::Div1 => 0,
            ShuntGain::Div2 => 1,
            ShuntGain::Div4 => 2,
            ShuntGain::Div8 => 3,
        }
    }
}

/// ADC resolution or averaging (CONFIG BADC bits 10:7 and SADC bits 6:3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdcMode {
    /// 9-bit, 84 µs.
    Bits9,
    /// 10-bit, 148 µs.
    Bits10,
    /// 11-bit, 276 µs.
    Bits11,
    /// 12-bit, 532 µs (power-on default).
    Bits12,
    /// 12-bit, 2 samples averaged, 1.06 ms.
    Samples2,
    /// 12-bit, 4 samples averaged, 2.13 ms.
    Samples4,
    /// 12-bit, 8 samples averaged, 4.26 ms.
    Samples8,
    /// 12-bit, 16 samples averaged, 8.51 ms.
    Samples16,
    /// 12-bit, 32 samples averaged, 17.02 ms.
    Samples32,
    /// 12-bit, 64 samples averaged, 34.05 ms.
    Samples64,
    /// 12-bit, 128 samples averaged, 68.10 ms.
    Samples128,
}

impl AdcMode {
    fn bits(self) -> u16 {
        match self {
            AdcMode::Bits9 => 0b0000,
            AdcMode::Bits10 => 0b0001,
            AdcMode::Bits11 => 0b0010,
            AdcMode::Bits12 => 0b0011,
            AdcMode::Samples2 => 0b1001,
            AdcMode::Samples4 => 0b1010,
            AdcMode::Samples8 => 0b1011,
            AdcMode::Samples16 => 0b1100,
            AdcMode::Samples32 => 0b1101,
            AdcMode::Samples64 => 0b1110,
            AdcMode::Samples128 => 0b1111,
        }
    }
}

/// Operating mode (CONFIG bits 2:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperatingMode {
    /// Power-down.
    PowerDown,
    /// Shunt voltage, triggered.
    ShuntTriggered,
    /// Bus voltage, triggered.
    BusTriggered,
    /// Shunt and bus, triggered.
    ShuntBusTriggered,
    /// ADC off (disabled).
    AdcOff,
    /// Shunt voltage, continuous.
    ShuntContinuous,
    /// Bus voltage, continuous.
    BusContinuous,
    /// Shunt and bus, continuous (power-on default; what monitoring needs).
    ShuntBusContinuous,
}

impl OperatingMode {
    fn bits(self) -> u16 {
        match self {
            OperatingMode::PowerDown => 0,
            OperatingMode::ShuntTriggered => 1,
            OperatingMode::BusTriggered => 2,
            OperatingMode::ShuntBusTriggered => 3,
            OperatingMode::AdcOff => 4,
            OperatingMode::ShuntContinuous => 5,
            OperatingMode::BusContinuous => 6,
            OperatingMode::ShuntBusContinuous => 7,
        }
    }
}

/// Contents of the CONFIG register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Settings {
    /// Bus voltage range (BRNG).
    pub bus_range: BusVoltageRange,
    /// Shunt voltage range (PG).
    pub gain: ShuntGain,
    /// Bus ADC (BADC).
    pub bus_adc: AdcMode,
    /// Shunt ADC (SADC).
    pub shunt_adc: AdcMode,
    /// Mode.
    pub mode: OperatingMode,
}

impl Default for Settings {
    /// The power-on settings (CONFIG = 0x399F).
    fn default() -> Self {
        Self {
            bus_range: BusVoltageRange::V32,
            gain: ShuntGain::Div8,
            bus_adc: AdcMode::Bits12,
            shunt_adc: AdcMode::Bits12,
            mode: OperatingMode::ShuntBusContinuous,
        }
    }
}

impl Settings {
    /// Power-on settings with the most sensitive gain that still covers
    /// `calibration`'s full current through its shunt (falls back to ÷8).
    pub fn for_calibration(calibration: &Calibration) -> Self {
        let gain = ShuntGain::smallest_for(calibration.full_scale_shunt_voltage())
            .unwrap_or(ShuntGain::Div8);
        Self {
            gain,
            ..Self::default()
        }
    }

    /// The CONFIG register word.
    pub fn config_word(&self) -> u16 {
        let brng = match self.bus_range {
            BusVoltageRange::V16 => 0,
            BusVoltageRange::V32 => 1,
        };
        (brng << 13)
            | (self.gain.bits() << 11)
            | (self.bus_adc.bits() << 7)
            | (self.shunt_adc.bits() << 3)
            | self.mode.bits()
    }
}

/// The calibration derived from a shunt resistor and the largest current to measure.
///
/// `Current_LSB ≥ I_max / 32768` and `Cal = trunc(0.04096 / (Current_LSB × R_shunt))`
/// (bit 0 of CALIBRATION does not exist, so it is cleared). The current LSB this
/// driver then uses is the one the chip really applies, `0.04096 / (Cal × R_shunt)`,
/// so truncation costs no accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    register: u16,
    current_lsb: f64,
    shunt: Ohms,
    max_current: Amps,
}

impl Calibration {
    /// Computes the calibration for `shunt` and `max_current` with the finest
    /// current LSB, `I_max / 32768`.
    ///
    /// Fails with [`HalError::InvalidArgument`] for a non-positive or non-finite value,
    /// or when the current is too large for the shunt to be represented (Cal < 2).
    pub fn new(shunt: Ohms, max_current: Amps) -> Result<Self> {
        Self::with_current_lsb(shunt, max_current, Amps(max_current.get() / 32768.0))
    }

    /// Like [`new`](Self::new) with a chosen (rounder) current LSB, e.g. 100 µA for
    /// 3.2 A through 0.1 Ω, which gives Cal = 4096. `current_lsb` must be at least
    /// `I_max / 32768`, or the CURRENT register would overflow below `I_max`.
    pub fn with_current_lsb(shunt: Ohms, max_current: Amps, current_lsb: Amps) -> Result<Self> {
        let r = shunt.get();
        let i_max = max_current.get();
        let lsb = current_lsb.get();
        if !(r.is_finite() && r > 0.0) {
            return Err(HalError::InvalidArgument(format!(
                "INA219 shunt resistance must be a positive number of ohms, got {r}"
            )));
        }
        if !(i_max.is_finite() && i_max > 0.0) {
            return Err(HalError::InvalidArgument(format!(
                "INA219 maximum current must be a positive number of amperes, got {i_max}"
            )));
        }
        let min_lsb = i_max / 32768.0;
        if !(lsb.is_finite() && lsb >= min_lsb) {
            return Err(HalError::InvalidArgument(format!(
                "INA219 current LSB {lsb} A is below I_max / 32768 = {min_lsb} A"
            )));
        }
        let exact = CAL_SCALE / (lsb * r);
        // Cal must fit bits 15:1. A larger exact value only means a finer LSB than
        // needed; clamping keeps Current_LSB >= I_max / 32768.
        let register = if exact >= f64::from(u16::MAX) {
            0xFFFE
        } else {
            // Truncation as the datasheet prescribes; exact < 65535 so this fits.
            (exact.trunc() as u16) & !1
        };
        if register < 2 {
            return Err(HalError::InvalidArgument(format!(
                "INA219: {i_max} A through {r} Ω cannot be calibrated (calibration value \
                 {exact:.3} < 2); use a smaller shunt or a lower maximum current"
            )));
        }
        Ok(Self {
            register,
            current_lsb: CAL_SCALE / (f64::from(register) * r),
            shunt,
            max_current,
        })
    }

    /// The CALIBRATION register value.
    pub fn register(&self) -> u16 {
        self.register
    }

    /// Amperes per CURRENT LSB.
    pub fn current_lsb(&self) -> Amps {
        Amps(self.current_lsb)
    }

    /// Watts per POWER LSB (20 × Current_LSB).
    pub fn power_lsb(&self) -> Watts {
        Watts(20.0 * self.current_lsb)
    }

    /// The shunt resistance.
    pub fn shunt(&self) -> Ohms {
        self.shunt
    }

    /// The largest current the calibration was made for.
    pub fn max_current(&self) -> Amps {
        self.max_current
    }

    /// Shunt voltage at the largest current.
    pub fn full_scale_shunt_voltage(&self) -> Volts {
        Volts(self.max_current.get() * self.shunt.get())
    }
}

/// What to do when the chip is found reset (CALIBRATION no longer holds our value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ResetPolicy {
    /// Write CONFIG and CALIBRATION again at once (the reading that found the reset
    /// is still a fault; the next one is valid).
    #[default]
    Recalibrate,
    /// Only report the fault; the owner calls [`Ina219::init`] again.
    Report,
}

/// The INA219 driver.
pub struct Ina219<I2C> {
    i2c: I2C,
    chip: Chip,
    settings: Settings,
    calibration: Option<Calibration>,
    on_reset: ResetPolicy,
    resets: u64,
}

impl<I2C> fmt::Debug for Ina219<I2C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_chip(f, &self.chip)
            .field("settings", &self.settings)
            .field("calibration", &self.calibration)
            .field("on_reset", &self.on_reset)
            .field("resets", &self.resets)
            .finish()
    }
}

impl<I2C: I2c> Ina219<I2C> {
    /// A driver for the chip at `address` (0x40..=0x4F). Nothing is sent until
    /// [`init`](Self::init).
    pub fn new(i2c: I2C, address: u8) -> Result<Self> {
        if !(0x40..=0x4F).contains(&address) {
            return Err(HalError::InvalidArgument(format!(
                "INA219 address must be 0x40..=0x4F, got 0x{address:02x}"
            )));
        }
        Ok(Self {
            i2c,
            chip: Chip::new("INA219", address),
            settings: Settings::default(),
            calibration: None,
            on_reset: ResetPolicy::default(),
            resets: 0,
        })
    }

    /// A driver set up from an [`Ina219Config`]: address checked, calibration from
    /// its shunt and maximum current, the most sensitive gain that covers that current
    /// ([`Settings::for_calibration`]), and [`init`](Self::init) done.
    pub fn from_config(i2c: I2C, config: &Ina219Config, bus: impl Into<String>) -> Result<Self> {
        let calibration = Calibration::new(Ohms(config.shunt_ohms), Amps(config.max_current_a))?;
        let mut driver = Self::new(i2c, config.address)?.with_bus_name(bus);
        driver.init(Settings::for_calibration(&calibration), calibration)?;
        Ok(driver)
    }

    /// Names the bus in errors (`i2c-1`).
    pub fn with_bus_name(mut self, bus: impl Into<String>) -> Self {
        self.chip.bus = bus.into();
        self
    }

    /// Chooses what happens when the chip is found reset.
    pub fn with_reset_policy(mut self, policy: ResetPolicy) -> Self {
        self.on_reset = policy;
        self
    }

    /// The 7-bit address.
    pub fn address(&self) -> u8 {
        self.chip.address
    }

    /// The calibration in use, once [`init`](Self::init) succeeded.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// How many times the chip was found reset.
    pub fn resets_detected(&self) -> u64 {
        self.resets
    }

    /// Gives the bus back.
    pub fn release(self) -> I2C {
        self.i2c
    }

    /// Writes CONFIG and CALIBRATION.
    ///
    /// Refuses ([`HalError::InvalidArgument`]) settings whose shunt range cannot hold
    /// the calibration's full-scale shunt voltage: the readings would clip.
    pub fn init(&mut self, settings: Settings, calibration: Calibration) -> Result<()> {
        let full = calibration.full_scale_shunt_voltage();
        if full.get() > settings.gain.range().get() * (1.0 + 1e-9) {
            return Err(HalError::InvalidArgument(format!(
                "INA219 at {}: {} through {} is {:.1} mV, beyond the ±{:.0} mV shunt range \
                 of gain {:?}",
                self.chip.location(),
                calibration.max_current(),
                calibration.shunt(),
                full.get() * 1e3,
                settings.gain.range().get() * 1e3,
                settings.gain
            )));
        }
        self.write_registers(&settings, &calibration)?;
        self.settings = settings;
        self.calibration = Some(calibration);
        Ok(())
    }

    /// Resets the chip (CONFIG bit 15). Calibration is lost until [`init`](Self::init).
    pub fn reset(&mut self) -> Result<()> {
        self.chip
            .write_u16(&mut self.i2c, reg::CONFIG, CONFIG_RST)?;
        self.calibration = None;
        self.settings = Settings::default();
        Ok(())
    }

    /// Reads the raw CONFIG register.
    pub fn config_register(&mut self) -> Result<u16> {
        self.chip.read_u16(&mut self.i2c, reg::CONFIG)
    }

    /// Reads the raw CALIBRATION register.
    pub fn calibration_register(&mut self) -> Result<u16> {
        self.chip.read_u16(&mut self.i2c, reg::CALIBRATION)
    }

    /// Bus voltage (IN− to GND), 4 mV/LSB.
    ///
    /// The overflow flag (OVF) is a [`HalError::SensorFault`]: the chip's current and
    /// power arithmetic has overflowed, so the operating point is outside the range
    /// the calibration was made for.
    pub fn bus_voltage(&mut self) -> Result<Volts> {
        let raw = self.chip.read_u16(&mut self.i2c, reg::BUS)?;
        if raw & BUS_OVF != 0 {
            return Err(self.chip.fault(format!(
                "math overflow (OVF set, BUS = 0x{raw:04x}): current or power is beyond the \
                 calibrated range"
            )));
        }
        Ok(Volts(f64::from(raw >> 3) * 0.004))
    }

    /// Shunt voltage, signed, 10 µV/LSB.
    pub fn shunt_voltage(&mut self) -> Result<Volts> {
        let raw = self.chip.read_u16(&mut self.i2c, reg::SHUNT)? as i16;
        Ok(Volts(f64::from(raw) * 10e-6))
    }

    /// Current, signed (negative when it flows from IN− to IN+).
    pub fn current(&mut self) -> Result<Amps> {
        let cal = self.require_calibration()?;
        self.bus_voltage()?; // OVF check
        let raw = self.chip.read_u16(&mut self.i2c, reg::CURRENT)? as i16;
        if raw == 0 {
            self.check_calibration(&cal)?;
        }
        Ok(Amps(f64::from(raw) * cal.current_lsb))
    }

    /// Power (always positive), 20 × Current_LSB per LSB.
    pub fn power(&mut self) -> Result<Watts> {
        let cal = self.require_calibration()?;
        self.bus_voltage()?; // OVF check
        let raw = self.chip.read_u16(&mut self.i2c, reg::POWER)?;
        if raw == 0 {
            self.check_calibration(&cal)?;
        }
        Ok(Watts(f64::from(raw) * cal.power_lsb().get()))
    }

    fn require_calibration(&self) -> Result<Calibration> {
        self.calibration.ok_or_else(|| {
            HalError::InvalidArgument(format!(
                "INA219 at {}: current and power need init() with a calibration first",
                self.chip.location()
            ))
        })
    }

    fn write_registers(&mut self, settings: &Settings, cal: &Calibration) -> Result<()> {
        self.chip
            .write_u16(&mut self.i2c, reg::CONFIG, settings.config_word())?;
        self.chip
            .write_u16(&mut self.i2c, reg::CALIBRATION, cal.register())
    }

    /// A zero current or power is either real or the sign of a chip that lost its
    /// calibration: tell them apart by reading CALIBRATION back.
    fn check_calibration(&mut self, cal: &Calibration) -> Result<()> {
        let found = self.calibration_register()?;
        if found == cal.register() {
            return Ok(());
        }
        self.resets += 1;
        let what = format!(
            "chip was reset (CALIBRATION reads 0x{found:04x}, expected 0x{:04x}), so current \
             and power read 0",
            cal.register()
        );
        match self.on_reset {
            ResetPolicy::Recalibrate => {
                let settings = self.settings;
                self.write_registers(&settings, cal)?;
                Err(self
                    .chip
                    .fault(format!("{what}; re-calibrated, the next reading is valid")))
            }
            ResetPolicy::Report => Err(self
                .chip
                .fault(format!("{what}; call init() to re-calibrate"))),
        }
    }
}

/// An INA219 as the board's [`PowerMonitor`].
///
/// It measures voltage, current and power; it has no throttle flags, so
/// [`PowerMonitor::throttle`] is [`HalError::Unsupported`] (the Linux backend's
/// firmware/hwmon path reports them; the `rpi` backend combines both).
pub struct Ina219PowerMonitor<I2C> {
    inner: Mutex<Ina219<I2C>>,
}

impl<I2C> fmt::Debug for Ina219PowerMonitor<I2C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ina219PowerMonitor")
            .field("inner", &*lock(&self.inner))
            .finish()
    }
}

impl<I2C: I2c> Ina219PowerMonitor<I2C> {
    /// Wraps an initialised driver.
    pub fn new(driver: Ina219<I2C>) -> Self {
        Self {
            inner: Mutex::new(driver),
        }
    }

    /// Runs `f` on the driver (for diagnostics: shunt voltage, registers).
    pub fn with_driver<T>(&self, f: impl FnOnce(&mut Ina219<I2C>) -> T) -> T {
        f(&mut lock(&self.inner))
    }

    /// Gives the driver back.
    pub fn into_inner(self) -> Ina219<I2C> {
        self.inner.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl<I2C: I2c + Send> PowerMonitor for Ina219PowerMonitor<I2C> {
    fn voltage(&self) -> Result<Volts> {
        lock(&self.inner).bus_voltage()
    }

    fn current(&self) -> Result<Amps> {
        lock(&self.inner).current()
    }

    fn power(&self) -> Result<Watts> {
        lock(&self.inner).power()
    }

    fn throttle(&self) -> Result<ThrottleFlags> {
        Err(HalError::unsupported(
            "throttle flags: an INA219 only measures voltage and current (the Linux \
             firmware/hwmon path reports under-voltage and throttling)",
        ))
    }
}
