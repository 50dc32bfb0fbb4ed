//! Produce: each partition's record batch goes, as the client's bytes, to this node's replica if
//! it leads the partition (validated there before anything is proposed). Partitions of one
//! request are produced concurrently.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use quipu_meta::acls::Operation;
use quipu_node::{GroupId, NodeHandle, Partition, Principal};

use crate::authorize;
use crate::error::produce_error;
use crate::metadata::{group_of, kafka_offset, leader_of, topic_named_by_id};
use crate::server::Context;

/// Longest a write (a produce's acknowledgement, a DeleteRecords commit) waits, whatever the
/// client's `timeout_ms`.
const WRITE_TIMEOUT_MAX: Duration = Duration::from_secs(30);

/// How long a write asked with the client's `timeout_ms` waits: that, within 1 ms and
/// [`WRITE_TIMEOUT_MAX`].
pub(crate) fn write_timeout(timeout_ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0))
        .clamp(Duration::from_millis(1), WRITE_TIMEOUT_MAX)
}

/// A partition of a request, resolved on this node.
enum Target {
    /// This node leads it (as far as it knows).
    Leader(Arc<Partition>),
    /// Another node leads it, or none does yet.
    NotLeader { leader: Option<u64>, epoch: i32 },
    /// No such topic or partition.
    Unknown,
}

fn resolve(node: &NodeHandle, topic: &str, partition: i32) -> Target {
    let Some((group, replicas)) = group_of(node, topic, partition) else {
        return Target::Unknown;
    };
    match node.partition(GroupId(group)) {
        Some(replica) if replica.is_leader() => Target::Leader(replica),
        _ => {
            let (leader, epoch) = leader_of(node, group, &replicas);
            Target::NotLeader { leader, epoch }
        }
    }
}

pub(crate) async fn handle(
    context: &Context,
    who: &Principal,
    request: ProduceRequest,
    version: i16,
) -> ProduceResponse {
    let node = &context.node;
    let acks = request.acks;
    let timeout = write_timeout(request.timeout_ms);
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = if version >= 13 {
            topic_named_by_id(node, topic.topic_id)
        } else {
            Some(topic.name.0.to_string())
        };
        let writable = name
            .as_deref()
            .is_none_or(|name| authorize::topic(context, who, Operation::Write, name));
        let answers = join_all(topic.partition_data.into_iter().map(|data| {
            let name = name.clone();
            async move {
                let index = data.index;
                let response = PartitionProduceResponse::default().with_index(index);
                let Some(name) = name else {
                    return response.with_error_code(ResponseError::UnknownTopicId.code());
                };
                if !writable {
                    return response
                        .with_error_code(ResponseError::TopicAuthorizationFailed.code());
                }
                let started = std::time::Instant::now();
                let bytes = data.records.as_ref().map_or(0, Bytes::len);
                let outcome = produce_one(node, &name, index, acks, data.records, timeout).await;
                quipu_node::telemetry::produced(
                    quipu_node::telemetry::Api::Kafka,
                    matches!(outcome, Outcome::Stored { .. }),
                    bytes,
                    started.elapsed(),
                );
                answer(response, outcome, version)
            }
        }))
        .await;
        let mut response = TopicProduceResponse::default().with_partition_responses(answers);
        if version >= 13 {
            response.topic_id = topic.topic_id;
        } else {
            response.name = topic.name;
        }
        topics.push(response);
    }
    ProduceResponse::default().with_responses(topics)
}

/// What became of one partition's batch.
enum Outcome {
    Stored {
        base_offset: i64,
        log_start_offset: i64,
        /// The time the leader stamped the batch with (LogAppendTime topics).
        log_append_time: Option<i64>,
    },
    Refused(ResponseError),
    NotLeader {
        leader: Option<u64>,
        epoch: i32,
    },
}

async fn produce_one(
    node: &NodeHandle,
    topic: &str,
    index: i32,
    acks: i16,
    records: Option<Bytes>,
    timeout: Duration,
) -> Outcome {
    let replica = match resolve(node, topic, index) {
        Target::Leader(replica) => replica,
        Target::NotLeader { leader, epoch } => return Outcome::NotLeader { leader, epoch },
        Target::Unknown => return Outcome::Refused(ResponseError::UnknownTopicOrPartition),
    };
    let Some(batch) = records.filter(|r| !r.is_empty()) else {
        return Outcome::Refused(ResponseError::CorruptMessage);
    };
    let produced = match acks {
        -1 | 1 => tokio::time::timeout(timeout, replica.produce_stamped(batch, acks == 1)).await,
        // Bounded too: it waits at most for room in the node's produce budget.
        0 => Ok(replica
            .produce_unacknowledged(batch)
            .await
            .map(|()| (quipu_storage::Offset(0), None))),
        _ => return Outcome::Refused(ResponseError::InvalidRequiredAcks),
    };
    match produced {
        Ok(Ok((offset, log_append_time))) => Outcome::Stored {
            base_offset: kafka_offset(offset),
            log_start_offset: kafka_offset(replica.log_start_offset()),
            log_append_time,
        },
        Ok(Err(quipu_node::ProduceError::NotLeader { leader, .. })) => Outcome::NotLeader {
            leader,
            epoch: replica.leader_epoch(),
        },
        Ok(Err(e)) => {
            tracing::debug!(
                topic,
                partition = index,
                error = &e as &dyn std::error::Error,
                "kafka produce refused"
            );
            Outcome::Refused(produce_error(&e))
        }
        Err(_) => Outcome::Refused(ResponseError::RequestTimedOut),
    }
}

fn answer(
    response: PartitionProduceResponse,
    outcome: Outcome,
    version: i16,
) -> PartitionProduceResponse {
    match outcome {
        Outcome::Stored {
            base_offset,
            log_start_offset,
            log_append_time,
        } => {
            // -1: CreateTime (the producer's timestamps stand).
            let response = response
                .with_base_offset(base_offset)
                .with_log_append_time_ms(log_append_time.unwrap_or(-1));
            if version >= 5 {
                response.with_log_start_offset(log_start_offset)
            } else {
                response
            }
        }
        Outcome::Refused(error) => response.with_error_code(error.code()),
        Outcome::NotLeader { leader, epoch } => {
            let response = response.with_error_code(ResponseError::NotLeaderOrFollower.code());
            // KIP-951: the new leader, so the client need not refresh its metadata first.
            match leader.filter(|_| version >= 10) {
                Some(leader) => response.with_current_leader(
                    LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(i32::try_from(leader).unwrap_or(-1)))
                        .with_leader_epoch(epoch),
                ),
                None => response,
            }
        }
    }
}
