//! Error enums of the node runtime.

use std::path::PathBuf;

use quipu_raft::NodeId;

use crate::GroupId;

/// Any error, as the cause of one of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starting a node or opening a partition failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The transport address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A directory could not be created.
    #[error("cannot create {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `log.sync_scope = "filesystem"` was asked for, and the data directory cannot have it.
    #[error("log.sync_scope = \"filesystem\" cannot be used")]
    SharedSync(#[source] quipu_storage::SharedSyncError),
    /// A file could not be removed.
    #[error("cannot remove {path}")]
    RemoveFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The partition's log could not be opened.
    #[error("cannot open the log of partition {group}")]
    Log {
        /// The partition.
        group: GroupId,
        /// The cause.
        #[source]
        source: quipu_storage::OpenError,
    },
    /// The partition's Raft state could not be opened or started.
    #[error("cannot start the raft group of partition {group}")]
    Raft {
        /// The partition.
        group: GroupId,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// A setting is out of its range.
    #[error("invalid node configuration")]
    Config(#[from] crate::config::NodeConfigError),
    /// The node is too close to its open-file or memory-map limit to take a new replica
    /// (nothing was created).
    #[error("partition {group}: no room for a new replica")]
    Resources {
        /// The partition.
        group: GroupId,
        /// The resource and its use.
        #[source]
        source: crate::resources::Exhausted,
    },
    /// The partition is already open on this node.
    #[error("partition {0} is already open")]
    AlreadyOpen(GroupId),
    /// The partition is not open on this node.
    #[error("partition {0} is not open on this node")]
    NotOpen(GroupId),
    /// The cluster id kept in the data directory cannot be read.
    #[error("cannot read this node's cluster id")]
    ClusterId(#[from] crate::identity::ClusterIdError),
    /// The cluster refused this node's join, or no member answered it in time.
    #[error("cannot join the cluster through {seed}")]
    Join {
        /// The member asked.
        seed: String,
        /// Why.
        #[source]
        source: crate::controller::ControllerError,
    },
}

/// A produce request was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// This replica is not the leader; retry on the leader.
    #[error("not the leader of partition {group}; leader is {leader:?} at {leader_addr:?}")]
    NotLeader {
        /// The partition.
        group: GroupId,
        /// The current leader, if known.
        leader: Option<NodeId>,
        /// Its transport address, if known.
        leader_addr: Option<String>,
    },
    /// The batch is not one valid RecordBatch v2 (nothing was proposed).
    #[error("invalid record batch")]
    InvalidBatch(#[source] quipu_record::BatchError),
    /// An idempotent producer's batch breaks the sequence rules (nothing was proposed).
    #[error("partition {group}: the batch breaks its producer's sequence rules")]
    Sequence {
        /// The partition.
        group: GroupId,
        /// Which rule.
        #[source]
        source: quipu_raft::producers::SequenceError,
    },
    /// A batch names a producer with impossible fields (nothing was proposed).
    #[error("partition {group}: invalid producer fields")]
    ProducerFields {
        /// The partition.
        group: GroupId,
        /// What is wrong.
        #[source]
        source: quipu_raft::producers::ProducerFieldsError,
    },
    /// A client tried to write to the offsets topic, whose records only the group coordinator
    /// writes (nothing was proposed).
    #[error("partition {group} belongs to the internal offsets topic: clients cannot write to it")]
    InternalTopic {
        /// The partition.
        group: GroupId,
    },
    /// A DeleteRecords offset beyond the high watermark (nothing was proposed).
    #[error("partition {group}: offset {offset:?} is beyond the high watermark {high_watermark:?}")]
    BeyondHighWatermark {
        /// The partition.
        group: GroupId,
        /// The offset asked for.
        offset: quipu_storage::Offset,
        /// The high watermark.
        high_watermark: quipu_storage::Offset,
    },
    /// The node holds its most bytes of produced batches (`produce_bytes_in_flight_max`) and no
    /// room came within [`crate::limits::PRODUCE_ROOM_WAIT`]: nothing was proposed; retry later.
    #[error(
        "the node holds its most bytes of produce requests ({max} bytes); nothing was proposed"
    )]
    Busy {
        /// The node's budget, in bytes.
        max: u64,
    },
    /// The data disk has less free space than `disk_reserve_bytes`: nothing was proposed; retry
    /// once space is freed (retention, an operator).
    #[error("the data disk is under its free-space reserve; nothing was proposed")]
    DiskLow(#[source] crate::disk::DiskLow),
    /// A task of the produce failed before anything was proposed (the node is shutting down).
    #[error("partition {group}: the produce task failed; nothing was proposed")]
    Task {
        /// The partition.
        group: GroupId,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Raft failed or shut down before the batch was committed: whether it will be is unknown.
    #[error("partition {group}: the batch may or may not be committed")]
    Unavailable {
        /// The partition.
        group: GroupId,
        /// What failed.
        #[source]
        source: ProposalError,
    },
}

/// Why a proposed batch got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProposalError {
    /// Raft refused or failed the write.
    #[error(transparent)]
    Raft(BoxError),
    /// Raft dropped the request without an answer (it shut down).
    #[error("raft dropped the request without an answer")]
    Dropped,
    /// The leader's log failed before the batch was durable in it.
    #[error("the leader's log failed before the batch was durable")]
    LogFailed,
    /// The batch was applied without an offset (a bug).
    #[error("the batch was applied without an offset")]
    NoOffset,
    /// A retried idempotent batch matched one proposed earlier, which was not applied in time.
    #[error("the batch this one retries was not applied in time")]
    DuplicateNotApplied,
}

/// A fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// This replica is not the leader; fetch from the leader.
    #[error("not the leader of partition {group}; leader is {leader:?}")]
    NotLeader {
        /// The partition.
        group: GroupId,
        /// The current leader, if known.
        leader: Option<NodeId>,
    },
    /// The read task failed (the runtime is shutting down); nothing is known about the data.
    #[error("partition {group} could not run the read")]
    Unavailable {
        /// The partition.
        group: GroupId,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The log refused the read (offset out of range, corruption).
    #[error("partition {group} cannot serve the read")]
    Read {
        /// The partition.
        group: GroupId,
        /// The cause.
        #[source]
        source: quipu_storage::ReadError,
    },
}

/// Applying retention to a replica failed; its log is unchanged or purged up to a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The entry retention would purge up to could not be read.
    #[error("partition {group}: cannot read entry {index} of the log")]
    Read {
        /// The partition.
        group: GroupId,
        /// The entry's index.
        index: u64,
        /// The cause.
        #[source]
        source: quipu_storage::ReadError,
    },
    /// The read of that entry stopped before it answered (its blocking task was cancelled or
    /// panicked).
    #[error("partition {group}: the read of entry {index} stopped")]
    ReadStopped {
        /// The partition.
        group: GroupId,
        /// The entry's index.
        index: u64,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The entry retention would purge up to is no longer in the log (purged meanwhile).
    #[error("partition {group}: entry {index} is gone from the log")]
    EntryGone {
        /// The partition.
        group: GroupId,
        /// The entry's index.
        index: u64,
    },
    /// The Raft instance could not be asked for the snapshot (it stopped).
    #[error("partition {group}: the snapshot for retention could not start")]
    SnapshotTrigger {
        /// The partition.
        group: GroupId,
        /// The cause.
        #[source]
        source: openraft::error::Fatal<NodeId>,
    },
    /// The snapshot for retention did not come within its wait.
    #[error("partition {group}: the snapshot for retention did not complete")]
    SnapshotWait {
        /// The partition.
        group: GroupId,
        /// The cause.
        #[source]
        source: openraft::metrics::WaitError,
    },
}
