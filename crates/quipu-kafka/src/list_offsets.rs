//! ListOffsets: the log start offset, the high watermark, the first offset at or after a
//! timestamp, or the record with the largest timestamp (v7+), from this node's replicas that lead.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use quipu_meta::acls::Operation;
use quipu_node::Principal;

use crate::authorize;
use crate::error::fetch_error;
use crate::metadata::{kafka_offset, led_replica};
use crate::server::Context;

/// Kafka's special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub(crate) async fn handle(
    context: &Context,
    who: &Principal,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let node = &context.node;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let allowed = authorize::topic(context, who, Operation::Describe, &name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(wanted.partition_index);
            let replica = if allowed {
                led_replica(node, Some(&name), wanted.partition_index)
            } else {
                Err(ResponseError::TopicAuthorizationFailed)
            };
            let response = match replica {
                Err(error) => response.with_error_code(error.code()),
                Ok(replica) => {
                    let mut response = match wanted.timestamp {
                        LATEST => response.with_offset(kafka_offset(replica.high_watermark())),
                        EARLIEST => response.with_offset(kafka_offset(replica.log_start_offset())),
                        MAX_TIMESTAMP if version >= 7 => match replica.max_timestamp_offset().await
                        {
                            Ok(Some((offset, timestamp))) => response
                                .with_offset(kafka_offset(offset))
                                .with_timestamp(timestamp),
                            Ok(None) => response,
                            Err(e) => response.with_error_code(fetch_error(&e).code()),
                        },
                        at if at >= 0 => match replica.offset_for_timestamp(at).await {
                            // None at or after it: Kafka answers offset -1.
                            Ok(offset) if offset >= replica.high_watermark() => response,
                            Ok(offset) => response.with_offset(kafka_offset(offset)),
                            Err(e) => response.with_error_code(fetch_error(&e).code()),
                        },
                        _ => response.with_error_code(ResponseError::InvalidRequest.code()),
                    };
                    if version >= 4 && response.error_code == 0 {
                        response.leader_epoch = replica.leader_epoch();
                    }
                    response
                }
            };
            partitions.push(response);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
