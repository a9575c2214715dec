//! The CLI's error: a message, a stable code and an exit code.

use std::fmt;

/// What the CLI prints on failure: `wrale: <message> (<code>)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CliError {
    pub(crate) message: String,
    pub(crate) code: String,
    pub(crate) usage: bool,
}

impl CliError {
    /// A failure (exit 1).
    pub(crate) fn failure(code: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: code.to_owned(),
            usage: false,
        }
    }

    /// A usage error found after parsing (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: "usage".to_owned(),
            usage: true,
        }
    }

    /// 1 for failures, 2 for usage errors.
    pub(crate) fn exit_code(&self) -> u8 {
        if self.usage { 2 } else { 1 }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl From<wrale_client::Error> for CliError {
    fn from(e: wrale_client::Error) -> Self {
        let message = match &e {
            wrale_client::Error::Api {
                message, details, ..
            } => {
                // Name the rule of a policy violation (and the device, if given).
                let mut m = message.clone();
                for key in ["rule", "device", "field"] {
                    match details.get(key).and_then(|v| v.as_str()) {
                        Some(v) if !m.contains(v) => m.push_str(&format!(" [{key}: {v}]")),
                        _ => {}
                    }
                }
                m
            }
            other => other.to_string(),
        };
        let usage = matches!(e, wrale_client::Error::InvalidArgument(_));
        let hint = match e.code() {
            "unauthorized" => "; log in again with `wrale login` or pass --token",
            "transport" if message.contains("certificate is not trusted") => {
                "; pass the fleet's CA certificate with --ca-cert FILE (or WRALE_CA_CERT)"
            }
            _ => "",
        };
        CliError {
            message: format!("{message}{hint}"),
            code: e.code().to_owned(),
            usage,
        }
    }
}

/// `Result` with [`CliError`].
pub(crate) type CliResult<T = ()> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_the_server_code() {
        let e = wrale_client::Error::from_response(
            401,
            br#"{"error":{"code":"unauthorized","message":"invalid token"}}"#,
        );
        let c = CliError::from(e);
        assert_eq!(c.exit_code(), 1);
        assert_eq!(
            c.to_string(),
            "invalid token; log in again with `wrale login` or pass --token (unauthorized)"
        );
    }

    #[test]
    fn policy_violations_name_the_rule() {
        let e = wrale_client::Error::from_response(
            422,
            br#"{"error":{"code":"policy_violation","message":"warn_c 99 is above the floor","rule":"board_floor","device":"pi-1"}}"#,
        );
        assert_eq!(
            CliError::from(e).to_string(),
            "warn_c 99 is above the floor [rule: board_floor] [device: pi-1] (policy_violation)"
        );
    }

    #[test]
    fn transport_and_usage_codes() {
        let c = CliError::from(wrale_client::Error::Transport(
            "GET /api/v1/devices: connection refused".into(),
        ));
        assert_eq!(c.exit_code(), 1);
        assert_eq!(
            c.to_string(),
            "GET /api/v1/devices: connection refused (transport)"
        );
        let c = CliError::from(wrale_client::Error::InvalidArgument("bad URL".into()));
        assert_eq!(c.exit_code(), 2);
        assert_eq!(CliError::usage("x").exit_code(), 2);
    }
}
