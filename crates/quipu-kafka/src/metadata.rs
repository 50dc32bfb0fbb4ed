//! Metadata: brokers (every registered node with a Kafka listener), topics with stable ids, and
//! each partition's leader and leader epoch; creates unknown topics when allowed.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use quipu_meta::TopicInfo;
use quipu_meta::acls::Operation;
use quipu_node::{GroupId, NodeHandle, Principal};
use uuid::Uuid;

use crate::authorize;
use crate::server::Context;

/// High half of every topic id: marks the UUID as Quipu's; the low half is the topic's id,
/// which is never reused, so a topic deleted and created again gets a new UUID.
const TOPIC_ID_TAG: u64 = 0x7175_6970_7500_0001;

/// The Kafka topic id of `topic`: stable and non-zero.
pub(crate) fn topic_id(topic: &TopicInfo) -> Uuid {
    Uuid::from_u64_pair(TOPIC_ID_TAG, topic.id)
}

/// The name of the topic with Kafka id `id`, if it exists.
pub(crate) fn topic_named_by_id(node: &NodeHandle, id: Uuid) -> Option<String> {
    let (tag, topic) = id.as_u64_pair();
    if tag != TOPIC_ID_TAG {
        return None;
    }
    node.with_metadata(|m| m.topics().find(|t| t.id == topic).map(|t| t.name.clone()))
}

/// The Raft group and replicas of partition `partition` of `topic`, if both exist.
pub(crate) fn group_of(node: &NodeHandle, topic: &str, partition: i32) -> Option<(u64, Vec<u64>)> {
    node.with_metadata(|m| {
        let info = m.topic(topic)?;
        let assignment = info.partitions.get(usize::try_from(partition).ok()?)?;
        Some((assignment.group, assignment.replicas.clone()))
    })
}

/// This node's replica of `partition` of `topic` if it leads it, else the error a client gets:
/// `UNKNOWN_TOPIC_ID` for a topic named by an id that resolved to nothing (`topic` is `None`),
/// `UNKNOWN_TOPIC_OR_PARTITION`, or `NOT_LEADER_OR_FOLLOWER`.
pub(crate) fn led_replica(
    node: &NodeHandle,
    topic: Option<&str>,
    partition: i32,
) -> Result<std::sync::Arc<quipu_node::Partition>, ResponseError> {
    let topic = topic.ok_or(ResponseError::UnknownTopicId)?;
    let (group, _) =
        group_of(node, topic, partition).ok_or(ResponseError::UnknownTopicOrPartition)?;
    match node.partition(GroupId(group)) {
        Some(replica) if replica.is_leader() => Ok(replica),
        _ => Err(ResponseError::NotLeaderOrFollower),
    }
}

/// Checks a client's `current_leader_epoch` (-1: not given) against the replica's term:
/// an older one is `FENCED_LEADER_EPOCH`, a newer one `UNKNOWN_LEADER_EPOCH`.
pub(crate) fn check_leader_epoch(
    replica: &quipu_node::Partition,
    asked: i32,
) -> Result<(), ResponseError> {
    let current = replica.leader_epoch();
    match asked {
        _ if asked < 0 || asked == current => Ok(()),
        _ if asked < current => Err(ResponseError::FencedLeaderEpoch),
        _ => Err(ResponseError::UnknownLeaderEpoch),
    }
}

/// An offset as Kafka's signed 64-bit field.
pub(crate) fn kafka_offset(offset: quipu_storage::Offset) -> i64 {
    i64::try_from(offset.0).unwrap_or(i64::MAX)
}

/// Where a client should send requests for a partition, as this node knows it: the leader and
/// the leader epoch if this node hosts a replica, else the preferred leader (which does) and an
/// unknown epoch.
pub(crate) fn leader_of(node: &NodeHandle, group: u64, replicas: &[u64]) -> (Option<u64>, i32) {
    leader_in(node.partition(GroupId(group)).as_deref(), replicas)
}

/// [`leader_of`], given this node's replica of the partition if it hosts one.
fn leader_in(hosted: Option<&quipu_node::Partition>, replicas: &[u64]) -> (Option<u64>, i32) {
    match hosted {
        Some(partition) => (partition.leader(), partition.leader_epoch()),
        None => (replicas.first().copied(), -1),
    }
}

pub(crate) fn broker_id(id: u64) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(i32::MAX))
}

/// Kafka broker ids of a partition's replicas, in order.
pub(crate) fn broker_ids(replicas: &[u64]) -> Vec<BrokerId> {
    replicas.iter().map(|id| broker_id(*id)).collect()
}

/// A partition as Kafka clients are shown it: the leader and leader epoch ([`leader_of`]), the
/// replicas, and the in-sync replicas.
pub(crate) struct PartitionView {
    pub leader: Option<u64>,
    pub epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
}

/// Describes partitions for one answer (Metadata, DescribeTopicPartitions).
///
/// The in-sync replicas, in replica order, are the leader and every replica whose node's
/// heartbeats reached this node within the liveness timeout (the maximum election timeout plus a
/// heartbeat interval). A Raft replica that is up catches up from its leader by itself, so a
/// replica on a live node counts as in sync, and one on a stopped or cut-off node leaves the set
/// within that time. A node hears the heartbeats of every node only if it is a controller voter
/// (every node sends its node heartbeats to the controller's voters), and otherwise those of the
/// nodes it shares a partition with: a node that neither hosts the partition nor votes in the
/// controller cannot tell, and lists every replica.
pub(crate) struct PartitionViews<'a> {
    node: &'a NodeHandle,
    hears_everyone: bool,
}

impl<'a> PartitionViews<'a> {
    pub(crate) fn new(node: &'a NodeHandle) -> PartitionViews<'a> {
        let hears_everyone = node
            .controller_voters()
            .iter()
            .any(|(id, _)| *id == node.id());
        PartitionViews {
            node,
            hears_everyone,
        }
    }

    pub(crate) fn of(&self, group: u64, replicas: &[u64]) -> PartitionView {
        let hosted = self.node.partition(GroupId(group));
        let (leader, epoch) = leader_in(hosted.as_deref(), replicas);
        let judges = self.hears_everyone || hosted.is_some();
        let hosted_leader = hosted.and(leader);
        let isr = replicas
            .iter()
            .filter(|id| !judges || hosted_leader == Some(**id) || self.node.is_alive(**id))
            .map(|id| broker_id(*id))
            .collect();
        PartitionView {
            leader,
            epoch,
            replicas: broker_ids(replicas),
            isr,
        }
    }
}

/// Splits `host:port` (a bracketed IPv6 host too).
pub(crate) fn host_port(addr: &str) -> Option<(String, i32)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

/// Metadata. With authorization on, listing every topic lists those `who` may describe; a topic
/// asked for by name that `who` may not describe is TOPIC_AUTHORIZATION_FAILED whether it exists
/// or not, and an unknown one is created only for a client that may create it.
pub(crate) async fn handle(
    context: &Context,
    who: &Principal,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let node = &context.node;
    let describable = |name: &str| authorize::topic(context, who, Operation::Describe, name);
    // Names asked for (by name, or by id from v10 on); `None`: every topic. A topic asked for by
    // an id that names nothing, or one `who` may not describe, is answered by its id and an
    // error (never its name).
    let requested: Option<Vec<Result<String, (Uuid, ResponseError)>>> =
        request.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| match t.name {
                    Some(name) => Ok(name.0.to_string()),
                    None => match topic_named_by_id(node, t.topic_id) {
                        None => Err((t.topic_id, ResponseError::UnknownTopicId)),
                        Some(name) if !describable(&name) => {
                            Err((t.topic_id, ResponseError::TopicAuthorizationFailed))
                        }
                        Some(name) => Ok(name),
                    },
                })
                .collect()
        });
    if let Some(names) = &requested
        && context.config.auto_create_topics
        && request.allow_auto_topic_creation
    {
        for name in names.iter().flatten() {
            // As Kafka: only a topic the client may describe, and create.
            if node.with_metadata(|m| m.topic(name).is_none())
                && describable(name)
                && authorize::create_topic(context, who, name)
            {
                auto_create(context, name).await;
            }
        }
    }
    let metadata = node.metadata();
    let brokers = metadata
        .nodes()
        .filter_map(|n| {
            let (host, port) = host_port(&n.kafka_addr)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(broker_id(n.id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port),
            )
        })
        .collect();
    let views = PartitionViews::new(node);
    let described: Vec<MetadataResponseTopic> = match requested {
        None => metadata
            .topics()
            .filter(|t| describable(&t.name))
            .map(|t| describe(&views, t, version))
            .collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match name {
                Ok(name) if !describable(&name) => {
                    missing(name, ResponseError::TopicAuthorizationFailed, version)
                }
                Ok(name) => match metadata.topic(&name) {
                    Some(topic) => describe(&views, topic, version),
                    None if quipu_meta::valid_topic_name(&name) => {
                        missing(name, ResponseError::UnknownTopicOrPartition, version)
                    }
                    None => missing(name, ResponseError::InvalidTopicException, version),
                },
                Err((id, code)) => MetadataResponseTopic::default()
                    .with_error_code(code.code())
                    .with_topic_id(if version >= 10 { id } else { Uuid::nil() }),
            })
            .collect(),
    };
    let controller = node.controller_leader().map_or(BrokerId(-1), broker_id);
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(node.cluster_id().map(StrBytes::from_string))
        .with_controller_id(controller)
        .with_topics(described)
}

/// The listener's default replication factor, capped at the cluster's size: its registered
/// nodes, or its controller voters while some have not registered yet (a request then waits for
/// them rather than getting fewer replicas).
pub(crate) fn default_replication_factor(context: &Context) -> usize {
    let node = &context.node;
    let registered = node.with_metadata(|m| m.nodes().count());
    let size = registered.max(node.controller_voters().len()).max(1);
    context.config.default_replication_factor.clamp(1, size)
}

/// Creates `name` with the listener's defaults; a failure shows in the answer as the topic
/// still being unknown (the client retries).
async fn auto_create(context: &Context, name: &str) {
    let node = &context.node;
    match node
        .create_topic(
            name,
            context.config.default_partitions,
            default_replication_factor(context),
        )
        .await
    {
        Ok(()) => tracing::info!(topic = name, "topic auto-created"),
        Err(e) => tracing::debug!(
            topic = name,
            error = &e as &dyn std::error::Error,
            "topic auto-creation failed"
        ),
    }
}

/// A topic asked for by name and not described: unknown, invalid, or not authorized.
fn missing(name: String, code: ResponseError, version: i16) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default().with_error_code(code.code());
    topic.name = Some(TopicName(StrBytes::from_string(name)));
    if version < 8 {
        topic.topic_authorized_operations = i32::MIN;
    }
    topic
}

fn describe(views: &PartitionViews<'_>, topic: &TopicInfo, version: i16) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .zip(0i32..)
        .map(|(assignment, index)| {
            let PartitionView {
                leader,
                epoch,
                replicas,
                isr,
            } = views.of(assignment.group, &assignment.replicas);
            let mut partition = MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_replica_nodes(replicas)
                .with_isr_nodes(isr);
            match leader {
                Some(leader) => {
                    partition.leader_id = broker_id(leader);
                    if version >= 7 {
                        partition.leader_epoch = epoch;
                    }
                }
                None => {
                    partition.leader_id = BrokerId(-1);
                    partition.error_code = ResponseError::LeaderNotAvailable.code();
                }
            }
            partition
        })
        .collect();
    let mut described = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_partitions(partitions);
    if version >= 10 {
        described.topic_id = topic_id(topic);
    }
    if version >= 1 {
        described.is_internal = topic.name == quipu_groups::OFFSETS_TOPIC;
    }
    if version < 8 {
        described.topic_authorized_operations = i32::MIN;
    }
    described
}
