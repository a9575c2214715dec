//! Command implementations, one module per noun.

mod access;
mod analysis;
mod config;
mod device;
mod events;
mod group;
mod login;
mod rollout;
mod telemetry;
mod workload;

use clap::CommandFactory;
use wrale_client::Client;

use crate::args::{Cli, Command, Global};
use crate::config as cfg;
use crate::error::{CliError, CliResult};

/// What every command gets: the client, whether to print JSON, the global options.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) json: bool,
    pub(crate) global: Global,
}

impl Ctx {
    fn new(global: Global) -> CliResult<Ctx> {
        let file = cfg::load(&cfg::path(&global)?)?;
        let target = cfg::resolve(&global, &file);
        let client = cfg::client(target)?;
        Ok(Ctx {
            client,
            json: global.json,
            global,
        })
    }

    /// Fails with a usage error when no token is configured.
    pub(crate) fn require_token(&self) -> CliResult<()> {
        if self.client.token().is_none() {
            return Err(CliError::failure(
                "unauthorized",
                format!(
                    "not logged in to {}: run `wrale login`, or pass --token / set WRALE_TOKEN",
                    self.client.base_url()
                ),
            ));
        }
        Ok(())
    }
}

/// Runs one parsed command line.
pub(crate) async fn run(cli: Cli) -> CliResult {
    if let Command::Completions { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "wrale", &mut std::io::stdout());
        return Ok(());
    }
    let ctx = Ctx::new(cli.global)?;
    match cli.command {
        Command::Login(a) => return login::login(&ctx, a).await,
        Command::Completions { .. } => return Ok(()),
        _ => ctx.require_token()?,
    }
    match cli.command {
        Command::Logout => login::logout(&ctx).await,
        Command::Whoami => login::whoami(&ctx).await,
        Command::Device(c) => device::run(&ctx, c).await,
        Command::Group(c) => group::run(&ctx, c).await,
        Command::Config(c) => config::run(&ctx, c).await,
        Command::Alert(c) => access::alert(&ctx, c).await,
        Command::Enroll(c) => access::enroll(&ctx, c).await,
        Command::User(c) => access::user(&ctx, c).await,
        Command::Token(c) => access::token(&ctx, c).await,
        Command::Audit(a) => access::audit(&ctx, a).await,
        Command::Events(a) => events::run(&ctx, a).await,
        Command::Telemetry(a) => telemetry::run(&ctx, a).await,
        Command::Workload(c) => workload::workload(&ctx, c).await,
        Command::Placement(c) => workload::placement(&ctx, c).await,
        Command::Recommend(c) => workload::recommend(&ctx, c).await,
        Command::Rollout(c) => rollout::run(&ctx, c).await,
        Command::Analysis(c) => analysis::run(&ctx, c).await,
        Command::Login(_) | Command::Completions { .. } => Ok(()),
    }
}

/// Parses a `KEY=VALUE` value: JSON when it parses as JSON (`40`, `true`,
/// `"x"`, `[1]`), a plain string otherwise.
pub(crate) fn json_value(raw: &str) -> serde_json::Value {
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_when_they_parse() {
        assert_eq!(json_value("40"), serde_json::json!(40));
        assert_eq!(json_value("true"), serde_json::json!(true));
        assert_eq!(json_value("cool"), serde_json::json!("cool"));
        assert_eq!(json_value("\"40\""), serde_json::json!("40"));
        assert_eq!(json_value("fan0"), serde_json::json!("fan0"));
    }
}
