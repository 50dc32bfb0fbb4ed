//! A partition's idempotent sender: up to [`IN_FLIGHT_MAX`] batches on their way at once, each
//! numbered as the next of the producer's sequence and retried until acknowledged or its
//! delivery timeout (the partition writes it once however often it arrives), and acknowledged
//! strictly in order. Rules: `docs/protocol/idempotence.md`.
//!
//! - A batch refused as out of order was not written: it overtook one still on its way, or one
//!   before it failed. It is sent again, first in line, once the batches before it are settled.
//! - A batch that fails for good (its outcome unknown, or refused as invalid after later batches
//!   were numbered) ends its producer id: no sequence number after it is used for new records.
//!   The sender stops taking batches until every batch on its way under that producer id is
//!   settled; those refused as out of order go out again, in order, under a new producer id, as
//!   do later batches.
//! - A batch refused because the partition does not know the producer (expired) or fences its
//!   epoch goes out again under a new producer id.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::producer::{Acked, Closed, Hold, ProducerConfig, Waiter, resolve};
use crate::{Client, ClientError};

/// Most batches of one partition on their way at once (Kafka's limit for idempotence).
pub const IN_FLIGHT_MAX: usize = 5;

/// Times a batch refused by the sequence rules is sent again before it fails.
const RESENDS_MAX: u32 = 10;

/// The producer id a producer's partitions start under: taken once, at the first batch of any
/// of them (Kafka's producer has one id and a sequence per partition). A partition whose id
/// ends takes a new one of its own. Safe because a producer has one sender per partition for
/// its whole life (`Producer::close` never replaces one): no partition's sequence under the
/// shared id starts from 0 twice, which the partition would take for retries of old batches.
pub(crate) type SharedId = std::sync::Arc<tokio::sync::OnceCell<(i64, i16)>>;

/// The producer id a sender numbers its batches under, and the next sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sequence {
    id: i64,
    epoch: i16,
    next: i32,
}

/// A batch on its way.
struct InFlight {
    task: JoinHandle<Result<u64, ClientError>>,
    bytes: Bytes,
    /// The producer id and epoch it carries.
    stamp: (i64, i16),
    records: i32,
    waiters: Vec<Waiter>,
    resends: u32,
    /// When its first request left.
    sent_at: std::time::Instant,
    /// Its records' room in the producer's buffer and its place among the partition's
    /// outstanding batches, given back when it is dropped (settled).
    _hold: Hold,
}

struct Sender {
    client: Client,
    config: ProducerConfig,
    /// The producer's id, until this sender has used it.
    first_id: Option<SharedId>,
    topic: String,
    partition: u32,
    sequence: Option<Sequence>,
    /// The producer id and epoch of the last batch acknowledged: once the partition acknowledged
    /// a batch under the current one, it knows the producer, and a later batch's refusal as
    /// unknown came from an attempt that overtook the batches before it.
    acknowledged: Option<(i64, i16)>,
}

/// Runs the sender of one partition until its queue closes and every batch is settled.
pub(crate) async fn run(
    client: Client,
    config: ProducerConfig,
    first_id: SharedId,
    topic: String,
    partition: u32,
    mut queue: mpsc::Receiver<Closed>,
) {
    let window = config.max_in_flight.clamp(1, IN_FLIGHT_MAX);
    let mut sender = Sender {
        client,
        config,
        first_id: Some(first_id),
        topic,
        partition,
        sequence: None,
        acknowledged: None,
    };
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        // New batches only under the current producer id: while batches of an older one are on
        // their way, their fate decides where the sequence goes on.
        let current = sender.sequence.map(|s| (s.id, s.epoch));
        let taking =
            open && in_flight.len() < window && in_flight.iter().all(|f| Some(f.stamp) == current);
        tokio::select! {
            biased;
            done = async { (&mut in_flight.front_mut().expect("not empty").task).await },
                if !in_flight.is_empty() =>
            {
                let flight = in_flight.pop_front().expect("not empty");
                let result = done.unwrap_or_else(|e| {
                    Err(ClientError::Other(format!("the send task failed: {e}")))
                });
                if let Some(again) = sender.settle(flight, result).await {
                    in_flight.push_front(again);
                }
            }
            closed = queue.recv(), if taking => match closed {
                None => open = false,
                Some(closed) => {
                    if let Some(flight) = sender.start(closed).await {
                        in_flight.push_back(flight);
                    }
                }
            },
        }
    }
}

impl Sender {
    /// Numbers a new batch as the next of the sequence (taking a producer id first if there is
    /// none) and sends it; `None` if it failed at once (its waiters are answered).
    async fn start(&mut self, closed: Closed) -> Option<InFlight> {
        let Closed {
            builder,
            waiters,
            hold,
        } = closed;
        let records = i32::try_from(builder.len()).unwrap_or(i32::MAX);
        let sequence = match self.sequence().await {
            Ok(sequence) => sequence,
            Err(e) => {
                resolve(waiters, Err(e), self.partition);
                return None;
            }
        };
        let built = builder
            .with_producer(sequence.id, sequence.epoch, sequence.next)
            .build();
        let bytes = match built {
            Ok(bytes) => bytes,
            Err(e) => {
                let error =
                    ClientError::InvalidArgument(format!("cannot build a record batch: {e}"));
                resolve(waiters, Err(error), self.partition);
                return None;
            }
        };
        self.advance(records);
        Some(InFlight {
            task: self.send(bytes.clone()),
            bytes,
            stamp: (sequence.id, sequence.epoch),
            records,
            waiters,
            resends: 0,
            sent_at: std::time::Instant::now(),
            _hold: hold,
        })
    }

    /// The current sequence: the producer's id at first, then a new id each time one ends.
    async fn sequence(&mut self) -> Result<Sequence, ClientError> {
        if let Some(sequence) = self.sequence {
            return Ok(sequence);
        }
        let (id, epoch) = match &self.first_id {
            Some(shared) => {
                *shared
                    .get_or_try_init(|| self.client.init_producer_id())
                    .await?
            }
            None => self.client.init_producer_id().await?,
        };
        self.first_id = None;
        let sequence = Sequence { id, epoch, next: 0 };
        self.sequence = Some(sequence);
        Ok(sequence)
    }

    fn advance(&mut self, records: i32) {
        if let Some(sequence) = self.sequence.as_mut() {
            sequence.next = quipu_record::add_sequence(sequence.next, records);
        }
    }

    fn send(&self, bytes: Bytes) -> JoinHandle<Result<u64, ClientError>> {
        let (client, topic) = (self.client.clone(), self.topic.clone());
        let (partition, acks, patience) = (
            self.partition,
            self.config.acks,
            self.config.delivery_timeout,
        );
        tokio::spawn(async move {
            client
                .produce_idempotent(&topic, partition, bytes, acks, patience)
                .await
        })
    }

    /// Answers the oldest batch on its way with `result`, or returns it to be sent again first.
    async fn settle(
        &mut self,
        mut flight: InFlight,
        result: Result<u64, ClientError>,
    ) -> Option<InFlight> {
        let current = self.sequence.map(|s| (s.id, s.epoch));
        tracing::debug!(
            partition = self.partition,
            stamp = ?flight.stamp,
            ?current,
            acknowledged = ?self.acknowledged,
            resends = flight.resends,
            result = ?result,
            "settling a batch"
        );
        match result {
            Ok(offset) => {
                self.acknowledged = Some(flight.stamp);
                let acked = Acked {
                    base: Some(offset),
                    sent_at: flight.sent_at,
                };
                resolve(flight.waiters, Ok(acked), self.partition);
                None
            }
            // Not written. Under the current producer id it overtook a batch that was still on
            // its way (all before it are settled now): the same bytes again. So too a refusal
            // of the producer as unknown once a batch before it was acknowledged under the same
            // id: the partition knows the producer now; that attempt may have arrived before its
            // first batch did (renumbering it under a new id would let it overtake for good).
            // Once only: refused again, the partition has forgotten the producer (expired).
            Err(ClientError::OutOfOrderSequence(_))
                if flight.resends < RESENDS_MAX && Some(flight.stamp) == current =>
            {
                flight.resends += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                flight.task = self.send(flight.bytes.clone());
                Some(flight)
            }
            Err(ClientError::ProducerRefused(_))
                if flight.resends == 0
                    && Some(flight.stamp) == current
                    && self.acknowledged == current =>
            {
                flight.resends += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                flight.task = self.send(flight.bytes.clone());
                Some(flight)
            }
            // Not written, under an older producer id (one before it failed for good), or the
            // partition refused the producer itself: renumber it under a new one.
            Err(ClientError::OutOfOrderSequence(_) | ClientError::ProducerRefused(_))
                if flight.resends < RESENDS_MAX =>
            {
                if Some(flight.stamp) == current {
                    self.sequence = None; // the partition refuses this producer id
                }
                flight.resends += 1;
                let sequence = match self.sequence().await {
                    Ok(sequence) => sequence,
                    Err(e) => {
                        resolve(flight.waiters, Err(e), self.partition);
                        return None;
                    }
                };
                let mut bytes = flight.bytes.to_vec();
                if let Err(e) = quipu_record::set_producer(
                    &mut bytes,
                    sequence.id,
                    sequence.epoch,
                    sequence.next,
                ) {
                    let error =
                        ClientError::InvalidArgument(format!("cannot renumber a batch: {e}"));
                    resolve(flight.waiters, Err(error), self.partition);
                    return None;
                }
                self.advance(flight.records);
                flight.bytes = Bytes::from(bytes);
                flight.stamp = (sequence.id, sequence.epoch);
                flight.task = self.send(flight.bytes.clone());
                Some(flight)
            }
            Err(error) => {
                // Its outcome is unknown, or it was refused and the batches numbered after it
                // would now leave a gap: either way the sequence cannot go on under this
                // producer id. Batches after it that the partition refuses as out of order are
                // renumbered under a new one.
                if Some(flight.stamp) == current {
                    self.sequence = None;
                }
                resolve(flight.waiters, Err(error), self.partition);
                None
            }
        }
    }
}
