//! Safe mode against the real daemon with simulated sensor faults: entered when
//! the engine fails safe, outputs held, output commands refused with `safe_mode`
//! while reads and diagnostics work; left when the fault has cleared for the hold
//! time, or by `POST /api/v1/mode` (at once once the fault is gone; forced by an
//! admin while it is present).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

async fn mode(d: &TestDaemon) -> String {
    let v = d.get_json("/api/v1/state", VIEWER).await;
    v["mode"].as_str().unwrap().to_owned()
}

async fn wait_mode(d: &TestDaemon, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let m = mode(d).await;
        if m == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "mode is {m}, never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, line: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
}

async fn post(d: &TestDaemon, path: &str, token: &str, body: &str) -> (u16, Value) {
    let r = d.post_json(path, Some(token), body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `[hal]` of a noiseless simulated Pi 4, open for more `[hal]` keys.
const HAL: &str = "[hal]\nbackend = \"sim\"\nnoise = false\n";
/// Sampling every 20 ms.
const FAST: &str = "[sampling]\ninterval = \"20ms\"\n";

const GPIO: &str = r#"{"type": "set_gpio", "pin": 17, "level": "high", "reason": "test"}"#;
const NORMAL: &str = r#"{"mode": "normal", "reason": "sensor replaced"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_fault_enters_safe_mode_and_its_clearing_leaves_it_after_the_hold() {
    // Virtual time: one 20 ms interval per sample. The CPU sensor fails at 1 s and
    // recovers at 4 s; safe mode is left 1 s after the engine trusts it again.
    let body = format!(
        "{SIM}[[hal.script]]\nat = \"1s\"\naction = \"inject\"\nfault = {{ kind = \"sensor_fault\", sensor = \"cpu\" }}\n\
         [[hal.script]]\nat = \"4s\"\naction = \"clear\"\nfault = {{ kind = \"sensor_fault\", sensor = \"cpu\" }}\n\
         [safe_mode]\nhold = \"1s\"\n"
    );
    let d = TestDaemon::start_toml(&body).await;
    d.wait_ready().await;
    assert_eq!(mode(&d).await, "normal");
    wait_mode(&d, "safe", Duration::from_secs(10)).await;

    let state = d.get_json("/api/v1/state", VIEWER).await;
    assert!(
        state["modes"]["safe"].as_str().unwrap().contains("CPU"),
        "{state}"
    );
    assert!(
        state["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == "safe_mode"),
        "{state}"
    );
    let text = d.get("/metrics", Some(VIEWER)).await.text().await.unwrap();
    assert_eq!(
        metric(&text, "wrale_mode{mode=\"safe\"} "),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "wrale_mode{mode=\"normal\"} "),
        Some(0.0),
        "{text}"
    );
    // Outputs held at the fail-safe duty.
    let safe = wrale_core::BoardProfile::builtin(wrale_core::BoardModel::Pi4B)
        .fan
        .safe_duty_pct
        .get();
    d.wait_reading("fan at the safe duty", |v| {
        v["sample"]["fans"][0]["duty_pct"]["value"].as_f64() == Some(safe)
    })
    .await;

    // Output commands are refused with safe_mode (admin included); reads,
    // throttling and diagnostics work.
    for token in [OPERATOR, ADMIN] {
        let (status, v) = post(&d, "/api/v1/commands", token, GPIO).await;
        assert_eq!(status, 409, "{v}");
        assert_eq!(v["error"]["code"], "safe_mode", "{v}");
    }
    // The fan may be raised (that is safe), and stays raised; never lowered.
    let (status, v) = post(
        &d,
        "/api/v1/fan",
        OPERATOR,
        r#"{"fan": "fan0", "duty_pct": 100}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    d.wait_reading("fan at 100 %", |v| {
        v["sample"]["fans"][0]["duty_pct"]["value"].as_f64() == Some(100.0)
    })
    .await;
    let (status, v) = post(
        &d,
        "/api/v1/commands",
        ADMIN,
        r#"{"type": "set_fan_profile", "profile": "max", "reason": "r"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("safe_mode")),
        "{v}"
    );
    let r = d.post_json("/api/v1/diagnostics", Some(OPERATOR), "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(d.get("/api/v1/readings", Some(VIEWER)).await.status(), 200);
    // The refusal is audited under the rule safe_mode.
    let audit = d.get_json("/api/v1/audit", VIEWER).await;
    assert_eq!(
        audit["records"][0]["verdict"]["rule"], "safe_mode",
        "{audit}"
    );

    // While the fault is present an operator cannot leave; a forced leave needs admin.
    let (status, v) = post(&d, "/api/v1/mode", OPERATOR, NORMAL).await;
    if mode(&d).await == "safe" {
        assert_eq!(status, 422, "{v}");
        assert_eq!(v["error"]["rule"], "safe_mode.fault_present", "{v}");
    }
    let (status, _) = post(
        &d,
        "/api/v1/mode",
        OPERATOR,
        r#"{"mode": "normal", "reason": "r", "force": true}"#,
    )
    .await;
    assert_eq!(status, 403);
    let (status, v) = post(
        &d,
        "/api/v1/mode",
        OPERATOR,
        r#"{"mode": "safe", "reason": "r"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (400, Some("mode")),
        "{v}"
    );
    let (status, _) = post(&d, "/api/v1/mode", VIEWER, NORMAL).await;
    assert_eq!(status, 403);

    // The sensor recovers at 4 s; after the hold the mode is normal again, on its own.
    wait_mode(&d, "normal", Duration::from_secs(15)).await;
    let text = d.get("/metrics", Some(VIEWER)).await.text().await.unwrap();
    assert_eq!(
        metric(&text, "wrale_mode{mode=\"normal\"} "),
        Some(1.0),
        "{text}"
    );
    let (status, v) = post(&d, "/api/v1/commands", OPERATOR, GPIO).await;
    assert_eq!(status, 200, "{v}");
    let alerts = d.get_json("/api/v1/alerts", VIEWER).await;
    assert!(
        !alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == "safe_mode"),
        "{alerts}"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_leaves_safe_mode_at_once_when_the_fault_is_gone() {
    // The sensor recovers at 2 s but the hold is an hour: only a command leaves.
    let body = format!(
        "{HAL}faults = [{{ kind = \"sensor_fault\", sensor = \"cpu\" }}]\n{FAST}\
         [[hal.script]]\nat = \"2s\"\naction = \"clear_faults\"\n\
         [safe_mode]\nhold = \"1h\"\n"
    );
    let d = TestDaemon::start_toml(&body).await;
    d.wait_ready().await;
    wait_mode(&d, "safe", Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, v) = post(&d, "/api/v1/mode", OPERATOR, NORMAL).await;
        if status == 200 {
            assert_eq!(v["mode"], "normal", "{v}");
            break;
        }
        assert_eq!(v["error"]["rule"], "safe_mode.fault_present", "{v}");
        assert!(Instant::now() < deadline, "the fault never cleared: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(mode(&d).await, "normal");
    let (status, v) = post(&d, "/api/v1/commands", OPERATOR, GPIO).await;
    assert_eq!(status, 200, "{v}");
    // Asking again in normal mode is harmless.
    let (status, v) = post(&d, "/api/v1/mode", OPERATOR, NORMAL).await;
    assert_eq!((status, v["mode"].as_str()), (200, Some("normal")), "{v}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_forces_safe_mode_off_while_the_engine_still_guards_the_fan() {
    let body = format!("{HAL}faults = [{{ kind = \"sensor_fault\", sensor = \"cpu\" }}]\n{FAST}");
    let d = TestDaemon::start_toml(&body).await;
    d.wait_ready().await;
    wait_mode(&d, "safe", Duration::from_secs(10)).await;
    let (status, v) = post(
        &d,
        "/api/v1/mode",
        ADMIN,
        r#"{"mode": "normal", "reason": "known bad sensor, replacing tomorrow", "force": true}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["mode"], "normal", "{v}");
    // Not re-entered for the same fault.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mode(&d).await, "normal");
    let (status, v) = post(&d, "/api/v1/commands", OPERATOR, GPIO).await;
    assert_eq!(status, 200, "{v}");
    // The engine still refuses to lower the fan without a trusted temperature.
    let (status, v) = post(
        &d,
        "/api/v1/commands",
        ADMIN,
        r#"{"type": "set_fan_duty", "fan": "fan0", "duty_pct": 0, "reason": "quiet"}"#,
    )
    .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "policy_violation", "{v}");
    d.stop().await.unwrap();
}
