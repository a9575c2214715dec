//! The role matrix, route by route: for every route of the table that builds the
//! router, each principal (none, device, viewer, operator, admin) gets exactly
//! 401/403 when it is not allowed, and never 401/403 when it is.

use fleetd::http::{Access, api_routes};
use serde_json::json;
use wrale_core::fleet::access::{self, Action, PrincipalKind, Role};

use crate::support::Fleet;

/// Who may call a route: the expectations of docs/fleet-api.md, written out here
/// independently of the router's own table.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Public,
    Any,
    Viewer,
    Operator,
    Admin,
}

const EXPECTED: &[(&str, &str, Who)] = &[
    ("GET", "/health/live", Who::Public),
    ("GET", "/health/ready", Who::Public),
    ("GET", "/metrics", Who::Viewer),
    ("GET", "/api/v1/openapi.json", Who::Viewer),
    ("POST", "/api/v1/auth/login", Who::Public),
    ("POST", "/api/v1/auth/logout", Who::Viewer),
    ("GET", "/api/v1/auth/whoami", Who::Any),
    ("GET", "/api/v1/users", Who::Admin),
    ("POST", "/api/v1/users", Who::Admin),
    ("GET", "/api/v1/users/{name}", Who::Admin),
    ("PATCH", "/api/v1/users/{name}", Who::Admin),
    ("DELETE", "/api/v1/users/{name}", Who::Admin),
    ("GET", "/api/v1/tokens", Who::Viewer),
    ("POST", "/api/v1/tokens", Who::Viewer),
    ("DELETE", "/api/v1/tokens/{id}", Who::Viewer),
    ("GET", "/api/v1/enrollment-tokens", Who::Admin),
    ("POST", "/api/v1/enrollment-tokens", Who::Admin),
    ("DELETE", "/api/v1/enrollment-tokens/{id}", Who::Admin),
    ("POST", "/api/v1/enroll", Who::Public),
    ("GET", "/api/v1/devices", Who::Viewer),
    ("GET", "/api/v1/devices/{id}", Who::Viewer),
    ("PATCH", "/api/v1/devices/{id}", Who::Operator),
    ("DELETE", "/api/v1/devices/{id}", Who::Admin),
    ("POST", "/api/v1/devices/{id}/revoke", Who::Admin),
    ("GET", "/api/v1/devices/{id}/neighbours", Who::Viewer),
    ("GET", "/api/v1/groups", Who::Viewer),
    ("POST", "/api/v1/groups", Who::Operator),
    ("GET", "/api/v1/groups/{id}", Who::Viewer),
    ("PATCH", "/api/v1/groups/{id}", Who::Operator),
    ("DELETE", "/api/v1/groups/{id}", Who::Operator),
    ("GET", "/api/v1/topology", Who::Viewer),
    ("GET", "/api/v1/alerts", Who::Viewer),
    ("POST", "/api/v1/alerts", Who::Operator),
    ("POST", "/api/v1/alerts/{id}/ack", Who::Operator),
    ("POST", "/api/v1/alerts/{id}/clear", Who::Operator),
    ("GET", "/api/v1/audit", Who::Viewer),
    ("GET", "/api/v1/events", Who::Viewer),
];

/// How a test principal authenticates: its kind and role (`None`: no token).
type Kind = Option<(PrincipalKind, Option<Role>)>;

const DEVICE_SCOPED: [Action; 3] = [Action::ReadTwin, Action::DeviceSync, Action::WriteTelemetry];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_principal_as_the_matrix_says() {
    let f = Fleet::start().await;
    let viewer = f.user_token("vera", "viewer").await;
    let operator = f.user_token("otto", "operator").await;
    let admin = f.admin().to_owned();
    let device = f.enroll("pi-self", json!({})).await;
    let table = api_routes();
    let mut checked = 0;
    for route in table.table() {
        let method = route.method.as_str();
        let device_scoped = matches!(route.access, Access::Action(a) if DEVICE_SCOPED.contains(&a));
        // Mutations target things that do not exist, so the walk changes nothing.
        let id = if device_scoped { "pi-self" } else { "ghost" };
        let path = route.path.replace("{id}", id).replace("{name}", "nobody");
        let body = matches!(method, "POST" | "PATCH" | "PUT").then_some("{}");
        let explicit = EXPECTED
            .iter()
            .find(|(m, p, _)| *m == method && *p == route.path)
            .map(|e| e.2);
        // Routes of the telemetry and twin modules: the declared rule of the table.
        let allowed = |kind: Kind| -> bool {
            match (explicit, route.access, kind) {
                (Some(Who::Public), _, _) | (None, Access::Public, _) => true,
                (_, _, None) => false,
                (Some(Who::Any), _, Some(_)) => true,
                (Some(w), _, Some((PrincipalKind::Device, _))) => {
                    let _ = w;
                    false
                }
                (Some(w), _, Some((_, Some(role)))) => match w {
                    Who::Viewer => true,
                    Who::Operator => role >= Role::Operator,
                    Who::Admin => role == Role::Admin,
                    Who::Public | Who::Any => true,
                },
                (None, Access::Action(a), Some((k, role))) => {
                    access::authorize(k, role, a, device_scoped.then_some(true)).is_ok()
                }
                _ => false,
            }
        };
        let principals: [(&str, Option<&str>, Kind); 5] = [
            ("no token", None, None),
            ("device", Some(&device), Some((PrincipalKind::Device, None))),
            (
                "viewer",
                Some(&viewer),
                Some((PrincipalKind::Token, Some(Role::Viewer))),
            ),
            (
                "operator",
                Some(&operator),
                Some((PrincipalKind::Token, Some(Role::Operator))),
            ),
            (
                "admin",
                Some(&admin),
                Some((PrincipalKind::Token, Some(Role::Admin))),
            ),
        ];
        for (who, token, kind) in principals {
            // /metrics is public only when configured so; here it is not.
            let r = f.call(method, &path, token, body).await;
            if allowed(kind) {
                assert!(
                    r.status != 401 && r.status != 403,
                    "{method} {path} as {who}: expected to be let through, got {} {}",
                    r.status,
                    r.body
                );
            } else {
                let want = if token.is_none() { 401 } else { 403 };
                assert_eq!(r.status, want, "{method} {path} as {who}: {}", r.body);
                let code = if want == 401 {
                    "unauthorized"
                } else {
                    "forbidden"
                };
                assert_eq!(r.code(), code, "{method} {path} as {who}");
            }
        }
        checked += 1;
    }
    for (m, p, _) in EXPECTED {
        assert!(
            table
                .table()
                .iter()
                .any(|r| r.method.as_str() == *m && r.path == *p),
            "{m} {p} is expected but not served"
        );
    }
    assert!(checked >= EXPECTED.len());
    // A device credential on its own twin route is let through, on another's refused
    // (when the twin module serves one).
    if table
        .table()
        .iter()
        .any(|r| r.path == "/api/v1/devices/{id}/twin")
    {
        let other = f.enroll("pi-other", json!({})).await;
        let _ = other;
        let r = f
            .call("GET", "/api/v1/devices/pi-other/twin", Some(&device), None)
            .await;
        assert_eq!(r.status, 403, "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_credential_is_refused_on_user_routes_and_other_devices() {
    let f = Fleet::start().await;
    let a = f.enroll("pi-a", json!({})).await;
    f.enroll("pi-b", json!({})).await;
    for (m, p) in [
        ("GET", "/api/v1/devices"),
        ("GET", "/api/v1/devices/pi-b"),
        ("GET", "/api/v1/devices/pi-a"),
        ("GET", "/api/v1/users"),
        ("POST", "/api/v1/tokens"),
        ("GET", "/api/v1/audit"),
    ] {
        let r = f.call(m, p, Some(&a), Some("{}")).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "forbidden"),
            "{m} {p}: {}",
            r.body
        );
    }
    let who = f.get("/api/v1/auth/whoami", &a).await;
    assert_eq!(who["kind"], "device");
    assert_eq!(who["name"], "pi-a");
}
