//! Command-line arguments (clap derive): `wrale <noun> <verb>`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use wrale_client::EventKind;
use wrale_client::models::Role;

/// The wrale CLI: manage a Wrale fleet through fleetd's API.
#[derive(Debug, Parser)]
#[command(name = "wrale", version, about, propagate_version = true)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// fleetd's URL (default: from `wrale login`, else http://127.0.0.1:8600).
    #[arg(long, global = true, env = "WRALE_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token (session or API token; default: from `wrale login`).
    #[arg(
        long,
        global = true,
        env = "WRALE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print JSON instead of tables (one object or array; JSON lines for `events`).
    #[arg(long, global = true)]
    pub json: bool,
    /// Config file (default: $XDG_CONFIG_HOME/wrale/cli.toml).
    #[arg(long, global = true, env = "WRALE_CLI_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// For an https:// fleetd: trust only the CA certificates in this PEM file
    /// (default: from the config file, else the system store).
    #[arg(long, global = true, env = "WRALE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in with a password and store the URL and session token.
    Login(LoginArgs),
    /// Revoke the stored session and forget it.
    Logout,
    /// Show who the token in use belongs to.
    Whoami,
    /// Devices: list, show, edit, history, rollback, commands, diagnostics.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Device groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Config layers (fleet, group, device) and effective config.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Alerts.
    #[command(subcommand)]
    Alert(AlertCmd),
    /// Enrollment tokens for new devices.
    #[command(subcommand)]
    Enroll(EnrollCmd),
    /// Users (admin).
    #[command(subcommand)]
    User(UserCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// The audit log.
    Audit(AuditArgs),
    /// Follow the live event stream until Ctrl-C.
    Events(EventsArgs),
    /// One metric of a device over a time range, or aggregated across a group.
    Telemetry(TelemetryArgs),
    /// Fleet workloads the scheduler places by headroom.
    #[command(subcommand)]
    Workload(WorkloadCmd),
    /// Where workloads run, and why there.
    #[command(subcommand)]
    Placement(PlacementCmd),
    /// The optimizer's recommendations (fan profiles, workload moves).
    #[command(subcommand)]
    Recommend(RecommendCmd),
    /// Config rollouts in waves, gated on physical health.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// The fleet analyzer: per-device health and evidence, scopes, hot spots.
    #[command(subcommand)]
    Analysis(AnalysisCmd),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `wrale login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name (asked on the terminal when absent).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from standard input (first line) instead of the terminal.
    #[arg(long)]
    pub password_stdin: bool,
}

/// A `key=value` pair.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Filters of `wrale device list`.
#[derive(Debug, Clone, Default, Args)]
pub struct DeviceListArgs {
    /// Only devices with this label (repeatable, all must match).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Only devices of this group (and its subgroups).
    #[arg(long)]
    pub group: Option<String>,
    /// Only devices at this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only devices in this rack.
    #[arg(long)]
    pub rack: Option<String>,
    /// Only devices on this shelf.
    #[arg(long)]
    pub shelf: Option<String>,
    /// Only this board model.
    #[arg(long)]
    pub model: Option<String>,
    /// Only devices with this status (online, offline, revoked).
    #[arg(long)]
    pub status: Option<String>,
    /// Only devices with this health.
    #[arg(long)]
    pub health: Option<String>,
    /// Show one page of at most N devices (default: every page).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,
    /// Start at this page cursor (from a previous `--limit` listing).
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `wrale device ...`.
#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// List devices.
    List(DeviceListArgs),
    /// Show one device (with `--twin`, its twin too).
    Show {
        /// Device id.
        id: String,
        /// Also show the twin (desired, reported, conflicts).
        #[arg(long)]
        twin: bool,
    },
    /// Change a device's labels, location or group.
    Set(DeviceSetArgs),
    /// List the versions of a device's twin, newest first.
    History {
        /// Device id.
        id: String,
    },
    /// Write the desired values of an older twin version as a new change.
    Rollback {
        /// Device id.
        id: String,
        /// The version, as shown by `wrale device history`.
        #[arg(id = "twin_version", value_name = "VERSION")]
        version: String,
    },
    /// Send a command to a device and wait for its answer.
    Command(DeviceCommandArgs),
    /// Run the hardware diagnostics on a device and show the report.
    Diag {
        /// Device id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "diagnostics from the wrale CLI")]
        reason: String,
    },
}

/// `wrale device set`.
#[derive(Debug, Args)]
pub struct DeviceSetArgs {
    /// Device id.
    pub id: String,
    /// Set a label (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Remove a label (repeatable).
    #[arg(long = "unlabel", value_name = "KEY")]
    pub unlabels: Vec<String>,
    /// Move the device to this group ('' to take it out of its group).
    #[arg(long)]
    pub group: Option<String>,
    /// Site ('' to unset; same for rack, shelf and slot).
    #[arg(long)]
    pub site: Option<String>,
    /// Rack.
    #[arg(long)]
    pub rack: Option<String>,
    /// Shelf.
    #[arg(long)]
    pub shelf: Option<String>,
    /// Slot.
    #[arg(long)]
    pub slot: Option<String>,
}

/// `wrale device command`.
#[derive(Debug, Args)]
pub struct DeviceCommandArgs {
    /// Device id.
    pub id: String,
    /// Command type (`set_fan_duty`, `set_fan_profile`, `set_gpio`, `reboot`, ...).
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// Arguments as KEY=VALUE (`fan=fan0 duty_pct=40`); values are JSON when they parse as JSON.
    #[arg(value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub args: Vec<(String, String)>,
    /// Why (recorded in the audit log).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `wrale group ...`.
#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// List groups.
    List,
    /// Create a group.
    Create {
        /// Group id (a-z, 0-9, '-').
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Parent group.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Show a group.
    Show {
        /// Group id.
        id: String,
    },
    /// Delete a group.
    Delete {
        /// Group id.
        id: String,
    },
}

/// Which config layer.
#[derive(Debug, Clone, Default, Args)]
pub struct ScopeArgs {
    /// The layer of this group.
    #[arg(long, conflicts_with = "device")]
    pub group: Option<String>,
    /// The layer of this device.
    #[arg(long)]
    pub device: Option<String>,
}

/// `wrale config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Show a config layer (fleet by default), or a device's effective config.
    Get {
        /// Which layer.
        #[command(flatten)]
        scope: ScopeArgs,
        /// With --device: the effective config and the layer of each field.
        #[arg(long, requires = "device")]
        effective: bool,
    },
    /// Set (or with --unset remove) fields of a layer; other fields are kept.
    Set {
        /// Which layer.
        #[command(flatten)]
        scope: ScopeArgs,
        /// Fields as KEY=VALUE (`warn_c=65 fan_profile=cool`); values are JSON when they parse.
        #[arg(value_name = "KEY=VALUE", value_parser = parse_key_value)]
        fields: Vec<(String, String)>,
        /// Remove this field (repeatable).
        #[arg(long, value_name = "KEY")]
        unset: Vec<String>,
    },
    /// Replace a whole layer with the fields of a TOML or JSON file (`-`: JSON on stdin).
    Apply {
        /// Which layer.
        #[command(flatten)]
        scope: ScopeArgs,
        /// The file (`.toml` or `.json`; nested TOML tables become dotted keys).
        file: PathBuf,
    },
}

/// `wrale alert ...`.
#[derive(Debug, Subcommand)]
pub enum AlertCmd {
    /// List alerts.
    List {
        /// Only this state: active (raised or acked), raised, acked, cleared.
        #[arg(long)]
        state: Option<String>,
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
        /// Only this severity (info, warning, critical).
        #[arg(long)]
        severity: Option<String>,
    },
    /// Acknowledge an alert.
    Ack {
        /// Alert id.
        id: i64,
    },
    /// Clear an alert.
    Clear {
        /// Alert id.
        id: i64,
    },
    /// Open fleet alerts of the analyzer's rules (with the silences holding them).
    Fleet,
    /// Silence windows for fleet alerts (no webhook delivery while they last).
    #[command(subcommand)]
    Silence(SilenceCmd),
    /// Webhook deliveries given up (dead letters).
    DeadLetters {
        /// Remove this dead letter instead of listing.
        #[arg(long, value_name = "ID")]
        delete: Option<u64>,
    },
}

/// `wrale alert silence ...`.
#[derive(Debug, Subcommand)]
pub enum SilenceCmd {
    /// List silences in force or to come.
    List,
    /// Create a silence (at least one of --rule, --device, --key-prefix).
    Create {
        /// Only alerts of this rule (`hot_spot`, `fan_failing`, ...).
        #[arg(long)]
        rule: Option<String>,
        /// Only alerts about this device.
        #[arg(long)]
        device: Option<String>,
        /// Only alerts whose key starts with this.
        #[arg(long)]
        key_prefix: Option<String>,
        /// How long (`2h`, `30m`); default 1h unless --until is given.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// End time (RFC 3339), instead of --for.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<wrale_core::Timestamp>,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Remove a silence.
    Delete {
        /// Silence id (`sil-...`).
        id: String,
    },
}

/// `wrale analysis ...`.
#[derive(Debug, Subcommand)]
pub enum AnalysisCmd {
    /// What the analyzer says about one device (trend, headroom, fan, supply,
    /// storage, health factors, anomalies).
    Show {
        /// Device id.
        device: String,
    },
    /// Health per device and per fleet, site, rack and group.
    Fleet,
    /// Racks and shelves hotter than the rest of the fleet at comparable load.
    Hotspots,
}

/// `wrale enroll ...`.
#[derive(Debug, Subcommand)]
pub enum EnrollCmd {
    /// Create an enrollment token (shown once).
    Create {
        /// Group the enrolled devices join.
        #[arg(long)]
        group: Option<String>,
        /// How many devices may use it.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        uses: Option<u32>,
        /// Lifetime (`24h`, `7d`).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// Label for the enrolled devices (repeatable).
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
    },
    /// List enrollment tokens.
    List,
    /// Delete an enrollment token.
    Delete {
        /// Token id.
        id: String,
    },
}

/// `wrale user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// List users.
    List,
    /// Create a user (the password is asked on the terminal, or read with --password-stdin).
    Create {
        /// User name.
        name: String,
        /// Role.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user.
    Delete {
        /// User name.
        name: String,
    },
}

/// `wrale token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// List API tokens.
    List,
    /// Create an API token (the secret is shown once).
    Create {
        /// Name.
        name: String,
        /// Role (at most yours; default: yours).
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Lifetime (`30d`); never expires when absent.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Revoke an API token.
    Revoke {
        /// Token id.
        id: String,
    },
}

/// A role name.
pub fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|e: wrale_core::fleet::access::UnknownRole| e.to_string())
}

/// `wrale audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this actor.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Only this action.
    #[arg(long)]
    pub action: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<wrale_core::Timestamp>,
    /// Only entries before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<wrale_core::Timestamp>,
    /// Show at most N entries (one page; default: every page).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
}

/// An RFC 3339 time.
pub fn parse_time(s: &str) -> Result<wrale_core::Timestamp, String> {
    wrale_core::Timestamp::parse_rfc3339(s).map_err(|e| e.to_string())
}

/// `wrale events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this device.
    #[arg(long)]
    pub device: Option<String>,
    /// Only devices of this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Only this kind (repeatable): reading, twin, alert, audit, device.
    #[arg(long = "kind", value_parser = parse_kind)]
    pub kinds: Vec<EventKind>,
    /// Stop after N events (default: follow until Ctrl-C).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// An event kind.
pub fn parse_kind(s: &str) -> Result<EventKind, String> {
    s.parse()
}

/// `wrale telemetry`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["device", "group"])))]
pub struct TelemetryArgs {
    /// Device id.
    pub device: Option<String>,
    /// Aggregate across this group and its subgroups instead of one device.
    #[arg(long)]
    pub group: Option<String>,
    /// The metric (cpu_temp_c, ambient_temp_c, supply_v, current_a, power_w,
    /// fan_duty_pct, fan_rpm, cpu_load_pct, cpu_freq_mhz, throttle_bits).
    #[arg(long, short, default_value = "cpu_temp_c")]
    pub metric: String,
    /// Start: a duration back from --until or now (`15m`, `2h`, `7d`) or an
    /// RFC 3339 time [default: 1 h before the end].
    #[arg(long, value_parser = parse_since, value_name = "DURATION|TIME")]
    pub since: Option<Since>,
    /// End (RFC 3339, excluded) [default: now].
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub until: Option<wrale_core::Timestamp>,
    /// Resolution: raw, 1m, 1h or auto (the finest that fits the range).
    #[arg(long, default_value = "auto", value_parser = parse_resolution)]
    pub resolution: wrale_client::models::Resolution,
    /// With --group: avg (default), min or max across the devices.
    #[arg(long, requires = "group", value_parser = parse_agg)]
    pub agg: Option<wrale_client::models::Aggregate>,
}

/// The start of a telemetry range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Since {
    /// This long before the end.
    Ago(std::time::Duration),
    /// This time.
    At(wrale_core::Timestamp),
}

/// `15m`, `2h`, `7d` or an RFC 3339 time.
pub fn parse_since(s: &str) -> Result<Since, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(Since::Ago(d));
    }
    wrale_core::Timestamp::parse_rfc3339(s)
        .map(Since::At)
        .map_err(|_| format!("{s:?} is neither a duration (15m, 2h, 7d) nor an RFC 3339 time"))
}

/// A telemetry resolution.
pub fn parse_resolution(s: &str) -> Result<wrale_client::models::Resolution, String> {
    s.parse()
}

/// A group aggregate.
pub fn parse_agg(s: &str) -> Result<wrale_client::models::Aggregate, String> {
    use wrale_client::models::Aggregate;
    match s {
        "avg" => Ok(Aggregate::Avg),
        "min" => Ok(Aggregate::Min),
        "max" => Ok(Aggregate::Max),
        other => Err(format!(
            "unknown aggregate {other:?} (expected avg, min or max)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wrale").chain(args.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn globals_go_anywhere() {
        let cli = parse(&[
            "device",
            "list",
            "--json",
            "--url",
            "http://h:1",
            "-l",
            "role=cam",
        ])
        .unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.url.as_deref(), Some("http://h:1"));
        match cli.command {
            Command::Device(DeviceCmd::List(a)) => {
                assert_eq!(a.labels, vec![("role".to_owned(), "cam".to_owned())]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_exit_2() {
        for bad in [
            &["device"][..],
            &["device", "list", "--label", "novalue"],
            &["device", "list", "--limit", "0"],
            &["token", "create", "ci", "--role", "root"],
            &["events", "--kind", "weather"],
            &["config", "get", "--effective"],
            &["config", "get", "--group", "a", "--device", "b"],
            &["frobnicate"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
        assert_eq!(parse(&["--help"]).unwrap_err().exit_code(), 0);
    }

    #[test]
    fn command_arguments() {
        let cli = parse(&[
            "device",
            "command",
            "pi-1",
            "set_fan_duty",
            "fan=fan0",
            "duty_pct=40",
            "--reason",
            "hot",
        ])
        .unwrap();
        match cli.command {
            Command::Device(DeviceCmd::Command(a)) => {
                assert_eq!(a.kind, "set_fan_duty");
                assert_eq!(a.args.len(), 2);
                assert_eq!(a.reason, "hot");
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "token",
            "create",
            "ci",
            "--role",
            "viewer",
            "--expires-in",
            "30d",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Token(TokenCmd::Create {
                role: Some(Role::Viewer),
                ..
            })
        ));
    }
}

/// `wrale workload ...`.
#[derive(Debug, Subcommand)]
pub enum WorkloadCmd {
    /// Declared workloads.
    List,
    /// Declare a workload (the scheduler places it at once).
    Create(WorkloadCreateArgs),
    /// Remove a workload (its replicas are stopped).
    Delete {
        /// Workload name.
        name: String,
    },
}

/// `wrale workload create`.
#[derive(Debug, Args)]
pub struct WorkloadCreateArgs {
    /// Name (`[a-z0-9-]`; the device runs the workload of this name).
    pub name: String,
    /// The command or systemd unit it runs.
    #[arg(long)]
    pub command: Option<String>,
    /// CPU demand in percent of a board.
    #[arg(long)]
    pub cpu: f64,
    /// Power it adds to a board, in watts.
    #[arg(long)]
    pub power: f64,
    /// Replicas (on different devices).
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Higher is placed first and evicted last.
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Required device label `KEY=VALUE` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Allowed board model (repeatable; none: any).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// A workload that may not share a device with this one (repeatable).
    #[arg(long = "anti-affinity", value_name = "WORKLOAD")]
    pub anti_affinity: Vec<String>,
    /// Spread replicas across racks.
    #[arg(long)]
    pub spread_racks: bool,
}

/// `wrale placement ...`.
#[derive(Debug, Subcommand)]
pub enum PlacementCmd {
    /// Placements with the reason for each, and replicas left pending.
    List {
        /// Only this workload.
        #[arg(long)]
        workload: Option<String>,
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
    },
}

/// `wrale recommend ...`.
#[derive(Debug, Subcommand)]
pub enum RecommendCmd {
    /// Recommendations with their expected effect.
    List,
    /// Apply one recommendation.
    Accept {
        /// Recommendation id (from `wrale recommend list`).
        id: String,
    },
}

/// `wrale rollout ...`.
#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Start a rollout (the canary wave is written at once).
    Create(RolloutCreateArgs),
    /// Rollouts, newest first.
    List {
        /// Only this status (running, paused, completed, aborted, rolled_back).
        #[arg(long)]
        status: Option<String>,
    },
    /// One rollout: progress, waves, gate failures.
    Show {
        /// Rollout id.
        id: String,
    },
    /// Print progress until the rollout stops running (exit 1 unless it completed).
    Watch {
        /// Rollout id.
        id: String,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Pause a running rollout.
    Pause {
        /// Rollout id.
        id: String,
    },
    /// Resume a paused rollout (restarts the current wave's soak).
    Resume {
        /// Rollout id.
        id: String,
    },
    /// Stop for good; changed devices keep the change.
    Abort {
        /// Rollout id.
        id: String,
    },
    /// Write the replaced values back into every changed device.
    Rollback {
        /// Rollout id.
        id: String,
    },
}

/// `wrale rollout create`.
#[derive(Debug, Args)]
pub struct RolloutCreateArgs {
    /// Desired field to change, `KEY=VALUE` (repeatable; VALUE is JSON when it parses).
    #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
    pub set: Vec<String>,
    /// Rollout id (generated when absent).
    #[arg(long)]
    pub id: Option<String>,
    /// Target device (repeatable).
    #[arg(long = "device", conflicts_with = "group")]
    pub devices: Vec<String>,
    /// Target every device of this group and its subgroups.
    #[arg(long)]
    pub group: Option<String>,
    /// Canary device (repeatable).
    #[arg(long = "canary", conflicts_with = "canary_percent")]
    pub canary: Vec<String>,
    /// Canary share of the targets, in percent.
    #[arg(long)]
    pub canary_percent: Option<f64>,
    /// Devices per wave after the canaries.
    #[arg(long, conflicts_with = "by_rack")]
    pub wave_size: Option<usize>,
    /// One wave per rack after the canaries.
    #[arg(long)]
    pub by_rack: bool,
    /// Soak time per wave (`10m`).
    #[arg(long, default_value = "10m")]
    pub soak: String,
    /// Largest allowed health drop below the pre-rollout score.
    #[arg(long)]
    pub health_margin: Option<f64>,
    /// Time a device has to report the change applied (`10m`).
    #[arg(long)]
    pub apply_timeout: Option<String>,
    /// Roll changed devices back at once when a gate fails.
    #[arg(long)]
    pub auto_rollback: bool,
}
