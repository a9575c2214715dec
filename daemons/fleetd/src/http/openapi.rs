//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! attributes and served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{access, alerts, audit, devices, events, metrics};

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "fleetd", description = "The Wrale fleet API (docs/fleet-api.md). Errors are `{\"error\": {\"code\", \"message\", ...}}`."),
    modifiers(&Security),
    paths(
        super::live, super::ready, metrics::handler, handler,
        access::login, access::logout, access::whoami,
        access::list_users, access::create_user, access::get_user, access::patch_user, access::delete_user,
        access::list_tokens, access::create_token, access::delete_token,
        access::list_enrollment_tokens, access::create_enrollment_token, access::delete_enrollment_token,
        access::enroll,
        devices::list_devices, devices::get_device, devices::patch_device, devices::delete_device,
        devices::revoke_device, devices::device_neighbours,
        devices::list_groups, devices::create_group, devices::get_group, devices::patch_group, devices::delete_group,
        devices::get_topology,
        alerts::list_alerts, alerts::raise_alert, alerts::ack_alert, alerts::clear_alert,
        audit::query_audit,
        events::events,
    )
)]
struct ApiDoc;

/// The whole document: fleetd's routes plus the telemetry and twin modules'.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.merge(super::telemetry::openapi());
    doc.merge(super::twins::openapi());
    doc.merge(crate::intel::api::openapi());
    doc.merge(super::orchestrate::openapi());
    doc
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(("bearer" = [])),
    responses((status = 200, description = "this document")))]
pub async fn handler() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the table that builds the router is in the document, with
    /// its method; and the document has no route the router lacks.
    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = serde_json::to_value(document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let table = super::super::api_routes();
        let mut missing = Vec::new();
        for r in table.table() {
            let m = r.method.as_str().to_ascii_lowercase();
            if paths.get(r.path).and_then(|p| p.get(&m)).is_none() {
                missing.push(format!("{} {}", r.method, r.path));
            }
        }
        assert!(
            missing.is_empty(),
            "routes missing from the OpenAPI document: {missing:?}"
        );
        let mut extra = Vec::new();
        for (path, item) in paths {
            for m in item.as_object().unwrap().keys() {
                let found = table
                    .table()
                    .iter()
                    .any(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(m));
                if !found {
                    extra.push(format!("{m} {path}"));
                }
            }
        }
        assert!(
            extra.is_empty(),
            "documented routes the router does not serve: {extra:?}"
        );
        assert!(table.table().len() >= 40, "{}", table.table().len());
    }
}
