//! The Wrale uniffi binding: one native library (`libwrale_uniffi`) for Kotlin
//! and Swift, generated with `wrale-uniffi-bindgen` in library mode.
//!
//! Thin by rule (STYLE.md 2.7): conversions ([`types`]), one error mapper
//! ([`WraleError`]), runtime plumbing (one tokio runtime owned by the library:
//! network calls are `async` exports, which Kotlin sees as `suspend` functions,
//! spawned onto that runtime and awaited runtime-agnostically) and
//! `#[uniffi::export]` wrappers. The core values cross as typed records
//! ([`Sample`], [`Decision`], [`Verdict`], [`DeviceSummary`]); big nested domain
//! values (twin sections, API answers) cross as JSON text in the crates' serde
//! shapes.

mod board;
mod client;
mod device;
mod engine;
mod errors;
mod host;
mod twin;
mod types;

use std::future::Future;
use std::sync::OnceLock;

pub use board::{Board, SimOptions};
pub use client::{AlertQuery, DeviceQuery, EventListener, EventSubscription, FleetClient};
pub use device::{Agent, AgentOptions, AgentStatus};
pub use engine::{CheckOptions, SafetyEngine, SafetyStatus, Thresholds};
pub use errors::WraleError;
pub use host::{HostBoardBuilder, HostFan, HostTemperature};
pub use twin::{ConflictValue, SyncSession, Twin, TwinConflict, TwinVersion};
pub use types::{
    Action, AlertChange, BatteryReading, BoolReading, Decision, DeviceSummary, FanReading, Group,
    PowerSourceReading, Reading, Sample, SecurityReading, StorageWear, TemperatureReading,
    ThrottleReading, Transition, Verdict,
};

uniffi::setup_scaffolding!();

/// The library's version (the workspace version).
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The library's runtime and the process it was built in (a tokio runtime does
/// not survive `fork`).
static RUNTIME: OnceLock<(u32, tokio::runtime::Runtime)> = OnceLock::new();

/// The shared multi-threaded runtime (two workers: the network calls and the
/// in-process agents are I/O-bound).
pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime, WraleError> {
    let (pid, rt) = RUNTIME.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wrale-rt")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime");
        (std::process::id(), rt)
    });
    if *pid != std::process::id() {
        return Err(WraleError::internal(
            "wrale's runtime was started before fork(); use wrale only in the parent or start it after the fork",
        ));
    }
    Ok(rt)
}

/// Runs `fut` on the library's runtime; the returned future can be polled by
/// any executor (uniffi's foreign-language one for `suspend` functions).
pub(crate) async fn spawn<F, T>(fut: F) -> Result<T, WraleError>
where
    F: Future<Output = Result<T, WraleError>> + Send + 'static,
    T: Send + 'static,
{
    runtime()?
        .spawn(fut)
        .await
        .map_err(|e| WraleError::internal(format!("a task of the runtime failed: {e}")))?
}

/// A JSON text into a crate type, naming the problem.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    text: &str,
) -> Result<T, WraleError> {
    serde_json::from_str(text).map_err(|e| WraleError::invalid_argument(format!("{what}: {e}")))
}

/// A crate value as JSON text.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, WraleError> {
    serde_json::to_string(value)
        .map_err(|e| WraleError::internal(format!("cannot encode a value: {e}")))
}

/// A name as the serde form of a unit enum (`"pi4b"`, `"case_switch"`).
pub(crate) fn from_name<T: serde::de::DeserializeOwned>(
    what: &str,
    name: &str,
) -> Result<T, WraleError> {
    serde_json::from_value(serde_json::Value::from(name))
        .map_err(|e| WraleError::invalid_argument(format!("{what}: {e}")))
}

/// The serde name of a unit enum value.
pub(crate) fn name_of<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Milliseconds since the Unix epoch to a [`wrale_core::Timestamp`].
pub(crate) fn ts(ms: i64) -> wrale_core::Timestamp {
    wrale_core::Timestamp::from_millis(ms)
}
