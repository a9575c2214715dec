//! Wiring: config -> store -> state -> API, reloads, and the way out.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, Loader};
use crate::signals::Signals;
use crate::state::AppState;
use crate::store::FleetStore;

/// Runs fleetd with `config` until `signals` says stop (reloads re-validate the
/// same config; use [`Daemon::reload_from`] to re-read a file).
pub async fn run(config: Config, listener: TcpListener, signals: Signals) -> anyhow::Result<()> {
    Daemon::new(config).run(listener, signals).await
}

/// The daemon and its seams.
#[derive(Debug)]
pub struct Daemon {
    config: Config,
    loader: Option<Loader>,
}

impl Daemon {
    /// A daemon for `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            loader: None,
        }
    }

    /// Reloads re-read the config through `loader` (same file, environment, flags).
    pub fn reload_from(mut self, loader: Loader) -> Self {
        self.loader = Some(loader);
        self
    }

    /// Opens the store (creating the first admin if there is no user), serves the
    /// API on `listener` until `signals.shutdown`, then stops.
    pub async fn run(self, listener: TcpListener, mut signals: Signals) -> anyhow::Result<()> {
        let Daemon { config, loader } = self;
        let config = Arc::new(config);
        // `[api.tls]`, checked first: the API over TLS; reloads re-read the files.
        let tls = match config.api.tls.files() {
            Some((cert, key)) => Some(
                wrale_tls::ServerTls::from_files(cert, key)
                    .context("api.tls: loading the certificate")?,
            ),
            None => None,
        };
        let c = config.clone();
        let store = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let store = crate::admin::open_store(&c)?;
            crate::admin::ensure_first_admin(store.as_ref(), &c)?;
            store
                .mark_all_offline()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(store)
        })
        .await
        .context("opening the store")?
        .with_context(|| format!("store {}", config.db_path().display()))?;
        let store: Arc<dyn FleetStore> = store;
        let telemetry =
            crate::telemetry::Telemetry::open(&config).context("opening the telemetry store")?;
        let hub = crate::twins::Hub::new(&config).context("starting the twin hub")?;
        let state = AppState::new(
            config.clone(),
            store,
            telemetry,
            hub,
            signals.shutdown.clone(),
        );
        crate::telemetry::start(&state);
        crate::twins::start(&state);
        crate::intel::start(&state).context("starting fleet intelligence")?;
        crate::orchestrate::open(&state, &config).context("opening the orchestration store")?;
        crate::orchestrate::start(&state);
        let addr = listener.local_addr().context("listener address")?;
        state
            .audit(
                "system",
                "fleetd.start",
                "fleetd",
                "allowed",
                json!({"version": env!("CARGO_PKG_VERSION"), "addr": addr.to_string()}),
                None,
            )
            .await;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, url = %format!("{scheme}://{addr}"), data = %config.data.dir.display(), "listening");

        let shutdown = signals.shutdown.clone();
        let router = crate::http::router(state.clone());
        let server = match &tls {
            Some(tls) => tokio::spawn(
                axum::serve(wrale_tls::TlsListener::new(listener, tls.config()), router)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .into_future(),
            ),
            None => tokio::spawn(
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .into_future(),
            ),
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(()) = signals.reload.recv() => {
                    let _logged = reload(loader.as_ref(), &state).await;
                    if let Some(tls) = &tls {
                        reload_tls(tls, &state.config());
                    }
                }
            }
        }
        tracing::info!("shutting down");
        match tokio::time::timeout(Duration::from_secs(10), server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!("API server: {e}"),
            Ok(Err(e)) => tracing::error!("API server task: {e}"),
            Err(_) => tracing::warn!("API server did not stop within 10 s"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Re-reads the API certificate (renewed files, or new `[api.tls]` paths); on
/// error the running certificate stays. Turning TLS on or off needs a restart.
fn reload_tls(tls: &wrale_tls::ServerTls, config: &Config) {
    let Some((cert, key)) = config.api.tls.files() else {
        tracing::warn!("api.tls: removed from the config; TLS stays on until a restart");
        return;
    };
    match tls.reload(cert, key) {
        Ok(()) => tracing::info!(cert = %cert.display(), "api.tls: certificate reloaded"),
        Err(e) => tracing::error!("api.tls: keeping the running certificate: {e}"),
    }
}

/// Loads and validates the new config; applies it, or logs why not and keeps the
/// running one.
pub async fn reload(loader: Option<&Loader>, state: &AppState) -> Result<(), ConfigError> {
    let old = state.config();
    let loaded = match loader {
        Some(loader) => {
            let loader = loader.clone();
            tokio::task::spawn_blocking(move || loader.load())
                .await
                .unwrap_or_else(|e| {
                    Err(ConfigError::Env {
                        var: "-".into(),
                        message: format!("config loader panicked: {e}"),
                    })
                })
        }
        None => Ok((*old).clone()),
    };
    let new = match loaded {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("config reload failed, keeping the running config: {e}");
            return Err(e);
        }
    };
    for (key, changed) in [
        ("api.bind", old.api.bind != new.api.bind),
        ("api.body_limit", old.api.body_limit != new.api.body_limit),
        ("data.dir", old.data.dir != new.data.dir),
        (
            "events.capacity",
            old.events.capacity != new.events.capacity,
        ),
        ("log", old.log != new.log),
        ("hub", old.hub != new.hub),
        ("telemetry", old.telemetry != new.telemetry),
        ("intel.enabled", old.intel.enabled != new.intel.enabled),
    ] {
        if changed {
            tracing::warn!(key, "changed in the config; takes effect after a restart");
        }
    }
    state.set_config(Arc::new(new));
    // The webhook sender applies a changed `intel.webhook_concurrency` at once.
    crate::intel::reloaded(state);
    tracing::info!("config reloaded");
    Ok(())
}
