//! # metald
//!
//! The Wrale device daemon, run on every board. It is wiring only: it loads the
//! [`Config`], opens the HAL backend it names, samples the board on a dedicated
//! thread and runs every sample through the safety hook ([`safety`]), applies the
//! resulting actions through the HAL, supervises the configured [`workloads`],
//! serves the local API ([`http::router`]) and talks to systemd ([`notify`]).
//! Every decision is made by the Wrale crates.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = metald::Config::from_toml_str("[hal]\nbackend = \"sim\"\n")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (signals, handle) = metald::Signals::manual();
//! let daemon = tokio::spawn(metald::run(config, listener, signals));
//! // ... use the API, then:
//! handle.shutdown();
//! daemon.await??;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod cgroup;
pub mod cli;
pub mod config;
mod daemon;
pub mod error;
pub mod fleet;
pub mod http;
pub mod logging;
pub mod notify;
pub mod persist;
pub mod safety;
pub mod sampler;
pub mod signals;
pub mod state;
pub mod workloads;

pub use config::Config;
pub use daemon::{Daemon, run};
pub use signals::{SignalHandle, Signals};
