//! API errors: an HTTP status plus `{"error": {"code": "...", "message": "...",
//! ...details}}` with the stable snake_case codes of docs/fleet-api.md, and the
//! JSON body extractor that names the offending field.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::store::StoreError;

/// An error answered by the API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Map<String, Value>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        // Clients (wrale-client, the bindings) classify errors by code; a code
        // without a category would reach them as a bare HTTP status.
        debug_assert!(
            wrale_core::ErrorCategory::from_code(code).is_some(),
            "error code {code:?} has no category in wrale_core::ErrorCategory::from_code"
        );
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    /// Adds a detail field next to `code` and `message`.
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// 401 `unauthorized`: no token, or an unknown, expired or revoked one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`: a valid principal that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400 `invalid_body`, naming the field when there is one.
    pub fn invalid_body(field: Option<&str>, message: impl Into<String>) -> Self {
        let e = Self::new(StatusCode::BAD_REQUEST, "invalid_body", message);
        match field {
            Some(f) if !f.is_empty() && f != "." => e.with_detail("field", f),
            _ => e,
        }
    }

    /// 400 `invalid_query`, naming the parameter.
    pub fn invalid_query(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", message).with_detail("param", param)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 422 `policy_violation`, naming the rule.
    pub fn policy_violation(rule: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_violation",
            message,
        )
        .with_detail("rule", rule)
    }

    /// 409 `device_offline`.
    pub fn device_offline(device: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "device_offline",
            format!("device {device} is not connected"),
        )
        .with_detail("device", device)
    }

    /// 504 `timeout`.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
    }

    /// 413 `body_too_large`.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the limit of {limit} bytes (api.body_limit)"),
        )
        .with_detail("limit", limit)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A detail field.
    pub fn detail(&self, key: &str) -> Option<&Value> {
        self.details.get(key)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        }
        let mut body = self.details;
        body.insert("code".into(), Value::from(self.code));
        body.insert("message".into(), Value::from(self.message));
        let mut resp = (self.status, Json(json!({ "error": body }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"fleetd\""),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid { field, message } => ApiError::invalid_body(Some(&field), message),
            StoreError::Backend(m) => ApiError::internal(format!("store: {m}")),
        }
    }
}

/// Parses a JSON body into `T`, naming the field on error (400 `invalid_body`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_body(None, "expected a JSON body"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // Name the unknown field itself, with its path.
        let field = match msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
        {
            Some((name, _)) if path == "." => name.to_owned(),
            // serde_path_to_error already ends the path with the unknown key.
            Some((name, _)) if path == name || path.ends_with(&format!(".{name}")) => path,
            Some((name, _)) => format!("{path}.{name}"),
            None => path,
        };
        if inner.is_syntax() || inner.is_eof() {
            ApiError::invalid_body(None, format!("malformed JSON: {msg}"))
        } else if field == "." || field.is_empty() {
            ApiError::invalid_body(None, msg)
        } else {
            ApiError::invalid_body(Some(&field), format!("{field}: {msg}"))
        }
    })?;
    Ok(value)
}

/// A JSON request body. Rejections are [`ApiError`]s: 400 `invalid_body` naming the
/// field (unknown fields are refused by the body types), 413 `body_too_large`
/// above `api.body_limit`. The content type is not checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::body_too_large(limit)
            } else {
                ApiError::invalid_body(None, rej.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The configured body limit, put in request extensions by the router so the
/// error message can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);
