//! Login, sessions and their expiry, logout, users, API tokens capped by role.

use std::time::Duration;

use serde_json::json;

use crate::support::Fleet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_session_expiry_and_logout() {
    let f = Fleet::start_with("[auth]\nsession_ttl = \"2s\"\n").await;
    let bad = f
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({"username": "admin", "password": "wrong"}).to_string()),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (401, "unauthorized"),
        "{}",
        bad.body
    );
    let nobody = f
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({"username": "ghost", "password": "x"}).to_string()),
        )
        .await;
    assert_eq!(nobody.status, 401);

    let r = f
        .post(
            "/api/v1/auth/login",
            "",
            json!({"username": "admin", "password": f.admin_password}),
        )
        .await;
    let session = r["token"].as_str().unwrap().to_owned();
    assert!(session.starts_with("wrs_"), "{session}");
    assert_eq!(r["user"]["role"], "admin");
    let who = f.get("/api/v1/auth/whoami", &session).await;
    assert_eq!(
        who,
        json!({"kind": "user", "name": "admin", "role": "admin"})
    );

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let expired = f
        .call("GET", "/api/v1/auth/whoami", Some(&session), None)
        .await;
    assert_eq!(
        (expired.status, expired.code()),
        (401, "unauthorized"),
        "{}",
        expired.body
    );

    let session = f.login("admin", &f.admin_password).await;
    let out = f
        .call("POST", "/api/v1/auth/logout", Some(&session), None)
        .await;
    assert_eq!(out.status, 204, "{}", out.body);
    assert_eq!(
        f.call("GET", "/api/v1/auth/whoami", Some(&session), None)
            .await
            .status,
        401
    );

    // Failed and successful logins are audited.
    let audit = f.get("/api/v1/audit?action=auth.login", f.admin()).await;
    let verdicts: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["verdict"].as_str().unwrap())
        .collect();
    assert!(
        verdicts.contains(&"denied") && verdicts.contains(&"allowed"),
        "{verdicts:?}"
    );
    // Secrets never appear in the audit log.
    assert!(!audit.to_string().contains("wrs_"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_capped_by_their_creators_role() {
    let f = Fleet::start().await;
    let op = f.user_token("olga", "operator").await;
    let too_high = f
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&op),
            Some(&json!({"name": "x", "role": "admin"}).to_string()),
        )
        .await;
    assert_eq!(
        (too_high.status, too_high.code()),
        (403, "forbidden"),
        "{}",
        too_high.body
    );
    let lower = f
        .post(
            "/api/v1/tokens",
            &op,
            json!({"name": "ro", "role": "viewer", "expires_in": "1h"}),
        )
        .await;
    assert_eq!(lower["role"], "viewer");
    assert!(lower["expires_at"].is_string());
    let ro = lower["token"].as_str().unwrap();
    // The viewer token cannot do what its operator creator can.
    let r = f
        .call(
            "POST",
            "/api/v1/groups",
            Some(ro),
            Some(&json!({"id": "g"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        f.call(
            "POST",
            "/api/v1/groups",
            Some(&op),
            Some(&json!({"id": "g"}).to_string())
        )
        .await
        .status,
        201
    );
    // A token made by a token is capped too.
    let from_ro = f
        .call(
            "POST",
            "/api/v1/tokens",
            Some(ro),
            Some(&json!({"name": "y", "role": "operator"}).to_string()),
        )
        .await;
    assert_eq!(from_ro.status, 403);

    // Demoting the creator demotes their tokens at once.
    let d = f
        .patch("/api/v1/users/olga", f.admin(), json!({"role": "viewer"}))
        .await;
    assert_eq!(d.status, 200, "{}", d.body);
    let r = f
        .call(
            "POST",
            "/api/v1/groups",
            Some(&op),
            Some(&json!({"id": "g2"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(f.get("/api/v1/auth/whoami", &op).await["role"], "viewer");

    // Each user lists their own tokens; an admin lists everyone's.
    let mine = f.get("/api/v1/tokens", &op).await;
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .all(|t| t["owner"] == "olga"),
        "{mine}"
    );
    let all = f.get("/api/v1/tokens", f.admin()).await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|t| t["owner"] == "admin")
    );
    // Secrets are never listed.
    assert!(!all.to_string().contains("wrt_"), "{all}");
    // Deleting someone else's token is a 404 for non-admins; the owner can.
    let id = lower["id"].as_str().unwrap();
    let vt = f.user_token("vic", "viewer").await;
    assert_eq!(
        f.call("DELETE", &format!("/api/v1/tokens/{id}"), Some(&vt), None)
            .await
            .status,
        404
    );
    assert_eq!(
        f.call("DELETE", &format!("/api/v1/tokens/{id}"), Some(&op), None)
            .await
            .status,
        204
    );
    assert_eq!(
        f.call("GET", "/api/v1/auth/whoami", Some(ro), None)
            .await
            .status,
        401
    );
    // Deleting a user ends their tokens.
    assert_eq!(
        f.call("DELETE", "/api/v1/users/olga", Some(f.admin()), None)
            .await
            .status,
        204
    );
    assert_eq!(
        f.call("GET", "/api/v1/auth/whoami", Some(&op), None)
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_validated_and_the_last_admin_is_kept() {
    let f = Fleet::start().await;
    let r = f
        .call(
            "POST",
            "/api/v1/users",
            Some(f.admin()),
            Some(
                &json!({"name": "Bad Name", "password": "long-enough", "role": "viewer"})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_body"));
    assert_eq!(r.body["error"]["field"], "name");
    let r = f
        .call(
            "POST",
            "/api/v1/users",
            Some(f.admin()),
            Some(&json!({"name": "bob", "password": "short", "role": "viewer"}).to_string()),
        )
        .await;
    assert_eq!(r.body["error"]["field"], "password", "{}", r.body);
    let r = f
        .call(
            "POST",
            "/api/v1/users",
            Some(f.admin()),
            Some(&json!({"name": "bob", "password": "long-enough", "role": "root"}).to_string()),
        )
        .await;
    assert_eq!(r.body["error"]["field"], "role", "{}", r.body);
    f.post(
        "/api/v1/users",
        f.admin(),
        json!({"name": "bob", "password": "long-enough", "role": "viewer"}),
    )
    .await;
    let dup = f
        .call(
            "POST",
            "/api/v1/users",
            Some(f.admin()),
            Some(&json!({"name": "bob", "password": "long-enough", "role": "viewer"}).to_string()),
        )
        .await;
    assert_eq!((dup.status, dup.code()), (409, "conflict"));
    let last = f
        .call("DELETE", "/api/v1/users/admin", Some(f.admin()), None)
        .await;
    assert_eq!(
        (last.status, last.code()),
        (409, "conflict"),
        "{}",
        last.body
    );
    let demote = f
        .patch(
            "/api/v1/users/admin",
            f.admin(),
            json!({"role": "operator"}),
        )
        .await;
    assert_eq!(
        (demote.status, demote.code()),
        (409, "conflict"),
        "{}",
        demote.body
    );
    let users = f.get("/api/v1/users", f.admin()).await;
    assert_eq!(users.as_array().unwrap().len(), 2);
    assert!(!users.to_string().contains("argon2"), "{users}");
    // A password change ends the user's sessions.
    let s = f.login("bob", "long-enough").await;
    assert_eq!(
        f.patch(
            "/api/v1/users/bob",
            f.admin(),
            json!({"password": "another-one"})
        )
        .await
        .status,
        200
    );
    assert_eq!(
        f.call("GET", "/api/v1/auth/whoami", Some(&s), None)
            .await
            .status,
        401
    );
    f.login("bob", "another-one").await;
}
