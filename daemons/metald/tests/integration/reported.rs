//! What metald reports for the fleet's rollout gates in the twin's `reported`
//! section: the boot identity (a simulated board that reboots, by a `reboot`
//! script step, reports a new `boot_id` and its `booted_at`) and the safety
//! engine's own throttling (`engine_throttled`, `engine_throttle_count`).

use std::time::{Duration, Instant};

use serde_json::Value;
use wrale_core::Timestamp;
use wrale_hal::sim::DEFAULT_SIM_START;

use crate::support::{TestDaemon, VIEWER};

async fn reported(d: &TestDaemon) -> Value {
    d.get_json("/api/v1/twin", VIEWER).await["reported"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_of_the_board_changes_the_reported_boot_id() {
    // 20 ms samples on virtual time from a fixed start: the board reboots after
    // 150 samples.
    let d = TestDaemon::start_toml(&format!(
        "[hal]\nbackend = \"sim\"\nnoise = false\nstart = \"{DEFAULT_SIM_START}\"\n\
         [sampling]\ninterval = \"20ms\"\n\
         [[hal.script]]\nat = \"3s\"\naction = \"reboot\"\n"
    ))
    .await;
    d.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let r = reported(&d).await;
        if r["boot_id"].is_string() {
            break r;
        }
        assert!(Instant::now() < deadline, "no boot_id reported: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first_id = first["boot_id"].as_str().unwrap().to_owned();
    assert_eq!(first_id.len(), 36, "{first}");
    assert_eq!(
        first["booted_at"].as_str(),
        Some(DEFAULT_SIM_START.to_string().as_str()),
        "{first}"
    );
    let second = loop {
        let r = reported(&d).await;
        if r["boot_id"].as_str().is_some_and(|id| id != first_id) {
            break r;
        }
        assert!(Instant::now() < deadline, "boot_id never changed: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let booted = Timestamp::parse_rfc3339(second["booted_at"].as_str().unwrap()).unwrap();
    // The script step applies at 3 s of virtual time (within one sampling step).
    let after = booted.saturating_since(DEFAULT_SIM_START);
    assert!(
        after >= Duration::from_secs(3) && after <= Duration::from_millis(3_020),
        "{second}"
    );
    // The new boot is kept: one change, not one per sample.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(reported(&d).await["boot_id"], second["boot_id"]);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_throttling_is_reported_and_counted() {
    // Full load in a 45 °C room with a stalled fan: the engine throttles.
    let d = TestDaemon::start_toml(
        "[hal]\nbackend = \"sim\"\nnoise = false\nload_pct = 100\nambient_c = 45\n\
         faults = [{ kind = \"fan_stall\" }]\n[sampling]\ninterval = \"20ms\"\n",
    )
    .await;
    d.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = reported(&d).await;
        if r["engine_throttled"] == true {
            break r;
        }
        assert!(Instant::now() < deadline, "never throttled: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r["engine_throttle_count"], 1, "{r}");
    let state = d.get_json("/api/v1/state", VIEWER).await;
    assert_eq!(state["throttled"], true, "{state}");
    d.stop().await.unwrap();
}
