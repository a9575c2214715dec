//! The WebSocket transport, end to end on a loopback port.

use tokio::net::TcpListener;

use wrale_core::units::Celsius;
use wrale_sync::transport::WsTransport;
use wrale_sync::{SyncSession, Transport, Twin};

use crate::common::*;

async fn drive<T: Transport>(twin: &mut Twin, s: &mut SyncSession, link: &mut T, rounds: usize) {
    for _ in 0..rounds {
        while let Some(f) = s.generate(twin) {
            link.send(f).await.unwrap();
        }
        match tokio::time::timeout(std::time::Duration::from_millis(300), link.recv()).await {
            Ok(Ok(Some(f))) => {
                s.receive(twin, &f, t(1)).unwrap();
            }
            Ok(Ok(None)) => return,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => {}
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn client_and_server_sync_a_twin_over_websocket() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut link = WsTransport::accept(tcp).await.unwrap();
        let mut brain = Twin::new(&info(), fleet(), t(0)).unwrap();
        brain
            .edit_desired(|c| c.warn = Some(Celsius(64.0)), &alice(), t(0))
            .unwrap();
        let mut s = SyncSession::new(&brain, "device");
        drive(&mut brain, &mut s, &mut link, 8).await;
        brain
    });
    let mut link = WsTransport::connect(&format!("ws://{addr}/api/v1/sync"))
        .await
        .unwrap();
    let mut device = Twin::empty(&device_id(), dev()).unwrap();
    device
        .report(
            &wrale_sync::ReportedUpdate::default().reading("cpu_temp_c", 47.0),
            t(0),
        )
        .unwrap();
    let mut s = SyncSession::new(&device, "brain");
    drive(&mut device, &mut s, &mut link, 8).await;
    link.close().await.unwrap();
    let mut brain = server.await.unwrap();
    assert_eq!(device.desired().unwrap().warn, Some(Celsius(64.0)));
    assert_eq!(brain.reported().unwrap().cpu_temp(), Some(Celsius(47.0)));
    assert_eq!(brain.heads(), device.heads());
    // A garbage binary frame is rejected by the session with a named error.
    let e = s.receive(&mut device, b"\x00garbage", t(2)).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
}
