//! Platform: CPU load and frequency, storage wear, I2C buses.

use std::fmt;

use wrale_core::model::StorageWear;
use wrale_core::units::{MegaHertz, Percent};

use crate::error::Result;

/// CPU and storage figures of the running system.
pub trait Platform: Send + Sync + fmt::Debug {
    /// CPU load since the previous call (the first call measures since boot).
    fn cpu_load(&self) -> Result<Percent>;
    /// Current ARM frequency.
    fn cpu_freq(&self) -> Result<MegaHertz>;
    /// Wear of every block device: eMMC life-time estimates where reported, bytes
    /// written (from `/proc/diskstats`) for all.
    fn storage(&self) -> Result<Vec<StorageWear>>;
}

/// An I2C bus, for diagnostics (scan).
pub trait I2cBus: Send + Sync + fmt::Debug {
    /// Bus name (`i2c-1`).
    fn name(&self) -> &str;
    /// Addresses (0x03..=0x77) that acknowledge.
    fn scan(&self) -> Result<Vec<u8>>;
}

/// Puts the CPU under a chosen load (diagnostics: supply check under load).
/// On `sim` it sets the modelled load; on Linux it runs busy threads.
pub trait LoadGenerator: Send + Sync + fmt::Debug {
    /// Sets the extra load; `Percent::ZERO` stops it.
    fn set_load(&self, load: Percent) -> Result<()>;
}
