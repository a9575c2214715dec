//! fleetd's configuration: built-in defaults < TOML file < environment
//! (`WRALE_<SECTION>__<KEY>`, or the same with `FLEETD_`) < command-line flags,
//! validated as a whole.
//!
//! Every error names the key, the problem and where the bad value came from (the
//! file with line and column, the environment variable, or the flag). The daemon
//! refuses to start on a bad config; on SIGHUP a bad new config is logged and the
//! running one kept.

use std::fmt;
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
/// Environment variables with a prefix that are flags, not config keys.
const ENV_FLAGS: &[&str] = &["WRALE_CONFIG", "FLEETD_CONFIG"];

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
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 8600)),
            body_limit: 1024 * 1024,
            public_metrics: false,
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

/// Where a config value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or a value has the wrong type (with line and column).
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// toml's message, with line, column and key.
        message: String,
    },
    /// A key has an unusable value.
    #[error("invalid config key `{key}` (from {origin}): {message}")]
    Invalid {
        /// Dotted key path (`api.bind`).
        key: String,
        /// Where the value came from.
        origin: Origin,
        /// What is wrong.
        message: String,
    },
    /// An environment variable does not map to a key.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, where there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

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
    fn entries(&self) -> Vec<(&'static str, [&'static str; 2], toml::Value)> {
        let s = |v: &str| toml::Value::String(v.to_owned());
        let mut out = Vec::new();
        if let Some(v) = &self.bind {
            out.push(("--bind", ["api", "bind"], s(v)));
        }
        if let Some(v) = &self.data_dir {
            out.push(("--data-dir", ["data", "dir"], s(&v.to_string_lossy())));
        }
        if let Some(v) = self.log_format {
            let name = match v {
                LogFormat::Human => "human",
                LogFormat::Json => "json",
            };
            out.push(("--log-format", ["log", "format"], s(name)));
        }
        if self.public_metrics {
            out.push((
                "--public-metrics",
                ["api", "public_metrics"],
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
            .filter(|(k, _)| ENV_PREFIXES.iter().any(|p| k.starts_with(p)))
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
        let mut origins: Vec<(Vec<String>, Origin)> = Vec::new();
        let mut table = toml::Table::new();
        if let Some(path) = &self.path {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    table = parse_file(path, &text)?;
                    origins.push((Vec::new(), Origin::File(path.clone())));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.path_required => {}
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        for (var, raw) in &self.env {
            if ENV_FLAGS.contains(&var.as_str()) {
                continue;
            }
            let prefix = ENV_PREFIXES
                .iter()
                .find(|p| var.starts_with(*p))
                .map_or(0, |p| p.len());
            let rest = &var[prefix..];
            let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
            if !rest.contains("__") || keys.iter().any(|k| k.is_empty()) {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: "expected WRALE_<SECTION>__<KEY> or FLEETD_<SECTION>__<KEY> (`__` between levels, e.g. WRALE_API__BIND)".into(),
                });
            }
            let keys_ref: Vec<&str> = keys.iter().map(String::as_str).collect();
            set_path(&mut table, &keys_ref, env_value(raw));
            origins.push((keys, Origin::Env(var.clone())));
        }
        for (flag, keys, value) in self.flags.entries() {
            set_path(&mut table, &keys, value);
            origins.push((
                keys.iter().map(|k| (*k).to_owned()).collect(),
                Origin::Flag(flag),
            ));
        }
        let origin_of = |key: &str| origin_for(&origins, key);
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Invalid {
                    origin: origin_of(&key),
                    message: e.into_inner().to_string(),
                    key,
                }
            })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                origin: origin_of(&key),
                key,
                message,
            })?;
        Ok(config)
    }
}

/// Parses the file as a table; on a type error, re-parses it as a [`Config`] so the
/// error carries the file's line and column.
fn parse_file(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let file_err = |message: String| ConfigError::File {
        path: path.to_owned(),
        message: message.trim_end().to_owned(),
    };
    let table: toml::Table = toml::from_str(text).map_err(|e| file_err(e.to_string()))?;
    toml::from_str::<Config>(text).map_err(|e| file_err(e.to_string()))?;
    Ok(table)
}

/// An environment value is a TOML value if it parses as one (`8`, `true`,
/// `"quoted"`), else a plain string (`12h`, `0.0.0.0:8600`).
fn env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

/// Sets `keys` in `table`, creating intermediate tables.
fn set_path(table: &mut toml::Table, keys: &[&str], value: toml::Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut cur = table;
    for k in parents {
        let entry = cur
            .entry((*k).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(t) = entry else {
            return;
        };
        cur = t;
    }
    cur.insert((*last).to_owned(), value);
}

/// The origin of the most specific layer that set `key` (or one of its parents).
fn origin_for(origins: &[(Vec<String>, Origin)], key: &str) -> Origin {
    let parts: Vec<&str> = key
        .split(['.', '['])
        .map(|p| p.trim_end_matches(']'))
        .filter(|p| !p.is_empty())
        .collect();
    let mut best: Option<(usize, &Origin)> = None;
    for (path, origin) in origins {
        let is_prefix = path.len() <= parts.len() && path.iter().zip(&parts).all(|(a, b)| a == b);
        if is_prefix && best.is_none_or(|(len, _)| path.len() >= len) {
            best = Some((path.len(), origin));
        }
    }
    best.map(|(_, o)| o.clone()).unwrap_or(Origin::Default)
}

impl Config {
    /// Parses a TOML document on its own (no environment, no flags), validated.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let path = PathBuf::from("<string>");
        let table = parse_file(&path, text)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                ConfigError::Invalid {
                    key: e.path().to_string(),
                    origin: Origin::File(path.clone()),
                    message: e.into_inner().to_string(),
                }
            })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                key,
                origin: Origin::File(path),
                message,
            })?;
        Ok(config)
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
