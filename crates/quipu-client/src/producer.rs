//! [`Producer`]: batches records per partition (linger, batch bytes), picks partitions as Kafka's
//! default partitioner does, and sends each partition's batches one at a time, in order.
//!
//! The records it holds (open, queued and on their way) are bounded by `buffer_bytes` across
//! every partition, as Kafka's `buffer.memory` bounds a Kafka producer: `send` waits for room
//! (counted as the records' bytes: the batches' buffers and encoded copies on their way add a
//! constant factor). A batch whose linger ran out goes only when none of its partition's
//! batches is outstanding; until then it gathers records (full, it goes at once), so busy
//! partitions send fewer, larger batches.
//!
//! By default it is idempotent (with acks 1 or all): it takes a producer id from the cluster,
//! numbers each partition's records, keeps up to five batches of a partition on their way, and
//! retries a batch whatever the outcome of the last try until it is acknowledged or its delivery
//! timeout passes; the partition writes each batch once (`docs/protocol/idempotence.md`,
//! `crate::idempotent`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quipu_record::{BatchBuilder, Compression};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::{AckLevel, Client, ClientError, partition_for_key};

/// Batches waiting to be sent, per partition, before `send` waits for room.
const QUEUED_BATCHES_MAX: usize = 16;

/// How a producer batches and acknowledges.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more records before it is sent (Kafka's `linger.ms`); if a
    /// batch of its partition is still outstanding then, it goes once none is (or when full).
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes (Kafka's `batch.size`).
    pub batch_bytes: usize,
    /// What each batch waits for.
    pub acks: AckLevel,
    /// Compression of each batch.
    pub compression: Compression,
    /// Whether batches carry a producer id and sequence numbers, and are retried until
    /// acknowledged (Kafka's `enable.idempotence`). Only with acks 1 or all.
    pub idempotent: bool,
    /// How long an idempotent batch is retried before it fails (Kafka's `delivery.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Batches of one partition an idempotent producer keeps on their way at once, 1 to
    /// [`crate::IN_FLIGHT_MAX`] (Kafka's `max.in.flight.requests.per.connection`); they are
    /// acknowledged in order. Full batches fill that window; a batch whose linger ran out waits
    /// until none of its partition's is outstanding. A plain producer sends one at a time.
    pub max_in_flight: usize,
    /// Bytes of records the producer holds at once, across every partition, from `send` until
    /// their batch is acknowledged or fails (Kafka's `buffer.memory`): `send` waits for room. A
    /// record counts its key, value and headers and [`RECORD_OVERHEAD_BYTES`]; one larger than
    /// this is refused.
    pub buffer_bytes: usize,
}

/// What a record counts against [`ProducerConfig::buffer_bytes`] beyond its key, value and
/// headers: about its framing in a batch (length, attributes, deltas, lengths).
pub const RECORD_OVERHEAD_BYTES: usize = 16;

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_bytes: 64 * 1024,
            acks: AckLevel::All,
            compression: Compression::None,
            idempotent: true,
            delivery_timeout: Duration::from_secs(120),
            max_in_flight: crate::IN_FLIGHT_MAX,
            buffer_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Where an acknowledged record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Partition number.
    pub partition: u32,
    /// Its offset (`None` with acks=0).
    pub offset: Option<u64>,
    /// When its batch's first request left (the record waited in the producer until then,
    /// Kafka's record queue time; retries of the batch are counted after it). An idempotent
    /// producer's first batch leaves once the producer has its id: that wait counts before it.
    pub sent_at: std::time::Instant,
    /// When the acknowledgement arrived (for latency measurements).
    pub acknowledged_at: std::time::Instant,
}

/// A batch's acknowledgement: its base offset (`None` with acks=0) and when its first request
/// left.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acked {
    pub(crate) base: Option<u64>,
    pub(crate) sent_at: std::time::Instant,
}

pub(crate) type Waiter = oneshot::Sender<Result<Sent, ClientError>>;

/// A batch being filled.
struct Open {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    /// The room its records take in the producer's buffer, given back when the batch is dropped
    /// (after it is acknowledged or fails).
    room: OwnedSemaphorePermit,
    /// Bytes reserved for its records when it opened (0 if none were), counted in
    /// [`State::reserved`] until it is taken.
    reserved: usize,
    /// Distinguishes this batch from later ones of the same partition (for the linger timer).
    generation: u64,
    /// Its linger ran out while batches of its partition were outstanding: the last of them to
    /// settle sends it ([`State::settle`]).
    lingered: bool,
}

/// A batch handed to its partition's sender.
pub(crate) struct Closed {
    pub(crate) builder: BatchBuilder,
    pub(crate) waiters: Vec<Waiter>,
    pub(crate) hold: Hold,
}

/// What a closed batch holds until it is dropped (acknowledged, or failed for good): its
/// records' room in the producer's buffer, and its place among its partition's outstanding
/// batches (the last of them to go sends a batch whose linger ran out meanwhile). It keeps the
/// producer's state alive, so a batch held back that way is sent even if every `Producer` was
/// dropped meanwhile (the state holds the partitions' queues, whose sender tasks take every
/// closed batch: the cycle ends with the last of them).
pub(crate) struct Hold {
    _room: OwnedSemaphorePermit,
    state: Arc<Mutex<State>>,
    slot: (String, u32),
}

impl Drop for Hold {
    fn drop(&mut self) {
        // No `Hold` is dropped under the state's lock: they are made under it and handed over.
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .settle(&self.slot, &self.state);
    }
}

/// A partition's sender: its queue, and how many of its batches are queued or on their way
/// (changed under the state's lock only).
struct Queue {
    batches: mpsc::Sender<Closed>,
    outstanding: usize,
}

/// The producer's batches and queues, by topic: a record finds its topic by name (no key is
/// built per record) and its partition's batch by number.
#[derive(Default)]
struct State {
    topics: HashMap<String, Topic>,
    /// Topics that have had a sticky partition: where the next topic's first choice starts.
    sticky_topics: usize,
    next_generation: u64,
    /// Bytes reserved by the open batches for their records: a batch opens with room for a
    /// whole batch (so it never moves as it fills) only while this stays within
    /// `buffer_bytes`; past that (many partitions filling at once) it grows as it fills.
    reserved: usize,
}

/// A topic's batches and senders.
#[derive(Default)]
struct Topic {
    /// Its partition count, once asked.
    partitions: Option<u32>,
    /// The partition keyless records go to until its batch is sent (sticky).
    sticky: Option<u32>,
    open: HashMap<u32, Open>,
    senders: HashMap<u32, Queue>,
}

/// A batching producer. Cheap to clone; every clone shares the batches.
#[derive(Clone)]
pub struct Producer {
    client: Client,
    config: ProducerConfig,
    state: Arc<Mutex<State>>,
    /// The room left in the buffer, in bytes (`ProducerConfig::buffer_bytes`).
    buffer: Arc<Semaphore>,
    /// The producer id every partition's idempotent sender starts under (taken at the first
    /// batch), as a Kafka producer has one: each partition numbers its own sequence under it.
    id: crate::idempotent::SharedId,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer over `client`.
    pub fn new(client: &Client, config: ProducerConfig) -> Producer {
        Producer {
            client: client.clone(),
            buffer: Arc::new(Semaphore::new(buffer_permits(&config))),
            config,
            state: Arc::default(),
            id: crate::idempotent::SharedId::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("producer state poisoned by a panic")
    }

    async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(count) = self.lock().topics.get(topic).and_then(|t| t.partitions) {
            return Ok(count);
        }
        let description = self.client.describe_topic(topic).await?;
        let count = u32::try_from(description.partitions.len()).unwrap_or(u32::MAX);
        self.lock()
            .topics
            .entry(topic.to_string())
            .or_default()
            .partitions = Some(count);
        Ok(count)
    }

    /// Room for a record of `bytes` in the buffer, once there is (records of other tasks
    /// waiting before it go first).
    async fn room(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ClientError> {
        let limit = buffer_permits(&self.config);
        let permits = u32::try_from(bytes)
            .ok()
            .filter(|&n| n as usize <= limit)
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "a record of {bytes} bytes (key, value, headers and framing) does not fit \
                     the producer's buffer of {limit} bytes (buffer_bytes)"
                ))
            })?;
        Arc::clone(&self.buffer)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| ClientError::Other("the producer stopped".to_string()))
    }

    /// Queues one record and returns a future that resolves when its batch is acknowledged.
    /// The partition is `partition` if given, else Kafka's murmur2 of the key, else a sticky
    /// partition that changes with each batch. Records of one partition are acknowledged in the
    /// order they were sent. Waits first for room in the producer's buffer
    /// ([`ProducerConfig::buffer_bytes`]): batches give theirs back when they are acknowledged
    /// or fail, and an open batch is sent when it is full, or when its linger has run out and
    /// its partition has no batch outstanding (so at the latest when the partition's earlier
    /// batches are acknowledged or fail).
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<oneshot::Receiver<Result<Sent, ClientError>>, ClientError> {
        let count = self.partition_count(topic).await?;
        // `None`: the sticky partition, read under the same lock as the batch is filled.
        let chosen = match (partition, key) {
            (Some(p), _) if p >= count => {
                return Err(ClientError::UnknownPartition(format!(
                    "topic {topic} has {count} partitions; there is no partition {p}"
                )));
            }
            (Some(p), _) => Some(p),
            (None, Some(key)) => Some(partition_for_key(key, count)),
            (None, None) => None,
        };
        let headers_bytes: usize = headers
            .iter()
            .map(|(name, value)| name.len() + value.map_or(0, <[u8]>::len))
            .sum();
        let room = self
            .room(
                key.map_or(0, <[u8]>::len)
                    + value.map_or(0, <[u8]>::len)
                    + headers_bytes
                    + RECORD_OVERHEAD_BYTES,
            )
            .await?;
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let (tx, rx) = oneshot::channel();
        let (partition, full, start_timer) = self.lock().place(
            topic,
            chosen,
            &self.config,
            |builder| builder.push(timestamp_ms, key, value, headers),
            tx,
            room,
        );
        if full {
            self.close(topic, partition, None).await;
        } else if let Some(generation) = start_timer {
            let producer = self.clone();
            let topic = topic.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(producer.config.linger).await;
                producer.close(&topic, partition, Some(generation)).await;
            });
        }
        Ok(rx)
    }

    /// Sends every batch still open now (their futures resolve once acknowledged).
    pub async fn flush(&self) {
        let slots: Vec<(String, u32)> = self
            .lock()
            .topics
            .iter()
            .flat_map(|(name, topic)| topic.open.keys().map(|p| (name.clone(), *p)))
            .collect();
        for (topic, partition) in slots {
            self.close(&topic, partition, None).await;
        }
    }

    /// Hands the open batch of a partition to its sender. With `generation` (its linger ran
    /// out), only that batch, for a linger timer must not close a later one; and only if none
    /// of the partition's batches is queued or on its way: otherwise it stays open, gathering
    /// records, until it is full or the last of them settles ([`State::settle`]). A Kafka
    /// producer's batches wait, growing, while their connection has its most requests on their
    /// way, each request carrying batches of many partitions; here each batch is a request of
    /// its own, and nothing else holds them back. Closed at once, the batches of a busy
    /// partition would each hold the few records that arrived within a linger (with keyed
    /// records on many partitions, a record or two each), and a batch costs the cluster a
    /// request and a Raft entry whatever it holds. So a busy partition's batches grow with the
    /// time its last one took. (Letting lingered batches fill the in-flight window instead was
    /// measured: keyed records on 480 partitions went 2.5 times slower, `docs/benchmarks.md`.)
    async fn close(&self, topic: &str, partition: u32, generation: Option<u64>) {
        let slot = (topic.to_string(), partition);
        let closing = self.lock().closing(&slot, generation, || {
            self.spawn_sender(topic.to_string(), partition)
        });
        let Closing::Go(sender) = closing else {
            return;
        };
        // Room in the partition's queue first, then the batch taken and queued under one lock:
        // batches enter the queue in the order they were closed. (Taking the batch, then
        // waiting for room, let a later batch of the partition overtake it on another thread.)
        let permit = sender.reserve().await;
        let mut state = self.lock();
        if !is_open(state.open(&slot), generation) && !state.stranded(&slot) {
            return; // closed by another caller meanwhile
        }
        let Some(open) = state.take(topic, partition) else {
            return;
        };
        // Still under the lock: no other batch of the partition is queued between.
        match permit {
            Ok(permit) => permit.send(state.closed(slot, open, &self.state)),
            Err(_) => stopped(open.waiters),
        }
        drop(state);
    }

    /// One task per partition sends its batches: a plain producer one at a time, so they
    /// commit in order; an idempotent one up to `max_in_flight` at once (`crate::idempotent`).
    fn spawn_sender(&self, topic: String, partition: u32) -> mpsc::Sender<Closed> {
        let (tx, mut rx) = mpsc::channel::<Closed>(QUEUED_BATCHES_MAX);
        let client = self.client.clone();
        let config = self.config.clone();
        if config.idempotent && config.acks != AckLevel::None {
            let first_id = self.id.clone();
            tokio::spawn(crate::idempotent::run(
                client, config, first_id, topic, partition, rx,
            ));
            return tx;
        }
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                let sent_at = std::time::Instant::now();
                let result = match batch.builder.build() {
                    Ok(bytes) => client
                        .produce(&topic, partition, bytes, config.acks)
                        .await
                        .map(|base| Acked { base, sent_at }),
                    Err(e) => Err(ClientError::InvalidArgument(format!(
                        "cannot build a record batch: {e}"
                    ))),
                };
                resolve(batch.waiters, result, partition);
                drop(batch.hold); // after the answers: the room comes back with the batch
            }
        });
        tx
    }
}

/// The permits of a producer's buffer: `buffer_bytes`, at most `u32::MAX` (what one batch's
/// merged permits may hold) and what a semaphore holds.
fn buffer_permits(config: &ProducerConfig) -> usize {
    config
        .buffer_bytes
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize)
}

/// Whether `open` is a batch to close: any, or only generation `generation` if given.
fn is_open(open: Option<&Open>, generation: Option<u64>) -> bool {
    matches!(open, Some(open) if generation.is_none_or(|g| g == open.generation))
}

/// What [`State::closing`] found.
enum Closing {
    /// No such batch open (closed meanwhile, or a later one).
    Gone,
    /// A lingered batch of a partition with batches outstanding: it stays open, marked.
    Busy,
    /// The batch goes to this queue.
    Go(mpsc::Sender<Closed>),
}

impl State {
    /// The open batch of `slot`, if any.
    fn open(&self, (topic, partition): &(String, u32)) -> Option<&Open> {
        self.topics.get(topic.as_str())?.open.get(partition)
    }

    /// The sender of `slot`, if it has one yet.
    fn queue_mut(&mut self, (topic, partition): &(String, u32)) -> Option<&mut Queue> {
        self.topics
            .get_mut(topic.as_str())?
            .senders
            .get_mut(partition)
    }

    /// Whether the open batch of `slot` (only generation `generation` if given, which means
    /// its linger ran out) is to be closed now: a lingered batch stays open, marked, while any
    /// of its partition's batches is queued or on its way ([`Producer::close`]). The
    /// partition's sender is made by `spawn` if it has none yet.
    fn closing(
        &mut self,
        slot: &(String, u32),
        generation: Option<u64>,
        spawn: impl FnOnce() -> mpsc::Sender<Closed>,
    ) -> Closing {
        let (name, partition) = slot;
        let Some(topic) = self.topics.get_mut(name.as_str()) else {
            return Closing::Gone;
        };
        if !is_open(topic.open.get(partition), generation) {
            return Closing::Gone;
        }
        let queue = topic.senders.entry(*partition).or_insert_with(|| Queue {
            batches: spawn(),
            outstanding: 0,
        });
        if generation.is_some() && queue.outstanding > 0 {
            if let Some(open) = topic.open.get_mut(partition) {
                open.lingered = true;
            }
            return Closing::Busy;
        }
        Closing::Go(queue.batches.clone())
    }

    /// A batch taken from `slot` as it goes to the partition's queue: one more outstanding.
    fn closed(&mut self, slot: (String, u32), open: Open, state: &Arc<Mutex<State>>) -> Closed {
        if let Some(queue) = self.queue_mut(&slot) {
            queue.outstanding += 1;
        }
        Closed {
            builder: open.builder,
            waiters: open.waiters,
            hold: Hold {
                _room: open.room,
                state: Arc::clone(state),
                slot,
            },
        }
    }

    /// Whether the open batch of `slot` lingered and nothing of its partition is outstanding
    /// any more: it is due, and whoever holds room in the partition's queue takes it.
    fn stranded(&self, slot: &(String, u32)) -> bool {
        let (name, partition) = slot;
        self.topics.get(name.as_str()).is_some_and(|topic| {
            topic.open.get(partition).is_some_and(|open| open.lingered)
                && topic
                    .senders
                    .get(partition)
                    .is_some_and(|queue| queue.outstanding == 0)
        })
    }

    /// One outstanding batch of `slot` settled. If it was the last, and the partition's open
    /// batch lingered meanwhile, that batch goes now, queued under this lock as every batch is
    /// (a partition's batches enter its queue in the order they were closed). With no room in
    /// the queue, a caller holding room takes the batch when it gets this lock
    /// ([`State::stranded`]); with the partition's sender gone, its records fail now.
    fn settle(&mut self, slot: &(String, u32), state: &Arc<Mutex<State>>) {
        let Some(queue) = self.queue_mut(slot) else {
            return;
        };
        queue.outstanding = queue.outstanding.saturating_sub(1);
        if !self.stranded(slot) {
            return;
        }
        let Some(sender) = self.queue_mut(slot).map(|queue| queue.batches.clone()) else {
            return;
        };
        let permit = match sender.try_reserve() {
            Ok(permit) => permit,
            // Full: a caller holding room takes the batch when it gets this lock.
            Err(mpsc::error::TrySendError::Full(())) => return,
            // The partition's sender is gone (only a panic ends it while the producer lives):
            // nothing would send this batch, so its records fail now instead of waiting for a
            // flush or for the batch to fill.
            Err(mpsc::error::TrySendError::Closed(())) => {
                if let Some(open) = self.take(&slot.0, slot.1) {
                    stopped(open.waiters);
                }
                return;
            }
        };
        if let Some(open) = self.take(&slot.0, slot.1) {
            permit.send(self.closed(slot.clone(), open, state));
        }
    }

    /// Adds a record (`push`, answered through `waiter`) to the open batch of its partition,
    /// opening one if there is none: `chosen`, or for a keyless record the partition sticky
    /// now (of the topic's partition count, known by then). Returns the partition, whether its
    /// batch is full (`config.batch_bytes`), and the generation of a batch just opened (its
    /// linger timer starts). The record's `room` in the buffer joins its batch's.
    ///
    /// The sticky partition is read only here, under the lock the record is added under: read
    /// under an earlier one, a batch closed meanwhile (which moves the sticky partition on,
    /// [`State::take`]) would leave the record alone in a new batch of a partition no other
    /// record goes to, sent only when its linger ran out, as a request of its own.
    fn place(
        &mut self,
        topic: &str,
        chosen: Option<u32>,
        config: &ProducerConfig,
        push: impl FnOnce(&mut BatchBuilder),
        waiter: Waiter,
        room: OwnedSemaphorePermit,
    ) -> (u32, bool, Option<u64>) {
        // The topic is known here: `send` asked its partition count first.
        let state = match self.topics.get_mut(topic) {
            Some(state) => state,
            None => self.topics.entry(topic.to_string()).or_default(),
        };
        let partition = match (chosen, state.sticky) {
            (Some(partition), _) | (None, Some(partition)) => partition,
            (None, None) => {
                // The topics' first choices spread over partitions.
                let count = state.partitions.unwrap_or(1).max(1);
                let first = u32::try_from(self.sticky_topics % 1024).unwrap_or(0) % count;
                self.sticky_topics += 1;
                state.sticky = Some(first);
                first
            }
        };
        let generation = self.next_generation;
        let mut opened = false;
        let open = match state.open.entry(partition) {
            Entry::Occupied(open) => {
                let open = open.into_mut();
                open.room.merge(room);
                open
            }
            Entry::Vacant(slot) => {
                opened = true;
                let mut builder = BatchBuilder::new(0, config.compression);
                // A batch closes at `batch_bytes` or past it by less than its last record.
                let whole = config.batch_bytes.saturating_add(room.num_permits());
                let reserved = if self.reserved.saturating_add(whole) <= config.buffer_bytes {
                    builder.reserve(whole);
                    self.reserved += whole;
                    whole
                } else {
                    0
                };
                slot.insert(Open {
                    builder,
                    waiters: Vec::new(),
                    room,
                    reserved,
                    generation,
                    lingered: false,
                })
            }
        };
        push(&mut open.builder);
        open.waiters.push(waiter);
        let full = open.builder.size_bytes() >= config.batch_bytes;
        if opened {
            self.next_generation += 1;
        }
        (partition, full, opened.then_some(generation))
    }

    /// Takes the open batch of a partition to send it; keyless records of the topic move on to
    /// the next partition if this one was sticky, as Kafka's sticky partitioner does.
    fn take(&mut self, topic: &str, partition: u32) -> Option<Open> {
        let state = self.topics.get_mut(topic)?;
        let open = state.open.remove(&partition)?;
        if state.sticky == Some(partition) {
            state.sticky = Some((partition + 1) % state.partitions.unwrap_or(1).max(1));
        }
        self.reserved -= open.reserved;
        Some(open)
    }
}

/// Fails the records of a batch no sender will take.
fn stopped(waiters: Vec<Waiter>) {
    for waiter in waiters {
        let _ = waiter.send(Err(ClientError::Other("the producer stopped".to_string())));
    }
}

/// Answers the waiters of one batch: record `at` of it went to `base + at`.
pub(crate) fn resolve(waiters: Vec<Waiter>, result: Result<Acked, ClientError>, partition: u32) {
    let acknowledged_at = std::time::Instant::now();
    for (at, waiter) in waiters.into_iter().enumerate() {
        let sent = result.clone().map(|acked| Sent {
            partition,
            offset: acked.base.map(|b| b + at as u64),
            sent_at: acked.sent_at,
            acknowledged_at,
        });
        let _ = waiter.send(sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places a record of 200 bytes in `state` (a topic "t" of 8 partitions), in `chosen` or,
    /// keyless, in the sticky partition, its room taken from `buffer`. Returns the partition,
    /// whether its batch is full, and the record's answer.
    fn place_record(
        state: &mut State,
        config: &ProducerConfig,
        buffer: &Arc<Semaphore>,
        chosen: Option<u32>,
    ) -> (u32, bool, oneshot::Receiver<Result<Sent, ClientError>>) {
        let (waiter, answer) = oneshot::channel();
        let value = [7u8; 200];
        let room = Arc::clone(buffer).try_acquire_many_owned(216).unwrap();
        let (partition, full, _) = state.place(
            "t",
            chosen,
            config,
            |b| b.push(0, None, Some(&value), &[]),
            waiter,
            room,
        );
        (partition, full, answer)
    }

    /// Places a keyless record of 200 bytes (`place_record`).
    fn keyless(state: &mut State, config: &ProducerConfig, buffer: &Arc<Semaphore>) -> (u32, bool) {
        let (partition, full, _) = place_record(state, config, buffer, None);
        (partition, full)
    }

    /// Keyless records fill the sticky partition's batch; once it is taken (full, or by its
    /// linger) they go to the next partition, one after the other, and no batch is ever open on
    /// a partition keyless records left (it would wait for its linger with nothing joining it).
    /// That `send` reads the sticky partition under the lock it adds the record under holds by
    /// construction: only `place` reads it.
    #[test]
    fn keyless_records_only_join_the_sticky_partition() {
        let config = ProducerConfig {
            batch_bytes: 1024,
            ..ProducerConfig::default()
        };
        let mut state = State::default();
        state.topics.entry("t".to_string()).or_default().partitions = Some(8);
        let buffer = Arc::new(Semaphore::new(1024 * 1024));
        let mut visited = Vec::new();
        for _ in 0..60 {
            let (partition, full) = keyless(&mut state, &config, &buffer);
            let open: Vec<u32> = state.topics["t"].open.keys().copied().collect();
            assert_eq!(open, vec![partition], "batches open: {open:?}");
            if full {
                let taken = state.take("t", partition).unwrap();
                assert!(taken.builder.size_bytes() >= config.batch_bytes);
                // The batch holds its records' room until it is dropped.
                assert_eq!(taken.room.num_permits(), 216 * taken.waiters.len());
                visited.push(partition);
            }
        }
        // One partition after the other, as Kafka's sticky partitioner goes.
        assert!(visited.len() >= 10, "{visited:?}");
        for pair in visited.windows(2) {
            assert_eq!(pair[1], (pair[0] + 1) % 8, "{visited:?}");
        }
        // A batch taken before it filled (its linger ran out) moves the sticky partition too.
        let (partition, full) = keyless(&mut state, &config, &buffer);
        assert!(!full);
        state.take("t", partition).unwrap();
        let (next, _) = keyless(&mut state, &config, &buffer);
        assert_eq!(next, (partition + 1) % 8);
    }

    /// Batches open with room for a whole batch while the open batches' room stays within the
    /// producer's buffer; past it they open without (and grow as they fill), and a batch taken
    /// gives its room back.
    #[test]
    fn open_batches_reserve_room_within_the_buffer() {
        let config = ProducerConfig {
            batch_bytes: 1024,
            // Room for two whole batches (each 1,024 bytes and one more record), not three.
            buffer_bytes: 3 * (1024 + 216) - 1,
            ..ProducerConfig::default()
        };
        let mut state = State::default();
        state.topics.entry("t".to_string()).or_default().partitions = Some(8);
        let buffer = Arc::new(Semaphore::new(1024 * 1024));
        for partition in 0..3 {
            place_record(&mut state, &config, &buffer, Some(partition));
        }
        let reserved = |state: &State, p: u32| state.topics["t"].open[&p].reserved;
        assert_eq!(reserved(&state, 0), 1024 + 216);
        assert_eq!(reserved(&state, 1), 1024 + 216);
        assert_eq!(
            reserved(&state, 2),
            0,
            "past the buffer, a batch opens without room"
        );
        assert_eq!(state.reserved, 2 * (1024 + 216));
        state.take("t", 0).unwrap();
        assert_eq!(state.reserved, 1024 + 216);
        state.take("t", 2).unwrap();
        state.take("t", 1).unwrap();
        assert_eq!(state.reserved, 0);
    }

    /// A partition with one batch outstanding and the next one lingering behind it.
    struct Lingering {
        state: Arc<Mutex<State>>,
        buffer: Arc<Semaphore>,
        slot: (String, u32),
        /// The partition's queue, both ends.
        sender: mpsc::Sender<Closed>,
        receiver: mpsc::Receiver<Closed>,
        /// The first batch, closed (outstanding) but not queued yet.
        first: Closed,
        /// The lingering batch's generation, and its record's answer.
        second: u64,
        answer: oneshot::Receiver<Result<Sent, ClientError>>,
    }

    /// The partition's first batch is closed by its linger (nothing outstanding, so it goes),
    /// and the next batch of the partition (a record with the partition chosen) lingers while
    /// the first is outstanding.
    fn lingering_behind_one() -> Lingering {
        let config = ProducerConfig::default();
        let state = Arc::new(Mutex::new(State::default()));
        let buffer = Arc::new(Semaphore::new(1024 * 1024));
        let (queue, receiver) = mpsc::channel(QUEUED_BATCHES_MAX);
        let mut guard = state.lock().unwrap();
        guard.topics.entry("t".to_string()).or_default().partitions = Some(8);
        let (partition, _) = keyless(&mut guard, &config, &buffer);
        let slot = ("t".to_string(), partition);
        let first = guard.open(&slot).unwrap().generation;
        let Closing::Go(sender) = guard.closing(&slot, Some(first), || queue) else {
            panic!("an idle partition's lingered batch stayed open");
        };
        let open = guard.take("t", partition).unwrap();
        let first = guard.closed(slot.clone(), open, &state);
        let (_, _, answer) = place_record(&mut guard, &config, &buffer, Some(partition));
        let second = guard.open(&slot).unwrap().generation;
        let never = || unreachable!("the partition has a sender");
        assert!(matches!(
            guard.closing(&slot, Some(second), never),
            Closing::Busy
        ));
        drop(guard);
        Lingering {
            state,
            buffer,
            slot,
            sender,
            receiver,
            first,
            second,
            answer,
        }
    }

    /// A lingered batch of a partition whose sender is gone (a panic ends it) fails as soon as
    /// the partition's last outstanding batch settles: nothing would ever send it, and without
    /// a flush or more records its producers would wait for good.
    #[test]
    fn a_lingered_batch_fails_at_once_when_its_sender_is_gone() {
        let Lingering {
            state,
            buffer,
            slot,
            sender,
            receiver,
            first,
            mut answer,
            ..
        } = lingering_behind_one();
        // The sender ends, then the batch it held settles.
        drop((sender, receiver));
        assert!(answer.try_recv().is_err(), "answered before it settled");
        drop(first);
        match answer.try_recv() {
            Ok(Err(ClientError::Other(message))) => assert!(message.contains("stopped")),
            other => panic!("the lingered batch was not failed: {other:?}"),
        }
        assert!(state.lock().unwrap().open(&slot).is_none());
        // Every record's room came back.
        assert_eq!(buffer.available_permits(), 1024 * 1024);
    }

    /// A batch whose linger ran out stays open, gathering records, while a batch of its
    /// partition is outstanding (queued or on its way); a flush (or a full batch) closes it
    /// anyway, and the last outstanding batch to settle sends it, its room coming back.
    #[test]
    fn a_lingered_batch_waits_until_its_partition_is_idle() {
        let Lingering {
            state,
            buffer,
            slot,
            sender,
            mut receiver,
            first,
            second,
            answer: _answer,
        } = lingering_behind_one();
        sender.try_reserve().unwrap().send(first);
        let mut guard = state.lock().unwrap();
        let never = || unreachable!("the partition has a sender");
        assert!(guard.open(&slot).unwrap().lingered);
        // A timer of another batch finds nothing; a flush would close it anyway.
        assert!(matches!(
            guard.closing(&slot, Some(second + 1), never),
            Closing::Gone
        ));
        assert!(matches!(guard.closing(&slot, None, never), Closing::Go(_)));
        drop(guard);
        // The first batch settles (its `Hold` dropped, as its sender does once it is answered):
        // the lingered one goes at once, and the first's room comes back.
        let available = buffer.available_permits();
        let first_batch = receiver.try_recv().unwrap();
        assert!(
            receiver.try_recv().is_err(),
            "the lingered batch went early"
        );
        drop(first_batch);
        assert_eq!(buffer.available_permits(), available + 216);
        let second_batch = receiver.try_recv().expect("the lingered batch went");
        assert_eq!(second_batch.waiters.len(), 1);
        let guard = state.lock().unwrap();
        assert!(guard.open(&slot).is_none());
        assert_eq!(guard.topics["t"].senders[&slot.1].outstanding, 1);
    }
}
