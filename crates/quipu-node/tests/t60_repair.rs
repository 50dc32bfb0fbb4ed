//! A replica whose log is damaged where recovery cannot cut it off (a zeroed page in a sealed
//! segment: bit rot in committed data) does not stay down: its files are set aside, it starts over
//! empty with its vote, abstains while it re-replicates, and ends with the same records at the
//! same offsets as the leader. Found by the fault-injection harness's disk-corruption scenario,
//! where such replicas stayed offline for the rest of the run (`docs/reliability.md`).
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_storage::Offset;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_damaged_sealed_segment_starts_over_and_catches_up() {
    init_tracing();
    let log = small_log(); // 64 KiB segments
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs, 1, &log).await;
    let group = groups[0];
    let filler = "x".repeat(4000);
    for i in 0..40 {
        produce(&nodes, group, &format!("{i}-{filler}")).await;
    }
    wait_for("every replica to hold every record", || {
        nodes
            .iter()
            .all(|n| n.partition(group).unwrap().high_watermark() == Offset(40))
    })
    .await;

    // A follower goes down and a page of its oldest (sealed) segment is zeroed.
    let leader = leader_node(&nodes, group).unwrap();
    let damaged = (leader + 1) % 3;
    let (id, addr) = (nodes[damaged].id(), nodes[damaged].addr());
    nodes.remove(damaged).stop_unclean().await;
    let segments = segments(dirs[damaged].path(), group);
    assert!(segments.len() >= 2, "the log has a sealed segment");
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    bytes[8192..12288].fill(0);
    std::fs::write(&segments[0], &bytes).unwrap();

    // It comes back from its applied-state checkpoint, without reading its whole log; the first
    // read of the damaged page finds the damage (and never serves it), the replica is reopened
    // with its whole log verified, its files are set aside and it re-replicates.
    let node = restart(&nodes, id, dirs[damaged].path(), addr, log.clone()).await;
    nodes.push(node);
    let back = nodes.len() - 1;
    wait_for("the restarted replica to open", || {
        nodes[back].partition(group).is_some()
    })
    .await;
    let reopened = nodes[back].partition(group).unwrap();
    assert!(matches!(
        reopened.read_replica(Offset(0), u64::MAX).await,
        Err(quipu_node::FetchError::Read {
            source: quipu_storage::ReadError::Corrupt { .. },
            ..
        })
    ));
    drop(reopened);
    let aside = || -> Vec<String> {
        std::fs::read_dir(dirs[damaged].path().join("partitions"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".damaged-"))
            .collect()
    };
    wait_for("the repaired replica to hold every record again", || {
        aside().len() == 1
            && nodes[back].partition(group).is_some_and(|p| {
                p.log_end_offset() == Offset(40)
                    && p.high_watermark() == Offset(40)
                    && !p.is_abstaining()
            })
    })
    .await;
    assert_eq!(
        aside().len(),
        1,
        "the damaged files are kept for inspection"
    );
    let leader = leader_node(&nodes, group).unwrap();
    let on_leader = records_from(&nodes[leader].partition(group).unwrap(), Offset(0), false).await;
    let on_repaired = records_from(&nodes[back].partition(group).unwrap(), Offset(0), true).await;
    assert_eq!(on_repaired.len(), 40);
    assert_eq!(on_repaired, on_leader, "same records at the same offsets");

    // And it can lead: the others go down one by one until it leads a majority again.
    let at = leader_node(&nodes, group).unwrap();
    if at != back {
        nodes.remove(at).stop().await;
    }
    assert_eq!(produce(&nodes, group, "after").await, Offset(40));
    for node in nodes {
        node.stop().await;
    }
}
