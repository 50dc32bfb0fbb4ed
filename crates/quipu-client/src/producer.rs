//! [`Producer`]: batches records per partition (linger, batch bytes), picks partitions as Kafka's
//! default partitioner does, and sends each partition's batches one at a time, in order.
//!
//! By default it is idempotent (with acks 1 or all): it takes a producer id from the cluster,
//! numbers each partition's records, keeps up to five batches of a partition on their way, and
//! retries a batch whatever the outcome of the last try until it is acknowledged or its delivery
//! timeout passes; the partition writes each batch once (`docs/protocol/idempotence.md`,
//! `crate::idempotent`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quipu_record::{BatchBuilder, Compression};
use tokio::sync::{mpsc, oneshot};

use crate::{AckLevel, Client, ClientError, partition_for_key};

/// Batches waiting to be sent, per partition, before `send` waits for room.
const QUEUED_BATCHES_MAX: usize = 16;

/// How a producer batches and acknowledges.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more records before it is sent (Kafka's `linger.ms`).
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
    /// acknowledged in order. A plain producer sends one at a time.
    pub max_in_flight: usize,
}

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
    /// When the acknowledgement arrived (for latency measurements).
    pub acknowledged_at: std::time::Instant,
}

pub(crate) type Waiter = oneshot::Sender<Result<Sent, ClientError>>;

/// A batch being filled.
struct Open {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    /// Distinguishes this batch from later ones of the same partition (for the linger timer).
    generation: u64,
}

/// A batch handed to its partition's sender.
pub(crate) struct Closed {
    pub(crate) builder: BatchBuilder,
    pub(crate) waiters: Vec<Waiter>,
}

#[derive(Default)]
struct State {
    open: HashMap<(String, u32), Open>,
    senders: HashMap<(String, u32), mpsc::Sender<Closed>>,
    partition_counts: HashMap<String, u32>,
    /// The partition keyless records of a topic go to until its batch is sent (sticky).
    sticky: HashMap<String, u32>,
    next_generation: u64,
}

/// A batching producer. Cheap to clone; every clone shares the batches.
#[derive(Clone)]
pub struct Producer {
    client: Client,
    config: ProducerConfig,
    state: Arc<Mutex<State>>,
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
        if let Some(count) = self.lock().partition_counts.get(topic) {
            return Ok(*count);
        }
        let description = self.client.describe_topic(topic).await?;
        let count = u32::try_from(description.partitions.len()).unwrap_or(u32::MAX);
        self.lock()
            .partition_counts
            .insert(topic.to_string(), count);
        Ok(count)
    }

    /// Queues one record and returns a future that resolves when its batch is acknowledged.
    /// The partition is `partition` if given, else Kafka's murmur2 of the key, else a sticky
    /// partition that changes with each batch. Records of one partition are acknowledged in the
    /// order they were sent.
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
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let (tx, rx) = oneshot::channel();
        let (partition, full, start_timer) = self.lock().place(
            topic,
            chosen,
            count,
            &self.config,
            |builder| builder.push(timestamp_ms, key, value, headers),
            tx,
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
        let slots: Vec<(String, u32)> = self.lock().open.keys().cloned().collect();
        for (topic, partition) in slots {
            self.close(&topic, partition, None).await;
        }
    }

    /// Hands the open batch of a partition to its sender (if `generation` is given, only that
    /// batch: a linger timer must not close a later one).
    async fn close(&self, topic: &str, partition: u32, generation: Option<u64>) {
        let slot = (topic.to_string(), partition);
        let closes = |open: Option<&Open>| {
            open.is_some_and(|open| generation.is_none_or(|g| g == open.generation))
        };
        let sender = {
            let mut state = self.lock();
            if !closes(state.open.get(&slot)) {
                return;
            }
            state
                .senders
                .entry(slot.clone())
                .or_insert_with(|| self.spawn_sender(topic.to_string(), partition))
                .clone()
        };
        // Room in the partition's queue first, then the batch taken and queued under one lock:
        // batches enter the queue in the order they were closed. (Taking the batch, then
        // waiting for room, let a later batch of the partition overtake it on another thread.)
        let permit = sender.reserve().await;
        let mut state = self.lock();
        if !closes(state.open.get(&slot)) {
            return; // closed by another caller meanwhile
        }
        let Some(open) = state.take(topic, partition) else {
            return;
        };
        // Still under the lock: no other batch of the partition is queued between.
        match permit {
            Ok(permit) => permit.send(Closed {
                builder: open.builder,
                waiters: open.waiters,
            }),
            Err(_) => {
                for waiter in open.waiters {
                    let _ =
                        waiter.send(Err(ClientError::Other("the producer stopped".to_string())));
                }
            }
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
                let result = match batch.builder.build() {
                    Ok(bytes) => client.produce(&topic, partition, bytes, config.acks).await,
                    Err(e) => Err(ClientError::InvalidArgument(format!(
                        "cannot build a record batch: {e}"
                    ))),
                };
                resolve(batch.waiters, result, partition);
            }
        });
        tx
    }
}

impl State {
    /// Adds a record (`push`, answered through `waiter`) to the open batch of its partition,
    /// opening one if there is none: `chosen`, or for a keyless record the partition sticky
    /// now. Returns the partition, whether its batch is full (`config.batch_bytes`), and the
    /// generation of a batch just opened (its linger timer starts).
    ///
    /// The sticky partition is read only here, under the lock the record is added under: read
    /// under an earlier one, a batch closed meanwhile (which moves the sticky partition on,
    /// [`State::take`]) would leave the record alone in a new batch of a partition no other
    /// record goes to, sent only when its linger ran out, as a request of its own.
    fn place(
        &mut self,
        topic: &str,
        chosen: Option<u32>,
        count: u32,
        config: &ProducerConfig,
        push: impl FnOnce(&mut BatchBuilder),
        waiter: Waiter,
    ) -> (u32, bool, Option<u64>) {
        let partition = match chosen {
            Some(partition) => partition,
            None => match self.sticky.get(topic) {
                Some(sticky) => *sticky,
                None => {
                    // The topics' first choices spread over partitions.
                    let first = u32::try_from(self.sticky.len() % 1024).unwrap_or(0) % count.max(1);
                    self.sticky.insert(topic.to_string(), first);
                    first
                }
            },
        };
        let generation = self.next_generation;
        let mut opened = false;
        let open = self
            .open
            .entry((topic.to_string(), partition))
            .or_insert_with(|| {
                opened = true;
                Open {
                    builder: BatchBuilder::new(0, config.compression),
                    waiters: Vec::new(),
                    generation,
                }
            });
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
        let open = self.open.remove(&(topic.to_string(), partition))?;
        let count = self.partition_counts.get(topic).copied().unwrap_or(1);
        if let Some(sticky) = self.sticky.get_mut(topic)
            && *sticky == partition
        {
            *sticky = (partition + 1) % count.max(1);
        }
        Some(open)
    }
}

/// Answers the waiters of one batch: record `at` of it went to `base + at`.
pub(crate) fn resolve(
    waiters: Vec<Waiter>,
    result: Result<Option<u64>, ClientError>,
    partition: u32,
) {
    let acknowledged_at = std::time::Instant::now();
    for (at, waiter) in waiters.into_iter().enumerate() {
        let sent = result.clone().map(|base| Sent {
            partition,
            offset: base.map(|b| b + at as u64),
            acknowledged_at,
        });
        let _ = waiter.send(sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places a keyless record of 200 bytes in `state` (a topic "t" of 8 partitions).
    fn keyless(state: &mut State, config: &ProducerConfig) -> (u32, bool) {
        let (waiter, _) = oneshot::channel();
        let value = [7u8; 200];
        let (partition, full, _) = state.place(
            "t",
            None,
            8,
            config,
            |b| b.push(0, None, Some(&value), &[]),
            waiter,
        );
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
        state.partition_counts.insert("t".to_string(), 8);
        let mut visited = Vec::new();
        for _ in 0..60 {
            let (partition, full) = keyless(&mut state, &config);
            let open: Vec<u32> = state.open.keys().map(|(_, p)| *p).collect();
            assert_eq!(open, vec![partition], "batches open: {open:?}");
            if full {
                let taken = state.take("t", partition).unwrap();
                assert!(taken.builder.size_bytes() >= config.batch_bytes);
                visited.push(partition);
            }
        }
        // One partition after the other, as Kafka's sticky partitioner goes.
        assert!(visited.len() >= 10, "{visited:?}");
        for pair in visited.windows(2) {
            assert_eq!(pair[1], (pair[0] + 1) % 8, "{visited:?}");
        }
        // A batch taken before it filled (its linger ran out) moves the sticky partition too.
        let (partition, full) = keyless(&mut state, &config);
        assert!(!full);
        state.take("t", partition).unwrap();
        let (next, _) = keyless(&mut state, &config);
        assert_eq!(next, (partition + 1) % 8);
    }
}
