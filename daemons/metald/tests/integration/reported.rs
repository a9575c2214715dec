//! The boot identity in the twin's `reported` section: a simulated board that
//! reboots (a `reboot` script step) reports a new `boot_id` and its `booted_at`.

use std::time::{Duration, Instant};

use serde_json::Value;
use wrale_core::Timestamp;
use wrale_hal::sim::DEFAULT_SIM_START;

use crate::support::{SIM, TestDaemon, VIEWER};

async fn reported(d: &TestDaemon) -> Value {
    d.get_json("/api/v1/twin", VIEWER).await["reported"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_of_the_board_changes_the_reported_boot_id() {
    // 20 ms samples on virtual time: the board reboots after 150 samples.
    let d = TestDaemon::start_toml(&format!(
        "{SIM}[[hal.script]]\nat = \"3s\"\naction = \"reboot\"\n"
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
