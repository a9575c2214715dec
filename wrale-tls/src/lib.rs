//! TLS for Wrale, on rustls with the ring crypto provider.
//!
//! - [`ServerTls`]: a certificate chain and private key loaded from PEM files into a
//!   rustls server config whose certificate can be [reloaded](ServerTls::reload)
//!   while the server runs (fleetd's SIGHUP).
//! - `TlsListener` (feature `server`): a TCP listener for `axum::serve` that runs TLS handshakes
//!   concurrently, each with a time limit, so a slow or broken client never holds
//!   up the others.
//! - [`client_config`]: whom a client trusts ([`Roots`]: the system store, a CA
//!   file, or both).
//! - [`HttpClient`]: a small HTTP/1.1 client for `http://` and `https://` URLs
//!   (the wrale client, metald's enrollment, fleetd's webhooks).
//!
//! Errors name the file and the problem ([`Error`]).

mod client;
mod error;
mod http;
#[cfg(feature = "server")]
mod listener;
mod server;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{Roots, client_config, untrusted_certificate};
pub use error::Error;
pub use http::{HttpClient, HttpError, HttpResponse};
#[cfg(feature = "server")]
pub use listener::TlsListener;
pub use server::{ServerTls, load_certified_key};

pub use hyper::Method;
pub use rustls;

use std::sync::Arc;

/// The crypto provider every config here is built with: rustls' ring provider.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default rustls provider, if none is
/// installed yet (for libraries that build their own config, like a
/// `wss://` connect without an explicit connector). Safe to call many times.
pub fn install_default_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing one is fine.
        let _already = rustls::crypto::ring::default_provider().install_default();
    }
}
