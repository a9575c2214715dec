//! A TLS listener for `axum::serve` with concurrent, time-limited handshakes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Handshakes in flight at most; past this, accepting waits for one to finish.
const MAX_PENDING_HANDSHAKES: usize = 1024;

type Handshake = (io::Result<TlsStream<TcpStream>>, SocketAddr);

/// Accepts TCP connections and runs each TLS handshake in its own task with a
/// time limit; [`accept`](axum::serve::Listener::accept) yields connections whose
/// handshake finished. A client that sends plaintext, garbage, or nothing is
/// dropped (logged at debug) and never delays the others.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    timeout: Duration,
    pending: JoinSet<Handshake>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("tcp", &self.tcp)
            .field("timeout", &self.timeout)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Serves TLS with `config` on `tcp`; handshakes time out after 10 s.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            timeout: Duration::from_secs(10),
            pending: JoinSet::new(),
        }
    }

    /// Sets the handshake time limit.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsListener {
        self.timeout = timeout;
        self
    }

    fn start_handshake(&mut self, stream: TcpStream, peer: SocketAddr) {
        let acceptor = self.acceptor.clone();
        let limit = self.timeout;
        self.pending.spawn(async move {
            let result = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS handshake within {limit:?}"),
                )),
            };
            (result, peer)
        });
    }
}

/// Errors of `accept` that concern one connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.pending.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        self.start_handshake(stream, peer);
                    }
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        // Out of file descriptors and the like: back off like axum does.
                        tracing::error!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                Some(done) = self.pending.join_next() => match done {
                    Ok((Ok(stream), peer)) => return (stream, peer),
                    Ok((Err(e), peer)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                    }
                    Err(e) => tracing::warn!("TLS handshake task: {e}"),
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
