//! The Wrale Node binding: the native addon `wrale` (napi-rs).
//!
//! Thin by rule (STYLE.md 2.7): conversions, one error mapper ([`errors`]), the
//! runtime plumbing (napi's tokio runtime: every network call is an `async`
//! method returning a `Promise`) and `#[napi]` wrappers. Rich domain values
//! (samples, decisions, twins, API models) cross as plain JS objects in the
//! crates' own serde shapes; a [`board::Sample`] stays native so it goes from a
//! board to the engine without a conversion.

// napi's macros expand to `unsafe` FFI glue; this crate writes no unsafe code itself.
#![allow(unsafe_code)]

mod board;
mod client;
mod device;
mod engine;
mod errors;
mod host;
mod twin;

use std::future::Future;

use napi::Env;
use napi::bindgen_prelude::{Function, Object, PromiseRaw, ToNapiValue, Unknown};
use napi_derive::napi;

use crate::errors::{Failure, Glue, MakeErrorArgs, to_js};

/// Runs src/extend.js on the module's exports when the addon loads: it adds the
/// error classes, `EventStream`'s `Symbol.asyncIterator` and `Fleet#onEvent`
/// (what napi-rs cannot declare from Rust), and hands back the error factory
/// the error mapper uses.
#[napi(module_exports)]
pub fn init(exports: Object<'_>, env: Env) -> napi::Result<()> {
    let extend: Function<'_, Object<'_>, Function<'_, MakeErrorArgs, Unknown<'static>>> =
        env.run_script(include_str!("extend.js"))?;
    let glue = Glue {
        make_error: extend.call(exports)?.create_ref()?,
    };
    env.set_instance_data(glue, (), |_| {})
}

/// The version of the native addon (the workspace version).
#[napi]
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Runs `fut` on napi's tokio runtime and settles a Promise with its value, or
/// rejects it with the mapped error (built on the JS thread, so it carries
/// `code`, `category` and `details`).
pub(crate) fn promise<'env, T, F>(env: &'env Env, fut: F) -> napi::Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Result<T, Failure>> + Send + 'static,
{
    env.spawn_future_with_callback(
        async move { Ok(fut.await) },
        |env, r: Result<T, Failure>| r.map_err(|f| to_js(env, f)),
    )
}

/// A JS value (already a serde tree) into a crate type, naming the problem.
pub(crate) fn from_value<T: serde::de::DeserializeOwned>(
    what: &str,
    value: serde_json::Value,
) -> Result<T, Failure> {
    serde_json::from_value(value)
        .map_err(|e| Failure::invalid_input("invalid_argument", format!("{what}: {e}")))
}

/// A crate value into a JS value tree.
pub(crate) fn to_value<T: serde::Serialize + ?Sized>(
    value: &T,
) -> Result<serde_json::Value, Failure> {
    serde_json::to_value(value).map_err(|e| {
        Failure::new(
            wrale_core::ErrorCategory::Internal,
            "internal",
            format!("cannot encode a value: {e}"),
        )
    })
}

/// A string as the serde form of a unit enum (`"pi4b"`, `"case_open"`).
pub(crate) fn from_name<T: serde::de::DeserializeOwned>(
    what: &str,
    name: &str,
) -> Result<T, Failure> {
    from_value(what, serde_json::Value::from(name))
}

/// Milliseconds since the Unix epoch (a JS number) to a [`wrale_core::Timestamp`].
pub(crate) fn ts(ms: f64) -> wrale_core::Timestamp {
    #[allow(clippy::cast_possible_truncation)]
    wrale_core::Timestamp::from_millis(ms as i64)
}
