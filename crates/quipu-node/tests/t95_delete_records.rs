//! DeleteRecords (Kafka's, through Raft): the log start offset rises on every replica, reads
//! below it are out of range at once, it never goes down, a restarted replica keeps it, and the
//! segments wholly below it go at the next retention pass.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_node::{FetchError, ProduceError};
use quipu_storage::{Offset, ReadError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_records_are_gone_on_every_replica_and_stay_gone() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let log = small_log();
    let (mut nodes, groups) = start(&dirs, 1, &log).await;
    let group = groups[0];
    // About 8 KiB a record, 64 KiB segments: several sealed segments.
    let value = "d".repeat(8 * 1024);
    for _ in 0..30 {
        produce(&nodes, group, &value).await;
    }
    let leader = nodes[leader_node(&nodes, group).unwrap()]
        .partition(group)
        .unwrap();
    assert_eq!(leader.high_watermark(), Offset(30));

    assert_eq!(
        leader.delete_records(Some(Offset(17))).await.unwrap(),
        Offset(17)
    );
    match leader.fetch(Offset(16), 1 << 20).await {
        Err(FetchError::Read {
            source: ReadError::OffsetOutOfRange { start, .. },
            ..
        }) => assert_eq!(start, 17),
        other => panic!("expected offset out of range, got {other:?}"),
    }
    assert_eq!(
        leader.fetch(Offset(17), 1).await.unwrap()[0].base_offset,
        Offset(17)
    );
    wait_for("every replica's log start at 17", || {
        nodes
            .iter()
            .all(|n| n.partition(group).unwrap().log_start_offset() == Offset(17))
    })
    .await;
    // It never goes down; beyond the high watermark is refused.
    assert_eq!(
        leader.delete_records(Some(Offset(3))).await.unwrap(),
        Offset(17)
    );
    assert!(matches!(
        leader.delete_records(Some(Offset(31))).await,
        Err(ProduceError::BeyondHighWatermark { .. })
    ));
    drop(leader);

    // A restarted replica rebuilds it from its log.
    let (id, addr) = (nodes[2].id(), nodes[2].addr());
    nodes.remove(2).stop().await;
    let node = restart(&nodes, id, dirs[2].path(), addr, log.clone()).await;
    nodes.push(node);
    wait_for("the restarted replica back at log start 17", || {
        nodes[2]
            .partition(group)
            .is_some_and(|p| p.log_start_offset() == Offset(17) && p.high_watermark() == Offset(30))
    })
    .await;

    // Retention removes the segments wholly below it, and only those.
    let segments_before = segments(dirs[0].path(), group).len();
    for node in &nodes {
        node.enforce_retention().await;
    }
    let after = segments(dirs[0].path(), group).len();
    assert!(
        after < segments_before,
        "{after} of {segments_before} segments left"
    );
    for node in &nodes {
        let partition = node.partition(group).unwrap();
        assert_eq!(partition.log_start_offset(), Offset(17));
    }
    let leader = nodes[leader_node(&nodes, group).unwrap()]
        .partition(group)
        .unwrap();
    let kept = leader.fetch(Offset(17), 1 << 20).await.unwrap();
    assert_eq!(kept[0].base_offset, Offset(17));
    drop(leader);
    for node in nodes {
        node.stop().await;
    }
}
