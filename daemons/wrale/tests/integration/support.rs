//! Running the `wrale` binary with a private config directory.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

pub use fleetd::testing::TestServer;

/// A place for one test's CLI config (`$XDG_CONFIG_HOME`, `$HOME`).
#[derive(Debug)]
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Where `wrale login` stores its config.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("xdg").join("wrale").join("cli.toml")
    }

    /// A `wrale` command with this home and no inherited WRALE_* variables.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wrale"));
        c.args(args)
            .env_remove("WRALE_URL")
            .env_remove("WRALE_TOKEN")
            .env_remove("WRALE_CLI_CONFIG")
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs `wrale args` (with `stdin` fed in) and waits at most 60 s.
    pub async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut c = self.command(args);
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().expect("spawn wrale");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(text.as_bytes()).await.expect("write stdin");
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("wrale {args:?} did not finish within 60 s"))
            .expect("wait for wrale");
        Run::from(out, args)
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None).await
    }
}

/// What one run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    args: Vec<String>,
}

impl Run {
    fn from(out: Output, args: &[&str]) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "wrale {:?} failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn exit(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "wrale {:?}: expected exit {code}\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "wrale {:?}: stdout is not JSON ({e}):\n{}",
                self.args, self.stdout
            )
        })
    }
}

/// `["--url", url, "--token", token, args...]`.
pub fn with_token<'a>(server: &'a TestServer, token: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--url", server.url.as_str(), "--token", token];
    v.extend_from_slice(args);
    v
}

/// Runs `wrale` as the admin (API token from the test server).
pub async fn admin(home: &Home, server: &TestServer, args: &[&str]) -> Run {
    home.run(&with_token(server, &server.admin_token, args))
        .await
}

/// A client of the server as the admin, for setting things up through the API.
pub fn api(server: &TestServer) -> wrale_client::Client {
    wrale_client::Client::new(&server.url, Some(server.admin_token.clone())).expect("client")
}
