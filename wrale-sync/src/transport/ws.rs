//! The WebSocket transport (tokio-tungstenite): each envelope is one binary
//! WebSocket message.
//!
//! The client half dials a URL (`ws://host:8600/api/v1/devices/<id>/sync`, or
//! `wss://` over rustls), optionally with `Authorization: Bearer <token>` on the
//! handshake ([`WsTransport::connect_with_token`]; [`WsTransport::connect_with_tls`]
//! takes the rustls client config that says whom to trust, else `wss://` trusts
//! the system roots); the server half accepts an already-accepted stream. fleetd
//! accepts devices through axum instead: see `transport::AxumWsTransport`
//! (feature `axum`).
//!
//! Closing: [`Transport::close_with`] sends a close frame with a code and reason.
//! When the peer closes with a code other than 1000 (normal) or 1001 (going
//! away), [`Transport::recv`] returns an error naming the code and reason (the
//! agent logs it as its last error); a normal close is `Ok(None)`.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

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

/// What `recv` makes of a close frame from the peer: `Ok(None)` for a normal
/// close, an error naming the code and reason otherwise.
pub(crate) fn closed_by_peer(code: Option<u16>, reason: &str) -> Result<Option<Vec<u8>>> {
    match code {
        None | Some(1000) | Some(1001) => Ok(None),
        Some(code) => Err(Error::Transport(format!(
            "websocket closed by the peer with code {code}: {reason}"
        ))),
    }
}

/// A close reason cut to fit a close frame (at most 123 bytes, on a character
/// boundary).
pub(crate) fn short_reason(reason: &str) -> &str {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl WsTransport<MaybeTlsStream<TcpStream>> {
    /// Connects to a `ws://` (or `wss://`) URL.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_token(url, None).await
    }

    /// Connects to a `ws://` or `wss://` URL, sending `Authorization: Bearer
    /// <token>` on the handshake when `token` is given. A refused handshake (401,
    /// 403, 404) is an error naming the HTTP status. `wss://` trusts the system
    /// roots.
    pub async fn connect_with_token(url: &str, token: Option<&str>) -> Result<Self> {
        Self::connect_with_tls(url, token, None).await
    }

    /// [`connect_with_token`](Self::connect_with_token) where a `wss://` URL is
    /// dialled with `tls` (whom to trust; the system roots when `None`). A
    /// server certificate that is not trusted is an error saying so.
    pub async fn connect_with_tls(
        url: &str,
        token: Option<&str>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self> {
        let mut request = url.into_client_request().map_err(err)?;
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::Transport("websocket: token is not a valid header".into()))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let connector = tls.map(Connector::Rustls);
        let (ws, _resp) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector)
                .await
                .map_err(connect_err)?;
        Ok(Self { ws })
    }
}

/// A failed connect; an untrusted TLS certificate is said in plain words.
fn connect_err(e: tokio_tungstenite::tungstenite::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        let inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(why)) =
            inner.or_else(|| s.downcast_ref::<rustls::Error>())
        {
            return Error::Transport(format!(
                "websocket: the server's TLS certificate is not trusted (invalid peer \
                 certificate: {why:?})"
            ));
        }
        source = s.source();
    }
    err(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WsTransport<S> {
    /// Performs the server side of the handshake on an accepted stream.
    pub async fn accept(stream: S) -> Result<Self> {
        let ws = tokio_tungstenite::accept_async(stream).await.map_err(err)?;
        Ok(Self { ws })
    }

    /// Wraps an already-established WebSocket stream (e.g. one accepted with
    /// `tokio_tungstenite::accept_hdr_async` after checking headers).
    pub fn from_stream(ws: WebSocketStream<S>) -> Self {
        Self { ws }
    }

    /// Closes the link politely (code 1000).
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
                Some(Ok(Message::Close(frame))) => {
                    return closed_by_peer(
                        frame.as_ref().map(|f| u16::from(f.code)),
                        frame.as_ref().map(|f| f.reason.as_str()).unwrap_or(""),
                    );
                }
                Some(Ok(Message::Text(_))) => {
                    return Err(Error::Transport(
                        "websocket: text message where a binary frame was expected".into(),
                    ));
                }
                Some(Ok(_)) => continue, // ping, pong, raw frames
            }
        }
    }

    async fn close_with(&mut self, code: u16, reason: &str) -> Result<()> {
        let frame = CloseFrame {
            code: code.into(),
            reason: short_reason(reason).into(),
        };
        self.ws.close(Some(frame)).await.map_err(err)
    }
}
