//! Handshakes over loopback: mutual TLS accepts a client certificate of the CA and refuses none,
//! another CA's, or an expired one; a plaintext client gets nothing; new certificate files are
//! picked up by the next connection, and broken ones never replace working ones.
#![allow(clippy::unwrap_used)] // tests unwrap

use std::path::Path;
use std::sync::Arc;

use quipu_tls::dev::{DevCa, Validity, write};
use quipu_tls::{ClientAuth, ClientFiles, ClientTls, Reload, ServerFiles, ServerTls, node_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Writes a CA's certificate and one certificate it issued for `names` into `dir` under
/// `stem`; returns (ca, cert, key) paths.
fn issue(
    dir: &Path,
    ca: &DevCa,
    stem: &str,
    names: &[&str],
    validity: Validity,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = ca.issue_files(dir, stem, names, validity).unwrap();
    let ca_path = dir.join(format!("{stem}-ca.pem"));
    write(&ca_path, &ca.cert_pem(), false).unwrap();
    (ca_path, cert, key)
}

/// A server that answers each connection's first byte with the node id its client certificate
/// names (0 for none), after the handshake; handshake failures close the connection.
async fn echo_server(tls: Arc<ServerTls>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let tls = Arc::clone(&tls);
            tokio::spawn(async move {
                let Ok(mut stream) = tls.accept(stream).await else {
                    return;
                };
                let id = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| node_of(&certs[0]))
                    .unwrap_or(0);
                let mut byte = [0u8; 1];
                if stream.read_exact(&mut byte).await.is_ok() {
                    let _ = stream.write_all(&[u8::try_from(id).unwrap()]).await;
                    let _ = stream.flush().await;
                }
            });
        }
    });
    addr
}

/// Connects with `client`, sends a byte and returns the answer (`None`: refused somewhere).
async fn ask(client: &ClientTls, addr: std::net::SocketAddr) -> Option<u8> {
    let mut stream = client.connect("127.0.0.1", addr.port()).await.ok()?;
    stream.write_all(&[1]).await.ok()?;
    stream.flush().await.ok()?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.ok()?;
    Some(answer[0])
}

#[tokio::test]
async fn mutual_tls_admits_the_cas_certificates_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new().unwrap();
    let (ca_path, server_cert, server_key) = issue(
        dir.path(),
        &ca,
        "server",
        &["127.0.0.1", "quipu-node-1"],
        Validity::Current,
    );
    let server = ServerTls::new(
        ServerFiles {
            cert: server_cert,
            key: server_key,
            ca: Some(ca_path.clone()),
        },
        ClientAuth::Required,
        &[],
    )
    .unwrap();
    let addr = echo_server(server).await;
    let client = |cert: Option<(std::path::PathBuf, std::path::PathBuf)>, trusted: &Path| {
        ClientTls::new(
            ClientFiles {
                ca: trusted.to_path_buf(),
                cert: cert.as_ref().map(|c| c.0.clone()),
                key: cert.map(|c| c.1),
            },
            &[],
        )
        .unwrap()
    };

    // A node certificate of the CA: admitted, and its node id is read.
    let (_, cert, key) = issue(
        dir.path(),
        &ca,
        "node7",
        &["quipu-node-7"],
        Validity::Current,
    );
    assert_eq!(
        ask(&client(Some((cert, key)), &ca_path), addr).await,
        Some(7)
    );
    // No client certificate: refused.
    assert_eq!(ask(&client(None, &ca_path), addr).await, None);
    // An expired one: refused.
    let (_, cert, key) = issue(dir.path(), &ca, "old", &["quipu-node-8"], Validity::Expired);
    assert_eq!(ask(&client(Some((cert, key)), &ca_path), addr).await, None);
    // Another CA's: refused.
    let stranger = DevCa::new().unwrap();
    let (_, cert, key) = issue(
        dir.path(),
        &stranger,
        "stranger",
        &["quipu-node-1"],
        Validity::Current,
    );
    assert_eq!(ask(&client(Some((cert, key)), &ca_path), addr).await, None);
    // A client that does not trust the server's CA refuses the server.
    let (other_ca, cert, key) = issue(
        dir.path(),
        &stranger,
        "mine",
        &["quipu-node-9"],
        Validity::Current,
    );
    assert_eq!(ask(&client(Some((cert, key)), &other_ca), addr).await, None);

    // A plaintext client gets nothing but a TLS alert (record type 21), and the connection
    // closes.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"\x00\x00\x00\x10plaintext kafka")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        plain.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    assert!(
        read.is_err() || answer.is_empty() || answer[0] == 21,
        "{answer:?}"
    );
}

#[tokio::test]
async fn new_certificate_files_are_used_by_the_next_connection_and_broken_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevCa::new().unwrap();
    let (first_ca, cert, key) = issue(
        dir.path(),
        &first,
        "server",
        &["127.0.0.1"],
        Validity::Current,
    );
    let server = ServerTls::new(
        ServerFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: None,
        },
        ClientAuth::None,
        &[],
    )
    .unwrap();
    let addr = echo_server(Arc::clone(&server)).await;
    let trusting = |ca: &Path| {
        ClientTls::new(
            ClientFiles {
                ca: ca.to_path_buf(),
                cert: None,
                key: None,
            },
            &[],
        )
        .unwrap()
    };
    assert_eq!(ask(&trusting(&first_ca), addr).await, Some(0));
    assert!(!server.reload(false).unwrap(), "nothing changed");

    // The files are replaced by a certificate of another CA (written to the same paths).
    let second = DevCa::new().unwrap();
    let issued = second
        .issue("server", &["127.0.0.1".to_owned()], Validity::Current)
        .unwrap();
    let second_ca = dir.path().join("second-ca.pem");
    write(&second_ca, &second.cert_pem(), false).unwrap();
    write(&cert, &issued.cert_pem, false).unwrap();
    write(&key, &issued.key_pem, true).unwrap();
    assert!(server.reload(true).unwrap());
    assert_eq!(ask(&trusting(&second_ca), addr).await, Some(0));
    assert_eq!(ask(&trusting(&first_ca), addr).await, None);

    // A broken key file is refused and the working configuration stays.
    write(&key, "not a key", true).unwrap();
    assert!(server.reload(true).is_err());
    assert_eq!(ask(&trusting(&second_ca), addr).await, Some(0));
}

#[test]
fn missing_or_half_configurations_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new().unwrap();
    let (ca_path, cert, key) = issue(dir.path(), &ca, "server", &["localhost"], Validity::Current);
    let error = ServerTls::new(
        ServerFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: None,
        },
        ClientAuth::Required,
        &[],
    )
    .unwrap_err();
    assert!(matches!(error, quipu_tls::TlsError::NoCa), "{error}");
    let error = ServerTls::new(
        ServerFiles {
            cert: dir.path().join("missing.pem"),
            key: key.clone(),
            ca: None,
        },
        ClientAuth::None,
        &[],
    )
    .unwrap_err();
    assert!(error.to_string().contains("missing.pem"), "{error}");
    let error = ClientTls::new(
        ClientFiles {
            ca: ca_path,
            cert: Some(cert),
            key: None,
        },
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(error, quipu_tls::TlsError::HalfIdentity),
        "{error}"
    );
    // A key that is not the certificate's.
    let (_, _, other_key) = issue(dir.path(), &ca, "other", &["localhost"], Validity::Current);
    let error = ServerTls::new(
        ServerFiles {
            cert: dir.path().join("server.pem"),
            key: other_key,
            ca: None,
        },
        ClientAuth::None,
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(error, quipu_tls::TlsError::Config { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn the_server_chooses_aes_128_gcm_whatever_order_the_client_offers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new().unwrap();
    let (ca_path, cert, key) = issue(dir.path(), &ca, "server", &["127.0.0.1"], Validity::Current);
    let server = ServerTls::new(
        ServerFiles {
            cert,
            key,
            ca: None,
        },
        ClientAuth::None,
        &[],
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = server.accept(stream).await.unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .unwrap()
            .suite()
    });
    // A client with aws-lc-rs's own order, AES-256-GCM first (as OpenSSL's clients too).
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&ca_path).unwrap();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    assert_eq!(
        provider.cipher_suites[0].suite(),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    );
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream.write_all(&[1]).await.unwrap();
    stream.flush().await.unwrap();
    assert_eq!(
        accepted.await.unwrap(),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
    );
}
