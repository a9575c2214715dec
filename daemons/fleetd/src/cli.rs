//! Command-line interface. Each flag overrides one config key (flags win over the
//! environment, which wins over the file).

use std::io::Read;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{DEFAULT_CONFIG_PATH, FlagOverrides, Loader, LogFormat};

/// fleetd: the Wrale fleet brain (registry, users, enrollment, alerts, audit,
/// events, telemetry, twins).
///
/// Configuration: built-in defaults < the TOML file < WRALE_<SECTION>__<KEY> or
/// FLEETD_<SECTION>__<KEY> environment variables (e.g. WRALE_API__BIND=0.0.0.0:8600)
/// < these flags. SIGHUP reloads the config (a bad one is logged and the running
/// one kept); SIGTERM and SIGINT shut down gracefully.
#[derive(Debug, Parser)]
#[command(name = "fleetd", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// Config file [default: /etc/wrale/fleetd.toml, optional there; required when given]
    #[arg(
        long,
        short = 'c',
        env = "FLEETD_CONFIG",
        value_name = "PATH",
        global = true
    )]
    pub config: Option<PathBuf>,

    /// Load and validate the config, print the problem if any, and exit (0 = valid)
    #[arg(long)]
    pub check_config: bool,

    /// Address the API listens on (api.bind) [default: 0.0.0.0:8600]
    #[arg(long, value_name = "ADDR", global = true)]
    pub bind: Option<String>,

    /// Data directory of the store (data.dir) [default: /var/lib/wrale/fleetd]
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Serve /metrics without a token (api.public_metrics = true)
    #[arg(long)]
    pub public_metrics: bool,

    /// Log format (log.format); the level comes from RUST_LOG
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Tokio worker threads
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub worker_threads: usize,

    #[command(subcommand)]
    #[allow(missing_docs)]
    pub command: Option<CliCommand>,
}

/// Subcommands (none: `serve`).
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the daemon (the default)
    Serve,
    /// Manage administrators offline (works while fleetd runs)
    Admin {
        #[command(subcommand)]
        #[allow(missing_docs)]
        command: AdminCommand,
    },
    /// Write a consistent snapshot of the data directory to FILE (fleetd may run)
    Backup {
        /// Snapshot file to write
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Restore a snapshot into the data directory (fleetd stopped)
    Restore {
        /// Snapshot file to read
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Restore into a non-empty data directory (its contents are moved into
        /// `.replaced-<ms>/` inside it)
        #[arg(long)]
        force: bool,
    },
}

/// `fleetd admin ...`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin user; prints a generated password (unless --password-stdin)
    /// and an admin API token, once
    Create {
        /// User name
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Read the password from standard input instead of generating one
        #[arg(long)]
        password_stdin: bool,
    },
}

impl Cli {
    /// The flag layer of the config.
    pub fn flags(&self) -> FlagOverrides {
        FlagOverrides {
            bind: self.bind.clone(),
            data_dir: self.data_dir.clone(),
            log_format: self.log_format,
            public_metrics: self.public_metrics,
        }
    }

    /// A loader for every layer: the file, this process's environment, the flags.
    pub fn loader(&self) -> Loader {
        let loader = match &self.config {
            Some(path) => Loader::new().file(path),
            None => Loader::new().optional_file(DEFAULT_CONFIG_PATH),
        };
        loader.env(std::env::vars()).flags(self.flags())
    }
}

/// `fleetd admin create`: returns what to print.
pub fn admin_create(
    config: &crate::Config,
    name: &str,
    password_stdin: bool,
) -> anyhow::Result<String> {
    let password = if password_stdin {
        let mut pw = String::new();
        std::io::stdin().read_to_string(&mut pw)?;
        let pw = pw.trim_end_matches(['\n', '\r']).to_owned();
        anyhow::ensure!(
            pw.chars().count() >= config.auth.min_password_len,
            "the password must have at least {} characters (auth.min_password_len)",
            config.auth.min_password_len
        );
        Some(pw)
    } else {
        None
    };
    let store = crate::admin::open_store(config)?;
    let created = crate::admin::create_admin(store.as_ref(), name, password.as_deref())?;
    let mut out = format!("created admin user {:?}\n", created.name);
    if let Some(pw) = &created.generated_password {
        out.push_str(&format!("password:  {pw}\n"));
    }
    out.push_str(&format!("API token: {}\n(shown only now)\n", created.token));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_parses_subcommands() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from([
            "fleetd",
            "admin",
            "create",
            "--name",
            "ops",
            "--data-dir",
            "/tmp/x",
        ]);
        assert!(
            matches!(cli.command, Some(CliCommand::Admin { command: AdminCommand::Create { ref name, password_stdin: false } }) if name == "ops")
        );
        assert_eq!(cli.flags().data_dir, Some(PathBuf::from("/tmp/x")));
        let cli = Cli::parse_from(["fleetd", "backup", "--to", "/tmp/b"]);
        assert!(matches!(cli.command, Some(CliCommand::Backup { .. })));
        assert!(Cli::try_parse_from(["fleetd", "--log-format", "xml"]).is_err());
    }
}
