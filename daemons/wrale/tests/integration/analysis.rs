//! `wrale analysis` and `wrale alert silence|fleet|dead-letters` against a real
//! fleetd whose analyzer runs every 200 ms.

use crate::support::{Home, TestServer, admin};

#[tokio::test]
async fn analysis_and_silences_through_the_binary() {
    let server = TestServer::start_with("[intel]\ninterval = \"200ms\"\n").await;
    let home = Home::new();

    // The analyzer runs with no telemetry: nothing to report, but it has run.
    let mut fleet = serde_json::Value::Null;
    for _ in 0..100 {
        fleet = admin(&home, &server, &["analysis", "fleet", "--json"])
            .await
            .ok()
            .json();
        if fleet["analysed"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(fleet["analysed"], true, "{fleet}");
    assert_eq!(fleet["devices"], serde_json::json!([]), "{fleet}");
    let r = admin(&home, &server, &["analysis", "fleet"]).await.ok();
    assert!(
        r.stdout.contains("No device with telemetry."),
        "{}",
        r.stdout
    );
    let spots = admin(&home, &server, &["analysis", "hotspots", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(spots["items"], serde_json::json!([]), "{spots}");
    let r = admin(&home, &server, &["analysis", "show", "pi-ghost"])
        .await
        .exit(1);
    assert!(r.stderr.contains("(not_found)"), "{}", r.stderr);

    // Silences: refused without a matcher, created, listed, deleted.
    let r = admin(
        &home,
        &server,
        &["alert", "silence", "create", "--for", "2h"],
    )
    .await
    .exit(2);
    assert!(r.stderr.contains("at least one of"), "{}", r.stderr);
    let s = admin(
        &home,
        &server,
        &[
            "alert",
            "silence",
            "create",
            "--rule",
            "hot_spot",
            "--for",
            "2h",
            "--comment",
            "aircon service",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(s["matcher"]["rule"], "hot_spot", "{s}");
    assert_eq!(s["comment"], "aircon service", "{s}");
    let list = admin(&home, &server, &["alert", "silence", "list", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(list[0]["id"], id.as_str(), "{list}");
    let r = admin(&home, &server, &["alert", "silence", "list"])
        .await
        .ok();
    assert!(r.stdout.contains("rule=hot_spot"), "{}", r.stdout);
    admin(&home, &server, &["alert", "silence", "delete", &id])
        .await
        .ok();
    let list = admin(&home, &server, &["alert", "silence", "list", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(list, serde_json::json!([]), "{list}");
    let r = admin(&home, &server, &["alert", "silence", "delete", &id])
        .await
        .exit(1);
    assert!(r.stderr.contains("(not_found)"), "{}", r.stderr);

    let r = admin(&home, &server, &["alert", "fleet"]).await.ok();
    assert!(r.stdout.contains("No open fleet alerts."), "{}", r.stdout);
    let dead = admin(&home, &server, &["alert", "dead-letters", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(dead, serde_json::json!([]), "{dead}");
}
