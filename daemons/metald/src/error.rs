//! API errors: an HTTP status plus `{"error": {"code": "...", "message": "..."}}`
//! with stable snake_case codes shared by the CLI and the bindings.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// An error answered by the local API.
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

    /// 401 `unauthorized`: no token, or an unknown one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`: the token's role is too low.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 400 `invalid_body`: the request body is unusable (malformed JSON, a wrong
    /// type, an unknown or missing field), as fleetd answers (docs/fleet-api.md).
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_body", message)
    }

    /// 400 `invalid_query`: a query parameter is unusable, naming it as `param`
    /// (when known).
    pub fn invalid_query(param: &str, message: impl Into<String>) -> Self {
        let e = Self::new(StatusCode::BAD_REQUEST, "invalid_query", message);
        if param.is_empty() {
            e
        } else {
            e.with_detail("param", param)
        }
    }

    /// 400 `invalid_request`: the request itself is unusable (a plain GET on a
    /// WebSocket route), as fleetd answers.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 `policy_violation`: the safety engine refused the command.
    pub fn policy_violation(rule: &str, reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "policy_violation", reason)
            .with_detail("rule", rule)
    }

    /// 502 `hardware_error`: the HAL failed; `kind` is the portable HAL error kind.
    pub fn hardware(err: &wrale_hal::HalError) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "hardware_error", err.to_string())
            .with_detail("kind", err.kind().code())
    }

    /// 503 `unavailable`: the daemon cannot answer now (sampling loop stopped,
    /// not ready yet).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
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
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.details;
        body.insert("code".into(), Value::from(self.code));
        body.insert("message".into(), Value::from(self.message));
        let mut resp = (self.status, Json(json!({ "error": body }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"metald\""),
            );
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rej: JsonRejection) -> Self {
        match rej {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body with `Content-Type: application/json`",
            ),
            // The data error's text names the field path (axum uses serde_path_to_error).
            JsonRejection::JsonDataError(e) => Self::invalid_body(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Self::invalid_body(e.body_text()),
            other => Self::invalid_body(other.body_text()),
        }
    }
}

/// A JSON request body whose rejections are [`ApiError`]s (400 `invalid_body`
/// naming the field, 415 without a JSON content type).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}
