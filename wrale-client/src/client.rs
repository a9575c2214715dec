//! The HTTP core: base URL, bearer token, request and response plumbing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A client of one fleetd. Cheap to clone; clones share the token, so a
/// [`login`](Client::login) on one is seen by all.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) http: wrale_tls::HttpClient,
    /// Whom `https://` and `wss://` trust.
    pub(crate) tls: Arc<wrale_tls::rustls::ClientConfig>,
    pub(crate) base: Url,
    token: Arc<RwLock<Option<String>>>,
}

/// Options for [`Client::with_options`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Time to establish a TCP connection (default 10 s).
    pub connect_timeout: Duration,
    /// Time for a whole request and response (default 60 s; device commands wait
    /// for the device up to fleetd's own timeout, which is shorter).
    pub request_timeout: Duration,
    /// For an `https://` fleetd: trust only the CA certificates in this PEM file
    /// (a private fleet CA) instead of the system store.
    pub ca_file: Option<PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            ca_file: None,
        }
    }
}

/// Parses and checks a base URL (`http://host:8600`, optionally with a path prefix).
fn parse_base(base_url: &str) -> Result<Url> {
    let url = Url::parse(base_url.trim())
        .map_err(|e| Error::InvalidArgument(format!("invalid fleetd URL {base_url:?}: {e}")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(Error::InvalidArgument(format!(
                "invalid fleetd URL {base_url:?}: scheme {other:?} is not http or https"
            )));
        }
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(Error::InvalidArgument(format!(
            "invalid fleetd URL {base_url:?}: no host"
        )));
    }
    Ok(url)
}

impl Client {
    /// A client of the fleetd at `base_url` (`http://127.0.0.1:8600`), with a
    /// bearer token (session `wrs_`, API token `wrt_`) or none (then only
    /// [`login`](Client::login), [`enroll`](Client::enroll) and health work).
    pub fn new(base_url: &str, token: Option<String>) -> Result<Client> {
        Self::with_options(base_url, token, ClientOptions::default())
    }

    /// [`Client::new`] trusting only the CA certificates in `ca_file` (PEM) for an
    /// `https://` fleetd.
    pub fn with_ca_file(base_url: &str, token: Option<String>, ca_file: &Path) -> Result<Client> {
        let options = ClientOptions {
            ca_file: Some(ca_file.to_owned()),
            ..ClientOptions::default()
        };
        Self::with_options(base_url, token, options)
    }

    /// [`Client::new`] with explicit [`ClientOptions`].
    pub fn with_options(
        base_url: &str,
        token: Option<String>,
        options: ClientOptions,
    ) -> Result<Client> {
        let base = parse_base(base_url)?;
        let roots = match (&options.ca_file, base.scheme()) {
            (Some(ca), _) => wrale_tls::Roots::CaFile(ca.clone()),
            (None, "https") => wrale_tls::Roots::System,
            // Plain HTTP needs no roots (and must work without a system store).
            (None, _) => wrale_tls::Roots::Empty,
        };
        let tls = wrale_tls::client_config(&roots)
            .map_err(|e| Error::InvalidArgument(format!("TLS: {e}")))?;
        let http = wrale_tls::HttpClient::new(
            tls.clone(),
            options.connect_timeout,
            options.request_timeout,
        )
        .user_agent(concat!("wrale-client/", env!("CARGO_PKG_VERSION")));
        Ok(Client {
            http,
            tls,
            base,
            token: Arc::new(RwLock::new(token.filter(|t| !t.is_empty()))),
        })
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// The bearer token in use, if any.
    pub fn token(&self) -> Option<String> {
        self.token
            .read()
            .map(|t| t.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the bearer token (shared with every clone of this client).
    pub fn set_token(&self, token: Option<String>) {
        let mut guard = self.token.write().unwrap_or_else(|p| p.into_inner());
        *guard = token.filter(|t| !t.is_empty());
    }

    /// The URL of an API route: `segments` are appended to `<base>/api/v1/`, each
    /// percent-encoded as one path segment.
    pub(crate) fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            // `cannot_be_a_base` was refused in `parse_base`, so this succeeds.
            if let Ok(mut path) = url.path_segments_mut() {
                path.pop_if_empty().extend(["api", "v1"]).extend(segments);
            }
        }
        url.set_query(None);
        url.set_fragment(None);
        url
    }

    /// Sends a request and returns the status and body of a 2xx answer, or the
    /// server's error as [`Error::Api`].
    async fn send_raw(
        &self,
        method: Method,
        mut url: Url,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>)> {
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let what = format!("{method} {}", url.path());
        let auth = self.token().map(|t| format!("Bearer {t}"));
        let mut headers = Vec::with_capacity(2);
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let resp = self
            .http
            .request(method, url.as_str(), &headers, body, None)
            .await
            .map_err(|e| transport_error(&what, &e))?;
        let status = resp.status;
        if (200..300).contains(&status) {
            Ok((status, resp.body.to_vec()))
        } else {
            Err(Error::from_response(status, &resp.body))
        }
    }

    /// A request with an optional JSON body whose 2xx answer is decoded as `T`.
    pub(crate) async fn call<B, T>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let url = self.endpoint(segments);
        let path = url.path().to_owned();
        let body = body
            .map(|b| serde_json::to_vec(b))
            .transpose()
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the request body: {e}")))?;
        let (_, bytes) = self.send_raw(method, url, query, body).await?;
        decode(&path, &bytes)
    }

    /// A request whose 2xx answer body is ignored (204 and friends).
    pub(crate) async fn call_empty<B>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<()>
    where
        B: Serialize + ?Sized,
    {
        let url = self.endpoint(segments);
        let body = body
            .map(|b| serde_json::to_vec(b))
            .transpose()
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the request body: {e}")))?;
        self.send_raw(method, url, &[], body).await.map(|_| ())
    }

    /// `GET` decoded as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T> {
        self.call::<(), T>(Method::GET, segments, query, None).await
    }

    /// `GET` of a URL outside `/api/v1` (health), returning the status.
    pub(crate) async fn get_root(&self, path: &str) -> Result<u16> {
        let mut url = self.base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty()
                .extend(path.trim_start_matches('/').split('/'));
        }
        self.send_raw(Method::GET, url, &[], None)
            .await
            .map(|(status, _)| status)
    }
}

/// Decodes a JSON body, naming the route and the serde path on failure.
pub(crate) fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Decode(format!("{path}: {e}")))
}

fn transport_error(what: &str, e: &wrale_tls::HttpError) -> Error {
    if e.is_timeout() {
        Error::Transport(format!("{what}: timed out ({e})"))
    } else {
        Error::Transport(format!("{what}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_encode_segments_and_keep_a_prefix() {
        let c = Client::new("http://127.0.0.1:8600", None).unwrap();
        assert_eq!(
            c.endpoint(&["devices", "pi-1", "twin"]).as_str(),
            "http://127.0.0.1:8600/api/v1/devices/pi-1/twin"
        );
        assert_eq!(
            c.endpoint(&["users", "a b/c"]).as_str(),
            "http://127.0.0.1:8600/api/v1/users/a%20b%2Fc"
        );
        let c = Client::new("https://example.test/fleet/", None).unwrap();
        assert_eq!(
            c.endpoint(&["groups"]).as_str(),
            "https://example.test/fleet/api/v1/groups"
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in ["", "127.0.0.1:8600", "ftp://x", "http://"] {
            let e = Client::new(bad, None).unwrap_err();
            assert_eq!(e.code(), "invalid_argument", "{bad}: {e}");
        }
    }

    #[test]
    fn token_is_shared_by_clones() {
        let a = Client::new("http://localhost:1", Some("wrt_x".into())).unwrap();
        let b = a.clone();
        b.set_token(Some("wrs_y".into()));
        assert_eq!(a.token().as_deref(), Some("wrs_y"));
        a.set_token(Some(String::new()));
        assert_eq!(b.token(), None);
    }
}
