//! A Quipu node: the process-level runtime that hosts Raft groups (one per partition replica),
//! serves the node-to-node Raft transport over gRPC, and offers produce and fetch on the
//! partitions it leads.
//!
//! - [`Node`] binds the transport, opens partition replicas under its data directory and stops
//!   them.
//! - [`Partition`] is one replica: its segment log, openraft instance and high watermark;
//!   `produce` appends a record batch through Raft (acknowledged once a majority committed it),
//!   `fetch` reads committed batches on the leader.
//! - The transport (`docs/protocol/raft-transport.md`) shares one gRPC connection per node pair
//!   among all groups.
//!
//! - The controller group (group 0) replicates `quipu-meta` commands; each node carries out the
//!   effects for itself (opening, bootstrapping and deleting partition replicas).
//!
//! Not here yet: the Kafka and client-facing APIs.

mod authorize;
mod cluster;
mod coalesce;
mod config;
mod controller;
mod coordinator;
mod disk;
mod effects;
mod error;
mod group;
mod groups;
mod handoff;
mod identity;
pub mod incoming;
mod limits;
mod network;
mod node;
mod partition;
mod quiesce;
mod readiness;
mod reassign;
mod replicas;
mod report;
mod resources;
mod retention;
mod roles;
mod routing;
mod sequencer;
pub mod telemetry;
mod throttle;
mod transport;

pub use authorize::{ANONYMOUS, AuthorizationConfig, Principal};
pub use cluster::{CATCH_UP_ENTRIES, NodeStatus};
pub use config::{
    CLUSTER_LIMIT_MAX, CONTROLLER_VOTERS_ALLOWED, DEFAULT_DISK_RESERVE_BYTES,
    DEFAULT_LEADER_REBALANCE_INTERVAL, DEFAULT_PRODUCE_BYTES_IN_FLIGHT_MAX,
    DEFAULT_RETENTION_CHECK_INTERVAL, DEFAULT_TIMESTAMP_AFTER_MAX_MS, ENTRY_BYTES_LIMIT,
    GroupsConfig, MOVE_BYTES_PER_SEC_MIN, NodeConfig, NodeConfigError, OFFSETS_PARTITIONS_LIMIT,
    PRODUCE_BYTES_IN_FLIGHT_LIMIT, PRODUCERS_PER_PARTITION_LIMIT, RACK_BYTES_MAX, SyncScope,
    TransportTls, TransportTlsError,
};
pub use controller::{CONTROLLER_PATIENCE, ControllerError, ControllerRequest};
pub use coordinator::{
    CommitRefused, CommittedOffset, ConsumerGroupDescription, CoordinatorError, DeleteGroupError,
    GroupDescription, JoinGroup, ListedGroup, MemberDescription, OffsetCommit, OffsetDeleteRefused,
    Unavailable,
};
pub use disk::{
    DISK_CHECK_INTERVAL, DiskGuard, DiskLow, SPARE_CHECK_INTERVAL, free_bytes, total_bytes,
};
pub use error::{BoxError, FetchError, NodeError, ProduceError, ProposalError, RetentionError};
pub use group::GroupId;
pub use handoff::HANDOFF_TIMEOUT;
pub use identity::ClusterIdError;
pub use limits::{
    ConnectionLimits, ConnectionPermit, PRODUCE_ROOM_WAIT, ProduceBudget, ProduceRoom, Refused,
};
pub use node::{ControllerLogState, Node, NodeHandle};
pub use partition::Partition;
pub use quipu_groups::GroupLimits;
pub use quipu_groups::consumer::ConsumerLimits;
pub use quipu_raft::producers::{ProducerFieldsError, ProducerLimits, SequenceError};
pub use readiness::Readiness;
pub use reassign::Elected;
pub use report::{GroupOffset, GroupReport, GroupsReport, REPORT_WAIT, REPORTED_OFFSETS_MAX};
pub use resources::{Exhausted, Resource, check_room_for_replica, raise_open_file_limit};
pub use routing::PRODUCER_ID_BLOCK;
