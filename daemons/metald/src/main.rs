//! metald: the Wrale device daemon. All the work is in the library; see `metald --help`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use metald::cli::{Cli, CliCommand};
use metald::{Config, config::Loader};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(CliCommand::HashToken { stdin }) = cli.command {
        return report(metald::cli::hash_token(stdin).map(|out| print!("{out}")));
    }
    let loader = cli.loader();
    let config = match loader.load() {
        Ok(config) => config,
        Err(e) => return report(Err(e.into())),
    };
    if cli.check_config {
        println!("metald: config OK (backend {})", config.backend_name());
        return ExitCode::SUCCESS;
    }
    report(serve(config, loader, cli.worker_threads))
}

fn serve(config: Config, loader: Loader, workers: usize) -> anyhow::Result<()> {
    metald::logging::init(config.log.format)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name("metald-rt")
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.api.bind)
            .await
            .with_context(|| format!("cannot listen on {} (api.bind)", config.api.bind))?;
        let signals = metald::Signals::os().context("installing signal handlers")?;
        let daemon = metald::Daemon::new(config).reload_from(loader);
        daemon.notify_systemd()?.run(listener, signals).await
    })
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    if let Err(e) = result {
        eprintln!("metald: {e:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
