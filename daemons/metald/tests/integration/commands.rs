//! `POST /api/v1/commands`, `/validate`, `/confirm` against the real daemon on
//! the `sim` backend: roles, malformed bodies naming the field, refusals with the
//! rule whoever sends them, GPIO/PWM/power/workload commands through the HAL, and
//! the two-phase path (mismatch, expiry, single use).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const CMD: &str = "/api/v1/commands";
/// `[hal]` of a noiseless simulated Pi 4, open for more `[hal]` keys.
const HAL: &str = "[hal]\nbackend = \"sim\"\nnoise = false\n";
/// Sampling every 20 ms.
const FAST: &str = "[sampling]\ninterval = \"20ms\"\n";

async fn post(d: &TestDaemon, path: &str, token: &str, body: &str) -> (u16, Value) {
    let r = d.post_json(path, Some(token), body).await;
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v)
}

/// The rules of the refusals in an audit page, newest first.
fn audit_rules(audit: &Value) -> Vec<String> {
    audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["verdict"]["rule"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_need_an_operator_and_a_well_formed_body() {
    let d = TestDaemon::start().await;
    d.wait_ready().await;
    let ok = r#"{"type": "set_gpio", "pin": 17, "level": "high", "reason": "test"}"#;
    let r = d.post_json(CMD, None, ok).await;
    assert_eq!(r.status(), 401);
    let (status, code, _) = error_code(d.post_json(CMD, Some(VIEWER), ok).await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));

    for (body, field) in [
        (
            r#"{"type": "set_gpio", "pin": 17, "level": "high"}"#,
            "reason",
        ),
        (
            r#"{"type": "set_gpio", "pin": 17, "level": "high", "reason": 3}"#,
            "reason",
        ),
        (r#"{"pin": 17, "level": "high", "reason": "r"}"#, "type"),
        (r#"{"type": "explode", "reason": "r"}"#, "type"),
        (
            r#"{"type": "set_gpio", "level": "high", "reason": "r"}"#,
            "pin",
        ),
        (
            r#"{"type": "set_gpio", "pin": "x", "level": "high", "reason": "r"}"#,
            "pin",
        ),
        (
            r#"{"type": "set_gpio", "pin": 17, "level": "up", "reason": "r"}"#,
            "level",
        ),
        (
            r#"{"type": "set_pwm", "pin": 12, "duty_pct": 150, "reason": "r"}"#,
            "duty_pct",
        ),
        (
            r#"{"type": "set_pwm", "pin": 12, "duty_pct": -1, "reason": "r"}"#,
            "duty_pct",
        ),
        (
            r#"{"type": "set_fan_duty", "fan": "fan0", "duty_pct": 50, "colour": 1, "reason": "r"}"#,
            "colour",
        ),
        (
            r#"{"type": "select_power_source", "source": "moon", "reason": "r"}"#,
            "source",
        ),
    ] {
        let (status, v) = post(&d, CMD, OPERATOR, body).await;
        assert_eq!(status, 400, "{body} -> {v}");
        assert_eq!(v["error"]["code"], "invalid_body", "{body} -> {v}");
        assert_eq!(v["error"]["field"], field, "{body} -> {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{body} -> {v}"
        );
    }
    let (status, v) = post(&d, CMD, OPERATOR, "not json").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
    // Nothing of that reached the audit log.
    let audit = d.get_json("/api/v1/audit", VIEWER).await;
    assert!(audit["records"].as_array().unwrap().is_empty(), "{audit}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_commands_are_refused_with_the_rule_whoever_sends_them() {
    let d = TestDaemon::start().await;
    d.wait_ready().await;
    // GPIO 18 drives the fan: reserved by the board floor.
    let fan_pin = r#"{"type": "set_gpio", "pin": 18, "level": "low", "reason": "test"}"#;
    for token in [OPERATOR, ADMIN] {
        let (status, v) = post(&d, CMD, token, fan_pin).await;
        assert_eq!(status, 422, "{v}");
        assert_eq!(v["error"]["code"], "policy_violation", "{v}");
        assert_eq!(v["error"]["rule"], "gpio.reserved_pin", "{v}");
    }
    let (status, v) = post(
        &d,
        CMD,
        ADMIN,
        r#"{"type": "set_gpio", "pin": 99, "level": "low", "reason": "test"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["rule"].as_str()),
        (422, Some("gpio.invalid_pin")),
        "{v}"
    );

    // An allowed output is driven through the HAL and audited with the reason.
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "set_gpio", "pin": 17, "level": "high", "reason": "relay on"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], "applied");
    assert_eq!(v["type"], "set_gpio");
    // Driving it again reuses the claimed line.
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "set_gpio", "pin": 17, "level": "low", "reason": "relay off"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");

    let audit = d.get_json("/api/v1/audit", VIEWER).await;
    let recs = audit["records"].as_array().unwrap();
    assert_eq!(recs.len(), 5, "{audit}");
    assert_eq!(
        audit_rules(&audit),
        ["gpio.invalid_pin", "gpio.reserved_pin", "gpio.reserved_pin"],
        "{audit}"
    );
    // Newest first: the last command, with its reason and actor.
    assert_eq!(recs[0]["reason"], "relay off", "{audit}");
    assert_eq!(recs[0]["outcome"]["status"], "applied", "{audit}");
    assert_eq!(recs[0]["command"]["level"], "low", "{audit}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_outputs_are_locked_while_the_case_is_open() {
    let layers = tempfile::tempdir().unwrap();
    std::fs::write(
        layers.path().join("lock.toml"),
        "scope = \"fleet\"\n[security]\nlock_gpio_when_case_open = true\n",
    )
    .unwrap();
    let body = format!(
        "{HAL}faults = [{{ kind = \"case_opened\" }}]\n{FAST}[policy]\nlayers = [\"{}/lock.toml\"]\n",
        layers.path().display()
    );
    let d = TestDaemon::start_toml(&body).await;
    d.wait_ready().await;
    let cmd = r#"{"type": "set_gpio", "pin": 17, "level": "high", "reason": "test"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let (status, v) = post(&d, CMD, ADMIN, cmd).await;
        if status == 422 {
            break v;
        }
        assert!(Instant::now() < deadline, "never locked: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v["error"]["rule"], "security.gpio_locked", "{v}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwm_power_and_device_commands() {
    let d = TestDaemon::start_toml(&format!(
        "{HAL}battery = {{ capacity_mah = 3400.0 }}\n{FAST}"
    ))
    .await;
    d.wait_ready().await;
    // GPIO 12 has a hardware PWM channel.
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "set_pwm", "pin": 12, "duty_pct": 25, "frequency_hz": 1000, "reason": "dimmer"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // The HAL refuses a carrier out of range and a pin without hardware PWM.
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "set_pwm", "pin": 12, "duty_pct": 25, "frequency_hz": 1e12, "reason": "r"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("invalid_argument")),
        "{v}"
    );
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "set_pwm", "pin": 17, "duty_pct": 25, "reason": "r"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("invalid_argument")),
        "{v}"
    );

    // Power source: to the battery and back to mains; the samples follow.
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "select_power_source", "source": "battery", "reason": "test"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    d.wait_reading("on battery", |v| {
        v["sample"]["power_source"]["value"] == "battery"
    })
    .await;
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "select_power_source", "source": "main", "reason": "back"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "enable_charging", "enabled": false, "reason": "test"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // A fan profile below the floor's minimum is refused; the default one is fine.
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "set_fan_profile", "profile": "cool", "reason": "summer"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // apply_config is not local (a `reboot` of the simulated board: sim_reboot.rs).
    let (status, v) = post(
        &d,
        CMD,
        ADMIN,
        r#"{"type": "apply_config", "version": "x", "reason": "r"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("unsupported")),
        "{v}"
    );
    // Diagnostics as a command: the report comes back as the detail.
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "run_diagnostics", "reason": "r"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["detail"]["status"].is_string(), "{v}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_without_a_battery_refuses_charging_and_unknown_targets_are_404() {
    let d = TestDaemon::start().await;
    d.wait_ready().await;
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "enable_charging", "enabled": true, "reason": "r"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("unsupported")),
        "{v}"
    );
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "set_fan_duty", "fan": "fan9", "duty_pct": 100, "reason": "r"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "throttle_workload", "workload": "nope", "reason": "r"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_commands_throttle_resume_and_start() {
    let body = format!(
        "{SIM}[[workloads]]\nname = \"w\"\ncommand = \"sleep\"\nargs = [\"30\"]\n\
         [[workloads]]\nname = \"once\"\ncommand = \"true\"\nrestart = \"never\"\n"
    );
    let d = TestDaemon::start_toml(&body).await;
    d.wait_ready().await;
    let state = |name: &'static str| {
        let d = &d;
        async move {
            let v = d.get_json("/api/v1/workloads", VIEWER).await;
            v["workloads"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["name"] == name)
                .map(|w| {
                    (
                        w["state"].as_str().unwrap().to_owned(),
                        w["restarts"].as_u64().unwrap(),
                    )
                })
                .unwrap()
        }
    };
    let wait = |name: &'static str, want: &'static str| {
        let state = &state;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (s, n) = state(name).await;
                if s == want {
                    return n;
                }
                assert!(Instant::now() < deadline, "{name} never {want} (is {s})");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait("w", "running").await;
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "throttle_workload", "workload": "w", "reason": "quiet please"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    wait("w", "paused").await;
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "resume_workload", "workload": "w", "reason": "go"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    wait("w", "running").await;

    let before = wait("once", "exited").await;
    let (status, v) = post(
        &d,
        CMD,
        OPERATOR,
        r#"{"type": "start_workload", "workload": "once", "reason": "again"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while state("once").await.1 == before {
        assert!(
            Instant::now() < deadline,
            "start_workload did not run it again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.stop().await.unwrap();
}

const SHORT_TTL: &str = "scope = \"fleet\"\n[commands]\nconfirm_ttl = \"1s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_commands_confirm_once_and_refuse_mismatch_and_expiry() {
    let layers = tempfile::tempdir().unwrap();
    std::fs::write(layers.path().join("ttl.toml"), SHORT_TTL).unwrap();
    let body = format!(
        "{SIM}[policy]\nlayers = [\"{}/ttl.toml\"]\n",
        layers.path().display()
    );
    let d = TestDaemon::start_toml(&body).await;
    d.wait_ready().await;
    let gpio = r#"{"type": "set_gpio", "pin": 17, "level": "high", "reason": "two-phase"}"#;
    let validate = "/api/v1/commands/validate";
    let confirm = "/api/v1/commands/confirm";

    // A refused command gets no token.
    let (status, v) = post(
        &d,
        validate,
        OPERATOR,
        r#"{"type": "set_gpio", "pin": 18, "level": "high", "reason": "r"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["rule"].as_str()),
        (422, Some("gpio.reserved_pin")),
        "{v}"
    );
    let (status, v) = post(&d, validate, VIEWER, gpio).await;
    assert_eq!(status, 403, "{v}");

    // Validate, then confirm: applied once.
    let (status, v) = post(&d, validate, OPERATOR, gpio).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["verdict"], "allowed", "{v}");
    assert_eq!(v["command"]["type"], "set_gpio", "{v}");
    let token = v["token"]["id"].as_u64().unwrap();
    let with_command = format!(
        r#"{{"token": {token}, "command": {{"type": "set_gpio", "pin": 17, "level": "high"}}}}"#
    );
    let (status, v) = post(&d, confirm, OPERATOR, &with_command).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], "applied", "{v}");
    let (status, v) = post(&d, confirm, OPERATOR, &with_command).await;
    assert_eq!(
        (status, v["error"]["rule"].as_str()),
        (422, Some("confirm.unknown_token")),
        "{v}"
    );

    // Mismatch: the token was for pin 17 high, the caller confirms pin 17 low.
    let (_, v) = post(&d, validate, OPERATOR, gpio).await;
    let token = v["token"]["id"].as_u64().unwrap();
    let (status, v) = post(
        &d,
        confirm,
        OPERATOR,
        &format!(
            r#"{{"token": {token}, "command": {{"type": "set_gpio", "pin": 17, "level": "low"}}}}"#
        ),
    )
    .await;
    assert_eq!(
        (status, v["error"]["rule"].as_str()),
        (422, Some("confirm.mismatch")),
        "{v}"
    );

    // Expiry: the layer's confirm_ttl is 1 s of board time (virtual time runs one
    // sampling interval per sample).
    let (_, v) = post(&d, validate, OPERATOR, gpio).await;
    let token = v["token"]["id"].as_u64().unwrap();
    let expires = v["token"]["expires_at"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = d.get_json("/api/v1/readings", VIEWER).await;
        if r["sample"]["at"]
            .as_str()
            .is_some_and(|at| at > expires.as_str())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "board time never passed {expires}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, v) = post(&d, confirm, OPERATOR, &format!(r#"{{"token": {token}}}"#)).await;
    assert_eq!(
        (status, v["error"]["rule"].as_str()),
        (422, Some("confirm.expired")),
        "{v}"
    );

    // Malformed confirmations name the field.
    for (body, field) in [
        (r#"{}"#, "token"),
        (r#"{"token": "abc"}"#, "token"),
        (r#"{"token": 1, "extra": true}"#, "extra"),
        (r#"{"token": 1, "command": 3}"#, "command"),
    ] {
        let (status, v) = post(&d, confirm, OPERATOR, body).await;
        assert_eq!(status, 400, "{body} -> {v}");
        assert_eq!(v["error"]["field"], field, "{body} -> {v}");
    }
    d.stop().await.unwrap();
}
