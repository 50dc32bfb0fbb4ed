//! ListOffsets: the log start offset, the high watermark, the first offset at or after a
//! timestamp, or the record with the largest timestamp (v7+), from this node's replicas that lead.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use quipu_node::GroupId;

use crate::error::fetch_error;
use crate::metadata::group_of;
use crate::server::Context;

/// Kafka's special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub(crate) async fn handle(
    context: &Context,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let node = &context.node;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(wanted.partition_index);
            let group = group_of(node, &name, wanted.partition_index).map(|(group, _)| group);
            let replica = group.and_then(|g| node.partition(GroupId(g)));
            let response = match (group, replica) {
                (None, _) => {
                    response.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                }
                (Some(_), Some(replica)) if replica.is_leader() => {
                    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                    let mut response = match wanted.timestamp {
                        LATEST => response.with_offset(signed(replica.high_watermark().0)),
                        EARLIEST => response.with_offset(signed(replica.log_start_offset().0)),
                        MAX_TIMESTAMP if version >= 7 => match replica.max_timestamp_offset().await
                        {
                            Ok(Some((offset, timestamp))) => response
                                .with_offset(signed(offset.0))
                                .with_timestamp(timestamp),
                            Ok(None) => response,
                            Err(e) => response.with_error_code(fetch_error(&e).code()),
                        },
                        at if at >= 0 => match replica.offset_for_timestamp(at).await {
                            // None at or after it: Kafka answers offset -1.
                            Ok(offset) if offset >= replica.high_watermark() => response,
                            Ok(offset) => response.with_offset(signed(offset.0)),
                            Err(e) => response.with_error_code(fetch_error(&e).code()),
                        },
                        _ => response.with_error_code(ResponseError::InvalidRequest.code()),
                    };
                    if version >= 4 && response.error_code == 0 {
                        response.leader_epoch = replica.leader_epoch();
                    }
                    response
                }
                (Some(_), _) => response.with_error_code(ResponseError::NotLeaderOrFollower.code()),
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
