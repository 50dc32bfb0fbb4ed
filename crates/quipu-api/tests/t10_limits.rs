//! The client API's connection limits: beyond `connections_per_address_max` a connection is
//! closed at once, and its place comes back when a connection closes.
#![allow(clippy::unwrap_used)] // tests unwrap

use std::time::{Duration, Instant};

mod common;

use common::Api;
use quipu_api::ApiLimits;
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
    let api = Api::start(ApiLimits {
        connections_per_address_max: 2,
        ..ApiLimits::default()
    })
    .await;
    let addr = api.addr;
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
    drop((second, third));
    api.stop().await;
}

/// A following fetch with `max_wait_ms = 0` on an idle partition does not spin: its wait is
/// raised to `FOLLOW_WAIT_MS_MIN`, so empty messages come at most that often. (Before the floor,
/// the same stream measured 9 messages a second here, paced by the transport rather than by a
/// rule; the floor makes the bound explicit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_fetch_with_no_wait_does_not_spin() {
    use quipu_proto::v1::FetchRequest;
    use quipu_proto::v1::data_client::DataClient;

    let api = Api::start(ApiLimits::default()).await;
    let (node, addr) = (&api.node, api.addr);
    node.create_topic("idle", 1, 1).await.unwrap();
    let group = quipu_node::GroupId(node.metadata().topic("idle").unwrap().partitions[0].group);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.partition(group).is_some_and(|p| p.is_leader()) {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = DataClient::connect(format!("http://{addr}")).await.unwrap();
    let mut stream = client
        .fetch(FetchRequest {
            topic: "idle".to_string(),
            partition: 0,
            offset: 0,
            min_bytes: 1,
            max_wait_ms: 0,
            max_bytes: 1 << 20,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let window = Duration::from_secs(1);
    let start = Instant::now();
    let mut messages = 0;
    while let Ok(Ok(Some(message))) =
        tokio::time::timeout(window.saturating_sub(start.elapsed()), stream.message()).await
    {
        assert!(message.record_batches.is_empty());
        messages += 1;
    }
    let most = window.as_millis() / u128::from(quipu_api::FOLLOW_WAIT_MS_MIN) + 2;
    assert!(
        messages <= most,
        "{messages} empty messages in a second (at most {most})"
    );
    drop(stream);
    drop(client);
    api.stop().await;
}
