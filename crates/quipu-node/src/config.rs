//! [`NodeConfig`]: what a node is started with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quipu_meta::TopicSettings;
use quipu_raft::NodeId;
use quipu_storage::{LogConfig, LogLimits};

use crate::network::MESSAGE_BYTES_MAX;

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
    /// Segment log configuration of every partition. Its `shared_sync` is set by
    /// [`crate::Node::start`] as `sync_scope` says.
    pub log: LogConfig,
    /// Whether the logs of the data directory share syncs (`log.sync_scope`).
    pub sync_scope: SyncScope,
    /// Whether idle partition groups go quiet (no ticks, no heartbeats; one node heartbeat per
    /// peer stands in for them). Default on; off only to measure what it saves.
    pub quiesce: bool,
    /// How often each replica applies the log's retention (`retention_bytes`, `retention_ms`).
    pub retention_check_interval: Duration,
    /// The address clients reach this node's gRPC API at, as registered with the controller
    /// (other nodes hand it to clients); `None` if the node serves no API.
    pub api_addr: Option<String>,
    /// The address other nodes reach this node's transport at, as registered with the controller
    /// and sent when joining; `None`: the address the transport listener got.
    pub advertised_addr: Option<String>,
    /// The address Kafka clients reach this node's Kafka listener at, as registered with the
    /// controller (Metadata answers name it); `None` if the node serves no Kafka listener.
    pub kafka_addr: Option<String>,
    /// How far before the time it is produced a record's timestamp may be, in ms (topic
    /// default of `message.timestamp.before.max.ms`).
    pub timestamp_before_max_ms: i64,
    /// How far after the time it is produced a record's timestamp may be, in ms (topic default
    /// of `message.timestamp.after.max.ms`).
    pub timestamp_after_max_ms: i64,
    /// Whether topics that do not say otherwise stamp batches with the log append time (topic
    /// default of `message.timestamp.type`; off: CreateTime).
    pub log_append_time: bool,
    /// Most bytes of produced batches the node holds in memory at once, from when a batch is
    /// admitted until the leader's log has it: on every acks level, a produce beyond it waits
    /// for room (at most [`crate::PRODUCE_ROOM_WAIT`]), then is refused as busy. At least
    /// `log.entry_bytes_max`.
    pub produce_bytes_in_flight_max: u64,
    /// Free bytes the data directory's disk keeps: below it the node refuses produce requests
    /// (retriable) and goes on serving reads and Raft traffic; 0 for no reserve.
    pub disk_reserve_bytes: u64,
    /// Most topics in the cluster and partition replicas per node, checked when this node, as
    /// controller leader, plans a create (set the same on every node).
    pub cluster_limits: quipu_meta::ClusterLimits,
    /// Bounds on each partition's idempotent producer table: producers tracked per partition
    /// (the least recently used go first past it) and how long an unused one is kept (ms).
    pub producers: quipu_raft::producers::ProducerLimits,
    /// Consumer groups: the offsets topic this node creates when the first group needs it.
    pub groups: GroupsConfig,
    /// This node's rack (failure domain), empty for none: replicas of a partition go to
    /// distinct racks where there are enough.
    pub rack: String,
    /// How many voters the controller group grows to as nodes join (1, 3 or 5): joined nodes
    /// past it stay learners (they receive the metadata but do not vote on it).
    pub controller_voters: usize,
    /// The controller snapshots its metadata after this many entries since the last snapshot,
    /// so that a restart applies only what follows it.
    pub controller_snapshot_entries: u64,
    /// Entries the controller keeps before its last snapshot, for followers a little behind
    /// (one further behind is sent the snapshot).
    pub controller_log_kept: u64,
    /// How often each node hands the leadership of the partitions it leads to their preferred
    /// replicas (first in the replica list) where those are caught up; `None` never does
    /// (`quipu cluster elect-leaders` still does on demand).
    pub leader_rebalance_interval: Option<Duration>,
    /// Most bytes per second this node sends, as a partition's leader, to the new replicas of
    /// moving partitions while they catch up; `None`: unbounded.
    pub move_bytes_per_sec: Option<u64>,
    /// Mutual TLS on the Raft transport; `None`: plaintext.
    pub transport_tls: Option<TransportTls>,
    /// Whether client requests are checked against the access control bindings, and the
    /// superusers.
    pub authorization: crate::AuthorizationConfig,
}

/// Mutual TLS on the Raft transport: this node's certificate (which must name it,
/// `quipu-node-ID`) serves its transport and identifies it to its peers, and a peer is heard only
/// with a certificate of the cluster CA naming the node it speaks for.
#[derive(Debug, Clone)]
pub struct TransportTls {
    /// What the transport's listener accepts connections with (client certificates required).
    pub server: std::sync::Arc<quipu_tls::ServerTls>,
    /// What this node connects to its peers with.
    pub client: std::sync::Arc<quipu_tls::ClientTls>,
}

impl TransportTls {
    /// Loads node `node_id`'s certificate and key and the cluster CA (PEM files); the
    /// certificate must name `node_id`.
    pub fn load(
        node_id: NodeId,
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    ) -> Result<TransportTls, TransportTlsError> {
        let named = quipu_tls::node_of_file(&cert)?;
        if named != Some(node_id) {
            return Err(TransportTlsError::NotThisNode {
                cert,
                node_id,
                named,
            });
        }
        let server = quipu_tls::ServerTls::new(
            quipu_tls::ServerFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: Some(ca.clone()),
            },
            quipu_tls::ClientAuth::Required,
            &[b"h2"],
        )?;
        let client = quipu_tls::ClientTls::new(
            quipu_tls::ClientFiles {
                ca,
                cert: Some(cert),
                key: Some(key),
            },
            &[b"h2"],
        )?;
        Ok(TransportTls { server, client })
    }
}

/// The transport's TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TransportTlsError {
    /// A file is missing, unreadable or not valid.
    #[error(transparent)]
    Tls(#[from] quipu_tls::TlsError),
    /// The certificate names another node, or none.
    #[error(
        "the transport certificate {cert} names node {named:?}, not this node ({node_id}): it needs the DNS name quipu-node-{node_id}"
    )]
    NotThisNode {
        /// The certificate file.
        cert: PathBuf,
        /// This node.
        node_id: NodeId,
        /// The node it names.
        named: Option<u64>,
    },
}

/// Smallest bound on catch-up traffic: below it a move of a busy partition never catches up.
pub const MOVE_BYTES_PER_SEC_MIN: u64 = 64 * 1024;

/// Longest rack name.
pub const RACK_BYTES_MAX: usize = 255;

/// Controller group sizes a node may be configured with.
pub const CONTROLLER_VOTERS_ALLOWED: [usize; 3] = [1, 3, 5];

/// Kafka's `leader.imbalance.check.interval.seconds`.
pub const DEFAULT_LEADER_REBALANCE_INTERVAL: Duration = Duration::from_secs(300);

/// Consumer groups' settings of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupsConfig {
    /// Partitions of the offsets topic (`__consumer_offsets`) when this node creates it: fixed
    /// for the cluster's life from then on (a group's partition is a hash of its id modulo it).
    pub offsets_partitions: usize,
    /// Replicas per partition of the offsets topic when this node creates it, capped at the
    /// number of registered nodes.
    pub offsets_replication_factor: usize,
    /// Session timeout bounds, the initial rebalance delay and the most members of a classic
    /// group.
    pub limits: quipu_groups::GroupLimits,
    /// Session timeout, heartbeat interval and most members of a KIP-848 group.
    pub consumer: quipu_groups::consumer::ConsumerLimits,
}

/// Most partitions the offsets topic may be configured with.
pub const OFFSETS_PARTITIONS_LIMIT: usize = 1000;

impl Default for GroupsConfig {
    fn default() -> Self {
        // Redpanda's default; Kafka's is 50. Idle partitions cost little (quiescence), but each
        // is a Raft group on every replica node.
        GroupsConfig {
            offsets_partitions: 16,
            offsets_replication_factor: 3,
            limits: quipu_groups::GroupLimits::default(),
            consumer: quipu_groups::consumer::ConsumerLimits::default(),
        }
    }
}

/// Most producers a partition may be configured to track (its snapshots hold about 130 bytes
/// per producer at most).
pub const PRODUCERS_PER_PARTITION_LIMIT: usize = 100_000;

/// Which syncs the logs of a node's data directory share (`log.sync_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncScope {
    /// Each log syncs its own files (`fdatasync`), sharing only with appends to itself. The
    /// default.
    File,
    /// The logs waiting for a sync at once share one `syncfs(2)` of the data directory's
    /// filesystem (a log waiting alone still syncs its own file); the node refuses to start where
    /// that does not qualify ([`quipu_storage::SharedSync::open`]). Every dirty page of that
    /// filesystem is written with them (the logs' mapped indexes and marks, other programs'
    /// files), so it pays where sync calls are the bound, on a filesystem of its own.
    Filesystem,
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
            sync_scope: SyncScope::File,
            quiesce: true,
            retention_check_interval: DEFAULT_RETENTION_CHECK_INTERVAL,
            api_addr: None,
            advertised_addr: None,
            kafka_addr: None,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: DEFAULT_TIMESTAMP_AFTER_MAX_MS,
            log_append_time: false,
            produce_bytes_in_flight_max: DEFAULT_PRODUCE_BYTES_IN_FLIGHT_MAX,
            disk_reserve_bytes: DEFAULT_DISK_RESERVE_BYTES,
            cluster_limits: quipu_meta::ClusterLimits::default(),
            producers: quipu_raft::producers::ProducerLimits::default(),
            groups: GroupsConfig::default(),
            rack: String::new(),
            controller_voters: 3,
            controller_snapshot_entries: DEFAULT_CONTROLLER_SNAPSHOT_ENTRIES,
            controller_log_kept: DEFAULT_CONTROLLER_LOG_KEPT,
            leader_rebalance_interval: Some(DEFAULT_LEADER_REBALANCE_INTERVAL),
            move_bytes_per_sec: None,
            transport_tls: None,
            authorization: crate::AuthorizationConfig::default(),
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

/// Entries between two controller snapshots, by default.
pub const DEFAULT_CONTROLLER_SNAPSHOT_ENTRIES: u64 = 10_000;
/// Controller entries kept before its last snapshot, by default.
pub const DEFAULT_CONTROLLER_LOG_KEPT: u64 = 1_000;

impl NodeConfig {
    /// The Raft settings of the controller group: the partitions', with snapshots every
    /// `controller_snapshot_entries` and `controller_log_kept` entries kept before one.
    pub(crate) fn controller_raft(&self, raft: &openraft::Config) -> openraft::Config {
        openraft::Config {
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                self.controller_snapshot_entries,
            ),
            max_in_snapshot_log_to_keep: self.controller_log_kept,
            // A change reaches the controller's followers at once: a node that did not ask for
            // it may read its own replica of the metadata right after (an admin client's
            // describe after its alter, sent to another node).
            commit_notice_delay: 0,
            // The controller snapshots at what it applied, which a leader replicating beside its
            // own sync may apply before its log holds it durably: its leader syncs first.
            leader_flush_beside_replication: false,
            // One AppendEntries in flight per follower, as upstream: metadata changes are few.
            replication_window: 1,
            ..raft.clone()
        }
    }
}

/// AppendEntries a partition leader keeps in flight to one follower at once (openraft's
/// `replication_window`, Quipu's patch, `vendor/README.md`): entries appended while earlier ones
/// are on their way go out at once instead of waiting for their answer.
pub(crate) const PARTITION_REPLICATION_WINDOW: u64 = 4;

/// How long a partition leader's moved commit index waits for entries to carry it to a follower
/// with nothing else to receive, before it goes alone in an empty AppendEntries (openraft's
/// `commit_notice_delay`, Quipu's patch, `vendor/README.md`): a twentieth of the heartbeat
/// interval (5 ms of the default 100), at least 1 ms.
pub(crate) fn commit_notice_delay(raft: &openraft::Config) -> u64 {
    (raft.heartbeat_interval / 20).max(1)
}

/// Largest `entry_bytes_max` the Raft transport carries: one replication message holds at most
/// `quipu_raft::READ_BYTES_MAX` of entries, or one larger entry, within the transport's
/// message limit with room for framing.
pub const ENTRY_BYTES_LIMIT: u64 =
    MESSAGE_BYTES_MAX as u64 - quipu_raft::READ_BYTES_MAX - 1024 * 1024;

/// A node setting is out of its range; the node did not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    /// A log setting is out of its range.
    #[error(transparent)]
    Log(#[from] quipu_storage::ConfigError),
    /// A node setting is out of its range.
    #[error("invalid setting {key} = {value}: {allowed}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// The Raft timings are inconsistent.
    #[error("invalid raft timings")]
    Raft(#[source] Box<openraft::ConfigError>),
}

impl NodeConfig {
    /// Checks every setting against its range, naming the first one out of it.
    pub fn validate(&self) -> Result<(), NodeConfigError> {
        self.log.validate()?;
        if !CONTROLLER_VOTERS_ALLOWED.contains(&self.controller_voters) {
            return Err(NodeConfigError::Invalid {
                key: "controller_voters",
                value: self.controller_voters.to_string(),
                allowed: "1, 3 or 5".to_string(),
            });
        }
        if self.rack.len() > RACK_BYTES_MAX {
            return Err(NodeConfigError::Invalid {
                key: "rack",
                value: format!("({} bytes)", self.rack.len()),
                allowed: format!("at most {RACK_BYTES_MAX} bytes"),
            });
        }
        if self
            .move_bytes_per_sec
            .is_some_and(|rate| rate < MOVE_BYTES_PER_SEC_MIN)
        {
            return Err(NodeConfigError::Invalid {
                key: "cluster.move_bytes_per_sec",
                value: format!("{:?}", self.move_bytes_per_sec),
                allowed: format!(
                    "at least {MOVE_BYTES_PER_SEC_MIN} bytes per second, or 0 for unbounded"
                ),
            });
        }
        if self
            .leader_rebalance_interval
            .is_some_and(|i| i < Duration::from_secs(1))
        {
            return Err(NodeConfigError::Invalid {
                key: "leader_rebalance_interval_ms",
                value: format!("{:?}", self.leader_rebalance_interval),
                allowed: "at least 1000 ms, or 0 for never".to_string(),
            });
        }
        if self.log.entry_bytes_max > ENTRY_BYTES_LIMIT {
            return Err(NodeConfigError::Invalid {
                key: "log.entry_bytes_max",
                value: self.log.entry_bytes_max.to_string(),
                allowed: format!("at most {ENTRY_BYTES_LIMIT} bytes (the Raft transport's limit)"),
            });
        }
        if self.produce_bytes_in_flight_max < self.log.entry_bytes_max
            || self.produce_bytes_in_flight_max > PRODUCE_BYTES_IN_FLIGHT_LIMIT
        {
            return Err(NodeConfigError::Invalid {
                key: "produce_bytes_in_flight_max",
                value: self.produce_bytes_in_flight_max.to_string(),
                allowed: format!(
                    "log.entry_bytes_max ({}) to {PRODUCE_BYTES_IN_FLIGHT_LIMIT} bytes",
                    self.log.entry_bytes_max
                ),
            });
        }
        for (key, value) in [
            ("limits.topics_max", self.cluster_limits.topics_max),
            (
                "limits.partitions_per_node_max",
                self.cluster_limits.partitions_per_node_max,
            ),
        ] {
            if value == 0 || value > CLUSTER_LIMIT_MAX {
                return Err(NodeConfigError::Invalid {
                    key,
                    value: value.to_string(),
                    allowed: format!("1 to {CLUSTER_LIMIT_MAX}"),
                });
            }
        }
        if self.producers.max == 0 || self.producers.max > PRODUCERS_PER_PARTITION_LIMIT {
            return Err(NodeConfigError::Invalid {
                key: "producers.per_partition_max",
                value: self.producers.max.to_string(),
                allowed: format!("1 to {PRODUCERS_PER_PARTITION_LIMIT}"),
            });
        }
        if self.producers.expiration_ms < 1 {
            return Err(NodeConfigError::Invalid {
                key: "producers.expiration_ms",
                value: self.producers.expiration_ms.to_string(),
                allowed: "1 to 9223372036854775807 ms".to_string(),
            });
        }
        if !(1..=OFFSETS_PARTITIONS_LIMIT).contains(&self.groups.offsets_partitions) {
            return Err(NodeConfigError::Invalid {
                key: "groups.offsets_partitions",
                value: self.groups.offsets_partitions.to_string(),
                allowed: format!("1 to {OFFSETS_PARTITIONS_LIMIT}"),
            });
        }
        let limits = &self.groups.limits;
        if limits.session_timeout_min_ms < 1 {
            return Err(NodeConfigError::Invalid {
                key: "groups.session_timeout_min_ms",
                value: limits.session_timeout_min_ms.to_string(),
                allowed: "1 to 2147483647 ms".to_string(),
            });
        }
        if limits.session_timeout_max_ms < limits.session_timeout_min_ms {
            return Err(NodeConfigError::Invalid {
                key: "groups.session_timeout_max_ms",
                value: limits.session_timeout_max_ms.to_string(),
                allowed: format!(
                    "groups.session_timeout_min_ms ({}) to 2147483647 ms",
                    limits.session_timeout_min_ms
                ),
            });
        }
        if limits.initial_rebalance_delay_ms < 0 {
            return Err(NodeConfigError::Invalid {
                key: "groups.initial_rebalance_delay_ms",
                value: limits.initial_rebalance_delay_ms.to_string(),
                allowed: "0 to 2147483647 ms".to_string(),
            });
        }
        let consumer = &self.groups.consumer;
        for (key, value) in [
            (
                "groups.consumer_session_timeout_ms",
                consumer.session_timeout_ms,
            ),
            (
                "groups.consumer_heartbeat_interval_ms",
                consumer.heartbeat_interval_ms,
            ),
        ] {
            if value < 1 {
                return Err(NodeConfigError::Invalid {
                    key,
                    value: value.to_string(),
                    allowed: "1 to 2147483647 ms".to_string(),
                });
            }
        }
        if consumer.heartbeat_interval_ms >= consumer.session_timeout_ms {
            return Err(NodeConfigError::Invalid {
                key: "groups.consumer_heartbeat_interval_ms",
                value: consumer.heartbeat_interval_ms.to_string(),
                allowed: format!(
                    "less than groups.consumer_session_timeout_ms ({})",
                    consumer.session_timeout_ms
                ),
            });
        }
        if limits.members_max == 0 {
            return Err(NodeConfigError::Invalid {
                key: "groups.members_max",
                value: "0".to_string(),
                allowed: "at least 1".to_string(),
            });
        }
        if self.groups.offsets_replication_factor == 0 {
            return Err(NodeConfigError::Invalid {
                key: "groups.offsets_replication_factor",
                value: "0".to_string(),
                allowed: "at least 1 (capped at the number of nodes)".to_string(),
            });
        }
        if self.retention_check_interval.is_zero() {
            return Err(NodeConfigError::Invalid {
                key: "log.retention_check_interval_ms",
                value: "0".to_string(),
                allowed: "at least 1 ms".to_string(),
            });
        }
        for (key, value) in [
            (
                "log.message_timestamp_before_max_ms",
                self.timestamp_before_max_ms,
            ),
            (
                "log.message_timestamp_after_max_ms",
                self.timestamp_after_max_ms,
            ),
        ] {
            if value < 0 {
                return Err(NodeConfigError::Invalid {
                    key,
                    value: value.to_string(),
                    allowed: "0 to 9223372036854775807 ms".to_string(),
                });
            }
        }
        self.raft
            .clone()
            .validate()
            .map_err(|e| NodeConfigError::Raft(Box::new(e)))?;
        Ok(())
    }

    /// The settings a topic that sets none of its own runs with on this node.
    pub fn topic_defaults(&self) -> TopicSettings {
        TopicSettings {
            retention_ms: self.log.retention_ms,
            retention_bytes: self.log.retention_bytes,
            segment_bytes: self.log.segment_bytes_max,
            segment_ms: self.log.segment_ms_max,
            max_message_bytes: self.log.entry_bytes_max,
            timestamp_before_max_ms: self.timestamp_before_max_ms,
            timestamp_after_max_ms: self.timestamp_after_max_ms,
            log_append_time: self.log_append_time,
        }
    }
}

/// The log limits of a replica that runs with `settings`.
pub(crate) fn log_limits(settings: &TopicSettings) -> LogLimits {
    LogLimits {
        segment_bytes_max: settings.segment_bytes,
        segment_ms_max: settings.segment_ms,
        retention_bytes: settings.retention_bytes,
        retention_ms: settings.retention_ms,
    }
}

/// Kafka 4's `log.message.timestamp.after.max.ms` default: a record may be stamped at most an
/// hour ahead of the broker's clock (a far-future timestamp would hold back time-based retention).
pub const DEFAULT_TIMESTAMP_AFTER_MAX_MS: i64 = 3_600_000;

/// Default of [`NodeConfig::produce_bytes_in_flight_max`]: 256 MiB (as the Kafka listener's
/// `queued_request_bytes_max`).
pub const DEFAULT_PRODUCE_BYTES_IN_FLIGHT_MAX: u64 = 256 * 1024 * 1024;

/// Largest [`NodeConfig::produce_bytes_in_flight_max`]: 1 TiB (the budget counts bytes in a
/// semaphore of at most 2^61 permits; memory runs out long before).
pub const PRODUCE_BYTES_IN_FLIGHT_LIMIT: u64 = 1 << 40;

/// Default of [`NodeConfig::disk_reserve_bytes`]: 1 GiB.
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 1024 * 1024 * 1024;

/// Largest `topics_max` and `partitions_per_node_max`.
pub const CLUSTER_LIMIT_MAX: usize = 1_000_000;

/// Kafka's `log.retention.check.interval.ms` default: 5 minutes.
pub const DEFAULT_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(300);
