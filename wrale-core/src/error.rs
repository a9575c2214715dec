//! The one error type of wrale-core, with stable snake_case codes.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

use crate::board::ProfileError;
use crate::model::device::InvalidId;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The name of a safety or policy rule (`thermal.fan_below_curve`,
/// `interlock:gpio17-case-open`). Stable: clients may match on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuleId(Cow<'static, str>);

impl RuleId {
    /// A built-in rule name (no allocation).
    pub const fn builtin(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// A rule name built at run time (interlocks and custom rules from policy files).
    pub fn new(name: impl Into<String>) -> Self {
        Self(Cow::Owned(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A refusal: the rule that refused and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("refused by rule {rule}: {reason}")]
pub struct Refused {
    /// The rule that refused.
    pub rule: RuleId,
    /// Why, with the values involved.
    pub reason: String,
}

impl Refused {
    /// A refusal.
    pub fn new(rule: RuleId, reason: impl Into<String>) -> Self {
        Self {
            rule,
            reason: reason.into(),
        }
    }
}

/// Any error from wrale-core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command or a policy layer would break a safety rule.
    #[error("policy violation: rule {rule}: {reason}")]
    PolicyViolation {
        /// The rule.
        rule: RuleId,
        /// Why.
        reason: String,
    },
    /// A policy file did not parse or is inconsistent. The previous policy stays in force.
    #[error("{source_name}{}: {message}", fmt_loc(*line, key.as_deref()))]
    InvalidPolicy {
        /// File name (or `<fleet>`, `<builtin pi4b>`).
        source_name: String,
        /// 1-based line, where known.
        line: Option<usize>,
        /// The key at fault, where known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A two-phase confirmation token is unknown, expired or already used.
    #[error("invalid confirmation token {token}: {reason}")]
    InvalidToken {
        /// The token id.
        token: u64,
        /// Why it was not accepted.
        reason: String,
    },
    /// A board profile did not load.
    #[error(transparent)]
    InvalidProfile(#[from] ProfileError),
    /// A device or group id is malformed.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// An audit store could not record or read.
    #[error("audit store: {0}")]
    Audit(String),
}

fn fmt_loc(line: Option<usize>, key: Option<&str>) -> String {
    match (line, key) {
        (Some(l), Some(k)) => format!(":{l} (key `{k}`)"),
        (Some(l), None) => format!(":{l}"),
        (None, Some(k)) => format!(" (key `{k}`)"),
        (None, None) => String::new(),
    }
}

impl Error {
    /// The stable snake_case code (`policy_violation`), shared by the HTTP API,
    /// the CLI and the bindings.
    pub fn code(&self) -> &'static str {
        match self {
            Error::PolicyViolation { .. } => "policy_violation",
            Error::InvalidPolicy { .. } => "invalid_policy",
            Error::InvalidToken { .. } => "invalid_token",
            Error::InvalidProfile(_) => "invalid_profile",
            Error::InvalidId(_) => "invalid_id",
            Error::Audit(_) => "audit_error",
        }
    }

    /// The family of this error (for the bindings' exception classes).
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::PolicyViolation { .. } => ErrorCategory::Policy,
            Error::InvalidPolicy { .. }
            | Error::InvalidToken { .. }
            | Error::InvalidProfile(_)
            | Error::InvalidId(_) => ErrorCategory::InvalidInput,
            Error::Audit(_) => ErrorCategory::Internal,
        }
    }
}

/// The family an error belongs to, the same across every Wrale crate (core, hal,
/// sync, client): what the bindings map to their typed exceptions
/// (`PolicyViolation`, `HardwareError`, `SyncError`, `AuthError`, `NotFound`,
/// `InvalidInput`, ...). Each crate's error has a `category()`; codes that cross
/// a wire (fleetd's error bodies) are classified with [`ErrorCategory::from_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCategory {
    /// A safety or policy rule refused (a command, a policy layer, a desired config).
    Policy,
    /// The hardware (or its backend) failed.
    Hardware,
    /// Twin documents, sync sessions, stores and transports of the sync layer.
    Sync,
    /// No, a bad or an insufficient credential.
    Auth,
    /// The thing named does not exist.
    NotFound,
    /// The caller's input was refused (malformed id, policy file, body, argument).
    InvalidInput,
    /// The request conflicts with the current state (already exists, cycles, open conflicts).
    Conflict,
    /// The peer could not be reached or did not answer in time.
    Unavailable,
    /// Anything else: a bug or a broken store.
    Internal,
}

impl ErrorCategory {
    /// Stable snake_case name (`policy`, `not_found`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Policy => "policy",
            ErrorCategory::Hardware => "hardware",
            ErrorCategory::Sync => "sync",
            ErrorCategory::Auth => "auth",
            ErrorCategory::NotFound => "not_found",
            ErrorCategory::InvalidInput => "invalid_input",
            ErrorCategory::Conflict => "conflict",
            ErrorCategory::Unavailable => "unavailable",
            ErrorCategory::Internal => "internal",
        }
    }

    /// The exception/error class name the bindings give this category, the same
    /// in every language (`PolicyViolation`, `HardwareError`, `NotFound`, ...).
    pub fn class_name(self) -> &'static str {
        match self {
            ErrorCategory::Policy => "PolicyViolation",
            ErrorCategory::Hardware => "HardwareError",
            ErrorCategory::Sync => "SyncError",
            ErrorCategory::Auth => "AuthError",
            ErrorCategory::NotFound => "NotFound",
            ErrorCategory::InvalidInput => "InvalidInput",
            ErrorCategory::Conflict => "ConflictError",
            ErrorCategory::Unavailable => "Unavailable",
            ErrorCategory::Internal => "InternalError",
        }
    }

    /// The category of a stable error code seen on a wire (fleetd's error bodies,
    /// command replies, the crates' own `code()`s); `None` for a code Wrale does
    /// not define.
    pub fn from_code(code: &str) -> Option<ErrorCategory> {
        Some(match code {
            "policy_violation" | "config_rejected" | "safe_mode" => ErrorCategory::Policy,
            "unauthorized" | "forbidden" | "enrollment_invalid" => ErrorCategory::Auth,
            "not_found" | "unknown_version" => ErrorCategory::NotFound,
            "invalid_body"
            | "invalid_query"
            | "invalid_argument"
            | "invalid_id"
            | "invalid_policy"
            | "invalid_profile"
            | "invalid_token"
            | "body_too_large"
            | "invalid_field"
            | "unknown_field"
            | "method_not_allowed"
            | "invalid_config"
            | "invalid_request"
            | "unsupported_media_type" => ErrorCategory::InvalidInput,
            "conflict" | "open_conflicts" | "epoch_mismatch" | "wrong_device" => {
                ErrorCategory::Conflict
            }
            "device_offline" | "timeout" | "transport" | "unavailable" | "not_ready" => {
                ErrorCategory::Unavailable
            }
            "hardware_error"
            | "permission_denied"
            | "busy"
            | "bus"
            | "unsupported"
            | "sensor_fault"
            | "backend_not_compiled"
            | "command_failed"
            | "other" => ErrorCategory::Hardware,
            "automerge" | "decode_error" | "bad_frame" | "schema" | "schema_too_new"
            | "sync_store" | "telemetry" | "sync_io" => ErrorCategory::Sync,
            "internal" | "audit_error" | "decode" => ErrorCategory::Internal,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Refused> for Error {
    fn from(r: Refused) -> Self {
        Error::PolicyViolation {
            rule: r.rule,
            reason: r.reason,
        }
    }
}

/// Any crate's error reduced to what crosses a language boundary: category,
/// stable code, message and (for API errors) details. wrale-hal, wrale-sync and
/// wrale-client convert their errors into it, so every binding maps one type.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorReport {
    /// The family, which picks the binding's error class.
    pub category: ErrorCategory,
    /// The stable snake_case code of the Rust error (or the server's).
    pub code: String,
    /// The message (for API errors, the server's own message).
    pub message: String,
    /// Structured details (API errors: the server's details plus `status`).
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ErrorReport {
    /// A report without details.
    pub fn new(
        category: ErrorCategory,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ErrorReport {
            category,
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }

    /// Bad input found by the caller (a binding's argument check).
    pub fn invalid_input(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::InvalidInput, code, message)
    }
}

impl From<Error> for ErrorReport {
    fn from(e: Error) -> Self {
        ErrorReport::new(e.category(), e.code(), e.to_string())
    }
}

impl From<Refused> for ErrorReport {
    fn from(r: Refused) -> Self {
        Error::from(r).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let e: Error = Refused::new(RuleId::builtin("thermal.fan_below_curve"), "too slow").into();
        assert_eq!(e.code(), "policy_violation");
        assert!(e.to_string().contains("thermal.fan_below_curve"), "{e}");
        let p = Error::InvalidPolicy {
            source_name: "fleet.toml".into(),
            line: Some(7),
            key: Some("warn_c".into()),
            message: "invalid type".into(),
        };
        assert_eq!(p.code(), "invalid_policy");
        assert_eq!(p.to_string(), "fleet.toml:7 (key `warn_c`): invalid type");
        assert_eq!(
            serde_json::to_string(&RuleId::builtin("a.b")).unwrap(),
            "\"a.b\""
        );
    }

    #[test]
    fn categories() {
        let e: Error = Refused::new(RuleId::builtin("r"), "no").into();
        assert_eq!(e.category(), ErrorCategory::Policy);
        assert_eq!(Error::Audit("x".into()).category(), ErrorCategory::Internal);
        let p = Error::InvalidPolicy {
            source_name: "f".into(),
            line: None,
            key: None,
            message: "m".into(),
        };
        assert_eq!(p.category(), ErrorCategory::InvalidInput);
        // Every code of this crate classifies the same way through from_code.
        for e in [e, p, Error::Audit("x".into())] {
            assert_eq!(ErrorCategory::from_code(e.code()), Some(e.category()));
        }
        assert_eq!(
            ErrorCategory::from_code("unauthorized"),
            Some(ErrorCategory::Auth)
        );
        assert_eq!(
            ErrorCategory::from_code("device_offline"),
            Some(ErrorCategory::Unavailable)
        );
        for (code, category) in [
            ("invalid_request", ErrorCategory::InvalidInput),
            ("unsupported_media_type", ErrorCategory::InvalidInput),
            ("method_not_allowed", ErrorCategory::InvalidInput),
            ("invalid_config", ErrorCategory::InvalidInput),
            ("not_ready", ErrorCategory::Unavailable),
            ("command_failed", ErrorCategory::Hardware),
        ] {
            assert_eq!(ErrorCategory::from_code(code), Some(category), "{code}");
        }
        assert_eq!(ErrorCategory::from_code("no_such_code"), None);
        assert_eq!(ErrorCategory::NotFound.to_string(), "not_found");
    }
}
