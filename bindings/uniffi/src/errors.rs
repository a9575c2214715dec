//! The one error mapper: every Rust error becomes a [`WraleError`] whose variant
//! follows the error's [`ErrorCategory`] (Kotlin: the sealed class
//! `WraleException` with `PolicyViolation`, `HardwareException`, `NotFound`,
//! ...), carrying the Rust error's stable `code`, its message and (for API
//! errors) the details as JSON.

use wrale_core::{ErrorCategory, ErrorReport};

/// A Wrale error, one variant per [`ErrorCategory`]. Each carries the stable
/// snake_case `code` of the Rust error (or fleetd's), its `description` (the
/// Rust error's message; Kotlin's `message` is generated from the fields) and
/// `details`, the API error's details as a JSON object (with the HTTP `status`).
#[derive(Debug, Clone, PartialEq, thiserror::Error, uniffi::Error)]
pub enum WraleError {
    /// A safety or policy rule refused (a command, a policy layer, a desired config).
    #[error("{code}: {description}")]
    PolicyViolation {
        /// Stable code (`policy_violation`, `config_rejected`, ...).
        code: String,
        /// The message.
        description: String,
        /// API details as JSON, if any.
        details: Option<String>,
    },
    /// The hardware or its backend failed.
    #[error("{code}: {description}")]
    HardwareError {
        /// Stable code (`not_found`, `busy`, `unsupported`, ...).
        code: String,
        /// The message.
        description: String,
        /// API details as JSON, if any.
        details: Option<String>,
    },
    /// Twin, sync session, store or telemetry failure.
    #[error("{code}: {description}")]
    SyncError {
        /// Stable code.
        code: String,
        /// The message.
        description: String,
        /// API details as JSON, if any.
        details: Option<String>,
    },
    /// No, a bad or an insufficient credential.
    #[error("{code}: {description}")]
    AuthError {
        /// Stable code (`unauthorized`, `forbidden`, ...).
        code: String,
        /// The message.
        description: String,
        /// API details as JSON, if any.
        details: Option<String>,
    },
    /// The thing named does not exist.
    #[error("{code}: {description}")]
    NotFound {
        /// Stable code.
        code: String,
        /// The message.
        description: String,
        /// API details as JSON, if any.
        details: Option<String>,
    },
    /// The input was refused.
    #[error("{code}: {description}")]
    InvalidInput {
        /// Stable code (`invalid_argument`, `invalid_policy`, ...).
        code: String,
        /// The message.
        description: String,
        /// API details as JSON, if any.
        details: Option<String>,
    },
    /// The request conflicts with the current state.
    #[error("{code}: {description}")]
    ConflictError {
        /// Stable code.
        code: String,
        /// The message.
        description: String,
        /// API details as JSON, if any.
        details: Option<String>,
    },
    /// The peer could not be reached or did not answer in time.
    #[error("{code}: {description}")]
    Unavailable {
        /// Stable code (`transport`, `timeout`, `device_offline`).
        code: String,
        /// The message.
        description: String,
        /// API details as JSON, if any.
        details: Option<String>,
    },
    /// A bug or a broken store.
    #[error("{code}: {description}")]
    InternalError {
        /// Stable code.
        code: String,
        /// The message.
        description: String,
        /// API details as JSON, if any.
        details: Option<String>,
    },
}

impl WraleError {
    /// An argument the binding could not convert.
    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        ErrorReport::invalid_input("invalid_argument", message).into()
    }

    /// A failure of the binding's own plumbing.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ErrorReport::new(ErrorCategory::Internal, "internal", message).into()
    }
}

/// Every crate error converts into an [`ErrorReport`], and so into this.
impl From<ErrorReport> for WraleError {
    fn from(r: ErrorReport) -> Self {
        let code = r.code;
        let description = r.message;
        let details = r.details.map(|d| serde_json::Value::Object(d).to_string());
        match r.category {
            ErrorCategory::Policy => WraleError::PolicyViolation {
                code,
                description,
                details,
            },
            ErrorCategory::Hardware => WraleError::HardwareError {
                code,
                description,
                details,
            },
            ErrorCategory::Sync => WraleError::SyncError {
                code,
                description,
                details,
            },
            ErrorCategory::Auth => WraleError::AuthError {
                code,
                description,
                details,
            },
            ErrorCategory::NotFound => WraleError::NotFound {
                code,
                description,
                details,
            },
            ErrorCategory::InvalidInput => WraleError::InvalidInput {
                code,
                description,
                details,
            },
            ErrorCategory::Conflict => WraleError::ConflictError {
                code,
                description,
                details,
            },
            ErrorCategory::Unavailable => WraleError::Unavailable {
                code,
                description,
                details,
            },
            _ => WraleError::InternalError {
                code,
                description,
                details,
            },
        }
    }
}

/// A host callback (Kotlin, Swift) that threw something other than a `WraleError`.
impl From<uniffi::UnexpectedUniFFICallbackError> for WraleError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        ErrorReport::new(ErrorCategory::Internal, "host_callback", e.reason).into()
    }
}

macro_rules! via_report {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for WraleError {
            fn from(e: $t) -> Self {
                ErrorReport::from(e).into()
            }
        }
    )*};
}

via_report!(
    wrale_core::Error,
    wrale_core::Refused,
    wrale_hal::HalError,
    wrale_sync::Error,
    wrale_client::Error,
    wrale_core::model::InvalidActor,
    wrale_sync::InvalidAuthor,
);
