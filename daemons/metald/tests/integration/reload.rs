//! Config reload in-process: a bad config is refused and the running one kept;
//! a good one takes effect (tokens, sampling interval).

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reload_keeps_the_running_config_good_reload_applies() {
    let d = TestDaemon::start().await;
    d.wait_ready().await;

    std::fs::write(&d.config_path, "[sampling\ninterval = \"1s\"\n").unwrap();
    d.signals.reload().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(d.get("/api/v1/state", Some(VIEWER)).await.status(), 200);
    assert_eq!(d.get("/health/ready", None).await.status(), 200);

    let (status, code, v) =
        error_code(d.post_json("/api/v1/config/reload", Some(ADMIN), "").await).await;
    assert_eq!((status, code.as_str()), (422, "invalid_config"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("line 1"),
        "{v}"
    );

    d.write_config(
        "[hal]\nbackend = \"sim\"\n[sampling]\ninterval = \"2h\"\n",
        &[],
    );
    let (status, code, v) =
        error_code(d.post_json("/api/v1/config/reload", Some(ADMIN), "").await).await;
    assert_eq!((status, code.as_str()), (422, "invalid_config"), "{v}");
    assert_eq!(v["error"]["key"], "sampling.interval");
    let state = d.get_json("/api/v1/state", VIEWER).await;
    assert_eq!(state["sampling"]["interval_s"], 0.02, "old config kept");

    d.write_config(
        "[hal]\nbackend = \"sim\"\nnoise = false\n[sampling]\ninterval = \"50ms\"\n",
        &[("new", "viewer", "new-token")],
    );
    let resp = d.post_json("/api/v1/config/reload", Some(ADMIN), "").await;
    assert_eq!(resp.status(), 200);
    let state = d.get_json("/api/v1/state", "new-token").await;
    assert_eq!(state["sampling"]["interval_s"], 0.05);

    // Revoking a token by reload (SIGHUP path): the old one stops working.
    std::fs::write(
        &d.config_path,
        std::fs::read_to_string(&d.config_path)
            .unwrap()
            .replace("name = \"new\"", "name = \"renamed\"")
            .replace(
                &metald::auth::TokenHash::of("new-token").to_string(),
                &metald::auth::TokenHash::of("newer").to_string(),
            ),
    )
    .unwrap();
    d.signals.reload().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while d.get("/api/v1/state", Some("new-token")).await.status() != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "revoked token still accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(d.get("/api/v1/state", Some("newer")).await.status(), 200);
    d.stop().await.unwrap();
}
