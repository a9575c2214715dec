//! fleetd's configuration: built-in defaults < TOML file < environment
//! (`WRALE_<SECTION>__<KEY>`, or the same with `FLEETD_`) < command-line flags,
//! validated as a whole.
//!
//! Every error names the key, the problem and where the bad value came from (the
//! file with line and column, the environment variable, or the flag). The daemon
//! refuses to start on a bad config; on SIGHUP a bad new config is logged and the
//! running one kept.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wrale_core::time::duration_str;

use crate::telemetry::TelemetryConfig;
use crate::twins::HubConfig;

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/wrale/fleetd.toml";
/// Prefixes of environment overrides (`WRALE_API__BIND`, `FLEETD_API__BIND`).
pub const ENV_PREFIXES: [&str; 2] = ["WRALE_", "FLEETD_"];
/// How the environment maps to keys.
const ENV_SCHEME: EnvScheme = EnvScheme {
    prefixes: &ENV_PREFIXES,
    // The `--config` flag's variables, not keys.
    ignore: &["WRALE_CONFIG", "FLEETD_CONFIG"],
    usage: "expected WRALE_<SECTION>__<KEY> or FLEETD_<SECTION>__<KEY> (`__` between levels, e.g. WRALE_API__BIND)",
    selectors: &[],
};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[api]`: the HTTP API.
    pub api: ApiConfig,
    /// `[data]`: where the store lives.
    pub data: DataConfig,
    /// `[auth]`: sessions and passwords.
    pub auth: AuthConfig,
    /// `[events]`: the live event stream.
    pub events: EventsConfig,
    /// `[telemetry]`: retention and downsampling (see [`crate::telemetry`]).
    pub telemetry: TelemetryConfig,
    /// `[hub]`: the twin hub (see [`crate::twins`]).
    pub hub: HubConfig,
    /// `[log]`: log output.
    pub log: LogConfig,
    /// `[intel]`: the analyzer, fleet alerts and webhooks (see [`crate::intel`]).
    pub intel: crate::intel::IntelConfig,
    /// `[orchestrate]`: scheduler, optimizer and rollout driver (see [`crate::orchestrate`]).
    pub orchestrate: crate::orchestrate::OrchestrateConfig,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Largest accepted request body, in bytes (413 `body_too_large` above).
    pub body_limit: usize,
    /// Serve `/metrics` without a token.
    pub public_metrics: bool,
    /// `[api.tls]`: serve the API over TLS (both files, or neither for plain HTTP).
    pub tls: ApiTlsConfig,
}

/// `[api.tls]`: a PEM certificate chain (leaf first) and its PEM private key.
/// Both set: the API (REST and both WebSockets) is served over TLS on `api.bind`.
/// A reload re-reads both files, so renewed certificates need no restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiTlsConfig {
    /// The certificate chain file (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key file (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl ApiTlsConfig {
    /// The certificate and key files, if TLS is on.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        self.cert_file.as_deref().zip(self.key_file.as_deref())
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 8600)),
            body_limit: 1024 * 1024,
            public_metrics: false,
            tls: ApiTlsConfig::default(),
        }
    }
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Directory of `fleet.db` (and the other stores).
    pub dir: PathBuf,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/wrale/fleetd"),
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long a login session lasts.
    #[serde(with = "duration_str")]
    pub session_ttl: Duration,
    /// Shortest accepted password.
    pub min_password_len: usize,
    /// Name of the admin created at first start when there is no user.
    pub first_admin: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
            min_password_len: 8,
            first_admin: "admin".into(),
        }
    }
}

/// `[events]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events buffered per subscriber; a slower one is told how many it missed.
    pub capacity: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { capacity: 1024 }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[log]`. The level comes from `RUST_LOG` (default `info`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
}

pub use wrale_core::layered::{ConfigError, Origin};
use wrale_core::layered::{EnvScheme, FlagValue, Sources};

/// Values given as command-line flags (each maps to one key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlagOverrides {
    /// `--bind` -> `api.bind`.
    pub bind: Option<String>,
    /// `--data-dir` -> `data.dir`.
    pub data_dir: Option<PathBuf>,
    /// `--log-format` -> `log.format`.
    pub log_format: Option<LogFormat>,
    /// `--public-metrics` -> `api.public_metrics = true`.
    pub public_metrics: bool,
}

impl FlagOverrides {
    fn entries(&self) -> Vec<FlagValue> {
        let s = |v: &str| toml::Value::String(v.to_owned());
        let mut out = Vec::new();
        if let Some(v) = &self.bind {
            out.push(("--bind", vec!["api", "bind"], s(v)));
        }
        if let Some(v) = &self.data_dir {
            out.push(("--data-dir", vec!["data", "dir"], s(&v.to_string_lossy())));
        }
        if let Some(v) = self.log_format {
            let name = match v {
                LogFormat::Human => "human",
                LogFormat::Json => "json",
            };
            out.push(("--log-format", vec!["log", "format"], s(name)));
        }
        if self.public_metrics {
            out.push((
                "--public-metrics",
                vec!["api", "public_metrics"],
                toml::Value::Boolean(true),
            ));
        }
        out
    }
}

/// Loads the config from its layers. Kept by the daemon so SIGHUP re-reads the
/// same file with the same environment snapshot and flags.
#[derive(Debug, Clone, Default)]
pub struct Loader {
    path: Option<PathBuf>,
    path_required: bool,
    env: Vec<(String, String)>,
    flags: FlagOverrides,
}

impl Loader {
    /// A loader with no file, no environment and no flags (built-in defaults).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `path`, which must exist.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self.path_required = true;
        self
    }

    /// Reads `path` if it exists (the default location).
    pub fn optional_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self.path_required = false;
        self
    }

    /// Uses these environment variables (only `WRALE_*` and `FLEETD_*` ones matter;
    /// `FLEETD_` ones are applied after, so they win).
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env = vars
            .into_iter()
            .filter(|(k, _)| ENV_SCHEME.matches(k))
            .collect();
        self.env
            .sort_by_key(|(k, _)| (k.starts_with("FLEETD_"), k.clone()));
        self
    }

    /// Uses these flag values.
    pub fn flags(mut self, flags: FlagOverrides) -> Self {
        self.flags = flags;
        self
    }

    /// The file this loader reads, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reads every layer, merges, deserializes and validates.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let text = match &self.path {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.path_required => None,
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            },
            None => None,
        };
        let sources = Sources {
            file: self.path.as_deref().zip(text.as_deref()),
            env: &self.env,
            flags: &self.flags.entries(),
        };
        wrale_core::layered::load(&sources, &ENV_SCHEME, Config::validate)
    }
}

impl Config {
    /// Parses a TOML document on its own (no environment, no flags), validated.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        wrale_core::layered::from_toml_str(text, Config::validate)
    }

    /// Checks what serde cannot. Returns the dotted key and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((k.to_owned(), m.to_owned()));
        if self.api.body_limit < 1024 || self.api.body_limit > 256 * 1024 * 1024 {
            return err("api.body_limit", "must be between 1024 and 268435456 bytes");
        }
        if self.data.dir.as_os_str().is_empty() {
            return err("data.dir", "must not be empty");
        }
        match (&self.api.tls.cert_file, &self.api.tls.key_file) {
            (Some(_), None) => {
                return err(
                    "api.tls.key_file",
                    "must be set when api.tls.cert_file is (both or neither)",
                );
            }
            (None, Some(_)) => {
                return err(
                    "api.tls.cert_file",
                    "must be set when api.tls.key_file is (both or neither)",
                );
            }
            (Some(c), Some(k)) if c.as_os_str().is_empty() || k.as_os_str().is_empty() => {
                return err("api.tls", "cert_file and key_file must not be empty");
            }
            _ => {}
        }
        let ttl = self.auth.session_ttl;
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(366 * 86400) {
            return err("auth.session_ttl", "must be between 1s and 366d");
        }
        if !(4..=1024).contains(&self.auth.min_password_len) {
            return err("auth.min_password_len", "must be between 4 and 1024");
        }
        if crate::auth::validate_user_name(&self.auth.first_admin).is_err() {
            return err(
                "auth.first_admin",
                "must be 1-64 characters of a-z, 0-9, '.', '_' and '-'",
            );
        }
        if self.events.capacity == 0 || self.events.capacity > 1 << 20 {
            return err("events.capacity", "must be between 1 and 1048576");
        }
        self.telemetry.validate()?;
        self.hub.validate()?;
        self.intel.validate()?;
        self.orchestrate.validate()?;
        Ok(())
    }

    /// Path of the SQLite store.
    pub fn db_path(&self) -> PathBuf {
        self.data.dir.join("fleet.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.api.bind.port(), 8600);
        assert_eq!(c.api.body_limit, 1 << 20);
        assert_eq!(c.data.dir, PathBuf::from("/var/lib/wrale/fleetd"));
        assert_eq!(c.auth.session_ttl, Duration::from_secs(43200));
    }

    #[test]
    fn api_tls_needs_both_files_or_neither() {
        let e = Config::from_toml_str("[api.tls]\ncert_file = \"/c.pem\"\n").unwrap_err();
        assert!(e.to_string().contains("api.tls.key_file"), "{e}");
        let e = Config::from_toml_str("[api.tls]\nkey_file = \"/k.pem\"\n").unwrap_err();
        assert!(e.to_string().contains("api.tls.cert_file"), "{e}");
        let c = Config::from_toml_str("[api.tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n")
            .unwrap();
        assert_eq!(
            c.api.tls.files(),
            Some((Path::new("/c.pem"), Path::new("/k.pem")))
        );
        assert_eq!(Config::default().api.tls.files(), None);
    }

    #[test]
    fn layers_win_in_order_and_errors_name_key_and_origin() {
        let dir = tempfile_dir();
        let path = dir.join("fleetd.toml");
        std::fs::write(&path, "[api]\nbind = \"127.0.0.1:1\"\nbody_limit = 4096\n").unwrap();
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let c = Loader::new()
            .file(&path)
            .env(env(&[
                ("WRALE_API__BIND", "127.0.0.1:2"),
                ("FLEETD_AUTH__SESSION_TTL", "5m"),
                ("HOME", "/root"),
            ]))
            .load()
            .unwrap();
        assert_eq!(c.api.bind.port(), 2);
        assert_eq!(c.api.body_limit, 4096);
        assert_eq!(c.auth.session_ttl, Duration::from_secs(300));

        let c = Loader::new()
            .file(&path)
            .env(env(&[("WRALE_API__BIND", "127.0.0.1:2")]))
            .flags(FlagOverrides {
                bind: Some("127.0.0.1:3".into()),
                ..Default::default()
            })
            .load()
            .unwrap();
        assert_eq!(c.api.bind.port(), 3);

        let e = Loader::new()
            .env(env(&[("FLEETD_AUTH__SESSION_TTL", "0s")]))
            .load()
            .unwrap_err();
        assert_eq!(e.key(), Some("auth.session_ttl"));
        assert!(e.to_string().contains("FLEETD_AUTH__SESSION_TTL"), "{e}");

        let e = Loader::new()
            .env(env(&[("WRALE_API__BIND", "nowhere")]))
            .load()
            .unwrap_err();
        assert_eq!(e.key(), Some("api.bind"), "{e}");

        let e = Loader::new()
            .env(env(&[("WRALE_BIND", "x")]))
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("WRALE_BIND"), "{e}");

        std::fs::write(&path, "[api]\nbodylimit = 5\n").unwrap();
        let e = Loader::new().file(&path).load().unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("bodylimit") && text.contains("line 2"),
            "{text}"
        );

        std::fs::write(&path, "[api]\nbody_limit = 10\n").unwrap();
        let e = Loader::new().file(&path).load().unwrap_err();
        assert_eq!(e.key(), Some("api.body_limit"));
        assert!(e.to_string().contains("fleetd.toml"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).unwrap();
        let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("fleetd-config-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
