//! Helpers of the multi-node tests that run a cluster with a topic: three nodes on 127.0.0.1,
//! joined through the controller.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quipu_node::{GroupId, Node, NodeConfig, Partition, ProduceError};
use quipu_record::{BatchBuilder, Compression, decode_records};
use quipu_storage::{LogConfig, Offset};

/// How long a test waits for a condition before failing (a bound, not a synchronisation).
const PATIENCE: Duration = Duration::from_secs(30);

/// Small segments and batches, no preallocation.
pub fn small_log() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 * 1024,
        entry_bytes_max: 16 * 1024,
        preallocate_bytes: 0,
        ..LogConfig::default()
    }
}

pub fn config(id: u64, dir: &Path, listen: SocketAddr, log: LogConfig) -> NodeConfig {
    NodeConfig {
        log,
        ..NodeConfig::new(id, dir.to_path_buf(), listen)
    }
}

pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three nodes that joined one cluster, once the controller registered all of them.
pub async fn start_nodes(dirs: &[tempfile::TempDir], log: &LogConfig) -> Vec<Node> {
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let listen = "127.0.0.1:0".parse().unwrap();
        let config = config(i as u64 + 1, dir.path(), listen, log.clone());
        nodes.push(Node::start(config).await.unwrap());
    }
    form_cluster(&nodes).await;
    nodes
}

/// Forms a cluster of `nodes` (each an initial voter) and waits until every node is registered
/// and a controller leader is known everywhere.
pub async fn form_cluster(nodes: &[Node]) {
    let voters = voters(nodes);
    for node in nodes {
        node.join(voters.clone()).await.unwrap();
    }
    wait_for("a controller leader that registered every node", || {
        nodes
            .iter()
            .all(|n| n.metadata().nodes().count() == nodes.len() && n.controller_leader().is_some())
    })
    .await;
}

/// Every node's (id, transport address).
pub fn voters<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<(u64, String)> {
    nodes
        .into_iter()
        .map(|n| (n.id(), n.addr().to_string()))
        .collect()
}

/// The Raft groups of `topic`'s partitions, in partition order, as `node` knows them.
pub fn groups_of(node: &Node, topic: &str) -> Vec<GroupId> {
    node.metadata()
        .topic(topic)
        .unwrap()
        .partitions
        .iter()
        .map(|p| GroupId(p.group))
        .collect()
}

/// Whether every node hosts a replica of each of `groups` and one of them leads it.
pub fn every_replica_led(nodes: &[Node], groups: &[GroupId]) -> bool {
    groups.iter().all(|group| {
        nodes.iter().all(|n| n.partition(*group).is_some()) && leader_node(nodes, *group).is_some()
    })
}

/// Three joined nodes and a topic of `partitions` partitions with replication factor 3.
pub async fn start(
    dirs: &[tempfile::TempDir],
    partitions: usize,
    log: &LogConfig,
) -> (Vec<Node>, Vec<GroupId>) {
    let nodes = start_nodes(dirs, log).await;
    let leader = nodes
        .iter()
        .find(|n| n.controller_leader() == Some(n.id()))
        .unwrap();
    leader.create_topic("topic", partitions, 3).await.unwrap();
    let groups = groups_of(leader, "topic");
    (nodes, groups)
}

/// Restarts node `id` on `addr` from `dir` and rejoins it to `others`.
pub async fn restart(
    others: &[Node],
    id: u64,
    dir: &Path,
    addr: SocketAddr,
    log: LogConfig,
) -> Node {
    rejoin(others, config(id, dir, addr, log)).await
}

/// Starts a node with `config` again and rejoins it to `others`.
pub async fn rejoin(others: &[Node], config: NodeConfig) -> Node {
    let node = Node::start(config).await.unwrap();
    node.join(voters(others.iter().chain(std::iter::once(&node))))
        .await
        .unwrap();
    node
}

/// The node that leads the most of `groups`, and the groups it leads.
pub fn busiest_leader(nodes: &[Node], groups: &[GroupId]) -> (usize, Vec<GroupId>) {
    let led = |at: usize| -> Vec<GroupId> {
        groups
            .iter()
            .copied()
            .filter(|g| leader_node(nodes, *g) == Some(at))
            .collect()
    };
    let at = (0..nodes.len()).max_by_key(|at| led(*at).len()).unwrap();
    (at, led(at))
}

pub fn all_quiet(nodes: &[Node], groups: &[GroupId]) -> bool {
    groups.iter().all(|g| {
        nodes
            .iter()
            .all(|n| n.partition(*g).is_some_and(|p| p.is_quiescent()))
    })
}

/// The index of the node whose replica of `group` leads, if one does.
pub fn leader_node(nodes: &[Node], group: GroupId) -> Option<usize> {
    // An ex-leader restarted after a clean stop claims its old term's leadership until it hears
    // of a later one (openraft restores a leader from its own committed vote; after an unclean
    // stop the vote comes back uncommitted): the claim of the latest term is the leader's.
    nodes
        .iter()
        .enumerate()
        .filter_map(|(at, n)| {
            let partition = n.partition(group).filter(|p| p.is_leader())?;
            Some((partition.leader_epoch(), at))
        })
        .max()
        .map(|(_, at)| at)
}

/// Opens `group` on every one of `nodes` and bootstraps it with all of them as voters (a
/// partition group outside any controller); the replicas in `nodes`' order.
pub async fn bootstrap_group(nodes: &[Node], group: GroupId) -> Vec<std::sync::Arc<Partition>> {
    let mut partitions = Vec::new();
    for node in nodes {
        partitions.push(node.open_partition(group).await.unwrap());
    }
    let members: Vec<(u64, String)> = nodes
        .iter()
        .map(|n| (n.id(), n.addr().to_string()))
        .collect();
    partitions[0].bootstrap(members).await.unwrap();
    partitions
}

pub fn batch(value: &str) -> bytes::Bytes {
    let mut builder = BatchBuilder::new(0, Compression::None);
    builder.push(1_700_000_000_000, None, Some(value.as_bytes()), &[]);
    builder.build().unwrap()
}

/// Produces `value` to `group` with acks=all on whichever node leads it.
pub async fn produce(nodes: &[Node], group: GroupId, value: &str) -> Offset {
    let start = Instant::now();
    loop {
        if let Some(at) = leader_node(nodes, group) {
            match nodes[at]
                .partition(group)
                .unwrap()
                .produce(batch(value))
                .await
            {
                Ok(offset) => return offset,
                Err(ProduceError::NotLeader { .. } | ProduceError::Unavailable { .. }) => {}
                Err(e) => panic!("produce failed: {e}"),
            }
        }
        assert!(
            start.elapsed() < PATIENCE,
            "produce to {group} did not succeed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every committed value of `group` on its leader, in offset order.
pub async fn values(nodes: &[Node], group: GroupId) -> Vec<String> {
    let at = leader_node(nodes, group).unwrap();
    let partition = nodes[at].partition(group).unwrap();
    let mut out = Vec::new();
    for entry in partition.fetch(Offset(0), 1 << 20).await.unwrap() {
        for batch in entry.batches() {
            for record in decode_records(&batch.unwrap(), 1 << 20).unwrap() {
                out.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
            }
        }
    }
    out
}

/// `(offset, value)` of every record `partition` holds from `from` on (committed or not when
/// `replica`, else committed, from the leader).
pub async fn records_from(
    partition: &Partition,
    from: Offset,
    replica: bool,
) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let entries = if replica {
            partition.read_replica(next, 1 << 20).await.unwrap()
        } else {
            partition.fetch(next, 1 << 20).await.unwrap()
        };
        let Some(last) = entries.last() else {
            return out;
        };
        next = last.next_offset();
        for entry in &entries {
            for batch in entry.batches() {
                let batch = batch.unwrap();
                let header = quipu_record::BatchHeader::parse(&batch).unwrap();
                for record in decode_records(&batch, 1 << 20).unwrap() {
                    let offset = u64::try_from(record.offset(header.base_offset)).unwrap();
                    let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                    out.push((offset, value));
                }
            }
        }
    }
}

/// Logs of the test's nodes go to the test's output, filtered by `RUST_LOG` (once per binary).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The directory of `group`'s replica under a node's data directory: its log, flush mark and
/// state files.
pub fn replica_dir(dir: &Path, group: GroupId) -> PathBuf {
    dir.join("partitions").join(format!("{:020}", group.0))
}

/// Three nodes with a topic of one RF 3 partition that holds one record.
pub struct OneRecordCluster {
    /// The nodes' data directories, kept until the cluster is dropped.
    pub dirs: Vec<tempfile::TempDir>,
    pub nodes: Vec<Node>,
    pub group: GroupId,
    /// The index of the partition leader's node.
    pub leader: usize,
}

impl OneRecordCluster {
    /// Starts the cluster and produces `first` (offset 0) with acks=all.
    pub async fn start(first: &str) -> OneRecordCluster {
        init_tracing();
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (nodes, groups) = start(&dirs, 1, &small_log()).await;
        let group = groups[0];
        assert_eq!(produce(&nodes, group, first).await, Offset(0));
        let leader = leader_node(&nodes, group).unwrap();
        OneRecordCluster {
            dirs,
            nodes,
            group,
            leader,
        }
    }

    /// The directory of node `at`'s replica of the partition.
    pub fn replica_dir(&self, at: usize) -> PathBuf {
        replica_dir(self.dirs[at].path(), self.group)
    }

    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

/// The segment files of `group` under a node's data directory, oldest first.
pub fn segments(dir: &Path, group: GroupId) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(replica_dir(dir, group))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments
}

/// Cuts the file at `path` to `len` bytes: a disk that lost its tail.
pub fn cut_file(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// A node started with `config` that forms a cluster of its own, once its controller registered
/// it.
pub async fn start_single(config: NodeConfig) -> Node {
    let node = Node::start(config).await.unwrap();
    node.join(voters([&node])).await.unwrap();
    wait_for("a registered controller leader", || {
        node.metadata().nodes().count() == 1 && node.controller_leader().is_some()
    })
    .await;
    node
}

/// Creates `topic` with one partition of one replica on `node`; that replica, once it leads.
pub async fn single_partition(node: &Node, topic: &str) -> std::sync::Arc<Partition> {
    node.create_topic(topic, 1, 1).await.unwrap();
    let group = groups_of(node, topic)[0];
    wait_for("a partition leader", || {
        node.partition(group).is_some_and(|p| p.is_leader())
    })
    .await;
    node.partition(group).unwrap()
}
