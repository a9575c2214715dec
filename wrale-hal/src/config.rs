//! Run-time choice of backend. The config types always exist (so a config file can
//! name any backend); opening a backend that was not compiled in returns
//! [`HalError::BackendNotCompiled`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wrale_core::board::BoardModel;

use crate::Board;
#[allow(unused_imports)]
use crate::error::HalError;
use crate::error::Result;

pub use crate::sim_config::SimConfig;

/// Which backend to open, with its settings. In TOML: `backend = "sim"` plus the
/// backend's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum BackendConfig {
    /// The seeded physical simulator.
    Sim(SimConfig),
    /// Linux sysfs / hwmon / cpufreq / GPIO character device.
    Linux(LinuxConfig),
    /// Raspberry Pi: rppal GPIO/PWM/I2C plus I2C sensor drivers, on top of `linux`.
    Rpi(RpiConfig),
}

/// Settings of the `linux` backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinuxConfig {
    /// Root of the file system to read `sys/` and `proc/` from (`/` on a device; a
    /// fixture tree in tests).
    pub root: PathBuf,
    /// Board model; detected from `proc/device-tree/model` when absent.
    pub model: Option<BoardModel>,
    /// GPIO character device (`/dev/gpiochip0`); `None` disables GPIO. A relative
    /// path is taken under `root`; a device that does not exist makes opening fail
    /// with `NotFound`.
    pub gpio_chip: Option<PathBuf>,
}

impl Default for LinuxConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            model: None,
            gpio_chip: Some(PathBuf::from("/dev/gpiochip0")),
        }
    }
}

/// Settings of the `rpi` backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpiConfig {
    /// The Linux parts (thermal zones, hwmon, cpufreq, storage).
    pub linux: LinuxConfig,
    /// I2C bus number for the sensor drivers (`/dev/i2c-N`).
    pub i2c_bus: u8,
    /// INA219 power monitor, if fitted.
    pub ina219: Option<Ina219Config>,
    /// MAX17048 fuel gauge address, if fitted (usually 0x36).
    pub max17048: Option<u8>,
    /// SHT3x temperature/humidity sensor address, if fitted (0x44 or 0x45).
    pub sht3x: Option<u8>,
}

impl Default for RpiConfig {
    fn default() -> Self {
        Self {
            linux: LinuxConfig::default(),
            i2c_bus: 1,
            ina219: None,
            max17048: None,
            sht3x: None,
        }
    }
}

/// INA219 settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ina219Config {
    /// I2C address (0x40..=0x4F).
    pub address: u8,
    /// Shunt resistance in ohms (0.1 on most breakouts).
    pub shunt_ohms: f64,
    /// Largest current to measure, in amperes (sets the calibration).
    pub max_current_a: f64,
}

/// Opens the backend `config` names.
pub fn open(config: &BackendConfig) -> Result<Board> {
    match config {
        #[cfg(feature = "sim")]
        BackendConfig::Sim(c) => crate::sim::open(c),
        #[cfg(not(feature = "sim"))]
        BackendConfig::Sim(_) => Err(HalError::BackendNotCompiled("sim")),
        #[cfg(all(feature = "linux", target_os = "linux"))]
        BackendConfig::Linux(c) => crate::linux::open(c),
        #[cfg(not(all(feature = "linux", target_os = "linux")))]
        BackendConfig::Linux(_) => Err(HalError::BackendNotCompiled("linux")),
        #[cfg(all(feature = "rpi", target_os = "linux"))]
        BackendConfig::Rpi(c) => crate::rpi::open(c),
        #[cfg(not(all(feature = "rpi", target_os = "linux")))]
        BackendConfig::Rpi(_) => Err(HalError::BackendNotCompiled("rpi")),
    }
}
