//! FindCoordinator, OffsetCommit and OffsetFetch: the group coordinator
//! (`NodeHandle::find_coordinator`, `commit_offsets`, `fetch_offsets`) under Kafka's messages.
//! Behaviour: `docs/protocol/groups.md`.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use quipu_meta::acls::Operation;
use quipu_node::{CommitRefused, CommittedOffset, OffsetCommit, Principal};

use crate::authorize;

use crate::error::coordinator_error;
use crate::metadata::{broker_id, host_port};
use crate::server::Context;

/// FindCoordinator key type of a consumer group (1 is a transactional id).
const KEY_TYPE_GROUP: i8 = 0;

pub(crate) async fn find_coordinator(
    context: &Context,
    who: &Principal,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if version >= 4 {
        request.coordinator_keys
    } else {
        vec![request.key]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        coordinators.push(coordinator_of(context, who, request.key_type, key).await);
    }
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let Some(found) = coordinators.pop() else {
        return FindCoordinatorResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code());
    };
    let message = if version >= 1 {
        found.error_message
    } else {
        None
    };
    FindCoordinatorResponse::default()
        .with_error_code(found.error_code)
        .with_error_message(message)
        .with_node_id(found.node_id)
        .with_host(found.host)
        .with_port(found.port)
}

/// The coordinator of one key, or why there is none (node -1, empty host, port -1).
async fn coordinator_of(
    context: &Context,
    who: &Principal,
    key_type: i8,
    key: StrBytes,
) -> Coordinator {
    let refused = |key: StrBytes, error: ResponseError, message: String| {
        Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(-1))
            .with_port(-1)
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if key_type != KEY_TYPE_GROUP {
        return refused(
            key,
            ResponseError::InvalidRequest,
            "transactions are not supported: there is no transaction coordinator".into(),
        );
    }
    if !authorize::group(context, who, Operation::Describe, &key) {
        return refused(
            key,
            ResponseError::GroupAuthorizationFailed,
            "Group authorization failed.".into(),
        );
    }
    match context.node.find_coordinator(&key).await {
        Ok(node) => match host_port(&node.kafka_addr) {
            Some((host, port)) => Coordinator::default()
                .with_key(key)
                .with_node_id(broker_id(node.id))
                .with_host(StrBytes::from_string(host))
                .with_port(port),
            None => refused(
                key,
                ResponseError::CoordinatorNotAvailable,
                format!("node {} serves no Kafka listener", node.id),
            ),
        },
        Err(e) => {
            tracing::debug!(group = %key.as_str(), error = &e as &dyn std::error::Error, "no coordinator for a group");
            refused(key, coordinator_error(&e), e.to_string())
        }
    }
}

/// OffsetCommit: READ on the group, and on each topic (a topic the client may not read is
/// TOPIC_AUTHORIZATION_FAILED; the others are committed).
pub(crate) async fn offset_commit(
    context: &Context,
    who: &Principal,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    if !authorize::group(context, who, Operation::Read, &request.group_id) {
        return offset_commit_refused(request, ResponseError::GroupAuthorizationFailed);
    }
    let readable: Vec<bool> = request
        .topics
        .iter()
        .map(|topic| authorize::topic(context, who, Operation::Read, &topic.name))
        .collect();
    let offsets: Vec<OffsetCommit> = request
        .topics
        .iter()
        .zip(&readable)
        .filter(|(_, readable)| **readable)
        .flat_map(|(topic, _)| {
            topic.partitions.iter().map(|p| OffsetCommit {
                topic: topic.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            })
        })
        .collect();
    let results = context
        .node
        .commit_offsets(
            &request.group_id.0,
            request.generation_id_or_member_epoch,
            &request.member_id,
            request.group_instance_id.as_deref(),
            &offsets,
        )
        .await;
    let code_of = |at: usize| -> i16 {
        match &results {
            Err(e) => coordinator_error(e).code(),
            Ok(results) => match results.get(at) {
                Some(Ok(())) => 0,
                Some(Err(CommitRefused::MetadataTooLarge { .. })) => {
                    ResponseError::OffsetMetadataTooLarge.code()
                }
                Some(Err(CommitRefused::Invalid { .. })) | None => {
                    ResponseError::InvalidCommitOffsetSize.code()
                }
            },
        }
    };
    if let Err(e) = &results {
        tracing::debug!(group = %request.group_id.0.as_str(), error = e as &dyn std::error::Error, "offset commit refused");
    }
    let mut at = 0;
    let topics = request
        .topics
        .into_iter()
        .zip(readable)
        .map(|(topic, readable)| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let code = if readable {
                        at += 1;
                        code_of(at - 1)
                    } else {
                        ResponseError::TopicAuthorizationFailed.code()
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Every partition of an OffsetCommit answered with `error`.
fn offset_commit_refused(
    request: OffsetCommitRequest,
    error: ResponseError,
) -> OffsetCommitResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's answer: its offsets by topic, each with the topic's error, or the group's error.
struct Fetched {
    error: i16,
    topics: Vec<(String, Vec<CommittedOffset>, i16)>,
}

/// The committed offsets of `group` for `topics` (`None`: all it committed), grouped by topic
/// in request order (or name order). DESCRIBE on the group, and on each topic: a topic asked for
/// that `who` may not describe is TOPIC_AUTHORIZATION_FAILED; with none asked for, such topics
/// are left out.
async fn fetch_group(
    context: &Context,
    who: &Principal,
    group: &GroupId,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Fetched {
    if !authorize::group(context, who, Operation::Describe, group) {
        return Fetched {
            error: ResponseError::GroupAuthorizationFailed.code(),
            topics: Vec::new(),
        };
    }
    let asked = topics.is_some();
    let partitions: Option<Vec<(String, i32)>> = topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|(name, partitions)| partitions.iter().map(|p| (name.0.to_string(), *p)))
            .collect()
    });
    match context
        .node
        .fetch_offsets(&group.0, partitions.as_deref())
        .await
    {
        Err(e) => {
            tracing::debug!(group = %group.0.as_str(), error = &e as &dyn std::error::Error, "offset fetch refused");
            Fetched {
                error: coordinator_error(&e).code(),
                topics: Vec::new(),
            }
        }
        Ok(offsets) => {
            let mut topics: Vec<(String, Vec<CommittedOffset>, i16)> = Vec::new();
            for offset in offsets {
                match topics.last_mut() {
                    Some((name, list, _)) if *name == offset.topic => list.push(offset),
                    _ => topics.push((offset.topic.clone(), vec![offset], 0)),
                }
            }
            for (name, offsets, error) in &mut topics {
                if !authorize::topic(context, who, Operation::Describe, name) {
                    *error = ResponseError::TopicAuthorizationFailed.code();
                    for offset in offsets {
                        offset.value = None;
                    }
                }
            }
            if !asked {
                topics.retain(|(_, _, error)| *error == 0);
            }
            Fetched { error: 0, topics }
        }
    }
}

/// Kafka's fields of one committed offset (-1, -1, "" for none).
fn fields(offset: &CommittedOffset) -> (i64, i32, StrBytes) {
    match &offset.value {
        Some(value) => (
            value.offset,
            value.leader_epoch,
            StrBytes::from_string(value.metadata.clone()),
        ),
        None => (-1, -1, StrBytes::default()),
    }
}

pub(crate) async fn offset_fetch(
    context: &Context,
    who: &Principal,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for group in request.groups {
            let topics = group.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let fetched = fetch_group(context, who, &group.group_id, topics).await;
            let topics = fetched
                .topics
                .into_iter()
                .map(|(name, offsets, error)| {
                    let partitions = offsets
                        .iter()
                        .map(|o| {
                            let (offset, epoch, metadata) = fields(o);
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(o.partition)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(metadata))
                                .with_error_code(error)
                        })
                        .collect();
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(partitions)
                })
                .collect();
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(group.group_id)
                    .with_error_code(fetched.error)
                    .with_topics(topics),
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let fetched = fetch_group(context, who, &request.group_id, topics).await;
    let topics = fetched
        .topics
        .into_iter()
        .map(|(name, offsets, error)| {
            let partitions = offsets
                .iter()
                .map(|o| {
                    let (offset, epoch, metadata) = fields(o);
                    let partition = OffsetFetchResponsePartition::default()
                        .with_partition_index(o.partition)
                        .with_committed_offset(offset)
                        .with_metadata(Some(metadata))
                        .with_error_code(error);
                    if version >= 5 {
                        partition.with_committed_leader_epoch(epoch)
                    } else {
                        partition
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default()
        .with_error_code(fetched.error)
        .with_topics(topics)
}
