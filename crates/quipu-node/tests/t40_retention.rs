//! Retention on replicated partitions: each replica removes whole segments past retention behind
//! a snapshot at a segment boundary; a follower that was down while the others purged past its
//! log's end catches up through the leader's snapshot and ordinary replication, and then holds
//! the same records at the same offsets from the leader's log start on.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

use common::*;
use quipu_node::{ControllerError, ControllerRequest};
use quipu_storage::{LogConfig, Offset};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_log_start_catches_up() {
    init_tracing();
    let log = LogConfig {
        retention_bytes: Some(128 * 1024),
        ..small_log()
    };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs, 2, &log).await;
    let group = groups[0];
    assert_eq!(produce(&nodes, group, "first").await, Offset(0));
    let leader = leader_node(&nodes, group).unwrap();
    let follower = (leader + 1) % 3;
    wait_for("the follower to hold the first record", || {
        nodes[follower].partition(group).unwrap().high_watermark() == Offset(1)
    })
    .await;

    // The follower goes down; the others take 600 KiB, about ten 64 KiB segments.
    let (follower_id, follower_addr) = (nodes[follower].id(), nodes[follower].addr());
    nodes.remove(follower).stop().await;
    let filler = "x".repeat(4000);
    for i in 1..150 {
        produce(&nodes, group, &format!("{i}-{filler}")).await;
    }

    // Retention on the survivors: the leader's log now starts past the follower's end.
    for node in &nodes {
        node.enforce_retention().await;
    }
    let at = leader_node(&nodes, group).unwrap();
    let leader_partition = nodes[at].partition(group).unwrap();
    wait_for("the leader's log purged behind its snapshot", || {
        leader_partition.log_start_offset() > Offset(1)
    })
    .await;
    let start = leader_partition.log_start_offset();
    let size_kept = leader_partition.log_end_offset().0 - start.0;
    assert!(
        size_kept * 4000 >= 128 * 1024,
        "retention keeps at least retention_bytes"
    );

    // The follower comes back: it installs the leader's snapshot, restarts its log at the
    // leader's log start and replicates the rest.
    let node = restart(
        &nodes,
        follower_id,
        dirs[follower].path(),
        follower_addr,
        log.clone(),
    )
    .await;
    nodes.push(node);
    let back = nodes.len() - 1;
    wait_for("the restarted follower to catch up", || {
        nodes[back]
            .partition(group)
            .is_some_and(|p| p.high_watermark() == Offset(150) && p.log_end_offset() == Offset(150))
    })
    .await;
    let caught_up = nodes[back].partition(group).unwrap();
    assert!(
        caught_up.log_start_offset() >= start,
        "the follower's log restarted at the leader's snapshot: {:?} < {start:?}",
        caught_up.log_start_offset()
    );
    let from = caught_up.log_start_offset();
    let on_follower = records_from(&caught_up, from, true).await;
    let on_leader = records_from(&leader_partition, from, false).await;
    assert_eq!(on_follower.len() as u64, 150 - from.0);
    assert_eq!(on_follower, on_leader, "same records at the same offsets");

    // The follower may lead now: stop the leader; whoever leads serves everything from its log
    // start, and takes new records at the next offset.
    let at = leader_node(&nodes, group).unwrap();
    nodes.remove(at).stop().await;
    assert_eq!(produce(&nodes, group, "after").await, Offset(150));
    for node in nodes {
        node.stop().await;
    }
}

/// Pins the bug where a topic's settings were stored and shown but never reached its replicas:
/// retention set on a live topic removes old segments on every replica without a restart, and a
/// replica opened later (a restarted node) runs with the topic's settings, not the node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_changed_on_a_live_topic_applies_on_every_replica() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let log = small_log();
    let (mut nodes, groups) = start(&dirs, 1, &log).await;
    let group = groups[0];
    // About 600 KiB: ten 64 KiB segments on each replica, none of which the node's settings
    // (no retention) remove.
    let filler = "x".repeat(4000);
    for i in 0..150 {
        produce(&nodes, group, &format!("{i}-{filler}")).await;
    }
    wait_for("every replica to hold every record", || {
        nodes
            .iter()
            .all(|n| n.partition(group).unwrap().high_watermark() == Offset(150))
    })
    .await;
    for node in &nodes {
        node.enforce_retention().await;
        assert_eq!(node.partition(group).unwrap().log_start_offset(), Offset(0));
    }

    let set = vec![("retention.bytes".to_string(), "131072".to_string())];
    nodes[0]
        .request_controller(ControllerRequest::AlterTopicConfig {
            name: "topic".to_string(),
            set,
            reset: Vec::new(),
            replace: false,
        })
        .await
        .unwrap();
    wait_for("every replica to run with the topic's retention", || {
        nodes
            .iter()
            .all(|n| n.partition(group).unwrap().settings().retention_bytes == Some(128 * 1024))
    })
    .await;
    for node in &nodes {
        node.enforce_retention().await;
    }
    wait_for("every replica to purge behind its snapshot", || {
        nodes
            .iter()
            .all(|n| n.partition(group).unwrap().log_start_offset() > Offset(0))
    })
    .await;
    for node in &nodes {
        let partition = node.partition(group).unwrap();
        let kept = partition.log_end_offset().0 - partition.log_start_offset().0;
        assert!(
            kept * 4000 >= 128 * 1024,
            "retention keeps at least retention.bytes"
        );
        assert!(kept < 100, "node {}: kept {kept} records", node.id());
    }

    // A replica opened after the change runs with the topic's settings from the start.
    let (id, addr) = (nodes[2].id(), nodes[2].addr());
    nodes.remove(2).stop().await;
    let node = restart(&nodes, id, dirs[2].path(), addr, log.clone()).await;
    nodes.push(node);
    wait_for("the restarted replica to open", || {
        nodes[2].partition(group).is_some()
    })
    .await;
    assert_eq!(
        nodes[2]
            .partition(group)
            .unwrap()
            .settings()
            .retention_bytes,
        Some(128 * 1024)
    );

    // A value out of range is refused, naming the key, and changes nothing.
    let refused = nodes[0]
        .request_controller(ControllerRequest::AlterTopicConfig {
            name: "topic".to_string(),
            set: vec![("retention.ms".to_string(), "0".to_string())],
            reset: Vec::new(),
            replace: false,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ControllerError::InvalidConfig(m) if m.contains("retention.ms")),
        "{refused:?}"
    );
    for node in nodes {
        node.stop().await;
    }
}

/// Pins the bug where `fsync = interval_ms` synced only when an append found the interval
/// passed, so the last records before a pause stayed in the page cache indefinitely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_an_fsync_interval_an_idle_log_is_synced_within_the_interval() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let log = LogConfig {
        fsync: quipu_storage::FsyncPolicy::IntervalMs(200),
        ..small_log()
    };
    let (nodes, groups) = start(&dirs, 1, &log).await;
    let group = groups[0];
    // Back to back: the second append comes well within the interval of the first's sync.
    produce(&nodes, group, "one").await;
    produce(&nodes, group, "two").await;
    wait_for(
        "every replica to sync what it holds, with no further append",
        || {
            nodes
                .iter()
                .all(|n| n.partition(group).unwrap().is_durable())
        },
    )
    .await;
    for node in nodes {
        node.stop().await;
    }
}
