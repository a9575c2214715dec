//! The WebSocket transport: each envelope is one binary WebSocket message.
//!
//! The client half dials a URL (`ws://host:8600/api/v1/sync`); the server half
//! accepts an already-accepted TCP stream (fleetd's listener, or axum's upgrade in
//! a later step). No TLS here yet; rustls goes in front when it comes.

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Transport;
use crate::error::{Error, Result};

/// One end of a WebSocket link.
#[derive(Debug)]
pub struct WsTransport<S> {
    ws: WebSocketStream<S>,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Transport(format!("websocket: {e}"))
}

impl WsTransport<MaybeTlsStream<TcpStream>> {
    /// Connects to a `ws://` URL.
    pub async fn connect(url: &str) -> Result<Self> {
        let (ws, _resp) = tokio_tungstenite::connect_async(url).await.map_err(err)?;
        Ok(Self { ws })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WsTransport<S> {
    /// Performs the server side of the handshake on an accepted stream.
    pub async fn accept(stream: S) -> Result<Self> {
        let ws = tokio_tungstenite::accept_async(stream).await.map_err(err)?;
        Ok(Self { ws })
    }

    /// Closes the link politely.
    pub async fn close(&mut self) -> Result<()> {
        self.ws.close(None).await.map_err(err)
    }
}

#[async_trait]
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for WsTransport<S> {
    async fn send(&mut self, frame: Vec<u8>) -> Result<()> {
        self.ws.send(Message::binary(frame)).await.map_err(err)
    }

    async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(err(e)),
                Some(Ok(Message::Binary(b))) => return Ok(Some(b.to_vec())),
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Text(_))) => {
                    return Err(Error::Transport(
                        "websocket: text message where a binary frame was expected".into(),
                    ));
                }
                Some(Ok(_)) => continue, // ping, pong, raw frames
            }
        }
    }
}
