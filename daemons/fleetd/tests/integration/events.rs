//! `/api/v1/events`: auth (header or `?token=`), filters by device, group and kinds.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::Fleet;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(f: &Fleet, query: &str, token: Option<&str>) -> Result<Ws, u16> {
    let mut req = f
        .ws_url(&format!("/api/v1/events{query}"))
        .into_client_request()
        .unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// The next JSON message, or `None` after `wait`.
async fn next(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_needs_auth_and_filters() {
    let f = Fleet::start().await;
    let a = f.admin().to_owned();
    assert_eq!(connect(&f, "", None).await.err(), Some(401));
    assert_eq!(connect(&f, "?token=wrt_bogus", None).await.err(), Some(401));
    assert_eq!(
        connect(&f, "?kinds=weather", Some(&a)).await.err(),
        Some(400)
    );
    let cred = f.enroll("pi-a", json!({})).await;
    assert_eq!(
        connect(&f, "", Some(&cred)).await.err(),
        Some(403),
        "devices do not read the stream"
    );
    f.enroll("pi-b", json!({})).await;
    f.post("/api/v1/groups", &a, json!({"id": "lab"})).await;
    f.post("/api/v1/groups", &a, json!({"id": "rack", "parent": "lab"}))
        .await;
    f.patch("/api/v1/devices/pi-b", &a, json!({"group": "rack"}))
        .await;

    let viewer = f.user_token("v", "viewer").await;
    let mut only_alerts_a = connect(&f, "?device=pi-a&kinds=alert", Some(&viewer))
        .await
        .unwrap();
    let mut by_query_token = connect(
        &f,
        &format!("?token={viewer}&group=lab&kinds=device,alert"),
        None,
    )
    .await
    .unwrap();
    let mut all = connect(&f, "", Some(&viewer)).await.unwrap();

    f.post(
        "/api/v1/alerts",
        &a,
        json!({"device": "pi-b", "code": "fan_stall", "severity": "warning", "message": "b"}),
    )
    .await;
    f.post(
        "/api/v1/alerts",
        &a,
        json!({"device": "pi-a", "code": "fan_stall", "severity": "warning", "message": "a"}),
    )
    .await;
    f.patch("/api/v1/devices/pi-b", &a, json!({"labels": {"x": "y"}}))
        .await;

    let e = next(&mut only_alerts_a, Duration::from_secs(5))
        .await
        .expect("alert for pi-a");
    assert_eq!(
        (e["kind"].as_str(), e["device"].as_str()),
        (Some("alert"), Some("pi-a")),
        "{e}"
    );
    assert_eq!(e["data"]["alert"]["message"], "a");
    assert!(e["time"].is_string());
    assert!(
        next(&mut only_alerts_a, Duration::from_millis(300))
            .await
            .is_none(),
        "nothing else passes the filter"
    );

    let e1 = next(&mut by_query_token, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (e1["kind"].as_str(), e1["device"].as_str()),
        (Some("alert"), Some("pi-b")),
        "{e1}"
    );
    let e2 = next(&mut by_query_token, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (e2["kind"].as_str(), e2["group"].as_str()),
        (Some("device"), Some("rack")),
        "{e2}"
    );
    assert!(
        next(&mut by_query_token, Duration::from_millis(300))
            .await
            .is_none()
    );

    let mut kinds = Vec::new();
    while let Some(e) = next(&mut all, Duration::from_millis(500)).await {
        kinds.push(e["kind"].as_str().unwrap().to_owned());
    }
    assert!(
        kinds.contains(&"audit".to_owned())
            && kinds.contains(&"alert".to_owned())
            && kinds.contains(&"device".to_owned()),
        "{kinds:?}"
    );
}
