//! Exit codes and errors that need no server, or a wrong one.

use crate::support::{Home, TestServer, admin};

#[tokio::test]
async fn bad_usage_exits_2_with_clap_message() {
    let home = Home::new();
    for args in [
        &["frobnicate"][..],
        &["device"],
        &["device", "list", "--limit", "0"],
        &["device", "list", "--label", "no-equals"],
        &["token", "create", "ci", "--role", "root"],
        &["config", "get", "--effective"],
    ] {
        let r = home.run(args).await.exit(2);
        // A message (an error, or the help of a noun given without a verb) on stderr.
        assert!(
            r.stderr.contains("error:") || r.stderr.contains("Usage: wrale"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    let r = home.run(&["--help"]).await.ok();
    assert!(r.stdout.contains("device"), "{}", r.stdout);
}

#[tokio::test]
async fn invalid_arguments_found_after_parsing_exit_2() {
    let home = Home::new();
    // A bad group id is refused by wrale-core's id rules before anything is sent
    // (nothing listens on port 9, so reaching the network would be exit 1).
    let r = home
        .run(&[
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "wrt_x",
            "group",
            "create",
            "Bad_Id",
        ])
        .await
        .exit(2);
    assert!(
        r.stderr.starts_with("wrale: invalid group id"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.trim_end().ends_with("(usage)"), "{}", r.stderr);
    let r = home
        .run(&[
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "wrt_x",
            "device",
            "command",
            "pi-1",
            "explode",
        ])
        .await
        .exit(2);
    assert!(r.stderr.contains("invalid command explode"), "{}", r.stderr);
    let r = home
        .run(&["--url", "not a url", "--token", "t", "device", "list"])
        .await
        .exit(2);
    assert!(r.stderr.contains("(invalid_argument)"), "{}", r.stderr);
}

#[tokio::test]
async fn unreachable_server_is_a_transport_failure() {
    let home = Home::new();
    // Bind and drop a listener: the port is closed, the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let r = home
        .run(&["--url", &url, "--token", "wrt_x", "device", "list"])
        .await
        .exit(1);
    assert!(r.stderr.starts_with("wrale: "), "{}", r.stderr);
    assert!(r.stderr.trim_end().ends_with("(transport)"), "{}", r.stderr);
}

#[tokio::test]
async fn no_token_and_wrong_token_are_unauthorized() {
    let server = TestServer::start().await;
    let home = Home::new();
    // No token at all: refused before calling, with the server-side code.
    let r = home
        .run(&["--url", &server.url, "device", "list"])
        .await
        .exit(1);
    assert!(r.stderr.contains("not logged in"), "{}", r.stderr);
    assert!(
        r.stderr.trim_end().ends_with("(unauthorized)"),
        "{}",
        r.stderr
    );
    // A wrong token: fleetd's 401 and its code.
    let r = home
        .run(&[
            "--url",
            &server.url,
            "--token",
            "wrt_not-a-real-token",
            "device",
            "list",
        ])
        .await
        .exit(1);
    assert!(r.stderr.starts_with("wrale: "), "{}", r.stderr);
    assert!(
        r.stderr.trim_end().ends_with("(unauthorized)"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    // The same through the environment.
    let r = home
        .command(&["device", "list"])
        .env("WRALE_URL", &server.url)
        .env("WRALE_TOKEN", "wrt_nope")
        .output()
        .await
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("(unauthorized)"));
    // A 404 keeps fleetd's code too.
    let r = admin(&home, &server, &["device", "show", "nope"])
        .await
        .exit(1);
    assert!(r.stderr.trim_end().ends_with("(not_found)"), "{}", r.stderr);
}

#[tokio::test]
async fn completions_are_printed() {
    let home = Home::new();
    let r = home.run(&["completions", "bash"]).await.ok();
    assert!(
        r.stdout.contains("wrale"),
        "{}",
        &r.stdout[..r.stdout.len().min(200)]
    );
    assert!(r.stdout.contains("enroll"));
    home.run(&["completions", "zsh"]).await.ok();
}
