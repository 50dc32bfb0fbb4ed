//! DeleteRecords: moves each partition's log start offset up, on the partition's leader, through
//! Raft (`Partition::delete_records`); partitions of one request are handled concurrently.

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use quipu_storage::Offset;

use quipu_meta::acls::Operation;
use quipu_node::Principal;

use crate::authorize;
use crate::error::produce_error;
use crate::metadata::{kafka_offset, led_replica};
use crate::server::Context;

/// Kafka's "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub(crate) async fn handle(
    context: &Context,
    who: &Principal,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let node = &context.node;
    let timeout = crate::produce::write_timeout(request.timeout_ms);
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let allowed = authorize::topic(context, who, Operation::Delete, &name);
        let results = join_all(topic.partitions.into_iter().map(|wanted| {
            let name = &name;
            async move {
                let result = DeleteRecordsPartitionResult::default()
                    .with_partition_index(wanted.partition_index)
                    .with_low_watermark(-1);
                if !allowed {
                    return result.with_error_code(ResponseError::TopicAuthorizationFailed.code());
                }
                let replica = match led_replica(node, Some(name), wanted.partition_index) {
                    Ok(replica) => replica,
                    Err(error) => return result.with_error_code(error.code()),
                };
                let before = match wanted.offset {
                    HIGH_WATERMARK => None,
                    offset => match u64::try_from(offset) {
                        Ok(offset) => Some(Offset(offset)),
                        Err(_) => {
                            return result
                                .with_error_code(ResponseError::OffsetOutOfRange.code());
                        }
                    },
                };
                match tokio::time::timeout(timeout, replica.delete_records(before)).await {
                    Ok(Ok(start)) => result.with_low_watermark(kafka_offset(start)),
                    Ok(Err(e)) => {
                        tracing::debug!(topic = %name, partition = wanted.partition_index, error = &e as &dyn std::error::Error, "kafka delete records refused");
                        result.with_error_code(produce_error(&e).code())
                    }
                    Err(_) => result.with_error_code(ResponseError::RequestTimedOut.code()),
                }
            }
        }))
        .await;
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(results),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
