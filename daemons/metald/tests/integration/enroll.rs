//! Enrollment against a small fleetd stand-in (axum on 127.0.0.1:0): the token is
//! exchanged for a credential stored with mode 0600, never asked for again,
//! retried while fleetd is down; metald works fully before it is enrolled.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::*;

/// The stand-in: checks the token, counts calls, answers a credential.
#[derive(Clone)]
struct Enroller {
    good: &'static str,
    calls: Arc<AtomicU64>,
    last: Arc<std::sync::Mutex<Option<Value>>>,
}

async fn enroll(State(e): State<Enroller>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    e.calls.fetch_add(1, Ordering::SeqCst);
    *e.last.lock().unwrap() = Some(body.clone());
    if body["token"] != e.good {
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"error": {"code": "enrollment_invalid", "message": "unknown, expired or used up"}}),
            ),
        );
    }
    let id = body["device_id"].as_str().unwrap_or("").to_owned();
    (
        StatusCode::CREATED,
        Json(json!({
            "device_id": id,
            "credential": "wrd_test_credential",
            "group": "lab",
            "sync_path": format!("/api/v1/devices/{id}/sync"),
        })),
    )
}

impl Enroller {
    fn new(good: &'static str) -> Self {
        Self {
            good,
            calls: Arc::default(),
            last: Arc::default(),
        }
    }

    /// Serves on `listener` until the returned task is aborted.
    fn serve(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let app = axum::Router::new()
            .route("/api/v1/enroll", post(enroll))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A free port on 127.0.0.1 (nothing listens there afterwards).
async fn free_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn fleet_toml(addr: SocketAddr, token: &str, max: &str) -> String {
    format!(
        "{SIM}[device]\nid = \"pi-enroll\"\nserial = \"10000000abcdef\"\n\
         labels = {{ role = \"cam\" }}\n\
         location = {{ site = \"lab\", rack = \"r1\", shelf = \"2\", slot = \"7\" }}\n\
         [fleet]\nurl = \"http://{addr}\"\nenrollment_token = \"{token}\"\n\
         [fleet.backoff]\ninitial = \"20ms\"\nmax = \"{max}\"\n"
    )
}

async fn wait_for(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolls_once_with_a_0600_credential_and_not_again_after_restart() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fleet = listener.local_addr().unwrap();
    let enroller = Enroller::new("wre_good");
    let server = enroller.serve(listener);
    let body = fleet_toml(fleet, "wre_good", "200ms");
    let d = TestDaemon::start_toml(&body).await;
    d.wait_ready().await;
    let cred = d.dir.path().join("data").join("fleet-credential");
    wait_for("the credential file", Duration::from_secs(10), async || {
        cred.exists()
    })
    .await;
    let mode = std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credential mode {mode:o}");
    assert_eq!(
        std::fs::read_to_string(&cred).unwrap().trim(),
        "wrd_test_credential"
    );
    let sent = enroller.last.lock().unwrap().clone().unwrap();
    assert_eq!(sent["device_id"], "pi-enroll", "{sent}");
    assert_eq!(sent["model"], "pi4b", "{sent}");
    assert_eq!(sent["serial"], "10000000abcdef", "{sent}");
    assert_eq!(sent["labels"]["role"], "cam", "{sent}");
    assert_eq!(sent["location"]["rack"], "r1", "{sent}");
    // The file is in place a moment before the agent records it.
    wait_for(
        "the state to say enrolled",
        Duration::from_secs(5),
        async || {
            let s = d.get_json("/api/v1/state", VIEWER).await;
            s["fleet"]["enrollment"]["enrolled"] == true
        },
    )
    .await;
    // The twin's meta carries the configured labels and location.
    let twin = d.get_json("/api/v1/twin", VIEWER).await;
    assert_eq!(twin["meta"]["labels"]["role"], "cam", "{twin}");
    assert_eq!(twin["meta"]["location"]["site"], "lab", "{twin}");
    // There is no sync endpoint here: metald keeps retrying the link, not enrollment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(enroller.calls(), 1);

    // Restart on the same data directory: the stored credential is used.
    let mut d = d;
    d.signals.shutdown();
    tokio::time::timeout(Duration::from_secs(15), d.task.take().unwrap())
        .await
        .expect("stopped")
        .unwrap()
        .unwrap();
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    let (config_path, http) = (d.config_path.clone(), d.http.clone());
    drop(d);
    let d = restart(dir, config_path, http).await;
    d.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(enroller.calls(), 1, "enrolled again after a restart");
    let state = d.get_json("/api/v1/state", VIEWER).await;
    assert_eq!(state["fleet"]["enrollment"]["enrolled"], true, "{state}");
    assert_eq!(state["fleet"]["enrollment"]["attempts"], 0, "{state}");
    d.stop().await.unwrap();
    server.abort();
}

/// Starts a daemon again on an existing directory and config file.
async fn restart(
    dir: tempfile::TempDir,
    config_path: std::path::PathBuf,
    http: reqwest::Client,
) -> TestDaemon {
    let loader = metald::config::Loader::new().file(&config_path);
    let config = loader.load().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (signals, handle) = metald::Signals::manual();
    let daemon = metald::Daemon::new(config).reload_from(loader);
    let task = tokio::spawn(daemon.run(listener, signals));
    TestDaemon {
        addr,
        signals: handle,
        task: Some(task),
        dir,
        config_path,
        http,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_before_enrollment_and_enrolls_once_fleetd_is_up() {
    let fleet = free_addr().await;
    let d = TestDaemon::start_toml(&fleet_toml(fleet, "wre_good", "100ms")).await;
    d.wait_ready().await;
    // Fully working meanwhile: readings, commands, the twin.
    d.wait_reading("a reading", |v| v["seq"].as_u64() > Some(2))
        .await;
    let resp = d
        .post_json(
            "/api/v1/fan",
            Some(OPERATOR),
            r#"{"fan": "fan0", "duty_pct": 100}"#,
        )
        .await;
    assert_eq!(resp.status(), 200);
    wait_for(
        "several enrollment attempts",
        Duration::from_secs(10),
        async || {
            let s = d.get_json("/api/v1/state", VIEWER).await;
            s["fleet"]["enrollment"]["attempts"].as_u64() >= Some(3)
        },
    )
    .await;
    let s = d.get_json("/api/v1/state", VIEWER).await;
    assert_eq!(s["mode"], "degraded", "{s}");
    assert_eq!(s["fleet"]["enrollment"]["enrolled"], false, "{s}");
    assert!(
        s["modes"]["degraded"]
            .as_str()
            .is_some_and(|m| m.contains("not enrolled")),
        "{s}"
    );
    let metrics = d.get("/metrics", Some(VIEWER)).await.text().await.unwrap();
    assert!(metrics.contains("wrale_fleet_enrolled 0"), "{metrics}");
    assert!(metrics.contains("wrale_sync_connected 0"), "{metrics}");

    // fleetd comes up on that address.
    let enroller = Enroller::new("wre_good");
    let server = enroller.serve(tokio::net::TcpListener::bind(fleet).await.unwrap());
    let cred = d.dir.path().join("data").join("fleet-credential");
    wait_for("enrollment", Duration::from_secs(10), async || {
        cred.exists()
    })
    .await;
    assert_eq!(enroller.calls(), 1);
    wait_for(
        "the state to say enrolled",
        Duration::from_secs(5),
        async || {
            let s = d.get_json("/api/v1/state", VIEWER).await;
            s["fleet"]["enrollment"]["enrolled"] == true
        },
    )
    .await;
    d.stop().await.unwrap();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_retried_slowly_and_a_fixed_one_enrolls_after_reload() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fleet = listener.local_addr().unwrap();
    let enroller = Enroller::new("wre_good");
    let server = enroller.serve(listener);
    let d = TestDaemon::start_toml(&fleet_toml(fleet, "wre_bad", "3s")).await;
    d.wait_ready().await;
    wait_for("the first attempt", Duration::from_secs(10), async || {
        enroller.calls() >= 1
    })
    .await;
    // Connection attempts go on (initial backoff 20 ms), the refused token is
    // not sent again before `backoff.max`.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(enroller.calls(), 1, "the refused token was retried at once");
    let s = d.get_json("/api/v1/state", VIEWER).await;
    let err = s["fleet"]["enrollment"]["last_error"]
        .as_str()
        .unwrap_or("");
    assert!(err.contains("enrollment_invalid"), "{s}");
    assert!(!d.dir.path().join("data").join("fleet-credential").exists());

    // The operator fixes the token and reloads: tried without waiting out the
    // slow pace.
    d.write_config(&fleet_toml(fleet, "wre_good", "3s"), &[]);
    let resp = d.post_json("/api/v1/config/reload", Some(ADMIN), "").await;
    assert_eq!(resp.status(), 200);
    let t0 = Instant::now();
    let cred = d.dir.path().join("data").join("fleet-credential");
    wait_for(
        "enrollment with the fixed token",
        Duration::from_secs(10),
        async || cred.exists(),
    )
    .await;
    assert_eq!(enroller.calls(), 2);
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    d.stop().await.unwrap();
    server.abort();
}
