//! [`Metadata`]: the cluster's nodes and topics, changed only by applying [`Command`]s.
//!
//! Invariants: applying the same commands in the same order gives the same metadata on every
//! node (no clock, no randomness, no I/O); a command that fails changes nothing; partition group
//! ids are never reused (0 is the controller's group).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::placement::{PlacementError, place, replacement, shares_rack};
use crate::topic_config::{TopicConfig, TopicConfigError, shown};

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: u64,
    /// Address of its Raft transport.
    pub raft_addr: String,
    /// Address of its client-facing gRPC API (`quipu.v1.Admin`, `quipu.v1.Data`); empty if it
    /// serves none.
    pub api_addr: String,
    /// Address of its Kafka listener as clients reach it (`host:port`); empty if it serves
    /// none.
    pub kafka_addr: String,
    /// Its rack (failure domain), empty if none is configured: replicas of one partition go to
    /// distinct racks where there are enough.
    pub rack: String,
}

/// A node's registration as [`Command::RegisterNode`] carried it before format 1.7 (no rack).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddresses {
    /// The node's id.
    pub id: u64,
    /// Address of its Raft transport.
    pub raft_addr: String,
    /// Address of its client gRPC API; empty if it serves none.
    pub api_addr: String,
    /// Address of its Kafka listener; empty if it serves none.
    pub kafka_addr: String,
}

/// Where a registered or removed node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Registered: eligible for new replicas.
    Active,
    /// Being emptied: it leads nothing, gets no new replicas, and its replicas move away.
    Draining,
    /// Removed for good: its id is never used again, and a node that comes back with it is
    /// refused.
    Removed,
}

impl NodeState {
    /// Its name as `quipu node list` shows it.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Removed => "removed",
        }
    }
}

/// A new replica set for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The partition's group.
    pub group: u64,
    /// Its replicas once moved, the preferred leader first.
    pub replicas: Vec<u64>,
}

/// Where one partition lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// The partition's Raft group id.
    pub group: u64,
    /// Its replicas (the voters of its Raft group, as last completed); the first is the
    /// preferred leader.
    pub replicas: Vec<u64>,
    /// The replica set it is moving to, while a reassignment is under way: the partition's
    /// leader adds the new replicas as learners, changes the group's voters to these once they
    /// caught up, then completes the move ([`Command::CompleteReassignment`]).
    pub target: Option<Vec<u64>>,
    /// Nodes whose replicas the move under way takes away (deleted once it completes, never
    /// before the group's new voters are committed).
    pub leaving: Vec<u64>,
}

impl PartitionAssignment {
    /// The replicas it has once the move under way (if any) completes.
    pub fn final_replicas(&self) -> &[u64] {
        self.target.as_deref().unwrap_or(&self.replicas)
    }

    /// Whether `node` holds, or is to hold, a replica of it.
    pub fn involves(&self, node: u64) -> bool {
        self.replicas.contains(&node) || self.final_replicas().contains(&node)
    }
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// Its id, never reused.
    pub id: u64,
    /// Replicas per partition.
    pub replication_factor: usize,
    /// Its settings.
    pub config: TopicConfig,
    /// Its partitions, by partition number.
    pub partitions: Vec<PartitionAssignment>,
}

/// A change to the metadata, replicated by the controller group. Placement is decided when the
/// command is proposed ([`Metadata::plan_create_topic`]) and carried in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A node joins or changes its addresses, as written before format 1.7 (no rack); read,
    /// never written.
    RegisterNode(NodeAddresses),
    /// A new topic with its partitions' replicas.
    CreateTopic {
        /// Topic name.
        name: String,
        /// Replicas per partition.
        replication_factor: usize,
        /// Replicas of each partition, in partition order.
        replicas: Vec<Vec<u64>>,
        /// Settings.
        config: TopicConfig,
    },
    /// Removes a topic and its data.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Adds partitions to a topic.
    AddPartitions {
        /// Topic name.
        name: String,
        /// Replicas of each new partition.
        replicas: Vec<Vec<u64>>,
    },
    /// Replaces a topic's settings.
    AlterTopicConfig {
        /// Topic name.
        name: String,
        /// The new settings.
        config: TopicConfig,
    },
    /// Hands out the next `count` idempotent producer ids, as a block to one node (which gives
    /// them to its producers one by one). Ids are never handed out twice.
    AllocateProducerIds {
        /// How many (1 to [`PRODUCER_ID_BLOCK_MAX`]).
        count: u32,
    },
    /// A node joins or changes its addresses or rack (refused for a removed node).
    Register(NodeInfo),
    /// Moves partitions to new replica sets (each replacing a move under way, if any).
    Reassign {
        /// The moves.
        moves: Vec<Move>,
    },
    /// A partition's leader changed its group's voters to the move's target: the move is done,
    /// and the replicas it took away are deleted.
    CompleteReassignment {
        /// The partition's group.
        group: u64,
        /// The replicas now (must be the move's target).
        replicas: Vec<u64>,
    },
    /// A node is emptied: it gets no new replicas, hands its leaderships over, and its
    /// replicas move to other nodes (`moves`, planned with it).
    DrainNode {
        /// The node.
        id: u64,
        /// Its replicas' moves.
        moves: Vec<Move>,
    },
    /// A node leaves the cluster for good; refused while any partition keeps a replica on it
    /// once `moves` (planned with it: every replica it held, for a forced removal) are made.
    RemoveNode {
        /// The node.
        id: u64,
        /// Moves replacing its replicas.
        moves: Vec<Move>,
    },
    /// Names the cluster, once: every node stamps its transport messages with the name and
    /// refuses messages stamped with another (two clusters never exchange a message). Refused
    /// once the cluster has a different one; a repeat of the same one changes nothing.
    SetClusterId {
        /// 1 to [`CLUSTER_ID_BYTES_MAX`] characters of `[A-Za-z0-9_-]`.
        id: String,
    },
    /// Creates or replaces a user's SCRAM credential for one mechanism.
    UpsertScramCredential {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: crate::ScramMechanism,
        /// Salt, iterations and derived keys (never the password).
        credential: crate::ScramCredential,
    },
    /// Deletes a user's SCRAM credential for one mechanism (the user goes with its last one).
    DeleteScramCredential {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: crate::ScramMechanism,
    },
    /// Adds access control bindings (one already held changes nothing); all or none.
    CreateAcls {
        /// The bindings, each checked by [`crate::acls::AclBinding::check`].
        bindings: Vec<crate::acls::AclBinding>,
    },
    /// Removes access control bindings (one not held is skipped).
    DeleteAcls {
        /// The bindings.
        bindings: Vec<crate::acls::AclBinding>,
    },
}

/// Longest cluster id.
pub const CLUSTER_ID_BYTES_MAX: usize = 64;

/// Whether `id` is a valid cluster id: 1 to [`CLUSTER_ID_BYTES_MAX`] characters of
/// `[A-Za-z0-9_-]` (Kafka's are 22 characters of URL-safe base64).
pub fn valid_cluster_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= CLUSTER_ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Most producer ids one [`Command::AllocateProducerIds`] hands out.
pub const PRODUCER_ID_BLOCK_MAX: u32 = 1_000_000;

/// What one node must do after a command was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Open this node's replica of a partition (creating it if new).
    StartReplica {
        /// The partition's group.
        group: u64,
        /// Its topic and partition number.
        topic: String,
        /// Partition number.
        partition: u32,
        /// All its replicas, preferred leader first.
        replicas: Vec<u64>,
        /// Whether the partition is new (one replica bootstraps its group).
        created: bool,
    },
    /// Stop this node's replica of a partition and delete its data.
    DeleteReplica {
        /// The partition's group.
        group: u64,
    },
    /// A topic's settings changed; its replicas on this node must reload them.
    ConfigChanged {
        /// Topic name.
        topic: String,
    },
    /// This node is being drained: it hands over every leadership it holds and stands for
    /// election nowhere.
    Drain,
    /// This node was removed from the cluster.
    Removed,
    /// The cluster has its id (sent to every node; again after a restart replays the log).
    ClusterId(String),
}

/// A command was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The topic name is not a valid Kafka topic name (shown cut to 64 characters).
    #[error("invalid topic name {0:?}: 1 to 249 characters of [a-zA-Z0-9._-], not \".\" or \"..\"")]
    InvalidName(String),
    /// A topic of that name exists.
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// No topic of that name.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// A partition count of zero, or more than the limit.
    #[error("invalid partition count {count} (1 to {max})")]
    InvalidPartitionCount {
        /// Requested.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A replica list names a node that is not registered, repeats a node, or has the wrong size.
    #[error("invalid replica list {replicas:?}: {reason}")]
    InvalidReplicas {
        /// The list.
        replicas: Vec<u64>,
        /// What is wrong.
        reason: String,
    },
    /// Placement failed.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// A topic setting is unknown or out of range.
    #[error(transparent)]
    Config(#[from] TopicConfigError),
    /// The cluster holds its most topics (`topics_max`).
    #[error("the cluster holds its most topics ({max}, the limit topics_max)")]
    TooManyTopics {
        /// The limit.
        max: usize,
    },
    /// A node would host more partition replicas than `partitions_per_node_max`.
    #[error(
        "node {node} would host {replicas} partition replicas, more than its most ({max}, the limit partitions_per_node_max)"
    )]
    TooManyReplicas {
        /// The node.
        node: u64,
        /// Replicas it would host.
        replicas: usize,
        /// The limit.
        max: usize,
    },
    /// The node was removed from the cluster; its id is never used again.
    #[error("node {0} was removed from the cluster: its id is never used again")]
    NodeRemoved(u64),
    /// No registered node has that id.
    #[error("unknown node {0}")]
    UnknownNode(u64),
    /// No partition has that group.
    #[error("unknown partition group {0}")]
    UnknownGroup(u64),
    /// No partition of that number.
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
    },
    /// A node still holds (or is to hold) replicas.
    #[error(
        "node {node} holds replicas of {partitions} partitions: drain it first, or remove it with --force if it is gone for good"
    )]
    NodeHoldsReplicas {
        /// The node.
        node: u64,
        /// Partitions with a replica on it.
        partitions: usize,
    },
    /// A completion for a move that is not the one under way (replaced, or done already).
    #[error("partition group {group} is not moving to {replicas:?}")]
    StaleReassignment {
        /// The partition's group.
        group: u64,
        /// The replicas the completion named.
        replicas: Vec<u64>,
    },
    /// A producer id block of zero ids, too many, or past the last id (`i64::MAX`).
    #[error(
        "cannot allocate {count} producer ids after {next} (1 to {PRODUCER_ID_BLOCK_MAX}, ids below 2^63)"
    )]
    ProducerIds {
        /// Asked for.
        count: u32,
        /// The next free id.
        next: u64,
    },
    /// A cluster id that is not valid (shown cut to 64 characters).
    #[error("invalid cluster id {0:?}: 1 to {CLUSTER_ID_BYTES_MAX} characters of [A-Za-z0-9_-]")]
    InvalidClusterId(String),
    /// The cluster has another id already; it never changes.
    #[error("the cluster's id is {0} already; it never changes")]
    ClusterIdSet(String),
    /// A user or credential was refused.
    #[error(transparent)]
    Credential(#[from] crate::CredentialError),
    /// An access control binding was refused.
    #[error(transparent)]
    Acl(#[from] crate::acls::AclError),
}

/// Bounds on the cluster's size, checked when a command that adds topics or partitions is
/// planned ([`Metadata::check_limits`]), before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterLimits {
    /// Most topics in the cluster.
    pub topics_max: usize,
    /// Most partition replicas one node hosts.
    pub partitions_per_node_max: usize,
}

impl Default for ClusterLimits {
    /// 10,000 topics; 2,000 replicas per node (each holds a Raft group, and three files and
    /// three memory maps per segment).
    fn default() -> ClusterLimits {
        ClusterLimits {
            topics_max: 10_000,
            partitions_per_node_max: 2_000,
        }
    }
}

/// Most partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: usize = 10_000;

/// The cluster's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    nodes: BTreeMap<u64, NodeInfo>,
    topics: BTreeMap<String, TopicInfo>,
    next_topic_id: u64,
    /// Next partition group id; 0 is the controller's.
    next_group: u64,
    /// The next idempotent producer id not handed out yet.
    next_producer_id: u64,
    /// Nodes being drained.
    draining: BTreeSet<u64>,
    /// Nodes removed for good: ids never used again.
    removed: BTreeSet<u64>,
    /// The cluster's id, empty until [`Command::SetClusterId`].
    cluster_id: String,
    /// Users and their SCRAM credentials.
    users: crate::Users,
    /// Access control bindings.
    acls: BTreeSet<crate::acls::AclBinding>,
}

/// Whether `name` is a valid Kafka topic name: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.`
/// or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl Metadata {
    /// The registered nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    /// The topics, by name.
    pub fn topics(&self) -> impl Iterator<Item = &TopicInfo> {
        self.topics.values()
    }

    /// Every user with a SCRAM credential, and its credentials by mechanism.
    pub fn users(&self) -> &crate::Users {
        &self.users
    }

    /// The access control bindings.
    pub fn acls(&self) -> &BTreeSet<crate::acls::AclBinding> {
        &self.acls
    }

    /// `user`'s credential for `mechanism`.
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: crate::ScramMechanism,
    ) -> Option<&crate::ScramCredential> {
        self.users.get(user)?.get(&mechanism)
    }

    /// The cluster's id, once named ([`Command::SetClusterId`]).
    pub fn cluster_id(&self) -> Option<&str> {
        (!self.cluster_id.is_empty()).then_some(self.cluster_id.as_str())
    }

    /// The first producer id the next [`Command::AllocateProducerIds`] hands out.
    pub fn next_producer_id(&self) -> u64 {
        self.next_producer_id
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }

    /// The topic and partition number of partition group `group`.
    pub fn partition_of_group(&self, group: u64) -> Option<(&TopicInfo, u32)> {
        self.partition(group)
            .map(|(topic, number, _)| (topic, number))
    }

    /// Where node `id` stands (`None`: never registered).
    pub fn node_state(&self, id: u64) -> Option<NodeState> {
        if self.removed.contains(&id) {
            Some(NodeState::Removed)
        } else if self.draining.contains(&id) {
            Some(NodeState::Draining)
        } else if self.nodes.contains_key(&id) {
            Some(NodeState::Active)
        } else {
            None
        }
    }

    /// One registered node.
    pub fn node(&self, id: u64) -> Option<&NodeInfo> {
        self.nodes.get(&id)
    }

    /// The nodes removed for good.
    pub fn removed_nodes(&self) -> impl Iterator<Item = u64> + '_ {
        self.removed.iter().copied()
    }

    /// Whether node `id` was removed for good.
    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// Nodes that may get new replicas: registered and not draining, by id.
    pub fn eligible_nodes(&self) -> Vec<u64> {
        self.nodes
            .keys()
            .copied()
            .filter(|id| !self.draining.contains(id))
            .collect()
    }

    /// Each registered node's rack.
    pub fn racks(&self) -> BTreeMap<u64, String> {
        self.nodes
            .values()
            .map(|n| (n.id, n.rack.clone()))
            .collect()
    }

    /// Partition `group`: its topic, number and assignment.
    pub fn partition(&self, group: u64) -> Option<(&TopicInfo, u32, &PartitionAssignment)> {
        self.topics.values().find_map(|topic| {
            let at = topic.partitions.iter().position(|p| p.group == group)?;
            Some((
                topic,
                u32::try_from(at).expect("partition counts are bounded"),
                &topic.partitions[at],
            ))
        })
    }

    /// Every partition with a move under way: its topic, number and assignment.
    pub fn reassignments(&self) -> impl Iterator<Item = (&TopicInfo, u32, &PartitionAssignment)> {
        self.topics.values().flat_map(|topic| {
            topic
                .partitions
                .iter()
                .zip(0u32..)
                .filter(|(p, _)| p.target.is_some())
                .map(move |(p, at)| (topic, at, p))
        })
    }

    /// Partitions (by group) whose replicas are or are to be on `node`.
    pub fn partitions_on(&self, node: u64) -> Vec<u64> {
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.involves(node))
            .map(|p| p.group)
            .collect()
    }

    /// Replicas and preferred leaderships per node, once the moves under way complete.
    fn load(&self) -> BTreeMap<u64, (usize, usize)> {
        let mut load = BTreeMap::new();
        for partition in self.topics.values().flat_map(|t| &t.partitions) {
            for (at, node) in partition.final_replicas().iter().enumerate() {
                let entry = load.entry(*node).or_insert((0, 0));
                entry.0 += 1;
                if at == 0 {
                    entry.1 += 1;
                }
            }
        }
        load
    }

    fn check_count(count: usize) -> Result<(), CommandError> {
        if count == 0 || count > PARTITIONS_PER_TOPIC_MAX {
            return Err(CommandError::InvalidPartitionCount {
                count,
                max: PARTITIONS_PER_TOPIC_MAX,
            });
        }
        Ok(())
    }

    /// The command that creates `name`, with replicas placed on the registered nodes.
    pub fn plan_create_topic(
        &self,
        name: &str,
        partitions: usize,
        replication_factor: usize,
        config: TopicConfig,
    ) -> Result<Command, CommandError> {
        if !valid_topic_name(name) {
            return Err(CommandError::InvalidName(shown(name)));
        }
        if self.topics.contains_key(name) {
            return Err(CommandError::TopicExists(name.to_string()));
        }
        Self::check_count(partitions)?;
        config.validate()?;
        let replicas = place(
            &self.eligible_nodes(),
            &self.racks(),
            &self.load(),
            partitions,
            replication_factor,
        )?;
        Ok(Command::CreateTopic {
            name: name.to_string(),
            replication_factor,
            replicas,
            config,
        })
    }

    /// Whether `command`, applied now, keeps the cluster within `limits`: topics in the cluster
    /// and replicas per node (only commands that add topics or partitions can exceed them).
    pub fn check_limits(
        &self,
        command: &Command,
        limits: &ClusterLimits,
    ) -> Result<(), CommandError> {
        let added = match command {
            Command::CreateTopic { replicas, .. } => {
                if self.topics.len() >= limits.topics_max {
                    return Err(CommandError::TooManyTopics {
                        max: limits.topics_max,
                    });
                }
                replicas
            }
            Command::AddPartitions { replicas, .. } => replicas,
            Command::Reassign { moves }
            | Command::DrainNode { moves, .. }
            | Command::RemoveNode { moves, .. } => {
                // Only a node that gains replicas can be taken past the limit by a move (one
                // over it already, after the limit was lowered, may still be emptied).
                let before = self.load();
                let gaining = self.load_after(moves).into_iter().filter(|(node, after)| {
                    *after > before.get(node).map_or(0, |(replicas, _)| *replicas)
                });
                return Self::over_limit(gaining.collect(), limits);
            }
            _ => return Ok(()),
        };
        let mut load: BTreeMap<u64, usize> = self
            .load()
            .into_iter()
            .map(|(node, (replicas, _))| (node, replicas))
            .collect();
        for node in added.iter().flatten() {
            *load.entry(*node).or_insert(0) += 1;
        }
        Self::over_limit(load, limits)
    }

    /// Replicas per node once `moves` (and the moves under way they do not replace) complete.
    fn load_after(&self, moves: &[Move]) -> BTreeMap<u64, usize> {
        let mut load = BTreeMap::new();
        for partition in self.topics.values().flat_map(|t| &t.partitions) {
            let replicas = moves
                .iter()
                .find(|m| m.group == partition.group)
                .map_or(partition.final_replicas(), |m| &m.replicas);
            for node in replicas {
                *load.entry(*node).or_insert(0) += 1;
            }
        }
        load
    }

    fn over_limit(load: BTreeMap<u64, usize>, limits: &ClusterLimits) -> Result<(), CommandError> {
        match load
            .into_iter()
            .find(|(_, replicas)| *replicas > limits.partitions_per_node_max)
        {
            Some((node, replicas)) => Err(CommandError::TooManyReplicas {
                node,
                replicas,
                max: limits.partitions_per_node_max,
            }),
            None => Ok(()),
        }
    }

    /// The command that adds `count` partitions to `name`.
    pub fn plan_add_partitions(&self, name: &str, count: usize) -> Result<Command, CommandError> {
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| CommandError::UnknownTopic(shown(name)))?;
        Self::check_count(topic.partitions.len() + count)?;
        let replicas = place(
            &self.eligible_nodes(),
            &self.racks(),
            &self.load(),
            count,
            topic.replication_factor,
        )?;
        Ok(Command::AddPartitions {
            name: name.to_string(),
            replicas,
        })
    }

    fn check_replicas(
        &self,
        replicas: &[Vec<u64>],
        replication_factor: usize,
    ) -> Result<(), CommandError> {
        for list in replicas {
            let invalid = |reason: &str| CommandError::InvalidReplicas {
                replicas: list.clone(),
                reason: reason.to_string(),
            };
            if list.len() != replication_factor {
                return Err(invalid("its length is not the replication factor"));
            }
            if let Some(node) = list.iter().find(|node| !self.nodes.contains_key(node)) {
                return Err(invalid(&format!("node {node} is not registered")));
            }
            if let Some(node) = list.iter().find(|node| self.draining.contains(node)) {
                return Err(invalid(&format!("node {node} is being drained")));
            }
            let mut distinct = list.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() != list.len() {
                return Err(invalid("a node appears twice"));
            }
        }
        Ok(())
    }

    /// The command that moves partition `partition` of `topic` to `replicas` (preferred leader
    /// first), checked as it will be applied.
    pub fn plan_move(
        &self,
        topic: &str,
        partition: u32,
        replicas: Vec<u64>,
    ) -> Result<Command, CommandError> {
        let info = self
            .topics
            .get(topic)
            .ok_or_else(|| CommandError::UnknownTopic(shown(topic)))?;
        let assignment = info.partitions.get(partition as usize).ok_or_else(|| {
            CommandError::UnknownPartition {
                topic: shown(topic),
                partition,
            }
        })?;
        let moves = vec![Move {
            group: assignment.group,
            replicas,
        }];
        self.check_moves(&moves)?;
        Ok(Command::Reassign { moves })
    }

    /// Moves that take every replica off `node` (kept or to come), each to the eligible node
    /// [`replacement`] picks, `node` itself excluded.
    fn moves_off(&self, node: u64) -> Result<Vec<Move>, CommandError> {
        let nodes: Vec<u64> = self
            .eligible_nodes()
            .into_iter()
            .filter(|id| *id != node)
            .collect();
        let racks = self.racks();
        let mut load = self.load();
        let mut moves = Vec::new();
        for topic in self.topics.values() {
            for partition in topic.partitions.iter().filter(|p| p.involves(node)) {
                let mut replicas: Vec<u64> = partition
                    .final_replicas()
                    .iter()
                    .copied()
                    .filter(|id| *id != node)
                    .collect();
                if replicas.len() < topic.replication_factor {
                    let chosen = replacement(&nodes, &racks, &load, &replicas).ok_or(
                        PlacementError::NotEnoughNodes {
                            replication_factor: topic.replication_factor,
                            nodes: nodes.len(),
                        },
                    )?;
                    load.entry(chosen).or_insert((0, 0)).0 += 1;
                    replicas.push(chosen);
                }
                // The preferred leader: the replica with the fewest preferred leaderships (the
                // current order on a tie), so that a node's leaderships do not pile up on the
                // replica after it.
                let first = (0..replicas.len())
                    .min_by_key(|at| (load.get(&replicas[*at]).map_or(0, |l| l.1), *at))
                    .unwrap_or(0);
                if let Some(l) = partition
                    .final_replicas()
                    .first()
                    .and_then(|old| load.get_mut(old))
                {
                    l.1 = l.1.saturating_sub(1);
                }
                let leader = replicas.remove(first);
                replicas.insert(0, leader);
                load.entry(leader).or_insert((0, 0)).1 += 1;
                moves.push(Move {
                    group: partition.group,
                    replicas,
                });
            }
        }
        Ok(moves)
    }

    /// The command that drains `node`: no new replicas, its leaderships handed over, its
    /// replicas moved to the other eligible nodes.
    pub fn plan_drain(&self, node: u64) -> Result<Command, CommandError> {
        self.check_registered(node)?;
        Ok(Command::DrainNode {
            id: node,
            moves: self.moves_off(node)?,
        })
    }

    /// The command that removes `node` for good. Refused while it holds or is to hold
    /// replicas, unless `force` (for a node that is gone for good): then its replicas are
    /// re-created on other nodes from the surviving ones.
    pub fn plan_remove(&self, node: u64, force: bool) -> Result<Command, CommandError> {
        self.check_registered(node)?;
        let held = self.partitions_on(node).len();
        if held > 0 && !force {
            return Err(CommandError::NodeHoldsReplicas {
                node,
                partitions: held,
            });
        }
        Ok(Command::RemoveNode {
            id: node,
            moves: self.moves_off(node)?,
        })
    }

    /// The moves that spread replicas evenly over the eligible nodes (at most one apart, on
    /// distinct racks where there are enough) and then preferred leaders; partitions already
    /// moving are left alone. Empty when the cluster is even.
    pub fn plan_rebalance(&self) -> Vec<Move> {
        let nodes = self.eligible_nodes();
        let racks = self.racks();
        // The planned replica list of each partition that may move, by group.
        let mut planned: BTreeMap<u64, Vec<u64>> = self
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.target.is_none())
            .map(|p| (p.group, p.replicas.clone()))
            .collect();
        // Replicas per eligible node, kept up to date as the plan moves them.
        let mut load: BTreeMap<u64, usize> = nodes.iter().map(|n| (*n, 0)).collect();
        for (node, (replicas, _)) in self.load() {
            if let Some(at) = load.get_mut(&node) {
                *at = replicas;
            }
        }
        // Each step moves one replica from a most loaded node to a least loaded one; bounded by
        // the replicas there are.
        let steps = planned.values().map(Vec::len).sum::<usize>();
        for _ in 0..steps {
            let (Some((&most, &high)), Some((&least, &low))) = (
                load.iter()
                    .max_by_key(|(node, n)| (**n, std::cmp::Reverse(**node))),
                load.iter().min_by_key(|(node, n)| (**n, **node)),
            ) else {
                break;
            };
            if high <= low + 1 {
                break;
            }
            // A partition on `most` and not on `least`, preferring one where `least` adds a
            // rack the others lack.
            let Some((_, replicas)) = planned
                .iter_mut()
                .filter(|(_, r)| r.contains(&most) && !r.contains(&least))
                .min_by_key(|(group, r)| {
                    let others: Vec<u64> = r.iter().copied().filter(|n| *n != most).collect();
                    (shares_rack(&racks, &others, least), **group)
                })
            else {
                break;
            };
            let at = replicas.iter().position(|n| *n == most).expect("filtered");
            replicas[at] = least;
            *load.get_mut(&most).expect("an eligible node") -= 1;
            *load.get_mut(&least).expect("an eligible node") += 1;
        }
        // Preferred leaders (first replicas), as planned so far.
        let mut leaders: BTreeMap<u64, usize> = BTreeMap::new();
        let firsts = self
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.target.is_some())
            .map(|p| p.final_replicas())
            .chain(planned.values().map(Vec::as_slice))
            .filter_map(|replicas| replicas.first());
        for first in firsts {
            *leaders.entry(*first).or_insert(0) += 1;
        }
        // While a node is preferred leader of two more partitions than another, one of them
        // that the other holds a replica of is handed to it (each step lowers the sum of the
        // squared counts; bounded).
        for _ in 0..planned.len().saturating_mul(2) {
            let count = |node: u64| leaders.get(&node).copied().unwrap_or(0);
            let Some(swap) = planned.iter().find_map(|(group, replicas)| {
                let leader = replicas[0];
                let better = replicas[1..]
                    .iter()
                    .copied()
                    .filter(|n| count(*n) + 1 < count(leader))
                    .min_by_key(|n| (count(*n), *n))?;
                Some((*group, leader, better))
            }) else {
                break;
            };
            let (group, from, to) = swap;
            let replicas = planned.get_mut(&group).expect("found above");
            let at = replicas.iter().position(|n| *n == to).expect("found above");
            replicas.swap(0, at);
            *leaders.get_mut(&from).expect("a leader") -= 1;
            *leaders.entry(to).or_insert(0) += 1;
        }
        planned
            .into_iter()
            .filter(|(group, replicas)| {
                let (_, _, original) = self.partition(*group).expect("planned from the metadata");
                original.replicas != *replicas
            })
            .map(|(group, replicas)| Move { group, replicas })
            .collect()
    }

    fn check_registered(&self, node: u64) -> Result<(), CommandError> {
        match self.node_state(node) {
            Some(NodeState::Removed) => Err(CommandError::NodeRemoved(node)),
            None => Err(CommandError::UnknownNode(node)),
            Some(_) => Ok(()),
        }
    }

    /// Checks `moves` as applying them would: known partitions, each named once, replica lists
    /// of the topic's replication factor on registered nodes that are not draining.
    fn check_moves(&self, moves: &[Move]) -> Result<(), CommandError> {
        let mut seen = BTreeSet::new();
        for m in moves {
            let (topic, _, _) = self
                .partition(m.group)
                .ok_or(CommandError::UnknownGroup(m.group))?;
            if !seen.insert(m.group) {
                return Err(CommandError::InvalidReplicas {
                    replicas: m.replicas.clone(),
                    reason: format!("partition group {} is moved twice", m.group),
                });
            }
            self.check_replicas(std::slice::from_ref(&m.replicas), topic.replication_factor)?;
        }
        Ok(())
    }

    /// Starts `moves` (checked already): each partition's target becomes its move's list, and
    /// `local_node` opens the replicas it is to get.
    fn start_moves(&mut self, moves: &[Move], local_node: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        for m in moves {
            let (name, number) = {
                let (topic, number, _) = self.partition(m.group).expect("checked");
                (topic.name.clone(), number)
            };
            let partition = self
                .topics
                .get_mut(&name)
                .and_then(|t| t.partitions.get_mut(number as usize))
                .expect("checked");
            // Whatever held a replica before (the voters, an earlier move's new replicas) and
            // is not in the new list leaves once this move completes.
            let mut leaving: BTreeSet<u64> = partition.leaving.iter().copied().collect();
            leaving.extend(partition.replicas.iter().copied());
            leaving.extend(partition.final_replicas().iter().copied());
            leaving.retain(|node| !m.replicas.contains(node));
            let held: Vec<u64> = partition
                .replicas
                .iter()
                .chain(partition.final_replicas())
                .copied()
                .collect();
            partition.leaving = leaving.into_iter().collect();
            partition.target = Some(m.replicas.clone());
            if m.replicas.contains(&local_node) && !held.contains(&local_node) {
                effects.push(Effect::StartReplica {
                    group: m.group,
                    topic: name,
                    partition: number,
                    replicas: m.replicas.clone(),
                    created: false,
                });
            }
        }
        effects
    }

    /// Applies a command (in controller log order) and returns what `local_node` must do.
    pub fn apply(
        &mut self,
        command: &Command,
        local_node: u64,
    ) -> Result<Vec<Effect>, CommandError> {
        let group_base = self.next_group.max(1);
        match command {
            Command::RegisterNode(node) => {
                let info = NodeInfo {
                    id: node.id,
                    raft_addr: node.raft_addr.clone(),
                    api_addr: node.api_addr.clone(),
                    kafka_addr: node.kafka_addr.clone(),
                    rack: String::new(),
                };
                self.register(info)
            }
            Command::Register(node) => self.register(node.clone()),
            Command::SetClusterId { id } => {
                if !valid_cluster_id(id) {
                    return Err(CommandError::InvalidClusterId(shown(id)));
                }
                if !self.cluster_id.is_empty() && self.cluster_id != *id {
                    return Err(CommandError::ClusterIdSet(self.cluster_id.clone()));
                }
                self.cluster_id.clone_from(id);
                Ok(vec![Effect::ClusterId(id.clone())])
            }
            Command::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => {
                if !crate::valid_user_name(user) {
                    return Err(crate::CredentialError::InvalidName.into());
                }
                credential.check(*mechanism)?;
                if !self.users.contains_key(user) && self.users.len() >= crate::users::USERS_MAX {
                    return Err(crate::CredentialError::TooManyUsers.into());
                }
                self.users
                    .entry(user.clone())
                    .or_default()
                    .insert(*mechanism, credential.clone());
                Ok(Vec::new())
            }
            Command::DeleteScramCredential { user, mechanism } => {
                let not_found = || crate::CredentialError::NotFound {
                    user: shown(user),
                    mechanism: *mechanism,
                };
                let credentials = self.users.get_mut(user).ok_or_else(not_found)?;
                credentials.remove(mechanism).ok_or_else(not_found)?;
                if credentials.is_empty() {
                    self.users.remove(user);
                }
                Ok(Vec::new())
            }
            Command::CreateAcls { bindings } => {
                if bindings.len() > crate::acls::ACLS_PER_COMMAND_MAX {
                    return Err(crate::acls::AclError::TooManyInCommand(bindings.len()).into());
                }
                for binding in bindings {
                    binding.check()?;
                }
                let new = bindings.iter().filter(|b| !self.acls.contains(*b)).count();
                if self.acls.len() + new > crate::acls::ACLS_MAX {
                    return Err(crate::acls::AclError::TooMany.into());
                }
                self.acls.extend(bindings.iter().cloned());
                Ok(Vec::new())
            }
            Command::DeleteAcls { bindings } => {
                if bindings.len() > crate::acls::ACLS_PER_COMMAND_MAX {
                    return Err(crate::acls::AclError::TooManyInCommand(bindings.len()).into());
                }
                for binding in bindings {
                    self.acls.remove(binding);
                }
                Ok(Vec::new())
            }
            Command::Reassign { moves } => {
                self.check_moves(moves)?;
                Ok(self.start_moves(moves, local_node))
            }
            Command::CompleteReassignment { group, replicas } => {
                let stale = || CommandError::StaleReassignment {
                    group: *group,
                    replicas: replicas.clone(),
                };
                let (name, number) = {
                    let (topic, number, partition) = self.partition(*group).ok_or_else(stale)?;
                    if partition.target.as_ref() != Some(replicas) {
                        return Err(stale());
                    }
                    (topic.name.clone(), number)
                };
                let partition = self
                    .topics
                    .get_mut(&name)
                    .and_then(|t| t.partitions.get_mut(number as usize))
                    .expect("found above");
                partition.replicas = replicas.clone();
                partition.target = None;
                let leaving = std::mem::take(&mut partition.leaving);
                Ok(if leaving.contains(&local_node) {
                    vec![Effect::DeleteReplica { group: *group }]
                } else {
                    Vec::new()
                })
            }
            Command::DrainNode { id, moves } => {
                self.check_registered(*id)?;
                // The moves are checked with the node already draining: none may go to it.
                let was_draining = !self.draining.insert(*id);
                if let Err(e) = self.check_moves(moves) {
                    if !was_draining {
                        self.draining.remove(id);
                    }
                    return Err(e);
                }
                let mut effects = self.start_moves(moves, local_node);
                if *id == local_node {
                    effects.push(Effect::Drain);
                }
                Ok(effects)
            }
            Command::RemoveNode { id, moves } => {
                self.check_registered(*id)?;
                self.check_moves(moves)?;
                let kept = self
                    .topics
                    .values()
                    .flat_map(|t| &t.partitions)
                    .filter(|p| {
                        let after = moves
                            .iter()
                            .find(|m| m.group == p.group)
                            .map_or(p.final_replicas(), |m| &m.replicas);
                        after.contains(id)
                    })
                    .count();
                if kept > 0 {
                    return Err(CommandError::NodeHoldsReplicas {
                        node: *id,
                        partitions: kept,
                    });
                }
                let mut effects = self.start_moves(moves, local_node);
                self.nodes.remove(id);
                self.draining.remove(id);
                self.removed.insert(*id);
                if *id == local_node {
                    effects.push(Effect::Removed);
                }
                Ok(effects)
            }
            Command::CreateTopic {
                name,
                replication_factor,
                replicas,
                config,
            } => {
                if !valid_topic_name(name) {
                    return Err(CommandError::InvalidName(shown(name)));
                }
                if self.topics.contains_key(name) {
                    return Err(CommandError::TopicExists(name.clone()));
                }
                Self::check_count(replicas.len())?;
                self.check_replicas(replicas, *replication_factor)?;
                config.validate()?;
                let partitions = self.assign(replicas, group_base);
                let effects = Self::starts(name, 0, &partitions, local_node);
                self.next_topic_id += 1;
                self.topics.insert(
                    name.clone(),
                    TopicInfo {
                        name: name.clone(),
                        id: self.next_topic_id,
                        replication_factor: *replication_factor,
                        config: config.clone(),
                        partitions,
                    },
                );
                Ok(effects)
            }
            Command::AddPartitions { name, replicas } => {
                let topic = self
                    .topics
                    .get(name)
                    .ok_or_else(|| CommandError::UnknownTopic(shown(name)))?;
                Self::check_count(topic.partitions.len() + replicas.len())?;
                self.check_replicas(replicas, topic.replication_factor)?;
                let first =
                    u32::try_from(topic.partitions.len()).expect("partition counts are bounded");
                let partitions = self.assign(replicas, group_base);
                let effects = Self::starts(name, first, &partitions, local_node);
                self.topics
                    .get_mut(name)
                    .expect("checked above")
                    .partitions
                    .extend(partitions);
                Ok(effects)
            }
            Command::DeleteTopic { name } => {
                let topic = self
                    .topics
                    .remove(name)
                    .ok_or_else(|| CommandError::UnknownTopic(shown(name)))?;
                Ok(topic
                    .partitions
                    .iter()
                    .filter(|p| p.replicas.contains(&local_node))
                    .map(|p| Effect::DeleteReplica { group: p.group })
                    .collect())
            }
            Command::AlterTopicConfig { name, config } => {
                config.validate()?;
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| CommandError::UnknownTopic(shown(name)))?;
                topic.config = config.clone();
                let hosted = topic
                    .partitions
                    .iter()
                    .any(|p| p.replicas.contains(&local_node));
                Ok(if hosted {
                    vec![Effect::ConfigChanged {
                        topic: name.clone(),
                    }]
                } else {
                    Vec::new()
                })
            }
            Command::AllocateProducerIds { count } => {
                let next = self
                    .next_producer_id
                    .checked_add(u64::from(*count))
                    .filter(|n| {
                        *count >= 1 && *count <= PRODUCER_ID_BLOCK_MAX && *n <= i64::MAX as u64
                    })
                    .ok_or(CommandError::ProducerIds {
                        count: *count,
                        next: self.next_producer_id,
                    })?;
                self.next_producer_id = next;
                Ok(Vec::new())
            }
        }
    }

    /// Every replica `local_node` holds or is to hold, with its topic and partition number, by
    /// group.
    fn hosted(&self, local_node: u64) -> BTreeMap<u64, (&TopicInfo, u32, &PartitionAssignment)> {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter().zip(0u32..).map(move |(p, n)| (t, n, p)))
            .filter(|(_, _, p)| p.involves(local_node))
            .map(|(t, n, p)| (p.group, (t, n, p)))
            .collect()
    }

    fn start_of(
        topic: &TopicInfo,
        partition: u32,
        assignment: &PartitionAssignment,
        created: bool,
    ) -> Effect {
        Effect::StartReplica {
            group: assignment.group,
            topic: topic.name.clone(),
            partition,
            replicas: assignment.replicas.clone(),
            created,
        }
    }

    /// What `local_node` must do to be where this metadata puts it, starting from nothing: the
    /// effects of every command before it, as a node restarted from a snapshot of it has not
    /// re-applied them. Every replica it holds or is to hold is started (not as new: its
    /// creation's effects were carried out before the snapshot was taken), and its cluster id
    /// kept, its draining or removal acted on again.
    pub fn effects_to_restore(&self, local_node: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if !self.cluster_id.is_empty() {
            effects.push(Effect::ClusterId(self.cluster_id.clone()));
        }
        effects.extend(
            self.hosted(local_node)
                .values()
                .map(|(t, n, p)| Self::start_of(t, *n, p, false)),
        );
        if self.draining.contains(&local_node) {
            effects.push(Effect::Drain);
        }
        if self.removed.contains(&local_node) {
            effects.push(Effect::Removed);
        }
        effects
    }

    /// What `local_node`, where this metadata puts it, must do to be where `new` puts it: the
    /// effects of the commands between them, for a node that installs `new` from a snapshot
    /// instead of applying them. Replicas it is to hold start (not as new: their other replicas
    /// applied their creation and formed the group, which a second first entry could contradict;
    /// except a partition whose only replica it is and that is not moving, which only this node
    /// can form), replicas it no longer holds are deleted, topics whose settings changed reload
    /// them, and a new cluster id, draining or removal is acted on.
    pub fn effects_towards(&self, new: &Metadata, local_node: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if new.cluster_id != self.cluster_id && !new.cluster_id.is_empty() {
            effects.push(Effect::ClusterId(new.cluster_id.clone()));
        }
        let before = self.hosted(local_node);
        let after = new.hosted(local_node);
        let mut changed = BTreeSet::new();
        for (group, (t, n, p)) in &after {
            match before.get(group) {
                None => {
                    let alone = p.replicas == [local_node] && p.target.is_none();
                    effects.push(Self::start_of(t, *n, p, alone));
                }
                Some((old, _, _)) if old.config != t.config => {
                    changed.insert(t.name.clone());
                }
                Some(_) => {}
            }
        }
        effects.extend(
            changed
                .into_iter()
                .map(|topic| Effect::ConfigChanged { topic }),
        );
        effects.extend(
            before
                .keys()
                .filter(|group| !after.contains_key(group))
                .map(|group| Effect::DeleteReplica { group: *group }),
        );
        if new.draining.contains(&local_node) && !self.draining.contains(&local_node) {
            effects.push(Effect::Drain);
        }
        if new.removed.contains(&local_node) && !self.removed.contains(&local_node) {
            effects.push(Effect::Removed);
        }
        effects
    }

    fn register(&mut self, node: NodeInfo) -> Result<Vec<Effect>, CommandError> {
        if self.removed.contains(&node.id) {
            return Err(CommandError::NodeRemoved(node.id));
        }
        self.nodes.insert(node.id, node);
        Ok(Vec::new())
    }

    fn assign(&mut self, replicas: &[Vec<u64>], group_base: u64) -> Vec<PartitionAssignment> {
        let partitions: Vec<PartitionAssignment> = replicas
            .iter()
            .zip(group_base..)
            .map(|(replicas, group)| PartitionAssignment {
                group,
                replicas: replicas.clone(),
                target: None,
                leaving: Vec::new(),
            })
            .collect();
        self.next_group = group_base + partitions.len() as u64;
        partitions
    }

    fn starts(
        topic: &str,
        first: u32,
        partitions: &[PartitionAssignment],
        local_node: u64,
    ) -> Vec<Effect> {
        partitions
            .iter()
            .zip(first..)
            .filter(|(p, _)| p.replicas.contains(&local_node))
            .map(|(p, partition)| Effect::StartReplica {
                group: p.group,
                topic: topic.to_string(),
                partition,
                replicas: p.replicas.clone(),
                created: true,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Error messages never repeat unbounded client input.
    #[test]
    fn a_long_name_is_cut_in_the_error() {
        let meta = cluster(1);
        let long = "!".repeat(100_000);
        let error = meta
            .plan_create_topic(&long, 1, 1, TopicConfig::default())
            .unwrap_err();
        assert!(
            error.to_string().len() < 300,
            "{} bytes",
            error.to_string().len()
        );
        let error = meta
            .plan_add_partitions(&"x".repeat(100_000), 1)
            .unwrap_err();
        assert!(
            error.to_string().len() < 300,
            "{} bytes",
            error.to_string().len()
        );
    }

    #[test]
    fn the_cluster_is_named_once_and_the_name_never_changes() {
        let mut meta = cluster(3);
        assert_eq!(meta.cluster_id(), None);
        let name = |id: &str| Command::SetClusterId { id: id.to_owned() };
        assert_eq!(
            meta.apply(&name("Zq3-_x"), 2).unwrap(),
            vec![Effect::ClusterId("Zq3-_x".to_owned())]
        );
        assert_eq!(meta.cluster_id(), Some("Zq3-_x"));
        // A second proposal (two controller leaders in turn) of the same name changes nothing.
        meta.apply(&name("Zq3-_x"), 2).unwrap();
        assert_eq!(
            meta.apply(&name("other"), 2),
            Err(CommandError::ClusterIdSet("Zq3-_x".to_owned()))
        );
        for bad in ["", "a b", "é", &"x".repeat(CLUSTER_ID_BYTES_MAX + 1)] {
            assert!(matches!(
                meta.apply(&name(bad), 2),
                Err(CommandError::InvalidClusterId(_))
            ));
        }
        assert_eq!(meta.cluster_id(), Some("Zq3-_x"));
        // It survives the metadata's encoding (the controller snapshot).
        let decoded: Metadata =
            postcard::from_bytes(&postcard::to_allocvec(&meta).unwrap()).unwrap();
        assert_eq!(decoded.cluster_id(), Some("Zq3-_x"));
    }

    #[test]
    fn scram_credentials_are_kept_checked_and_deleted() {
        use crate::{ScramCredential, ScramMechanism};
        let mut meta = cluster(1);
        let credential = |iterations: u32, key: usize| ScramCredential {
            salt: vec![1; 16],
            iterations,
            stored_key: vec![2; key],
            server_key: vec![3; key],
        };
        let upsert = |user: &str, mechanism, credential| Command::UpsertScramCredential {
            user: user.to_owned(),
            mechanism,
            credential,
        };
        meta.apply(
            &upsert("alice", ScramMechanism::Sha256, credential(4096, 32)),
            1,
        )
        .unwrap();
        meta.apply(
            &upsert("alice", ScramMechanism::Sha512, credential(8192, 64)),
            1,
        )
        .unwrap();
        assert_eq!(meta.users()["alice"].len(), 2);
        assert_eq!(
            meta.scram_credential("alice", ScramMechanism::Sha512)
                .map(|c| c.iterations),
            Some(8192)
        );
        for bad in [
            upsert("bob", ScramMechanism::Sha256, credential(100, 32)),
            upsert("bob", ScramMechanism::Sha256, credential(4096, 64)),
            upsert("", ScramMechanism::Sha256, credential(4096, 32)),
            upsert("a\nb", ScramMechanism::Sha256, credential(4096, 32)),
        ] {
            assert!(matches!(
                meta.apply(&bad, 1),
                Err(CommandError::Credential(_))
            ));
        }
        assert!(!meta.users().contains_key("bob"));
        let delete = |mechanism| Command::DeleteScramCredential {
            user: "alice".to_owned(),
            mechanism,
        };
        meta.apply(&delete(ScramMechanism::Sha256), 1).unwrap();
        assert!(meta.apply(&delete(ScramMechanism::Sha256), 1).is_err());
        meta.apply(&delete(ScramMechanism::Sha512), 1).unwrap();
        assert!(
            meta.users().is_empty(),
            "the user goes with its last credential"
        );
    }

    #[test]
    fn acl_bindings_are_checked_kept_and_deleted() {
        use crate::acls::{AclBinding, Operation, PatternType, Permission, ResourceType};
        let mut meta = cluster(1);
        let binding = |principal: &str, name: &str| AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.to_owned(),
            pattern_type: PatternType::Prefixed,
            principal: principal.to_owned(),
            host: "*".to_owned(),
            operation: Operation::Read,
            permission: Permission::Allow,
        };
        let create = |bindings: Vec<AclBinding>| Command::CreateAcls { bindings };
        meta.apply(
            &create(vec![
                binding("User:alice", "logs-"),
                binding("User:bob", "x"),
            ]),
            1,
        )
        .unwrap();
        // Again: nothing changes.
        meta.apply(&create(vec![binding("User:alice", "logs-")]), 1)
            .unwrap();
        assert_eq!(meta.acls().len(), 2);
        for bad in [
            binding("alice", "x"),
            binding("User:", "x"),
            binding("User:c", ""),
        ] {
            let refused = meta.apply(&create(vec![binding("User:carol", "y"), bad]), 1);
            assert!(matches!(refused, Err(CommandError::Acl(_))), "{refused:?}");
        }
        assert_eq!(
            meta.acls().len(),
            2,
            "a refused create adds none of its bindings"
        );
        let encoded = postcard::to_allocvec(&meta).unwrap();
        let decoded: Metadata = postcard::from_bytes(&encoded).unwrap();
        assert_eq!(decoded.acls(), meta.acls());
        meta.apply(
            &Command::DeleteAcls {
                bindings: vec![binding("User:bob", "x"), binding("User:nobody", "x")],
            },
            1,
        )
        .unwrap();
        assert_eq!(
            meta.acls().iter().collect::<Vec<_>>(),
            vec![&binding("User:alice", "logs-")]
        );
    }

    #[test]
    fn a_command_with_an_invalid_config_is_refused_and_changes_nothing() {
        let mut meta = cluster(1);
        meta.apply(
            &meta
                .plan_create_topic("t", 1, 1, TopicConfig::default())
                .unwrap(),
            1,
        )
        .unwrap();
        // A config that bypassed the checks (decoded from a log written by a buggy node).
        let bad: TopicConfig = postcard::from_bytes(
            &postcard::to_allocvec(&std::collections::BTreeMap::from([(
                "retention.ms".to_string(),
                "-5".to_string(),
            )]))
            .unwrap(),
        )
        .unwrap();
        let before = meta.clone();
        let alter = Command::AlterTopicConfig {
            name: "t".to_string(),
            config: bad.clone(),
        };
        assert!(matches!(
            meta.apply(&alter, 1),
            Err(CommandError::Config(_))
        ));
        assert_eq!(meta, before);
        assert!(matches!(
            meta.plan_create_topic("u", 1, 1, bad),
            Err(CommandError::Config(_))
        ));
    }

    fn cluster(nodes: u64) -> Metadata {
        let mut meta = Metadata::default();
        for id in 1..=nodes {
            let node = NodeInfo {
                id,
                raft_addr: format!("127.0.0.1:{}", 7000 + id),
                api_addr: format!("127.0.0.1:{}", 9000 + id),
                kafka_addr: String::new(),
                rack: String::new(),
            };
            meta.apply(&Command::Register(node), 1).unwrap();
        }
        meta
    }

    #[test]
    fn creating_a_topic_assigns_fresh_groups_and_starts_local_replicas() {
        let mut meta = cluster(3);
        let create = meta
            .plan_create_topic("orders", 4, 3, TopicConfig::default())
            .unwrap();
        let mut other = meta.clone();
        let effects = meta.apply(&create, 2).unwrap();
        assert_eq!(
            effects.len(),
            4,
            "every partition has a replica on node 2 with RF 3 of 3 nodes"
        );
        let topic = meta.topic("orders").unwrap();
        let groups: Vec<u64> = topic.partitions.iter().map(|p| p.group).collect();
        assert_eq!(groups, [1, 2, 3, 4]);
        // Another node applying the same command gets the same metadata.
        other.apply(&create, 3).unwrap();
        assert_eq!(other, meta);
        // Groups are never reused, even after a delete.
        let deleted = meta
            .apply(
                &Command::DeleteTopic {
                    name: "orders".into(),
                },
                2,
            )
            .unwrap();
        assert_eq!(deleted.len(), 4);
        let again = meta
            .plan_create_topic("orders", 1, 1, TopicConfig::default())
            .unwrap();
        meta.apply(&again, 1).unwrap();
        assert_eq!(meta.topic("orders").unwrap().partitions[0].group, 5);
    }

    #[test]
    fn refused_commands_change_nothing() {
        let mut meta = cluster(2);
        let before = meta.clone();
        assert!(matches!(
            meta.plan_create_topic("bad name", 1, 1, TopicConfig::default()),
            Err(CommandError::InvalidName(_))
        ));
        assert!(matches!(
            meta.plan_create_topic("t", 0, 1, TopicConfig::default()),
            Err(CommandError::InvalidPartitionCount { .. })
        ));
        assert!(matches!(
            meta.plan_create_topic("t", 1, 3, TopicConfig::default()),
            Err(CommandError::Placement(_))
        ));
        let forged = Command::CreateTopic {
            name: "t".into(),
            replication_factor: 2,
            replicas: vec![vec![1, 1]],
            config: TopicConfig::default(),
        };
        assert!(matches!(
            meta.apply(&forged, 1),
            Err(CommandError::InvalidReplicas { .. })
        ));
        let unknown_node = Command::CreateTopic {
            name: "t".into(),
            replication_factor: 1,
            replicas: vec![vec![9]],
            config: TopicConfig::default(),
        };
        assert!(matches!(
            meta.apply(&unknown_node, 1),
            Err(CommandError::InvalidReplicas { .. })
        ));
        assert!(matches!(
            meta.apply(&Command::DeleteTopic { name: "t".into() }, 1),
            Err(CommandError::UnknownTopic(_))
        ));
        assert_eq!(meta, before);
        // Two proposals of the same topic raced: the second, applied later, is refused.
        let first = meta
            .plan_create_topic("t", 1, 1, TopicConfig::default())
            .unwrap();
        let second = meta
            .plan_create_topic("t", 2, 1, TopicConfig::default())
            .unwrap();
        meta.apply(&first, 1).unwrap();
        assert_eq!(
            meta.apply(&second, 1),
            Err(CommandError::TopicExists("t".into()))
        );
    }

    #[test]
    fn added_partitions_continue_numbering_and_stay_even() {
        let mut meta = cluster(3);
        let create = meta
            .plan_create_topic("t", 2, 2, TopicConfig::default())
            .unwrap();
        meta.apply(&create, 1).unwrap();
        let add = meta.plan_add_partitions("t", 4).unwrap();
        let effects = meta.apply(&add, 3).unwrap();
        let numbers: Vec<u32> = effects
            .iter()
            .map(|e| match e {
                Effect::StartReplica { partition, .. } => *partition,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert!(numbers.iter().all(|n| (2..6).contains(n)));
        let topic = meta.topic("t").unwrap();
        assert_eq!(topic.partitions.len(), 6);
        let mut replicas = BTreeMap::new();
        for p in &topic.partitions {
            for node in &p.replicas {
                *replicas.entry(*node).or_insert(0) += 1;
            }
        }
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), [4, 4, 4]);
    }

    #[test]
    fn producer_id_blocks_never_overlap_and_stay_below_2_pow_63() {
        let mut meta = Metadata::default();
        let mut firsts = Vec::new();
        for count in [1, 1000, 7] {
            firsts.push(meta.next_producer_id());
            meta.apply(&Command::AllocateProducerIds { count }, 1)
                .unwrap();
        }
        assert_eq!(firsts, [0, 1, 1001]);
        assert_eq!(meta.next_producer_id(), 1008);
        for count in [0, PRODUCER_ID_BLOCK_MAX + 1] {
            assert!(matches!(
                meta.apply(&Command::AllocateProducerIds { count }, 1),
                Err(CommandError::ProducerIds { .. })
            ));
        }
        meta.next_producer_id = i64::MAX as u64 - 5;
        assert!(
            meta.apply(&Command::AllocateProducerIds { count: 6 }, 1)
                .is_err()
        );
        meta.apply(&Command::AllocateProducerIds { count: 5 }, 1)
            .unwrap();
        assert_eq!(meta.next_producer_id(), i64::MAX as u64);
    }

    #[test]
    fn creates_beyond_the_cluster_limits_are_refused_when_planned() {
        let mut meta = cluster(3);
        let limits = ClusterLimits {
            topics_max: 2,
            partitions_per_node_max: 4,
        };
        let create = meta
            .plan_create_topic("a", 3, 3, TopicConfig::default())
            .unwrap();
        meta.check_limits(&create, &limits).unwrap();
        meta.apply(&create, 1).unwrap();
        // Three more replicas per node would make six, over four.
        let more = meta.plan_add_partitions("a", 3).unwrap();
        assert_eq!(
            meta.check_limits(&more, &limits),
            Err(CommandError::TooManyReplicas {
                node: 1,
                replicas: 6,
                max: 4
            })
        );
        let one_more = meta.plan_add_partitions("a", 1).unwrap();
        meta.check_limits(&one_more, &limits).unwrap();
        let b = meta
            .plan_create_topic("b", 1, 1, TopicConfig::default())
            .unwrap();
        meta.check_limits(&b, &limits).unwrap();
        meta.apply(&b, 1).unwrap();
        let c = meta
            .plan_create_topic("c", 1, 1, TopicConfig::default())
            .unwrap();
        assert_eq!(
            meta.check_limits(&c, &limits),
            Err(CommandError::TooManyTopics { max: 2 })
        );
        // Commands that add nothing are never refused by the limits.
        meta.check_limits(&Command::DeleteTopic { name: "b".into() }, &limits)
            .unwrap();
    }

    fn node(id: u64, rack: &str) -> NodeInfo {
        NodeInfo {
            id,
            raft_addr: format!("127.0.0.1:{}", 7000 + id),
            api_addr: String::new(),
            kafka_addr: String::new(),
            rack: rack.to_string(),
        }
    }

    /// Applies `command` as every node of `nodes` would, checking they agree; returns each
    /// node's effects.
    fn apply_all(
        meta: &mut Metadata,
        command: &Command,
        nodes: &[u64],
    ) -> BTreeMap<u64, Vec<Effect>> {
        let mut effects = BTreeMap::new();
        let mut agreed = None;
        for id in nodes {
            let mut copy = meta.clone();
            effects.insert(*id, copy.apply(command, *id).unwrap());
            if let Some(other) = &agreed {
                assert_eq!(&copy, other);
            }
            agreed = Some(copy);
        }
        *meta = agreed.unwrap();
        effects
    }

    /// The replicas a node holds after carrying out `effects` from `held`, and whether it
    /// drains, was removed, knows the cluster id.
    fn carry_out(held: &mut BTreeSet<u64>, flags: &mut BTreeSet<String>, effects: &[Effect]) {
        for effect in effects {
            match effect {
                Effect::StartReplica { group, .. } => {
                    held.insert(*group);
                }
                Effect::DeleteReplica { group } => {
                    held.remove(group);
                }
                Effect::ConfigChanged { .. } => {}
                Effect::Drain => {
                    flags.insert("drain".into());
                }
                Effect::Removed => {
                    flags.insert("removed".into());
                }
                Effect::ClusterId(id) => {
                    flags.insert(format!("cluster {id}"));
                }
            }
        }
    }

    /// A node restored from a snapshot, or catching up to one, ends where a node that applied
    /// every command ends: the same replicas, the same cluster id, draining and removal; a topic
    /// whose settings changed on the way is told to reload them.
    #[test]
    fn effects_from_a_snapshot_end_where_applying_every_command_does() {
        let mut meta = cluster(5);
        let mut history = vec![meta.clone()];
        let nodes = [1, 2, 3, 4, 5];
        let mut applied: BTreeMap<u64, (BTreeSet<u64>, BTreeSet<String>)> = BTreeMap::new();
        let mut step = |meta: &mut Metadata, command: Command| {
            for (id, effects) in apply_all(meta, &command, &nodes) {
                let (held, flags) = applied.entry(id).or_default();
                carry_out(held, flags, &effects);
            }
            history.push(meta.clone());
        };
        step(
            &mut meta,
            Command::SetClusterId {
                id: "Zq3-_x".into(),
            },
        );
        for name in ["a", "b", "c"] {
            let create = meta
                .plan_create_topic(name, 3, 3, TopicConfig::default())
                .unwrap();
            step(&mut meta, create);
        }
        let group = meta.topic("a").unwrap().partitions[0].group;
        let replicas = meta.topic("a").unwrap().partitions[0].replicas.clone();
        let spare = *nodes.iter().find(|n| !replicas.contains(n)).unwrap();
        let moved: Vec<u64> = std::iter::once(spare)
            .chain(replicas[1..].iter().copied())
            .collect();
        let planned = meta.plan_move("a", 0, moved.clone()).unwrap();
        step(&mut meta, planned);
        let halfway = meta.clone();
        step(
            &mut meta,
            Command::CompleteReassignment {
                group,
                replicas: moved,
            },
        );
        step(&mut meta, Command::DeleteTopic { name: "b".into() });
        let mut config = TopicConfig::default();
        config.set("retention.ms", "60000").unwrap();
        step(
            &mut meta,
            Command::AlterTopicConfig {
                name: "c".into(),
                config,
            },
        );
        let solo = meta
            .plan_create_topic("solo", 1, 1, TopicConfig::default())
            .unwrap();
        let before_solo = meta.clone();
        step(&mut meta, solo);
        let drain = meta.plan_drain(5).unwrap();
        step(&mut meta, drain);
        for id in nodes {
            let (held, flags) = &applied[&id];
            // Restored from the last snapshot.
            let (mut restored, mut restored_flags) = (BTreeSet::new(), BTreeSet::new());
            carry_out(
                &mut restored,
                &mut restored_flags,
                &meta.effects_to_restore(id),
            );
            assert_eq!((&restored, &restored_flags), (held, flags), "node {id}");
            // Caught up from every earlier state by one snapshot.
            for (at, before) in history.iter().enumerate() {
                let (mut held_then, mut flags_then) = (BTreeSet::new(), BTreeSet::new());
                carry_out(
                    &mut held_then,
                    &mut flags_then,
                    &before.effects_to_restore(id),
                );
                let towards = before.effects_towards(&meta, id);
                carry_out(&mut held_then, &mut flags_then, &towards);
                assert_eq!(
                    (&held_then, &flags_then),
                    (held, flags),
                    "node {id} from {at}"
                );
                let reloads = towards
                    .iter()
                    .filter(|e| matches!(e, Effect::ConfigChanged { topic } if topic == "c"))
                    .count();
                let hosts_c = meta
                    .topic("c")
                    .unwrap()
                    .partitions
                    .iter()
                    .any(|p| p.involves(id));
                let c_then = before
                    .topic("c")
                    .is_some_and(|t| t.config != meta.topic("c").unwrap().config);
                assert_eq!(
                    reloads,
                    usize::from(hosts_c && c_then),
                    "node {id} from {at}"
                );
            }
        }
        // A node that catches up past a partition's creation forms its group only if it is
        // its only replica.
        let solo = &meta.topic("solo").unwrap().partitions[0];
        let created: Vec<bool> = before_solo
            .effects_towards(&meta, solo.replicas[0])
            .iter()
            .filter_map(|e| match e {
                Effect::StartReplica { created, .. } => Some(*created),
                _ => None,
            })
            .collect();
        assert!(created.contains(&true), "{created:?}");
        let a_first = meta.topic("a").unwrap().partitions[1].replicas[0];
        assert!(
            history[0]
                .effects_towards(&meta, a_first)
                .iter()
                .all(|e| !matches!(e, Effect::StartReplica { created: true, replicas, .. } if replicas.len() > 1)),
            "a replicated partition is never formed from a snapshot"
        );
        // Mid-move, the node the partition moves to holds a replica already, and the one it
        // leaves still does.
        assert!(
            halfway
                .effects_to_restore(spare)
                .iter()
                .any(|e| matches!(e, Effect::StartReplica { group: g, .. } if *g == group))
        );
        assert!(
            halfway
                .effects_to_restore(replicas[0])
                .iter()
                .any(|e| matches!(e, Effect::StartReplica { group: g, .. } if *g == group))
        );
    }

    #[test]
    fn a_move_starts_new_replicas_and_deletes_old_ones_only_once_completed() {
        let mut meta = cluster(4);
        let create = meta
            .plan_create_topic("t", 1, 3, TopicConfig::default())
            .unwrap();
        meta.apply(&create, 1).unwrap();
        let before = meta.topic("t").unwrap().partitions[0].clone();
        assert_eq!(before.replicas, [1, 2, 3]);
        let group = before.group;
        let planned = meta.plan_move("t", 0, vec![4, 2, 3]).unwrap();
        let effects = apply_all(&mut meta, &planned, &[1, 2, 3, 4]);
        assert!(effects[&1].is_empty() && effects[&2].is_empty());
        assert!(matches!(
            effects[&4][..],
            [Effect::StartReplica { created: false, .. }]
        ));
        let moving = &meta.topic("t").unwrap().partitions[0];
        assert_eq!(moving.replicas, [1, 2, 3], "the voters until it completes");
        assert_eq!(moving.final_replicas(), [4, 2, 3]);
        assert_eq!(moving.leaving, [1]);
        assert_eq!(meta.reassignments().count(), 1);
        // A completion naming another list is stale and changes nothing.
        let stale = Command::CompleteReassignment {
            group,
            replicas: vec![1, 2, 3],
        };
        let copy = meta.clone();
        assert!(matches!(
            meta.apply(&stale, 1),
            Err(CommandError::StaleReassignment { .. })
        ));
        assert_eq!(meta, copy);
        let done = Command::CompleteReassignment {
            group,
            replicas: vec![4, 2, 3],
        };
        let effects = apply_all(&mut meta, &done, &[1, 2, 3, 4]);
        assert_eq!(effects[&1], [Effect::DeleteReplica { group }]);
        assert!(effects[&2].is_empty() && effects[&4].is_empty());
        let after = &meta.topic("t").unwrap().partitions[0];
        assert_eq!(
            (
                after.replicas.as_slice(),
                after.target.as_ref(),
                after.leaving.len()
            ),
            (&[4, 2, 3][..], None, 0)
        );
        // Completed twice (a retry after a lost answer): stale, nothing deleted again.
        assert!(meta.apply(&done, 1).is_err());
        // Bad moves are refused when planned.
        assert!(matches!(
            meta.plan_move("t", 0, vec![4, 2]),
            Err(CommandError::InvalidReplicas { .. })
        ));
        assert!(matches!(
            meta.plan_move("t", 0, vec![4, 2, 9]),
            Err(CommandError::InvalidReplicas { .. })
        ));
        assert!(matches!(
            meta.plan_move("t", 1, vec![1, 2, 3]),
            Err(CommandError::UnknownPartition { .. })
        ));
    }

    #[test]
    fn a_move_that_replaces_one_under_way_deletes_everything_it_takes_away() {
        let mut meta = cluster(5);
        meta.apply(
            &meta
                .plan_create_topic("t", 1, 3, TopicConfig::default())
                .unwrap(),
            1,
        )
        .unwrap();
        let group = meta.topic("t").unwrap().partitions[0].group;
        meta.apply(&meta.plan_move("t", 0, vec![4, 2, 3]).unwrap(), 1)
            .unwrap();
        // Node 4 may already hold a learner: moving to 5 instead takes it away too.
        let to_five = meta.plan_move("t", 0, vec![5, 2, 3]).unwrap();
        let effects = apply_all(&mut meta, &to_five, &[4, 5]);
        assert!(
            effects[&4].is_empty(),
            "not deleted before the new voters are committed"
        );
        assert_eq!(effects[&5].len(), 1);
        let done = Command::CompleteReassignment {
            group,
            replicas: vec![5, 2, 3],
        };
        let effects = apply_all(&mut meta, &done, &[1, 2, 4, 5]);
        assert_eq!(effects[&1], [Effect::DeleteReplica { group }]);
        assert_eq!(effects[&4], [Effect::DeleteReplica { group }]);
        assert!(effects[&2].is_empty() && effects[&5].is_empty());
    }

    #[test]
    fn draining_moves_every_replica_away_and_takes_no_new_ones() {
        let mut meta = cluster(4);
        meta.apply(
            &meta
                .plan_create_topic("t", 8, 3, TopicConfig::default())
                .unwrap(),
            1,
        )
        .unwrap();
        let drain = meta.plan_drain(2).unwrap();
        let effects = apply_all(&mut meta, &drain, &[1, 2, 3, 4]);
        assert!(effects[&2].contains(&Effect::Drain));
        assert_eq!(meta.node_state(2), Some(NodeState::Draining));
        for p in &meta.topic("t").unwrap().partitions {
            assert!(!p.final_replicas().contains(&2), "{p:?}");
            assert_eq!(p.final_replicas().len(), 3);
        }
        // New topics avoid it, and a create planned before the drain is refused after it.
        let create = Command::CreateTopic {
            name: "u".into(),
            replication_factor: 1,
            replicas: vec![vec![2]],
            config: TopicConfig::default(),
        };
        assert!(matches!(
            meta.apply(&create, 1),
            Err(CommandError::InvalidReplicas { .. })
        ));
        let planned = meta
            .plan_create_topic("u", 6, 3, TopicConfig::default())
            .unwrap();
        let Command::CreateTopic { replicas, .. } = &planned else {
            unreachable!()
        };
        assert!(replicas.iter().flatten().all(|n| *n != 2));
        // Removal waits for the moves to complete: the voters still include it until then.
        assert!(matches!(
            meta.plan_remove(2, false),
            Err(CommandError::NodeHoldsReplicas { .. })
        ));
        let moving: Vec<(u64, Vec<u64>)> = meta
            .reassignments()
            .map(|(_, _, p)| (p.group, p.target.clone().unwrap()))
            .collect();
        for (group, replicas) in moving {
            meta.apply(&Command::CompleteReassignment { group, replicas }, 1)
                .unwrap();
        }
        let remove = meta.plan_remove(2, false).unwrap();
        let effects = apply_all(&mut meta, &remove, &[1, 2]);
        assert_eq!(effects[&2], [Effect::Removed]);
        assert_eq!(meta.node_state(2), Some(NodeState::Removed));
        assert_eq!(meta.nodes().count(), 3);
        // The id is never used again.
        assert_eq!(
            meta.apply(&Command::Register(node(2, "")), 1),
            Err(CommandError::NodeRemoved(2))
        );
        assert!(matches!(
            meta.plan_drain(2),
            Err(CommandError::NodeRemoved(2))
        ));
        assert!(matches!(
            meta.plan_drain(9),
            Err(CommandError::UnknownNode(9))
        ));
    }

    #[test]
    fn a_forced_removal_re_replicates_what_the_node_held() {
        let mut meta = cluster(5);
        meta.apply(
            &meta
                .plan_create_topic("t", 10, 3, TopicConfig::default())
                .unwrap(),
            1,
        )
        .unwrap();
        let held = meta.partitions_on(3).len();
        assert!(held > 0);
        assert!(
            matches!(meta.plan_remove(3, false), Err(CommandError::NodeHoldsReplicas { partitions, .. }) if partitions == held)
        );
        let remove = meta.plan_remove(3, true).unwrap();
        apply_all(&mut meta, &remove, &[1, 2, 4, 5]);
        assert_eq!(meta.reassignments().count(), held);
        for (_, _, p) in meta.reassignments() {
            assert!(!p.final_replicas().contains(&3) && p.final_replicas().len() == 3);
            assert_eq!(p.leaving, [3]);
        }
        // Not enough nodes left for RF 3 is refused when planned.
        let mut small = cluster(3);
        small
            .apply(
                &small
                    .plan_create_topic("t", 1, 3, TopicConfig::default())
                    .unwrap(),
                1,
            )
            .unwrap();
        assert!(matches!(
            small.plan_remove(3, true),
            Err(CommandError::Placement(_))
        ));
    }

    #[test]
    fn registration_keeps_the_rack_and_reads_the_old_command() {
        let mut meta = Metadata::default();
        let old = Command::RegisterNode(NodeAddresses {
            id: 1,
            raft_addr: "a:1".into(),
            api_addr: String::new(),
            kafka_addr: String::new(),
        });
        // An entry written before 1.7 still decodes as the same variant.
        let bytes = postcard::to_allocvec(&old).unwrap();
        assert_eq!(bytes[0], 0);
        meta.apply(&postcard::from_bytes(&bytes).unwrap(), 1)
            .unwrap();
        meta.apply(&Command::Register(node(2, "r2")), 1).unwrap();
        assert_eq!(
            meta.racks(),
            BTreeMap::from([(1, String::new()), (2, "r2".to_string())])
        );
    }

    #[test]
    fn rebalancing_after_nodes_join_spreads_replicas_and_leaders() {
        let mut meta = cluster(3);
        meta.apply(
            &meta
                .plan_create_topic("t", 12, 3, TopicConfig::default())
                .unwrap(),
            1,
        )
        .unwrap();
        assert!(meta.plan_rebalance().is_empty(), "already even");
        for id in [4, 5] {
            meta.apply(&Command::Register(node(id, "")), 1).unwrap();
        }
        let moves = meta.plan_rebalance();
        assert!(!moves.is_empty());
        meta.apply(
            &Command::Reassign {
                moves: moves.clone(),
            },
            1,
        )
        .unwrap();
        let mut replicas = BTreeMap::new();
        let mut leaders = BTreeMap::new();
        for p in &meta.topic("t").unwrap().partitions {
            for n in p.final_replicas() {
                *replicas.entry(*n).or_insert(0) += 1;
            }
            *leaders.entry(p.final_replicas()[0]).or_insert(0) += 1;
        }
        let spread = |m: &BTreeMap<u64, i32>| m.values().max().unwrap() - m.values().min().unwrap();
        assert_eq!(replicas.len(), 5);
        assert!(spread(&replicas) <= 1, "{replicas:?}");
        assert!(spread(&leaders) <= 1, "{leaders:?}");
        // Moving partitions are left alone; once done, nothing more to do.
        assert!(meta.plan_rebalance().is_empty());
        for m in moves {
            meta.apply(
                &Command::CompleteReassignment {
                    group: m.group,
                    replicas: m.replicas,
                },
                1,
            )
            .unwrap();
        }
        assert!(meta.plan_rebalance().is_empty());
    }

    #[test]
    fn moves_are_held_to_the_replica_limit_only_where_they_add() {
        let mut meta = cluster(3);
        meta.apply(
            &meta
                .plan_create_topic("t", 3, 1, TopicConfig::default())
                .unwrap(),
            1,
        )
        .unwrap();
        let on = |meta: &Metadata, p: usize| meta.topic("t").unwrap().partitions[p].replicas[0];
        let (first, second) = (on(&meta, 0), on(&meta, 1));
        let limits = ClusterLimits {
            topics_max: 10,
            partitions_per_node_max: 1,
        };
        // Onto a node that holds one already: two, over the limit.
        let crowd = meta.plan_move("t", 0, vec![second]).unwrap();
        assert_eq!(
            meta.check_limits(&crowd, &limits),
            Err(CommandError::TooManyReplicas {
                node: second,
                replicas: 2,
                max: 1
            })
        );
        // A node over a lowered limit may still be emptied.
        meta.apply(&crowd, 1).unwrap();
        let tight = ClusterLimits {
            topics_max: 10,
            partitions_per_node_max: 0,
        };
        let back = meta.plan_move("t", 0, vec![first]).unwrap();
        assert!(
            meta.check_limits(&back, &tight).is_err(),
            "node {first} gains one"
        );
        let limits = ClusterLimits {
            topics_max: 10,
            partitions_per_node_max: 1,
        };
        meta.check_limits(&back, &limits).unwrap();
    }

    proptest::proptest! {
        /// After nodes join, the rebalance plan's replica lists are valid and the replicas per
        /// node end at most one apart; planning again right after finds nothing to do.
        #[test]
        fn rebalance_evens_any_cluster(
            first in 1u64..5,
            joined in 1u64..4,
            topics in proptest::collection::vec((1usize..20, 1usize..4), 1..5),
        ) {
            let mut meta = cluster(first);
            for (at, (partitions, rf)) in topics.iter().enumerate() {
                let rf = (*rf).min(usize::try_from(first).unwrap());
                let create = meta.plan_create_topic(&format!("t{at}"), *partitions, rf, TopicConfig::default()).unwrap();
                meta.apply(&create, 1).unwrap();
            }
            for id in first + 1..=first + joined {
                meta.apply(&Command::Register(node(id, "")), 1).unwrap();
            }
            let moves = meta.plan_rebalance();
            meta.apply(&Command::Reassign { moves: moves.clone() }, 1).unwrap();
            for m in moves {
                meta.apply(&Command::CompleteReassignment { group: m.group, replicas: m.replicas }, 1).unwrap();
            }
            let mut load: BTreeMap<u64, usize> = (1..=first + joined).map(|n| (n, 0)).collect();
            for p in meta.topics().flat_map(|t| &t.partitions) {
                for n in &p.replicas {
                    *load.get_mut(n).unwrap() += 1;
                }
            }
            let (high, low) = (load.values().max().unwrap(), load.values().min().unwrap());
            proptest::prop_assert!(high - low <= 1, "{:?}", load);
            proptest::prop_assert!(meta.plan_rebalance().is_empty());
        }
    }
}
