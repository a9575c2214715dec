//! Persistence in `data.dir`: the audit log of accepted and refused commands, the
//! twin, and a SIGKILL of the real binary followed by a restart on the same data.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// A simulated Pi whose CPU sensor is faulty: lowering the fan is refused,
/// raising it is allowed.
const FAULTY: &str = "[hal]\nbackend = \"sim\"\nnoise = false\n\
                      faults = [{ kind = \"sensor_fault\", sensor = \"cpu\" }]\n\
                      [sampling]\ninterval = \"20ms\"\n";

const LOWER: &str = r#"{"fan": "fan0", "duty_pct": 0}"#;
const RAISE: &str = r#"{"fan": "fan0", "duty_pct": 100}"#;

fn records(v: &Value) -> Vec<Value> {
    v["records"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lists_accepted_and_refused_commands_whoever_sends_them() {
    let d = TestDaemon::start_toml(FAULTY).await;
    d.wait_ready().await;
    for token in [OPERATOR, ADMIN] {
        let (status, code, v) =
            error_code(d.post_json("/api/v1/fan", Some(token), LOWER).await).await;
        assert_eq!((status, code.as_str()), (422, "policy_violation"), "{v}");
        assert!(
            v["error"]["rule"].as_str().is_some_and(|r| !r.is_empty()),
            "{v}"
        );
    }
    let (status, code, _) = error_code(d.post_json("/api/v1/fan", Some(VIEWER), RAISE).await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let (status, code, v) = error_code(
        d.post_json(
            "/api/v1/fan",
            Some(OPERATOR),
            r#"{"fan": "fan0", "duty_pct": "x"}"#,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_body"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("duty_pct"),
        "{v}"
    );
    let resp = d.post_json("/api/v1/fan", Some(OPERATOR), RAISE).await;
    assert_eq!(resp.status(), 200);

    let audit = d.get_json("/api/v1/audit", VIEWER).await;
    let recs = records(&audit);
    assert_eq!(recs.len(), 3, "{audit}");
    // Newest first.
    assert_eq!(recs[0]["seq"], 3);
    assert_eq!(recs[0]["verdict"]["status"], "allowed");
    assert_eq!(recs[0]["outcome"]["status"], "applied");
    assert_eq!(recs[0]["actor"]["id"], "operator");
    for (r, who) in recs[1..].iter().zip(["admin", "operator"]) {
        assert_eq!(r["verdict"]["status"], "refused", "{r}");
        assert!(r["verdict"]["rule"].is_string(), "{r}");
        assert_eq!(r["outcome"]["status"], "not_executed");
        assert_eq!(r["actor"]["id"], who);
        assert_eq!(r["command"]["type"], "set_fan_duty");
    }
    // Pagination.
    let page = d.get_json("/api/v1/audit?limit=1&before=3", VIEWER).await;
    assert_eq!(records(&page).len(), 1);
    assert_eq!(records(&page)[0]["seq"], 2);
    assert_eq!(page["next_before"], 2);
    let (status, code, v) = error_code(d.get("/api/v1/audit?limit=0", Some(VIEWER)).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_query"), "{v}");
    assert_eq!(v["error"]["param"], "limit", "{v}");
    let (status, code, v) = error_code(d.get("/api/v1/audit?before=x", Some(VIEWER)).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_query"), "{v}");
    assert_eq!(v["error"]["param"], "before", "{v}");
    assert_eq!(d.get("/api/v1/audit", None).await.status(), 401);

    let twin = d.get_json("/api/v1/twin", VIEWER).await;
    assert_eq!(twin["meta"]["id"], twin["device"], "{twin}");
    assert!(twin["reported"].is_object(), "{twin}");
    assert!(twin["desired"].is_object(), "{twin}");
    let history = d.get_json("/api/v1/twin/history", VIEWER).await;
    assert!(
        !history["versions"].as_array().unwrap().is_empty(),
        "{history}"
    );
    d.stop().await.unwrap();
}

/// The real binary on a data directory.
struct Metald {
    child: Child,
    base: String,
}

impl Metald {
    fn start(config: &std::path::Path) -> Metald {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_metald"));
        for (k, _) in std::env::vars() {
            if k.starts_with("WRALE_") || k == "NOTIFY_SOCKET" || k.starts_with("WATCHDOG_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("metald never logged `listening`");
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "listening" {
                break v["fields"]["addr"].as_str().unwrap().to_owned();
            }
        };
        Metald {
            child,
            base: format!("http://{addr}"),
        }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Metald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(c: &reqwest::Client, url: String) -> Value {
    let r = c.get(url).bearer_auth(VIEWER).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn post(c: &reqwest::Client, url: String, body: &str) -> u16 {
    c.post(url)
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn wait_samples(c: &reqwest::Client, base: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = c
            .get(format!("{base}/api/v1/state"))
            .bearer_auth(VIEWER)
            .send()
            .await
        {
            if r.status() == 200 {
                let v: Value = r.json().await.unwrap();
                if v["sampling"]["samples_total"].as_u64().unwrap_or(0) >= n {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "fewer than {n} samples");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every point in the ring (the daemon must not be running).
fn ring_points(data: &std::path::Path) -> Vec<wrale_sync::telemetry::Point> {
    let ring =
        wrale_sync::telemetry::ring::RingBuffer::open(data.join("telemetry"), 1 << 20, 16).unwrap();
    let (recs, _) = ring.peek(usize::MAX).unwrap();
    recs.iter()
        .flat_map(|r| wrale_sync::telemetry::decode_batch(r).unwrap().points)
        .collect()
}

fn seqs(v: &Value) -> Vec<u64> {
    records(v)
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_keep_twin_audit_and_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("metald.toml");
    let body = format!("{FAULTY}[api]\nbind = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n");
    std::fs::write(&config, config_text(dir.path(), &body, &[])).unwrap();
    let c = reqwest::Client::new();

    let mut m = Metald::start(&config);
    wait_samples(&c, &m.base, 1).await;
    assert_eq!(post(&c, format!("{}/api/v1/fan", m.base), RAISE).await, 200);
    assert_eq!(post(&c, format!("{}/api/v1/fan", m.base), LOWER).await, 422);
    wait_samples(&c, &m.base, 10).await;
    let audit1 = get(&c, format!("{}/api/v1/audit", m.base)).await;
    assert_eq!(seqs(&audit1), [2, 1], "{audit1}");
    let twin1 = get(&c, format!("{}/api/v1/twin", m.base)).await;
    m.kill9();

    let points1 = ring_points(&data);
    assert!(points1.len() >= 9, "{} points", points1.len());
    // A torn record at the ring's tail (a crash mid-write) is cut off on start.
    let mut segs: Vec<_> = std::fs::read_dir(data.join("telemetry"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    let tail = segs.last().unwrap();
    let mut bytes = std::fs::read(tail).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
    std::fs::write(tail, bytes).unwrap();

    let mut m = Metald::start(&config);
    wait_samples(&c, &m.base, 1).await;
    let audit2 = get(&c, format!("{}/api/v1/audit", m.base)).await;
    assert_eq!(
        records(&audit2),
        records(&audit1),
        "audit log kept as it was"
    );
    let twin2 = get(&c, format!("{}/api/v1/twin", m.base)).await;
    assert_eq!(twin2["meta"], twin1["meta"]);
    assert_eq!(twin2["device"], twin1["device"]);
    assert!(
        twin2["reported"]["readings"].is_object(),
        "reported state survives: {twin2}"
    );
    assert_eq!(post(&c, format!("{}/api/v1/fan", m.base), LOWER).await, 422);
    wait_samples(&c, &m.base, 10).await;
    let audit3 = get(&c, format!("{}/api/v1/audit", m.base)).await;
    assert_eq!(seqs(&audit3), [3, 2, 1], "{audit3}");
    assert_eq!(records(&audit3)[1..], records(&audit1)[..]);
    m.kill9();

    let points2 = ring_points(&data);
    assert!(
        points2.len() >= points1.len() + 9,
        "{} then {} points",
        points1.len(),
        points2.len()
    );
    assert_eq!(points2[..points1.len()], points1[..], "old points kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_layers_from_the_config_are_checked_before_start() {
    let layers = tempfile::tempdir().unwrap();
    let dir = layers.path().display().to_string();
    std::fs::write(
        layers.path().join("10-tight.toml"),
        "scope = \"fleet\"\n[thermal]\nwarn_c = 55.0\n",
    )
    .unwrap();
    std::fs::write(layers.path().join("ignored.txt"), "not a layer").unwrap();
    let body =
        format!("{SIM}[policy]\nlayers = [\"{dir}/*.toml\"]\n[data]\ndir = \"{dir}/data\"\n");
    let d = TestDaemon::start_toml(&format!("{SIM}[policy]\nlayers = [\"{dir}/*.toml\"]\n")).await;
    d.wait_ready().await;
    let p = d.get_json("/api/v1/policy", VIEWER).await;
    assert_eq!(p["engine"], "policy", "{p}");
    assert_eq!(p["layers"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["layers"][0]["layer"]["thermal"]["warn_c"], 55.0, "{p}");
    assert!(p["floor"]["thermal"].is_object(), "{p}");
    d.stop().await.unwrap();

    // A layer with a type error: the config is refused, naming file and line.
    std::fs::write(
        layers.path().join("20-bad.toml"),
        "scope = \"fleet\"\n\n[thermal]\nwarn_c = \"hot\"\n",
    )
    .unwrap();
    let e = metald::Config::from_toml_str(&body)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("policy.layers") && e.contains("20-bad.toml:4"),
        "{e}"
    );
    std::fs::remove_file(layers.path().join("20-bad.toml")).unwrap();

    // A layer that loosens the board's floor: the daemon refuses to start, naming the rule.
    std::fs::write(
        layers.path().join("30-loose.toml"),
        "scope = \"fleet\"\n[thermal]\ncritical_c = 150.0\n",
    )
    .unwrap();
    let config = metald::Config::from_toml_str(&body).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (signals, _handle) = metald::Signals::manual();
    let e = metald::run(config, listener, signals).await.unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("policy.layers") && e.contains("critical_c"),
        "{e}"
    );
}
