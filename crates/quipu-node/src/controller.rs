//! Requests to the controller from any node: the controller leader plans and proposes them;
//! another node forwards them to the leader over the Raft transport (`RaftTransport.Controller`,
//! one hop), and waits out an election. Behaviour: `docs/protocol/raft-transport.md`.

use std::time::Duration;

use quipu_meta::{ClusterLimits, Command, Metadata, NodeInfo, TopicConfig, TopicSettings};
use serde::{Deserialize, Serialize};

/// How long a controller request waits for a controller leader to exist and answer.
pub const CONTROLLER_PATIENCE: Duration = Duration::from_secs(10);

/// What the controller leader answers a request it carried out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handled {
    /// The first producer id of an allocated block, or how many replicas a rebalance moved.
    pub allocated: Option<u64>,
    /// The index of the controller log entry that carried the change out (`None`: nothing was
    /// written). A node that answers a client waits until it has applied it.
    pub index: Option<u64>,
}

/// A change to the cluster's metadata, asked of the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// Create a topic, placing its replicas evenly.
    CreateTopic {
        /// Topic name.
        name: String,
        /// Number of partitions.
        partitions: usize,
        /// Replicas per partition.
        replication_factor: usize,
        /// Settings.
        config: TopicConfig,
    },
    /// Delete a topic and its data.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Add partitions to a topic.
    AddPartitions {
        /// Topic name.
        name: String,
        /// How many partitions to add.
        count: usize,
    },
    /// Change a topic's settings: with `replace`, start from none (Kafka's AlterConfigs),
    /// else from the topic's current ones (IncrementalAlterConfigs); then set each of `set`
    /// (Kafka name, value) and reset each of `reset` to the node's default.
    AlterTopicConfig {
        /// Topic name.
        name: String,
        /// Keys to set, with their values as text.
        set: Vec<(String, String)>,
        /// Keys to return to the node's default.
        reset: Vec<String>,
        /// Whether keys in neither list return to the default too.
        replace: bool,
    },
    /// A node announces (or changes) its addresses.
    RegisterNode(NodeInfo),
    /// Hand out the next `count` idempotent producer ids; the answer is the first of them.
    AllocateProducerIds {
        /// How many.
        count: u32,
    },
    /// A new node asks to join: the controller leader adds it to the controller group as a
    /// learner (it then registers itself, and becomes a voter while the controller has fewer
    /// than `controller_voters` of them). Refused for a removed node.
    Join {
        /// The node's id.
        id: u64,
        /// Its Raft transport address.
        raft_addr: String,
    },
    /// Move one partition to new replicas (preferred leader first).
    MovePartition {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// The new replicas.
        replicas: Vec<u64>,
    },
    /// A partition's leader changed its group's voters to the move's target.
    CompleteReassignment {
        /// The partition's group.
        group: u64,
        /// Its voters now.
        replicas: Vec<u64>,
    },
    /// Drain a node: its leaderships handed over, its replicas moved to other nodes.
    DrainNode {
        /// The node.
        id: u64,
    },
    /// Remove a node for good (with `force`, one that still holds replicas: they are
    /// re-created on other nodes from the surviving ones).
    RemoveNode {
        /// The node.
        id: u64,
        /// Whether to remove a node that still holds replicas.
        force: bool,
    },
    /// Spread replicas and preferred leaders evenly over the eligible nodes; the answer is the
    /// number of partitions moved.
    Rebalance,
    /// Create or replace a user's SCRAM credential (derived from the password by the client or
    /// the listener: never the password itself).
    UpsertScramCredential {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: quipu_meta::ScramMechanism,
        /// Salt, iterations and derived keys.
        credential: quipu_meta::ScramCredential,
    },
    /// Delete a user's SCRAM credential.
    DeleteScramCredential {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: quipu_meta::ScramMechanism,
    },
    /// Add access control bindings.
    CreateAcls {
        /// The bindings.
        bindings: Vec<quipu_meta::acls::AclBinding>,
    },
    /// Remove access control bindings.
    DeleteAcls {
        /// The bindings.
        bindings: Vec<quipu_meta::acls::AclBinding>,
    },
}

impl ControllerRequest {
    /// The command that carries out this request on `metadata` (the leader's), with placement
    /// decided now, topic settings checked against `defaults` and the cluster's size against
    /// `limits` (the leader's node settings).
    pub(crate) fn plan(
        &self,
        metadata: &Metadata,
        defaults: &TopicSettings,
        limits: &ClusterLimits,
    ) -> Result<Command, ControllerError> {
        let command = self.plan_command(metadata, defaults)?;
        metadata.check_limits(&command, limits)?;
        Ok(command)
    }

    fn plan_command(
        &self,
        metadata: &Metadata,
        defaults: &TopicSettings,
    ) -> Result<Command, ControllerError> {
        Ok(match self {
            ControllerRequest::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
            } => {
                // The plan checks every key and value; the node's own limits are checked here.
                config.check_against(defaults).map_err(invalid_config)?;
                metadata.plan_create_topic(
                    name,
                    *partitions,
                    *replication_factor,
                    config.clone(),
                )?
            }
            ControllerRequest::DeleteTopic { name } => {
                known(metadata, name)?;
                Command::DeleteTopic { name: name.clone() }
            }
            ControllerRequest::AddPartitions { name, count } => {
                metadata.plan_add_partitions(name, *count)?
            }
            ControllerRequest::AlterTopicConfig {
                name,
                set,
                reset,
                replace,
            } => {
                let topic = known(metadata, name)?;
                let mut config = if *replace {
                    TopicConfig::default()
                } else {
                    topic.config.clone()
                };
                for key in reset {
                    config.reset(key).map_err(invalid_config)?;
                }
                for (key, value) in set {
                    config.set(key, value).map_err(invalid_config)?;
                }
                config.check_against(defaults).map_err(invalid_config)?;
                Command::AlterTopicConfig {
                    name: name.clone(),
                    config,
                }
            }
            ControllerRequest::RegisterNode(info) => Command::Register(info.clone()),
            ControllerRequest::AllocateProducerIds { count } => {
                Command::AllocateProducerIds { count: *count }
            }
            ControllerRequest::MovePartition {
                topic,
                partition,
                replicas,
            } => metadata.plan_move(topic, *partition, replicas.clone())?,
            ControllerRequest::CompleteReassignment { group, replicas } => {
                Command::CompleteReassignment {
                    group: *group,
                    replicas: replicas.clone(),
                }
            }
            ControllerRequest::DrainNode { id } => metadata.plan_drain(*id)?,
            ControllerRequest::RemoveNode { id, force } => metadata.plan_remove(*id, *force)?,
            ControllerRequest::Rebalance => Command::Reassign {
                moves: metadata.plan_rebalance(),
            },
            ControllerRequest::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => Command::UpsertScramCredential {
                user: user.clone(),
                mechanism: *mechanism,
                credential: credential.clone(),
            },
            ControllerRequest::DeleteScramCredential { user, mechanism } => {
                Command::DeleteScramCredential {
                    user: user.clone(),
                    mechanism: *mechanism,
                }
            }
            ControllerRequest::CreateAcls { bindings } => Command::CreateAcls {
                bindings: bindings.clone(),
            },
            ControllerRequest::DeleteAcls { bindings } => Command::DeleteAcls {
                bindings: bindings.clone(),
            },
            ControllerRequest::Join { .. } => {
                return Err(ControllerError::Plan(
                    "a join changes the controller group, not the metadata".into(),
                ));
            }
        })
    }
}

fn known<'m>(
    metadata: &'m Metadata,
    name: &str,
) -> Result<&'m quipu_meta::TopicInfo, ControllerError> {
    metadata
        .topic(name)
        .ok_or_else(|| ControllerError::UnknownTopic(quipu_meta::shown(name)))
}

fn invalid_config(error: quipu_meta::TopicConfigError) -> ControllerError {
    ControllerError::InvalidConfig(error.to_string())
}

/// A controller request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControllerError {
    /// No node led the controller within [`CONTROLLER_PATIENCE`] (or, from a forwarded request,
    /// this node does not lead it).
    #[error("not the controller leader; leader is {leader:?}")]
    NotLeader {
        /// The controller leader, if known.
        leader: Option<u64>,
    },
    /// No topic of that name.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// A topic of that name exists.
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// The metadata refused the command when applying it (nothing changed).
    #[error("refused: {0}")]
    Refused(String),
    /// Fewer nodes are registered than the controller has voters, and the request needs more:
    /// the cluster is still forming (retried until [`CONTROLLER_PATIENCE`], then returned).
    #[error("the cluster is still starting: {registered} of {voters} nodes have registered")]
    Starting {
        /// Nodes registered in the metadata.
        registered: usize,
        /// Voters of the controller group.
        voters: usize,
    },
    /// A topic setting is unknown or out of range (nothing changed).
    #[error("{0}")]
    InvalidConfig(String),
    /// The replication factor is larger than the registered nodes.
    #[error(
        "replication factor {replication_factor} needs that many nodes, the cluster has {nodes}"
    )]
    NotEnoughNodes {
        /// Requested.
        replication_factor: usize,
        /// Registered nodes.
        nodes: usize,
    },
    /// The request would take the cluster past one of its limits (`topics_max`,
    /// `partitions_per_node_max`); nothing changed.
    #[error("{0}")]
    LimitExceeded(String),
    /// The request could not be planned (bad partition count, not enough nodes…).
    #[error("invalid request: {0}")]
    Plan(String),
    /// The controller failed or lost leadership before answering: whether the change was made
    /// is unknown.
    #[error("the controller did not answer: {0}")]
    Unavailable(String),
    /// The node was removed from the cluster: its id is never used again, and its data is
    /// stale.
    #[error("node {0} was removed from the cluster: its id is never used again")]
    NodeRemoved(u64),
    /// No registered node has that id.
    #[error("unknown node {0}")]
    UnknownNode(u64),
    /// The node still holds replicas.
    #[error("{0}")]
    NodeHoldsReplicas(String),
    /// Clients cannot create, delete or add partitions to the internal offsets topic (the group
    /// coordinator creates it; its partition count is fixed).
    #[error(
        "topic {0} is internal: only the group coordinator creates it, and it is never deleted or grown"
    )]
    InternalTopic(String),
    /// The node asked belongs to another cluster than this one (its transport refused this
    /// node's stamp): `--join` names a member of another cluster.
    #[error("{0}")]
    OtherCluster(String),
}

impl ControllerRequest {
    /// Refuses what clients may not ask of the internal offsets topic (changing its settings
    /// they may, as in Kafka).
    pub(crate) fn check_client_request(&self) -> Result<(), ControllerError> {
        match self {
            ControllerRequest::CreateTopic { name, .. }
            | ControllerRequest::DeleteTopic { name }
            | ControllerRequest::AddPartitions { name, .. }
                if name == quipu_groups::OFFSETS_TOPIC =>
            {
                Err(ControllerError::InternalTopic(name.clone()))
            }
            _ => Ok(()),
        }
    }
}

impl From<quipu_meta::CommandError> for ControllerError {
    fn from(error: quipu_meta::CommandError) -> Self {
        match error {
            quipu_meta::CommandError::TopicExists(name) => ControllerError::TopicExists(name),
            quipu_meta::CommandError::UnknownTopic(name) => ControllerError::UnknownTopic(name),
            quipu_meta::CommandError::Config(e) => invalid_config(e),
            quipu_meta::CommandError::NodeRemoved(id) => ControllerError::NodeRemoved(id),
            quipu_meta::CommandError::UnknownNode(id) => ControllerError::UnknownNode(id),
            e @ quipu_meta::CommandError::NodeHoldsReplicas { .. } => {
                ControllerError::NodeHoldsReplicas(e.to_string())
            }
            e @ (quipu_meta::CommandError::TooManyTopics { .. }
            | quipu_meta::CommandError::TooManyReplicas { .. }) => {
                ControllerError::LimitExceeded(e.to_string())
            }
            quipu_meta::CommandError::Placement(quipu_meta::PlacementError::NotEnoughNodes {
                replication_factor,
                nodes,
            }) => ControllerError::NotEnoughNodes {
                replication_factor,
                nodes,
            },
            other => ControllerError::Plan(other.to_string()),
        }
    }
}

/// What a node needs to plan and propose controller requests: its controller replica and the
/// metadata that replica applied. Shared by the node and its transport service.
#[derive(Clone)]
pub(crate) struct ControllerHandle {
    pub node_id: u64,
    pub raft: openraft::Raft<quipu_raft::TypeConfig>,
    pub metadata: quipu_raft::ControllerStateMachine,
    /// This node's topic defaults, which bound the topic settings it plans.
    pub topic_defaults: TopicSettings,
    /// This node's bounds on the cluster's size, which bound the commands it plans.
    pub limits: ClusterLimits,
}

impl std::fmt::Debug for ControllerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerHandle")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl ControllerHandle {
    /// The controller leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this node is a member (voter or learner) of the controller group, as its replica
    /// knows the group's membership.
    pub fn is_member(&self) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&self.node_id)
            .is_some()
    }

    /// The transport address of controller voter `node`.
    pub fn address_of(&self, node: u64) -> Option<String> {
        crate::groups::member_addr(&self.raft, node)
    }

    /// Plans `request` on this node's metadata and proposes it, if this node leads the controller.
    /// Returns the first id of the block, for [`ControllerRequest::AllocateProducerIds`].
    pub async fn handle(&self, request: &ControllerRequest) -> Result<Handled, ControllerError> {
        let leader = self.leader();
        if leader != Some(self.node_id) {
            return Err(ControllerError::NotLeader { leader });
        }
        if let ControllerRequest::Join { id, raft_addr } = request {
            return self.admit(*id, raft_addr).await;
        }
        let voters = crate::groups::voter_ids(&self.raft).len();
        let command = self.metadata.with_metadata(|m| {
            request
                .plan(m, &self.topic_defaults, &self.limits)
                .map_err(|e| match e {
                    // Not enough nodes while some voters have not registered yet: wait for them.
                    ControllerError::NotEnoughNodes { .. } if m.nodes().count() < voters => {
                        ControllerError::Starting {
                            registered: m.nodes().count(),
                            voters,
                        }
                    }
                    other => other,
                })
        })?;
        if let (ControllerRequest::Rebalance, Command::Reassign { moves }) = (request, &command) {
            let moved = moves.len() as u64;
            let index = if moved > 0 {
                self.propose(&command).await?.index
            } else {
                None
            };
            return Ok(Handled {
                allocated: Some(moved),
                index,
            });
        }
        self.propose(&command).await
    }

    /// Adds node `id` to the controller group as a learner, so that it receives the metadata and
    /// can register (a node already in the group is left as it is; a removed one is refused).
    async fn admit(&self, id: u64, raft_addr: &str) -> Result<Handled, ControllerError> {
        if self.metadata.with_metadata(|m| m.is_removed(id)) {
            return Err(ControllerError::NodeRemoved(id));
        }
        let known = crate::groups::member_addr(&self.raft, id);
        if known.as_deref() == Some(raft_addr) {
            return Ok(Handled::default());
        }
        if known.is_some() && crate::groups::voter_ids(&self.raft).contains(&id) {
            // A voter at another address: changing a voter's address is not a join.
            return Err(ControllerError::Plan(format!(
                "node {id} is a controller voter at {}; it cannot join again from {raft_addr}",
                known.unwrap_or_default()
            )));
        }
        let node = openraft::BasicNode {
            addr: raft_addr.to_string(),
        };
        match self.raft.add_learner(id, node, false).await {
            Ok(response) => {
                tracing::info!(node_id = id, %raft_addr, "node admitted to the controller group as a learner");
                Ok(Handled {
                    allocated: None,
                    index: Some(response.log_id.index),
                })
            }
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(forward),
            )) => Err(ControllerError::NotLeader {
                leader: forward.leader_id,
            }),
            Err(e) => Err(ControllerError::Unavailable(e.to_string())),
        }
    }

    /// Proposes `command` to the controller group and waits until it is applied; returns the
    /// first id of the block a [`Command::AllocateProducerIds`] handed out, and the entry's index.
    pub async fn propose(&self, command: &Command) -> Result<Handled, ControllerError> {
        let leader = self.leader();
        if leader != Some(self.node_id) {
            return Err(ControllerError::NotLeader { leader });
        }
        let bytes = postcard::to_allocvec(command)
            .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
        match self
            .raft
            .client_write(quipu_raft::Request::Metadata(bytes::Bytes::from(bytes)))
            .await
        {
            Ok(response) => match response.data.error {
                None => Ok(Handled {
                    allocated: response.data.allocated,
                    index: Some(response.log_id.index),
                }),
                Some(reason) => Err(ControllerError::Refused(reason)),
            },
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(forward),
            )) => Err(ControllerError::NotLeader {
                leader: forward.leader_id,
            }),
            Err(e) => Err(ControllerError::Unavailable(e.to_string())),
        }
    }
}
