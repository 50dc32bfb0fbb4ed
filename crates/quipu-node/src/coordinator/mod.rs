//! The consumer group coordinator (issue 11, in progress). A group's coordinator is the leader
//! of the partition of the internal offsets topic (`quipu_groups::OFFSETS_TOPIC`) its id maps
//! to; its state is what that partition's replicas applied from their committed log
//! (`quipu_groups::GroupsState`), so a new leader has every committed offset.
//!
//! - The offsets topic is created when a group first needs it (`[groups] offsets_partitions`,
//!   replication factor `[groups] offsets_replication_factor` capped at the registered nodes).
//!   Clients cannot create, delete, grow or write to it.
//! - The coordinator serves a group only as the leader of its partition, once it has applied
//!   every entry of earlier terms (else "load in progress"); an offset commit is answered once
//!   its records are committed by a majority and applied here; an offset fetch first confirms
//!   the leadership with a quorum and waits until everything committed before it is applied
//!   (a linearizable read).
//!
//! Protocol behaviour: `docs/protocol/groups.md`.

mod admin;
mod consumer;
mod membership;
mod offsets;
mod writes;

use std::sync::Arc;

use quipu_meta::NodeInfo;
use quipu_raft::NodeId;

use crate::controller::{ControllerError, ControllerRequest};
use crate::node::{Inner, NodeHandle};
use crate::{GroupId, Partition, ProduceError};

pub use admin::{
    DeleteGroupError, GroupDescription, ListedGroup, MemberDescription, OffsetDeleteRefused,
};
pub use consumer::ConsumerGroupDescription;
pub use membership::JoinGroup;
pub(crate) use membership::{Membership, run_ticks};
pub use offsets::{CommitRefused, CommittedOffset, OffsetCommit};

/// Why the coordinator cannot serve a group's request (per request; per-partition refusals of a
/// commit are [`CommitRefused`]).
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The group id is empty or longer than `quipu_groups::NAME_BYTES_MAX` bytes.
    #[error("invalid group id (1 to {} bytes)", quipu_groups::NAME_BYTES_MAX)]
    InvalidGroupId,
    /// This node does not lead the group's offsets partition; ask FindCoordinator again.
    #[error("not the coordinator of the group (offsets partition {group}); leader is {leader:?}")]
    NotCoordinator {
        /// The offsets partition.
        group: GroupId,
        /// Its leader, if known.
        leader: Option<NodeId>,
    },
    /// This node leads the group's offsets partition but has not applied every entry of earlier
    /// terms yet; retry shortly.
    #[error("the coordinator is loading the group's state (offsets partition {group})")]
    Loading {
        /// The offsets partition.
        group: GroupId,
    },
    /// The offsets topic or its partition's leader is not there yet (being created, electing),
    /// or the group's records could not be committed in time: retriable.
    #[error("the group coordinator is not available")]
    NotAvailable(#[source] Unavailable),
    /// The group refused the request (a member, generation or protocol it does not have, a
    /// rebalance under way).
    #[error("the group refused the request")]
    Group(#[source] quipu_groups::GroupError),
    /// The KIP-848 group refused the request (a member or epoch it does not have, an invalid
    /// heartbeat).
    #[error("the consumer group refused the request")]
    Consumer(#[source] quipu_groups::consumer::ConsumerError),
    /// The records of one write (a commit's offsets, a group's state) do not fit one batch of
    /// the offsets topic (its `max.message.bytes`).
    #[error("the records take {bytes} bytes, more than one batch of the offsets topic may ({max})")]
    RecordsTooLarge {
        /// Their size.
        bytes: usize,
        /// The offsets topic's batch limit.
        max: usize,
    },
}

/// What kept the coordinator from serving.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The offsets topic does not exist yet (FindCoordinator creates it).
    #[error("the offsets topic does not exist yet")]
    NoOffsetsTopic,
    /// The offsets topic could not be created.
    #[error("cannot create the offsets topic")]
    Create(#[source] ControllerError),
    /// The group's offsets partition has no leader this node knows of.
    #[error("offsets partition {0} has no known leader")]
    NoLeader(GroupId),
    /// The coordinator node is not registered (its address is unknown).
    #[error("node {0} has no registered address")]
    UnknownNode(NodeId),
    /// Writing the group's records, or confirming the leadership, failed.
    #[error("the group's records were not committed")]
    Write(#[source] ProduceError),
    /// A group record could not be encoded (a field over its limit).
    #[error("the group's record cannot be written")]
    Record(#[source] quipu_groups::RecordError),
    /// Offset commits of the group accepted before an offset fetch were not written in time.
    #[error("offset commits of the group are still being written")]
    Unstable,
    /// The leadership could not be confirmed with a quorum in time.
    #[error("the coordinator could not confirm its leadership")]
    Read(#[source] crate::BoxError),
}

/// Checks a group id as Kafka clients may send it.
fn check_group_id(group: &str) -> Result<(), CoordinatorError> {
    if group.is_empty() || group.len() > quipu_groups::NAME_BYTES_MAX {
        return Err(CoordinatorError::InvalidGroupId);
    }
    Ok(())
}

impl NodeHandle {
    /// The node that coordinates `group` now (the leader of its offsets partition, as this node
    /// knows it), creating the offsets topic if it does not exist yet.
    pub async fn find_coordinator(&self, group: &str) -> Result<NodeInfo, CoordinatorError> {
        check_group_id(group)?;
        let inner = &self.inner;
        if !inner.has_offsets_topic() {
            inner.create_offsets_topic().await?;
        }
        let (partition, replicas) = inner.offsets_partition_of(group)?;
        let leader = match inner.partition(partition) {
            Some(replica) => replica.leader(),
            // Not hosted here (a cluster larger than the replication factor): the preferred
            // replica, which hosts it and knows the leader if it is not.
            None => replicas.first().copied(),
        }
        .ok_or(CoordinatorError::NotAvailable(Unavailable::NoLeader(
            partition,
        )))?;
        inner
            .metadata
            .with_metadata(|m| m.nodes().find(|n| n.id == leader).cloned())
            .ok_or(CoordinatorError::NotAvailable(Unavailable::UnknownNode(
                leader,
            )))
    }
}

impl Inner {
    fn has_offsets_topic(&self) -> bool {
        self.metadata
            .with_metadata(|m| m.topic(quipu_groups::OFFSETS_TOPIC).is_some())
    }

    /// Asks the controller to create the offsets topic (another node may have just done so).
    async fn create_offsets_topic(&self) -> Result<(), CoordinatorError> {
        let nodes = self.metadata.with_metadata(|m| m.nodes().count());
        let settings = self.config.groups;
        let request = ControllerRequest::CreateTopic {
            name: quipu_groups::OFFSETS_TOPIC.to_string(),
            partitions: settings.offsets_partitions,
            replication_factor: settings.offsets_replication_factor.min(nodes).max(1),
            config: quipu_meta::TopicConfig::default(),
        };
        match crate::routing::request_controller(self, &request).await {
            Ok(_) | Err(ControllerError::TopicExists(_)) => {
                tracing::info!(
                    node_id = self.config.node_id,
                    partitions = settings.offsets_partitions,
                    "the consumer groups' offsets topic is created"
                );
                Ok(())
            }
            Err(e) => Err(CoordinatorError::NotAvailable(Unavailable::Create(e))),
        }
    }

    /// The offsets partition that holds `group`, and its replicas.
    fn offsets_partition_of(
        &self,
        group: &str,
    ) -> Result<(GroupId, Vec<NodeId>), CoordinatorError> {
        self.metadata
            .with_metadata(|m| {
                let topic = m.topic(quipu_groups::OFFSETS_TOPIC)?;
                let count = u32::try_from(topic.partitions.len()).ok()?;
                let at = quipu_groups::partition_for_group(group, count);
                let assignment = topic.partitions.get(usize::try_from(at).ok()?)?;
                Some((GroupId(assignment.group), assignment.replicas.clone()))
            })
            .ok_or(CoordinatorError::NotAvailable(Unavailable::NoOffsetsTopic))
    }

    /// This node's replica of `group`'s offsets partition and the term it leads in, if it leads
    /// it and has applied every entry of earlier terms.
    async fn coordinating(&self, group: &str) -> Result<(Arc<Partition>, u64), CoordinatorError> {
        check_group_id(group)?;
        let (partition, replicas) = self.offsets_partition_of(group)?;
        let not_coordinator = |leader| CoordinatorError::NotCoordinator {
            group: partition,
            leader,
        };
        let Some(replica) = self.partition(partition) else {
            return Err(not_coordinator(replicas.first().copied()));
        };
        match replica.settled_term().await {
            Ok(term) => Ok((replica, term)),
            Err(ProduceError::NotLeader { leader, .. }) => Err(not_coordinator(leader)),
            Err(_) => Err(CoordinatorError::Loading { group: partition }),
        }
    }
}
