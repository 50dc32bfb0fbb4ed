//! A replica whose disk lost entries it had acknowledged (damage after the sync: a cut tail, a
//! flipped bit that recovery cuts at) must not help elect a leader that lacks them. Found by the
//! fault-injection harness's disk-corruption scenario (`docs/reliability.md`): a record
//! committed by the leader and one follower, whose log then lost it, could be overwritten once the
//! damaged follower voted for the third replica, which never had it.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::time::{Duration, Instant};

use common::*;
use quipu_node::{GroupId, Node};
use quipu_storage::{FsyncPolicy, LogConfig, Offset};

fn leads(node: &Node, group: GroupId) -> bool {
    node.partition(group).is_some_and(|p| p.is_leader())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_acknowledged_entries_abstains_until_it_has_them_again() {
    init_tracing();
    let log = small_log(); // no preallocation: a segment file ends where its data ends
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs, 1, &log).await;
    let group = groups[0];
    assert_eq!(produce(&nodes, group, "first").await, Offset(0));
    wait_for("every replica to hold the first record", || {
        nodes
            .iter()
            .all(|n| n.partition(group).unwrap().high_watermark() == Offset(1))
    })
    .await;

    // The third replica is cut off: "second" is committed by the leader and one follower alone.
    let leader = leader_node(&nodes, group).unwrap();
    let (damaged, third) = ((leader + 1) % 3, (leader + 2) % 3);
    nodes[third].set_isolated(true);
    let segment = segments(dirs[damaged].path(), group).pop().unwrap();
    let length_before = std::fs::metadata(&segment).unwrap().len();
    assert_eq!(produce(&nodes, group, "second").await, Offset(1));
    assert_eq!(
        nodes[damaged].partition(group).unwrap().log_end_offset(),
        Offset(2),
        "the follower acknowledged the second record"
    );

    // The follower's disk loses the second record while it is down; then the leader goes down,
    // the follower comes back, and the third replica is reachable again.
    let id = |at: usize| nodes[at].id();
    let addr = |at: usize| nodes[at].addr();
    let (leader_id, leader_addr) = (id(leader), addr(leader));
    let (damaged_id, damaged_addr) = (id(damaged), addr(damaged));
    let mut taken: Vec<Option<Node>> = nodes.drain(..).map(Some).collect();
    taken[damaged].take().unwrap().stop_unclean().await;
    cut_file(&segment, length_before);
    taken[leader].take().unwrap().stop_unclean().await;
    let third_node = taken[third].take().unwrap();
    third_node.set_isolated(false);
    let mut nodes = vec![third_node];
    let back = restart(
        &nodes,
        damaged_id,
        dirs[damaged].path(),
        damaged_addr,
        log.clone(),
    )
    .await;
    nodes.push(back);
    wait_for("the damaged replica to reopen", || {
        nodes[1].partition(group).is_some()
    })
    .await;
    let reopened = nodes[1].partition(group).unwrap();
    assert_eq!(
        reopened.log_end_offset(),
        Offset(1),
        "the damage cut the second record"
    );
    assert!(
        reopened.is_abstaining(),
        "it knows it lost an acknowledged entry"
    );

    // Without the damaged replica's vote the third one cannot lead: the group waits (longer than
    // two maximum election timeouts) instead of electing a leader without "second".
    let observed = Instant::now();
    while observed.elapsed() < Duration::from_secs(3) {
        assert!(
            !nodes.iter().any(|n| leads(n, group)),
            "a leader was elected without the committed second record"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The old leader returns: the group elects a leader holding "second", the damaged replica
    // gets it back and votes again, and nothing acknowledged is lost.
    let old_leader = restart(
        &nodes,
        leader_id,
        dirs[leader].path(),
        leader_addr,
        log.clone(),
    )
    .await;
    nodes.push(old_leader);
    assert_eq!(produce(&nodes, group, "third").await, Offset(2));
    wait_for("the damaged replica to hold every record again", || {
        let p = nodes[1].partition(group).unwrap();
        p.log_end_offset() == Offset(3) && !p.is_abstaining()
    })
    .await;
    assert_eq!(values(&nodes, group).await, ["first", "second", "third"]);
    for node in nodes {
        node.stop().await;
    }
}

/// openraft restores a replica whose stored vote is committed for itself as leader at once, with
/// no election. A leader that restarts quickly after its disk lost acknowledged entries must not
/// lead without them (its next entry would take the log id of a committed one on its followers,
/// which would keep theirs: two records at one offset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_acknowledged_entries_does_not_resume_leadership() {
    a_leader_that_lost_entries_does_not_resume_leadership(small_log(), Mark::Kept).await;
}

/// The same, where no flush mark tells of the loss: a leader replicates its entries while its
/// own log syncs them, so a crash of its machine may take entries its followers hold before its
/// log ever held them durably. A log not closed cleanly hands a vote naming its own node over
/// uncommitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_entries_it_had_not_synced_does_not_resume_leadership() {
    a_leader_that_lost_entries_does_not_resume_leadership(small_log(), Mark::Lost).await;
}

/// Whether the leader's flush mark survives the loss of its last entry.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    Kept,
    Lost,
}

/// The same, where the loss is allowed: `fsync = never` acknowledges what is not durable, so a
/// crash of the leader's machine may take entries its followers hold, and no mark says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_does_not_sync_and_lost_entries_does_not_resume_leadership() {
    a_leader_that_lost_entries_does_not_resume_leadership(
        LogConfig {
            fsync: FsyncPolicy::Never,
            ..small_log()
        },
        Mark::Kept,
    )
    .await;
}

async fn a_leader_that_lost_entries_does_not_resume_leadership(log: LogConfig, mark: Mark) {
    init_tracing();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs, 1, &log).await;
    let group = groups[0];
    assert_eq!(produce(&nodes, group, "first").await, Offset(0));
    let leader = leader_node(&nodes, group).unwrap();
    let segment = segments(dirs[leader].path(), group).pop().unwrap();
    let length_before = std::fs::metadata(&segment).unwrap().len();
    assert_eq!(produce(&nodes, group, "second").await, Offset(1));
    wait_for("every replica to hold both records", || {
        nodes
            .iter()
            .all(|n| n.partition(group).unwrap().high_watermark() == Offset(2))
    })
    .await;

    // The leader stops, loses "second" from its disk, and is back before anyone else stands.
    let (id, addr) = (nodes[leader].id(), nodes[leader].addr());
    nodes.remove(leader).stop_unclean().await;
    cut_file(&segment, length_before);
    if mark == Mark::Lost {
        let mark = segment.parent().unwrap().join(quipu_raft::FLUSH_MARK_FILE);
        std::fs::remove_file(mark).unwrap();
    }
    let node = restart(&nodes, id, dirs[leader].path(), addr, log.clone()).await;
    nodes.push(node);
    assert_eq!(produce(&nodes, group, "third").await, Offset(2));
    wait_for("every replica to hold three records", || {
        nodes.iter().all(|n| {
            n.partition(group)
                .is_some_and(|p| p.high_watermark() == Offset(3) && !p.is_abstaining())
        })
    })
    .await;
    for node in &nodes {
        let held = records_from(&node.partition(group).unwrap(), Offset(0), true).await;
        let values: Vec<&str> = held.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["first", "second", "third"], "node {}", node.id());
    }
    for node in nodes {
        node.stop().await;
    }
}
