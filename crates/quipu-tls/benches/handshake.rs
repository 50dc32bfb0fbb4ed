//! TLS handshakes per second over loopback, client and server in this process (so both sides'
//! work is counted on this machine's cores): server authentication only, and mutual TLS as the
//! Raft transport and `client_auth = "required"` listeners do. Each iteration is a fresh TCP
//! connection and a full handshake (no session resumption), then one byte each way.
#![allow(clippy::unwrap_used)] // benches unwrap

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quipu_tls::dev::{DevCa, Validity, write};
use quipu_tls::{ClientAuth, ClientFiles, ClientTls, ServerFiles, ServerTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn handshakes(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new().unwrap();
    let ca_file = dir.path().join("ca.pem");
    write(&ca_file, &ca.cert_pem(), false).unwrap();
    let mut paths = Vec::new();
    for (stem, names) in [
        ("server", vec!["127.0.0.1".to_owned()]),
        ("client", vec!["c".to_owned()]),
    ] {
        let issued = ca.issue(stem, &names, Validity::Current).unwrap();
        let (cert, key) = (
            dir.path().join(format!("{stem}.pem")),
            dir.path().join(format!("{stem}.key")),
        );
        write(&cert, &issued.cert_pem, false).unwrap();
        write(&key, &issued.key_pem, true).unwrap();
        paths.push((cert, key));
    }
    let mut group = c.benchmark_group("tls_handshake");
    group.throughput(Throughput::Elements(1));
    for (name, auth) in [
        ("server_auth", ClientAuth::None),
        ("mutual", ClientAuth::Required),
    ] {
        let server = ServerTls::new(
            ServerFiles {
                cert: paths[0].0.clone(),
                key: paths[0].1.clone(),
                ca: Some(ca_file.clone()),
            },
            auth,
            &[],
        )
        .unwrap();
        let client = ClientTls::new(
            ClientFiles {
                ca: ca_file.clone(),
                cert: (auth == ClientAuth::Required).then(|| paths[1].0.clone()),
                key: (auth == ClientAuth::Required).then(|| paths[1].1.clone()),
            },
            &[],
        )
        .unwrap();
        let port = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let server = Arc::clone(&server);
                    tokio::spawn(async move {
                        let mut stream = server.accept(stream).await.unwrap();
                        let mut byte = [0u8; 1];
                        stream.read_exact(&mut byte).await.unwrap();
                        stream.write_all(&byte).await.unwrap();
                        stream.flush().await.unwrap();
                    });
                }
            });
            port
        });
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let mut stream = client.connect("127.0.0.1", port).await.unwrap();
                stream.write_all(&[7]).await.unwrap();
                stream.flush().await.unwrap();
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
