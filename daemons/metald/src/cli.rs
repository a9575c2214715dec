//! Command-line interface. Each flag overrides one config key (flags win over the
//! environment, which wins over the file).

use std::io::Read;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::auth::{TokenHash, generate_token};
use crate::config::{DEFAULT_CONFIG_PATH, FlagOverrides, Loader, LogFormat};

/// metald: the Wrale device daemon (hardware sampling, safety, local API).
///
/// Configuration: built-in defaults < the TOML file < WRALE_<SECTION>__<KEY>
/// environment variables (e.g. WRALE_SAMPLING__INTERVAL=2s, WRALE_HAL__BACKEND=sim)
/// < these flags. SIGHUP reloads the config (a bad one is logged and the running one
/// kept); SIGTERM and SIGINT shut down with the outputs in their fail-safe state.
#[derive(Debug, Parser)]
#[command(name = "metald", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// Config file [default: /etc/wrale/metald.toml, optional there; required when given]
    #[arg(long, short = 'c', env = "WRALE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Load and validate the config, print the problem if any, and exit (0 = valid)
    #[arg(long)]
    pub check_config: bool,

    /// Address the local API listens on (api.bind) [default: 0.0.0.0:8700]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,

    /// HAL backend (hal.backend); switching backend drops the file's backend keys
    #[arg(long, value_name = "NAME", value_parser = ["sim", "linux", "rpi"])]
    pub backend: Option<String>,

    /// Data directory for the twin, audit log and telemetry ring (data.dir)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Time between two samples, e.g. 500ms, 2s (sampling.interval) [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub sampling_interval: Option<String>,

    /// Board profile TOML replacing the model's built-in one (board.profile)
    #[arg(long, value_name = "PATH")]
    pub board_profile: Option<PathBuf>,

    /// Log format (log.format); the level comes from RUST_LOG
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Tokio worker threads (the sampling loop has its own thread)
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub worker_threads: usize,

    #[command(subcommand)]
    #[allow(missing_docs)]
    pub command: Option<CliCommand>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Print a new random API token and the sha256 hash to put in [[api.tokens]]
    HashToken {
        /// Hash a token read from standard input instead of generating one
        #[arg(long)]
        stdin: bool,
    },
}

impl Cli {
    /// The flag layer of the config.
    pub fn flags(&self) -> FlagOverrides {
        FlagOverrides {
            bind: self.bind.clone(),
            backend: self.backend.clone(),
            data_dir: self.data_dir.clone(),
            sampling_interval: self.sampling_interval.clone(),
            board_profile: self.board_profile.clone(),
            log_format: self.log_format,
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

/// The output of `metald hash-token`.
pub fn hash_token(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut token = String::new();
        std::io::stdin().read_to_string(&mut token)?;
        let token = token.trim();
        anyhow::ensure!(!token.is_empty(), "no token on standard input");
        return Ok(format!("{}\n", TokenHash::of(token)));
    }
    let (token, hash) =
        generate_token().map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(format!(
        "token: {token}\nhash:  {hash}\n\n\
         Give the token to the client (Authorization: Bearer <token>) and put only the\n\
         hash in the config:\n\n\
         [[api.tokens]]\nname = \"<who>\"\nrole = \"viewer\"   # or operator, admin\nhash = \"{hash}\"\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_documents_every_flag() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--config",
            "--check-config",
            "--bind",
            "--backend",
            "--data-dir",
            "--sampling-interval",
            "--board-profile",
            "--log-format",
            "--worker-threads",
            "hash-token",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
    }

    #[test]
    fn flags_map_to_keys() {
        let cli = Cli::parse_from([
            "metald",
            "--backend",
            "sim",
            "--bind",
            "127.0.0.1:1",
            "--log-format",
            "json",
        ]);
        let f = cli.flags();
        assert_eq!(f.backend.as_deref(), Some("sim"));
        assert_eq!(f.bind.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(f.log_format, Some(LogFormat::Json));
        assert!(Cli::try_parse_from(["metald", "--backend", "gpio"]).is_err());
    }

    #[test]
    fn hash_token_prints_a_matching_pair() {
        let out = hash_token(false).unwrap();
        let token = out.lines().next().unwrap().strip_prefix("token: ").unwrap();
        let hash = out.lines().nth(1).unwrap().strip_prefix("hash:  ").unwrap();
        assert_eq!(TokenHash::of(token).to_string(), hash);
    }
}
