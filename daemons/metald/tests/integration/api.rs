//! Health, state, readings, metrics, auth, errors and fan commands over HTTP.

use serde_json::Value;

use crate::support::*;

fn fan_duty(v: &Value) -> Option<f64> {
    v["sample"]["fans"][0]["duty_pct"]["value"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_state_and_readings() {
    let d = TestDaemon::start().await;
    let live = d.get("/health/live", None).await;
    assert_eq!(live.status(), 200);
    assert_eq!(live.json::<Value>().await.unwrap()["status"], "live");
    d.wait_ready().await;

    let state = d.get_json("/api/v1/state", VIEWER).await;
    assert_eq!(state["device"]["backend"], "sim");
    assert_eq!(state["device"]["model"], "pi4b");
    assert_eq!(state["device"]["safety_engine"], "policy");
    assert_eq!(state["ready"], true);
    assert_eq!(state["sampling"]["interval_s"], 0.02);
    let temps = state["latest"]["sample"]["temperatures"]
        .as_array()
        .unwrap();
    let cpu = temps.iter().find(|t| t["id"] == "cpu").unwrap();
    assert_eq!(cpu["temp_c"]["status"], "ok", "{cpu}");

    let r1 = d.get_json("/api/v1/readings", VIEWER).await;
    assert!(r1["seq"].as_u64().unwrap() >= 1);
    assert!(r1["latency_s"].as_f64().unwrap() >= 0.0);
    let r2 = d
        .wait_reading("a newer sample", |v| v["seq"].as_u64() > r1["seq"].as_u64())
        .await;
    // The virtual clock of the sim advances one interval per sample.
    assert_ne!(r1["sample"]["at"], r2["sample"]["at"]);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_in_prometheus_text() {
    let d = TestDaemon::start().await;
    d.wait_ready().await;
    let (status, code, _) = error_code(d.get("/metrics", None).await).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let resp = d.get("/metrics", Some(VIEWER)).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    for needle in [
        "# TYPE wrale_temperature_celsius gauge",
        "wrale_temperature_celsius{sensor=\"cpu\",kind=\"cpu\"} ",
        "wrale_fan_duty_ratio{fan=\"fan0\"} ",
        "wrale_supply_volts ",
        "wrale_throttle_flag{flag=\"under_voltage\"} 0",
        "# TYPE wrale_samples_total counter",
        "# TYPE wrale_sample_latency_seconds histogram",
        "wrale_sample_latency_seconds_bucket{le=\"+Inf\"} ",
        "wrale_sample_latency_seconds_count ",
        "# TYPE wrale_sample_to_action_seconds histogram",
        "wrale_sample_to_action_seconds_bucket{le=\"0.0001\"} ",
        "wrale_sample_to_action_seconds_count ",
        "wrale_events_dropped_total{queue=\"stream\"} 0",
        "wrale_up 1",
        "wrale_build_info{version=",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let samples: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("wrale_samples_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(samples >= 1.0);
    // Every tick that published its sample also times its actions (the last one
    // may still be applying them while /metrics is rendered).
    let to_action: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("wrale_sample_to_action_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (samples - 1.0..=samples + 1.0).contains(&to_action),
        "{to_action} timed ticks for {samples} samples"
    );
    d.stop().await.unwrap();

    let public = TestDaemon::start_toml(&format!("{SIM}[api]\npublic_metrics = true\n")).await;
    public.wait_ready().await;
    assert_eq!(public.get("/metrics", None).await.status(), 200);
    public.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_roles_and_json_errors() {
    let d = TestDaemon::start().await;
    d.wait_ready().await;
    let resp = d.get("/api/v1/state", None).await;
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"metald\""
    );
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
    let (status, code, _) = error_code(d.get("/api/v1/state", Some("nope")).await).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let resp = d
        .http
        .get(d.url("/api/v1/state"))
        .header("authorization", format!("Basic {VIEWER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // viewer < operator < admin
    let fan = r#"{"fan": "fan0", "duty_pct": 100}"#;
    let (status, code, body) =
        error_code(d.post_json("/api/v1/fan", Some(VIEWER), fan).await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert_eq!(body["error"]["required_role"], "operator");
    assert_eq!(
        d.post_json("/api/v1/fan", Some(OPERATOR), fan)
            .await
            .status(),
        200
    );
    assert_eq!(
        d.post_json("/api/v1/fan", Some(ADMIN), fan).await.status(),
        200
    );
    let (status, code, _) = error_code(d.get("/api/v1/config", Some(OPERATOR)).await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let config = d.get_json("/api/v1/config", ADMIN).await;
    assert_eq!(config["hal"]["backend"], "sim");
    assert_eq!(d.get("/api/v1/alerts", Some(VIEWER)).await.status(), 200);

    // Health needs no token; unknown routes and methods answer JSON.
    assert_eq!(d.get("/health/ready", None).await.status(), 200);
    let (status, code, _) = error_code(d.get("/api/v1/nothing", Some(ADMIN)).await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, _) = error_code(d.post_json("/api/v1/state", Some(ADMIN), "{}").await).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tokens_configured_means_401() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = metald::Config::from_toml_str(SIM).unwrap();
    config.data.dir = dir.path().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (signals, handle) = metald::Signals::manual();
    let task = tokio::spawn(metald::run(config, listener, signals));
    let client = reqwest::Client::new();
    let resp = loop {
        if let Ok(r) = client
            .get(format!("http://{addr}/api/v1/state"))
            .bearer_auth(ADMIN)
            .send()
            .await
        {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hash-token")
    );
    handle.shutdown();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_command_is_validated_and_applied() {
    let d = TestDaemon::start().await;
    d.wait_ready().await;
    let resp = d
        .post_json(
            "/api/v1/fan",
            Some(OPERATOR),
            r#"{"fan": "fan0", "duty_pct": 80}"#,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"], "applied");
    assert_eq!(body["duty_pct"], 80.0);
    d.wait_reading("fan at 80 %", |v| fan_duty(v) == Some(80.0))
        .await;

    // Bad bodies: 400 invalid_body naming the problem.
    for (body, needle) in [
        (r#"{"fan": "fan0", "duty_pct": "lots"}"#, "duty_pct"),
        (r#"{"fan": "fan0", "duty_pct": 150}"#, "duty_pct"),
        (r#"{"fan": "fan0", "duty_pct": 50, "turbo": true}"#, "turbo"),
        (r#"{"duty_pct": 50}"#, "fan"),
        (r#"{"fan": "fan0", "duty_pct": "#, "EOF"),
    ] {
        let (status, code, v) =
            error_code(d.post_json("/api/v1/fan", Some(OPERATOR), body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_body"),
            "{body}: {v}"
        );
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let resp = d
        .http
        .post(d.url("/api/v1/fan"))
        .bearer_auth(OPERATOR)
        .body(r#"{"fan": "fan0", "duty_pct": 50}"#)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (415, "unsupported_media_type"));
    let (status, code, _) = error_code(
        d.post_json(
            "/api/v1/fan",
            Some(OPERATOR),
            r#"{"fan": "fan9", "duty_pct": 50}"#,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_cpu_sensor_forces_the_fail_safe_state() {
    let body = "[hal]\nbackend = \"sim\"\nnoise = false\nfan_duty_pct = 0.0\n\
                faults = [{ kind = \"sensor_fault\", sensor = \"cpu\" }]\n\
                [sampling]\ninterval = \"20ms\"\n";
    let d = TestDaemon::start_toml(body).await;
    d.wait_ready().await;
    let safe = wrale_core::BoardProfile::builtin(wrale_core::BoardModel::Pi4B)
        .fan
        .safe_duty_pct
        .get();
    d.wait_reading("fan at the safe duty", |v| fan_duty(v) == Some(safe))
        .await;
    let alerts = d.get_json("/api/v1/alerts", VIEWER).await;
    let ids: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"sensor_untrusted"), "{alerts}");
    // Lowering the fan is refused while the temperature is unknown.
    let (status, code, v) = error_code(
        d.post_json(
            "/api/v1/fan",
            Some(OPERATOR),
            r#"{"fan": "fan0", "duty_pct": 0}"#,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "policy_violation"), "{v}");
    let rule = v["error"]["rule"].as_str().unwrap();
    assert_eq!(rule, "thermal.fan_below_curve", "{v}");
    let text = d.get("/metrics", Some(VIEWER)).await.text().await.unwrap();
    assert!(
        text.contains("wrale_sensor_fault{sensor=\"cpu\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("wrale_alert_active{alert=\"sensor_untrusted\""),
        "{text}"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_fans_at_their_safe_duty() {
    let sim = wrale_hal::sim::SimBoard::new(&wrale_hal::SimConfig::default()).unwrap();
    let board = sim.board();
    let d = TestDaemon::start_with(SIM, |daemon| daemon.board(board)).await;
    d.wait_ready().await;
    let safe = sim.board().profile().fan.safe_duty_pct;
    let fan = sim.board().fan("fan0").unwrap().clone();
    // A cool board: the policy's fan curve runs the fan below its safe duty.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while fan.duty().unwrap() == safe {
        assert!(
            std::time::Instant::now() < deadline,
            "fan never left the safe duty"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    d.stop().await.unwrap();
    assert_eq!(fan.duty().unwrap(), safe, "fail-safe duty after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_fan_command_validates_then_confirms_once() {
    let d = TestDaemon::start().await;
    d.wait_ready().await;
    let resp = d
        .post_json(
            "/api/v1/fan/validate",
            Some(OPERATOR),
            r#"{"fan": "fan0", "duty_pct": 90}"#,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["verdict"], "allowed", "{v}");
    let token = v["token"]["id"].as_u64().unwrap();
    assert!(v["token"]["expires_at"].is_string());
    // Nothing applied yet.
    let r = d.get_json("/api/v1/readings", VIEWER).await;
    assert_ne!(fan_duty(&r), Some(90.0));
    let confirm = format!(r#"{{"token": {token}}}"#);
    let (status, code, _) = error_code(
        d.post_json("/api/v1/commands/confirm", Some(VIEWER), &confirm)
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let resp = d
        .post_json("/api/v1/commands/confirm", Some(OPERATOR), &confirm)
        .await;
    assert_eq!(resp.status(), 200);
    let applied: Value = resp.json().await.unwrap();
    assert_eq!(applied["result"], "applied");
    d.wait_reading("fan at 90 %", |v| fan_duty(v) == Some(90.0))
        .await;
    // Single use.
    let (status, code, v) = error_code(
        d.post_json("/api/v1/commands/confirm", Some(OPERATOR), &confirm)
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "policy_violation"), "{v}");
    assert_eq!(v["error"]["rule"], "confirm.unknown_token");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_run_on_the_board() {
    let d = TestDaemon::start().await;
    d.wait_ready().await;
    let (status, code, _) =
        error_code(d.post_json("/api/v1/diagnostics", Some(VIEWER), "").await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let resp = d.post_json("/api/v1/diagnostics", Some(OPERATOR), "").await;
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["backend"], "sim");
    assert!(!report["checks"].as_array().unwrap().is_empty(), "{report}");
    assert!(report["status"].is_string());
    let (status, code, v) = error_code(
        d.post_json(
            "/api/v1/diagnostics",
            Some(OPERATOR),
            r#"{"checks": ["nope"]}"#,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_body"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("checks"),
        "{v}"
    );
    // Sampling goes on afterwards.
    assert_eq!(d.get("/health/ready", None).await.status(), 200);
    d.stop().await.unwrap();
}
