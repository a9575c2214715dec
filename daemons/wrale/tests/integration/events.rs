//! `wrale events` against fleetd's live stream.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use wrale_client::models::{NewAlert, NewGroup, Severity};

use crate::support::{Home, TestServer, api};

/// Spawns `wrale events ...`, waits for its "Following events" line, runs
/// `trigger`, and returns the exit code and stdout.
async fn follow(server: &TestServer, extra: &[&str], trigger: impl AsyncFnOnce()) -> (i32, String) {
    let home = Home::new();
    let mut args = vec![
        "--url",
        server.url.as_str(),
        "--token",
        server.admin_token.as_str(),
        "events",
    ];
    args.extend_from_slice(extra);
    let mut child = home.command(&args).spawn().expect("spawn");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("wrale events announced itself")
        .unwrap()
        .unwrap_or_default();
    assert!(first.contains("Following events"), "{first}");
    trigger().await;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("wrale events stopped after --count events")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn events_prints_json_lines_of_the_chosen_kind() {
    let server = TestServer::start().await;
    let (code, stdout) = follow(
        &server,
        &["--json", "--kind", "alert", "--count", "1"],
        async || {
            let c = api(&server);
            // Not an alert: filtered out by fleetd.
            c.create_group(&NewGroup {
                id: "lab".parse().unwrap(),
                name: None,
                parent: None,
            })
            .await
            .unwrap();
            c.raise_alert(&NewAlert {
                device: None,
                code: "custom:door".into(),
                severity: Severity::Info,
                message: "the door is open".into(),
                key: None,
            })
            .await
            .unwrap();
        },
    )
    .await;
    assert_eq!(code, 0, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let e: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(e["kind"], "alert");
    assert_eq!(e["data"]["alert"]["code"], "custom:door");
    assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
}

#[tokio::test]
async fn events_prints_human_lines() {
    let server = TestServer::start().await;
    let (code, stdout) = follow(&server, &["--kind", "alert", "--count", "1"], async || {
        api(&server)
            .raise_alert(&NewAlert {
                device: None,
                code: "custom:fire-drill".into(),
                severity: Severity::Critical,
                message: "drill".into(),
                key: None,
            })
            .await
            .unwrap();
    })
    .await;
    assert_eq!(code, 0, "{stdout}");
    let line = stdout.lines().next().unwrap_or_default();
    assert!(
        line.contains(" alert ") && line.contains("custom:fire-drill"),
        "{stdout}"
    );
}

#[tokio::test]
async fn events_with_a_bad_token_fails_with_the_server_code() {
    let server = TestServer::start().await;
    let home = Home::new();
    let r = home
        .run(&["--url", &server.url, "--token", "wrt_bad", "events"])
        .await
        .exit(1);
    assert!(
        r.stderr.trim_end().ends_with("(unauthorized)"),
        "{}",
        r.stderr
    );
    let r = home
        .run(&[
            "--url",
            &server.url,
            "--token",
            &server.admin_token,
            "events",
            "--group",
            "nope",
        ])
        .await
        .exit(1);
    assert!(
        r.stderr.trim_end().ends_with("(invalid_query)"),
        "{}",
        r.stderr
    );
}
