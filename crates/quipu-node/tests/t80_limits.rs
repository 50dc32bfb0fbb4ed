//! Node-wide limits on what producers make a node hold (issue 15): the bytes of produced batches
//! not yet in the leader's log are bounded on every acks level, acks=0 included.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use bytes::Bytes;
use common::*;
use quipu_node::ControllerError;
use quipu_record::{BatchBuilder, Compression};
use quipu_storage::Offset;

/// A one-record batch of about `len` bytes.
fn batch_of(len: usize) -> Bytes {
    let mut builder = BatchBuilder::new(0, Compression::None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    builder.push(
        i64::try_from(now).unwrap(),
        None,
        Some(&vec![b'x'; len]),
        &[],
    );
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_0_producers_wait_for_room_until_the_leaders_log_has_their_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = small_log();
    // Room for one batch of 12 KiB at a time, not two.
    let budget = log.entry_bytes_max;
    let mut config = config(1, dir.path(), "127.0.0.1:0".parse().unwrap(), log);
    config.produce_bytes_in_flight_max = budget;
    let node = start_single(config).await;
    let partition = single_partition(&node, "topic").await;
    let batch = batch_of(12 * 1024);
    let sent: u64 = 20;
    for i in 0..sent {
        partition
            .produce_unacknowledged(batch.clone())
            .await
            .unwrap();
        // This batch got its room only once the one before it gave its room back: when the
        // leader's log had it. Without the budget, acks=0 batches queue in Raft unseen.
        assert!(
            partition.log_end_offset() >= Offset(i),
            "batch {i} was admitted while an earlier one was not yet in the log (log end {:?})",
            partition.log_end_offset()
        );
        assert!(node.produce_bytes_in_flight() <= budget);
    }
    wait_for("every batch committed and its room given back", || {
        partition.high_watermark() == Offset(sent) && node.produce_bytes_in_flight() == 0
    })
    .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_past_the_cluster_limits_are_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(1, dir.path(), "127.0.0.1:0".parse().unwrap(), small_log());
    config.cluster_limits = quipu_meta::ClusterLimits {
        topics_max: 2,
        partitions_per_node_max: 3,
    };
    let node = start_single(config).await;
    node.create_topic("first", 2, 1).await.unwrap();
    let refused = node.create_topic("second", 2, 1).await.unwrap_err();
    assert!(
        matches!(&refused, ControllerError::LimitExceeded(m) if m.contains("partitions_per_node_max")),
        "{refused:?}"
    );
    let refused = node.add_partitions("first", 2).await.unwrap_err();
    assert!(
        matches!(refused, ControllerError::LimitExceeded(_)),
        "{refused:?}"
    );
    node.create_topic("second", 1, 1).await.unwrap();
    let refused = node.create_topic("third", 1, 1).await.unwrap_err();
    assert!(
        matches!(&refused, ControllerError::LimitExceeded(m) if m.contains("topics_max")),
        "{refused:?}"
    );
    // Nothing of the refused creates exists: no topic, no replica.
    assert!(node.metadata().topic("third").is_none());
    assert_eq!(node.metadata().topic("first").unwrap().partitions.len(), 2);
    wait_for("the three replicas open", || node.partitions().len() == 3).await;
    node.stop().await;
}
