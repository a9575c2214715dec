//! The simulated board's parts: each implements one HAL trait on the shared model.

use std::sync::Arc;

use wrale_core::model::{
    BatteryStatus, PowerSourceKind, PowerSourceStatus, SecurityKind, SensorKind, StorageWear,
    ThrottleFlags,
};
use wrale_core::units::{Amps, Celsius, MegaHertz, Percent, Rpm, Volts, Watts};

use crate::error::Result;
use crate::platform::{BootInfo, I2cBus, LoadGenerator, Platform};
use crate::power::{Battery, PowerMonitor, PowerSupply};
use crate::security::SecurityInput;
use crate::thermal::{Fan, ThermalSensor};

use super::Shared;

/// Which simulated temperature sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TempSource {
    /// The SoC sensor (`thermal_zone0`): die temperature.
    Cpu,
    /// The SHT3x-like room/enclosure sensor on `i2c-1` at 0x44.
    Ambient,
}

/// A simulated temperature sensor.
#[derive(Debug)]
pub(crate) struct SimThermal {
    pub(crate) shared: Arc<Shared>,
    pub(crate) source: TempSource,
}

impl ThermalSensor for SimThermal {
    fn id(&self) -> &str {
        match self.source {
            TempSource::Cpu => "cpu",
            TempSource::Ambient => "ambient",
        }
    }

    fn kind(&self) -> SensorKind {
        match self.source {
            TempSource::Cpu => SensorKind::Cpu,
            TempSource::Ambient => SensorKind::Ambient,
        }
    }

    fn read(&self) -> Result<Celsius> {
        match self.source {
            TempSource::Cpu => self.shared.with(|m| m.read_cpu()),
            TempSource::Ambient => self.shared.with(|m| m.read_ambient()),
        }
    }
}

/// The simulated fan `fan0`.
#[derive(Debug)]
pub(crate) struct SimFan {
    pub(crate) shared: Arc<Shared>,
    pub(crate) has_tach: bool,
}

impl Fan for SimFan {
    fn id(&self) -> &str {
        "fan0"
    }

    fn set_duty(&self, duty: Percent) -> Result<()> {
        self.shared.with(|m| {
            m.check_powered()?;
            m.set_fan_duty(duty);
            Ok(())
        })
    }

    fn duty(&self) -> Result<Percent> {
        self.shared.with(|m| {
            m.check_powered()?;
            Ok(m.fan_duty())
        })
    }

    fn has_tach(&self) -> bool {
        self.has_tach
    }

    fn rpm(&self) -> Result<Rpm> {
        self.shared.with(|m| m.read_rpm())
    }
}

impl Drop for SimFan {
    /// Fail safe: a dropped fan controller leaves the fan at the profile's safe duty.
    fn drop(&mut self) {
        self.shared.with(|m| {
            let safe = m.fan_safe_duty();
            m.set_fan_duty(safe);
        });
    }
}

/// The INA219-like power monitor (voltage, current, power on `i2c-1` at 0x40) plus
/// the firmware's throttle word (not on the bus: it comes from the firmware mailbox).
#[derive(Debug)]
pub(crate) struct SimPowerMonitor {
    pub(crate) shared: Arc<Shared>,
}

impl PowerMonitor for SimPowerMonitor {
    fn voltage(&self) -> Result<Volts> {
        self.shared.with(|m| m.read_power()).map(|(v, _, _)| v)
    }

    fn current(&self) -> Result<Amps> {
        self.shared.with(|m| m.read_power()).map(|(_, i, _)| i)
    }

    fn power(&self) -> Result<Watts> {
        self.shared.with(|m| m.read_power()).map(|(_, _, p)| p)
    }

    fn throttle(&self) -> Result<ThrottleFlags> {
        self.shared.with(|m| m.throttle())
    }
}

/// The power-source switch (main, battery, solar).
#[derive(Debug)]
pub(crate) struct SimSupply {
    pub(crate) shared: Arc<Shared>,
}

impl PowerSupply for SimSupply {
    fn sources(&self) -> Result<Vec<PowerSourceStatus>> {
        self.shared.with(|m| {
            m.check_powered()?;
            Ok(m.sources())
        })
    }

    fn select(&self, source: PowerSourceKind) -> Result<()> {
        self.shared.with(|m| m.select_source(source))
    }
}

/// The fuel gauge (MAX17048-like on `i2c-1` at 0x36).
#[derive(Debug)]
pub(crate) struct SimBattery {
    pub(crate) shared: Arc<Shared>,
}

impl Battery for SimBattery {
    fn status(&self) -> Result<BatteryStatus> {
        self.shared.with(|m| m.read_battery())
    }

    fn set_charging(&self, enabled: bool) -> Result<()> {
        self.shared.with(|m| m.set_charging(enabled))
    }
}

/// A security input (case switch, motion, tamper, voltage monitor).
#[derive(Debug)]
pub(crate) struct SimSecurity {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: &'static str,
    pub(crate) kind: SecurityKind,
}

impl SecurityInput for SimSecurity {
    fn id(&self) -> &str {
        self.id
    }

    fn kind(&self) -> SecurityKind {
        self.kind
    }

    fn active(&self) -> Result<bool> {
        self.shared.with(|m| m.security_active(self.id))
    }
}

/// CPU load and frequency, and the simulated storage device.
#[derive(Debug)]
pub(crate) struct SimPlatform {
    pub(crate) shared: Arc<Shared>,
}

impl Platform for SimPlatform {
    fn cpu_load(&self) -> Result<Percent> {
        self.shared.with(|m| m.cpu_load())
    }

    fn cpu_freq(&self) -> Result<MegaHertz> {
        self.shared.with(|m| m.cpu_freq())
    }

    fn storage(&self) -> Result<Vec<StorageWear>> {
        self.shared.with(|m| m.storage())
    }

    fn boot(&self) -> Result<BootInfo> {
        self.shared.with(|m| m.boot())
    }
}

/// The simulated I2C bus `i2c-1`.
#[derive(Debug)]
pub(crate) struct SimI2c {
    pub(crate) shared: Arc<Shared>,
}

impl I2cBus for SimI2c {
    fn name(&self) -> &str {
        crate::sim_config::SIM_I2C_BUS
    }

    fn scan(&self) -> Result<Vec<u8>> {
        self.shared.with(|m| m.i2c_scan())
    }
}

/// The load generator: adds load on top of the scripted/base load (total capped at 100 %).
#[derive(Debug)]
pub(crate) struct SimLoad {
    pub(crate) shared: Arc<Shared>,
}

impl LoadGenerator for SimLoad {
    fn set_load(&self, load: Percent) -> Result<()> {
        self.shared.with(|m| {
            m.check_powered()?;
            m.set_gen_load(load);
            Ok(())
        })
    }
}
