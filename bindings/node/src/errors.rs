//! The one error mapper: every Rust error becomes a JS `Error` whose `code` is
//! the Rust error's stable code, `message` its message, `category` its
//! [`ErrorCategory`] and `name` the class the other bindings use
//! (`PolicyViolation`, `HardwareError`, `SyncError`, `AuthError`, `NotFound`, ...).

use napi::JsValue;
use napi::bindgen_prelude::{JsObjectValue, Object};
use napi::{Env, JsError};
use wrale_core::ErrorCategory;

/// An error on its way to JS: category, code, message and API details.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    category: ErrorCategory,
    code: String,
    message: String,
    details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Failure {
    pub(crate) fn new(
        category: ErrorCategory,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            category,
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn invalid_input(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCategory::InvalidInput, code, message)
    }
}

impl From<wrale_core::Error> for Failure {
    fn from(e: wrale_core::Error) -> Self {
        Self::new(e.category(), e.code(), e.to_string())
    }
}

impl From<wrale_hal::HalError> for Failure {
    fn from(e: wrale_hal::HalError) -> Self {
        Self::new(e.category(), e.code(), e.to_string())
    }
}

impl From<wrale_sync::Error> for Failure {
    fn from(e: wrale_sync::Error) -> Self {
        Self::new(e.category(), e.code(), e.to_string())
    }
}

impl From<wrale_client::Error> for Failure {
    fn from(e: wrale_client::Error) -> Self {
        // The server's own message (the Display form appends the code).
        let (message, details) = match &e {
            wrale_client::Error::Api {
                message,
                details,
                status,
                ..
            } => {
                let mut d = details.clone();
                d.insert("status".into(), (*status).into());
                (message.clone(), Some(d))
            }
            other => (other.to_string(), None),
        };
        Self {
            category: e.category(),
            code: e.code().to_owned(),
            message,
            details,
        }
    }
}

impl From<wrale_core::Refused> for Failure {
    fn from(r: wrale_core::Refused) -> Self {
        wrale_core::Error::from(r).into()
    }
}

/// The class name of a category, the same in every binding.
fn class_name(category: ErrorCategory) -> &'static str {
    match category {
        ErrorCategory::Policy => "PolicyViolation",
        ErrorCategory::Hardware => "HardwareError",
        ErrorCategory::Sync => "SyncError",
        ErrorCategory::Auth => "AuthError",
        ErrorCategory::NotFound => "NotFound",
        ErrorCategory::InvalidInput => "InvalidInput",
        ErrorCategory::Conflict => "ConflictError",
        ErrorCategory::Unavailable => "Unavailable",
        _ => "InternalError",
    }
}

/// Builds the JS error (on the JS thread) and wraps it so napi throws or
/// rejects with exactly that object.
pub(crate) fn to_js(env: &Env, f: Failure) -> napi::Error {
    let build = || -> napi::Result<napi::Error> {
        let value =
            JsError::from(napi::Error::new(f.code.clone(), f.message.clone())).into_unknown(*env);
        let mut obj: Object<'_> = value.coerce_to_object()?;
        obj.set_named_property("name", class_name(f.category))?;
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
