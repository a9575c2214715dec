//! metald's configuration: built-in defaults < TOML file < `WRALE_*` environment <
//! command-line flags, validated as a whole.
//!
//! Every error names the key and the problem, and where the bad value came from: the
//! file (with line and column for syntax and type errors), the environment variable,
//! or the flag. The daemon refuses to start on a bad config; on SIGHUP a bad new
//! config is logged and the running one kept (see [`crate::run`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wrale_core::board::BoardProfile;
use wrale_core::model::DeviceId;
use wrale_core::time::duration_str;
use wrale_hal::{BackendConfig, LinuxConfig};

use crate::auth::TokenConfig;

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/wrale/metald.toml";
/// Prefix of environment overrides (`WRALE_SAMPLING__INTERVAL=2s`).
pub const ENV_PREFIX: &str = "WRALE_";
/// Environment variables with the prefix that are flags, not config keys.
const ENV_FLAGS: &[&str] = &["WRALE_CONFIG"];

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[device]`: identity.
    pub device: DeviceConfig,
    /// `[api]`: the local HTTP API.
    pub api: ApiConfig,
    /// `[hal]`: the HAL backend (`backend = "sim" | "linux" | "rpi"` plus its keys).
    pub hal: BackendConfig,
    /// `[board]`: board profile override.
    pub board: BoardConfig,
    /// `[sampling]`: how often the board is sampled.
    pub sampling: SamplingConfig,
    /// `[data]`: local persistence.
    pub data: DataConfig,
    /// `[shutdown]`: emergency shutdown.
    pub shutdown: ShutdownConfig,
    /// `[safe_mode]`: when the hardware-fault mode is left.
    pub safe_mode: SafeModeConfig,
    /// `[cgroup]`: cgroup v2 subtree for CPU-limited workloads.
    pub cgroup: CgroupConfig,
    /// `[[workloads]]`: supervised child processes.
    pub workloads: Vec<WorkloadConfig>,
    /// `[log]`: log output.
    pub log: LogConfig,
    /// `[policy]`: local policy layers on top of the board's floor.
    pub policy: PolicyConfig,
    /// `[fleet]`: enrollment and the edge agent (absent `url`: never connects).
    pub fleet: crate::fleet::FleetConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            device: DeviceConfig::default(),
            api: ApiConfig::default(),
            // A device daemon defaults to real hardware; the simulator is opt-in.
            hal: BackendConfig::Linux(LinuxConfig::default()),
            board: BoardConfig::default(),
            sampling: SamplingConfig::default(),
            data: DataConfig::default(),
            shutdown: ShutdownConfig::default(),
            safe_mode: SafeModeConfig::default(),
            cgroup: CgroupConfig::default(),
            workloads: Vec::new(),
            log: LogConfig::default(),
            policy: PolicyConfig::default(),
            fleet: crate::fleet::FleetConfig::default(),
        }
    }
}

/// `[device]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Device id (DNS-label-like). Defaults to the host name, lower-cased.
    pub id: Option<DeviceId>,
    /// Hardware serial sent at enrollment. Defaults to the board's (`/proc/cpuinfo`).
    pub serial: Option<String>,
    /// Free-form labels (`role = "cam"`), sent at enrollment and kept in the twin.
    pub labels: BTreeMap<String, String>,
    /// Where the device is (`site`, `rack`, `shelf`, `slot`).
    pub location: wrale_core::model::Location,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// API tokens (hashes only) with their roles.
    pub tokens: Vec<TokenConfig>,
    /// Serve `/metrics` without a token.
    pub public_metrics: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 8700)),
            tokens: Vec::new(),
            public_metrics: false,
        }
    }
}

/// `[policy]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Policy layer files (`wrale_core::policy::PolicyLayer` TOML), each a path or
    /// a pattern with `*` in the file name (`/etc/wrale/policy.d/*.toml`, sorted).
    /// Each may only tighten the board's floor.
    pub layers: Vec<String>,
}

impl PolicyConfig {
    /// The files the entries name, in order (patterns expanded and sorted).
    pub fn files(&self) -> Result<Vec<PathBuf>, String> {
        let mut out = Vec::new();
        for entry in &self.layers {
            let path = Path::new(entry);
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| format!("{entry:?} names no file"))?;
            let Some((prefix, suffix)) = name.split_once('*') else {
                out.push(path.to_path_buf());
                continue;
            };
            if suffix.contains('*') {
                return Err(format!("{entry:?}: only one `*` is supported"));
            }
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let read = std::fs::read_dir(dir)
                .map_err(|e| format!("{entry:?}: cannot list {}: {e}", dir.display()))?;
            let mut matched: Vec<PathBuf> = read
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name().to_str().is_some_and(|n| {
                        n.len() >= prefix.len() + suffix.len()
                            && n.starts_with(prefix)
                            && n.ends_with(suffix)
                    })
                })
                .map(|e| e.path())
                .collect();
            matched.sort();
            out.extend(matched);
        }
        Ok(out)
    }

    /// Reads and parses every layer; an error names the file (and the line).
    pub fn load(&self) -> Result<Vec<wrale_core::policy::PolicyLayer>, String> {
        self.files()?
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
                wrale_core::policy::PolicyLayer::from_toml(&text, &f.display().to_string())
                    .map_err(|e| e.to_string())
            })
            .collect()
    }
}

/// `[board]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoardConfig {
    /// A board profile TOML file that replaces the built-in profile of the model
    /// (thresholds and fan settings the safety engine starts from).
    pub profile: Option<PathBuf>,
}

/// `[sampling]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Time between two samples.
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// Capacity of the event/readings stream; slower subscribers lose items (counted).
    pub stream_capacity: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            stream_capacity: 256,
        }
    }
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Directory for the twin, the audit log and the telemetry ring.
    pub dir: PathBuf,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/wrale/metald"),
        }
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Program and arguments run for an emergency shutdown (not on `sim`).
    pub command: Vec<String>,
    /// Program and arguments run for a `reboot` command (not on `sim`).
    pub reboot_command: Vec<String>,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            command: vec!["systemctl".into(), "poweroff".into()],
            reboot_command: vec!["systemctl".into(), "reboot".into()],
        }
    }
}

/// `[cgroup]`: where `throttle = "cpu-limit"` workloads get their cgroups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// A delegated, writable cgroup v2 directory (`Delegate=yes` in the unit).
    pub root: PathBuf,
    /// The `cpu.max` period.
    #[serde(with = "duration_str")]
    pub period: Duration,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/sys/fs/cgroup/wrale"),
            period: Duration::from_millis(100),
        }
    }
}

/// `[safe_mode]`: the hardware-fault mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafeModeConfig {
    /// Safe mode is left on its own once the fault has been gone this long (board clock).
    #[serde(with = "duration_str")]
    pub hold: Duration,
    /// Consecutive failed hardware writes (actions) that count as a fault.
    pub hal_error_limit: u32,
}

impl Default for SafeModeConfig {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(30),
            hal_error_limit: 5,
        }
    }
}

/// When a workload is started again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After any exit.
    Always,
    /// After an exit with a failure status or a signal.
    #[default]
    OnFailure,
    /// Never.
    Never,
}

/// What throttling does to a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThrottleMode {
    /// SIGSTOP the workload's process group; SIGCONT when the policy allows.
    #[default]
    Pause,
    /// Leave it running (critical workloads).
    Ignore,
    /// Limit it to `cpu_limit_pct` % of one CPU with a cgroup v2 `cpu.max` in
    /// `cgroup.root`; SIGSTOP/SIGCONT (with a warning) when cgroups are unavailable.
    CpuLimit,
}

/// Exponential restart backoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// Delay before the first restart; doubled after each quick failure.
    #[serde(with = "duration_str")]
    pub initial: Duration,
    /// Upper bound of the delay. A run longer than this resets the delay.
    #[serde(with = "duration_str")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// `[[workloads]]`: one supervised command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Unique name (DNS-label-like).
    pub name: String,
    /// Program to run (a path or a name looked up in `PATH`).
    pub command: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Restart backoff.
    #[serde(default)]
    pub backoff: Backoff,
    /// What throttling does to it.
    #[serde(default)]
    pub throttle: ThrottleMode,
    /// Time between SIGTERM and SIGKILL when it is stopped.
    #[serde(default = "default_stop_timeout", with = "duration_str")]
    pub stop_timeout: Duration,
    /// With `throttle = "cpu-limit"`: the share of one CPU it keeps while
    /// throttled (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_pct: Option<f64>,
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
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
    /// The file is not valid TOML, or a value has the wrong type (the message gives
    /// line, column and key).
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// A key has an unusable value.
    #[error("invalid config key `{key}` (from {origin}): {message}")]
    Invalid {
        /// Dotted key path (`sampling.interval`, `workloads[0].name`).
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
    /// `--backend` -> `hal.backend`.
    pub backend: Option<String>,
    /// `--data-dir` -> `data.dir`.
    pub data_dir: Option<PathBuf>,
    /// `--sampling-interval` -> `sampling.interval`.
    pub sampling_interval: Option<String>,
    /// `--board-profile` -> `board.profile`.
    pub board_profile: Option<PathBuf>,
    /// `--log-format` -> `log.format`.
    pub log_format: Option<LogFormat>,
}

impl FlagOverrides {
    fn entries(&self) -> Vec<(&'static str, Vec<&'static str>, toml::Value)> {
        let s = |v: &str| toml::Value::String(v.to_owned());
        let p = |v: &Path| toml::Value::String(v.to_string_lossy().into_owned());
        let mut out = Vec::new();
        if let Some(v) = &self.bind {
            out.push(("--bind", vec!["api", "bind"], s(v)));
        }
        if let Some(v) = &self.backend {
            out.push(("--backend", vec!["hal", "backend"], s(v)));
        }
        if let Some(v) = &self.data_dir {
            out.push(("--data-dir", vec!["data", "dir"], p(v)));
        }
        if let Some(v) = &self.sampling_interval {
            out.push(("--sampling-interval", vec!["sampling", "interval"], s(v)));
        }
        if let Some(v) = &self.board_profile {
            out.push(("--board-profile", vec!["board", "profile"], p(v)));
        }
        if let Some(v) = self.log_format {
            let name = match v {
                LogFormat::Human => "human",
                LogFormat::Json => "json",
            };
            out.push(("--log-format", vec!["log", "format"], s(name)));
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

    /// Uses these environment variables (only `WRALE_*` ones matter).
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        // The backend first: choosing it drops the file's keys of another backend,
        // which must not drop the environment's own `WRALE_HAL__*` keys.
        self.env
            .sort_by_key(|(k, _)| (k != "WRALE_HAL__BACKEND", k.clone()));
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
            let rest = &var[ENV_PREFIX.len()..];
            let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
            if !rest.contains("__") || keys.iter().any(|k| k.is_empty()) {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: "expected WRALE_<SECTION>__<KEY> (`__` between levels, e.g. WRALE_SAMPLING__INTERVAL)".into(),
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
/// `["a", "b"]`, `"quoted"`), else a plain string (`2s`, `0.0.0.0:8700`, `sim`).
fn env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

/// Sets `keys` in `table`, creating intermediate tables. Choosing a different HAL
/// backend drops the lower layers' keys of the old backend.
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
    if keys == ["hal", "backend"] && cur.get("backend") != Some(&value) {
        cur.clear();
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

    /// Checks what serde cannot: ranges, uniqueness, files that must exist.
    /// Returns the dotted key and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_owned(), m));
        let iv = self.sampling.interval;
        if iv < Duration::from_millis(10) || iv > Duration::from_secs(3600) {
            return err(
                "sampling.interval",
                format!(
                    "{} is out of range (10ms..=1h)",
                    humantime::format_duration(iv)
                ),
            );
        }
        if self.sampling.stream_capacity == 0 || self.sampling.stream_capacity > 65536 {
            return err(
                "sampling.stream_capacity",
                "must be between 1 and 65536".into(),
            );
        }
        if self.shutdown.command.first().is_none_or(|c| c.is_empty()) {
            return err(
                "shutdown.command",
                "must name a program, e.g. [\"systemctl\", \"poweroff\"]".into(),
            );
        }
        if self
            .shutdown
            .reboot_command
            .first()
            .is_none_or(|c| c.is_empty())
        {
            return err(
                "shutdown.reboot_command",
                "must name a program, e.g. [\"systemctl\", \"reboot\"]".into(),
            );
        }
        if self.data.dir.as_os_str().is_empty() {
            return err("data.dir", "must not be empty".into());
        }
        let mut names = HashSet::new();
        for (i, t) in self.api.tokens.iter().enumerate() {
            if t.name.is_empty() {
                return err(&format!("api.tokens[{i}].name"), "must not be empty".into());
            }
            if !names.insert(t.name.as_str()) {
                return err(
                    &format!("api.tokens[{i}].name"),
                    format!("duplicate token name {:?}", t.name),
                );
            }
        }
        let mut names = HashSet::new();
        for (i, w) in self.workloads.iter().enumerate() {
            if let Err(e) = DeviceId::new(w.name.as_str()) {
                return err(
                    &format!("workloads[{i}].name"),
                    e.to_string().replacen("device id", "workload name", 1),
                );
            }
            if !names.insert(w.name.as_str()) {
                return err(
                    &format!("workloads[{i}].name"),
                    format!("duplicate workload name {:?}", w.name),
                );
            }
            if w.command.trim().is_empty() {
                return err(
                    &format!("workloads[{i}].command"),
                    "must not be empty".into(),
                );
            }
            if let Some(pct) = w.cpu_limit_pct
                && !(pct.is_finite() && pct > 0.0 && pct <= 100.0 * 1024.0)
            {
                return err(
                    &format!("workloads[{i}].cpu_limit_pct"),
                    format!("{pct} is not a CPU share: need 0 < pct (100 = one CPU)"),
                );
            }
            if w.backoff.initial.is_zero() || w.backoff.initial > w.backoff.max {
                return err(
                    &format!("workloads[{i}].backoff"),
                    "need 0 < initial <= max".into(),
                );
            }
        }
        self.fleet.validate()?;
        self.policy
            .load()
            .map_err(|m| ("policy.layers".to_owned(), m))?;
        if let Some(path) = &self.board.profile {
            self.load_profile_file(path)
                .map_err(|m| ("board.profile".to_owned(), m))?;
        }
        Ok(())
    }

    fn load_profile_file(&self, path: &Path) -> Result<BoardProfile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        BoardProfile::from_toml(&text, &path.display().to_string()).map_err(|e| e.to_string())
    }

    /// The board profile override, if `board.profile` is set (validated at load).
    pub fn board_profile_override(&self) -> Result<Option<BoardProfile>, String> {
        self.board
            .profile
            .as_deref()
            .map(|p| self.load_profile_file(p))
            .transpose()
    }

    /// Name of the configured HAL backend.
    pub fn backend_name(&self) -> &'static str {
        match self.hal {
            BackendConfig::Sim(_) => "sim",
            BackendConfig::Linux(_) => "linux",
            BackendConfig::Rpi(_) => "rpi",
        }
    }
}

#[cfg(test)]
mod tests;
