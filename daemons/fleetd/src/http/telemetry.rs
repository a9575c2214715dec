//! Placeholder routes of the telemetry module (filled in by its helper).

use crate::http::ApiRoutes;

/// This module's routes (each with its access rule; checked against the OpenAPI document).
pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
}

/// This module's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    utoipa::openapi::OpenApi::default()
}
