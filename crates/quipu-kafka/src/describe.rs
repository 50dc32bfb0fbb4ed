//! DescribeTopicPartitions (KIP-966's paginated partition listing) and DescribeLogDirs (what
//! this node stores where).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeLogDirsRequest, DescribeLogDirsResponse, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use quipu_meta::TopicInfo;
use quipu_meta::acls::Operation;
use quipu_node::{GroupId, Principal};

use crate::authorize;

use crate::metadata::{PartitionView, PartitionViews, broker_id, topic_id};
use crate::server::Context;

/// Most partitions one DescribeTopicPartitions answer lists (Kafka's default
/// `max.request.partition.size.limit`); a client asking for more gets this many and a cursor.
pub(crate) const DESCRIBE_PARTITIONS_MAX: usize = 2000;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// DescribeTopicPartitions: every topic `who` may describe, or each asked for (one it may not
/// describe is TOPIC_AUTHORIZATION_FAILED, whether it exists or not).
pub(crate) fn describe_topic_partitions(
    context: &Context,
    who: &Principal,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let node = &context.node;
    let metadata = node.metadata();
    let describable = |name: &str| authorize::topic(context, who, Operation::Describe, name);
    // Topics in name order, as Kafka pages them: those asked for, or every topic.
    let mut names: Vec<String> = if request.topics.is_empty() {
        metadata
            .topics()
            .filter(|t| describable(&t.name))
            .map(|t| t.name.clone())
            .collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| t.name.0.to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let (cursor_topic, cursor_partition) = match &request.cursor {
        Some(cursor) => (
            Some(cursor.topic_name.0.to_string()),
            usize::try_from(cursor.partition_index).unwrap_or(0),
        ),
        None => (None, 0),
    };
    let limit = usize::try_from(request.response_partition_limit)
        .unwrap_or(0)
        .clamp(1, DESCRIBE_PARTITIONS_MAX);
    let mut left = limit;
    let views = PartitionViews::new(node);
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if cursor_topic.as_ref().is_some_and(|start| name < *start) {
            continue;
        }
        let found = metadata.topic(&name).filter(|_| describable(&name));
        let Some(topic) = found else {
            let code = if !describable(&name) {
                ResponseError::TopicAuthorizationFailed
            } else if quipu_meta::valid_topic_name(&name) {
                ResponseError::UnknownTopicOrPartition
            } else {
                ResponseError::InvalidTopicException
            };
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(code.code())
                    .with_name(Some(topic_name(&name))),
            );
            continue;
        };
        if left == 0 {
            next_cursor = Some(Cursor::default().with_topic_name(topic_name(&name)));
            break;
        }
        let first = if cursor_topic.as_deref() == Some(name.as_str()) {
            cursor_partition
        } else {
            0
        };
        let end = topic.partitions.len().min(first.saturating_add(left));
        let partitions = describe_partitions(&views, topic, first..end);
        left -= end.saturating_sub(first);
        if end < topic.partitions.len() {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(&name))
                    .with_partition_index(i32::try_from(end).unwrap_or(i32::MAX)),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name(&name)))
                .with_topic_id(topic_id(topic))
                .with_partitions(partitions)
                .with_topic_authorized_operations(i32::MIN),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

fn describe_partitions(
    views: &PartitionViews<'_>,
    topic: &TopicInfo,
    range: std::ops::Range<usize>,
) -> Vec<DescribeTopicPartitionsResponsePartition> {
    topic.partitions[range.clone()]
        .iter()
        .zip(range)
        .map(|(assignment, index)| {
            let PartitionView {
                leader,
                epoch,
                replicas,
                isr,
            } = views.of(assignment.group, &assignment.replicas);
            let partition = DescribeTopicPartitionsResponsePartition::default()
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
                .with_replica_nodes(replicas)
                .with_isr_nodes(isr)
                .with_eligible_leader_replicas(None)
                .with_last_known_elr(None);
            match leader {
                Some(leader) => partition
                    .with_leader_id(broker_id(leader))
                    .with_leader_epoch(epoch),
                None => partition
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1)
                    .with_error_code(ResponseError::LeaderNotAvailable.code()),
            }
        })
        .collect()
}

/// DescribeLogDirs: DESCRIBE on the cluster.
pub(crate) fn describe_log_dirs(
    context: &Context,
    who: &Principal,
    request: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    if !authorize::cluster(context, who, Operation::Describe) {
        // Before v3 there is no error code: Kafka answers no log dirs.
        let response = DescribeLogDirsResponse::default();
        return if version >= 3 {
            response.with_error_code(ResponseError::ClusterAuthorizationFailed.code())
        } else {
            response
        };
    }
    let node = &context.node;
    let metadata = node.metadata();
    // (topic, partition) pairs asked for; `None`: every replica this node holds.
    let wanted: Option<Vec<(String, i32)>> = request.topics.map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), *p))
            })
            .collect()
    });
    let mut by_topic: std::collections::BTreeMap<String, Vec<DescribeLogDirsPartition>> =
        std::collections::BTreeMap::new();
    for group in node.partitions() {
        let Some((topic, index)) = metadata
            .partition_of_group(group.0)
            .map(|(topic, at)| (topic.name.clone(), i32::try_from(at).unwrap_or(i32::MAX)))
        else {
            continue;
        };
        if wanted
            .as_ref()
            .is_some_and(|w| !w.iter().any(|(t, p)| *t == topic && *p == index))
        {
            continue;
        }
        let Some(replica) = node.partition(GroupId(group.0)) else {
            continue;
        };
        // What this replica knows is committed and does not hold yet (0 on the leader).
        let lag = replica
            .high_watermark()
            .0
            .saturating_sub(replica.log_end_offset().0);
        by_topic.entry(topic).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(index)
                .with_partition_size(i64::try_from(replica.size_bytes()).unwrap_or(i64::MAX))
                .with_offset_lag(i64::try_from(lag).unwrap_or(i64::MAX)),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_index);
            DescribeLogDirsTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
    let dir = node.data_dir().join("partitions");
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(dir.display().to_string()))
        .with_topics(topics);
    if version >= 4 {
        // -1: unknown.
        let bytes = |read: std::io::Result<u64>| {
            read.ok().and_then(|b| i64::try_from(b).ok()).unwrap_or(-1)
        };
        result = result
            .with_total_bytes(bytes(quipu_node::total_bytes(node.data_dir())))
            .with_usable_bytes(bytes(quipu_node::free_bytes(node.data_dir())));
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}
