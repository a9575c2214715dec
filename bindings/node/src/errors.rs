//! The one error mapper: every Rust error becomes an instance of the JS error
//! class its [`ErrorCategory`](wrale_core::ErrorCategory) names (`PolicyViolation`,
//! `HardwareError`, `SyncError`, `AuthError`, `NotFound`, ..., all subclasses of
//! `WraleError` and `Error`, the same names as the other bindings), whose `code`
//! is the Rust error's stable code, `message` its message, `category` its
//! category and `details` the API error's details. The classes are defined in
//! src/extend.js; [`Glue`] keeps its `makeError`.

use napi::bindgen_prelude::{FnArgs, FunctionRef, Unknown};
use napi::{Env, JsError};
use serde_json::{Map, Value};

/// An error on its way to JS: every crate error converts into it
/// ([`wrale_core::ErrorReport`]: category, code, message, API details).
pub(crate) type Failure = wrale_core::ErrorReport;

/// `makeError(className, code, message, category, details)` of src/extend.js.
pub(crate) type MakeErrorArgs =
    FnArgs<(String, String, String, String, Option<Map<String, Value>>)>;

/// What src/extend.js hands back to the addon, kept as the env's instance data.
pub(crate) struct Glue {
    pub(crate) make_error: FunctionRef<MakeErrorArgs, Unknown<'static>>,
}

/// Builds the JS error (on the JS thread) and wraps it so napi throws or
/// rejects with exactly that object.
pub(crate) fn to_js(env: &Env, f: Failure) -> napi::Error {
    let build = || -> napi::Result<napi::Error> {
        let glue = env.get_instance_data::<Glue>()?.ok_or_else(|| {
            napi::Error::from_reason("the wrale addon was not initialised (no error classes)")
        })?;
        let value = glue.make_error.borrow_back(env)?.call(FnArgs::from((
            f.category.class_name().to_owned(),
            f.code.clone(),
            f.message.clone(),
            f.category.as_str().to_owned(),
            f.details.clone(),
        )))?;
        Ok(napi::Error::from(value))
    };
    build().unwrap_or_else(|_| {
        // Without the classes (never expected): a plain Error with the code.
        let e = JsError::from(napi::Error::new(f.code.clone(), f.message.clone()));
        napi::Error::from(e.into_unknown(*env))
    })
}

/// Maps any crate error to a thrown JS error.
pub(crate) fn js_err(env: &Env, e: impl Into<Failure>) -> napi::Error {
    to_js(env, e.into())
}

/// A `Result` of the crates, thrown as the mapped JS error.
pub(crate) trait OrThrow<T> {
    /// Maps the error with [`js_err`].
    fn or_throw(self, env: &Env) -> napi::Result<T>;
}

impl<T, E: Into<Failure>> OrThrow<T> for Result<T, E> {
    fn or_throw(self, env: &Env) -> napi::Result<T> {
        self.map_err(|e| js_err(env, e))
    }
}
