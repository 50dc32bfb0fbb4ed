//! Fetch: committed batches as stored (never decoded or re-encoded), from this node's replicas
//! that lead; a long poll until `min_bytes` are there or `max_wait_ms` passed. No fetch sessions:
//! `session_id` is 0 and every requested partition is answered.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use quipu_meta::acls::Operation;
use quipu_node::{Partition, Principal};
use quipu_storage::Offset;

use crate::authorize;
use crate::error::fetch_error;
use crate::metadata::{check_leader_epoch, kafka_offset, led_replica, topic_named_by_id};
use crate::server::Context;

/// Longest long poll, whatever the client asks.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// Most bytes of batches in one response (Kafka's `fetch.max.bytes` default, 50 MiB).
const FETCH_RESPONSE_BYTES_MAX: u64 = 50 * 1024 * 1024;

/// One requested partition, resolved once per request.
struct Wanted {
    index: i32,
    offset: i64,
    max_bytes: u64,
    leader_epoch: i32,
    replica: Result<Arc<Partition>, ResponseError>,
}

/// A fetch answer: the response, whose records of [`crate::response::SPAN_BYTES_MIN`] bytes or
/// more are span markers (`response::span_marker`), and the entries' bytes they stand for, in the
/// order the response holds the markers. Encoded only by `api::encode_fetch`, which puts the
/// entries' bytes in place of the markers.
pub(crate) struct FetchAnswer {
    pub(crate) response: FetchResponse,
    pub(crate) spans: Vec<Vec<Bytes>>,
}

/// The records of one partition read as `entries` (`bytes` of them): a span marker standing
/// for the entries' own bytes (with that span), or, if short or past the marker's length, the
/// records in one buffer (the entry's own for one entry, else joined).
fn records_of(entries: Vec<quipu_storage::Entry>, bytes: u64) -> (Bytes, Option<Vec<Bytes>>) {
    let len = usize::try_from(bytes).unwrap_or(usize::MAX);
    if let Some(marker) =
        crate::response::span_marker(len).filter(|_| len >= crate::response::SPAN_BYTES_MIN)
    {
        return (
            marker,
            Some(entries.into_iter().map(|e| e.payload).collect()),
        );
    }
    match entries.as_slice() {
        [] => (Bytes::new(), None),
        [one] => (one.payload.clone(), None),
        many => {
            let mut joined = BytesMut::with_capacity(len);
            for entry in many {
                joined.extend_from_slice(&entry.payload);
            }
            (joined.freeze(), None)
        }
    }
}

pub(crate) async fn handle(
    context: &Context,
    who: &Principal,
    request: FetchRequest,
    version: i16,
) -> FetchAnswer {
    let node = &context.node;
    let wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(FETCH_WAIT_MAX);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = u64::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = u64::try_from(request.max_bytes)
        .unwrap_or(0)
        .clamp(1, FETCH_RESPONSE_BYTES_MAX);
    let topics: Vec<(
        kafka_protocol::messages::fetch_request::FetchTopic,
        Vec<Wanted>,
    )> = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = if version >= 13 {
                topic_named_by_id(node, topic.topic_id)
            } else {
                Some(topic.topic.0.to_string())
            };
            let readable = name
                .as_deref()
                .is_none_or(|name| authorize::topic(context, who, Operation::Read, name));
            let wanted = topic
                .partitions
                .iter()
                .map(|p| Wanted {
                    index: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: u64::try_from(p.partition_max_bytes).unwrap_or(0),
                    leader_epoch: p.current_leader_epoch,
                    replica: if readable {
                        led_replica(node, name.as_deref(), p.partition)
                    } else {
                        Err(ResponseError::TopicAuthorizationFailed)
                    },
                })
                .collect();
            (topic, wanted)
        })
        .collect();
    let mut watches: Vec<tokio::sync::watch::Receiver<u64>> = topics
        .iter()
        .flat_map(|(_, wanted)| wanted.iter())
        .filter_map(|w| w.replica.as_ref().ok().map(|r| r.watch_high_watermark()))
        .collect();
    loop {
        for watch in &mut watches {
            watch.borrow_and_update();
        }
        let (responses, spans, bytes, errors) = read_all(&topics, max_bytes, version).await;
        let done = bytes >= min_bytes.max(1)
            || errors
            || watches.is_empty()
            || tokio::time::Instant::now() >= deadline;
        // Not enough yet: wait until a high watermark moves, at most until the deadline. If
        // none moved (max_wait passed, or a replica stopped), this pass is the answer.
        let changes = watches.iter_mut().map(|w| Box::pin(w.changed()));
        if done
            || !matches!(
                tokio::time::timeout_at(deadline, select_all(changes)).await,
                Ok((Ok(()), _, _))
            )
        {
            quipu_node::telemetry::fetched(quipu_node::telemetry::Api::Kafka, bytes);
            return FetchAnswer {
                response: FetchResponse::default().with_responses(responses),
                spans,
            };
        }
    }
}

/// One pass over every partition; returns the answers, the spans of their span markers in
/// order, the bytes of batches in them, and whether any partition has an error (Kafka answers
/// at once then).
async fn read_all(
    topics: &[(
        kafka_protocol::messages::fetch_request::FetchTopic,
        Vec<Wanted>,
    )],
    max_bytes: u64,
    version: i16,
) -> (Vec<FetchableTopicResponse>, Vec<Vec<Bytes>>, u64, bool) {
    let mut total = 0u64;
    let mut errors = false;
    let mut spans = Vec::new();
    let mut responses = Vec::with_capacity(topics.len());
    for (topic, wanted) in topics {
        let mut partitions = Vec::with_capacity(wanted.len());
        for w in wanted {
            let (data, bytes, span) =
                read_one(w, max_bytes.saturating_sub(total), total == 0).await;
            spans.extend(span);
            errors |= data.error_code != 0;
            total += bytes;
            partitions.push(data);
        }
        let mut response = FetchableTopicResponse::default().with_partitions(partitions);
        if version >= 13 {
            response.topic_id = topic.topic_id;
        } else {
            response.topic = topic.topic.clone();
        }
        responses.push(response);
    }
    (responses, spans, total, errors)
}

/// Reads one partition within `budget` bytes; `first` says whether a first batch larger than
/// the budget may come whole (KIP-74: only the first batch of the response).
async fn read_one(
    wanted: &Wanted,
    budget: u64,
    first: bool,
) -> (PartitionData, u64, Option<Vec<Bytes>>) {
    let data = PartitionData::default().with_partition_index(wanted.index);
    let replica = match &wanted.replica {
        Ok(replica) => replica,
        Err(error) => return (data.with_error_code(error.code()), 0, None),
    };
    if let Err(error) = check_leader_epoch(replica, wanted.leader_epoch) {
        return (data.with_error_code(error.code()), 0, None);
    }
    let high_watermark = replica.high_watermark();
    let log_start = replica.log_start_offset();
    let data = data
        .with_high_watermark(kafka_offset(high_watermark))
        .with_last_stable_offset(kafka_offset(high_watermark))
        .with_log_start_offset(kafka_offset(log_start));
    let offset = match u64::try_from(wanted.offset) {
        Ok(offset) if (log_start.0..=replica.fetch_offset_max().0).contains(&offset) => offset,
        _ => {
            return (
                data.with_error_code(ResponseError::OffsetOutOfRange.code()),
                0,
                None,
            );
        }
    };
    let limit = wanted.max_bytes.min(budget);
    if limit == 0 && !first {
        return (data, 0, None);
    }
    let entries = match replica.fetch(Offset(offset), limit.max(1)).await {
        Ok(entries) => entries,
        Err(e) => return (data.with_error_code(fetch_error(&e).code()), 0, None),
    };
    let bytes: u64 = entries.iter().map(|e| e.payload.len() as u64).sum();
    if bytes > budget && !first {
        return (data, 0, None); // the rest of the response has no room for its first batch
    }
    let (records, span) = records_of(entries, bytes);
    (data.with_records(Some(records)), bytes, span)
}
