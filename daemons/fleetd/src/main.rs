//! fleetd: the Wrale fleet brain. All the work is in the library; see `fleetd --help`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use fleetd::cli::{AdminCommand, Cli, CliCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loader = cli.loader();
    let config = match loader.load() {
        Ok(config) => config,
        Err(e) => return report(Err(e.into())),
    };
    if cli.check_config {
        println!("fleetd: config OK");
        return ExitCode::SUCCESS;
    }
    let result = match &cli.command {
        Some(CliCommand::Admin {
            command:
                AdminCommand::Create {
                    name,
                    password_stdin,
                },
        }) => fleetd::cli::admin_create(&config, name, *password_stdin).map(|out| print!("{out}")),
        Some(CliCommand::Backup { to }) => fleetd::backup::backup(&config, to),
        Some(CliCommand::Restore { from, force }) => fleetd::backup::restore(&config, from, *force),
        Some(CliCommand::Serve) | None => serve(config, loader, cli.worker_threads),
    };
    report(result)
}

fn serve(
    config: fleetd::Config,
    loader: fleetd::config::Loader,
    workers: usize,
) -> anyhow::Result<()> {
    fleetd::logging::init(config.log.format)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name("fleetd-rt")
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.api.bind)
            .await
            .with_context(|| format!("cannot listen on {} (api.bind)", config.api.bind))?;
        let signals = fleetd::Signals::os().context("installing signal handlers")?;
        fleetd::Daemon::new(config)
            .reload_from(loader)
            .run(listener, signals)
            .await
    })
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    if let Err(e) = result {
        eprintln!("fleetd: {e:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
