//! Config layers, twin history and rollback, device commands and telemetry
//! through the real `wrale` binary: its output, exit codes and messages.

use serde_json::{Value, json};
use wrale_client::models::{BoardModel, DeviceId, EnrollRequest, NewEnrollmentToken};

use crate::metald::{Metald, eventually};
use crate::support::{Home, TestServer, admin, api};

/// Enrolls `id` into `group` through the API (what metald does).
async fn enroll(server: &TestServer, id: &str, group: &str) {
    let token = api(server)
        .create_enrollment_token(&NewEnrollmentToken {
            group: Some(group.parse().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    let req = EnrollRequest::new(token.token, DeviceId::new(id).unwrap(), BoardModel::Pi4B);
    let anonymous = wrale_client::Client::new(&server.url, None).unwrap();
    anonymous.enroll(&req).await.expect("enroll");
}

async fn desired(server: &TestServer, id: &str) -> Value {
    let t = api(server).get_twin(id).await.unwrap();
    serde_json::to_value(&t).unwrap()["desired"].clone()
}

#[tokio::test]
async fn config_get_set_apply_history_rollback_and_moves() {
    let server = TestServer::start().await;
    let home = Home::new();
    for g in ["lab", "hot"] {
        admin(&home, &server, &["group", "create", g]).await.ok();
    }
    enroll(&server, "pi-1", "lab").await;

    // get: an empty layer, for people and for scripts.
    let r = admin(&home, &server, &["config", "get"]).await.ok();
    assert!(r.stdout.contains("No fields."), "{}", r.stdout);
    let r = admin(&home, &server, &["config", "get", "--json"])
        .await
        .ok();
    assert_eq!(r.json(), json!({}));

    // set: fields merge, values typed as JSON when they parse.
    let r = admin(
        &home,
        &server,
        &[
            "config",
            "set",
            "--group",
            "lab",
            "fan_profile=cool",
            "warn_c=65",
        ],
    )
    .await
    .ok();
    assert!(
        r.stdout.contains("fan_profile") && r.stdout.contains("cool"),
        "{}",
        r.stdout
    );
    let layer = admin(
        &home,
        &server,
        &["config", "get", "--group", "lab", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(layer, json!({"fan_profile": "cool", "warn_c": 65}));
    let d = desired(&server, "pi-1").await;
    assert_eq!(d["fan_profile"], "cool", "{d}");

    // Refusals: the board floor (exit 1, rule named), a field that does not exist,
    // a value of the wrong type, nothing to set (usage, exit 2), a bad scope id.
    let r = admin(
        &home,
        &server,
        &["config", "set", "--group", "lab", "critical_c=95"],
    )
    .await
    .exit(1);
    assert!(
        r.stderr.starts_with("wrale: ")
            && r.stderr.contains("policy_violation")
            && r.stderr.contains("threshold_above_board")
            && r.stderr.contains("pi-1"),
        "{}",
        r.stderr
    );
    let r = admin(
        &home,
        &server,
        &["config", "set", "--group", "lab", "fan_speed=9"],
    )
    .await
    .exit(1);
    assert!(
        r.stderr.contains("fan_speed") && r.stderr.contains("invalid_body"),
        "{}",
        r.stderr
    );
    let r = admin(
        &home,
        &server,
        &["config", "set", "--group", "lab", "warn_c=hot"],
    )
    .await
    .exit(1);
    assert!(r.stderr.contains("warn_c"), "{}", r.stderr);
    let r = admin(&home, &server, &["config", "set", "--group", "lab"])
        .await
        .exit(2);
    assert!(r.stderr.contains("nothing to set"), "{}", r.stderr);
    let r = admin(
        &home,
        &server,
        &["config", "set", "--group", "Lab!", "warn_c=60"],
    )
    .await
    .exit(2);
    assert!(r.stderr.contains("Lab!"), "{}", r.stderr);
    let r = admin(
        &home,
        &server,
        &["config", "set", "--group", "nosuch", "warn_c=60"],
    )
    .await
    .exit(1);
    assert!(r.stderr.contains("not_found"), "{}", r.stderr);
    assert_eq!(
        admin(
            &home,
            &server,
            &["config", "get", "--group", "lab", "--json"]
        )
        .await
        .ok()
        .json(),
        json!({"fan_profile": "cool", "warn_c": 65}),
        "nothing written by the refusals"
    );

    // apply: a TOML file replaces the layer; JSON on stdin for a device layer.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.toml");
    std::fs::write(&file, "fan_profile = \"quiet\"\nthrottle_c = 78\n").unwrap();
    admin(
        &home,
        &server,
        &["config", "apply", "--group", "lab", file.to_str().unwrap()],
    )
    .await
    .ok();
    let d = desired(&server, "pi-1").await;
    assert_eq!(d["fan_profile"], "quiet", "{d}");
    assert!(d.get("warn_c").is_none_or(Value::is_null), "replaced: {d}");
    let r = home
        .run_with_stdin(
            &crate::support::with_token(
                &server,
                &server.admin_token,
                &["config", "apply", "--device", "pi-1", "-"],
            ),
            Some(r#"{"warn_c": 60}"#),
        )
        .await
        .ok();
    assert!(r.stdout.contains("warn_c"), "{}", r.stdout);
    let eff = admin(
        &home,
        &server,
        &["config", "get", "--device", "pi-1", "--effective", "--json"],
    )
    .await
    .ok()
    .json();
    let eff_text = eff.to_string();
    assert!(
        eff_text.contains("group:lab") && eff_text.contains("device:pi-1"),
        "{eff}"
    );
    let r = admin(
        &home,
        &server,
        &["config", "get", "--device", "pi-1", "--effective"],
    )
    .await
    .ok();
    assert!(
        r.stdout.starts_with("FIELD") && r.stdout.contains("group:lab"),
        "{}",
        r.stdout
    );
    // Bad files: unreadable is a failure (1), unparsable a usage error (2) naming it.
    let missing = dir.path().join("none.toml");
    admin(
        &home,
        &server,
        &[
            "config",
            "apply",
            "--group",
            "lab",
            missing.to_str().unwrap(),
        ],
    )
    .await
    .exit(1);
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"warn_c\": ").unwrap();
    let r = admin(
        &home,
        &server,
        &[
            "config",
            "apply",
            "--group",
            "lab",
            broken.to_str().unwrap(),
        ],
    )
    .await
    .exit(2);
    assert!(r.stderr.contains("broken.json"), "{}", r.stderr);

    // history: newest first, the user as author, what each version wrote.
    let r = admin(&home, &server, &["device", "history", "pi-1"])
        .await
        .ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{}", r.stdout);
    assert!(
        lines[1].contains("user:admin") && lines[1].contains("warn_c"),
        "{}",
        r.stdout
    );
    let history = admin(&home, &server, &["device", "history", "pi-1", "--json"])
        .await
        .ok()
        .json();
    let items = history.as_array().unwrap();
    assert!(items.len() >= 3, "{history}");
    // rollback to the oldest version that wrote fan_profile (`cool`).
    let cool = items
        .iter()
        .rev()
        .find(|w| w["summary"].as_str().unwrap_or("").contains("fan_profile"))
        .unwrap_or_else(|| panic!("a fan_profile version in {history}"))["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = admin(&home, &server, &["device", "rollback", "pi-1", &cool])
        .await
        .ok();
    assert!(r.stderr.contains("Rolled pi-1 back"), "{}", r.stderr);
    let d = desired(&server, "pi-1").await;
    assert_eq!(d["fan_profile"], "cool", "{d}");
    let r = admin(&home, &server, &["device", "rollback", "pi-1", "zz"])
        .await
        .exit(1);
    assert!(
        r.stderr.contains("version") && r.stderr.contains("invalid_body"),
        "{}",
        r.stderr
    );
    let r = admin(&home, &server, &["device", "history", "pi-9"])
        .await
        .exit(1);
    assert!(r.stderr.contains("not_found"), "{}", r.stderr);

    // A move to another group brings that group's layer into the twin.
    admin(
        &home,
        &server,
        &["config", "set", "--group", "hot", "fan_profile=max"],
    )
    .await
    .ok();
    admin(&home, &server, &["device", "set", "pi-1", "--group", "hot"])
        .await
        .ok();
    let d = desired(&server, "pi-1").await;
    assert_eq!(d["fan_profile"], "max", "{d}");
    let eff = admin(
        &home,
        &server,
        &["config", "get", "--device", "pi-1", "--effective", "--json"],
    )
    .await
    .ok()
    .json();
    assert!(eff.to_string().contains("group:hot"), "{eff}");

    // Commands: checked before sending (2), refused by fleetd when offline (1).
    let r = admin(&home, &server, &["device", "command", "pi-1", "explode"])
        .await
        .exit(2);
    assert!(r.stderr.contains("invalid command explode"), "{}", r.stderr);
    let r = admin(
        &home,
        &server,
        &[
            "device",
            "command",
            "pi-1",
            "set_fan_duty",
            "fan=fan0",
            "duty_pct=50",
        ],
    )
    .await
    .exit(1);
    assert!(r.stderr.contains("device_offline"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_telemetry_of_a_real_device() {
    let server = TestServer::start().await;
    let home = Home::new();
    admin(&home, &server, &["group", "create", "lab"])
        .await
        .ok();
    let token = api(&server)
        .create_enrollment_token(&NewEnrollmentToken {
            group: Some("lab".parse().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    let _pi = Metald::start("pi-7", &server.url, &token.token);
    eventually("pi-7 online", async || {
        let d = api(&server).get_device("pi-7").await.ok()?;
        (d.status.to_string() == "online").then_some(())
    })
    .await;

    // Done, with the outcome; refused by the device's engine with its rule (exit 1).
    let r = admin(
        &home,
        &server,
        &[
            "device",
            "command",
            "pi-7",
            "set_fan_duty",
            "fan=fan0",
            "duty_pct=80",
            "--reason",
            "cli test",
        ],
    )
    .await
    .ok();
    assert!(r.stdout.contains("done"), "{}", r.stdout);
    let r = admin(
        &home,
        &server,
        &[
            "device",
            "command",
            "pi-7",
            "set_gpio",
            "pin=18",
            "level=high",
            "--json",
        ],
    )
    .await
    .exit(1);
    assert!(
        r.stderr.contains("reserved") || r.stderr.contains("gpio"),
        "{}",
        r.stderr
    );

    // Telemetry: raw points of the device, and a group aggregate.
    let points = eventually("raw telemetry of pi-7", async || {
        let r = admin(
            &home,
            &server,
            &[
                "telemetry",
                "pi-7",
                "--since",
                "10m",
                "--resolution",
                "raw",
                "--json",
            ],
        )
        .await
        .ok();
        let v = r.json();
        (v["points"].as_array()?.len() >= 3).then_some(v)
    })
    .await;
    assert_eq!(points["device"], "pi-7");
    assert_eq!(points["metric"], "cpu_temp_c");
    assert_eq!(points["resolution"], "raw");
    let t = points["points"][0]["value"].as_f64().unwrap();
    assert!((0.0..120.0).contains(&t), "{points}");
    let r = admin(
        &home,
        &server,
        &["telemetry", "pi-7", "--since", "10m", "--resolution", "raw"],
    )
    .await
    .ok();
    assert!(
        r.stdout.starts_with("pi-7 cpu_temp_c (raw)") && r.stdout.contains("TIME"),
        "{}",
        r.stdout
    );
    let g = eventually("a group aggregate", async || {
        let r = admin(
            &home,
            &server,
            &[
                "telemetry",
                "--group",
                "lab",
                "--since",
                "10m",
                "--resolution",
                "1m",
                "--agg",
                "max",
                "--json",
            ],
        )
        .await
        .ok();
        let v = r.json();
        (!v["points"].as_array()?.is_empty()).then_some(v)
    })
    .await;
    assert_eq!(g["agg"], "max", "{g}");
    assert_eq!(g["devices"], json!(["pi-7"]), "{g}");
    assert_eq!(g["points"][0]["devices"], 1, "{g}");
    let r = admin(
        &home,
        &server,
        &["telemetry", "--group", "lab", "--since", "10m"],
    )
    .await
    .ok();
    assert!(
        r.stdout.starts_with("group lab (1 devices)") && r.stdout.contains("AVG"),
        "{}",
        r.stdout
    );

    // Bad input: usage errors (2) before anything is sent, server refusals (1).
    for args in [
        &["telemetry"][..],
        &["telemetry", "pi-7", "--group", "lab"],
        &["telemetry", "pi-7", "--since", "yesterday"],
        &["telemetry", "pi-7", "--resolution", "5m"],
        &["telemetry", "pi-7", "--agg", "max"],
        &[
            "telemetry",
            "pi-7",
            "--since",
            "2030-01-02T00:00:00Z",
            "--until",
            "2030-01-01T00:00:00Z",
        ],
    ] {
        admin(&home, &server, args).await.exit(2);
    }
    let r = admin(
        &home,
        &server,
        &["telemetry", "pi-7", "--metric", "humidity"],
    )
    .await
    .exit(1);
    assert!(
        r.stderr.contains("invalid_query") && r.stderr.contains("metric"),
        "{}",
        r.stderr
    );
    let r = admin(
        &home,
        &server,
        &["telemetry", "--group", "lab", "--resolution", "raw"],
    )
    .await
    .exit(1);
    assert!(r.stderr.contains("raw"), "{}", r.stderr);
    admin(&home, &server, &["telemetry", "pi-0"]).await.exit(1);
}
