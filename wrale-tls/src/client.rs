//! Client side: whom to trust.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;

use crate::error::Error;

/// The certificates a client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The system store (`/etc/ssl/certs` on Debian; `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` override it).
    System,
    /// Only the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// The system store plus the CA certificates in this PEM file.
    SystemAnd(PathBuf),
    /// Nothing: every TLS connection fails (a fallback that keeps plain HTTP
    /// working when the configured roots cannot be loaded).
    Empty,
}

impl Roots {
    /// `CaFile` if a file is given, else `System`.
    pub fn ca_or_system(ca_file: Option<&Path>) -> Roots {
        match ca_file {
            Some(path) => Roots::CaFile(path.to_owned()),
            None => Roots::System,
        }
    }
}

fn add_system(store: &mut RootCertStore) -> Result<(), Error> {
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(Error::NoRoots(format!(
            "the system certificate store is empty{why}; install ca-certificates or give a CA file"
        )));
    }
    Ok(())
}

fn add_file(store: &mut RootCertStore, path: &Path) -> Result<(), Error> {
    for cert in crate::server::load_certs(path)? {
        store.add(cert).map_err(|e| Error::BadPem {
            path: path.to_owned(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(())
}

/// A rustls client config (ring, TLS 1.2 and 1.3, no client certificate) that
/// trusts `roots`.
pub fn client_config(roots: &Roots) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::System => add_system(&mut store)?,
        Roots::CaFile(path) => add_file(&mut store, path)?,
        Roots::Empty => {}
        Roots::SystemAnd(path) => {
            add_file(&mut store, path)?;
            if let Err(e) = add_system(&mut store) {
                tracing::warn!("{e}; trusting only {}", path.display());
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// If `err` (or an error in its source chain) is a TLS certificate the client
/// refused, says why (`invalid peer certificate: UnknownIssuer`).
pub fn untrusted_certificate(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(c)) = e.downcast_ref::<rustls::Error>() {
            return Some(format!("invalid peer certificate: {c:?}"));
        }
        // io::Error's `source` skips the error it wraps; look inside.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(found) = untrusted_certificate(inner)
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}
