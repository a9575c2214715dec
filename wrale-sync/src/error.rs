//! The crate's error type.

use crate::config::Rejection;

/// Everything that can go wrong in wrale-sync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// automerge refused an operation (a bug in this crate or a corrupt document).
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// Bytes that should hold a document, a change or a sync message did not decode.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded (`"sync message"`, `"twin document"`, ...).
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A wire frame was malformed; the frame never reached a document.
    #[error("bad frame: {0}")]
    Envelope(#[from] crate::envelope::EnvelopeError),
    /// A document does not have the twin layout (missing or duplicated section).
    #[error("not a twin document: {0}")]
    Schema(String),
    /// The document was written by a newer schema version than this crate knows.
    #[error("twin schema version {found} is newer than the supported {supported}")]
    SchemaTooNew {
        /// Version found in the document.
        found: u64,
        /// Highest version this crate reads.
        supported: u64,
    },
    /// A field holds a value of the wrong type or out of range.
    #[error("field {field:?}: {reason}")]
    InvalidField {
        /// Flat field key (`"warn_c"`, `"gpio.17"`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A field key is not part of the twin schema.
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// A desired config failed validation and was not written.
    #[error("config rejected by rule {}: {}", .0.rule, .0.reason)]
    Rejected(Rejection),
    /// Two documents of different epochs (or devices) cannot be merged.
    #[error("epoch mismatch: this twin is at epoch {ours}, the other at {theirs}")]
    EpochMismatch {
        /// Our epoch.
        ours: u64,
        /// Their epoch.
        theirs: u64,
    },
    /// The document belongs to another device.
    #[error("document for {theirs:?} given to the twin of {ours:?}")]
    WrongDevice {
        /// Our device id.
        ours: String,
        /// The document's device id.
        theirs: String,
    },
    /// Compaction refused because `manual` conflicts are open; resolve them first.
    #[error("cannot compact while {0} manual conflict(s) are open")]
    OpenConflicts(usize),
    /// A version (change hash) is not known to this document.
    #[error("unknown version {0}")]
    UnknownVersion(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The transport failed or was closed.
    #[error("transport: {0}")]
    Transport(String),
    /// Telemetry encoding, decoding or buffering failed.
    #[error("telemetry: {0}")]
    Telemetry(String),
    /// An I/O error (ring buffer files).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The stable snake_case code (`config_rejected`, `unknown_field`, ...), shared
    /// by the bindings.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Automerge(_) => "automerge",
            Error::Decode { .. } => "decode_error",
            Error::Envelope(_) => "bad_frame",
            Error::Schema(_) => "schema",
            Error::SchemaTooNew { .. } => "schema_too_new",
            Error::InvalidField { .. } => "invalid_field",
            Error::UnknownField(_) => "unknown_field",
            Error::Rejected(_) => "config_rejected",
            Error::EpochMismatch { .. } => "epoch_mismatch",
            Error::WrongDevice { .. } => "wrong_device",
            Error::OpenConflicts(_) => "open_conflicts",
            Error::UnknownVersion(_) => "unknown_version",
            Error::Store(_) => "sync_store",
            Error::Transport(_) => "transport",
            Error::Telemetry(_) => "telemetry",
            Error::Io(_) => "sync_io",
        }
    }

    /// The family of this error (for the bindings' exception classes): a refused
    /// desired config is `Policy`, a bad field `InvalidInput`, an unknown version
    /// `NotFound`, twins that cannot meet `Conflict`, a failed link `Unavailable`,
    /// everything else `Sync`.
    pub fn category(&self) -> wrale_core::ErrorCategory {
        use wrale_core::ErrorCategory;
        match self {
            Error::Rejected(_) => ErrorCategory::Policy,
            Error::InvalidField { .. } | Error::UnknownField(_) => ErrorCategory::InvalidInput,
            Error::UnknownVersion(_) => ErrorCategory::NotFound,
            Error::EpochMismatch { .. } | Error::WrongDevice { .. } | Error::OpenConflicts(_) => {
                ErrorCategory::Conflict
            }
            Error::Transport(_) => ErrorCategory::Unavailable,
            _ => ErrorCategory::Sync,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for wrale_core::ErrorReport {
    fn from(e: Error) -> Self {
        wrale_core::ErrorReport::new(e.category(), e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrale_core::ErrorCategory;

    #[test]
    fn codes_and_categories_agree() {
        let cases = [
            (Error::UnknownField("x".into()), ErrorCategory::InvalidInput),
            (Error::OpenConflicts(2), ErrorCategory::Conflict),
            (Error::UnknownVersion("ab".into()), ErrorCategory::NotFound),
            (
                Error::Transport("closed".into()),
                ErrorCategory::Unavailable,
            ),
            (Error::Store("disk".into()), ErrorCategory::Sync),
            (
                Error::Decode {
                    what: "sync message",
                    reason: "short".into(),
                },
                ErrorCategory::Sync,
            ),
            (
                Error::Rejected(Rejection::new("board_floor", "warn_c above the floor")),
                ErrorCategory::Policy,
            ),
        ];
        for (e, category) in cases {
            assert_eq!(e.category(), category, "{e}");
            assert_eq!(
                ErrorCategory::from_code(e.code()),
                Some(category),
                "{}",
                e.code()
            );
        }
    }
}
