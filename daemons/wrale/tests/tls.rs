//! The `wrale` binary against a fleetd serving TLS (`[api.tls]`, a CA made at
//! test time): works with `--ca-cert` (or `WRALE_CA_CERT`, or `ca_cert` in the
//! config file), fails with a one-line error naming --ca-cert without it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fleetd::testing::TestServer;
use wrale_tls::testing::TestCa;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn wrale(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wrale"));
    c.args(args)
        .env_remove("WRALE_URL")
        .env_remove("WRALE_TOKEN")
        .env_remove("WRALE_CLI_CONFIG")
        .env_remove("WRALE_CA_CERT")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("xdg"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("wrale finishes within 60 s")
        .expect("run wrale");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_needs_the_fleet_ca_for_https() {
    let dir = tempfile::tempdir().unwrap();
    let f = TestCa::new("fleet CA").write(dir.path(), "", 1);
    let body = format!(
        "[api.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        f.cert.display(),
        f.key.display()
    );
    let server = TestServer::start_with(&body).await;
    assert!(server.url.starts_with("https://"));
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let ca = f.ca.to_str().unwrap();
    let url = server.url.as_str();
    let token = server.admin_token.as_str();

    // With --ca-cert: works (retried while the server starts).
    let mut ok = None;
    for _ in 0..100 {
        let r = wrale(
            &home,
            &[
                "--url",
                url,
                "--token",
                token,
                "--ca-cert",
                ca,
                "--json",
                "device",
                "list",
            ],
            &[],
        )
        .await;
        if r.code == 0 {
            ok = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = ok.expect("wrale device list with --ca-cert succeeds");
    assert!(ok.stdout.trim_start().starts_with('['), "{}", ok.stdout);

    // WRALE_CA_CERT does the same.
    let r = wrale(
        &home,
        &["--url", url, "--token", token, "group", "list"],
        &[("WRALE_CA_CERT", ca)],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Without: a clear one-line error, exit 1.
    let r = wrale(
        &home,
        &["--url", url, "--token", token, "device", "list"],
        &[],
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}", r = (&r.stdout, &r.stderr));
    let err = r.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("certificate is not trusted") && err.contains("--ca-cert"),
        "{err}"
    );

    // Another CA: refused the same way.
    let other = TestCa::new("other CA").write(dir.path(), "other-", 2);
    let r = wrale(
        &home,
        &[
            "--url",
            url,
            "--token",
            token,
            "--ca-cert",
            other.ca.to_str().unwrap(),
            "device",
            "list",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("certificate is not trusted"),
        "{}",
        r.stderr
    );

    // A missing CA file is named.
    let r = wrale(
        &home,
        &[
            "--url",
            url,
            "--token",
            token,
            "--ca-cert",
            "/nonexistent/ca.pem",
            "device",
            "list",
        ],
        &[],
    )
    .await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("/nonexistent/ca.pem"), "{}", r.stderr);

    // `ca_cert` in the config file (with its URL) is used too.
    let cfg = home.join("xdg").join("wrale").join("cli.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &cfg,
        format!("url = \"{url}\"\ntoken = \"{token}\"\nca_cert = \"{ca}\"\n"),
    )
    .unwrap();
    let r = wrale(&home, &["whoami"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
}
