//! `fleetd backup` while the server runs and takes writes, `fleetd restore` into a
//! fresh directory and over an existing one (`--force`), and a server started on
//! the restored data that has every user, token, device, group, audit entry,
//! credential, telemetry point (raw and rolled up), config layer and twin version
//! (the same heads, the same history with its authors) of before the backup.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fleetd::testing::TestServer;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::telemetry::{enroll, group, points, recent_minute, send};

fn fleetd(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fleetd"))
        .args(args)
        .output()
        .expect("run the fleetd binary")
}

async fn fleetd_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        fleetd(&a)
    })
    .await
    .unwrap()
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

async fn get(c: &Client, srv: &TestServer, token: &str, path: &str) -> Value {
    let r = c
        .get(srv.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    r.json().await.unwrap()
}

async fn post(c: &Client, srv: &TestServer, token: &str, path: &str, body: Value) -> Value {
    let r = c
        .post(srv.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "POST {path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

/// Everything the test compares before and after.
#[derive(Debug, PartialEq)]
struct Seen {
    users: Value,
    tokens: Value,
    devices: Value,
    groups: Value,
    raw_pi1: Value,
    minutes_pi1: Value,
    /// The whole twin of each device (`version` = its heads, desired, reported, epoch).
    twins: Vec<Value>,
    /// Each device's twin history (version hashes, authors, summaries).
    histories: Vec<Value>,
    layers: Vec<Value>,
}

async fn seen(c: &Client, srv: &TestServer, token: &str, range: &str) -> Seen {
    let strip = |mut v: Value| {
        // Connection state and last-seen change with a restart; the rest must not.
        for d in v["items"].as_array_mut().unwrap() {
            let o = d.as_object_mut().unwrap();
            o.remove("status");
            o.remove("last_seen");
        }
        v
    };
    let tel = |res: &str| {
        format!("/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c&{range}&resolution={res}")
    };
    Seen {
        users: get(c, srv, token, "/api/v1/users").await,
        tokens: get(c, srv, token, "/api/v1/tokens").await,
        devices: strip(get(c, srv, token, "/api/v1/devices").await),
        groups: get(c, srv, token, "/api/v1/groups").await,
        raw_pi1: get(c, srv, token, &tel("raw")).await["points"].clone(),
        minutes_pi1: get(c, srv, token, &tel("1m")).await["points"].clone(),
        twins: vec![
            get(c, srv, token, "/api/v1/devices/pi-1/twin").await,
            get(c, srv, token, "/api/v1/devices/pi-2/twin").await,
        ],
        histories: vec![
            get(c, srv, token, "/api/v1/devices/pi-1/history?limit=1000").await,
            get(c, srv, token, "/api/v1/devices/pi-2/history?limit=1000").await,
        ],
        layers: vec![
            get(c, srv, token, "/api/v1/config/groups/lab").await,
            get(c, srv, token, "/api/v1/config/devices/pi-2").await,
        ],
    }
}

async fn audit(c: &Client, srv: &TestServer, token: &str) -> Vec<Value> {
    get(c, srv, token, "/api/v1/audit?limit=1000").await["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_running_restores_everything() {
    let a = TestServer::start().await;
    let c = Client::new();
    let admin = a.admin_token.clone();
    post(
        &c,
        &a,
        &admin,
        "/api/v1/users",
        json!({"name": "alice", "password": "alice-password", "role": "operator"}),
    )
    .await;
    post(
        &c,
        &a,
        &admin,
        "/api/v1/users",
        json!({"name": "vera", "password": "vera-password", "role": "viewer"}),
    )
    .await;
    post(
        &c,
        &a,
        &admin,
        "/api/v1/tokens",
        json!({"name": "ci", "role": "viewer"}),
    )
    .await;
    group(&c, &a, "lab", None).await;
    group(&c, &a, "rack-1", Some("lab")).await;
    let pi1 = enroll(&c, &a, "pi-1", "lab").await;
    let pi2 = enroll(&c, &a, "pi-2", "rack-1").await;
    let r = c
        .patch(a.url("/api/v1/devices/pi-1"))
        .bearer_auth(&admin)
        .json(&json!({"labels": {"role": "cam"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Twin versions: a group layer reaches both twins, a device layer and a
    // rollback add versions to pi-2's.
    for (path, body) in [
        ("/api/v1/config/groups/lab", json!({"fan_profile": "cool"})),
        ("/api/v1/config/devices/pi-2", json!({"warn_c": 65})),
        ("/api/v1/config/devices/pi-2", json!({"fan_profile": "max"})),
    ] {
        let r = c
            .patch(a.url(path))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "PATCH {path}");
    }
    let h = get(&c, &a, &admin, "/api/v1/devices/pi-2/history").await;
    // Back to the version that set warn_c (before fan_profile = max).
    let warn_version = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["summary"].as_str().unwrap_or("").contains("warn_c"))
        .unwrap_or_else(|| panic!("a warn_c version in {h}"))["version"]
        .clone();
    post(
        &c,
        &a,
        &admin,
        "/api/v1/devices/pi-2/rollback",
        json!({"version": warn_version}),
    )
    .await;
    let start = recent_minute();
    let first = wrale_sync::telemetry::encode_batch("pi-1", &points(start, 120, 40.0));
    assert_eq!(
        send(&c, &a, &pi1, "pi-1", first.clone()).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &c,
            &a,
            &pi2,
            "pi-2",
            wrale_sync::telemetry::encode_batch("pi-2", &points(start, 120, 50.0))
        )
        .await
        .0,
        StatusCode::OK
    );
    let range = format!("from={start}&to={}", start + 1_200_000);
    let before = seen(&c, &a, &admin, &range).await;
    assert_eq!(before.raw_pi1.as_array().unwrap().len(), 120);
    assert_eq!(
        before.twins[1]["desired"]["fan_profile"], "cool",
        "rolled back"
    );
    let versions = |i: usize| before.histories[i]["items"].as_array().unwrap().len();
    assert!(
        versions(0) >= 2 && versions(1) >= 4,
        "{:?}",
        before.histories
    );
    for t in &before.twins {
        assert!(!t["version"].as_array().unwrap().is_empty(), "{t}");
    }
    let audit_before = audit(&c, &a, &admin).await;
    assert!(audit_before.len() >= 8, "{audit_before:?}");

    // A device keeps writing while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (c, url, cred, stop, acked) = (
            c.clone(),
            a.url("/api/v1/devices/pi-2/telemetry"),
            pi2.clone(),
            stop.clone(),
            acked.clone(),
        );
        tokio::spawn(async move {
            let mut k = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let rec = wrale_sync::telemetry::encode_batch(
                    "pi-2",
                    &points(start + 1_300_000 + k * 1000, 1, 60.0),
                );
                let r = c
                    .post(&url)
                    .bearer_auth(&cred)
                    .body(rec)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                k += 1;
                acked.store(k as u64, Ordering::Relaxed);
            }
        })
    };
    while acked.load(Ordering::Relaxed) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.wbak");
    let acked_before_backup = acked.load(Ordering::Relaxed);
    let out = fleetd_async(vec![
        "--config".into(),
        s(&a.config_path),
        "backup".into(),
        "--to".into(),
        s(&file),
    ])
    .await;
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        acked.load(Ordering::Relaxed) > acked_before_backup,
        "the writer stalled during the backup"
    );

    // Restore into a fresh directory; a second restore there needs --force.
    let fresh = dir.path().join("restored");
    let out = fleetd(&["restore", "--from", &s(&file), "--data-dir", &s(&fresh)]);
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["fleet.db", "telemetry.db", "twins.db"] {
        assert!(fresh.join(f).is_file(), "{f} restored");
    }
    let out = fleetd(&["restore", "--from", &s(&file), "--data-dir", &s(&fresh)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    // A damaged copy is refused, naming the file, and changes nothing.
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x55;
    let damaged = dir.path().join("damaged.wbak");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = fleetd(&[
        "restore",
        "--from",
        &s(&damaged),
        "--data-dir",
        &s(&dir.path().join("d2")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A second server: its own data replaced by the backup (--force), restarted.
    let mut b = TestServer::start().await;
    b.stop().await.unwrap();
    let out = fleetd(&[
        "--config",
        &s(&b.config_path),
        "restore",
        "--from",
        &s(&file),
        "--force",
    ]);
    assert!(
        out.status.success(),
        "restore --force: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut b = b.restart().await;
    b.admin_token = admin.clone();

    let after = seen(&c, &b, &admin, &range).await;
    // Twin heads first, for a readable failure; then everything.
    for (a, b) in after.twins.iter().zip(&before.twins) {
        assert_eq!(a["version"], b["version"], "twin heads of {}", b["device"]);
    }
    assert_eq!(after.histories, before.histories);
    assert_eq!(after, before);
    let audit_after = audit(&c, &b, &admin).await;
    for e in &audit_before {
        assert!(audit_after.contains(e), "audit entry lost: {e}");
    }
    // pi-2: its first batch and every point acknowledged before the backup began.
    let tel = get(
        &c,
        &b,
        &admin,
        &format!(
            "/api/v1/devices/pi-2/telemetry?metric=cpu_temp_c&from={start}&to={}&resolution=raw",
            start + 1_300_000 + 3_600_000
        ),
    )
    .await;
    let n = tel["points"].as_array().unwrap().len() as u64;
    assert!(
        n >= 120 + acked_before_backup,
        "{n} points, {acked_before_backup} acked before the backup"
    );
    // Passwords, credentials and the record hashes came along.
    let r = c
        .post(b.url("/api/v1/auth/login"))
        .json(&json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (st, v) = send(&c, &b, &pi1, "pi-1", first).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["replayed"], true, "{v}");
    b.stop().await.unwrap();
}
