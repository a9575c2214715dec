//! Devices, groups and alerts through the CLI.

use wrale_client::models::{
    BoardModel, DeviceId, EnrollRequest, Location, NewAlert, NewEnrollmentToken, Severity,
};

use crate::support::{Home, TestServer, admin, api};

/// Enrolls `id` through the API (what metald does) into `group`.
async fn enroll(server: &TestServer, id: &str, group: Option<&str>, rack: &str) {
    let client = api(server);
    let token = client
        .create_enrollment_token(&NewEnrollmentToken {
            group: group.map(|g| g.parse().unwrap()),
            ..Default::default()
        })
        .await
        .expect("enrollment token");
    let mut req = EnrollRequest::new(token.token, DeviceId::new(id).unwrap(), BoardModel::Pi4B);
    req.serial = Some(format!("serial-{id}"));
    req.location = Location {
        site: Some("lab".into()),
        rack: Some(rack.into()),
        shelf: Some("2".into()),
        slot: None,
    };
    // Enrolling needs no bearer token.
    let anonymous = wrale_client::Client::new(&server.url, None).unwrap();
    let enrolled = anonymous.enroll(&req).await.expect("enroll");
    assert!(enrolled.credential.starts_with("wrd_"));
}

#[tokio::test]
async fn device_list_is_empty_then_shows_enrolled_devices() {
    let server = TestServer::start().await;
    let home = Home::new();
    let r = admin(&home, &server, &["device", "list"]).await.ok();
    assert_eq!(r.stdout, "No devices.\n");
    let empty = admin(&home, &server, &["device", "list", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(empty, serde_json::json!([]));

    admin(
        &home,
        &server,
        &["group", "create", "lab", "--name", "The lab"],
    )
    .await
    .ok();
    enroll(&server, "pi-1", Some("lab"), "r1").await;
    enroll(&server, "pi-2", None, "r2").await;

    let r = admin(&home, &server, &["device", "list"]).await.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(lines[0].starts_with("ID "), "{}", r.stdout);
    assert!(
        lines[1].starts_with("pi-1 ")
            && lines[1].contains("pi4b")
            && lines[1].contains("lab/r1/2/-"),
        "{}",
        r.stdout
    );

    let all = admin(&home, &server, &["device", "list", "--json"])
        .await
        .ok()
        .json();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["id"], "pi-1");
    assert_eq!(all[0]["group"], "lab");
    assert_eq!(all[0]["status"], "never");

    // Filters go to fleetd.
    let in_lab = admin(
        &home,
        &server,
        &["device", "list", "--group", "lab", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(in_lab.as_array().unwrap().len(), 1);
    let r2 = admin(
        &home,
        &server,
        &["device", "list", "--rack", "r2", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(r2[0]["id"], "pi-2");

    // Paging: one device a page; the cursor is announced on stderr.
    let r = admin(
        &home,
        &server,
        &["device", "list", "--limit", "1", "--json"],
    )
    .await
    .ok();
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert!(r.stderr.contains("--cursor pi-1"), "{}", r.stderr);
    let next = admin(
        &home,
        &server,
        &[
            "device", "list", "--limit", "1", "--cursor", "pi-1", "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(next[0]["id"], "pi-2");

    // show and set.
    let shown = admin(&home, &server, &["device", "show", "pi-1", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["serial"], "serial-pi-1");
    let r = admin(&home, &server, &["device", "show", "pi-2"])
        .await
        .ok();
    assert!(
        r.stdout.contains("id:") && r.stdout.contains("pi-2"),
        "{}",
        r.stdout
    );
    let set = admin(
        &home,
        &server,
        &[
            "device", "set", "pi-2", "-l", "role=cam", "--group", "lab", "--slot", "4", "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(set["labels"]["role"], "cam");
    assert_eq!(set["group"], "lab");
    assert_eq!(set["location"]["slot"], "4");
    assert_eq!(set["location"]["rack"], "r2");
    let set = admin(
        &home,
        &server,
        &[
            "device",
            "set",
            "pi-2",
            "--unlabel",
            "role",
            "--group",
            "",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(set["labels"], serde_json::json!({}));
    assert!(set["group"].is_null(), "{set}");
    let labelled = admin(
        &home,
        &server,
        &["device", "list", "-l", "role=cam", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(labelled, serde_json::json!([]));
}

#[tokio::test]
async fn groups_are_created_listed_shown_and_deleted() {
    let server = TestServer::start().await;
    let home = Home::new();
    let g = admin(&home, &server, &["group", "create", "site-a", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(g["id"], "site-a");
    assert_eq!(g["name"], "site-a");
    admin(
        &home,
        &server,
        &[
            "group", "create", "rack-1", "--parent", "site-a", "--name", "Rack one",
        ],
    )
    .await
    .ok();
    let list = admin(&home, &server, &["group", "list", "--json"])
        .await
        .ok()
        .json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(
        ids.contains(&"site-a") && ids.contains(&"rack-1"),
        "{ids:?}"
    );
    let r = admin(&home, &server, &["group", "list"]).await.ok();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("rack-1") && l.contains("Rack one") && l.ends_with("site-a")),
        "{}",
        r.stdout
    );
    let shown = admin(&home, &server, &["group", "show", "site-a", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["children"], serde_json::json!(["rack-1"]));
    // A duplicate is fleetd's conflict.
    let r = admin(&home, &server, &["group", "create", "site-a"])
        .await
        .exit(1);
    assert!(r.stderr.trim_end().ends_with("(conflict)"), "{}", r.stderr);
    admin(&home, &server, &["group", "delete", "rack-1"])
        .await
        .ok();
    let list = admin(&home, &server, &["group", "list", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn alerts_are_listed_acked_and_cleared() {
    let server = TestServer::start().await;
    let home = Home::new();
    let r = admin(&home, &server, &["alert", "list"]).await.ok();
    assert_eq!(r.stdout, "No alerts.\n");
    enroll(&server, "pi-1", None, "r1").await;
    let raised = api(&server)
        .raise_alert(&NewAlert {
            device: Some(DeviceId::new("pi-1").unwrap()),
            code: "fan_stall".into(),
            severity: Severity::Warning,
            message: "fan0 reads 0 rpm at 80 %".into(),
            key: None,
        })
        .await
        .expect("raise");
    let id = raised.id.to_string();

    let list = admin(&home, &server, &["alert", "list", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["code"], "fan_stall");
    assert_eq!(list[0]["state"], "raised");
    let r = admin(&home, &server, &["alert", "list"]).await.ok();
    assert!(
        r.stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with(&format!("{id} ")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("fan0 reads 0 rpm"), "{}", r.stdout);

    let acked = admin(&home, &server, &["alert", "ack", &id, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(acked["state"], "acked");
    assert!(
        acked["acked_by"].as_str().unwrap().contains("admin"),
        "{acked}"
    );
    let active = admin(
        &home,
        &server,
        &["alert", "list", "--state", "active", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(active.as_array().unwrap().len(), 1);
    admin(&home, &server, &["alert", "clear", &id]).await.ok();
    let active = admin(
        &home,
        &server,
        &["alert", "list", "--state", "active", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(active, serde_json::json!([]));
    let r = admin(&home, &server, &["alert", "list", "--severity", "loud"])
        .await
        .exit(1);
    assert!(
        r.stderr.trim_end().ends_with("(invalid_query)"),
        "{}",
        r.stderr
    );
    let r = admin(&home, &server, &["alert", "ack", "999"])
        .await
        .exit(1);
    assert!(r.stderr.contains("(not_found)"), "{}", r.stderr);
}
