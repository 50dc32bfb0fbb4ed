//! [`Metadata`]: the cluster's nodes and topics, changed only by applying [`Command`]s.
//!
//! Invariants: applying the same commands in the same order gives the same metadata on every
//! node (no clock, no randomness, no I/O); a command that fails changes nothing; partition group
//! ids are never reused (0 is the controller's group).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::placement::{PlacementError, place};
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
}

/// Where one partition lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// The partition's Raft group id.
    pub group: u64,
    /// Its replicas; the first is the preferred leader.
    pub replicas: Vec<u64>,
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
    /// A node joins or changes its addresses.
    RegisterNode(NodeInfo),
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
        self.topics.values().find_map(|topic| {
            let at = topic.partitions.iter().position(|p| p.group == group)?;
            Some((
                topic,
                u32::try_from(at).expect("partition counts are bounded"),
            ))
        })
    }

    /// Replicas and preferred leaderships per node.
    fn load(&self) -> BTreeMap<u64, (usize, usize)> {
        let mut load = BTreeMap::new();
        for partition in self.topics.values().flat_map(|t| &t.partitions) {
            for (at, node) in partition.replicas.iter().enumerate() {
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
        let nodes: Vec<u64> = self.nodes.keys().copied().collect();
        let replicas = place(&nodes, &self.load(), partitions, replication_factor)?;
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
        let nodes: Vec<u64> = self.nodes.keys().copied().collect();
        let replicas = place(&nodes, &self.load(), count, topic.replication_factor)?;
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
            let mut distinct = list.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() != list.len() {
                return Err(invalid("a node appears twice"));
            }
        }
        Ok(())
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
                self.nodes.insert(node.id, node.clone());
                Ok(Vec::new())
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

    fn assign(&mut self, replicas: &[Vec<u64>], group_base: u64) -> Vec<PartitionAssignment> {
        let partitions: Vec<PartitionAssignment> = replicas
            .iter()
            .zip(group_base..)
            .map(|(replicas, group)| PartitionAssignment {
                group,
                replicas: replicas.clone(),
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
            };
            meta.apply(&Command::RegisterNode(node), 1).unwrap();
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
}
