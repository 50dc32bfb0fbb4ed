//! Cluster metadata of Quipu as a plain state machine: the nodes, the topics, and which nodes
//! hold each partition. The controller Raft group replicates [`Command`]s; every node applies
//! them to its [`Metadata`] in log order and gets back the [`Effect`]s it must carry out (start or
//! stop partition replicas), so the decisions are tested without any I/O.
//!
//! Placement ([`place`]) spreads replicas and preferred leaders evenly over the live nodes and is
//! deterministic: the command carries its result, so every node applies the same assignment.
//!
//! Topic settings ([`TopicConfig`]) are kept by their Kafka names, each checked against its range
//! when planned and again when applied.
//!
//! Not here: the Raft group that replicates commands, the I/O that carries out effects.

pub mod acls;
mod metadata;
mod placement;
mod topic_config;
pub mod users;

pub use metadata::{
    CLUSTER_ID_BYTES_MAX, ClusterLimits, Command, CommandError, Effect, Metadata, Move,
    NodeAddresses, NodeInfo, NodeState, PARTITIONS_PER_TOPIC_MAX, PRODUCER_ID_BLOCK_MAX,
    PartitionAssignment, TopicInfo, valid_cluster_id, valid_topic_name,
};
pub use placement::{PlacementError, place, replacement};
pub use topic_config::{
    INT_MAX, SEGMENT_BYTES_MIN, TopicConfig, TopicConfigError, TopicKey, TopicSettings, shown,
};
pub use users::{
    CredentialError, ITERATIONS_DEFAULT, ITERATIONS_MAX, ITERATIONS_MIN, ScramCredential,
    ScramMechanism, Users, valid_user_name,
};
