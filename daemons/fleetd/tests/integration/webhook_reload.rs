//! `intel.webhook_concurrency` follows a config reload: receivers that waited for
//! a turn under the old limit are served at once under a higher one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::Fleet;

type Shared = (Arc<Mutex<Vec<Value>>>, Arc<tokio::sync::Semaphore>);

/// A receiver on 127.0.0.1:0 that records each request when it arrives and
/// answers only when the test opens its gate (it hangs until then).
struct Hanging {
    url: String,
    got: Arc<Mutex<Vec<Value>>>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Hanging {
    async fn start() -> Hanging {
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |State((got, gate)): State<Shared>, Json(v): Json<Value>| async move {
                        got.lock().unwrap().push(v);
                        gate.acquire().await.unwrap().forget();
                        StatusCode::OK
                    },
                ),
            )
            .with_state((got.clone(), gate.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Hanging { url, got, gate }
    }

    fn requests(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

fn config(concurrency: usize, hooks: &[&Hanging]) -> String {
    let mut s = format!(
        "[intel]\ninterval = \"200ms\"\nwebhook_timeout = \"120s\"\n\
         webhook_concurrency = {concurrency}\n\n[[intel.rules]]\nid = \"device\"\n\
         severity = \"warning\"\ncondition = {{ kind = \"device_alert\", min_severity = \"warning\" }}\n"
    );
    for (i, h) in hooks.iter().enumerate() {
        s.push_str(&format!(
            "\n[[intel.webhooks]]\nid = \"h{i}\"\nurl = \"{}\"\n",
            h.url
        ));
    }
    s
}

async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_new_webhook_concurrency() {
    let hooks = [
        Hanging::start().await,
        Hanging::start().await,
        Hanging::start().await,
    ];
    let all: Vec<&Hanging> = hooks.iter().collect();
    let f = Fleet::start_with(&config(1, &all)).await;
    f.enroll("pi-1", json!({})).await;
    f.post(
        "/api/v1/alerts",
        f.admin(),
        json!({"device": "pi-1", "code": "thermal_warning", "severity": "warning", "message": "hot"}),
    )
    .await;
    let total = || hooks.iter().map(Hanging::requests).sum::<usize>();
    // One receiver at a time: the first hangs, the other two wait their turn.
    until("the first request", || total() == 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(total(), 1, "only one receiver served at a time");

    // Two at once after the reload: one more of the waiting receivers is
    // served while the first still hangs, and no more than that.
    std::fs::write(
        &f.config_path,
        fleetd::testing::TestServer::config_text(&f.data_dir, &config(2, &all)),
    )
    .unwrap();
    f.signals.reload().await;
    until("a second receiver served", || total() == 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(total(), 2, "at most two at once");

    // Back to one: the two hanging ones finish and only then the last one runs.
    std::fs::write(
        &f.config_path,
        fleetd::testing::TestServer::config_text(&f.data_dir, &config(1, &all)),
    )
    .unwrap();
    f.signals.reload().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served: Vec<usize> = hooks
        .iter()
        .enumerate()
        .filter(|(_, h)| h.requests() == 1)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(served.len(), 2, "{served:?}");
    // One of the two answers: one still runs, so the limit of one is reached
    // and the third receiver still waits.
    hooks[served[0]].gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(total(), 2, "the lower limit holds the third back");
    // The other answers: now the third is served.
    hooks[served[1]].gate.add_permits(1);
    until("the third receiver served", || total() == 3).await;
    for h in &hooks {
        h.gate.add_permits(1);
    }
}
