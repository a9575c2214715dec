//! metald's configuration: built-in defaults < TOML file < `WRALE_*` environment <
//! command-line flags, validated as a whole.
//!
//! Every error names the key and the problem, and where the bad value came from: the
//! file (with line and column for syntax and type errors), the environment variable,
//! or the flag. The daemon refuses to start on a bad config; on SIGHUP a bad new
//! config is logged and the running one kept (see [`crate::run`]).

use std::collections::{BTreeMap, HashSet};
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
/// How the environment maps to keys; `hal.backend` selects the `[hal]` variant.
const ENV_SCHEME: EnvScheme = EnvScheme {
    prefixes: &[ENV_PREFIX],
    // `WRALE_CONFIG` is the `--config` flag, not a key.
    ignore: &["WRALE_CONFIG"],
    usage: "expected WRALE_<SECTION>__<KEY> (`__` between levels, e.g. WRALE_SAMPLING__INTERVAL)",
    selectors: &[&["hal", "backend"]],
};

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
    /// Program and arguments run for a `reboot` command (on `sim` the simulated board reboots instead).
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

pub use wrale_core::layered::{ConfigError, Origin};
use wrale_core::layered::{EnvScheme, FlagValue, Sources};

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
    fn entries(&self) -> Vec<FlagValue> {
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
