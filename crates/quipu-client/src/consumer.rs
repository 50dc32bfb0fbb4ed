//! [`Consumer`]: reads one partition from a starting point, following leader changes.

use std::time::Duration;

use bytes::Bytes;
use quipu_proto::v1::{FetchRequest, FetchResponse};
use quipu_record::{BatchHeader, decode_records};

use crate::error::{Failure, classify};
use crate::{Client, ClientError};

/// Most bytes a record batch may decompress to.
const DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most bytes of batches the server puts in one fetch message for a consumer.
const FETCH_BYTES: u32 = 4 * 1024 * 1024;
/// How long the server holds a fetch waiting for new records.
const FETCH_WAIT_MS: u32 = 500;

/// Where a consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The partition's first offset (its log start).
    Earliest,
    /// The end: only records produced from now on.
    Latest,
    /// This offset.
    Offset(u64),
    /// The first record whose timestamp is at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

/// One record as consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: std::sync::Arc<str>,
    /// Partition number.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Key, `None` when null.
    pub key: Option<Bytes>,
    /// Value, `None` when null.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Reads one partition in offset order.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    topic: String,
    /// The topic, shared by the records returned.
    topic_name: std::sync::Arc<str>,
    partition: u32,
    next: u64,
    follow: bool,
    stream: Option<tonic::Streaming<FetchResponse>>,
}

impl Consumer {
    /// A consumer of `topic`/`partition` from `start`. With `follow`, [`Consumer::next_batch`]
    /// waits for new records at the end; without, it returns `None` there.
    pub async fn new(
        client: &Client,
        topic: &str,
        partition: u32,
        start: StartAt,
        follow: bool,
    ) -> Result<Consumer, ClientError> {
        let next = client.list_offsets(topic, partition, start).await?;
        Ok(Consumer {
            client: client.clone(),
            topic: topic.to_string(),
            topic_name: std::sync::Arc::from(topic),
            partition,
            next,
            follow,
            stream: None,
        })
    }

    /// The offset of the next record this consumer returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    async fn open(&mut self) -> Result<tonic::Streaming<FetchResponse>, ClientError> {
        let request = FetchRequest {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.next,
            min_bytes: 1,
            max_wait_ms: FETCH_WAIT_MS,
            max_bytes: FETCH_BYTES,
            follow: self.follow,
        };
        self.client
            .on_leader(&self.topic, self.partition, true, |mut c| {
                let request = request.clone();
                async move { c.fetch(request).await }
            })
            .await
    }

    /// The next records in offset order (never empty). `Ok(None)`: a consumer that does not
    /// follow reached the end of the committed records.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<ConsumedRecord>>, ClientError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut stream = match self.stream.take() {
                Some(stream) => stream,
                None => self.open().await?,
            };
            match stream.message().await {
                Ok(Some(message)) => {
                    self.stream = Some(stream);
                    let records = self.decode(&message)?;
                    if !records.is_empty() {
                        return Ok(Some(records));
                    }
                }
                Ok(None) if !self.follow => return Ok(None),
                Ok(None) => {} // the server ended a following stream: open another
                Err(status) => match classify(&status, true) {
                    Failure::Fatal(e) => return Err(e),
                    Failure::NotLeader(_) | Failure::Retry(_) => {
                        // The leader changed or went away: find it again, after a pause.
                        self.client.set_leader(&self.topic, self.partition, None);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                },
            }
        }
    }

    fn decode(&mut self, message: &FetchResponse) -> Result<Vec<ConsumedRecord>, ClientError> {
        decode_batches(
            &self.topic_name,
            self.partition,
            &message.record_batches,
            &mut self.next,
        )
    }
}

/// The records of `batches` (of `topic`/`partition`, in offset order) from offset `next` on;
/// moves `next` past the last batch. Batches come whole, so the first may begin before `next`.
pub(crate) fn decode_batches(
    topic: &std::sync::Arc<str>,
    partition: u32,
    batches: &[Bytes],
    next: &mut u64,
) -> Result<Vec<ConsumedRecord>, ClientError> {
    let mut out = Vec::new();
    for batch in batches {
        let header = BatchHeader::parse(batch)
            .map_err(|e| ClientError::Other(format!("a fetched batch does not parse: {e}")))?;
        let records = decode_records(batch, DECOMPRESSED_BYTES_MAX)
            .map_err(|e| ClientError::Other(format!("a fetched batch does not decode: {e}")))?;
        for record in records {
            let Ok(offset) = u64::try_from(record.offset(header.base_offset)) else {
                continue;
            };
            if offset < *next {
                continue;
            }
            out.push(ConsumedRecord {
                topic: std::sync::Arc::clone(topic),
                partition,
                offset,
                timestamp_ms: record.timestamp(header.base_timestamp),
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|h| (h.key, h.value))
                    .collect(),
            });
        }
        let end = u64::try_from(header.base_offset)
            .unwrap_or(0)
            .saturating_add(header.offset_count());
        *next = (*next).max(end);
    }
    Ok(out)
}
