//! Scheduler, optimizer and rollouts end to end: a real fleetd on 127.0.0.1:0,
//! devices enrolled with enrollment tokens, telemetry POSTed with their own
//! credentials, and (for rollouts) the real `wrale_sync::Agent` syncing each
//! device's twin and reporting whether it applied the desired config.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wrale_core::model::{DeviceInfo, Location};
use wrale_core::{BoardModel, BoardProfile, DeviceId, Timestamp};
use wrale_sync::telemetry::{Channel, Point, encode_batch};
use wrale_sync::{
    Agent, AgentConfig, AgentHandle, Author, MemoryStore, PolicyValidator, ReportedUpdate, Section,
    Twin, WsConnector,
};

use crate::support::Fleet;

const CONFIG: &str = r#"
[orchestrate]
scheduler_interval = "200ms"
rollout_tick = "100ms"

[intel]
interval = "200ms"
"#;

/// The real edge agent of one device (stops when dropped).
struct Device {
    handle: AgentHandle,
    cancel: CancellationToken,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn agent(f: &Fleet, id: &str, credential: &str) -> Device {
    let id = DeviceId::new(id).unwrap();
    let info = DeviceInfo {
        id: id.clone(),
        model: BoardModel::Pi4B,
        serial: None,
        firmware_version: None,
        agent_version: Some("test".into()),
        labels: Default::default(),
        location: Location::default(),
        group: None,
    };
    let twin = Twin::new(
        &info,
        Author::device(&id),
        Timestamp::from_secs(1_800_000_000),
    )
    .unwrap();
    agent_with_twin(f, twin, credential)
}

/// The same device's agent on another fleetd address (after a restart), with the
/// twin it had.
fn reconnect(f: &Fleet, d: &Device, id: &str, credential: &str) -> Device {
    let bytes = d.handle.with_twin(|t| t.save());
    let twin = Twin::load(&bytes, Author::device(&DeviceId::new(id).unwrap())).unwrap();
    agent_with_twin(f, twin, credential)
}

fn agent_with_twin(f: &Fleet, twin: Twin, credential: &str) -> Device {
    let id = twin.device().clone();
    let url = f.ws_url(&format!("/api/v1/devices/{id}/sync"));
    let (agent, handle) = Agent::new(
        twin,
        Box::new(MemoryStore::new()),
        Box::new(WsConnector::new(url).with_token(credential)),
        Box::new(PolicyValidator::new(&BoardProfile::builtin(
            BoardModel::Pi4B,
        ))),
        AgentConfig {
            resync_after: Duration::from_secs(1),
            ..AgentConfig::default()
        },
    );
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move { agent.run(c).await });
    Device { handle, cancel }
}

async fn eventually<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> i64 {
    Timestamp::from_system(std::time::SystemTime::now()).as_millis()
}

/// `n` points every 10 s ending at `end_ms`: CPU at `cpu` °C, ambient 25 °C,
/// 4 W, 30 % load, throttle word `bits`.
fn points(end_ms: i64, n: i64, cpu: f64, bits: u32) -> Vec<Point> {
    points_in(end_ms, n, cpu, 25.0, bits)
}

/// [`points`] with another ambient temperature.
fn points_in(end_ms: i64, n: i64, cpu: f64, ambient: f64, bits: u32) -> Vec<Point> {
    (0..n)
        .map(|i| {
            let mut p = Point::new(Timestamp::from_millis(end_ms - (n - 1 - i) * 10_000));
            p.set(Channel::CpuTempC, cpu)
                .set(Channel::AmbientTempC, ambient)
                .set(Channel::PowerW, 4.0)
                .set(Channel::CpuLoadPct, 30.0)
                .set(Channel::ThrottleBits, f64::from(bits));
            p
        })
        .collect()
}

/// Waits until fleetd's analyzer has a pass over `n` devices with telemetry.
async fn wait_analysed(f: &Fleet, n: usize) {
    eventually("the analyzer to see every device", 15, async || {
        let v = f.get("/api/v1/analysis/fleet", f.admin()).await;
        (v["devices"].as_array().unwrap().len() == n).then_some(())
    })
    .await;
}

async fn send(f: &Fleet, id: &str, cred: &str, pts: &[Point]) {
    let r = f
        .http
        .post(f.url(&format!("/api/v1/devices/{id}/telemetry")))
        .bearer_auth(cred)
        .header("content-type", "application/octet-stream")
        .body(encode_batch(id, pts))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "telemetry of {id}");
}

async fn desired(f: &Fleet, id: &str) -> Value {
    f.get(&format!("/api/v1/devices/{id}/twin"), f.admin())
        .await["desired"]
        .clone()
}

/// The twin history of `id` without the device's own reports, newest first.
async fn history(f: &Fleet, id: &str) -> Vec<Value> {
    f.get(&format!("/api/v1/devices/{id}/history"), f.admin())
        .await["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| !v["author"].as_str().unwrap().starts_with("device:"))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_goes_to_the_device_with_headroom_and_moves_off_when_it_heats() {
    let f = Fleet::start_with(CONFIG).await;
    let viewer = f.user_token("vera", "viewer").await;
    let end = now_ms() - 200_000;
    let mut creds = Vec::new();
    // pi-c sits in a 45 °C corner: too hot for the workload, and its fan can run
    // a quieter profile.
    for (id, rack, cpu, ambient) in [
        ("pi-a", "r1", 40.0, 25.0),
        ("pi-b", "r2", 50.0, 25.0),
        ("pi-c", "r3", 70.0, 45.0),
    ] {
        let cred = f.enroll(id, json!({"site": "lab", "rack": rack})).await;
        send(&f, id, &cred, &points_in(end, 20, cpu, ambient, 0)).await;
        creds.push(cred);
    }
    wait_analysed(&f, 3).await;
    // A viewer may not declare workloads.
    let body = json!({"name": "cam", "command": "cam.service", "cpu_pct": 20.0, "power_w": 2.0});
    let r = f
        .call(
            "POST",
            "/api/v1/workloads",
            Some(&viewer),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.body);
    let bad = json!({"name": "Cam!", "cpu_pct": 20.0, "power_w": 2.0});
    let r = f
        .call(
            "POST",
            "/api/v1/workloads",
            Some(f.admin()),
            Some(&bad.to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_body"), "{}", r.body);
    assert_eq!(r.body["error"]["field"], "name");

    let created = f.post("/api/v1/workloads", f.admin(), body.clone()).await;
    let placed = &created["placements"][0];
    assert_eq!(placed["device"], "pi-a", "{created}");
    let d = &placed["decision"];
    assert_eq!(d["action"]["kind"], "place", "{created}");
    assert_eq!(d["action"]["device"], "pi-a", "{created}");
    let r = f
        .call(
            "POST",
            "/api/v1/workloads",
            Some(f.admin()),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));

    // The explanation: the chosen device first, pi-c rejected for headroom.
    let pl = f.get("/api/v1/placements", &viewer).await;
    let item = &pl["items"][0];
    assert_eq!(item["device"], "pi-a", "{pl}");
    let cands = item["decision"]["candidates"].as_array().unwrap();
    assert_eq!(cands[0]["device"], "pi-a");
    let c = cands.iter().find(|c| c["device"] == "pi-c").unwrap();
    assert_eq!(c["feasible"], false, "{c}");
    assert_eq!(c["reasons"][0]["code"], "headroom", "{c}");
    assert!(item["decision"]["reason"].as_str().unwrap().len() > 10);

    // Written into pi-a's desired state by the scheduler, with its author.
    assert_eq!(desired(&f, "pi-a").await["workload.cam"], true);
    assert!(desired(&f, "pi-b").await.get("workload.cam").is_none());
    assert_eq!(
        history(&f, "pi-a").await[0]["author"],
        "fleet:fleetd/scheduler"
    );

    // pi-a heats up (its room did): 30 newer points at 78 °C at the same power.
    send(
        &f,
        "pi-a",
        &creds[0],
        &points(now_ms() - 1_000, 30, 78.0, 0),
    )
    .await;
    eventually("cam to move to pi-b", 20, async || {
        let pl = f.get("/api/v1/placements", &viewer).await;
        (pl["items"][0]["device"] == "pi-b").then_some(())
    })
    .await;
    let pl = f.get("/api/v1/placements", &viewer).await;
    let dec = &pl["items"][0]["decision"];
    assert_eq!(dec["action"]["kind"], "move", "{dec}");
    assert_eq!(dec["action"]["from"], "pi-a");
    assert!(
        dec["reason"].as_str().unwrap().contains("pi-a")
            || dec["reason"].as_str().unwrap().contains("°C"),
        "{dec}"
    );
    assert_eq!(desired(&f, "pi-a").await["workload.cam"], false);
    assert_eq!(desired(&f, "pi-b").await["workload.cam"], true);

    // pi-b's twin rolled back to before it got the workload drifts from the
    // placements: the next pass writes the switch again.
    let h = history(&f, "pi-b").await;
    assert_eq!(h[0]["author"], "fleet:fleetd/scheduler", "{h:?}");
    f.post(
        "/api/v1/devices/pi-b/rollback",
        f.admin(),
        json!({ "version": h[1]["version"] }),
    )
    .await;
    eventually("the scheduler to repair pi-b's switch", 10, async || {
        let h = history(&f, "pi-b").await;
        (h[0]["author"] == "fleet:fleetd/scheduler" && h[1]["author"] == "user:admin").then_some(())
    })
    .await;
    assert_eq!(desired(&f, "pi-b").await["workload.cam"], true);

    let metrics = f.call("GET", "/metrics", Some(&viewer), None).await;
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains("wrale_workloads 1\n"), "{text}");
    assert!(
        text.contains("wrale_workload_replicas{state=\"placed\"} 1\n"),
        "{text}"
    );

    // Hysteresis: further passes change nothing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let again = f.get("/api/v1/placements", &viewer).await;
    assert_eq!(again["items"][0]["device"], "pi-b");
    assert_eq!(again["items"][0]["since"], pl["items"][0]["since"]);

    // Audited.
    let audit = f.get("/api/v1/audit?action=workload.move", f.admin()).await;
    assert_eq!(audit["items"][0]["actor"], "fleetd/scheduler", "{audit}");

    // Recommendations are listed (each with an id and expected effect).
    let recs = f.get("/api/v1/recommendations", &viewer).await;
    assert!(recs["expected"]["peak_temp_before_c"].is_number(), "{recs}");
    let r = f
        .call(
            "POST",
            "/api/v1/recommendations/nope/accept",
            Some(f.admin()),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));

    // Accepting a fan-profile recommendation writes it into the device's desired
    // state as the optimizer; the plan then no longer has it.
    let fan = recs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "fan_profile")
        .cloned()
        .unwrap_or_else(|| panic!("no fan recommendation: {recs}"));
    let (id, dev, to) = (
        fan["id"].as_str().unwrap(),
        fan["detail"]["device"].as_str().unwrap(),
        fan["detail"]["to"].clone(),
    );
    let r = f
        .call(
            "POST",
            &format!("/api/v1/recommendations/{id}/accept"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let acc = f
        .post(
            &format!("/api/v1/recommendations/{id}/accept"),
            f.admin(),
            json!({}),
        )
        .await;
    assert_eq!(acc["accepted"]["id"], id);
    assert_eq!(desired(&f, dev).await["fan_profile"], to);
    assert_eq!(
        history(&f, dev).await[0]["author"],
        "fleet:fleetd/optimizer"
    );
    let recs = f.get("/api/v1/recommendations", &viewer).await;
    assert!(
        recs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"] != id),
        "{recs}"
    );

    // Deleting the workload stops it.
    let r = f
        .call("DELETE", "/api/v1/workloads/cam", Some(f.admin()), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(desired(&f, "pi-b").await["workload.cam"], false);
    assert_eq!(
        f.get("/api/v1/placements", &viewer).await["items"],
        json!([])
    );
}

/// Enrolls `ids` (one rack each) with steady telemetry and live agents.
async fn fleet_with_agents(f: &Fleet, ids: &[&str]) -> Vec<(String, Device)> {
    let end = now_ms() - 1_000;
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let cred = f
            .enroll(id, json!({"site": "lab", "rack": format!("r{i}")}))
            .await;
        send(f, id, &cred, &points(end, 20, 50.0, 0)).await;
        let dev = agent(f, id, &cred);
        out.push((cred, dev));
    }
    wait_analysed(f, ids.len()).await;
    for id in ids {
        eventually(&format!("{id} online"), 15, async || {
            (f.get(&format!("/api/v1/devices/{id}"), f.admin()).await["status"] == "online")
                .then_some(())
        })
        .await;
    }
    out
}

fn agent_desired(d: &Device, key: &str) -> Option<Value> {
    d.handle.with_twin(|t| {
        t.fields(Section::Desired)
            .unwrap()
            .get(key)
            .map(|v| serde_json::to_value(v).unwrap())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_makes_the_canary_throttle_stops_there_and_rolls_back() {
    let f = Fleet::start_with(CONFIG).await;
    let ids = ["pi-1", "pi-2", "pi-3", "pi-4"];
    let devs = fleet_with_agents(&f, &ids).await;
    let viewer = f.user_token("vera", "viewer").await;
    let body = json!({
        "id": "quiet-fans",
        "change": {"fan_profile": "quiet"},
        "devices": ids,
        "canary": {"kind": "devices", "devices": ["pi-1"]},
        "waves": {"kind": "by_size", "size": 3},
        "soak": "3s",
        "gates": {"apply_timeout": "20s"},
        "auto_rollback": true,
    });
    let r = f
        .call(
            "POST",
            "/api/v1/rollouts",
            Some(&viewer),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let ro = f.post("/api/v1/rollouts", f.admin(), body).await;
    assert_eq!(ro["status"], "running", "{ro}");
    assert_eq!(ro["waves"][0]["status"], "soaking", "{ro}");
    assert_eq!(ro["progress"]["devices_changed"], 1);

    // The canary applies the quiet profile, then starts throttling.
    eventually("pi-1 to get the change", 15, async || {
        (agent_desired(&devs[0].1, "fan_profile") == Some(json!("quiet"))).then_some(())
    })
    .await;
    let t = now_ms();
    let mut pts = points(t - 1_000, 1, 79.0, 0);
    pts.extend(points(t, 1, 81.0, 0x4));
    send(&f, "pi-1", &devs[0].0, &pts).await;

    let done = eventually("the rollout to roll back", 20, async || {
        let v = f.get("/api/v1/rollouts/quiet-fans", &viewer).await;
        (v["status"] == "rolled_back").then_some(v)
    })
    .await;
    assert_eq!(done["current_wave"], 0, "{done}");
    assert_eq!(done["waves"][0]["status"], "failed");
    assert_eq!(done["waves"][1]["status"], "pending");
    assert_eq!(done["progress"]["devices_changed"], 1);
    let gates: Vec<&str> = done["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["gate"].as_str().unwrap())
        .collect();
    assert!(gates.contains(&"throttled"), "{done}");
    assert_eq!(done["rolled_back"], json!(["pi-1"]));

    // The twin's history shows the rollback as its own change; the profile is gone.
    let h = history(&f, "pi-1").await;
    assert_eq!(
        h[0]["author"], "fleet:fleetd/rollout/quiet-fans/rollback",
        "{h:?}"
    );
    assert!(
        h.iter()
            .any(|v| v["author"] == "fleet:fleetd/rollout/quiet-fans")
    );
    assert!(desired(&f, "pi-1").await.get("fan_profile").is_none());
    for id in &ids[1..] {
        assert!(desired(&f, id).await.get("fan_profile").is_none(), "{id}");
    }
    let audit = f
        .get(
            "/api/v1/audit?target=rollout:quiet-fans&action=rollout.paused",
            f.admin(),
        )
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    let metrics = f.call("GET", "/metrics", Some(&viewer), None).await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains("wrale_rollouts{status=\"rolled_back\"} 1\n"),
        "{text}"
    );
    // Nothing left to do with it.
    let r = f
        .call(
            "POST",
            "/api/v1/rollouts/quiet-fans/resume",
            Some(f.admin()),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harmless_rollout_completes_every_wave() {
    let f = Fleet::start_with(CONFIG).await;
    let ids = ["pi-1", "pi-2", "pi-3", "pi-4"];
    let devs = fleet_with_agents(&f, &ids).await;
    let ro = f
        .post(
            "/api/v1/rollouts",
            f.admin(),
            json!({
                "id": "warn-60",
                "change": {"warn_c": 60},
                "devices": ids,
                "canary": {"kind": "percent", "percent": 25},
                "waves": {"kind": "by_size", "size": 2},
                "soak": "300ms",
                "auto_rollback": true,
            }),
        )
        .await;
    assert_eq!(ro["waves"].as_array().unwrap().len(), 3, "{ro}");
    let done = eventually("the rollout to complete", 30, async || {
        let v = f.get("/api/v1/rollouts/warn-60", f.admin()).await;
        assert_ne!(v["status"], "rolled_back", "{v}");
        (v["status"] == "completed").then_some(v)
    })
    .await;
    assert_eq!(done["progress"]["waves_passed"], 3, "{done}");
    assert_eq!(done["progress"]["devices_changed"], 4);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(desired(&f, id).await["warn_c"].as_f64(), Some(60.0), "{id}");
        let on_device = agent_desired(&devs[i].1, "warn_c").unwrap();
        assert_eq!(on_device.as_f64(), Some(60.0), "{id}");
    }
    let list = f.get("/api/v1/rollouts?status=completed", f.admin()).await;
    assert_eq!(list["items"][0]["id"], "warn-60");
    let r = f
        .call(
            "GET",
            "/api/v1/rollouts?status=sideways",
            Some(f.admin()),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_query"));
    let r = f
        .call(
            "POST",
            "/api/v1/rollouts",
            Some(f.admin()),
            Some(&json!({"change": {"config_version": 3}, "devices": ["pi-1"], "canary": {"kind": "percent", "percent": 10}}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_body"), "{}", r.body);
    let r = f
        .call(
            "POST",
            "/api/v1/rollouts",
            Some(f.admin()),
            Some(&json!({"change": {"warn_c": 50}, "devices": ["pi-1", "pi-9"], "canary": {"kind": "percent", "percent": 10}}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_body"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_state_survives_a_restart() {
    let f = Fleet::start_with(CONFIG).await;
    let end = now_ms() - 1_000;
    for (i, id) in ["pi-1", "pi-2"].iter().enumerate() {
        let cred = f
            .enroll(id, json!({"site": "lab", "rack": format!("r{i}")}))
            .await;
        send(&f, id, &cred, &points(end, 20, 50.0, 0)).await;
    }
    let ro = f
        .post(
            "/api/v1/rollouts",
            f.admin(),
            json!({
                "id": "slow",
                "change": {"fan_profile": "cool"},
                "devices": ["pi-1", "pi-2"],
                "canary": {"kind": "devices", "devices": ["pi-1"]},
                "waves": {"kind": "by_size", "size": 1},
                "soak": "1h",
            }),
        )
        .await;
    assert_eq!(ro["waves"][0]["status"], "soaking");
    let f = f.restart().await;
    let after = f.get("/api/v1/rollouts/slow", f.admin()).await;
    assert_eq!(after["status"], "running");
    assert_eq!(after["waves"], ro["waves"], "{after}");
    assert_eq!(after["change"], json!({"fan_profile": "cool"}));
    // Still driven after the restart: operations work and are kept.
    let p = f
        .post("/api/v1/rollouts/slow/pause", f.admin(), json!({}))
        .await;
    assert_eq!(p["status"], "paused");
    let f = f.restart().await;
    assert_eq!(
        f.get("/api/v1/rollouts/slow", f.admin()).await["status"],
        "paused"
    );
    let rb = f
        .post("/api/v1/rollouts/slow/rollback", f.admin(), json!({}))
        .await;
    assert_eq!(rb["status"], "rolled_back", "{rb}");
    assert_eq!(rb["rolled_back"], json!(["pi-1"]));
    let h = history(&f, "pi-1").await;
    assert_eq!(h[0]["author"], "fleet:fleetd/rollout/slow/rollback");
    assert!(desired(&f, "pi-1").await.get("fan_profile").is_none());
    assert!(desired(&f, "pi-2").await.get("fan_profile").is_none());
}

/// The device reports the boot it runs (what metald and the embedded runtime
/// write from the HAL's boot identity each sample).
fn report_boot(d: &Device, boot_id: &str) {
    let t = Timestamp::from_system(std::time::SystemTime::now());
    d.handle
        .edit(|twin| twin.report(&ReportedUpdate::default().boot(boot_id, t), t))
        .unwrap();
}

/// Waits until fleetd's copy of `id`'s twin shows `boot_id`.
async fn fleet_sees_boot(f: &Fleet, id: &str, boot_id: &str) {
    eventually(&format!("{id} to report boot {boot_id}"), 15, async || {
        let twin = f
            .get(&format!("/api/v1/devices/{id}/twin"), f.admin())
            .await;
        (twin["reported"]["boot_id"] == boot_id).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_reboots_during_its_wave_is_stopped_and_rolled_back() {
    let f = Fleet::start_with(CONFIG).await;
    let ids = ["pi-1", "pi-2", "pi-3"];
    let devs = fleet_with_agents(&f, &ids).await;
    for (id, (_, d)) in ids.iter().zip(&devs) {
        report_boot(d, &format!("{id}-boot-1"));
        fleet_sees_boot(&f, id, &format!("{id}-boot-1")).await;
    }
    let ro = f
        .post(
            "/api/v1/rollouts",
            f.admin(),
            json!({
                "id": "reboots",
                "change": {"fan_profile": "quiet"},
                "devices": ids,
                "canary": {"kind": "devices", "devices": ["pi-1"]},
                "waves": {"kind": "by_size", "size": 2},
                "soak": "30s",
                "gates": {"apply_timeout": "20s"},
                "auto_rollback": true,
            }),
        )
        .await;
    assert_eq!(ro["waves"][0]["status"], "soaking", "{ro}");
    eventually("pi-1 to get the change", 15, async || {
        (agent_desired(&devs[0].1, "fan_profile") == Some(json!("quiet"))).then_some(())
    })
    .await;
    // The canary applied the change and keeps its boot: the wave soaks on.
    report_boot(&devs[0].1, "pi-1-boot-1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = f.get("/api/v1/rollouts/reboots", f.admin()).await;
    assert_eq!(v["status"], "running", "{v}");
    // Then it reboots (a new boot id) during its soak.
    report_boot(&devs[0].1, "pi-1-boot-2");
    let done = eventually("the rollout to roll back", 20, async || {
        let v = f.get("/api/v1/rollouts/reboots", f.admin()).await;
        (v["status"] == "rolled_back").then_some(v)
    })
    .await;
    assert_eq!(done["current_wave"], 0, "{done}");
    assert_eq!(done["waves"][0]["status"], "failed", "{done}");
    assert_eq!(done["waves"][1]["status"], "pending", "{done}");
    let failures = done["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{done}");
    assert_eq!(failures[0]["device"], "pi-1");
    assert_eq!(failures[0]["gate"], "reboot");
    assert_eq!(failures[0]["detail"], "rebooted 1 time(s)");
    assert_eq!(done["rolled_back"], json!(["pi-1"]));
    let h = history(&f, "pi-1").await;
    assert_eq!(
        h[0]["author"], "fleet:fleetd/rollout/reboots/rollback",
        "{h:?}"
    );
    eventually("pi-1 to lose the change again", 15, async || {
        agent_desired(&devs[0].1, "fan_profile")
            .is_none()
            .then_some(())
    })
    .await;
    for id in &ids[1..] {
        assert!(desired(&f, id).await.get("fan_profile").is_none(), "{id}");
    }
}

/// The device reports whether its safety engine throttles (what metald and the
/// embedded runtime write each sample; each start is counted in the twin).
fn report_engine_throttling(d: &Device, on: bool) {
    let t = Timestamp::from_system(std::time::SystemTime::now());
    let u = ReportedUpdate {
        engine_throttled: Some(on),
        ..ReportedUpdate::default()
    };
    d.handle.edit(|twin| twin.report(&u, t)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_engine_throttles_is_stopped_and_rolled_back() {
    let f = Fleet::start_with(CONFIG).await;
    let ids = ["pi-1", "pi-2"];
    let devs = fleet_with_agents(&f, &ids).await;
    // pi-1 throttled once before the rollout (its count is 1 at wave start).
    report_engine_throttling(&devs[0].1, true);
    report_engine_throttling(&devs[0].1, false);
    eventually("fleetd to see pi-1's throttling count", 15, async || {
        let twin = f.get("/api/v1/devices/pi-1/twin", f.admin()).await;
        (twin["reported"]["engine_throttle_count"] == 1
            && twin["reported"]["engine_throttled"] == false)
            .then_some(())
    })
    .await;
    f.post(
        "/api/v1/rollouts",
        f.admin(),
        json!({
            "id": "engine",
            "change": {"fan_profile": "quiet"},
            "devices": ids,
            "canary": {"kind": "devices", "devices": ["pi-1"]},
            "waves": {"kind": "by_size", "size": 1},
            "soak": "30s",
            "auto_rollback": true,
        }),
    )
    .await;
    eventually("pi-1 to get the change", 15, async || {
        (agent_desired(&devs[0].1, "fan_profile") == Some(json!("quiet"))).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = f.get("/api/v1/rollouts/engine", f.admin()).await;
    assert_eq!(v["status"], "running", "{v}");
    // The quiet fans make pi-1's engine throttle its workloads: no firmware
    // flag in the telemetry, only the engine's own count in the twin.
    report_engine_throttling(&devs[0].1, true);
    let done = eventually("the rollout to roll back", 20, async || {
        let v = f.get("/api/v1/rollouts/engine", f.admin()).await;
        (v["status"] == "rolled_back").then_some(v)
    })
    .await;
    let failures = done["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{done}");
    assert_eq!(failures[0]["device"], "pi-1");
    assert_eq!(failures[0]["gate"], "throttled");
    assert_eq!(
        failures[0]["detail"],
        "the safety engine started throttling 1 time(s)"
    );
    assert_eq!(done["rolled_back"], json!(["pi-1"]));
    assert!(desired(&f, "pi-2").await.get("fan_profile").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_that_keep_their_boot_pass_the_reboot_gate() {
    let f = Fleet::start_with(CONFIG).await;
    let ids = ["pi-1", "pi-2"];
    let devs = fleet_with_agents(&f, &ids).await;
    // pi-2 rebooted before the rollout: that is not the rollout's doing.
    report_boot(&devs[1].1, "pi-2-boot-1");
    fleet_sees_boot(&f, "pi-2", "pi-2-boot-1").await;
    report_boot(&devs[1].1, "pi-2-boot-2");
    report_boot(&devs[0].1, "pi-1-boot-1");
    fleet_sees_boot(&f, "pi-2", "pi-2-boot-2").await;
    fleet_sees_boot(&f, "pi-1", "pi-1-boot-1").await;
    f.post(
        "/api/v1/rollouts",
        f.admin(),
        json!({
            "id": "same-boot",
            "change": {"warn_c": 62},
            "devices": ids,
            "canary": {"kind": "devices", "devices": ["pi-1"]},
            "waves": {"kind": "by_size", "size": 1},
            "soak": "1s",
            "auto_rollback": true,
        }),
    )
    .await;
    let done = eventually("the rollout to complete", 30, async || {
        // Both keep reporting the boot they run.
        report_boot(&devs[0].1, "pi-1-boot-1");
        report_boot(&devs[1].1, "pi-2-boot-2");
        let v = f.get("/api/v1/rollouts/same-boot", f.admin()).await;
        assert_ne!(v["status"], "rolled_back", "{v}");
        (v["status"] == "completed").then_some(v)
    })
    .await;
    assert_eq!(done["progress"]["waves_passed"], 2, "{done}");
    assert_eq!(done["failures"], json!([]), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_rollout_advances_to_its_next_wave_after_a_restart() {
    let f = Fleet::start_with(CONFIG).await;
    let ids = ["pi-1", "pi-2"];
    let mut devs = fleet_with_agents(&f, &ids).await;
    f.post(
        "/api/v1/rollouts",
        f.admin(),
        json!({
            "id": "across",
            "change": {"warn_c": 63},
            "devices": ids,
            "canary": {"kind": "devices", "devices": ["pi-1"]},
            "waves": {"kind": "by_size", "size": 1},
            "soak": "6s",
            "auto_rollback": true,
        }),
    )
    .await;
    // The canary applies the change (fleetd sees its verdict in the twin)...
    eventually("pi-1 to report the change applied", 15, async || {
        let twin = f.get("/api/v1/devices/pi-1/twin", f.admin()).await;
        let want = twin["desired"]["config_version"].clone();
        (twin["desired"]["warn_c"] == json!(63.0)
            && twin["reported"]["config.accepted"] == json!(true)
            && twin["reported"]["config.version"] == want)
            .then_some(())
    })
    .await;
    // ...and fleetd restarts in the middle of the canary's soak.
    let before = f.get("/api/v1/rollouts/across", f.admin()).await;
    assert_eq!(before["status"], "running", "{before}");
    assert_eq!(before["current_wave"], 0, "{before}");
    assert_eq!(before["waves"][0]["status"], "soaking", "{before}");
    assert!(desired(&f, "pi-2").await.get("warn_c").is_none());
    let f = f.restart().await;
    // The device of the next wave comes back to the restarted fleetd.
    let pi2 = reconnect(&f, &devs[1].1, "pi-2", &devs[1].0);
    devs.truncate(1);

    // The driver picks the rollout up: the canary wave passes when its soak
    // ends, the next wave is written, soaks, and the rollout completes.
    let done = eventually(
        "the rollout to complete after the restart",
        30,
        async || {
            let v = f.get("/api/v1/rollouts/across", f.admin()).await;
            assert_ne!(v["status"], "rolled_back", "{v}");
            (v["status"] == "completed").then_some(v)
        },
    )
    .await;
    assert_eq!(
        done["waves"][0]["soak_until"],
        before["waves"][0]["soak_until"]
    );
    assert_eq!(done["progress"]["waves_passed"], 2, "{done}");
    assert_eq!(done["progress"]["devices_changed"], 2, "{done}");
    assert_eq!(desired(&f, "pi-2").await["warn_c"].as_f64(), Some(63.0));
    assert_eq!(
        agent_desired(&pi2, "warn_c").and_then(|v| v.as_f64()),
        Some(63.0)
    );
    let passed = f
        .get(
            "/api/v1/audit?target=rollout:across&action=rollout.wave_passed",
            f.admin(),
        )
        .await;
    assert_eq!(passed["items"].as_array().unwrap().len(), 2, "{passed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_optimizer_applies_fan_profiles_itself_when_the_policy_says_so() {
    let f = Fleet::start_with(&format!(
        "{CONFIG}\n[orchestrate.optimizer]\nauto_apply = \"fan_profiles\"\n"
    ))
    .await;
    // In a 45 °C corner at idle, the balance curve runs the fan harder than needed.
    let cred = f.enroll("pi-c", json!({"site": "lab", "rack": "r3"})).await;
    send(
        &f,
        "pi-c",
        &cred,
        &points_in(now_ms() - 1_000, 20, 70.0, 45.0, 0),
    )
    .await;
    wait_analysed(&f, 1).await;
    eventually("the optimizer to apply a quieter profile", 10, async || {
        (desired(&f, "pi-c").await["fan_profile"] == "quiet").then_some(())
    })
    .await;
    assert_eq!(
        history(&f, "pi-c").await[0]["author"],
        "fleet:fleetd/optimizer"
    );
    let audit = f
        .get("/api/v1/audit?action=recommendation.accept", f.admin())
        .await;
    assert_eq!(audit["items"][0]["actor"], "fleetd/optimizer", "{audit}");
    assert_eq!(audit["items"][0]["result"]["to"], "quiet", "{audit}");
    // Applied once: the plan has nothing more for it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let audit = f
        .get("/api/v1/audit?action=recommendation.accept", f.admin())
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
}
