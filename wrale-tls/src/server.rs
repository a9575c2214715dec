//! Server side: a certificate chain and key from PEM files, swappable at run time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::Error;

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, e: &pem::Error) -> Error {
    Error::BadPem {
        path: path.to_owned(),
        message: format!("not valid PEM: {e}"),
    }
}

/// Reads every PEM certificate in `path` (at least one).
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, &e))?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(Error::NoPrivateKey {
            path: path.to_owned(),
        }),
        Err(e) => Err(pem_error(path, &e)),
    }
}

/// Loads a certificate chain (PEM, leaf first) and its private key (PEM, PKCS#8,
/// PKCS#1 or SEC1) and checks that they belong together.
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, Error> {
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let provider = crate::provider();
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| Error::UnsupportedKey {
                path: key_file.to_owned(),
                message: e.to_string(),
            })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public key; the handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(Error::KeyMismatch {
                cert: cert_file.to_owned(),
                key: key_file.to_owned(),
            });
        }
        Err(e) => {
            return Err(Error::BadPem {
                path: cert_file.to_owned(),
                message: format!("certificate: {e}"),
            });
        }
    }
    Ok(Arc::new(certified))
}

/// The certificate in use; [`ServerTls::reload`] swaps it.
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        Some(guard.clone())
    }
}

/// A server's TLS: a rustls config (ALPN `http/1.1`) whose certificate can be
/// replaced while connections are being served. New handshakes use the new
/// certificate; established connections keep theirs.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    resolver: Arc<Resolver>,
    files: Arc<RwLock<(PathBuf, PathBuf)>>,
}

impl ServerTls {
    /// Loads `cert_file` and `key_file` (see [`load_certified_key`]).
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<ServerTls, Error> {
        let key = load_certified_key(cert_file, key_file)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(key),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            resolver,
            files: Arc::new(RwLock::new((cert_file.to_owned(), key_file.to_owned()))),
        })
    }

    /// The rustls server config.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// The certificate and key files in use.
    pub fn files(&self) -> (PathBuf, PathBuf) {
        self.files.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads `cert_file` and `key_file` (renewed certificates, or new paths)
    /// and serves the new certificate to new connections. On error the running
    /// certificate stays.
    pub fn reload(&self, cert_file: &Path, key_file: &Path) -> Result<(), Error> {
        let key = load_certified_key(cert_file, key_file)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = key;
        *self.files.write().unwrap_or_else(|p| p.into_inner()) =
            (cert_file.to_owned(), key_file.to_owned());
        Ok(())
    }
}
