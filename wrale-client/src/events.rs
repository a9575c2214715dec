//! The live event stream (`GET /api/v1/events`, a WebSocket of JSON messages).

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message, http::HeaderValue};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::models::{DeviceId, Timestamp};

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A telemetry reading.
    Reading,
    /// A twin change.
    Twin,
    /// An alert raised, acked or cleared.
    Alert,
    /// An audit entry.
    Audit,
    /// A device enrolled, connected, disconnected, revoked or changed.
    Device,
    /// A kind this client does not know yet.
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// Every kind the API names (not [`EventKind::Unknown`]).
    pub const ALL: [EventKind; 5] = [
        EventKind::Reading,
        EventKind::Twin,
        EventKind::Alert,
        EventKind::Audit,
        EventKind::Device,
    ];

    /// The stable name (`reading`).
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Reading => "reading",
            EventKind::Twin => "twin",
            EventKind::Alert => "alert",
            EventKind::Audit => "audit",
            EventKind::Device => "device",
            EventKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown event kind {s:?} (expected reading, twin, alert, audit or device)")
            })
    }
}

/// One event of the live stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What it is about.
    pub kind: EventKind,
    /// When it happened.
    pub time: Timestamp,
    /// The device, for device-related events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// The payload (shape depends on `kind`).
    #[serde(default)]
    pub data: Value,
}

/// Which events to receive. Empty means everything the caller may see.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only this device.
    pub device: Option<String>,
    /// Only devices of this group.
    pub group: Option<String>,
    /// Only these kinds (all when empty).
    pub kinds: Vec<EventKind>,
}

impl EventFilter {
    /// Everything.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only this device.
    pub fn device(mut self, device: impl Into<String>) -> Self {
        self.device = Some(device.into());
        self
    }
    /// Only this group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
    /// Also this kind.
    pub fn kind(mut self, kind: EventKind) -> Self {
        self.kinds.push(kind);
        self
    }

    fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(d) = &self.device {
            q.push(("device", d.clone()));
        }
        if let Some(g) = &self.group {
            q.push(("group", g.clone()));
        }
        if !self.kinds.is_empty() {
            let kinds: Vec<&str> = self.kinds.iter().map(EventKind::as_str).collect();
            q.push(("kinds", kinds.join(",")));
        }
        q
    }
}

/// A live event stream: a [`Stream`] of [`Event`]s. Dropping it (or
/// [`close`](EventStream::close)) stops the background reader and closes the
/// WebSocket. The stream ends when fleetd closes the connection; a message that
/// is not a valid event yields one `Err(Error::Decode)` and the stream goes on.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Result<Event>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl EventStream {
    /// The next event; `None` once the stream has ended.
    pub async fn next_event(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
    }

    /// Closes the WebSocket politely and waits for the reader to finish.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Event>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Client {
    /// Opens the live event stream (`GET /api/v1/events` as a WebSocket),
    /// authenticated with this client's token. Errors of the handshake (a bad
    /// token: `unauthorized`) come back here, not from the stream.
    pub async fn events(&self, filter: &EventFilter) -> Result<EventStream> {
        let mut url = self.endpoint(&["events"]);
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // http -> ws and https -> wss are both "special" schemes, so this works.
        url.set_scheme(scheme)
            .map_err(|()| Error::InvalidArgument(format!("cannot use {url} as a WebSocket URL")))?;
        let query = filter.to_query();
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::InvalidArgument(format!("event stream URL {url}: {e}")))?;
        if let Some(token) = self.token() {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Error::InvalidArgument("the token is not a valid header value".into())
            })?;
            request.headers_mut().insert("authorization", value);
        }
        let tls = Some(tokio_tungstenite::Connector::Rustls(self.tls.clone()));
        let (ws, _resp) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, tls)
                .await
                .map_err(handshake_error)?;

        let (tx, rx) = mpsc::channel(256);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(read_events(ws, tx, stop_rx));
        Ok(EventStream {
            rx,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

fn handshake_error(e: tungstenite::Error) -> Error {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_deref().unwrap_or_default();
            Error::from_response(status, body)
        }
        other => match wrale_tls::untrusted_certificate(&other) {
            Some(why) => Error::Transport(format!(
                "event stream: the server's TLS certificate is not trusted ({why})"
            )),
            None => Error::transport("event stream", other),
        },
    }
}

async fn read_events<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    tx: mpsc::Sender<Result<Event>>,
    mut stop: oneshot::Receiver<()>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::select! {
            // Fires on close() and when the EventStream (the sender) is dropped.
            _ = &mut stop => {
                let _ = ws.close(None).await;
                return;
            }
            msg = ws.next() => msg,
        };
        let item = match msg {
            None => return,
            Some(Ok(Message::Text(text))) => serde_json::from_str::<Event>(text.as_str())
                .map_err(|e| Error::Decode(format!("event: {e}"))),
            Some(Ok(Message::Binary(bytes))) => serde_json::from_slice::<Event>(&bytes)
                .map_err(|e| Error::Decode(format!("event: {e}"))),
            Some(Ok(Message::Close(frame))) => {
                // A normal close ends the stream quietly; anything else is reported.
                if let Some(f) = frame {
                    let code = u16::from(f.code);
                    if code != 1000 && code != 1001 {
                        let _ = tx
                            .send(Err(Error::Transport(format!(
                                "event stream closed by fleetd ({code}): {}",
                                f.reason
                            ))))
                            .await;
                    }
                }
                return;
            }
            Some(Ok(_)) => continue, // ping, pong (answered by tungstenite), raw frames
            Some(Err(e)) => {
                let _ = tx.send(Err(Error::transport("event stream", e))).await;
                return;
            }
        };
        if tx.send(item).await.is_err() {
            let _ = ws.close(None).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_query_and_kinds() {
        let f = EventFilter::new()
            .device("pi-1")
            .kind(EventKind::Alert)
            .kind(EventKind::Twin);
        assert_eq!(
            f.to_query(),
            vec![
                ("device", "pi-1".to_owned()),
                ("kinds", "alert,twin".to_owned())
            ]
        );
        assert_eq!("audit".parse::<EventKind>().unwrap(), EventKind::Audit);
        assert!("unknown".parse::<EventKind>().is_err());
    }

    #[test]
    fn events_decode_with_unknown_kinds() {
        let e: Event = serde_json::from_str(
            r#"{"kind":"alert","time":"2026-11-22T10:00:00Z","device":"pi-1","data":{"code":"fan_stall"}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Alert);
        assert_eq!(e.device.unwrap().as_str(), "pi-1");
        let e: Event =
            serde_json::from_str(r#"{"kind":"rollout","time":"2026-11-22T10:00:00Z"}"#).unwrap();
        assert_eq!(e.kind, EventKind::Unknown);
        assert_eq!(e.data, Value::Null);
    }
}
