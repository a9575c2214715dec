//! metald on the `sim` backend: the simulated board's clock starts at the wall
//! clock unless `hal.start` fixes it.

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use wrale_core::Timestamp;

use crate::support::*;

fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

/// How far apart two timestamps are, whichever comes first.
fn apart(a: Timestamp, b: Timestamp) -> Duration {
    a.saturating_since(b).max(b.saturating_since(a))
}

fn at(v: &Value) -> Timestamp {
    let s = v["sample"]["at"]
        .as_str()
        .unwrap_or_else(|| panic!("no sample time: {v}"));
    Timestamp::parse_rfc3339(s).unwrap()
}

async fn latest_at(d: &TestDaemon) -> Timestamp {
    let first = d.get_json("/api/v1/readings", VIEWER).await;
    at(&first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_start_samples_are_stamped_with_the_wall_clock() {
    for time in ["virtual", "realtime"] {
        let body = format!(
            "[hal]\nbackend = \"sim\"\nnoise = false\ntime = \"{time}\"\n\
             [sampling]\ninterval = \"20ms\"\n"
        );
        let d = TestDaemon::start_toml(&body).await;
        d.wait_ready().await;
        let t = latest_at(&d).await;
        let off = apart(t, now());
        assert!(
            off < Duration::from_secs(5),
            "{time}: sample at {t}, {off:?} off the wall clock"
        );
        // Still near the wall clock a little later (the clock runs, in step with it).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = latest_at(&d).await;
        assert!(later > t, "{time}: {later} after {t}");
        let off = apart(later, now());
        assert!(
            off < Duration::from_secs(5),
            "{time}: sample at {later}, {off:?} off"
        );
        // The boot time reported to the fleet is the wall clock too.
        let deadline = Instant::now() + Duration::from_secs(10);
        let booted = loop {
            let r = d.get_json("/api/v1/twin", VIEWER).await;
            if let Some(b) = r["reported"]["booted_at"].as_str() {
                break Timestamp::parse_rfc3339(b).unwrap();
            }
            assert!(Instant::now() < deadline, "{time}: no booted_at: {r}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            apart(booted, now()) < Duration::from_secs(10),
            "{time}: booted {booted}"
        );
        d.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_start_is_kept() {
    let start = Timestamp::parse_rfc3339("2030-05-01T12:00:00Z").unwrap();
    let body = format!(
        "[hal]\nbackend = \"sim\"\nnoise = false\nstart = \"{start}\"\n\
         [sampling]\ninterval = \"20ms\"\n"
    );
    let d = TestDaemon::start_toml(&body).await;
    d.wait_ready().await;
    let t = latest_at(&d).await;
    assert!(
        t >= start && t.saturating_since(start) < Duration::from_secs(60),
        "sample at {t}, start {start}"
    );
    // The running config keeps the key as given.
    let c = d.get_json("/api/v1/config", ADMIN).await;
    assert_eq!(c["hal"]["start"], start.to_string(), "{c}");
    d.stop().await.unwrap();
}
