//! A partition's leader sends its new entries to its followers while its own log syncs them
//! (openraft's `leader_flush_beside_replication`, `docs/internals/replication.md`), and counts
//! itself toward a commit, and answers acks=1 producers, only once that sync is done.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use quipu_storage::Offset;
use quipu_storage::fault::{fail_next_sync, hold_syncs};

/// How long a produce that must wait for the held sync is watched not to complete, after the
/// one follower still reachable holds its entry (a leader counting itself early would commit it
/// within a round trip).
const NOT_BEFORE_RELEASE: Duration = Duration::from_millis(500);
/// How long a produce that needs no more than the followers may take.
const PRODUCE_PATIENCE: Duration = Duration::from_secs(30);

/// The cluster, its leader's replica, and that replica's directory (its log, flush mark and state
/// files).
async fn cluster_with_one_record() -> (OneRecordCluster, Arc<quipu_node::Partition>, PathBuf) {
    let cluster = OneRecordCluster::start("first").await;
    let partition = cluster.nodes[cluster.leader]
        .partition(cluster.group)
        .unwrap();
    let partition_dir = cluster.replica_dir(cluster.leader);
    (cluster, partition, partition_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_replicates_beside_its_held_sync_and_counts_itself_only_once_synced() {
    let (cluster, partition, partition_dir) = cluster_with_one_record().await;
    let (nodes, group, partition) = (&cluster.nodes, cluster.group, &partition);

    // The leader's disk stops completing syncs: its two followers are a majority without it.
    let held = hold_syncs(&partition_dir);
    let second = tokio::time::timeout(PRODUCE_PATIENCE, partition.produce(batch("second")))
        .await
        .expect("committed by the followers while the leader's sync is held")
        .unwrap();
    assert_eq!(second, Offset(1));

    // With one follower cut off, the leader's own sync is needed for a majority, and an acks=1
    // producer waits for it too.
    let (cut, other) = ((cluster.leader + 1) % 3, (cluster.leader + 2) % 3);
    nodes[cut].set_isolated(true);
    let all = tokio::spawn({
        let partition = Arc::clone(partition);
        async move { partition.produce(batch("third")).await }
    });
    let follower = nodes[other].partition(group).unwrap();
    wait_for("the reachable follower to hold the third record", || {
        follower.log_end_offset() >= Offset(3)
    })
    .await;
    let one = tokio::spawn({
        let partition = Arc::clone(partition);
        async move { partition.produce_leader_ack(batch("fourth")).await }
    });
    tokio::time::sleep(NOT_BEFORE_RELEASE).await;
    assert!(
        !all.is_finished() && !one.is_finished(),
        "answered before the leader's log held the record"
    );
    assert_eq!(partition.high_watermark(), Offset(2));

    held.release();
    assert_eq!(all.await.unwrap().unwrap(), Offset(2));
    assert_eq!(one.await.unwrap().unwrap(), Offset(3));
    nodes[cut].set_isolated(false);
    wait_for("every replica to hold four records", || {
        nodes
            .iter()
            .all(|n| n.partition(group).unwrap().high_watermark() == Offset(4))
    })
    .await;
    for node in nodes {
        let held = records_from(&node.partition(group).unwrap(), Offset(0), true).await;
        let values: Vec<&str> = held.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            values,
            ["first", "second", "third", "fourth"],
            "node {}",
            node.id()
        );
    }
    cluster.stop().await;
}

/// A leader's sync that fails (a writeback error) stops its replica, as before, even though the
/// entry went to the followers beside it: another replica leads, and every acknowledged record
/// is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_sync_fails_stops_and_every_acknowledged_record_survives() {
    let (cluster, partition, partition_dir) = cluster_with_one_record().await;
    let (nodes, group) = (&cluster.nodes, cluster.group);

    fail_next_sync(&partition_dir);
    // Committed by the followers, or failed with the leader's replica: either may come first.
    let second = partition.produce(batch("second")).await;
    wait_for("the leader's replica to stop on its failed sync", || {
        partition.health().is_err()
    })
    .await;
    let third = produce(nodes, group, "third").await;
    let held: Vec<String> = values(nodes, group).await;
    // An unacknowledged record may or may not have been committed; an acknowledged one was.
    let with_second = ["first", "second", "third"];
    if second.is_ok() {
        assert_eq!(held, with_second);
    } else {
        assert!(
            held == with_second || held == ["first", "third"],
            "held {held:?}, second: {second:?}"
        );
    }
    assert_eq!(third, Offset(held.len() as u64 - 1));
    // The stopped replica reopens (once nothing holds its old log), without the entries its
    // failed sync left unconfirmed (`quipu-storage` `suspect`), and catches up from the leader.
    let (old_leader, records) = (cluster.leader, held.len() as u64);
    drop(partition);
    wait_for("the failed replica to reopen and catch up", || {
        nodes[old_leader].partition(group).is_some_and(|replica| {
            replica.health().is_ok() && replica.log_end_offset() == Offset(records)
        })
    })
    .await;
    cluster.stop().await;
}
