//! Idempotent producers on a three-node cluster: producer ids are unique whichever node hands
//! them out; a retried batch is written once and answered with its first offset, before and
//! after the leader crashes; batches out of sequence, from a fenced epoch or from an unknown
//! producer are refused with nothing written; and batches a producer keeps in flight at once
//! land in sequence order.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::*;
use quipu_node::{GroupId, Node, ProduceError, SequenceError};
use quipu_record::{BatchBuilder, Compression};
use quipu_storage::Offset;

/// A batch of `count` records `"{prefix}{sequence}"` from producer `id`, epoch `epoch`, whose
/// first sequence is `first`.
fn idempotent(id: i64, epoch: i16, first: i32, count: i32, prefix: &str) -> Bytes {
    let mut builder = BatchBuilder::new(0, Compression::None).with_producer(id, epoch, first);
    for sequence in first..first + count {
        builder.push(
            1_700_000_000_000,
            None,
            Some(format!("{prefix}{sequence}").as_bytes()),
            &[],
        );
    }
    builder.build().unwrap()
}

/// Produces `batch` with acks=all on whichever node leads `group`, retrying while there is no
/// leader or the outcome is unknown (as an idempotent client does).
async fn produce_retrying(
    nodes: &[Node],
    group: GroupId,
    batch: &Bytes,
) -> Result<Offset, ProduceError> {
    let start = std::time::Instant::now();
    loop {
        if let Some(at) = leader_node(nodes, group) {
            match nodes[at]
                .partition(group)
                .unwrap()
                .produce(batch.clone())
                .await
            {
                Err(ProduceError::NotLeader { .. } | ProduceError::Unavailable { .. }) => {}
                other => return other,
            }
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no answer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Three nodes, a producer id, and the leader's replica of a one-partition topic.
async fn one_partition_and_a_producer(
    dirs: &[tempfile::TempDir],
) -> (Vec<Node>, i64, std::sync::Arc<quipu_node::Partition>) {
    let (nodes, groups) = start(dirs, 1, &small_log()).await;
    let group = groups[0];
    let id = nodes[1].init_producer_id().await.unwrap();
    wait_for("a leader", || leader_node(&nodes, group).is_some()).await;
    let partition = nodes[leader_node(&nodes, group).unwrap()]
        .partition(group)
        .unwrap();
    (nodes, id, partition)
}

fn sequence_error(result: Result<Offset, ProduceError>) -> SequenceError {
    match result {
        Err(ProduceError::Sequence { source, .. }) => source,
        other => panic!("expected a sequence error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batches_are_written_once_before_and_after_a_leader_crash() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs, 1, &small_log()).await;
    let group = groups[0];

    // Ids from any node are distinct: each node takes its own block from the controller.
    let mut ids = BTreeSet::new();
    for node in &nodes {
        for _ in 0..3 {
            assert!(ids.insert(node.init_producer_id().await.unwrap()));
        }
    }
    let id = *ids.first().unwrap();

    let first = idempotent(id, 0, 0, 3, "a");
    let second = idempotent(id, 0, 3, 2, "a");
    assert_eq!(
        produce_retrying(&nodes, group, &first).await.unwrap(),
        Offset(0)
    );
    assert_eq!(
        produce_retrying(&nodes, group, &second).await.unwrap(),
        Offset(3)
    );
    // Retries of either are answered with their offsets and written no more.
    assert_eq!(
        produce_retrying(&nodes, group, &first).await.unwrap(),
        Offset(0)
    );
    assert_eq!(
        produce_retrying(&nodes, group, &second).await.unwrap(),
        Offset(3)
    );
    let leader = leader_node(&nodes, group).unwrap();
    assert_eq!(
        nodes[leader].partition(group).unwrap().high_watermark(),
        Offset(5)
    );

    // A gap, an unknown producer, a fenced epoch: refused, nothing written.
    assert!(matches!(
        sequence_error(produce_retrying(&nodes, group, &idempotent(id, 0, 9, 1, "a")).await),
        SequenceError::OutOfOrder {
            got: 9,
            expected: 5,
            ..
        }
    ));
    let other = *ids.last().unwrap();
    assert!(matches!(
        sequence_error(produce_retrying(&nodes, group, &idempotent(other, 0, 4, 1, "b")).await),
        SequenceError::UnknownProducer { got: 4, .. }
    ));
    produce_retrying(&nodes, group, &idempotent(other, 1, 0, 1, "b"))
        .await
        .unwrap();
    assert!(matches!(
        sequence_error(produce_retrying(&nodes, group, &idempotent(other, 0, 0, 1, "c")).await),
        SequenceError::StaleEpoch { current: 1, .. }
    ));

    // The leader crashes; its successor knows the producers from the replicated log.
    nodes.remove(leader).stop_unclean().await;
    assert_eq!(
        produce_retrying(&nodes, group, &second).await.unwrap(),
        Offset(3)
    );
    assert_eq!(
        produce_retrying(&nodes, group, &idempotent(id, 0, 5, 1, "a"))
            .await
            .unwrap(),
        Offset(6)
    );
    assert_eq!(
        values(&nodes, group).await,
        ["a0", "a1", "a2", "a3", "a4", "b0", "a5"]
    );
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_at_once_land_in_sequence_order() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, id, partition) = one_partition_and_a_producer(&dirs).await;
    // Rounds of five batches sent at once (Kafka's most in flight), the later ones first: each
    // waits at the leader for the gap before it to fill, so every batch lands at its sequence's
    // offset, with no retry.
    for round in 0..20 {
        let sends: Vec<_> = (0..5)
            .rev()
            .map(|i| {
                let sequence = round * 5 + i;
                let partition = std::sync::Arc::clone(&partition);
                tokio::spawn(async move {
                    let batch = idempotent(id, 0, sequence, 1, "v");
                    (sequence, partition.produce(batch).await)
                })
            })
            .collect();
        for send in sends {
            let (sequence, offset) = send.await.unwrap();
            assert_eq!(offset.unwrap(), Offset(u64::try_from(sequence).unwrap()));
        }
    }
    assert_eq!(partition.high_watermark(), Offset(100));
    drop(partition);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_sent_while_its_batch_is_still_in_raft_gets_the_same_offset() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, id, partition) = one_partition_and_a_producer(&dirs).await;
    for round in 0..10 {
        let batch = idempotent(id, 0, round * 4, 4, "r");
        let (a, b, c) = tokio::join!(
            partition.produce(batch.clone()),
            partition.produce(batch.clone()),
            partition.produce_leader_ack(batch.clone()),
        );
        let expected = Offset(u64::try_from(round).unwrap() * 4);
        assert_eq!(
            (a.unwrap(), b.unwrap(), c.unwrap()),
            (expected, expected, expected)
        );
    }
    assert_eq!(partition.high_watermark(), Offset(40));
    drop(partition);
    for node in nodes {
        node.stop().await;
    }
}
