//! The client's error type.

use std::fmt;

/// What went wrong in a call to fleetd.
///
/// Every variant has a stable snake_case [`code`](Error::code): for [`Error::Api`]
/// it is the server's own code (`unauthorized`, `not_found`, `policy_violation`,
/// ...); the other variants have client-side codes (`transport`, `decode`,
/// `invalid_argument`). Bindings map these codes to typed exceptions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// fleetd answered with an error body `{"error": {"code", "message", ...}}`.
    #[error("{message} ({code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's stable code.
        code: String,
        /// The server's message.
        message: String,
        /// Any further fields of the error object (`rule` for `policy_violation`, ...).
        details: serde_json::Map<String, serde_json::Value>,
    },
    /// The request never got an HTTP answer (connection refused, reset, timeout,
    /// WebSocket handshake or link failure).
    #[error("{0}")]
    Transport(String),
    /// fleetd answered, but the body was not what this client expects.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// An argument was refused before anything was sent (bad URL, bad id, ...).
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    /// The stable snake_case code: the server's code for [`Error::Api`],
    /// `transport`, `decode` or `invalid_argument` otherwise.
    pub fn code(&self) -> &str {
        match self {
            Error::Api { code, .. } => code,
            Error::Transport(_) => "transport",
            Error::Decode(_) => "decode",
            Error::InvalidArgument(_) => "invalid_argument",
        }
    }

    /// The family of this error (for the bindings' exception classes): the
    /// category of the code ([`wrale_core::ErrorCategory::from_code`]); a code
    /// Wrale does not define falls back on the HTTP status (401/403 `Auth`, 404
    /// `NotFound`, 409 `Conflict`, 422 `Policy`, other 4xx `InvalidInput`, 503/504
    /// `Unavailable`, anything else `Internal`).
    pub fn category(&self) -> wrale_core::ErrorCategory {
        use wrale_core::ErrorCategory;
        if let Some(c) = ErrorCategory::from_code(self.code()) {
            return c;
        }
        match self.status() {
            Some(401 | 403) => ErrorCategory::Auth,
            Some(404) => ErrorCategory::NotFound,
            Some(409) => ErrorCategory::Conflict,
            Some(422) => ErrorCategory::Policy,
            Some(400..=499) => ErrorCategory::InvalidInput,
            Some(502..=504) => ErrorCategory::Unavailable,
            _ => ErrorCategory::Internal,
        }
    }

    /// The HTTP status for [`Error::Api`], `None` otherwise.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// One detail of an [`Error::Api`] (`rule` of a `policy_violation`), if present.
    pub fn detail(&self, key: &str) -> Option<&serde_json::Value> {
        match self {
            Error::Api { details, .. } => details.get(key),
            _ => None,
        }
    }

    /// Builds an [`Error::Api`] from a status and a response body. A body that is
    /// not fleetd's error shape still gives an `Api` error, with a code derived
    /// from the status (`http_<status>`) and the body's start as the message.
    pub fn from_response(status: u16, body: &[u8]) -> Error {
        #[derive(serde::Deserialize)]
        struct Envelope {
            error: Inner,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            code: String,
            #[serde(default)]
            message: String,
            #[serde(flatten)]
            details: serde_json::Map<String, serde_json::Value>,
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error }) => Error::Api {
                status,
                message: if error.message.is_empty() {
                    error.code.clone()
                } else {
                    error.message
                },
                code: error.code,
                details: error.details,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let mut message: String = text.chars().take(200).collect();
                if message.is_empty() {
                    message = format!("HTTP {status}");
                }
                Error::Api {
                    status,
                    code: format!("http_{status}"),
                    message,
                    details: serde_json::Map::new(),
                }
            }
        }
    }

    pub(crate) fn transport(what: impl fmt::Display, e: impl fmt::Display) -> Error {
        Error::Transport(format!("{what}: {e}"))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for wrale_core::ErrorReport {
    /// API errors carry the server's own message (the `Display` form appends the
    /// code) and its details plus the HTTP `status`.
    fn from(e: Error) -> Self {
        let mut report = wrale_core::ErrorReport::new(e.category(), e.code(), "");
        match e {
            Error::Api {
                message,
                mut details,
                status,
                ..
            } => {
                details.insert("status".into(), status.into());
                report.message = message;
                report.details = Some(details);
            }
            other => report.message = other.to_string(),
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_carry_the_server_message_and_details_with_the_status() {
        let e = Error::from_response(
            404,
            br#"{"error":{"code":"not_found","message":"no device pi-9","device":"pi-9"}}"#,
        );
        let r = wrale_core::ErrorReport::from(e);
        assert_eq!(r.category, wrale_core::ErrorCategory::NotFound);
        assert_eq!(
            (r.code.as_str(), r.message.as_str()),
            ("not_found", "no device pi-9")
        );
        let d = r.details.unwrap();
        assert_eq!(
            (d["status"].as_u64(), d["device"].as_str()),
            (Some(404), Some("pi-9"))
        );
        let t = wrale_core::ErrorReport::from(Error::Transport("refused".into()));
        assert_eq!((t.code.as_str(), t.details), ("transport", None));
        assert!(t.message.contains("refused"), "{}", t.message);
    }

    #[test]
    fn api_error_keeps_code_message_and_details() {
        let e = Error::from_response(
            422,
            br#"{"error":{"code":"policy_violation","message":"warn_c 95 above the floor","rule":"board_floor","device":"pi-1"}}"#,
        );
        assert_eq!(e.code(), "policy_violation");
        assert_eq!(e.status(), Some(422));
        assert_eq!(
            e.detail("rule").and_then(|v| v.as_str()),
            Some("board_floor")
        );
        assert_eq!(
            e.to_string(),
            "warn_c 95 above the floor (policy_violation)"
        );
    }

    #[test]
    fn non_json_error_body_gets_a_status_code() {
        let e = Error::from_response(502, b"Bad Gateway\n");
        assert_eq!(e.code(), "http_502");
        assert_eq!(e.to_string(), "Bad Gateway (http_502)");
        let e = Error::from_response(404, b"");
        assert_eq!(e.to_string(), "HTTP 404 (http_404)");
    }

    #[test]
    fn client_side_codes() {
        assert_eq!(Error::Transport("x".into()).code(), "transport");
        assert_eq!(Error::Decode("x".into()).code(), "decode");
        assert_eq!(
            Error::InvalidArgument("x".into()).code(),
            "invalid_argument"
        );
        assert_eq!(Error::Decode("x".into()).status(), None);
    }

    #[test]
    fn categories_from_codes_then_status() {
        use wrale_core::ErrorCategory;
        let api = |status, code: &str| Error::Api {
            status,
            code: code.into(),
            message: "m".into(),
            details: serde_json::Map::new(),
        };
        assert_eq!(api(401, "unauthorized").category(), ErrorCategory::Auth);
        assert_eq!(api(403, "forbidden").category(), ErrorCategory::Auth);
        assert_eq!(api(404, "not_found").category(), ErrorCategory::NotFound);
        assert_eq!(
            api(422, "policy_violation").category(),
            ErrorCategory::Policy
        );
        assert_eq!(
            api(409, "device_offline").category(),
            ErrorCategory::Unavailable
        );
        assert_eq!(
            api(400, "invalid_body").category(),
            ErrorCategory::InvalidInput
        );
        // Codes Wrale does not define: by status.
        assert_eq!(api(404, "http_404").category(), ErrorCategory::NotFound);
        assert_eq!(api(418, "teapot").category(), ErrorCategory::InvalidInput);
        assert_eq!(api(502, "http_502").category(), ErrorCategory::Unavailable);
        assert_eq!(api(500, "boom").category(), ErrorCategory::Internal);
        assert_eq!(
            Error::Transport("x".into()).category(),
            ErrorCategory::Unavailable
        );
        assert_eq!(
            Error::Decode("x".into()).category(),
            ErrorCategory::Internal
        );
        assert_eq!(
            Error::InvalidArgument("x".into()).category(),
            ErrorCategory::InvalidInput
        );
    }
}
