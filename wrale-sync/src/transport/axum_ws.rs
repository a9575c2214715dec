//! The server side of the device link inside axum (feature `axum`).
//!
//! fleetd authenticates the device on `GET /api/v1/devices/{id}/sync` and
//! upgrades with axum's `WebSocketUpgrade`; the upgraded socket becomes a
//! [`Transport`] here and is handed to the hub:
//!
//! ```ignore
//! async fn sync(ws: WebSocketUpgrade, /* auth, Path(id), State(hub) */) -> Response {
//!     ws.on_upgrade(move |socket| async move {
//!         let link = Box::new(AxumWsTransport::new(socket));
//!         let _ = hub.serve(&device, link, sink).await; // closes with 1008 itself
//!     })
//! }
//! ```
//!
//! Binary messages carry envelopes; a text message is an error; pings are
//! answered by axum. [`Transport::close_with`] sends a close frame with a code
//! (1008 for a frame about another device) and a reason.

use async_trait::async_trait;
use axum::extract::ws::{CloseFrame, Message, WebSocket};

use super::Transport;
use super::ws::{closed_by_peer, short_reason};
use crate::error::{Error, Result};

/// A [`Transport`] over an upgraded axum WebSocket.
#[derive(Debug)]
pub struct AxumWsTransport {
    ws: WebSocket,
}

impl AxumWsTransport {
    /// Wraps an upgraded socket.
    pub fn new(ws: WebSocket) -> Self {
        Self { ws }
    }

    /// The socket back (to send a final text message, for instance).
    pub fn into_inner(self) -> WebSocket {
        self.ws
    }
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Transport(format!("websocket: {e}"))
}

#[async_trait]
impl Transport for AxumWsTransport {
    async fn send(&mut self, frame: Vec<u8>) -> Result<()> {
        self.ws
            .send(Message::Binary(frame.into()))
            .await
            .map_err(err)
    }

    async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            match self.ws.recv().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(err(e)),
                Some(Ok(Message::Binary(b))) => return Ok(Some(b.to_vec())),
                Some(Ok(Message::Close(frame))) => {
                    return closed_by_peer(
                        frame.as_ref().map(|f| f.code),
                        frame.as_ref().map(|f| f.reason.as_str()).unwrap_or(""),
                    );
                }
                Some(Ok(Message::Text(_))) => {
                    return Err(Error::Transport(
                        "websocket: text message where a binary frame was expected".into(),
                    ));
                }
                Some(Ok(_)) => continue, // ping, pong
            }
        }
    }

    async fn close_with(&mut self, code: u16, reason: &str) -> Result<()> {
        let frame = CloseFrame {
            code,
            reason: short_reason(reason).into(),
        };
        self.ws.send(Message::Close(Some(frame))).await.map_err(err)
    }
}
