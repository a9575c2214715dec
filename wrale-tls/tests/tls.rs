//! wrale-tls against real files and real sockets: error messages that name the
//! file, a TLS listener serving axum, the HTTPS client's trust decisions, and a
//! certificate reload.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wrale_tls::testing::{TestCa, TestFiles};
use wrale_tls::{Error, HttpClient, Method, Roots, ServerTls, TlsListener};

fn files(dir: &Path) -> TestFiles {
    TestCa::new("wrale test CA").write(dir, "", 1)
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let missing = dir.path().join("nope.pem");
    let e = ServerTls::from_files(&missing, &f.key).unwrap_err();
    assert!(matches!(e, Error::Read { .. }), "{e:?}");
    let m = e.to_string();
    assert!(m.contains("nope.pem") && m.contains("cannot read"), "{m}");
    let e = ServerTls::from_files(&f.cert, &missing).unwrap_err();
    assert!(e.to_string().contains("nope.pem"), "{e}");
    let e = wrale_tls::client_config(&Roots::CaFile(missing)).unwrap_err();
    assert!(e.to_string().contains("nope.pem"), "{e}");
}

#[test]
fn an_empty_file_has_no_certificate_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = ServerTls::from_files(&empty, &f.key).unwrap_err();
    assert!(matches!(e, Error::NoCertificate { .. }), "{e:?}");
    assert!(
        e.to_string().contains("empty.pem: no certificate in it"),
        "{e}"
    );
    let e = ServerTls::from_files(&f.cert, &empty).unwrap_err();
    assert!(matches!(e, Error::NoPrivateKey { .. }), "{e:?}");
    assert!(
        e.to_string().contains("empty.pem: no private key in it"),
        "{e}"
    );
    // A key file holding a certificate has no key either.
    let e = ServerTls::from_files(&f.cert, &f.cert).unwrap_err();
    assert!(matches!(e, Error::NoPrivateKey { .. }), "{e:?}");
    let e = wrale_tls::client_config(&Roots::CaFile(empty)).unwrap_err();
    assert!(matches!(e, Error::NoCertificate { .. }), "{e:?}");
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("wrale test CA");
    let a = ca.write(dir.path(), "a-", 1);
    let b = ca.write(dir.path(), "b-", 2);
    let e = ServerTls::from_files(&a.cert, &b.key).unwrap_err();
    assert!(matches!(e, Error::KeyMismatch { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains("b-key.pem") && m.contains("a-cert.pem") && m.contains("does not match"),
        "{m}"
    );
    ServerTls::from_files(&a.cert, &a.key).unwrap();
}

/// An axum app over [`TlsListener`] on 127.0.0.1:0.
async fn serve(tls: &ServerTls) -> std::net::SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(tcp, tls.config()).handshake_timeout(Duration::from_secs(2));
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn client(roots: &Roots) -> HttpClient {
    let config = wrale_tls::client_config(roots).unwrap();
    HttpClient::new(config, Duration::from_secs(5), Duration::from_secs(10))
}

/// The DER of the certificate the server at `addr` presents.
async fn presented(addr: std::net::SocketAddr, ca: &Path) -> Vec<u8> {
    let config = wrale_tls::client_config(&Roots::CaFile(ca.to_owned())).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = wrale_tls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_trusted_only_with_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let tls = ServerTls::from_files(&f.cert, &f.key).unwrap();
    let addr = serve(&tls).await;
    let url = format!("https://127.0.0.1:{}/hello", addr.port());

    let ok = client(&Roots::CaFile(f.ca.clone()))
        .request(Method::GET, &url, &[], None, None)
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(&ok.body[..], b"hello");
    let ok = client(&Roots::CaFile(f.ca.clone()))
        .request(
            Method::GET,
            &format!("https://localhost:{}/hello", addr.port()),
            &[],
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200);

    // Another CA, or nothing: refused, and the error says why.
    let other = TestCa::new("another CA").write(dir.path(), "other-", 9);
    for roots in [Roots::CaFile(other.ca.clone()), Roots::Empty] {
        let e = client(&roots)
            .request(Method::GET, &url, &[], None, None)
            .await
            .unwrap_err();
        assert!(e.is_untrusted_certificate(), "{e}");
        assert!(
            e.to_string().contains("certificate is not trusted")
                && e.to_string().contains("UnknownIssuer"),
            "{e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_garbage_and_silent_clients_do_not_stop_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let f = files(dir.path());
    let tls = ServerTls::from_files(&f.cert, &f.key).unwrap();
    let addr = serve(&tls).await;
    let good = client(&Roots::CaFile(f.ca.clone()));
    let url = format!("https://127.0.0.1:{}/hello", addr.port());

    // A client that connects and says nothing (holds its handshake open).
    let _silent = TcpStream::connect(addr).await.unwrap();
    // Plain HTTP to the TLS port.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Garbage.
    let mut junk = TcpStream::connect(addr).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4])
        .await
        .unwrap();
    // The plaintext client is dropped: it reads EOF or an alert, never an HTTP answer.
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    // A good client is served while the silent one still holds its socket.
    let ok = tokio::time::timeout(
        Duration::from_secs(5),
        good.request(Method::GET, &url, &[], None, None),
    )
    .await
    .expect("a good client is not held up")
    .unwrap();
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_new_certificate_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestCa::new("first CA").write(dir.path(), "1-", 1);
    let tls = ServerTls::from_files(&first.cert, &first.key).unwrap();
    let addr = serve(&tls).await;
    assert_eq!(presented(addr, &first.ca).await, first.cert_der);

    // A bad new pair is refused and the running certificate stays.
    let second = TestCa::new("second CA").write(dir.path(), "2-", 2);
    let e = tls.reload(&second.cert, &first.key).unwrap_err();
    assert!(matches!(e, Error::KeyMismatch { .. }), "{e:?}");
    assert_eq!(presented(addr, &first.ca).await, first.cert_der);

    tls.reload(&second.cert, &second.key).unwrap();
    assert_eq!(presented(addr, &second.ca).await, second.cert_der);
    let url = format!("https://127.0.0.1:{}/hello", addr.port());
    let e = client(&Roots::CaFile(first.ca.clone()))
        .request(Method::GET, &url, &[], None, None)
        .await
        .unwrap_err();
    assert!(e.is_untrusted_certificate(), "{e}");
}
