//! The I2C bus for the drivers: linux-embedded-hal's `I2cdev` (`/dev/i2c-N`) with
//! errno-accurate error kinds, and an [`I2cBus`] for scans.

use std::fmt;
use std::sync::Mutex;

use embedded_hal::i2c::{
    ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation, SevenBitAddress,
};
use linux_embedded_hal::I2cdev;
use linux_embedded_hal::i2cdev::linux::LinuxI2CError;

use crate::drivers::{lock, scan_with};
use crate::error::{HalError, Result};
use crate::platform::I2cBus;

// Linux errno values (identical on aarch64, arm and x86_64: asm-generic).
const EIO: i32 = 5;
const ENXIO: i32 = 6;
const EAGAIN: i32 = 11;
const EBUSY: i32 = 16;
const ENODEV: i32 = 19;
const EPROTO: i32 = 71;
const EBADMSG: i32 = 74;
const EOVERFLOW: i32 = 75;
const ETIMEDOUT: i32 = 110;
const EREMOTEIO: i32 = 121;

/// The embedded-hal kind of a Linux I2C errno (kernel `Documentation/i2c/fault-codes`).
///
/// linux-embedded-hal maps only ENXIO and ENODEV to "no acknowledge", but the Pi's
/// adapters (`i2c-bcm2835`, and `i2c-designware` on the Pi 5's RP1) report a NACK as
/// EREMOTEIO, so it is mapped here too; EBUSY (address bound to a kernel driver)
/// stays [`ErrorKind::Other`].
pub fn errno_kind(errno: i32) -> ErrorKind {
    match errno {
        ENXIO => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address),
        ENODEV => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data),
        EREMOTEIO => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Unknown),
        EAGAIN => ErrorKind::ArbitrationLoss,
        EIO | EPROTO | EBADMSG | ETIMEDOUT => ErrorKind::Bus,
        EOVERFLOW => ErrorKind::Overrun,
        _ => ErrorKind::Other,
    }
}

/// An error from [`PiI2c`]: the errno (when there is one) and the OS message.
#[derive(Debug)]
pub struct PiI2cError {
    errno: Option<i32>,
    message: String,
}

impl PiI2cError {
    /// The errno, when the OS gave one.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// Whether the address is bound to a kernel driver (EBUSY).
    pub fn address_in_use(&self) -> bool {
        self.errno == Some(EBUSY)
    }
}

impl fmt::Display for PiI2cError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PiI2cError {}

impl embedded_hal::i2c::Error for PiI2cError {
    fn kind(&self) -> ErrorKind {
        self.errno.map_or(ErrorKind::Other, errno_kind)
    }
}

impl PiI2cError {
    /// Keeps the errno of an i2cdev error (crate-private: i2cdev types stay out of
    /// the public API).
    fn from_linux(e: LinuxI2CError) -> Self {
        let errno = match &e {
            LinuxI2CError::Errno(n) => Some(*n),
            LinuxI2CError::Io(io) => io.raw_os_error(),
        };
        Self {
            errno,
            message: e.to_string(),
        }
    }
}

/// `/dev/i2c-N` through linux-embedded-hal, with [`errno_kind`] error kinds.
pub struct PiI2c {
    dev: I2cdev,
    bus: u8,
}

impl fmt::Debug for PiI2c {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PiI2c").field("bus", &self.bus).finish()
    }
}

impl PiI2c {
    /// Opens `/dev/i2c-<bus>`.
    pub fn open(bus: u8) -> Result<Self> {
        let path = format!("/dev/i2c-{bus}");
        let dev = I2cdev::new(&path).map_err(|e| match e {
            LinuxI2CError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                HalError::not_found(format!(
                    "I2C bus {path} (enable it with dtparam=i2c_arm=on or raspi-config)"
                ))
            }
            LinuxI2CError::Io(io) => HalError::io(path.clone(), io),
            LinuxI2CError::Errno(n) => {
                HalError::io(path.clone(), std::io::Error::from_raw_os_error(n))
            }
        })?;
        Ok(Self { dev, bus })
    }

    /// The bus number.
    pub fn bus(&self) -> u8 {
        self.bus
    }
}

impl ErrorType for PiI2c {
    type Error = PiI2cError;
}

impl I2c for PiI2c {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> std::result::Result<(), Self::Error> {
        I2c::<SevenBitAddress>::transaction(&mut self.dev, address, operations)
            .map_err(|e| PiI2cError::from_linux(take_inner(e)))
    }
}

/// linux-embedded-hal's error only lends its inner error; rebuild an owned copy.
fn take_inner(e: linux_embedded_hal::I2CError) -> LinuxI2CError {
    match e.inner() {
        LinuxI2CError::Errno(n) => LinuxI2CError::Errno(*n),
        LinuxI2CError::Io(io) => match io.raw_os_error() {
            Some(n) => LinuxI2CError::Errno(n),
            None => LinuxI2CError::Io(std::io::Error::new(io.kind(), io.to_string())),
        },
    }
}

/// An I2C bus for diagnostics: scans like `i2cdetect -r` (addresses bound to a
/// kernel driver count as present).
pub struct RpiI2cBus {
    name: String,
    dev: Mutex<PiI2c>,
}

impl fmt::Debug for RpiI2cBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpiI2cBus")
            .field("name", &self.name)
            .finish()
    }
}

impl RpiI2cBus {
    /// Opens `/dev/i2c-<bus>` for scanning.
    pub fn open(bus: u8) -> Result<Self> {
        Ok(Self {
            name: format!("i2c-{bus}"),
            dev: Mutex::new(PiI2c::open(bus)?),
        })
    }
}

impl I2cBus for RpiI2cBus {
    fn name(&self) -> &str {
        &self.name
    }

    fn scan(&self) -> Result<Vec<u8>> {
        scan_with(
            &mut *lock(&self.dev),
            &self.name,
            PiI2cError::address_in_use,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::Error as _;

    #[test]
    fn errno_kinds() {
        assert_eq!(
            errno_kind(EREMOTEIO),
            ErrorKind::NoAcknowledge(NoAcknowledgeSource::Unknown)
        );
        assert_eq!(
            errno_kind(ENXIO),
            ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
        );
        assert_eq!(errno_kind(EAGAIN), ErrorKind::ArbitrationLoss);
        assert_eq!(errno_kind(EIO), ErrorKind::Bus);
        assert_eq!(errno_kind(EBUSY), ErrorKind::Other);
        let e = PiI2cError::from_linux(LinuxI2CError::Io(std::io::Error::from_raw_os_error(
            EREMOTEIO,
        )));
        assert!(matches!(e.kind(), ErrorKind::NoAcknowledge(_)));
        let busy = PiI2cError::from_linux(LinuxI2CError::Errno(EBUSY));
        assert!(busy.address_in_use());
    }

    #[test]
    fn a_missing_bus_is_not_found() {
        // No machine has 250 I2C buses; the error names the device and the fix.
        let e = PiI2c::open(250).unwrap_err();
        assert_eq!(e.kind(), crate::HalErrorKind::NotFound);
        assert!(e.to_string().contains("/dev/i2c-250"), "{e}");
    }
}
