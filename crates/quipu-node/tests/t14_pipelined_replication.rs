//! A partition's leader keeps several AppendEntries in flight to each follower (Quipu's
//! openraft patch `replication_window`, `vendor/README.md`). A follower whose syncs stall while
//! records keep committing through the other one gets appends that time out in the middle of a
//! window; the leader drops the rest of that window and sends again, and once the follower's
//! disk completes syncs again it holds every record, in order, like the others.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::time::Duration;

use common::*;
use quipu_storage::Offset;
use quipu_storage::fault::hold_syncs;

/// Records committed while one follower's syncs are held: more than the leader's window, so
/// that appends wait for the window and ranges are extended meanwhile.
const WHILE_HELD: u64 = 12;
/// How long the follower's syncs stay held after the last of those records: long enough for its
/// appends to time out and the leader to back off and try again.
const HELD_AFTER: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_syncs_stall_gets_every_record_in_order_once_they_go_on() {
    let cluster = OneRecordCluster::start("r0").await;
    let (nodes, group) = (&cluster.nodes, cluster.group);
    let stalled = (cluster.leader + 1) % 3;

    let held = hold_syncs(&cluster.replica_dir(stalled));
    let mut expected = vec!["r0".to_owned()];
    for n in 1..=WHILE_HELD {
        let value = format!("r{n}");
        // Committed by the leader and the other follower.
        assert_eq!(produce(nodes, group, &value).await, Offset(n));
        expected.push(value);
    }
    let follower = nodes[stalled].partition(group).unwrap();
    assert!(
        follower.high_watermark() < Offset(WHILE_HELD + 1),
        "the stalled follower cannot have applied every record"
    );
    tokio::time::sleep(HELD_AFTER).await;
    held.release();

    // Produced after the release: it follows the others on every replica.
    assert_eq!(produce(nodes, group, "last").await, Offset(WHILE_HELD + 1));
    expected.push("last".to_owned());
    wait_for("the stalled follower to hold every record", || {
        follower.log_end_offset() >= Offset(WHILE_HELD + 2)
    })
    .await;
    for node in nodes {
        let held = records_from(&node.partition(group).unwrap(), Offset(0), true).await;
        let values: Vec<String> = held.into_iter().map(|(_, value)| value).collect();
        assert_eq!(values, expected, "node {}", node.id());
    }
    cluster.stop().await;
}
