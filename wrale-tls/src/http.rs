//! A small HTTP/1.1 client for `http://` and `https://` URLs on hyper, with
//! pooled connections and rustls (ring) for TLS.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

/// An HTTP client for `http://` and `https://` URLs. Cheap to clone; clones
/// share the connection pool.
#[derive(Clone)]
pub struct HttpClient {
    inner: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    timeout: Duration,
    user_agent: String,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

/// A response: status and the whole body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Timeout,
    Untrusted,
    Other,
}

/// Why a request failed; the message carries the whole cause chain.
#[derive(Debug, Clone)]
pub struct HttpError {
    kind: Kind,
    message: String,
}

impl HttpError {
    /// The request (or connecting) ran out of time.
    pub fn is_timeout(&self) -> bool {
        self.kind == Kind::Timeout
    }

    /// The server's TLS certificate is not trusted by this client.
    pub fn is_untrusted_certificate(&self) -> bool {
        self.kind == Kind::Untrusted
    }

    fn new(kind: Kind, message: String) -> HttpError {
        HttpError { kind, message }
    }

    fn from_chain(e: &(dyn std::error::Error + 'static)) -> HttpError {
        if let Some(why) = crate::untrusted_certificate(e) {
            return HttpError::new(
                Kind::Untrusted,
                format!("the server's TLS certificate is not trusted ({why})"),
            );
        }
        let mut message = e.to_string();
        let mut timed_out = false;
        let mut next = e.source();
        while let Some(s) = next {
            timed_out |= s
                .downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut);
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            next = s.source();
        }
        let kind = if timed_out {
            Kind::Timeout
        } else {
            Kind::Other
        };
        HttpError::new(kind, message)
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpError {}

impl HttpClient {
    /// A client trusting what `tls` trusts, with a time limit for connecting
    /// (TCP and TLS) and a default one for whole requests.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> HttpClient {
        let connector = Connector {
            tls: TlsConnector::from(tls),
            connect_timeout,
        };
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            // The idle timeout is enforced only with a timer.
            .pool_timer(TokioTimer::new())
            .build(connector);
        HttpClient {
            inner,
            timeout: request_timeout,
            user_agent: concat!("wrale/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// Sets the `user-agent` header sent with every request.
    #[must_use]
    pub fn user_agent(mut self, user_agent: &str) -> HttpClient {
        user_agent.clone_into(&mut self.user_agent);
        self
    }

    /// Sends `method url` with `headers` and an optional body and reads the whole
    /// answer, within `timeout` (or the client's default).
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<HttpResponse, HttpError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| HttpError::new(Kind::Other, format!("invalid URL {url:?}: {e}")))?;
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("user-agent", &self.user_agent);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| HttpError::new(Kind::Other, format!("invalid request: {e}")))?;
        let limit = timeout.unwrap_or(self.timeout);
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| HttpError::from_chain(&e))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::from_chain(&e))?
                .to_bytes();
            Ok(HttpResponse { status, body })
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::new(
                Kind::Timeout,
                format!("no complete answer within {limit:?}"),
            )),
        }
    }
}

/// TCP, then TLS for `https`.
#[derive(Clone)]
struct Connector {
    tls: TlsConnector,
    connect_timeout: Duration,
}

/// A connection: plain TCP or TLS over TCP.
struct Conn(TokioIo<Either<TcpStream, TlsStream<TcpStream>>>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let limit = self.connect_timeout;
        Box::pin(async move {
            let https = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("unsupported URL scheme {other:?} (use http or https)"),
                    ));
                }
            };
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL without a host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let connect = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                let _ = tcp.set_nodelay(true);
                if !https {
                    return Ok(Either::Left(tcp));
                }
                let name = ServerName::try_from(host.clone()).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}"))
                })?;
                Ok(Either::Right(tls.connect(name, tcp).await?))
            };
            match tokio::time::timeout(limit, connect).await {
                Ok(Ok(stream)) => Ok(Conn(TokioIo::new(stream))),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {host}:{port} took longer than {limit:?}"),
                )),
            }
        })
    }
}
