//! The safety seam: an engine that panics leaves the outputs fail-safe; a sampling
//! loop that stalls stops feeding the systemd watchdog, and feeds it again once it
//! is back.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use metald::notify::Notifier;
use metald::safety::{Action, Command, Context, FailSafeHook, SafetyHook, Verdict};
use serde_json::Value;
use wrale_core::model::Sample;
use wrale_hal::HalEvent;

use crate::support::*;

struct Panicking;

impl SafetyHook for Panicking {
    fn name(&self) -> &'static str {
        "panicking"
    }
    fn on_sample(&mut self, _: &Sample, _: &Context<'_>) -> Vec<Action> {
        panic!("deliberate engine failure (test)");
    }
    fn on_event(&mut self, _: &HalEvent, _: &Context<'_>) -> Vec<Action> {
        Vec::new()
    }
    fn check_command(
        &mut self,
        _: &Command,
        _: &str,
        _: Option<&Sample>,
        _: &Context<'_>,
    ) -> Verdict {
        Verdict::Allowed
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_engine_leaves_the_outputs_fail_safe() {
    let d = TestDaemon::start_with(SIM, |daemon| daemon.safety_hook(Box::new(Panicking))).await;
    d.wait_ready().await;
    let safe = wrale_core::BoardProfile::builtin(wrale_core::BoardModel::Pi4B)
        .fan
        .safe_duty_pct
        .get();
    d.wait_reading("fan at the safe duty", |v| {
        v["sample"]["fans"][0]["duty_pct"]["value"].as_f64() == Some(safe)
    })
    .await;
    let alerts: Value = d.get_json("/api/v1/alerts", VIEWER).await;
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == "safety_engine_failed"),
        "{alerts}"
    );
    let text = d.get("/metrics", Some(VIEWER)).await.text().await.unwrap();
    let failures: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("wrale_safety_engine_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 1.0, "{text}");
    d.stop().await.unwrap();
}

/// Stalls the sampling loop once, for `stall`, on the `at`-th sample.
struct Stalling {
    n: Arc<AtomicU32>,
    at: u32,
    stall: Duration,
    inner: FailSafeHook,
}

impl SafetyHook for Stalling {
    fn name(&self) -> &'static str {
        "stalling"
    }
    fn on_sample(&mut self, s: &Sample, ctx: &Context<'_>) -> Vec<Action> {
        if self.n.fetch_add(1, Ordering::SeqCst) == self.at {
            std::thread::sleep(self.stall);
        }
        self.inner.on_sample(s, ctx)
    }
    fn on_event(&mut self, e: &HalEvent, ctx: &Context<'_>) -> Vec<Action> {
        self.inner.on_event(e, ctx)
    }
    fn check_command(
        &mut self,
        c: &Command,
        a: &str,
        l: Option<&Sample>,
        ctx: &Context<'_>,
    ) -> Verdict {
        self.inner.check_command(c, a, l, ctx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_fed_only_while_the_sampling_loop_is_alive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // A 200 ms watchdog: pinged every 100 ms while the heartbeat is fresh (2 s).
    let notifier =
        Notifier::from_vars(path.to_str(), Some("200000"), None, std::process::id()).unwrap();
    assert!(notifier.is_some());
    let hook = Stalling {
        n: Arc::default(),
        at: 10,
        stall: Duration::from_secs(5),
        inner: FailSafeHook::default(),
    };
    let d = TestDaemon::start_with(SIM, |daemon| {
        daemon.notifier(notifier).safety_hook(Box::new(hook))
    })
    .await;
    let t0 = Instant::now();
    let mut pings = Vec::new();
    let mut ready = false;
    let mut buf = [0u8; 128];
    while t0.elapsed() < Duration::from_millis(7500) {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        match &buf[..n] {
            b"WATCHDOG=1" => pings.push(t0.elapsed()),
            m if m.starts_with(b"READY=1") => ready = true,
            m => panic!("unexpected notification {:?}", String::from_utf8_lossy(m)),
        }
    }
    assert!(ready);
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    assert!(
        longest >= Duration::from_secs(2),
        "no pause in pings while stalled: {pings:?}"
    );
    assert!(
        pings.first().is_some_and(|p| *p < Duration::from_secs(2)),
        "fed before the stall: {pings:?}"
    );
    assert!(
        pings.last().is_some_and(|p| *p > Duration::from_secs(6)),
        "fed again after the stall: {pings:?}"
    );
    d.stop().await.unwrap();
}
