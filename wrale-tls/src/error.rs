//! Errors that name the file and what is wrong with it.

use std::path::PathBuf;

/// A TLS configuration error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate file holds no PEM certificate.
    #[error("{}: no certificate in it (expected a PEM \"-----BEGIN CERTIFICATE-----\" block)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no PEM private key.
    #[error("{}: no private key in it (expected a PEM \"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file could not be parsed.
    #[error("{}: {message}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key is of a kind the crypto provider does not support.
    #[error("{}: unsupported private key: {message}", path.display())]
    UnsupportedKey {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        message: String,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// No trusted root certificate was found.
    #[error("no trusted root certificates: {0}")]
    NoRoots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}
