//! Restart on the same data directory keeps everything; bad configs are refused
//! naming the key; SIGHUP-style reload keeps the old config on error; the first
//! admin and `/metrics`.

use std::time::Duration;

use serde_json::json;

use crate::support::Fleet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_users_tokens_devices_groups_alerts_and_audit() {
    let f = Fleet::start().await;
    let a = f.admin().to_owned();
    let viewer = f.user_token("vera", "viewer").await;
    f.post("/api/v1/groups", &a, json!({"id": "lab"})).await;
    let t = f.enrollment_token(json!({"group": "lab", "uses": 2})).await;
    let r = f
        .call(
            "POST",
            "/api/v1/enroll",
            None,
            Some(&json!({"token": t, "device_id": "pi-1", "model": "pi5"}).to_string()),
        )
        .await;
    let cred = r.body["credential"].as_str().unwrap().to_owned();
    f.post(
        "/api/v1/alerts",
        &a,
        json!({"device": "pi-1", "code": "hot", "severity": "critical", "message": "m"}),
    )
    .await;
    let audit_before = f.get("/api/v1/audit?limit=1000", &a).await["items"]
        .as_array()
        .unwrap()
        .len();
    let before = (
        f.get("/api/v1/devices", &a).await,
        f.get("/api/v1/groups", &a).await,
        f.get("/api/v1/alerts", &a).await,
        f.get("/api/v1/users", &a).await,
    );

    let f = f.restart().await;
    let after = (
        f.get("/api/v1/devices", &a).await,
        f.get("/api/v1/groups", &a).await,
        f.get("/api/v1/alerts", &a).await,
        f.get("/api/v1/users", &a).await,
    );
    assert_eq!(before, after);
    assert_eq!(
        f.get("/api/v1/auth/whoami", &viewer).await["name"],
        "vera-token"
    );
    assert_eq!(f.get("/api/v1/auth/whoami", &cred).await["name"], "pi-1");
    f.login("vera", "vera-password").await;
    let r = f
        .call(
            "POST",
            "/api/v1/enroll",
            None,
            Some(&json!({"token": t, "device_id": "pi-2", "model": "pi5"}).to_string()),
        )
        .await;
    assert_eq!(
        r.status, 201,
        "the token's remaining use survived: {}",
        r.body
    );
    let r = f
        .call(
            "POST",
            "/api/v1/enroll",
            None,
            Some(&json!({"token": t, "device_id": "pi-3", "model": "pi5"}).to_string()),
        )
        .await;
    assert_eq!(r.code(), "enrollment_invalid");
    let audit_after = f.get("/api/v1/audit?limit=1000", &a).await["items"]
        .as_array()
        .unwrap()
        .len();
    assert!(audit_after > audit_before, "{audit_after} > {audit_before}");
    let starts = f.get("/api/v1/audit?action=fleetd.start", &a).await;
    assert_eq!(starts["items"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_refused_naming_the_key_and_reload_keeps_the_old_one() {
    for (text, key) in [
        ("[api]\nbody_limit = 3\n", "api.body_limit"),
        ("[auth]\nsession_ttl = \"forever\"\n", "auth.session_ttl"),
        ("[api]\nbind = \"nowhere\"\n", "api.bind"),
        ("[hub]\nmax_resident = 0\n", "hub.max_resident"),
    ] {
        // Validation errors name the dotted key; type errors in the file name the
        // key as written, with its line.
        let e = fleetd::Config::from_toml_str(text).unwrap_err().to_string();
        let leaf = key.rsplit('.').next().unwrap();
        assert!(
            e.contains(key) || (e.contains(leaf) && e.contains("line 2")),
            "{text}: {e}"
        );
    }
    let e = fleetd::Config::from_toml_str("[api]\nbnd = 1\n").unwrap_err();
    assert!(e.to_string().contains("bnd"), "{e}");

    let f = Fleet::start_with("[auth]\nsession_ttl = \"1h\"\n").await;
    std::fs::write(&f.config_path, "[auth\nsession_ttl = 3").unwrap();
    f.signals.reload().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.get("/health/ready", f.admin()).await["status"], "ready");
    let s = f
        .post(
            "/api/v1/auth/login",
            "",
            json!({"username": "admin", "password": f.admin_password}),
        )
        .await;
    let exp = wrale_core::Timestamp::parse_rfc3339(s["expires_at"].as_str().unwrap()).unwrap();
    let left = exp.saturating_since(wrale_core::Timestamp::from_system(
        std::time::SystemTime::now(),
    ));
    assert!(
        left > Duration::from_secs(3000),
        "the old 1h ttl is kept: {left:?}"
    );

    std::fs::write(
        &f.config_path,
        fleetd::testing::TestServer::config_text(&f.data_dir, "[auth]\nsession_ttl = \"10m\"\n"),
    )
    .unwrap();
    f.signals.reload().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = f
            .post(
                "/api/v1/auth/login",
                "",
                json!({"username": "admin", "password": f.admin_password}),
            )
            .await;
        let exp = wrale_core::Timestamp::parse_rfc3339(s["expires_at"].as_str().unwrap()).unwrap();
        let left = exp.saturating_since(wrale_core::Timestamp::from_system(
            std::time::SystemTime::now(),
        ));
        if left < Duration::from_secs(700) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new ttl never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_creates_an_admin_and_metrics_are_served() {
    // A fresh data dir with no user: the daemon creates `admin` itself.
    let dir = tempfile::tempdir().unwrap();
    let config = fleetd::Config::from_toml_str(&fleetd::testing::TestServer::config_text(
        &dir.path().join("d"),
        "[api]\npublic_metrics = true\n",
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (signals, handle) = fleetd::Signals::manual();
    let task = tokio::spawn(fleetd::run(config.clone(), listener, signals));
    let http = reqwest::Client::new();
    let m = loop {
        if let Ok(r) = http.get(format!("http://{addr}/metrics")).send().await {
            break r.text().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for name in [
        "wrale_devices_registered 0",
        "wrale_devices_connected 0",
        "wrale_store_size_bytes",
        "wrale_http_request_duration_seconds_bucket",
        "wrale_events_published_total",
    ] {
        assert!(m.contains(name), "{name} missing from:\n{m}");
    }
    let m = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("wrale_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"}"),
        "{m}"
    );
    handle.shutdown();
    task.await.unwrap().unwrap();
    let store = fleetd::admin::open_store(&config).unwrap();
    use fleetd::FleetStore as _;
    let users = store.list_users().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].name, "admin");
    assert_eq!(users[0].role, wrale_core::fleet::access::Role::Admin);
}
