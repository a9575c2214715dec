//! Telemetry end to end: devices POST encode_batch records with their own
//! credentials to a real fleetd on 127.0.0.1:0; users query them per device and per
//! group at every resolution; the maintenance task runs in the server.

use std::time::Duration;

use fleetd::testing::TestServer;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use wrale_core::Timestamp;
use wrale_sync::telemetry::{Channel, Point, encode_batch};

/// `POST` JSON as `token`, expecting `status`; the body.
async fn post(
    c: &Client,
    s: &TestServer,
    token: &str,
    path: &str,
    body: Value,
    status: StatusCode,
) -> Value {
    let r = c
        .post(s.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), status, "POST {path}");
    r.json().await.unwrap_or(Value::Null)
}

async fn get(c: &Client, s: &TestServer, token: &str, path: &str) -> (StatusCode, Value) {
    let r = c.get(s.url(path)).bearer_auth(token).send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Creates a group (with an optional parent).
pub async fn group(c: &Client, s: &TestServer, id: &str, parent: Option<&str>) {
    let body = match parent {
        Some(p) => json!({"id": id, "parent": p}),
        None => json!({"id": id}),
    };
    post(
        c,
        s,
        &s.admin_token,
        "/api/v1/groups",
        body,
        StatusCode::CREATED,
    )
    .await;
}

/// Enrolls `id` into `group`; its `wrd_` credential.
pub async fn enroll(c: &Client, s: &TestServer, id: &str, group: &str) -> String {
    let t = post(
        c,
        s,
        &s.admin_token,
        "/api/v1/enrollment-tokens",
        json!({"group": group}),
        StatusCode::CREATED,
    )
    .await;
    let body = json!({"token": t["token"], "device_id": id, "model": "pi4b", "serial": format!("serial-{id}")});
    let r = c
        .post(s.url("/api/v1/enroll"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "enroll {id}");
    let v: Value = r.json().await.unwrap();
    v["credential"].as_str().unwrap().to_owned()
}

/// POSTs one record with `cred`; the status and body.
pub async fn send(
    c: &Client,
    s: &TestServer,
    cred: &str,
    path_device: &str,
    record: Vec<u8>,
) -> (StatusCode, Value) {
    let r = c
        .post(s.url(&format!("/api/v1/devices/{path_device}/telemetry")))
        .bearer_auth(cred)
        .header("content-type", "application/octet-stream")
        .body(record)
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// `n` points every 10 s from `start`: cpu_temp_c = base + (i % 6), fan_rpm = 1000 + i.
pub fn points(start: i64, n: i64, base: f64) -> Vec<Point> {
    (0..n)
        .map(|i| {
            let mut p = Point::new(Timestamp::from_millis(start + i * 10_000));
            p.set(Channel::CpuTempC, base + (i % 6) as f64)
                .set(Channel::FanRpm, 1000.0 + i as f64);
            p
        })
        .collect()
}

/// The start of the minute 30 minutes ago (so ten-second points fill whole minutes).
pub fn recent_minute() -> i64 {
    let now = Timestamp::from_system(std::time::SystemTime::now()).as_millis();
    (now - 30 * 60_000) / 60_000 * 60_000
}

fn iso(ms: i64) -> String {
    Timestamp::from_millis(ms).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_write_their_own_telemetry_and_users_query_every_resolution() {
    let s = TestServer::start().await;
    let c = Client::new();
    group(&c, &s, "lab", None).await;
    group(&c, &s, "lab-a", Some("lab")).await;
    group(&c, &s, "other", None).await;
    let pi1 = enroll(&c, &s, "pi-1", "lab").await;
    let pi2 = enroll(&c, &s, "pi-2", "lab-a").await;
    let pi3 = enroll(&c, &s, "pi-3", "other").await;
    let start = recent_minute();

    // 20 minutes of 10-second points per device.
    let rec1 = encode_batch("pi-1", &points(start, 120, 40.0));
    let (st, v) = send(&c, &s, &pi1, "pi-1", rec1.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"inserted": 240, "duplicates": 0, "replayed": false, "dropped": 0})
    );
    let (st, _) = send(
        &c,
        &s,
        &pi2,
        "pi-2",
        encode_batch("pi-2", &points(start, 120, 50.0)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = send(
        &c,
        &s,
        &pi3,
        "pi-3",
        encode_batch("pi-3", &points(start, 120, 90.0)),
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    // Re-sent: nothing new. Overlapping: only the new points.
    let (_, v) = send(&c, &s, &pi1, "pi-1", rec1).await;
    assert_eq!(v["inserted"], 0);
    assert_eq!(v["replayed"], true);
    let (_, v) = send(
        &c,
        &s,
        &pi1,
        "pi-1",
        encode_batch("pi-1", &points(start + 1_190_000, 2, 40.0)),
    )
    .await;
    assert_eq!(
        (v["inserted"].as_u64(), v["duplicates"].as_u64()),
        (Some(2), Some(2))
    );

    // A device cannot write another's telemetry, nor smuggle it in its own path.
    let (st, v) = send(
        &c,
        &s,
        &pi1,
        "pi-2",
        encode_batch("pi-2", &points(start, 1, 0.0)),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = send(
        &c,
        &s,
        &pi1,
        "pi-1",
        encode_batch("pi-2", &points(start, 1, 0.0)),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "invalid_body");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("pi-2"),
        "{v}"
    );
    let (st, v) = send(&c, &s, &pi1, "pi-1", b"not a batch".to_vec()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("magic"),
        "{v}"
    );
    // Users do not write telemetry; devices do not read it.
    let (st, _) = send(
        &c,
        &s,
        &s.admin_token,
        "pi-1",
        encode_batch("pi-1", &points(start, 1, 0.0)),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = get(
        &c,
        &s,
        &pi1,
        "/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c",
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // A viewer reads.
    let viewer = post(
        &c,
        &s,
        &s.admin_token,
        "/api/v1/tokens",
        json!({"name": "dash", "role": "viewer"}),
        StatusCode::CREATED,
    )
    .await;
    let viewer = viewer["token"].as_str().unwrap().to_owned();
    let range = format!("from={}&to={}", iso(start), iso(start + 1_200_000));

    let (st, raw) = get(
        &c,
        &s,
        &viewer,
        &format!("/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c&{range}&resolution=raw"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{raw}");
    assert_eq!(raw["resolution"], "raw");
    let pts = raw["points"].as_array().unwrap();
    assert_eq!(pts.len(), 120);
    assert_eq!(pts[0], json!({"t": iso(start), "value": 40.0}));
    assert_eq!(pts[7]["value"], 41.0);

    let (_, m) = get(
        &c,
        &s,
        &viewer,
        &format!("/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c&{range}&resolution=1m"),
    )
    .await;
    let b = m["points"].as_array().unwrap();
    assert_eq!(b.len(), 20);
    assert_eq!(
        b[3],
        json!({"t": iso(start + 180_000), "min": 40.0, "max": 45.0, "avg": 42.5, "count": 6})
    );

    let (_, h) = get(
        &c,
        &s,
        &viewer,
        &format!("/api/v1/devices/pi-2/telemetry?metric=fan_rpm&{range}&resolution=1h"),
    )
    .await;
    let counts: u64 = h["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counts, 120);

    // auto: the last hour holds 121 raw points (<= 1000): raw. Three days: 1h.
    let (_, a) = get(
        &c,
        &s,
        &viewer,
        "/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c",
    )
    .await;
    assert_eq!(a["resolution"], "raw");
    assert_eq!(a["points"].as_array().unwrap().len(), 121);
    let now = Timestamp::from_system(std::time::SystemTime::now()).as_millis();
    let (_, a) = get(
        &c,
        &s,
        &viewer,
        &format!(
            "/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c&from={}",
            now - 3 * 86_400_000
        ),
    )
    .await;
    assert_eq!(a["resolution"], "1h");

    // Groups: lab has pi-1 and (through lab-a) pi-2, not pi-3.
    let q = format!("/api/v1/groups/lab/telemetry?metric=cpu_temp_c&{range}&resolution=1m");
    let (st, g) = get(&c, &s, &viewer, &q).await;
    assert_eq!(st, StatusCode::OK, "{g}");
    assert_eq!(g["devices"], json!(["pi-1", "pi-2"]));
    let gp = g["points"].as_array().unwrap();
    assert_eq!(gp.len(), 20);
    assert_eq!(gp[0], json!({"t": iso(start), "value": 47.5, "devices": 2}));
    let (_, g) = get(&c, &s, &viewer, &format!("{q}&agg=max")).await;
    assert_eq!(g["points"][0]["value"], 55.0);
    let (_, g) = get(&c, &s, &viewer, &format!("{q}&agg=min")).await;
    assert_eq!(g["points"][0]["value"], 40.0);
    let (_, g) = get(
        &c,
        &s,
        &viewer,
        "/api/v1/groups/lab-a/telemetry?metric=cpu_temp_c",
    )
    .await;
    assert_eq!(g["resolution"], "1m");
    assert_eq!(g["devices"], json!(["pi-2"]));

    // Bad queries name the parameter; unknown targets are 404; no token is 401.
    for (q, param) in [
        ("/api/v1/devices/pi-1/telemetry", "metric"),
        ("/api/v1/devices/pi-1/telemetry?metric=volts", "metric"),
        (
            "/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c&from=noon",
            "from",
        ),
        (
            "/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c&from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z",
            "from",
        ),
        (
            "/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c&resolution=10s",
            "resolution",
        ),
        (
            "/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c&colour=red",
            "colour",
        ),
        (
            "/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c&from=0&resolution=1m",
            "resolution",
        ),
        (
            "/api/v1/groups/lab/telemetry?metric=cpu_temp_c&resolution=raw",
            "resolution",
        ),
        (
            "/api/v1/groups/lab/telemetry?metric=cpu_temp_c&agg=p99",
            "agg",
        ),
    ] {
        let (st, v) = get(&c, &s, &viewer, q).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert_eq!(v["error"]["code"], "invalid_query", "{q}");
        assert_eq!(v["error"]["param"], param, "{q}: {v}");
    }
    let (st, v) = get(
        &c,
        &s,
        &viewer,
        "/api/v1/devices/pi-404/telemetry?metric=cpu_temp_c",
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, _) = get(
        &c,
        &s,
        &viewer,
        "/api/v1/groups/nope/telemetry?metric=cpu_temp_c",
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let r = c
        .get(s.url("/api/v1/devices/pi-1/telemetry?metric=cpu_temp_c"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Counters.
    let m = c
        .get(s.url("/metrics"))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("wrale_telemetry_points_ingested_total 722\n"),
        "{m}"
    );
    assert!(
        m.contains("wrale_telemetry_batches_replayed_total 1\n"),
        "{m}"
    );
    assert!(
        m.contains("wrale_telemetry_batches_rejected_total 2\n"),
        "{m}"
    );
    assert!(m.contains("wrale_telemetry_store_bytes "), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maintenance_task_rolls_up_in_the_server_without_changing_answers() {
    let s = TestServer::start_with("[telemetry]\nmaintenance_interval = \"1s\"\n").await;
    let c = Client::new();
    group(&c, &s, "lab", None).await;
    let cred = enroll(&c, &s, "pi-9", "lab").await;
    let start = recent_minute();
    let range = format!("from={}&to={}", iso(start), iso(start + 1_200_000));
    let q = format!("/api/v1/devices/pi-9/telemetry?metric=cpu_temp_c&{range}&resolution=1m");
    // First half, rolled up by the task; then the second half arrives late.
    let all = points(start, 120, 40.0);
    type Indexed = Vec<(usize, Point)>;
    let (even, odd): (Indexed, Indexed) = all
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let strip = |v: Vec<(usize, Point)>| v.into_iter().map(|(_, p)| p).collect::<Vec<_>>();
    let (st, _) = send(&c, &s, &cred, "pi-9", encode_batch("pi-9", &strip(even))).await;
    assert_eq!(st, StatusCode::OK);
    let rolled = |want: u64| {
        let c = c.clone();
        let url = s.url("/metrics");
        let token = s.admin_token.clone();
        async move {
            for _ in 0..100 {
                let m = c
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                if m.contains(&format!("wrale_telemetry_points_rolled_up_total {want}\n")) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("maintenance did not roll up {want} points");
        }
    };
    rolled(120).await;
    let (st, v) = send(&c, &s, &cred, "pi-9", encode_batch("pi-9", &strip(odd))).await;
    assert_eq!((st, v["inserted"].as_u64()), (StatusCode::OK, Some(120)));
    let (_, before) = get(&c, &s, &s.admin_token, &q).await;
    rolled(240).await;
    let (_, after) = get(&c, &s, &s.admin_token, &q).await;
    assert_eq!(before, after);
    let b = after["points"].as_array().unwrap();
    assert_eq!(b.len(), 20);
    assert!(
        b.iter().all(|b| b["count"] == 6 && b["avg"] == 42.5),
        "{after}"
    );
}
