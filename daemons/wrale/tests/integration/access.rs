//! Login, users, tokens, enrollment tokens and the audit log.

use std::os::unix::fs::PermissionsExt;

use crate::support::{Home, TestServer, admin, with_token};

#[tokio::test]
async fn login_stores_a_private_session_used_by_later_commands() {
    let server = TestServer::start().await;
    let home = Home::new();
    let r = home
        .run_with_stdin(
            &[
                "--url",
                &server.url,
                "login",
                "-u",
                "admin",
                "--password-stdin",
            ],
            Some(&format!("{}\n", server.admin_password)),
        )
        .await
        .ok();
    assert!(r.stderr.contains("Logged in"), "{}", r.stderr);
    let file = home.config_file();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&server.url), "{text}");
    assert!(text.contains("wrs_"), "{text}");

    // No --url, no --token: both come from the file.
    let me = home.run(&["whoami", "--json"]).await.ok().json();
    assert_eq!(me["name"], "admin");
    assert_eq!(me["kind"], "user");
    assert_eq!(me["role"], "admin");
    let r = home.run(&["whoami"]).await.ok();
    assert!(r.stdout.contains("admin"), "{}", r.stdout);

    // Logout revokes the session and forgets it.
    home.run(&["logout"]).await.ok();
    assert!(!std::fs::read_to_string(&file).unwrap().contains("wrs_"));
    let r = home.run(&["whoami"]).await.exit(1);
    assert!(r.stderr.contains("(unauthorized)"), "{}", r.stderr);
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let home = Home::new();
    let r = home
        .run_with_stdin(
            &[
                "--url",
                &server.url,
                "login",
                "--username",
                "admin",
                "--password-stdin",
            ],
            Some("wrong-password\n"),
        )
        .await
        .exit(1);
    assert!(
        r.stderr.trim_end().ends_with("(unauthorized)"),
        "{}",
        r.stderr
    );
    assert!(!home.config_file().exists());
    // --password-stdin without a user name is a usage error.
    home.run_with_stdin(
        &["--url", &server.url, "login", "--password-stdin"],
        Some("x\n"),
    )
    .await
    .exit(2);
}

#[tokio::test]
async fn tokens_are_created_listed_used_and_revoked() {
    let server = TestServer::start().await;
    let home = Home::new();
    let created = admin(
        &home,
        &server,
        &["token", "create", "ci", "--role", "viewer", "--json"],
    )
    .await
    .ok()
    .json();
    let secret = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wrt_"), "{created}");
    assert_eq!(created["role"], "viewer");

    // Human output: the secret alone on stdout.
    let r = admin(&home, &server, &["token", "create", "other"])
        .await
        .ok();
    assert!(r.stdout.trim().starts_with("wrt_"), "{}", r.stdout);
    assert_eq!(r.stdout.trim().lines().count(), 1);

    let me = home
        .run(&with_token(&server, &secret, &["whoami", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(me["kind"], "token");
    assert_eq!(me["name"], "ci");
    assert_eq!(me["role"], "viewer");

    let list = admin(&home, &server, &["token", "list", "--json"])
        .await
        .ok()
        .json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id.as_str()),
        "{list}"
    );
    let r = admin(&home, &server, &["token", "list"]).await.ok();
    assert!(r.stdout.starts_with("ID"), "{}", r.stdout);
    assert!(r.stdout.contains(" ci "), "{}", r.stdout);

    // A viewer token may not create groups: fleetd's 403 code is shown.
    let r = home
        .run(&with_token(&server, &secret, &["group", "create", "lab"]))
        .await
        .exit(1);
    assert!(r.stderr.trim_end().ends_with("(forbidden)"), "{}", r.stderr);

    admin(&home, &server, &["token", "revoke", &id]).await.ok();
    let r = home
        .run(&with_token(&server, &secret, &["whoami"]))
        .await
        .exit(1);
    assert!(r.stderr.contains("(unauthorized)"), "{}", r.stderr);
}

#[tokio::test]
async fn users_are_created_listed_and_deleted() {
    let server = TestServer::start().await;
    let home = Home::new();
    let u = home
        .run_with_stdin(
            &with_token(
                &server,
                &server.admin_token,
                &[
                    "user",
                    "create",
                    "bob",
                    "--role",
                    "operator",
                    "--password-stdin",
                    "--json",
                ],
            ),
            Some("a-long-enough-password\n"),
        )
        .await
        .ok()
        .json();
    assert_eq!(u["name"], "bob");
    assert_eq!(u["role"], "operator");
    let r = admin(&home, &server, &["user", "list"]).await.ok();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("bob ") && l.contains("operator")),
        "{}",
        r.stdout
    );

    // bob can log in with that password.
    let bob = Home::new();
    bob.run_with_stdin(
        &[
            "--url",
            &server.url,
            "login",
            "-u",
            "bob",
            "--password-stdin",
        ],
        Some("a-long-enough-password\n"),
    )
    .await
    .ok();
    let me = bob.run(&["whoami", "--json"]).await.ok().json();
    assert_eq!(me["role"], "operator");

    admin(&home, &server, &["user", "delete", "bob"]).await.ok();
    let list = admin(&home, &server, &["user", "list", "--json"])
        .await
        .ok()
        .json();
    assert!(
        !list.as_array().unwrap().iter().any(|u| u["name"] == "bob"),
        "{list}"
    );
    let r = admin(&home, &server, &["user", "delete", "bob"])
        .await
        .exit(1);
    assert!(r.stderr.contains("(not_found)"), "{}", r.stderr);
}

#[tokio::test]
async fn enrollment_tokens_and_audit() {
    let server = TestServer::start().await;
    let home = Home::new();
    admin(&home, &server, &["group", "create", "lab"])
        .await
        .ok();
    let created = admin(
        &home,
        &server,
        &[
            "enroll",
            "create",
            "--group",
            "lab",
            "--uses",
            "3",
            "--expires-in",
            "2h",
            "-l",
            "role=cam",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert!(
        created["token"].as_str().unwrap().starts_with("wre_"),
        "{created}"
    );
    assert_eq!(created["uses"], 3);
    assert_eq!(created["group"], "lab");
    assert_eq!(created["labels"]["role"], "cam");
    let id = created["id"].as_str().unwrap().to_owned();

    let r = admin(&home, &server, &["enroll", "list"]).await.ok();
    assert!(
        r.stdout.contains(&id) && r.stdout.contains("0/3"),
        "{}",
        r.stdout
    );
    // An unknown group is refused by fleetd with its code.
    let r = admin(&home, &server, &["enroll", "create", "--group", "nope"])
        .await
        .exit(1);
    assert!(r.stderr.starts_with("wrale: "), "{}", r.stderr);
    admin(&home, &server, &["enroll", "delete", &id]).await.ok();

    // The audit log has what was just done, newest first.
    let entries = admin(&home, &server, &["audit", "--json"])
        .await
        .ok()
        .json();
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "group.create",
        "enrollment_token.create",
        "enrollment_token.delete",
    ] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
    let filtered = admin(
        &home,
        &server,
        &["audit", "--action", "group.create", "--json"],
    )
    .await
    .ok()
    .json();
    let filtered = filtered.as_array().unwrap();
    assert_eq!(filtered.len(), 1, "{filtered:?}");
    assert_eq!(filtered[0]["target"], "group:lab");
    let r = admin(&home, &server, &["audit", "--limit", "2"]).await.ok();
    assert_eq!(r.stdout.lines().count(), 3, "{}", r.stdout);
    assert!(r.stdout.starts_with("SEQ"), "{}", r.stdout);
}
