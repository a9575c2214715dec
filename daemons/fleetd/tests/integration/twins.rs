//! The twin hub end to end: real fleetd on 127.0.0.1:0, devices enrolled with
//! enrollment tokens and synced by the real `wrale_sync::Agent` (the edge agent
//! metald runs) over real WebSockets with their device credentials.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use wrale_core::model::{DeviceInfo, Location};
use wrale_core::{BoardModel, BoardProfile, DeviceId, Timestamp};
use wrale_sync::{
    Agent, AgentConfig, AgentHandle, Author, Envelope, FrameKind, MemoryStore, PolicyValidator,
    Section, Twin, WsConnector,
};

use crate::support::Fleet;

/// One simulated device: the real edge agent with its own twin and store.
struct Device {
    id: DeviceId,
    handle: AgentHandle,
    cancel: CancellationToken,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Enrolls `id` (token for `group`) and returns its credential.
async fn enroll(f: &Fleet, id: &str, group: Option<&str>) -> String {
    let token = f.enrollment_token(json!({"group": group})).await;
    let r = f
        .call(
            "POST",
            "/api/v1/enroll",
            None,
            Some(&json!({"token": token, "device_id": id, "model": "pi4b"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["credential"].as_str().unwrap().to_owned()
}

/// Starts the edge agent of `id` against fleetd with `credential`; commands are
/// answered `done`, or `refused` when the reason is "refuse".
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
    let url = f.ws_url(&format!("/api/v1/devices/{id}/sync"));
    let validator = PolicyValidator::new(&BoardProfile::builtin(BoardModel::Pi4B));
    let config = AgentConfig {
        resync_after: Duration::from_secs(1),
        ..AgentConfig::default()
    };
    let (agent, handle) = Agent::new(
        twin,
        Box::new(MemoryStore::new()),
        Box::new(WsConnector::new(url).with_token(credential)),
        Box::new(validator),
        config,
    );
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move { agent.run(c).await });
    if let Some(mut commands) = handle.commands() {
        tokio::spawn(async move {
            while let Some(cmd) = commands.recv().await {
                if cmd.request.reason == "refuse" {
                    cmd.refused("fan.min_duty", "duty below the floor's minimum");
                } else {
                    cmd.done(Some(json!({"applied": true})));
                }
            }
        });
    }
    Device { id, handle, cancel }
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_online(f: &Fleet, id: &str) {
    eventually(&format!("{id} online"), async || {
        (f.get(&format!("/api/v1/devices/{id}"), f.admin()).await["status"] == "online")
            .then_some(())
    })
    .await;
}

fn device_desired(d: &Device, key: &str) -> Option<Value> {
    d.handle.with_twin(|t| {
        t.fields(Section::Desired)
            .unwrap()
            .get(key)
            .map(|v| serde_json::to_value(v).unwrap())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_layers_reach_devices_unsafe_ones_are_refused_and_everything_survives_a_restart() {
    let f = Fleet::start().await;
    f.post("/api/v1/groups", f.admin(), json!({"id": "lab"}))
        .await;
    f.post(
        "/api/v1/groups",
        f.admin(),
        json!({"id": "rack1", "parent": "lab"}),
    )
    .await;
    let cred_a = enroll(&f, "pi-a", Some("rack1")).await;
    let cred_b = enroll(&f, "pi-b", None).await;
    let a = agent(&f, "pi-a", &cred_a);
    let b = agent(&f, "pi-b", &cred_b);
    wait_online(&f, "pi-a").await;
    wait_online(&f, "pi-b").await;

    // Layers of groups and devices that do not exist are 404, read or written.
    for path in ["/api/v1/config/groups/nope", "/api/v1/config/devices/nope"] {
        let r = f.call("GET", path, Some(f.admin()), None).await;
        assert_eq!(r.status, 404, "GET {path}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "not_found", "{}", r.body);
        let r = f
            .call("PUT", path, Some(f.admin()), Some(r#"{"warn_c": 65}"#))
            .await;
        assert_eq!(r.status, 404, "PUT {path}: {}", r.body);
    }
    // The group exists, with no layer yet: an empty one.
    assert_eq!(
        f.get("/api/v1/config/groups/lab", f.admin()).await["fields"],
        json!({})
    );

    // A group layer reaches the device below it (through the subgroup), not the other one.
    let r = f
        .call(
            "PUT",
            "/api/v1/config/groups/lab",
            Some(f.admin()),
            Some(r#"{"fan_profile": "cool", "warn_c": 65}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["devices"], json!(["pi-a"]));
    eventually("pi-a applies the group's fan profile", async || {
        (device_desired(&a, "fan_profile") == Some(json!("cool"))).then_some(())
    })
    .await;
    let twin = eventually("pi-a reports the config accepted", async || {
        let t = f.get("/api/v1/devices/pi-a/twin", f.admin()).await;
        (t["reported"]["config.accepted"] == true
            && t["reported"]["config.version"] == t["desired"]["config_version"])
            .then_some(t)
    })
    .await;
    assert_eq!(twin["desired"]["warn_c"], 65.0);
    assert_eq!(
        device_desired(&b, "fan_profile"),
        None,
        "pi-b is not in the group"
    );

    // Provenance: the device layer wins over the group, the rest comes from the group.
    let r = f
        .patch(
            "/api/v1/config/devices/pi-a",
            f.admin(),
            json!({"fan_profile": "max"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let eff = f
        .get("/api/v1/devices/pi-a/config/effective", f.admin())
        .await;
    assert_eq!(eff["fields"]["fan_profile"], "max");
    assert_eq!(eff["sources"]["fan_profile"], "device:pi-a");
    assert_eq!(eff["sources"]["warn_c"], "group:lab");

    // Above the Pi 4's board floor: 422 naming the device and the rule, nothing written.
    let r = f
        .call(
            "PATCH",
            "/api/v1/config/fleet",
            Some(f.admin()),
            Some(r#"{"critical_c": 95}"#),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "policy_violation"),
        "{}",
        r.body
    );
    assert!(
        r.body["error"]["rule"]
            .as_str()
            .unwrap()
            .contains("threshold"),
        "{}",
        r.body
    );
    assert!(
        ["pi-a", "pi-b"].contains(&r.body["error"]["device"].as_str().unwrap()),
        "{}",
        r.body
    );
    assert_eq!(
        f.get("/api/v1/config/fleet", f.admin()).await["fields"],
        json!({})
    );
    assert!(
        f.get("/api/v1/devices/pi-b/twin", f.admin()).await["desired"]
            .get("critical_c")
            .is_none()
    );
    // Bad layer input names the field.
    for (body, field) in [
        (r#"{"nope": 1}"#, "nope"),
        (r#"{"warn_c": "hot"}"#, "warn_c"),
        (r#"{"config_version": 9}"#, "config_version"),
    ] {
        let r = f
            .call("PUT", "/api/v1/config/fleet", Some(f.admin()), Some(body))
            .await;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {}",
            r.body
        );
    }

    // Forced into the twin past the API's check: the device refuses it and says why.
    // (Through the rollback route to an unsafe version would be refused too, so
    // write it the way a buggy writer would: as a raw desired field from pi-b's side.)
    b.handle.edit(|t| {
        t.set_field(
            &wrale_sync::FieldPath::desired("critical_c"),
            Some(95.0.into()),
            &Author::local_operator("bob"),
            Timestamp::from_secs(1_800_000_100),
        )
        .unwrap()
    });
    let t = eventually("pi-b's rejection reaches the fleet", async || {
        let t = f.get("/api/v1/devices/pi-b/twin", f.admin()).await;
        (t["reported"]["config.accepted"] == false).then_some(t)
    })
    .await;
    assert!(
        t["reported"]["config.rejection"]
            .as_str()
            .unwrap()
            .contains("critical_c"),
        "{t}"
    );

    // History: newest first, with the user as author; rollback to before the device layer.
    let h = f.get("/api/v1/devices/pi-a/history", f.admin()).await;
    let items = h["items"].as_array().unwrap();
    assert!(items.iter().any(|v| v["author"] == "user:admin"), "{h}");
    let group_version = items
        .iter()
        .find(|v| v["author"] == "user:admin" && v["summary"].as_str().unwrap().contains("warn_c"))
        .unwrap()["version"]
        .clone();
    let r = f
        .post(
            "/api/v1/devices/pi-a/rollback",
            f.admin(),
            json!({"version": group_version}),
        )
        .await;
    assert_eq!(r["desired"]["fan_profile"], "cool", "{r}");
    eventually("pi-a follows the rollback", async || {
        (device_desired(&a, "fan_profile") == Some(json!("cool"))).then_some(())
    })
    .await;
    let bad = f
        .call(
            "POST",
            "/api/v1/devices/pi-a/rollback",
            Some(f.admin()),
            Some(r#"{"version": "00"}"#),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["error"]["field"].as_str()),
        (400, Some("version")),
        "{}",
        bad.body
    );

    // Access: a device reads only its own twin and syncs only as itself.
    assert_eq!(
        f.call("GET", "/api/v1/devices/pi-a/twin", Some(&cred_a), None)
            .await
            .status,
        200
    );
    assert_eq!(
        f.call("GET", "/api/v1/devices/pi-b/twin", Some(&cred_a), None)
            .await
            .status,
        403
    );
    assert_eq!(
        f.call("GET", "/api/v1/devices/pi-a/history", Some(&cred_a), None)
            .await
            .status,
        403
    );
    let mut req = f
        .ws_url("/api/v1/devices/pi-b/sync")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {cred_a}").parse().unwrap());
    let err = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403"), "{err}");
    let mut req = f
        .ws_url("/api/v1/devices/pi-a/sync")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", f.admin()).parse().unwrap(),
    );
    let err = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("403"),
        "a user may not sync as a device: {err}"
    );

    // Commands: done, refused with the device's rule, offline.
    let r = f
        .post(
            "/api/v1/devices/pi-a/commands",
            f.admin(),
            json!({"type": "set_fan_duty", "fan": "fan0", "duty_pct": 80.0, "reason": "test"}),
        )
        .await;
    assert_eq!(r["status"], "done", "{r}");
    let r = f.call("POST", "/api/v1/devices/pi-a/commands", Some(f.admin()), Some(&json!({"type": "set_fan_duty", "fan": "fan0", "duty_pct": 5.0, "reason": "refuse"}).to_string())).await;
    assert_eq!(
        (r.status, r.code(), r.body["error"]["rule"].as_str()),
        (422, "policy_violation", Some("fan.min_duty")),
        "{}",
        r.body
    );
    let cred_c = enroll(&f, "pi-c", None).await;
    assert!(cred_c.starts_with("wrd_"));
    let r = f
        .call(
            "POST",
            "/api/v1/devices/pi-c/commands",
            Some(f.admin()),
            Some(r#"{"type": "set_fan_duty", "fan": "fan0", "duty_pct": 50.0}"#),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "device_offline"), "{}", r.body);

    // Metrics.
    let m = f.call("GET", "/metrics", Some(f.admin()), None).await;
    let text = m.body.as_str().unwrap().to_owned();
    for line in [
        "wrale_devices_connected 2",
        "wrale_sync_sessions_total",
        "wrale_twins_resident",
        "wrale_sync_frames_rejected_total 0",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }

    // Revoke: the live session is closed and the credential refused (401).
    f.post("/api/v1/devices/pi-b/revoke", f.admin(), json!(null))
        .await;
    eventually("pi-b offline after revoke", async || {
        (f.get("/api/v1/devices/pi-b", f.admin()).await["status"] != "online").then_some(())
    })
    .await;
    let mut req = f
        .ws_url("/api/v1/devices/pi-b/sync")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {cred_b}").parse().unwrap());
    let err = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401"), "{err}");

    // Restart on the same data directory: layers, twins and history are all there.
    drop(a);
    drop(b);
    let before = f.get("/api/v1/devices/pi-a/twin", f.admin()).await;
    let f = f.restart().await;
    let after = f.get("/api/v1/devices/pi-a/twin", f.admin()).await;
    assert_eq!(before["desired"], after["desired"]);
    assert_eq!(before["version"], after["version"]);
    assert_eq!(
        f.get("/api/v1/config/groups/lab", f.admin()).await["fields"]["fan_profile"],
        "cool"
    );
    let h = f.get("/api/v1/devices/pi-a/history", f.admin()).await;
    assert!(
        h["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["author"] == "device:pi-a"),
        "{h}"
    );
    // The device reconnects to the restarted fleet and keeps syncing.
    let a = agent(&f, "pi-a", &cred_a);
    wait_online(&f, "pi-a").await;
    f.patch(
        "/api/v1/config/devices/pi-a",
        f.admin(),
        json!({"fan_profile": "balance"}),
    )
    .await;
    eventually("pi-a gets the edit after the restart", async || {
        (device_desired(&a, "fan_profile") == Some(json!("balance"))).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_link_is_closed_with_a_reason_and_others_keep_syncing() {
    let f = Fleet::start().await;
    let cred_a = enroll(&f, "pi-a", None).await;
    let cred_b = enroll(&f, "pi-b", None).await;
    let b = agent(&f, "pi-b", &cred_b);
    wait_online(&f, "pi-b").await;

    let mut req = f
        .ws_url("/api/v1/devices/pi-a/sync")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {cred_a}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // Garbage is counted and dropped; the link stays.
    ws.send(Message::binary(vec![0xde, 0xad, 0xbe, 0xef]))
        .await
        .unwrap();
    ws.send(Message::binary(vec![0u8; 3])).await.unwrap();
    eventually("garbage counted", async || {
        let m = f.call("GET", "/metrics", Some(f.admin()), None).await;
        m.body
            .as_str()
            .unwrap()
            .contains("wrale_sync_frames_rejected_total 2")
            .then_some(())
    })
    .await;
    // A frame about another device's twin: closed with 1008 and a reason.
    let foreign = Envelope::new(FrameKind::Sync, "pi-b", 0, vec![1, 2, 3]).encode();
    ws.send(Message::binary(foreign)).await.unwrap();
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Close(c)) = m {
                return c;
            }
        }
        None
    })
    .await
    .expect("closed in time")
    .expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("pi-b"), "{}", close.reason);

    // pi-b kept its session and still gets edits.
    let r = f
        .patch(
            "/api/v1/config/devices/pi-b",
            f.admin(),
            json!({"fan_profile": "quiet"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("pi-b still syncing", async || {
        (device_desired(&b, "fan_profile") == Some(json!("quiet"))).then_some(())
    })
    .await;
    let events = f.get("/api/v1/audit?action=config.layer", f.admin()).await;
    assert!(!events["items"].as_array().unwrap().is_empty());
    assert_eq!(b.id.as_str(), "pi-b");
}
