//! The edge agent against a test fleet: an axum server with the sync route
//! (`/api/v1/devices/{id}/sync`, bearer credential checked) serving
//! `wrale_sync::Hub` sessions over real WebSockets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use wrale_core::Timestamp;
use wrale_core::model::{Actor, Command, CommandRequest, DeviceId, Level};
use wrale_core::units::{Celsius, Percent};
use wrale_sync::transport::AxumWsTransport;
use wrale_sync::{
    Author, CommandStatus, FieldValue, Hub, HubConfig, MemoryStore, Section, TelemetrySink,
};

use crate::support::*;

const DEVICE: &str = "pi-fleet";
const CREDENTIAL: &str = "wrd_fleet_test";

/// Telemetry records as the fleet stored them.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Vec<u8>>>>);

#[async_trait]
impl TelemetrySink for Collect {
    async fn ingest(&self, _device: &DeviceId, records: Vec<Vec<u8>>) -> wrale_sync::Result<()> {
        self.0.lock().unwrap().extend(records);
        Ok(())
    }
}

/// The test fleet.
#[derive(Clone)]
struct Fleet {
    addr: SocketAddr,
    hub: Hub,
    online: Arc<AtomicBool>,
    unauthorized: Arc<AtomicU64>,
    telemetry: Collect,
}

async fn sync_route(
    State(f): State<Fleet>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !f.online.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token != Some(CREDENTIAL) {
        f.unauthorized.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(device) = DeviceId::new(id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    ws.on_upgrade(move |socket| async move {
        let sink = Arc::new(f.telemetry.clone());
        let _ = f
            .hub
            .serve(&device, Box::new(AxumWsTransport::new(socket)), sink)
            .await;
    })
}

impl Fleet {
    async fn start() -> Fleet {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = HubConfig {
            resync_after: Duration::from_secs(1),
            ..HubConfig::default()
        };
        let fleet = Fleet {
            addr: listener.local_addr().unwrap(),
            hub: Hub::new(Box::new(MemoryStore::new()), config),
            online: Arc::new(AtomicBool::new(true)),
            unauthorized: Arc::default(),
            telemetry: Collect::default(),
        };
        let app = axum::Router::new()
            .route("/api/v1/devices/{id}/sync", get(sync_route))
            .with_state(fleet.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fleet
    }

    fn device() -> DeviceId {
        DeviceId::new(DEVICE).unwrap()
    }

    fn offline(&self) {
        self.online.store(false, Ordering::SeqCst);
        self.hub
            .disconnect(&Self::device(), "test: the fleet goes away");
    }

    fn online(&self) {
        self.online.store(true, Ordering::SeqCst);
    }

    fn connected(&self) -> bool {
        self.hub.is_connected(&Self::device())
    }

    fn desired(&self) -> BTreeMap<String, FieldValue> {
        self.hub
            .read(&Self::device(), |t| t.fields(Section::Desired))
            .unwrap()
            .unwrap()
    }

    fn reported(&self) -> BTreeMap<String, FieldValue> {
        self.hub
            .read(&Self::device(), |t| t.fields(Section::Reported))
            .unwrap()
            .unwrap()
    }

    /// A user's edit of `desired` on the fleet side (not validated: the device must).
    fn edit(&self, f: impl FnOnce(&mut wrale_sync::DesiredConfig)) {
        self.hub
            .edit(&Self::device(), |t| {
                t.edit_desired(f, &Author::user("alice"), now()).unwrap();
            })
            .unwrap();
    }
}

fn now() -> Timestamp {
    Timestamp::from_system(std::time::SystemTime::now())
}

/// metald with `[fleet]` pointing at the test fleet and a stored credential.
async fn metald(fleet: &Fleet, cred_dir: &tempfile::TempDir) -> TestDaemon {
    let cred = cred_dir.path().join("credential");
    std::fs::write(&cred, format!("{CREDENTIAL}\n")).unwrap();
    let body = format!(
        "{SIM}[device]\nid = \"{DEVICE}\"\n[fleet]\nurl = \"http://{}\"\n\
         credential_file = \"{}\"\nresync_after = \"1s\"\ntelemetry_batch = 16\n\
         [fleet.backoff]\ninitial = \"20ms\"\nmax = \"200ms\"\n",
        fleet.addr,
        cred.display()
    );
    let d = TestDaemon::start_toml(&body).await;
    d.wait_ready().await;
    d
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

async fn metrics(d: &TestDaemon) -> String {
    d.get("/metrics", Some(VIEWER)).await.text().await.unwrap()
}

async fn mode(d: &TestDaemon) -> String {
    let s = d.get_json("/api/v1/state", VIEWER).await;
    s["mode"].as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_and_telemetry_reach_the_fleet_with_the_credential() {
    let fleet = Fleet::start().await;
    let cred = tempfile::tempdir().unwrap();
    let d = metald(&fleet, &cred).await;
    wait_for("the session", async || fleet.connected()).await;
    assert_eq!(fleet.unauthorized.load(Ordering::SeqCst), 0);
    wait_for("a reported reading at the fleet", async || {
        fleet.reported().contains_key("reading.cpu_temp_c")
    })
    .await;
    let meta = fleet
        .hub
        .read(&Fleet::device(), |t| t.meta())
        .unwrap()
        .unwrap();
    assert_eq!(meta.model.as_str(), "pi4b");
    wait_for("telemetry acknowledged", async || {
        metric(&metrics(&d).await, "wrale_telemetry_acked_total") >= 16.0
    })
    .await;
    let records = fleet.telemetry.0.lock().unwrap().len();
    assert!(records >= 16, "{records} records");
    let m = metrics(&d).await;
    assert_eq!(metric(&m, "wrale_sync_connected"), 1.0, "{m}");
    assert!(
        metric(&m, "wrale_sync_last_success_timestamp_seconds") > 1.0e9,
        "{m}"
    );
    assert_eq!(metric(&m, "wrale_sync_frames_rejected_total"), 0.0, "{m}");
    assert!(m.contains("wrale_mode{mode=\"normal\"} 1"), "{m}");
    let s = d.get_json("/api/v1/state", VIEWER).await;
    assert_eq!(s["mode"], "normal", "{s}");
    assert_eq!(s["fleet"]["connected"], true, "{s}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_on_both_sides_merge_and_the_mode_follows_the_link() {
    let fleet = Fleet::start().await;
    let cred = tempfile::tempdir().unwrap();
    let d = metald(&fleet, &cred).await;
    wait_for("the session", async || fleet.connected()).await;
    wait_for("mode normal", async || mode(&d).await == "normal").await;

    fleet.offline();
    wait_for("mode degraded", async || mode(&d).await == "degraded").await;
    let m = metrics(&d).await;
    assert_eq!(metric(&m, "wrale_sync_connected"), 0.0, "{m}");
    assert!(m.contains("wrale_mode{mode=\"degraded\"} 1"), "{m}");
    let reconnects = metric(&m, "wrale_sync_reconnects_total");

    // Both sides edit while apart: the fleet the warning threshold, a local
    // operator the fan profile and the throttle threshold.
    fleet.edit(|c| c.warn = Some(Celsius(65.0)));
    let resp = d
        .http
        .patch(d.url("/api/v1/twin/desired"))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({"fan_profile": "cool", "throttle_c": 75}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    wait_for("local changes counted as lag", async || {
        metric(&metrics(&d).await, "wrale_sync_lag_changes") > 0.0
    })
    .await;
    let twin = d.get_json("/api/v1/twin", VIEWER).await;
    assert_eq!(twin["desired"]["fan_profile"], "cool", "{twin}");
    assert!(twin["desired"]["warn"].is_null(), "not merged yet: {twin}");

    fleet.online();
    wait_for("the session again", async || fleet.connected()).await;
    wait_for("the device's edits at the fleet", async || {
        let f = fleet.desired();
        f.get("fan_profile") == Some(&FieldValue::from("cool"))
            && f.get("throttle_c").and_then(FieldValue::as_f64) == Some(75.0)
    })
    .await;
    wait_for("the fleet's edit on the device", async || {
        let twin = d.get_json("/api/v1/twin", VIEWER).await;
        twin["desired"]["warn"].as_f64() == Some(65.0)
    })
    .await;
    let f = fleet.desired();
    assert_eq!(f.get("warn_c").and_then(FieldValue::as_f64), Some(65.0));
    wait_for("mode normal again", async || mode(&d).await == "normal").await;
    wait_for("no lag", async || {
        metric(&metrics(&d).await, "wrale_sync_lag_changes") == 0.0
    })
    .await;
    let m = metrics(&d).await;
    assert!(
        metric(&m, "wrale_sync_reconnects_total") >= reconnects,
        "{m}"
    );
    assert!(m.contains("wrale_mode{mode=\"normal\"} 1"), "{m}");
    // The merged config passed the device's check and is in force.
    wait_for("the merged config accepted", async || {
        fleet.reported().get("config.accepted") == Some(&FieldValue::Bool(true))
    })
    .await;
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_config_below_the_floor_is_rejected_with_the_reason() {
    let fleet = Fleet::start().await;
    let cred = tempfile::tempdir().unwrap();
    let d = metald(&fleet, &cred).await;
    wait_for("the session", async || fleet.connected()).await;
    fleet.edit(|c| {
        c.critical = Some(Celsius(99.0));
        c.config_version = 5;
    });
    wait_for("the rejection at the fleet", async || {
        let r = fleet.reported();
        r.get("config.version") == Some(&FieldValue::Int(5))
            && r.get("config.accepted") == Some(&FieldValue::Bool(false))
    })
    .await;
    let r = fleet.reported();
    let why = match r.get("config.rejection") {
        Some(FieldValue::Str(s)) => s.clone(),
        other => panic!("no rejection reason: {other:?}"),
    };
    assert!(
        why.starts_with("threshold_above_board") && why.contains("critical_c"),
        "{why}"
    );
    // The same edit made locally is refused before it is written.
    let resp = d
        .http
        .patch(d.url("/api/v1/twin/desired"))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({"critical_c": 99}))
        .send()
        .await
        .unwrap();
    let (status, code, v) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (422, "policy_violation"), "{v}");
    assert_eq!(v["error"]["rule"], "threshold_above_board", "{v}");
    // A viewer may not edit; an unknown field is named.
    let resp = d
        .http
        .patch(d.url("/api/v1/twin/desired"))
        .bearer_auth(VIEWER)
        .json(&serde_json::json!({"warn_c": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = d
        .http
        .patch(d.url("/api/v1/twin/desired"))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({"warp_c": 60}))
        .send()
        .await
        .unwrap();
    let (status, code, v) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "invalid_body"), "{v}");
    assert_eq!(v["error"]["field"], "warp_c", "{v}");
    d.stop().await.unwrap();
}

fn fan_duty(v: &Value) -> Option<f64> {
    v["sample"]["fans"][0]["duty_pct"]["value"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_profile_from_the_fleet_drives_the_fan_and_is_reported_applied() {
    let fleet = Fleet::start().await;
    let cred = tempfile::tempdir().unwrap();
    let d = metald(&fleet, &cred).await;
    wait_for("the session", async || fleet.connected()).await;
    // A cool idle board on the default (balance) profile runs the fan slowly.
    let before = d
        .wait_reading("a fan reading", |v| fan_duty(v).is_some())
        .await;
    assert!(fan_duty(&before).unwrap() < 100.0, "{before}");
    fleet.edit(|c| {
        c.fan_profile = Some("max".into());
        c.config_version = 3;
    });
    d.wait_reading("the fan at full duty", |v| fan_duty(v) == Some(100.0))
        .await;
    wait_for("config 3 reported applied", async || {
        let r = fleet.reported();
        r.get("config.version") == Some(&FieldValue::Int(3))
            && r.get("config.accepted") == Some(&FieldValue::Bool(true))
    })
    .await;
    let s = d.get_json("/api/v1/state", VIEWER).await;
    assert_eq!(s["fleet"]["applied"]["config_version"], 3, "{s}");
    d.stop().await.unwrap();
}

/// The GPIO commands the desired config put through, oldest first:
/// (pin, level, outcome), from the device's audit log.
async fn desired_gpio(d: &TestDaemon) -> Vec<(u64, String, String)> {
    let audit = d.get_json("/api/v1/audit", VIEWER).await;
    let mut out: Vec<_> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"]["type"] == "set_gpio" && r["reason"] == "desired config")
        .map(|r| {
            (
                r["command"]["pin"].as_u64().unwrap(),
                r["command"]["level"].as_str().unwrap().to_owned(),
                r["outcome"]["status"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    out.reverse();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_outputs_from_the_desired_config_go_through_the_engine() {
    let fleet = Fleet::start().await;
    let cred = tempfile::tempdir().unwrap();
    let d = metald(&fleet, &cred).await;
    wait_for("the session", async || fleet.connected()).await;
    let accepted = async |version: i64, yes: bool| {
        wait_for(&format!("config {version} accepted={yes}"), async || {
            let r = fleet.reported();
            r.get("config.version") == Some(&FieldValue::Int(version))
                && r.get("config.accepted") == Some(&FieldValue::Bool(yes))
        })
        .await
    };
    fleet.edit(|c| {
        c.gpio_outputs = [(17, Level::High), (27, Level::Low)].into();
        c.config_version = 4;
    });
    accepted(4, true).await;
    let applied = |pin: u64, level: &str| (pin, level.to_owned(), "applied".to_owned());
    // The audit log is written behind the command path: wait for it.
    let want = [applied(17, "high"), applied(27, "low")];
    wait_for("pins 17 and 27 driven", async || {
        desired_gpio(&d).await == want
    })
    .await;
    // Only the changed output is driven again.
    fleet.edit(|c| {
        c.gpio_outputs = [(17, Level::Low), (27, Level::Low)].into();
        c.config_version = 5;
    });
    accepted(5, true).await;
    let want = [applied(17, "high"), applied(27, "low"), applied(17, "low")];
    wait_for("pin 17 driven low, 27 left alone", async || {
        desired_gpio(&d).await == want
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        desired_gpio(&d).await,
        want,
        "an unchanged output was driven again"
    );
    // GPIO 18 drives the Pi 4's fan: a desired config that asks for it is
    // rejected with the engine's rule, and nothing is driven on that pin.
    fleet.edit(|c| {
        c.gpio_outputs.insert(18, Level::High);
        c.config_version = 6;
    });
    accepted(6, false).await;
    let why = match fleet.reported().get("config.rejection") {
        Some(FieldValue::Str(s)) => s.clone(),
        other => panic!("no rejection reason: {other:?}"),
    };
    assert!(why.starts_with("gpio.reserved_pin"), "{why}");
    assert!(
        desired_gpio(&d)
            .await
            .iter()
            .all(|(pin, _, outcome)| *pin != 18 || outcome != "applied"),
        "pin 18 was driven"
    );
    let s = d.get_json("/api/v1/state", VIEWER).await;
    assert_eq!(s["fleet"]["applied"]["config_version"], 5, "{s}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_commands_are_executed_and_unsafe_ones_refused_with_the_rule() {
    let fleet = Fleet::start().await;
    let cred = tempfile::tempdir().unwrap();
    let d = metald(&fleet, &cred).await;
    wait_for("the session", async || fleet.connected()).await;
    let full = CommandRequest::new(
        Actor::User("alice".into()),
        "test",
        Command::SetFanDuty {
            fan: "fan0".into(),
            duty: Percent::FULL,
        },
    );
    let reply = fleet
        .hub
        .send_command(&Fleet::device(), full, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reply.status, CommandStatus::Done, "{reply:?}");
    d.wait_reading("the fan at full duty", |v| fan_duty(v) == Some(100.0))
        .await;
    // GPIO 18 drives the Pi 4's fan: reserved, whoever asks.
    let reserved = CommandRequest::new(
        Actor::User("alice".into()),
        "test",
        Command::SetGpio {
            pin: 18,
            level: Level::High,
        },
    );
    let reply = fleet
        .hub
        .send_command(&Fleet::device(), reserved, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reply.status, CommandStatus::Refused, "{reply:?}");
    assert_eq!(
        reply.code.as_deref(),
        Some("gpio.reserved_pin"),
        "{reply:?}"
    );
    // Both answers are acknowledged in `reported` and the audit log.
    wait_for("the acks at the fleet", async || {
        fleet
            .reported()
            .iter()
            .filter(|(k, _)| k.starts_with("ack."))
            .count()
            >= 2
    })
    .await;
    let audit = d.get_json("/api/v1/audit", VIEWER).await;
    let n = audit["records"].as_array().map_or(0, Vec::len);
    assert!(n >= 2, "{audit}");
    d.stop().await.unwrap();
}

fn workload_state(v: &Value, name: &str) -> Option<String> {
    v["workloads"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name)
        .and_then(|w| w["state"].as_str())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fleet_local_desired_edits_switch_workloads_and_are_reported() {
    let body = format!(
        "{SIM}[[workloads]]\nname = \"cam\"\ncommand = \"sleep\"\nargs = [\"60\"]\n\
         stop_timeout = \"1s\"\n"
    );
    let d = TestDaemon::start_toml(&body).await;
    d.wait_ready().await;
    let s = d.get_json("/api/v1/state", VIEWER).await;
    assert_eq!(s["fleet"]["enabled"], false, "{s}");
    assert_eq!(s["mode"], "normal", "{s}");
    wait_for("cam running", async || {
        let w = d.get_json("/api/v1/workloads", VIEWER).await;
        workload_state(&w, "cam").as_deref() == Some("running")
    })
    .await;
    let patch = async |body: Value| {
        d.http
            .patch(d.url("/api/v1/twin/desired"))
            .bearer_auth(OPERATOR)
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    // The version first, on its own: the switch below then changes nothing but
    // the raw `workload.cam` key.
    let resp = patch(serde_json::json!({"config_version": 2})).await;
    assert_eq!(resp.status(), 200);
    let resp = patch(serde_json::json!({"workload.cam": false})).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["desired"]["workload.cam"], false, "{v}");
    wait_for("cam stopped", async || {
        let w = d.get_json("/api/v1/workloads", VIEWER).await;
        workload_state(&w, "cam").is_none()
    })
    .await;
    let twin = d.get_json("/api/v1/twin", VIEWER).await;
    assert_eq!(twin["reported"]["config"]["version"], 2, "{twin}");
    assert_eq!(twin["reported"]["config"]["accepted"], true, "{twin}");
    let history = d.get_json("/api/v1/twin/history", VIEWER).await;
    assert!(
        history["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["author"].as_str().is_some_and(|a| a.contains("operator"))),
        "{history}"
    );
    let resp = patch(serde_json::json!({"workload.cam": true, "config_version": 3})).await;
    assert_eq!(resp.status(), 200);
    wait_for("cam running again", async || {
        let w = d.get_json("/api/v1/workloads", VIEWER).await;
        workload_state(&w, "cam").as_deref() == Some("running")
    })
    .await;
    // A workload this device does not have cannot be put in force: reported.
    let resp = patch(serde_json::json!({"workload.ghost": true, "config_version": 4})).await;
    assert_eq!(resp.status(), 200);
    let twin = d.get_json("/api/v1/twin", VIEWER).await;
    assert_eq!(twin["reported"]["config"]["accepted"], false, "{twin}");
    assert_eq!(
        twin["reported"]["config"]["rejection"]["rule"], "workload.unknown",
        "{twin}"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_from_the_fleet_reboots_the_simulated_board() {
    let fleet = Fleet::start().await;
    let cred = tempfile::tempdir().unwrap();
    let d = metald(&fleet, &cred).await;
    wait_for("the session", async || fleet.connected()).await;
    let boot_of = |r: &BTreeMap<String, FieldValue>| match r.get("boot_id") {
        Some(FieldValue::Str(id)) => Some(id.clone()),
        _ => None,
    };
    wait_for("the first boot at the fleet", async || {
        boot_of(&fleet.reported()).is_some()
    })
    .await;
    let first = boot_of(&fleet.reported()).unwrap();
    let reboot = CommandRequest::new(
        Actor::User("alice".into()),
        "kernel update",
        Command::Reboot,
    );
    let reply = fleet
        .hub
        .send_command(&Fleet::device(), reboot, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reply.status, CommandStatus::Done, "{reply:?}");
    // The new boot reaches the fleet's copy of `reported`, with its time.
    wait_for("the new boot at the fleet", async || {
        boot_of(&fleet.reported()).is_some_and(|id| id != first)
    })
    .await;
    let reported = fleet.reported();
    assert!(reported.contains_key("booted_at"), "{reported:?}");
    // metald keeps running and syncing after the reboot.
    assert_eq!(mode(&d).await, "normal");
    d.stop().await.unwrap();
}
