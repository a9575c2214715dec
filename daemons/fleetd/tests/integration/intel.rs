//! Fleet intelligence end to end: devices POST telemetry through the real API;
//! fleetd's analyzer (every 300 ms here) reports a hot rack as a hot spot, flags a
//! fan whose cooling effect vanished (its tach reading normally), puts health into
//! the device list and `/metrics`, raises fleet alerts into `/alerts`, delivers
//! them to a webhook receiver, retries a failing receiver and keeps a dead letter
//! (also after a restart), and holds back deliveries while a silence lasts.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use wrale_core::Timestamp;
use wrale_sync::telemetry::{Channel, Point, encode_batch};

use crate::support::Fleet;

/// A webhook receiver on 127.0.0.1:0 answering `status` and keeping the bodies.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start(status: StatusCode) -> Receiver {
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    move |State(got): State<Arc<Mutex<Vec<Value>>>>, Json(v): Json<Value>| async move {
                        got.lock().unwrap().push(v);
                        status
                    },
                ),
            )
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }

    /// Notifications received for alert keys starting with `prefix`.
    fn about(&self, prefix: &str) -> Vec<Value> {
        self.bodies()
            .into_iter()
            .filter(|b| {
                b["notification"]["alert"]["key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with(prefix))
            })
            .collect()
    }
}

fn now_ms() -> i64 {
    Timestamp::from_system(std::time::SystemTime::now()).as_millis()
}

/// `n` points every 10 s ending now: `cpu` °C, 50 % load, 4 W, 25 °C ambient.
fn rack_points(n: i64, cpu: f64) -> Vec<Point> {
    let end = now_ms() - 1000;
    (0..n)
        .map(|i| {
            let mut p = Point::new(Timestamp::from_millis(end - (n - 1 - i) * 10_000));
            p.set(Channel::CpuTempC, cpu + 0.2 * ((i % 3) as f64 - 1.0))
                .set(Channel::CpuLoadPct, 50.0)
                .set(Channel::PowerW, 4.0)
                .set(Channel::AmbientTempC, 25.0);
            p
        })
        .collect()
}

/// 30 minutes at fan duty 30, 60 then 90 % (10 min each) with the temperature
/// not moving at all: the fan's cooling effect vanished, its tach reads normally.
fn dead_fan_points() -> Vec<Point> {
    let end = now_ms() - 1000;
    let n = 180;
    (0..n)
        .map(|i| {
            let duty = [30.0, 60.0, 90.0][(i / 60) as usize];
            let mut p = Point::new(Timestamp::from_millis(end - (n - 1 - i) * 10_000));
            p.set(Channel::CpuTempC, 65.0)
                .set(Channel::CpuLoadPct, 50.0)
                .set(Channel::PowerW, 5.0)
                .set(Channel::AmbientTempC, 25.0)
                .set(Channel::FanDutyPct, duty)
                .set(Channel::FanRpm, 5000.0 * duty / 100.0);
            p
        })
        .collect()
}

async fn send(f: &Fleet, cred: &str, id: &str, points: &[Point]) {
    let r = f
        .http
        .post(f.url(&format!("/api/v1/devices/{id}/telemetry")))
        .bearer_auth(cred)
        .header("content-type", "application/octet-stream")
        .body(encode_batch(id, points))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "telemetry of {id}: {}", r.status());
}

/// GETs `path` every 100 ms (for up to 20 s) until `done` holds; the answer.
async fn poll(f: &Fleet, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let v = f.get(path, token).await;
        if done(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting on GET {path}: {}",
        f.get(path, token).await
    );
}

/// Waits (up to 20 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn config(ok: &Receiver, bad: &Receiver) -> String {
    format!(
        r#"
[intel]
interval = "300ms"
window = "2h"

[[intel.rules]]
id = "hot_spot"
severity = "warning"
condition = {{ kind = "hot_spot", min_excess_c = 4.0 }}

[[intel.rules]]
id = "fan_failing"
severity = "critical"
condition = {{ kind = "fan", status = "failing" }}

[[intel.webhooks]]
id = "ops"
url = "{}"

[[intel.webhooks]]
id = "pager"
url = "{}"
min_severity = "critical"

[intel.retry]
max_attempts = 3
initial_backoff = "100ms"
factor = 2.0
max_backoff = "1s"
"#,
        ok.url(),
        bad.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_rack_dead_fan_health_alerts_webhooks_silences_and_dead_letters() {
    let ok = Receiver::start(StatusCode::NO_CONTENT).await;
    let bad = Receiver::start(StatusCode::INTERNAL_SERVER_ERROR).await;
    let f = Fleet::start_with(&config(&ok, &bad)).await;
    let admin = f.admin().to_owned();
    let viewer = f.user_token("vera", "viewer").await;

    // Before any telemetry: the analyzer has run on nothing.
    let fleet = f.get("/api/v1/analysis/fleet", &viewer).await;
    assert!(fleet["devices"].as_array().unwrap().is_empty(), "{fleet}");

    // A silence on hot spots, set before they exist (viewers may not set one).
    let body = json!({"rule": "hot_spot", "duration": "1h", "comment": "rack r1 maintenance"});
    let r = f
        .call(
            "POST",
            "/api/v1/silences",
            Some(&viewer),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = f
        .call(
            "POST",
            "/api/v1/silences",
            Some(&admin),
            Some("{\"duration\": \"1h\"}"),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_body"), "{}", r.body);
    let silence = f.post("/api/v1/silences", &admin, body).await;
    let silence_id = silence["id"].as_str().unwrap().to_owned();
    assert!(silence_id.starts_with("sil-"), "{silence}");

    // Three racks of three devices at the same load; r1 runs 22 °C hotter.
    let mut creds = Vec::new();
    for (rack, cpu) in [("r1", 72.0), ("r2", 50.0), ("r3", 50.0)] {
        for k in 1..=3 {
            let id = format!("{rack}-pi{k}");
            let cred = f.enroll(&id, json!({"site": "lab", "rack": rack})).await;
            creds.push((id, cred, cpu));
        }
    }
    let fan_cred = f
        .enroll("fan-1", json!({"site": "lab", "rack": "r9"}))
        .await;
    for (id, cred, cpu) in &creds {
        send(&f, cred, id, &rack_points(60, *cpu)).await;
    }
    send(&f, &fan_cred, "fan-1", &dead_fan_points()).await;

    // A pass that saw every device's telemetry.
    poll(&f, "/api/v1/analysis/fleet", &viewer, |v| {
        v["devices"].as_array().unwrap().len() == 10
    })
    .await;
    // The hot rack is the one hot spot.
    let spots = f.get("/api/v1/analysis/hotspots", &viewer).await;
    let items = spots["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{spots}");
    assert_eq!(items[0]["location"], "lab/r1", "{spots}");
    assert_eq!(
        items[0]["devices"],
        json!(["r1-pi1", "r1-pi2", "r1-pi3"]),
        "{spots}"
    );
    let excess = items[0]["excess_c"].as_f64().unwrap();
    assert!((excess - 22.0).abs() < 1.0, "{spots}");

    // The dead fan is flagged although its tach reads normally.
    let a = f.get("/api/v1/analysis/devices/fan-1", &viewer).await;
    let fan = &a["analysis"]["fan"];
    assert_eq!(fan["status"], "failing", "{a}");
    assert_eq!(fan["tach_ok"], true, "{a}");
    assert_eq!(fan["method"], "differential", "{a}");
    assert!(fan["effectiveness"].as_f64().unwrap() < 0.3, "{a}");
    let codes: Vec<&str> = a["analysis"]["health"]["factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"fan_failing"), "{a}");
    // A rack device: no fan verdict, in the hot spot.
    let r1 = f.get("/api/v1/analysis/devices/r1-pi1", &viewer).await;
    assert_eq!(r1["hot_spots"][0]["location"], "lab/r1", "{r1}");
    assert_ne!(r1["analysis"]["fan"]["status"], "failing", "{r1}");
    let r = f
        .call(
            "GET",
            "/api/v1/analysis/devices/nobody",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));

    // Health reaches the registry: the device list and its health query.
    poll(&f, "/api/v1/devices?health=critical", &viewer, |v| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            == ["fan-1"]
    })
    .await;
    let okays = f.get("/api/v1/devices?health=ok&limit=500", &viewer).await;
    assert_eq!(okays["items"].as_array().unwrap().len(), 9, "{okays}");
    let unknown = f.get("/api/v1/devices?health=unknown", &viewer).await;
    assert!(unknown["items"].as_array().unwrap().is_empty(), "{unknown}");

    // Scores per rack and for the fleet.
    let fleet = f.get("/api/v1/analysis/fleet", &viewer).await;
    let groups = fleet["groups"].as_array().unwrap();
    let rack = |name: &str| {
        groups
            .iter()
            .find(|g| g["scope"]["kind"] == "rack" && g["scope"]["rack"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no rack {name} in {fleet}"))
    };
    assert_eq!(rack("r9")["worst_device"], "fan-1");
    assert!(rack("r9")["min_score"].as_f64().unwrap() <= 75.0, "{fleet}");
    assert_eq!(rack("r2")["min_score"], 100.0, "{fleet}");
    assert!(groups.iter().any(|g| g["scope"]["kind"] == "fleet"));

    // The fan alert reaches the ops webhook once; the hot spot is held back.
    until("the fan alert at the ops webhook", || {
        !ok.about("fan_failing/").is_empty()
    })
    .await;
    let got = ok.about("fan_failing/");
    assert_eq!(got[0]["webhook"], "ops");
    assert_eq!(got[0]["notification"]["kind"], "raised");
    assert_eq!(got[0]["notification"]["alert"]["severity"], "critical");
    assert_eq!(
        got[0]["notification"]["alert"]["subject"],
        json!({"kind": "device", "device": "fan-1"})
    );
    // Both fleet alerts are in the alert list; the hot spot one is silenced.
    let alerts = f.get("/api/v1/alerts?state=active", &viewer).await;
    let keys: Vec<&str> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"fleet:fan_failing/device:fan-1"), "{alerts}");
    assert!(keys.contains(&"fleet:hot_spot/location:lab/r1"), "{alerts}");
    let open = f.get("/api/v1/fleet-alerts", &viewer).await;
    let hot = open["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "hot_spot")
        .cloned()
        .unwrap();
    assert_eq!(hot["silenced_by"], json!([silence_id]), "{open}");

    // The pager answers 500: three attempts with backoff, then a dead letter.
    let dead = poll(&f, "/api/v1/dead-letters", &viewer, |v| {
        !v["items"].as_array().unwrap().is_empty()
    })
    .await;
    let d = &dead["items"][0];
    assert_eq!(d["webhook"], "pager", "{dead}");
    assert_eq!(d["status"], "dead_letter", "{dead}");
    assert_eq!(d["notification"]["alert"]["rule"], "fan_failing", "{dead}");
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{dead}");
    assert!(
        attempts
            .iter()
            .all(|a| a["outcome"] == json!({"kind": "status", "code": 500})),
        "{dead}"
    );
    assert_eq!(bad.bodies().len(), 3);
    let dead_id = d["id"].as_u64().unwrap();

    // Still silenced after several passes: nothing about the hot spot delivered.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(ok.about("hot_spot/").is_empty(), "{:?}", ok.bodies());
    assert_eq!(ok.about("fan_failing/").len(), 1, "de-duplicated");

    // Lifting the silence delivers the hot spot (still firing) at once.
    let r = f
        .call(
            "DELETE",
            &format!("/api/v1/silences/{silence_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    until("the hot spot at the ops webhook", || {
        !ok.about("hot_spot/").is_empty()
    })
    .await;
    assert!(
        bad.about("hot_spot/").is_empty(),
        "pager takes critical only"
    );

    // Acknowledging the fan alert in the alert list acknowledges it in the book.
    let fan_rec = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "fleet:fan_failing/device:fan-1")
        .cloned()
        .unwrap();
    assert_eq!(fan_rec["raised_by"], "fleet:analyzer");
    assert_eq!(fan_rec["code"], "fan_failing");
    f.post(
        &format!("/api/v1/alerts/{}/ack", fan_rec["id"]),
        &admin,
        json!({}),
    )
    .await;
    let open = f.get("/api/v1/fleet-alerts", &viewer).await;
    let fan_open = open["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "fan_failing")
        .cloned()
        .unwrap();
    assert_eq!(fan_open["status"], "acknowledged", "{open}");

    // /metrics: per-device and per-rack scores, open alerts, delivery counters.
    let r = f
        .http
        .get(f.url("/metrics"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    let m = r.text().await.unwrap();
    assert!(
        m.contains("wrale_device_health_score{device=\"fan-1\"} "),
        "{m}"
    );
    assert!(
        m.contains("wrale_device_health_score{device=\"r2-pi1\"} 100\n"),
        "{m}"
    );
    assert!(
        m.contains("wrale_fleet_health_score{scope=\"rack\",site=\"lab\",rack=\"r2\"} 100\n"),
        "{m}"
    );
    assert!(
        m.contains("wrale_fleet_alerts_active{severity=\"critical\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("wrale_fleet_alerts_active{severity=\"warning\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("wrale_webhook_deliveries_total{outcome=\"failed\"} 3\n"),
        "{m}"
    );
    assert!(m.contains("wrale_webhook_dead_letters 1\n"), "{m}");
    assert!(m.contains("wrale_fleet_hot_spots 1\n"), "{m}");

    // Every change is audited.
    let audit = f.get("/api/v1/audit?action=silence.", &viewer).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["silence.delete", "silence.create"], "{audit}");

    // The dead letter is in intel.db: it survives a restart, then an operator
    // removes it (audited).
    let f = f.restart().await;
    let dead = f.get("/api/v1/dead-letters", &viewer).await;
    assert_eq!(dead["items"][0]["id"].as_u64(), Some(dead_id), "{dead}");
    let r = f
        .call(
            "DELETE",
            &format!("/api/v1/dead-letters/{dead_id}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = f
        .call(
            "DELETE",
            &format!("/api/v1/dead-letters/{dead_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let dead = f.get("/api/v1/dead-letters", &viewer).await;
    assert!(dead["items"].as_array().unwrap().is_empty(), "{dead}");
    let audit = f
        .get("/api/v1/audit?action=dead_letter.delete", &viewer)
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_intel_config_is_refused_with_the_key() {
    for (body, key) in [
        ("[intel]\ninterval = \"1ms\"\n", "intel.interval"),
        (
            "[[intel.webhooks]]\nurl = \"ftp://x\"\n",
            "intel.webhooks[0].url",
        ),
        (
            "[[intel.rules]]\nid = \"Bad Id\"\nseverity = \"warning\"\ncondition = { kind = \"hot_spot\", min_excess_c = 1.0 }\n",
            "intel.rules[0].id",
        ),
    ] {
        let e = fleetd::Config::from_toml_str(&format!("{body}\n[data]\ndir = \"/tmp/x\"\n"))
            .unwrap_err();
        assert_eq!(e.key(), Some(key), "{e}");
    }
}

fn hook_config(ok: &Receiver, rules: &str) -> String {
    format!(
        "[intel]\ninterval = \"200ms\"\n\n{rules}\n[[intel.webhooks]]\nid = \"ops\"\nurl = \"{}\"\n",
        ok.url()
    )
}

fn kinds(r: &Receiver, prefix: &str) -> Vec<String> {
    r.about(prefix)
        .iter()
        .map(|b| b["notification"]["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Device alerts (here raised by an operator about devices; twins' alerts take the
/// same path) join the alert book: delivered, counted for a rack storm, and
/// clearing one in the alert list resolves it in the book.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_alerts_join_the_book_and_make_a_rack_storm() {
    let ok = Receiver::start(StatusCode::OK).await;
    let rules = r#"
[[intel.rules]]
id = "device"
severity = "warning"
condition = { kind = "device_alert", min_severity = "warning" }

[[intel.rules]]
id = "storm"
severity = "critical"
condition = { kind = "rack_storm", min_devices = 2, min_fraction = 0.5 }
"#;
    let f = Fleet::start_with(&hook_config(&ok, rules)).await;
    let admin = f.admin().to_owned();
    for id in ["a1", "a2", "a3"] {
        f.enroll(id, json!({"site": "lab", "rack": "r1"})).await;
    }
    let mut ids = Vec::new();
    for d in ["a1", "a2"] {
        let rec = f
            .post(
                "/api/v1/alerts",
                &admin,
                json!({"device": d, "code": "thermal_warning", "severity": "warning", "message": format!("{d} hot")}),
            )
            .await;
        ids.push(rec["id"].as_i64().unwrap());
    }
    until("the rack storm at the webhook", || {
        !ok.about("storm/rack:lab/r1").is_empty()
    })
    .await;
    let storm = &ok.about("storm/rack:lab/r1")[0]["notification"]["alert"];
    assert_eq!(storm["severity"], "critical");
    assert!(
        storm["message"]
            .as_str()
            .unwrap()
            .starts_with("2 of 3 devices"),
        "{storm}"
    );
    until("both device alerts at the webhook", || {
        ok.about("device:thermal_warning/").len() == 2
    })
    .await;
    // The storm is in the alert list once; the device alerts are not doubled.
    let alerts = f.get("/api/v1/alerts?state=active", &admin).await;
    let keys: Vec<&str> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "{alerts}");
    assert!(keys.contains(&"fleet:storm/rack:lab/r1"), "{alerts}");
    assert!(
        !keys.iter().any(|k| k.starts_with("fleet:device")),
        "{alerts}"
    );

    // Clearing a1's alert in the list resolves it in the book (delivered), and
    // the storm (1 of 3 left) resolves at the next pass.
    f.post(
        &format!("/api/v1/alerts/{}/clear", ids[0]),
        &admin,
        json!({}),
    )
    .await;
    until("the storm resolved", || {
        kinds(&ok, "storm/rack:lab/r1") == ["raised", "resolved"]
    })
    .await;
    assert_eq!(
        kinds(&ok, "device:thermal_warning/device:a1"),
        ["raised", "resolved"]
    );
    assert_eq!(kinds(&ok, "device:thermal_warning/device:a2"), ["raised"]);
    let alerts = f.get("/api/v1/alerts?state=active", &admin).await;
    let keys: Vec<&str> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a2/thermal_warning"], "{alerts}");
}

/// A device not heard of for longer than the rule's time is offline; fresh
/// telemetry resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_devices_alert_and_resolve_when_heard_of() {
    let ok = Receiver::start(StatusCode::ACCEPTED).await;
    let rules = r#"
[[intel.rules]]
id = "offline"
severity = "warning"
condition = { kind = "offline", after = "3s" }
"#;
    let f = Fleet::start_with(&hook_config(&ok, rules)).await;
    let cred = f.enroll("quiet-1", json!({})).await;
    until("quiet-1 offline", || {
        !ok.about("offline/device:quiet-1").is_empty()
    })
    .await;
    let n = &ok.about("offline/device:quiet-1")[0]["notification"];
    assert_eq!(n["kind"], "raised");
    assert!(
        n["alert"]["message"]
            .as_str()
            .unwrap()
            .starts_with("offline since "),
        "{n}"
    );
    // Points sent continuously keep it online; the alert resolves.
    let mut resolved = false;
    for _ in 0..100 {
        send(&f, &cred, "quiet-1", &rack_points(1, 40.0)).await;
        if kinds(&ok, "offline/device:quiet-1") == ["raised", "resolved"] {
            resolved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resolved, "{:?}", ok.bodies());
}

/// What a [`Gated`] receiver's handler shares with the test.
type GatedState = (Arc<Mutex<Vec<Value>>>, Arc<tokio::sync::Semaphore>);

/// A webhook receiver that records each request when it arrives and answers
/// only once the test opens its gate (a receiver that hangs).
struct Gated {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Value>>>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Gated {
    async fn start() -> Gated {
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    move |State((got, gate)): State<GatedState>, Json(v): Json<Value>| async move {
                        got.lock().unwrap().push(v);
                        gate.acquire().await.unwrap().forget();
                        StatusCode::OK
                    },
                ),
            )
            .with_state((got.clone(), gate.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Gated { addr, got, gate }
    }

    fn keys(&self) -> Vec<String> {
        keys_of(&self.got.lock().unwrap())
    }
}

fn keys_of(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| {
            b["notification"]["alert"]["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// One receiver hangs: the others get their notifications meanwhile (each
/// receiver in order, one request at a time), a failing one retries with
/// jittered backoff into dead letters, and the hanging one gets its
/// notifications in order once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_hold_up_the_others() {
    let slow = Gated::start().await;
    let fast = Receiver::start(StatusCode::OK).await;
    let bad = Receiver::start(StatusCode::INTERNAL_SERVER_ERROR).await;
    let body = format!(
        r#"
[intel]
interval = "200ms"
webhook_timeout = "120s"
webhook_concurrency = 4

[[intel.rules]]
id = "device"
severity = "warning"
condition = {{ kind = "device_alert", min_severity = "warning" }}

[[intel.webhooks]]
id = "slow"
url = "http://{}/hook"

[[intel.webhooks]]
id = "fast"
url = "{}"

[[intel.webhooks]]
id = "bad"
url = "{}"

[intel.retry]
max_attempts = 3
initial_backoff = "200ms"
factor = 2.0
max_backoff = "1s"
"#,
        slow.addr,
        fast.url(),
        bad.url()
    );
    let f = Fleet::start_with(&body).await;
    let admin = f.admin().to_owned();
    for d in ["a1", "a2"] {
        f.enroll(d, json!({"site": "lab", "rack": "r1"})).await;
        f.post(
            "/api/v1/alerts",
            &admin,
            json!({"device": d, "code": "thermal_warning", "severity": "warning", "message": format!("{d} hot")}),
        )
        .await;
        // One analyzer pass apart, so the two notifications have an order.
        until(&format!("{d}'s alert at the fast receiver"), || {
            fast.about(&format!("device:thermal_warning/device:{d}"))
                .len()
                == 1
        })
        .await;
    }
    // The fast receiver got both while the slow one still holds its first
    // request: the second one to it waits behind it (order per receiver).
    until("the slow receiver to get its first request", || {
        !slow.keys().is_empty()
    })
    .await;
    let fast_keys = keys_of(&fast.bodies());
    assert_eq!(fast_keys.len(), 2, "{fast_keys:?}");
    assert_eq!(slow.keys(), fast_keys[..1]);

    // The failing receiver's retries run meanwhile and end in dead letters.
    let dead = poll(&f, "/api/v1/dead-letters", &admin, |v| {
        v["items"].as_array().unwrap().len() == 2
    })
    .await;
    assert_eq!(
        slow.keys(),
        fast_keys[..1],
        "the slow receiver is still held"
    );
    for d in dead["items"].as_array().unwrap() {
        assert_eq!(d["webhook"], "bad", "{dead}");
        let at: Vec<Timestamp> = d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                assert_eq!(
                    a["outcome"],
                    json!({"kind": "status", "code": 500}),
                    "{dead}"
                );
                Timestamp::parse_rfc3339(a["at"].as_str().unwrap()).unwrap()
            })
            .collect();
        assert_eq!(at.len(), 3, "{dead}");
        // Jittered backoff: at least half of 200 ms, then of 400 ms.
        assert!(
            at[1].saturating_since(at[0]) >= Duration::from_millis(100),
            "{dead}"
        );
        assert!(
            at[2].saturating_since(at[1]) >= Duration::from_millis(200),
            "{dead}"
        );
    }
    let bad_keys = keys_of(&bad.bodies());
    assert_eq!(bad_keys.len(), 6, "{bad_keys:?}");
    // Its own order too: every attempt at the first before any at the second.
    assert!(
        bad_keys[..3].iter().all(|k| *k == fast_keys[0]),
        "{bad_keys:?}"
    );
    assert!(
        bad_keys[3..].iter().all(|k| *k == fast_keys[1]),
        "{bad_keys:?}"
    );

    // The slow receiver answers: it gets the second notification, in order.
    slow.gate.add_permits(10);
    until("the second notification at the slow receiver", || {
        slow.keys().len() == 2
    })
    .await;
    assert_eq!(slow.keys(), fast_keys);
    let m = f.call("GET", "/metrics", Some(&admin), None).await;
    let text = m.body.as_str().unwrap();
    assert!(text.contains("wrale_webhook_dead_letters 2\n"), "{text}");
}
