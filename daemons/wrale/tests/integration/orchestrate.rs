//! `wrale workload|placement|recommend|rollout` against a real fleetd: devices
//! enrolled without telemetry or agents, so workloads stay pending with the
//! reason, and a rollout's canary never reports the change applied: its gate
//! pauses the rollout, which `rollout watch` reports with exit 1.

use wrale_client::models::{BoardModel, DeviceId, EnrollRequest, Location, NewEnrollmentToken};

use crate::support::{Home, TestServer, admin, api};

async fn enroll(server: &TestServer, id: &str, rack: &str) {
    let token = api(server)
        .create_enrollment_token(&NewEnrollmentToken::default())
        .await
        .expect("enrollment token");
    let mut req = EnrollRequest::new(token.token, DeviceId::new(id).unwrap(), BoardModel::Pi4B);
    req.location = Location {
        site: Some("lab".into()),
        rack: Some(rack.into()),
        shelf: None,
        slot: None,
    };
    let anonymous = wrale_client::Client::new(&server.url, None).unwrap();
    anonymous.enroll(&req).await.expect("enroll");
}

const CONFIG: &str = "[orchestrate]\nscheduler_interval = \"200ms\"\nrollout_tick = \"100ms\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_placements_recommendations_and_rollouts_from_the_cli() {
    let server = TestServer::start_with(CONFIG).await;
    let home = Home::new();
    enroll(&server, "pi-1", "r1").await;
    enroll(&server, "pi-2", "r2").await;

    let out = admin(
        &home,
        &server,
        &[
            "workload", "create", "cam", "--cpu", "20", "--power", "2", "--label", "role=cam",
        ],
    )
    .await
    .ok();
    assert!(
        out.stdout.contains("Declared workload cam."),
        "{}",
        out.stdout
    );
    let list = admin(&home, &server, &["--json", "workload", "list"])
        .await
        .ok()
        .json();
    assert_eq!(list["items"][0]["name"], "cam");
    assert_eq!(list["items"][0]["constraints"]["labels"]["role"], "cam");
    let table = admin(&home, &server, &["workload", "list"]).await.ok();
    assert!(table.stdout.starts_with("NAME"), "{}", table.stdout);
    // No device has telemetry: the replica stays pending, with why.
    let pl = admin(&home, &server, &["--json", "placement", "list"])
        .await
        .ok()
        .json();
    assert_eq!(pl["items"], serde_json::json!([]));
    assert_eq!(pl["pending"][0]["workload"], "cam", "{pl}");
    assert_eq!(pl["pending"][0]["rejected"]["unschedulable"], 2, "{pl}");
    let text = admin(&home, &server, &["placement", "list"]).await.ok();
    assert!(text.stdout.contains("pending cam/0"), "{}", text.stdout);
    let recs = admin(&home, &server, &["--json", "recommend", "list"])
        .await
        .ok()
        .json();
    assert_eq!(recs["items"], serde_json::json!([]));
    admin(&home, &server, &["recommend", "accept", "fan-pi-1-quiet"])
        .await
        .exit(1);
    admin(&home, &server, &["workload", "delete", "cam"])
        .await
        .ok();
    admin(&home, &server, &["workload", "delete", "cam"])
        .await
        .exit(1);

    // A rollout whose canary never reports the change applied.
    let created = admin(
        &home,
        &server,
        &[
            "--json",
            "rollout",
            "create",
            "--id",
            "quiet",
            "--set",
            "fan_profile=quiet",
            "--device",
            "pi-1",
            "--device",
            "pi-2",
            "--canary",
            "pi-1",
            "--wave-size",
            "1",
            "--soak",
            "200ms",
            "--apply-timeout",
            "1s",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(created["status"], "running");
    assert_eq!(created["progress"]["devices_changed"], 1);
    let watch = admin(
        &home,
        &server,
        &["rollout", "watch", "quiet", "--interval", "0.2"],
    )
    .await
    .exit(1);
    assert!(watch.stdout.contains("quiet running"), "{}", watch.stdout);
    assert!(
        watch.stdout.contains("gate failed: pi-1 not_applied"),
        "{}",
        watch.stdout
    );
    assert!(watch.stderr.contains("paused"), "{}", watch.stderr);
    let list = admin(&home, &server, &["rollout", "list"]).await.ok();
    assert!(
        list.stdout.contains("quiet") && list.stdout.contains("paused"),
        "{}",
        list.stdout
    );
    let shown = admin(&home, &server, &["--json", "rollout", "show", "quiet"])
        .await
        .ok()
        .json();
    assert_eq!(shown["waves"][0]["status"], "failed");
    admin(&home, &server, &["rollout", "pause", "quiet"])
        .await
        .exit(1);
    let rb = admin(&home, &server, &["--json", "rollout", "rollback", "quiet"])
        .await
        .ok()
        .json();
    assert_eq!(rb["status"], "rolled_back");
    assert_eq!(rb["rolled_back"], serde_json::json!(["pi-1"]));
    admin(
        &home,
        &server,
        &[
            "rollout",
            "create",
            "--set",
            "fan_profile=quiet",
            "--device",
            "pi-1",
        ],
    )
    .await
    .exit(2);
}
