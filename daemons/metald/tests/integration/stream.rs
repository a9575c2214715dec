//! The WebSocket stream: hello, readings, actions; auth by header or query; closed
//! on shutdown.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no stream message within 10 s")
            .expect("stream ended")
            .expect("stream error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn next_of_type(ws: &mut Ws, ty: &str) -> Value {
    for _ in 0..500 {
        let v = next_json(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
    panic!("no {ty} message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sends_hello_readings_and_actions() {
    let d = TestDaemon::start().await;
    d.wait_ready().await;
    let url = format!("ws://{}/api/v1/stream?token={VIEWER}", d.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["device"]["backend"], "sim");
    let reading = next_of_type(&mut ws, "reading").await;
    assert!(
        !reading["sample"]["temperatures"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let resp = d
        .post_json(
            "/api/v1/fan",
            Some(OPERATOR),
            r#"{"fan": "fan0", "duty_pct": 70}"#,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let action = next_of_type(&mut ws, "action").await;
    assert_eq!(action["action"]["action"], "set_fan_duty");
    assert_eq!(action["action"]["fan"], "fan0");
    assert_eq!(action["action"]["duty_pct"], 70.0);

    // Shutdown closes the stream.
    let stop = tokio::spawn(d.stop());
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "stream not closed on shutdown");
    stop.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_needs_a_token() {
    let d = TestDaemon::start().await;
    d.wait_ready().await;
    let url = format!("ws://{}/api/v1/stream", d.addr);
    match tokio_tungstenite::connect_async(url.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    match tokio_tungstenite::connect_async(format!("{url}?token=wrong")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {VIEWER}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    // A plain GET (no upgrade) is a JSON 400.
    let (status, code, _) = error_code(d.get("/api/v1/stream", Some(VIEWER)).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    drop(ws);
    d.stop().await.unwrap();
}
