//! The Wrale Python binding: the private native module `wrale._native`.
//!
//! Thin by rule (STYLE.md 2.7): conversions, one error mapper ([`errors`]), the
//! runtime plumbing (one shared tokio runtime; every blocking or network call
//! runs with the GIL released, [`Python::detach`]) and `#[pyclass]` wrappers.
//! Domain values cross as JSON text where they are rich (samples, decisions,
//! twins, API models: the crates' own serde shapes, which the Python layer turns
//! into dicts and dataclasses) and as native objects where speed matters (a
//! [`board::Sample`] goes from a board to the engine without a conversion).
//! The idiomatic API is the Python package `wrale` around this module.

// pyo3's macros expand to `unsafe` FFI glue; this crate writes no unsafe code itself.
#![allow(unsafe_code)]

mod board;
mod client;
mod device;
mod engine;
mod errors;
mod twin;

use std::sync::OnceLock;

use pyo3::prelude::*;

/// The shared tokio runtime and the process it was built in (a runtime does not
/// survive `fork`; a child gets an error instead of a hang).
static RUNTIME: OnceLock<(u32, tokio::runtime::Runtime)> = OnceLock::new();

/// The shared multi-threaded runtime (two workers: network calls and the
/// in-process agents are I/O-bound).
pub(crate) fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
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
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "wrale's runtime was started before fork(); use wrale only in the parent or start it after the fork",
        ));
    }
    Ok(rt)
}

/// Runs `fut` on the shared runtime with the GIL released.
pub(crate) fn block_on<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: std::future::Future<Output = PyResult<T>> + Send,
    T: Send,
{
    let rt = runtime()?;
    py.detach(|| rt.block_on(fut))
}

/// Parses JSON text from the Python layer into a crate type, naming the problem.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> PyResult<T> {
    serde_json::from_str(text).map_err(|e| {
        errors::Failure::invalid_input("invalid_argument", format!("{what}: {e}")).into()
    })
}

/// Crate values to JSON text for the Python layer.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| {
        errors::Failure::new(
            wrale_core::ErrorCategory::Internal,
            "internal",
            format!("cannot encode a value as JSON: {e}"),
        )
        .into()
    })
}

/// Milliseconds since the Unix epoch to a [`wrale_core::Timestamp`].
pub(crate) fn ts(ms: i64) -> wrale_core::Timestamp {
    wrale_core::Timestamp::from_millis(ms)
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    board::register(m)?;
    engine::register(m)?;
    twin::register(m)?;
    client::register(m)?;
    device::register(m)?;
    Ok(())
}
