//! metald on the `sim` backend: a `reboot` command reboots the simulated board in
//! place (new boot id, workloads started again, metald keeps running).

use std::time::{Duration, Instant};

use serde_json::Value;
use wrale_core::Timestamp;

use crate::support::*;

/// How far apart two timestamps are, whichever comes first.
fn apart(a: Timestamp, b: Timestamp) -> Duration {
    a.saturating_since(b).max(b.saturating_since(a))
}

async fn latest_at(d: &TestDaemon) -> Timestamp {
    let v = d.get_json("/api/v1/readings", VIEWER).await;
    Timestamp::parse_rfc3339(v["sample"]["at"].as_str().unwrap()).unwrap()
}

fn workload_pid(v: &Value, name: &str) -> Option<u64> {
    v["workloads"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name && w["state"] == "running")
        .and_then(|w| w["pid"].as_u64())
}

async fn wait_json(d: &TestDaemon, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = d.get_json(path, ADMIN).await;
        if f(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_command_reboots_the_simulated_board_in_place() {
    let body = format!(
        "{SIM}[[workloads]]\nname = \"cam\"\ncommand = \"sleep\"\nargs = [\"60\"]\n\
         stop_timeout = \"1s\"\n"
    );
    let d = TestDaemon::start_toml(&body).await;
    d.wait_ready().await;
    let before = wait_json(&d, "/api/v1/twin", "a boot id", |v| {
        v["reported"]["boot_id"].is_string()
    })
    .await;
    let boot_id = before["reported"]["boot_id"].as_str().unwrap().to_owned();
    let w = wait_json(&d, "/api/v1/workloads", "cam running", |v| {
        workload_pid(v, "cam").is_some()
    })
    .await;
    let pid = workload_pid(&w, "cam").unwrap();

    let resp = d
        .post_json(
            "/api/v1/commands",
            Some(ADMIN),
            r#"{"type": "reboot", "reason": "kernel update"}"#,
        )
        .await;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], "applied", "{v}");

    // A new boot reaches `reported`, booted now; the daemon keeps serving.
    let after = wait_json(&d, "/api/v1/twin", "a new boot id", |v| {
        v["reported"]["boot_id"]
            .as_str()
            .is_some_and(|id| id != boot_id)
    })
    .await;
    let booted =
        Timestamp::parse_rfc3339(after["reported"]["booted_at"].as_str().unwrap()).unwrap();
    let sample = latest_at(&d).await;
    assert!(
        apart(booted, sample) < Duration::from_secs(5),
        "booted {booted}, latest sample {sample}"
    );
    // The workload was stopped for the reboot and runs again afterwards.
    wait_json(&d, "/api/v1/workloads", "cam running again", |v| {
        workload_pid(v, "cam").is_some_and(|p| p != pid)
    })
    .await;
    // Audited as applied, with the reason.
    let audit = wait_json(&d, "/api/v1/audit", "the reboot in the audit log", |v| {
        v["records"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["command"]["type"] == "reboot" && r["reason"] == "kernel update")
        })
    })
    .await;
    assert!(audit.to_string().contains("kernel update"), "{audit}");
    // The daemon is still up.
    let s = d.get_json("/api/v1/state", VIEWER).await;
    assert_eq!(s["ready"], true, "{s}");
    d.stop().await.unwrap();
}
