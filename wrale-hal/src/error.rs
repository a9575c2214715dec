//! The one HAL error type, with a portable [`HalErrorKind`].

use std::io;
pub use wrale_core::HalErrorKind;

/// Result with [`HalError`].
pub type Result<T, E = HalError> = std::result::Result<T, E>;

/// Any error from a HAL backend. Match on [`HalError::kind`] for portable handling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HalError {
    /// A device, file, sensor or pin does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The OS refused access.
    #[error("permission denied: {what}")]
    PermissionDenied {
        /// What was refused.
        what: String,
    },
    /// A GPIO line is already claimed (by this process or another).
    #[error("GPIO {pin} is already claimed")]
    PinUsed {
        /// BCM pin number.
        pin: u8,
    },
    /// A resource is busy.
    #[error("{what} is busy")]
    Busy {
        /// What is busy.
        what: String,
    },
    /// A bus transaction failed.
    #[error("bus error on {bus}: {detail}")]
    Bus {
        /// Bus name (`i2c-1`, `i2c-1@0x40`).
        bus: String,
        /// What happened.
        detail: String,
    },
    /// A device did not answer in time.
    #[error("timeout: {what}")]
    Timeout {
        /// What timed out.
        what: String,
    },
    /// The board or backend cannot do this.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What was asked.
        what: String,
    },
    /// A sensor answered with a value that cannot be trusted.
    #[error("sensor {sensor}: {detail}")]
    SensorFault {
        /// Sensor id or path.
        sensor: String,
        /// What is wrong with the value.
        detail: String,
    },
    /// An invalid argument (pin, duty, frequency, address).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The backend chosen at run time was not compiled in.
    #[error(
        "HAL backend {0:?} was not compiled into this build (enable the wrale-hal feature {0:?})"
    )]
    BackendNotCompiled(&'static str),
    /// An I/O error with context (the path that failed).
    #[error("{context}: {source}")]
    Io {
        /// What was being done (usually the path).
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl HalError {
    /// The portable kind of this error.
    pub fn kind(&self) -> HalErrorKind {
        match self {
            HalError::NotFound { .. } => HalErrorKind::NotFound,
            HalError::PermissionDenied { .. } => HalErrorKind::PermissionDenied,
            HalError::PinUsed { .. } | HalError::Busy { .. } => HalErrorKind::Busy,
            HalError::Bus { .. } => HalErrorKind::Bus,
            HalError::Timeout { .. } => HalErrorKind::Timeout,
            HalError::Unsupported { .. } => HalErrorKind::Unsupported,
            HalError::SensorFault { .. } => HalErrorKind::SensorFault,
            HalError::InvalidArgument(_) => HalErrorKind::InvalidArgument,
            HalError::BackendNotCompiled(_) => HalErrorKind::BackendNotCompiled,
            HalError::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => HalErrorKind::NotFound,
                io::ErrorKind::PermissionDenied => HalErrorKind::PermissionDenied,
                io::ErrorKind::TimedOut => HalErrorKind::Timeout,
                io::ErrorKind::WouldBlock | io::ErrorKind::ResourceBusy => HalErrorKind::Busy,
                io::ErrorKind::InvalidData => HalErrorKind::SensorFault,
                _ => match source.raw_os_error() {
                    // EREMOTEIO / ENXIO / EIO: what Linux I2C returns on a NACK or a dead bus.
                    Some(121) | Some(6) | Some(5) => HalErrorKind::Bus,
                    Some(16) => HalErrorKind::Busy,
                    _ => HalErrorKind::Other,
                },
            },
        }
    }

    /// The stable snake_case code: the code of [`HalError::kind`] (`busy`,
    /// `sensor_fault`, `not_found`, ...).
    pub fn code(&self) -> &'static str {
        self.kind().code()
    }

    /// The family of this error (for the bindings' exception classes): a missing
    /// part is `NotFound`, a bad argument `InvalidInput`, everything else `Hardware`.
    pub fn category(&self) -> wrale_core::ErrorCategory {
        use wrale_core::ErrorCategory;
        match self.kind() {
            HalErrorKind::NotFound => ErrorCategory::NotFound,
            HalErrorKind::InvalidArgument => ErrorCategory::InvalidInput,
            _ => ErrorCategory::Hardware,
        }
    }

    /// Shorthand for an I/O error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        HalError::Io {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for [`HalError::Unsupported`].
    pub fn unsupported(what: impl Into<String>) -> Self {
        HalError::Unsupported { what: what.into() }
    }

    /// Shorthand for [`HalError::SensorFault`].
    pub fn sensor_fault(sensor: impl Into<String>, detail: impl Into<String>) -> Self {
        HalError::SensorFault {
            sensor: sensor.into(),
            detail: detail.into(),
        }
    }

    /// Shorthand for [`HalError::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        HalError::NotFound { what: what.into() }
    }
}

impl From<HalError> for wrale_core::ErrorReport {
    fn from(e: HalError) -> Self {
        wrale_core::ErrorReport::new(e.category(), e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_portable() {
        assert_eq!(HalError::PinUsed { pin: 17 }.kind(), HalErrorKind::Busy);
        assert_eq!(
            HalError::io("/sys/x", io::Error::from(io::ErrorKind::NotFound)).kind(),
            HalErrorKind::NotFound
        );
        assert_eq!(
            HalError::io("/dev/i2c-1", io::Error::from_raw_os_error(121)).kind(),
            HalErrorKind::Bus
        );
        let e = HalError::BackendNotCompiled("rpi");
        assert_eq!(e.kind(), HalErrorKind::BackendNotCompiled);
        assert!(e.to_string().contains("rpi"));
    }

    #[test]
    fn codes_and_categories() {
        use wrale_core::ErrorCategory;
        let cases = [
            (
                HalError::PinUsed { pin: 4 },
                "busy",
                ErrorCategory::Hardware,
            ),
            (
                HalError::not_found("fan9"),
                "not_found",
                ErrorCategory::NotFound,
            ),
            (
                HalError::InvalidArgument("duty 140 %".into()),
                "invalid_argument",
                ErrorCategory::InvalidInput,
            ),
            (
                HalError::sensor_fault("cpu", "stuck"),
                "sensor_fault",
                ErrorCategory::Hardware,
            ),
            (
                HalError::io("/dev/i2c-1", io::Error::from_raw_os_error(121)),
                "bus",
                ErrorCategory::Hardware,
            ),
        ];
        for (e, code, category) in cases {
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(e.category(), category, "{e}");
            // The code alone classifies the same way (command replies carry only codes).
            assert_eq!(ErrorCategory::from_code(code), Some(category), "{code}");
        }
    }
}
