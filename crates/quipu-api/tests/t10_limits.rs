//! The client API's connection limits: beyond `connections_per_address_max` a connection is
//! closed at once, and its place comes back when a connection closes.
#![allow(clippy::unwrap_used)] // tests unwrap

use std::time::{Duration, Instant};

use quipu_api::ApiLimits;
use quipu_node::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// HTTP/2's client preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Whether the server answers a new connection (its SETTINGS frame) rather than closing it.
async fn answered(addr: std::net::SocketAddr) -> (bool, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(PREFACE).await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await;
    (matches!(read, Ok(Ok(n)) if n > 0), stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig::new(
        1,
        dir.path().to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = ApiLimits {
        connections_per_address_max: 2,
        ..ApiLimits::default()
    };
    let server = tokio::spawn(quipu_api::serve(node.handle(), listener, limits, async {
        let _ = stopped.await;
    }));
    let (first_ok, first) = answered(addr).await;
    let (second_ok, second) = answered(addr).await;
    assert!(first_ok && second_ok);
    let (third_ok, third) = answered(addr).await;
    assert!(
        !third_ok,
        "the third connection from this address is closed"
    );
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, stream) = answered(addr).await;
        drop(stream);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the place never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A graceful stop waits for open connections: close ours first.
    drop((second, third));
    let _ = stop.send(());
    let _ = server.await;
    node.stop().await;
}
