//! `[fleet]`: where fleetd is, how to enroll, and how the edge agent behaves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wrale_core::time::duration_str;

/// File name of the stored device credential in `data.dir` (the default of
/// `fleet.credential_file`).
pub const CREDENTIAL_FILE: &str = "fleet-credential";

/// `[fleet]`. Without `url` metald never connects anywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// fleetd's base URL, `http://host:port` or `https://host:port` (enrollment
    /// and sync then run over TLS).
    pub url: Option<String>,
    /// A CA bundle (PEM) to trust for an `https://` fleet instead of the system
    /// store (a private fleet CA).
    pub ca_file: Option<PathBuf>,
    /// The one-time enrollment token (`wre_...`), used while no credential is stored.
    pub enrollment_token: Option<String>,
    /// A file holding the enrollment token (instead of `enrollment_token`).
    pub enrollment_token_file: Option<PathBuf>,
    /// Where the device credential is stored (mode 0600). Default
    /// `<data.dir>/fleet-credential`.
    pub credential_file: Option<PathBuf>,
    /// Reconnect and enrollment retry backoff (capped exponential, full jitter).
    pub backoff: FleetBackoff,
    /// Most telemetry records per frame.
    pub telemetry_batch: usize,
    /// When nothing arrived from fleetd for this long, the session offers its
    /// state again and an unacknowledged telemetry batch is sent again.
    #[serde(with = "duration_str")]
    pub resync_after: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            url: None,
            ca_file: None,
            enrollment_token: None,
            enrollment_token_file: None,
            credential_file: None,
            backoff: FleetBackoff::default(),
            telemetry_batch: 256,
            resync_after: Duration::from_secs(15),
        }
    }
}

/// `[fleet.backoff]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetBackoff {
    /// Ceiling of the first retry delay.
    #[serde(with = "duration_str")]
    pub initial: Duration,
    /// Largest ceiling; a refused enrollment token is retried at this pace.
    #[serde(with = "duration_str")]
    pub max: Duration,
}

impl Default for FleetBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl FleetConfig {
    /// Whether the edge agent runs (a `url` is set).
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// The credential file for a data directory.
    pub fn credential_path(&self, data_dir: &Path) -> PathBuf {
        self.credential_file
            .clone()
            .unwrap_or_else(|| data_dir.join(CREDENTIAL_FILE))
    }

    /// The enrollment token: `enrollment_token`, or the first line of
    /// `enrollment_token_file`. `Ok(None)` when neither is set.
    pub fn enrollment_token(&self) -> Result<Option<String>, String> {
        if let Some(t) = &self.enrollment_token {
            return Ok(Some(t.trim().to_owned()));
        }
        let Some(path) = &self.enrollment_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_owned();
        if token.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        Ok(Some(token))
    }

    /// The parsed base URL (validated at load).
    pub fn base_url(&self) -> Option<reqwest::Url> {
        self.url
            .as_deref()
            .and_then(|u| reqwest::Url::parse(u).ok())
    }

    /// The sync WebSocket URL of `device`: `ws(s)://host:port/api/v1/devices/{id}/sync`.
    pub fn sync_url(&self, device: &str) -> Option<String> {
        let base = self.base_url()?;
        let scheme = if base.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        let host = base.host_str()?;
        let port = base.port().map(|p| format!(":{p}")).unwrap_or_default();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        Some(format!(
            "{scheme}://{host}{port}/api/v1/devices/{device}/sync"
        ))
    }

    /// Whom an `https://` fleet is trusted by: `ca_file` alone, or the system
    /// store. Errors name the file.
    pub fn tls_config(&self) -> Result<std::sync::Arc<wrale_tls::rustls::ClientConfig>, String> {
        wrale_tls::client_config(&wrale_tls::Roots::ca_or_system(self.ca_file.as_deref()))
            .map_err(|e| format!("fleet.ca_file: {e}"))
    }

    /// The enrollment URL: `<url>/api/v1/enroll`.
    pub fn enroll_url(&self) -> Option<reqwest::Url> {
        self.base_url()?.join("/api/v1/enroll").ok()
    }

    /// Checks ranges and the URL; returns the dotted key and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((format!("fleet.{k}"), m));
        if let Some(url) = &self.url {
            let parsed = match reqwest::Url::parse(url) {
                Ok(u) => u,
                Err(e) => return err("url", format!("{url:?} is not a URL: {e}")),
            };
            match parsed.scheme() {
                "http" | "https" => {}
                other => {
                    return err(
                        "url",
                        format!("{url:?}: scheme {other:?} is not http or https"),
                    );
                }
            }
            if parsed.host_str().is_none_or(str::is_empty) {
                return err("url", format!("{url:?} names no host"));
            }
            if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
                return err(
                    "url",
                    format!("{url:?}: give only scheme, host and port (http://fleet:8600)"),
                );
            }
        }
        if let Some(ca) = &self.ca_file {
            if let Err(e) = wrale_tls::client_config(&wrale_tls::Roots::CaFile(ca.clone())) {
                return err("ca_file", e.to_string());
            }
        }
        if self.enrollment_token.is_some() && self.enrollment_token_file.is_some() {
            return err(
                "enrollment_token",
                "set enrollment_token or enrollment_token_file, not both".into(),
            );
        }
        match self.enrollment_token() {
            Ok(Some(t)) if !t.starts_with("wre_") => {
                let key = if self.enrollment_token.is_some() {
                    "enrollment_token"
                } else {
                    "enrollment_token_file"
                };
                return err(
                    key,
                    "an enrollment token starts with `wre_` (from fleetd's POST /api/v1/enrollment-tokens)"
                        .into(),
                );
            }
            Ok(_) => {}
            Err(m) => return err("enrollment_token_file", m),
        }
        if self
            .credential_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return err("credential_file", "must not be empty".into());
        }
        let b = &self.backoff;
        if b.initial.is_zero() || b.initial > b.max {
            return err("backoff", "need 0 < initial <= max".into());
        }
        if b.max > Duration::from_secs(3600) {
            return err("backoff.max", "must be at most 1h".into());
        }
        if self.telemetry_batch == 0 || self.telemetry_batch > 65536 {
            return err("telemetry_batch", "must be between 1 and 65536".into());
        }
        if self.resync_after < Duration::from_secs(1)
            || self.resync_after > Duration::from_secs(3600)
        {
            return err("resync_after", "must be between 1s and 1h".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FleetConfig, String> {
        let c: FleetConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|(k, m)| format!("{k}: {m}"))?;
        Ok(c)
    }

    #[test]
    fn defaults_never_connect() {
        let c = parse("").unwrap();
        assert!(!c.enabled());
        assert_eq!(
            c.credential_path(Path::new("/d")),
            PathBuf::from("/d/fleet-credential")
        );
    }

    #[test]
    fn urls_are_derived_from_the_base() {
        let c = parse("url = \"http://fleet.lan:8600\"\nenrollment_token = \"wre_x\"").unwrap();
        assert_eq!(
            c.sync_url("pi-1").unwrap(),
            "ws://fleet.lan:8600/api/v1/devices/pi-1/sync"
        );
        assert_eq!(
            c.enroll_url().unwrap().as_str(),
            "http://fleet.lan:8600/api/v1/enroll"
        );
    }

    #[test]
    fn https_urls_sync_over_wss() {
        let c = parse("url = \"https://fleet.lan:8600\"").unwrap();
        assert_eq!(
            c.sync_url("pi-1").unwrap(),
            "wss://fleet.lan:8600/api/v1/devices/pi-1/sync"
        );
        assert_eq!(
            c.enroll_url().unwrap().as_str(),
            "https://fleet.lan:8600/api/v1/enroll"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("url = \"fleet:8600\"", "fleet.url"),
            ("url = \"ftp://fleet\"", "fleet.url"),
            ("ca_file = \"/nonexistent/ca.pem\"", "fleet.ca_file"),
            ("url = \"http://fleet/x\"", "fleet.url"),
            ("enrollment_token = \"abc\"", "fleet.enrollment_token"),
            (
                "enrollment_token = \"wre_a\"\nenrollment_token_file = \"/x\"",
                "fleet.enrollment_token",
            ),
            (
                "enrollment_token_file = \"/nonexistent/token\"",
                "fleet.enrollment_token_file",
            ),
            ("[backoff]\ninitial = \"2s\"\nmax = \"1s\"", "fleet.backoff"),
            ("telemetry_batch = 0", "fleet.telemetry_batch"),
            ("resync_after = \"10ms\"", "fleet.resync_after"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(key), "{text}: {e}");
        }
    }
}
