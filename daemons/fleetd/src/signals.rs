//! Process signals as daemon controls: SIGTERM and SIGINT shut down gracefully,
//! SIGHUP reloads the config. Tests drive the same controls by hand.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The controls [`crate::run`] obeys.
#[derive(Debug)]
pub struct Signals {
    /// Cancelled to shut down.
    pub shutdown: CancellationToken,
    /// One message per reload request.
    pub reload: mpsc::Receiver<()>,
}

/// Drives [`Signals`] by hand (tests, embedding).
#[derive(Debug, Clone)]
pub struct SignalHandle {
    shutdown: CancellationToken,
    reload: mpsc::Sender<()>,
}

impl SignalHandle {
    /// Requests a graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Requests a config reload (what SIGHUP does).
    pub async fn reload(&self) {
        let _stopped = self.reload.send(()).await;
    }
}

impl Signals {
    /// Controls driven through the returned handle.
    pub fn manual() -> (Signals, SignalHandle) {
        let shutdown = CancellationToken::new();
        let (tx, rx) = mpsc::channel(4);
        let signals = Signals {
            shutdown: shutdown.clone(),
            reload: rx,
        };
        (
            signals,
            SignalHandle {
                shutdown,
                reload: tx,
            },
        )
    }

    /// Controls driven by SIGTERM, SIGINT and SIGHUP (inside a tokio runtime).
    pub fn os() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (signals, handle) = Signals::manual();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); handle.shutdown(); }
                    _ = int.recv() => { tracing::info!("SIGINT: shutting down"); handle.shutdown(); }
                    _ = hup.recv() => { tracing::info!("SIGHUP: reloading the config"); handle.reload().await; }
                }
            }
        });
        Ok(signals)
    }
}
