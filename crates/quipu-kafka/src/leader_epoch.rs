//! OffsetForLeaderEpoch: where a leader epoch (Raft term) ends in the leader's log, so that a
//! client that read under an older leader can tell whether the log it read from was truncated.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use quipu_meta::acls::Operation;
use quipu_node::Principal;

use crate::authorize;
use crate::error::fetch_error;
use crate::metadata::{check_leader_epoch, kafka_offset, led_replica};
use crate::server::Context;

pub(crate) async fn handle(
    context: &Context,
    who: &Principal,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let node = &context.node;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let allowed = authorize::topic(context, who, Operation::Describe, &name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let answer = EpochEndOffset::default().with_partition(wanted.partition);
            let replica = if allowed {
                led_replica(node, Some(&name), wanted.partition).and_then(|replica| {
                    check_leader_epoch(&replica, wanted.current_leader_epoch).map(|()| replica)
                })
            } else {
                Err(kafka_protocol::ResponseError::TopicAuthorizationFailed)
            };
            let answer = match replica {
                Err(error) => answer.with_error_code(error.code()),
                Ok(replica) => {
                    let epoch = u64::try_from(wanted.leader_epoch).unwrap_or(0);
                    match replica.end_offset_for_epoch(epoch).await {
                        // Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET.
                        Ok(None) => answer.with_leader_epoch(-1).with_end_offset(-1),
                        Ok(Some((found, end))) => answer
                            .with_leader_epoch(i32::try_from(found).unwrap_or(i32::MAX))
                            .with_end_offset(kafka_offset(end)),
                        Err(e) => answer.with_error_code(fetch_error(&e).code()),
                    }
                }
            };
            partitions.push(answer);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
