//! The one error mapper: every Rust error becomes a JS `Error` whose `code` is
//! the Rust error's stable code, `message` its message, `category` its
//! [`ErrorCategory`] and `name` the class the other bindings use
//! (`PolicyViolation`, `HardwareError`, `SyncError`, `AuthError`, `NotFound`, ...).

use napi::JsValue;
use napi::bindgen_prelude::{JsObjectValue, Object};
use napi::{Env, JsError};

/// An error on its way to JS: every crate error converts into it
/// ([`wrale_core::ErrorReport`]: category, code, message, API details).
pub(crate) type Failure = wrale_core::ErrorReport;

/// Builds the JS error (on the JS thread) and wraps it so napi throws or
/// rejects with exactly that object.
pub(crate) fn to_js(env: &Env, f: Failure) -> napi::Error {
    let build = || -> napi::Result<napi::Error> {
        let value =
            JsError::from(napi::Error::new(f.code.clone(), f.message.clone())).into_unknown(*env);
        let mut obj: Object<'_> = value.coerce_to_object()?;
        obj.set_named_property("name", f.category.class_name())?;
        obj.set_named_property("category", f.category.as_str())?;
        if let Some(d) = &f.details {
            obj.set_named_property("details", env.to_js_value(d)?)?;
        }
        Ok(napi::Error::from(value))
    };
    build().unwrap_or_else(|e| e)
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
