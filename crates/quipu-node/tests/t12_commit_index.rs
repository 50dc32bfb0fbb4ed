//! An entry that commits costs each follower one AppendEntries, not two: the leader's commit
//! index rides on the next entries instead of an empty AppendEntries sent at once, and goes alone
//! only when nothing follows within a twentieth of the heartbeat interval (Quipu's patch of
//! openraft, `vendor/README.md`); followers still learn that the last entry committed.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; counts are small

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use quipu_node::{GroupId, Node, NodeConfig, Partition};
use quipu_storage::Offset;

const GROUP: GroupId = GroupId(1);
/// Entries produced one after another, each replicated alone.
const ENTRIES: u64 = 200;
/// The timed heartbeats' interval here: long, so that the empty appends they send stay few.
const HEARTBEAT_MS: u64 = 500;

/// The AppendEntries this process's nodes sent, empty or carrying entries (from the transport's
/// `quipu_raft_append_entries` histogram).
#[derive(Debug, Default)]
struct Appends {
    empty: AtomicU64,
    carrying: AtomicU64,
}

impl HistogramFn for Appends {
    fn record(&self, entries: f64) {
        let count = if entries == 0.0 {
            &self.empty
        } else {
            &self.carrying
        };
        count.fetch_add(1, Ordering::SeqCst);
    }
}

impl Appends {
    fn read(&self) -> (u64, u64) {
        (
            self.empty.load(Ordering::SeqCst),
            self.carrying.load(Ordering::SeqCst),
        )
    }
}

/// A recorder that keeps only the appends' histogram.
#[derive(Debug)]
struct Recorder(Arc<Appends>);

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == "quipu_raft_append_entries" {
            Histogram::from_arc(Arc::clone(&self.0))
        } else {
            Histogram::noop()
        }
    }
}

fn config(id: u64, dir: &std::path::Path) -> NodeConfig {
    let mut config = common::config(id, dir, "127.0.0.1:0".parse().unwrap(), common::small_log());
    config.raft.heartbeat_interval = HEARTBEAT_MS;
    config.raft.election_timeout_min = 3 * HEARTBEAT_MS;
    config.raft.election_timeout_max = 6 * HEARTBEAT_MS;
    config
}

async fn leader(partitions: &[Arc<Partition>]) -> usize {
    common::wait_for("a leader every replica knows", || {
        let leaders: Vec<_> = partitions.iter().map(|p| p.leader()).collect();
        partitions.iter().any(|p| p.is_leader()) && leaders.iter().all(|l| *l == leaders[0])
    })
    .await;
    partitions.iter().position(|p| p.is_leader()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_costs_each_follower_one_append_and_its_commit_still_reaches_them() {
    let appends = Arc::new(Appends::default());
    metrics::set_global_recorder(Recorder(Arc::clone(&appends))).unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(Node::start(config(i as u64 + 1, dir.path())).await.unwrap());
    }
    let partitions = common::bootstrap_group(&nodes, GROUP).await;
    let at = leader(&partitions).await;
    // The first entry settles replication (a new leader's probes are empty appends too).
    partitions[at]
        .produce(common::batch("first"))
        .await
        .unwrap();
    common::wait_for("every replica holding the first entry", || {
        partitions.iter().all(|p| p.high_watermark() == Offset(1))
    })
    .await;

    let (empty_before, carrying_before) = appends.read();
    let started = Instant::now();
    let mut end = Offset(1);
    for i in 0..ENTRIES {
        // One at a time: each entry commits before the next is proposed, so it travels alone.
        end = partitions[at]
            .produce(common::batch(&format!("r-{i}")))
            .await
            .unwrap();
    }
    let elapsed = started.elapsed();
    let (empty_after, carrying_after) = appends.read();
    let (empty, carrying) = (empty_after - empty_before, carrying_after - carrying_before);
    // Each entry reached at least the follower whose answer committed it.
    assert!(carrying >= ENTRIES, "{carrying} appends carried entries");
    // Empty appends: the timed heartbeats to two followers, nothing per entry (upstream
    // openraft sent at least one empty append per committed entry: 200 or more here).
    let heartbeats = 2 * (elapsed.as_millis() as u64 / HEARTBEAT_MS + 2);
    assert!(
        heartbeats < ENTRIES / 2,
        "the run took {elapsed:?}: too slow to tell per-entry appends from heartbeats"
    );
    assert!(
        empty <= heartbeats,
        "{empty} empty appends in {elapsed:?} for {ENTRIES} entries (at most {heartbeats} heartbeats)"
    );
    // Nothing follows the last entry, yet every follower learns that it committed (the commit
    // index goes alone once no entries came to carry it) and exposes it.
    let last = Offset(end.0 + 1);
    common::wait_for("every replica's high watermark past the last entry", || {
        partitions.iter().all(|p| p.high_watermark() == last)
    })
    .await;
    tokio::time::timeout(Duration::from_secs(30), async {
        for node in nodes {
            node.stop().await;
        }
    })
    .await
    .unwrap();
}
