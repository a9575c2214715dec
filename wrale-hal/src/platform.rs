//! Platform: CPU load and frequency, storage wear, boot identity, I2C buses.

use std::fmt;

use serde::{Deserialize, Serialize};
use wrale_core::Timestamp;
use wrale_core::model::StorageWear;
use wrale_core::units::{MegaHertz, Percent};

use crate::error::{HalError, Result};

/// Which boot of the device is running: a random id the kernel draws at every boot
/// (Linux `/proc/sys/kernel/random/boot_id`) and when that boot happened.
///
/// A fleet sees a reboot as a change of `boot_id` (the uptime cannot tell a reboot
/// from a clock jump; the id can).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BootInfo {
    /// The boot's id (a UUID in its hyphenated lower-case form on Linux).
    pub boot_id: String,
    /// When the system booted (Linux: `btime` of `/proc/stat`; sim: virtual time).
    pub booted_at: Timestamp,
}

/// CPU and storage figures of the running system.
pub trait Platform: Send + Sync + fmt::Debug {
    /// CPU load since the previous call (the first call measures since boot).
    fn cpu_load(&self) -> Result<Percent>;
    /// Current ARM frequency.
    fn cpu_freq(&self) -> Result<MegaHertz>;
    /// Wear of every block device: eMMC life-time estimates where reported, bytes
    /// written (from `/proc/diskstats`) for all.
    fn storage(&self) -> Result<Vec<StorageWear>>;
    /// The running boot's id and time. Backends without one answer
    /// [`HalErrorKind::Unsupported`](crate::HalErrorKind::Unsupported).
    fn boot(&self) -> Result<BootInfo> {
        Err(HalError::unsupported("this platform reports no boot id"))
    }
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
