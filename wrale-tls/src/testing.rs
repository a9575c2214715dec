//! Test support (feature `testing`): a throwaway CA that issues server
//! certificates for `127.0.0.1`, `::1` and `localhost`, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};

/// A certificate authority made up for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// PEM files of one issued certificate.
#[derive(Debug, Clone)]
pub struct TestFiles {
    /// The CA certificate (what clients trust).
    pub ca: PathBuf,
    /// The server certificate chain (leaf only).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
    /// The leaf certificate, DER (to compare with what a server presents).
    pub cert_der: Vec<u8>,
}

impl TestCa {
    /// A new CA whose subject is `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for 127.0.0.1, ::1 and localhost with this serial:
    /// (certificate PEM, private key PEM, certificate DER).
    pub fn issue(&self, serial: u64) -> (String, String, Vec<u8>) {
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "wrale test server");
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// Issues a server certificate and writes `<prefix>ca.pem`,
    /// `<prefix>cert.pem` and `<prefix>key.pem` into `dir`.
    pub fn write(&self, dir: &Path, prefix: &str, serial: u64) -> TestFiles {
        let (cert, key, cert_der) = self.issue(serial);
        let files = TestFiles {
            ca: dir.join(format!("{prefix}ca.pem")),
            cert: dir.join(format!("{prefix}cert.pem")),
            key: dir.join(format!("{prefix}key.pem")),
            cert_der,
        };
        std::fs::write(&files.ca, &self.pem).expect("write CA");
        std::fs::write(&files.cert, cert).expect("write certificate");
        std::fs::write(&files.key, key).expect("write key");
        files
    }
}
