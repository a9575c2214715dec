//! wrale-sync integration tests (one binary, modules per area).

#[cfg(feature = "agent")]
mod agent;
mod common;
mod convergence;
#[cfg(all(feature = "embedded", feature = "hub"))]
mod embedded;
mod epoch;
mod fuzz;
#[cfg(all(feature = "agent", feature = "hub", feature = "sqlite"))]
mod hub;
mod session;
#[cfg(feature = "sqlite")]
mod store;
mod twin;
#[cfg(feature = "ws")]
mod ws;
