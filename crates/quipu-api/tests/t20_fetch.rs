//! Fetch at the edge of a leader's log: a fetch above the high watermark but within the log (a
//! new leader's high watermark lags what consumers were shown until it applies its first entry)
//! gets no records and no error, as a Kafka leader answers; only a fetch beyond the log's end is
//! `OFFSET_OUT_OF_RANGE`. Answering the first out of range sent a group member back to its reset
//! policy: the fault-injection suite saw one reset to offset 0 and commit it after a leader
//! change.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use quipu_node::{GroupId, Node, NodeConfig, Partition};
use quipu_proto::v1::FetchRequest;
use quipu_proto::v1::data_client::DataClient;

use common::batch;

const PATIENCE: Duration = Duration::from_secs(30);

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_above_the_high_watermark_within_the_log_is_not_out_of_range() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let config = NodeConfig::new(
            i as u64 + 1,
            dir.path().to_path_buf(),
            "127.0.0.1:0".parse().unwrap(),
        );
        nodes.push(Node::start(config).await.unwrap());
    }
    let voters: Vec<(u64, String)> = nodes
        .iter()
        .map(|n| (n.id(), n.addr().to_string()))
        .collect();
    for node in &nodes {
        node.join(voters.clone()).await.unwrap();
    }
    nodes[0].create_topic("ahead", 1, 3).await.unwrap();
    wait_until("the topic everywhere", || {
        nodes.iter().all(|n| n.metadata().topic("ahead").is_some())
    })
    .await;
    let group = GroupId(nodes[0].metadata().topic("ahead").unwrap().partitions[0].group);
    wait_until("a leader", || {
        nodes
            .iter()
            .any(|n| n.partition(group).is_some_and(|p| p.is_leader()))
    })
    .await;
    let leader = nodes
        .iter()
        .position(|n| n.partition(group).is_some_and(|p| p.is_leader()))
        .unwrap();
    let partition: Arc<Partition> = nodes[leader].partition(group).unwrap();
    for value in ["a", "b", "c"] {
        partition.produce(batch(value)).await.unwrap();
    }
    // Cut off, the leader appends a batch it cannot commit: its log ends above its high
    // watermark.
    nodes[leader].set_isolated(true);
    let stranded = {
        let partition = Arc::clone(&partition);
        tokio::spawn(async move { partition.produce(batch("d")).await })
    };
    wait_until("the stranded append", || {
        partition.log_end_offset() > partition.high_watermark()
    })
    .await;
    assert_eq!(
        (partition.high_watermark().0, partition.log_end_offset().0),
        (3, 4)
    );

    let common::Served { addr, stop, server } =
        common::serve(nodes[leader].handle(), quipu_api::ApiLimits::default()).await;
    let mut client = DataClient::connect(format!("http://{addr}")).await.unwrap();
    let fetch = |offset: u64| FetchRequest {
        topic: "ahead".to_string(),
        partition: 0,
        offset,
        min_bytes: 1,
        max_wait_ms: 0,
        max_bytes: 1 << 20,
        follow: false,
    };
    // At the high watermark and above it within the log: a stream with no records, no error.
    for offset in [3, 4] {
        let mut stream = client.fetch(fetch(offset)).await.unwrap().into_inner();
        while let Some(message) = stream.message().await.unwrap() {
            assert!(message.record_batches.is_empty(), "offset {offset}");
        }
    }
    // Beyond the log's end: out of range.
    let beyond = client.fetch(fetch(5)).await.unwrap_err();
    assert_eq!(beyond.code(), tonic::Code::OutOfRange);

    drop(client);
    let _ = stop.send(());
    let _ = server.await;
    nodes[leader].set_isolated(false);
    let _ = stranded.await;
    for node in nodes {
        node.stop().await;
    }
}
