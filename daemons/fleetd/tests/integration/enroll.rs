//! Enrollment: single-use, N-use, expiry, group scope, re-enrollment after revoke.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Fleet, Resp};

async fn enroll(f: &Fleet, token: &str, id: &str) -> Resp {
    let body = json!({"token": token, "device_id": id, "model": "pi4b", "serial": "1000abc", "labels": {"role": "cam", "site": "mine"}});
    f.call("POST", "/api/v1/enroll", None, Some(&body.to_string()))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_and_n_use_tokens_and_expiry() {
    let f = Fleet::start().await;
    let once = f.enrollment_token(json!({})).await;
    assert!(once.starts_with("wre_"));
    let r = enroll(&f, &once, "pi-1").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let cred = r.body["credential"].as_str().unwrap();
    assert!(cred.starts_with("wrd_"));
    assert_eq!(r.body["sync_path"], "/api/v1/devices/pi-1/sync");
    let again = enroll(&f, &once, "pi-2").await;
    assert_eq!(
        (again.status, again.code()),
        (401, "enrollment_invalid"),
        "{}",
        again.body
    );

    let three = f.enrollment_token(json!({"uses": 3})).await;
    for id in ["pi-3", "pi-4", "pi-5"] {
        assert_eq!(enroll(&f, &three, id).await.status, 201);
    }
    assert_eq!(
        enroll(&f, &three, "pi-6").await.code(),
        "enrollment_invalid"
    );
    let list = f.get("/api/v1/enrollment-tokens", f.admin()).await;
    let t = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["uses"] == 3)
        .unwrap();
    assert_eq!(t["used"], 3);
    assert!(
        !list.to_string().contains("wre_"),
        "secrets are never listed: {list}"
    );

    let short = f.enrollment_token(json!({"expires_in": "1s"})).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        enroll(&f, &short, "pi-7").await.code(),
        "enrollment_invalid"
    );
    assert_eq!(
        enroll(&f, "wre_nonsense", "pi-8").await.code(),
        "enrollment_invalid"
    );

    // An id enrolled and not revoked: 409, and the token's use is not consumed.
    let two = f.enrollment_token(json!({"uses": 2})).await;
    let dup = enroll(&f, &two, "pi-1").await;
    assert_eq!((dup.status, dup.code()), (409, "conflict"), "{}", dup.body);
    // Revoked: the old credential stops working, and the id may enroll again.
    assert_eq!(f.get("/api/v1/auth/whoami", cred).await["name"], "pi-1");
    let rev = f
        .post("/api/v1/devices/pi-1/revoke", f.admin(), json!(null))
        .await;
    assert_eq!(rev["status"], "revoked");
    assert_eq!(
        f.call("GET", "/api/v1/auth/whoami", Some(cred), None)
            .await
            .status,
        401
    );
    let back = enroll(&f, &two, "pi-1").await;
    assert_eq!(back.status, 201, "{}", back.body);
    assert_ne!(back.body["credential"].as_str().unwrap(), cred);
    assert_eq!(
        enroll(&f, &two, "pi-9").await.status,
        201,
        "the 409 did not consume a use"
    );

    // Every enrollment is audited, refusals too.
    let audit = f
        .get("/api/v1/audit?action=device.enroll&limit=1000", f.admin())
        .await;
    let items = audit["items"].as_array().unwrap();
    assert!(items.iter().any(|e| e["verdict"] == "denied"));
    assert!(items.iter().filter(|e| e["verdict"] == "allowed").count() >= 6);
    assert!(
        !audit.to_string().contains("wrd_"),
        "credentials never reach the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_scope_and_labels_come_from_the_token() {
    let f = Fleet::start().await;
    f.post(
        "/api/v1/groups",
        f.admin(),
        json!({"id": "lab", "name": "Lab"}),
    )
    .await;
    let missing = f
        .call(
            "POST",
            "/api/v1/enrollment-tokens",
            Some(f.admin()),
            Some(&json!({"group": "nope"}).to_string()),
        )
        .await;
    assert_eq!(
        (missing.status, missing.body["error"]["field"].clone()),
        (400, Value::from("group")),
        "{}",
        missing.body
    );
    let t = f
        .enrollment_token(json!({"group": "lab", "labels": {"site": "lab-site"}}))
        .await;
    let r = enroll(&f, &t, "pi-lab").await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["group"], "lab");
    let d = f.get("/api/v1/devices/pi-lab", f.admin()).await;
    assert_eq!(d["group"], "lab");
    assert_eq!(d["labels"]["site"], "lab-site", "the token's labels win");
    assert_eq!(
        d["labels"]["role"], "cam",
        "the device's own labels are kept"
    );
    assert_eq!(d["model"], "pi4b");
    assert_eq!(d["status"], "never");
    let bad_model = f
        .call(
            "POST",
            "/api/v1/enroll",
            None,
            Some(&json!({"token": t, "device_id": "x", "model": "pi9"}).to_string()),
        )
        .await;
    assert_eq!(
        bad_model.body["error"]["field"], "model",
        "{}",
        bad_model.body
    );
}
