//! Requests to the controller from any node: the controller leader plans and proposes them;
//! another node forwards them to the leader over the Raft transport (`RaftTransport.Controller`,
//! one hop), and waits out an election. Behaviour: `docs/protocol/raft-transport.md`.

use std::time::Duration;

use quipu_meta::{Command, Metadata, NodeInfo, TopicConfig};
use serde::{Deserialize, Serialize};

/// How long a controller request waits for a controller leader to exist and answer.
pub const CONTROLLER_PATIENCE: Duration = Duration::from_secs(10);

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
    /// Replace a topic's settings.
    AlterTopicConfig {
        /// Topic name.
        name: String,
        /// The new settings.
        config: TopicConfig,
    },
    /// A node announces (or changes) its addresses.
    RegisterNode(NodeInfo),
}

impl ControllerRequest {
    /// The command that carries out this request on `metadata` (the leader's), with placement
    /// decided now.
    pub(crate) fn plan(&self, metadata: &Metadata) -> Result<Command, ControllerError> {
        Ok(match self {
            ControllerRequest::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
            } => metadata.plan_create_topic(
                name,
                *partitions,
                *replication_factor,
                config.clone(),
            )?,
            ControllerRequest::DeleteTopic { name } => {
                known(metadata, name)?;
                Command::DeleteTopic { name: name.clone() }
            }
            ControllerRequest::AddPartitions { name, count } => {
                metadata.plan_add_partitions(name, *count)?
            }
            ControllerRequest::AlterTopicConfig { name, config } => {
                known(metadata, name)?;
                Command::AlterTopicConfig {
                    name: name.clone(),
                    config: config.clone(),
                }
            }
            ControllerRequest::RegisterNode(info) => Command::RegisterNode(info.clone()),
        })
    }
}

fn known(metadata: &Metadata, name: &str) -> Result<(), ControllerError> {
    match metadata.topic(name) {
        Some(_) => Ok(()),
        None => Err(ControllerError::UnknownTopic(name.to_string())),
    }
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
    /// The request could not be planned (bad partition count, not enough nodes…).
    #[error("invalid request: {0}")]
    Plan(String),
    /// The controller failed or lost leadership before answering: whether the change was made
    /// is unknown.
    #[error("the controller did not answer: {0}")]
    Unavailable(String),
}

impl From<quipu_meta::CommandError> for ControllerError {
    fn from(error: quipu_meta::CommandError) -> Self {
        match error {
            quipu_meta::CommandError::TopicExists(name) => ControllerError::TopicExists(name),
            quipu_meta::CommandError::UnknownTopic(name) => ControllerError::UnknownTopic(name),
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

    /// The transport address of controller voter `node`.
    pub fn address_of(&self, node: u64) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .get_node(&node)
            .map(|n| n.addr.clone())
    }

    /// Plans `request` on this node's metadata and proposes it, if this node leads the controller.
    pub async fn handle(&self, request: &ControllerRequest) -> Result<(), ControllerError> {
        let leader = self.leader();
        if leader != Some(self.node_id) {
            return Err(ControllerError::NotLeader { leader });
        }
        let command = self.metadata.with_metadata(|m| request.plan(m))?;
        self.propose(&command).await
    }

    /// Proposes `command` to the controller group and waits until it is applied.
    pub async fn propose(&self, command: &Command) -> Result<(), ControllerError> {
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
                None => Ok(()),
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
