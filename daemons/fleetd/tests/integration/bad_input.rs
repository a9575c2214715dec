//! Bad input: malformed JSON, unknown fields, wrong types, missing fields,
//! oversized bodies, unknown routes. Each gets a 4xx naming the problem, and the
//! daemon keeps serving.

use serde_json::json;

use crate::support::Fleet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_named_and_nothing_changes() {
    let f = Fleet::start_with("[api]\nbody_limit = 2048\n").await;
    let a = f.admin().to_owned();
    let cases: [(&str, &str, Option<&str>); 6] = [
        ("{\"id\": \"g1\",", "malformed", None),
        (
            "{\"id\": \"g1\", \"colour\": \"red\"}",
            "unknown",
            Some("colour"),
        ),
        ("{\"id\": 5}", "wrong type", Some("id")),
        ("{\"id\": \"Not A Label\"}", "bad id", Some("id")),
        ("{\"name\": \"x\"}", "missing", None),
        ("", "empty", None),
    ];
    for (body, what, field) in cases {
        let r = f.call("POST", "/api/v1/groups", Some(&a), Some(body)).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_body"),
            "{what}: {}",
            r.body
        );
        if let Some(field) = field {
            assert_eq!(r.body["error"]["field"], field, "{what}: {}", r.body);
            assert!(
                r.body["error"]["message"].as_str().unwrap().contains(field),
                "{what}: {}",
                r.body
            );
        }
    }
    // Nested unknown field and wrong nested type are named with their path.
    f.enroll("pi-1", json!({})).await;
    let r = f
        .patch(
            "/api/v1/devices/pi-1",
            &a,
            json!({"location": {"site": "a", "floor": 3}}),
        )
        .await;
    assert_eq!(r.body["error"]["field"], "location.floor", "{}", r.body);
    let r = f
        .patch("/api/v1/devices/pi-1", &a, json!({"labels": {"k": 1}}))
        .await;
    assert_eq!(r.body["error"]["field"], "labels.k", "{}", r.body);

    let big = json!({"id": "g1", "name": "x".repeat(4096)}).to_string();
    let r = f.call("POST", "/api/v1/groups", Some(&a), Some(&big)).await;
    assert_eq!((r.status, r.code()), (413, "body_too_large"), "{}", r.body);
    assert_eq!(r.body["error"]["limit"], 2048);

    let r = f.call("GET", "/api/v1/nothing-here", Some(&a), None).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = f.call("PUT", "/api/v1/devices", Some(&a), Some("{}")).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    let r = f
        .call("GET", "/api/v1/devices", Some("Bearer-less garbage"), None)
        .await;
    assert_eq!(r.status, 401);

    // Nothing was created by any of it, and the daemon still serves.
    assert_eq!(f.get("/api/v1/groups", &a).await, json!([]));
    assert_eq!(f.get("/health/ready", &a).await["status"], "ready");
}
