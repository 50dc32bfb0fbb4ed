//! [`NodeConfig`]: what a node is started with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quipu_raft::NodeId;
use quipu_storage::LogConfig;

/// Configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster.
    pub node_id: NodeId,
    /// Where partitions keep their data: `data_dir/partitions/{group:020}`.
    pub data_dir: PathBuf,
    /// Address the Raft transport listens on (port 0 picks a free port).
    pub listen_addr: SocketAddr,
    /// Raft timing and limits, shared by every group of the node.
    pub raft: openraft::Config,
    /// Segment log configuration of every partition.
    pub log: LogConfig,
    /// Whether idle partition groups go quiet (no ticks, no heartbeats; one node heartbeat per
    /// peer stands in for them). Default on; off only to measure what it saves.
    pub quiesce: bool,
    /// How often each replica applies the log's retention (`retention_bytes`, `retention_ms`).
    pub retention_check_interval: Duration,
    /// The address clients reach this node's gRPC API at, as registered with the controller
    /// (other nodes hand it to clients); `None` if the node serves no API.
    pub api_addr: Option<String>,
}

impl NodeConfig {
    /// A node with default Raft timings, log settings and intervals.
    pub fn new(node_id: NodeId, data_dir: PathBuf, listen_addr: SocketAddr) -> NodeConfig {
        NodeConfig {
            node_id,
            data_dir,
            listen_addr,
            raft: NodeConfig::default_raft(),
            log: LogConfig::default(),
            quiesce: true,
            retention_check_interval: DEFAULT_RETENTION_CHECK_INTERVAL,
            api_addr: None,
        }
    }

    /// Raft timings for a cluster on one machine or a fast network: heartbeats every 100 ms;
    /// a follower that stops hearing from its leader stands for election after openraft's leader
    /// lease (the maximum election timeout, 1.4 s) plus its own timeout (0.5–1.4 s), so a new
    /// leader is normally in place within 3 s of a leader's death.
    pub fn default_raft() -> openraft::Config {
        openraft::Config {
            cluster_name: "quipu".to_string(),
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1400,
            // Snapshots are taken only by retention, at the segment boundary it purges up to;
            // openraft then purges the log up to the snapshot at once.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..openraft::Config::default()
        }
    }
}

/// Kafka's `log.retention.check.interval.ms` default: 5 minutes.
pub const DEFAULT_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(300);
