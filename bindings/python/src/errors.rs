//! The one error mapper: every Rust error becomes a `WraleError` subclass chosen
//! by its [`ErrorCategory`], carrying the Rust error's `code` and `message`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use wrale_core::ErrorCategory;

create_exception!(
    wrale._native,
    WraleError,
    PyException,
    "Base class of every Wrale error: `.code` (stable snake_case), `.message`, `.category`, `.details`."
);
create_exception!(
    wrale._native,
    PolicyViolation,
    WraleError,
    "A safety or policy rule refused."
);
create_exception!(
    wrale._native,
    HardwareError,
    WraleError,
    "The hardware or its backend failed."
);
create_exception!(
    wrale._native,
    SyncError,
    WraleError,
    "Twin, sync session, store or telemetry failure."
);
create_exception!(
    wrale._native,
    AuthError,
    WraleError,
    "No, a bad or an insufficient credential."
);
create_exception!(
    wrale._native,
    NotFound,
    WraleError,
    "The thing named does not exist."
);
create_exception!(
    wrale._native,
    InvalidInput,
    WraleError,
    "The input was refused."
);
create_exception!(
    wrale._native,
    ConflictError,
    WraleError,
    "The request conflicts with the current state."
);
create_exception!(
    wrale._native,
    Unavailable,
    WraleError,
    "The peer could not be reached or did not answer in time."
);
create_exception!(
    wrale._native,
    InternalError,
    WraleError,
    "A bug or a broken store."
);

/// An error on its way to Python: a [`wrale_core::ErrorReport`] (category,
/// code, message, API details), wrapped so it can convert into `PyErr`.
#[derive(Debug, Clone)]
pub(crate) struct Failure(wrale_core::ErrorReport);

impl Failure {
    pub(crate) fn new(
        category: ErrorCategory,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self(wrale_core::ErrorReport::new(category, code, message))
    }

    pub(crate) fn invalid_input(code: &str, message: impl Into<String>) -> Self {
        Self(wrale_core::ErrorReport::invalid_input(code, message))
    }
}

/// Every crate error reaches Python through its `ErrorReport` conversion.
macro_rules! via_report {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Self(e.into())
            }
        }
    )*};
}
impl From<wrale_core::ErrorReport> for Failure {
    fn from(e: wrale_core::ErrorReport) -> Self {
        Self(e)
    }
}

via_report!(
    wrale_core::model::InvalidActor,
    wrale_sync::InvalidAuthor,
    wrale_core::Error,
    wrale_core::Refused,
    wrale_hal::HalError,
    wrale_sync::Error,
    wrale_client::Error,
);

fn new_err(category: ErrorCategory, message: String) -> PyErr {
    match category {
        ErrorCategory::Policy => PolicyViolation::new_err(message),
        ErrorCategory::Hardware => HardwareError::new_err(message),
        ErrorCategory::Sync => SyncError::new_err(message),
        ErrorCategory::Auth => AuthError::new_err(message),
        ErrorCategory::NotFound => NotFound::new_err(message),
        ErrorCategory::InvalidInput => InvalidInput::new_err(message),
        ErrorCategory::Conflict => ConflictError::new_err(message),
        ErrorCategory::Unavailable => Unavailable::new_err(message),
        _ => InternalError::new_err(message),
    }
}

impl From<Failure> for PyErr {
    fn from(Failure(f): Failure) -> PyErr {
        Python::attach(|py| {
            let err = new_err(f.category, f.message.clone());
            let value = err.value(py);
            let details = match &f.details {
                Some(d) => serde_json::to_string(d)
                    .ok()
                    .and_then(|text| {
                        py.import("json")
                            .and_then(|json| json.call_method1("loads", (text,)))
                            .ok()
                    })
                    .map(Bound::unbind),
                None => None,
            };
            let set = value
                .setattr("code", f.code.as_str())
                .and_then(|()| value.setattr("message", f.message.as_str()))
                .and_then(|()| value.setattr("category", f.category.as_str()))
                .and_then(|()| value.setattr("details", details));
            match set {
                Ok(()) => err,
                Err(e) => e,
            }
        })
    }
}

/// Maps any crate error to the Python exception.
pub(crate) fn py_err(e: impl Into<Failure>) -> PyErr {
    e.into().into()
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("WraleError", py.get_type::<WraleError>())?;
    m.add("PolicyViolation", py.get_type::<PolicyViolation>())?;
    m.add("HardwareError", py.get_type::<HardwareError>())?;
    m.add("SyncError", py.get_type::<SyncError>())?;
    m.add("AuthError", py.get_type::<AuthError>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("Unavailable", py.get_type::<Unavailable>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}
