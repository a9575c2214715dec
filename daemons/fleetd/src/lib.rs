//! # fleetd
//!
//! The Wrale fleet brain: registry, users and access, enrollment, alerts, audit,
//! the live event stream, telemetry and the twin hub, behind one REST/WebSocket
//! API (docs/fleet-api.md). It is wiring: the decisions (roles and the permission
//! matrix, enrollment rules, group trees, device queries, topology) are in
//! `wrale_core::fleet`; fleetd stores, authenticates and serves.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = fleetd::Config::from_toml_str("[data]\ndir = \"/tmp/fleetd\"\n")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (signals, handle) = fleetd::Signals::manual();
//! let daemon = tokio::spawn(fleetd::run(config, listener, signals));
//! // ... use the API, then:
//! handle.shutdown();
//! daemon.await??;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
mod daemon;
pub mod error;
pub mod http;
pub mod intel;
pub mod logging;
pub mod orchestrate;
pub mod signals;
pub mod state;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod twins;

pub use auth::Principal;
pub use config::Config;
pub use daemon::{Daemon, reload, run};
pub use error::{ApiError, ApiJson};
pub use signals::{SignalHandle, Signals};
pub use state::{AppState, EventKind, FleetEvent};
pub use store::{FleetStore, SqliteStore};
