//! Alerts that fleetd's analyzer raises and clears by itself are audited, like
//! an operator's: `alert.raise` / `alert.clear` with the `system` actor.

use std::time::Duration;

use serde_json::{Value, json};
use wrale_core::Timestamp;
use wrale_sync::telemetry::{Channel, Point, encode_batch};

use crate::support::Fleet;

/// One telemetry point a second ago: the device is heard of.
async fn heard_of(f: &Fleet, cred: &str, id: &str) {
    let at = Timestamp::from_system(std::time::SystemTime::now()).as_millis() - 1000;
    let mut p = Point::new(Timestamp::from_millis(at));
    p.set(Channel::CpuTempC, 45.0);
    let r = f
        .http
        .post(f.url(&format!("/api/v1/devices/{id}/telemetry")))
        .bearer_auth(cred)
        .header("content-type", "application/octet-stream")
        .body(encode_batch(id, &[p]))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "telemetry of {id}: {}", r.status());
}

/// The system's audit entries for `action` (newest first).
async fn system_entries(f: &Fleet, action: &str) -> Vec<Value> {
    f.get(
        &format!("/api/v1/audit?actor=system&action={action}"),
        f.admin(),
    )
    .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analyzers_own_raise_and_clear_are_audited_with_the_system_actor() {
    let f = Fleet::start_with(
        "[intel]\ninterval = \"200ms\"\n\n[[intel.rules]]\nid = \"offline\"\n\
         severity = \"warning\"\ncondition = { kind = \"offline\", after = \"2s\" }\n",
    )
    .await;
    let cred = f.enroll("quiet-1", json!({})).await;
    let key = "fleet:offline/device:quiet-1";

    // Never heard of for 2 s: the rule fires, the alert is raised and audited.
    let mut raised = Vec::new();
    for _ in 0..200 {
        raised = system_entries(&f, "alert.raise").await;
        if !raised.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(raised.len(), 1, "{raised:?}");
    let r = &raised[0];
    assert_eq!(r["actor"], "system", "{r}");
    assert_eq!(r["verdict"], "allowed", "{r}");
    assert_eq!(r["result"]["key"], key, "{r}");
    assert_eq!(r["result"]["code"], "offline", "{r}");
    assert_eq!(r["result"]["severity"], "warning", "{r}");
    assert_eq!(r["result"]["by"], "fleet:analyzer", "{r}");
    assert_eq!(r["result"]["reason"], "rule fired", "{r}");
    let target = r["target"].as_str().unwrap().to_owned();
    // The target is the record in the alert list.
    let alerts = f.get("/api/v1/alerts?state=active", f.admin()).await;
    let rec = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {alerts}"))
        .clone();
    assert_eq!(target, format!("alert:{}", rec["id"]), "{rec}");
    assert!(system_entries(&f, "alert.clear").await.is_empty());

    // Heard of again: the alert resolves, the record is cleared and audited.
    let mut cleared = Vec::new();
    for _ in 0..200 {
        heard_of(&f, &cred, "quiet-1").await;
        cleared = system_entries(&f, "alert.clear").await;
        if !cleared.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    let c = &cleared[0];
    assert_eq!(c["actor"], "system", "{c}");
    assert_eq!(c["target"], target.as_str(), "{c}");
    assert_eq!(c["verdict"], "allowed", "{c}");
    assert_eq!(c["result"]["state"], "cleared", "{c}");
    assert_eq!(c["result"]["reason"], "resolved", "{c}");
    assert_eq!(c["result"]["by"], "fleet:analyzer", "{c}");
    // Both also in the unfiltered log, the clear after the raise.
    let all = f.get("/api/v1/audit?action=alert.", f.admin()).await;
    let seqs: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == target.as_str())
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 2, "{all}");
    assert!(seqs[0] > seqs[1], "newest first: {seqs:?}");
}

/// The audit entries of `actor` for `action` (newest first).
async fn entries_of(f: &Fleet, actor: &str, action: &str) -> Vec<Value> {
    f.get(
        &format!("/api/v1/audit?actor={actor}&action={action}"),
        f.admin(),
    )
    .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Alerts a device reports through its twin join the alert list; fleetd's raise
/// and clear of those records are audited with the device as actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_a_device_reports_in_its_twin_are_audited_with_the_device_actor() {
    use tokio_util::sync::CancellationToken;
    use wrale_core::model::{DeviceInfo, Location};
    use wrale_core::{BoardModel, BoardProfile, DeviceId};
    use wrale_sync::{
        Agent, AgentConfig, Author, MemoryStore, PolicyValidator, ReportedUpdate, Twin, WsConnector,
    };

    let f = Fleet::start_with("").await;
    let cred = f.enroll("hot-1", json!({})).await;
    let id = DeviceId::new("hot-1").unwrap();
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
    let (agent, handle) = Agent::new(
        twin,
        Box::new(MemoryStore::new()),
        Box::new(
            WsConnector::new(f.ws_url("/api/v1/devices/hot-1/sync")).with_token(cred.as_str()),
        ),
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
    let _stop = cancel.drop_guard();

    let report = |alerts: &[(&str, &str)]| {
        let t = Timestamp::from_system(std::time::SystemTime::now());
        let u = ReportedUpdate {
            alerts: Some(
                alerts
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ReportedUpdate::default()
        };
        handle.edit(|twin| twin.report(&u, t)).unwrap();
    };

    report(&[("thermal_warning", "cpu 81.0 °C")]);
    let mut raised = Vec::new();
    for _ in 0..300 {
        raised = entries_of(&f, "device:hot-1", "alert.raise").await;
        if !raised.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(raised.len(), 1, "{raised:?}");
    let r = &raised[0];
    assert_eq!(r["verdict"], "allowed", "{r}");
    assert_eq!(r["result"]["code"], "thermal_warning", "{r}");
    assert_eq!(r["result"]["key"], "hot-1/twin:thermal_warning", "{r}");
    let target = r["target"].as_str().unwrap().to_owned();
    assert!(
        entries_of(&f, "device:hot-1", "alert.clear")
            .await
            .is_empty()
    );

    // The device no longer reports it: the record is cleared, and audited.
    report(&[]);
    let mut cleared = Vec::new();
    for _ in 0..300 {
        cleared = entries_of(&f, "device:hot-1", "alert.clear").await;
        if !cleared.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    let c = &cleared[0];
    assert_eq!(c["target"], target.as_str(), "{c}");
    assert_eq!(c["result"]["state"], "cleared", "{c}");
    // Reporting the same set again raises nothing new.
    report(&[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(entries_of(&f, "device:hot-1", "alert.raise").await.len(), 1);
}
