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
}

impl From<Refused> for Error {
    fn from(r: Refused) -> Self {
        Error::PolicyViolation {
            rule: r.rule,
            reason: r.reason,
        }
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
}
