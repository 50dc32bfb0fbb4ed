//! `quipu bench produce|consume`: throughput and latency against a running cluster, like Kafka's
//! producer and consumer perf tools. Latencies go into an HDR histogram (µs, 3 significant
//! digits); at a fixed `--rate`, records come due evenly in time (a pacer releases them every
//! 0.5 ms) and each record's latency counts from when it was due to be sent, not from when it was
//! sent, so a stalled producer cannot hide its stall (coordinated omission).
//! `bench produce` also splits each record's latency in two: until its batch's first request
//! left the producer (Kafka's record queue time: batching, linger, a partition's earlier batches,
//! the buffer), and from then to the acknowledgement (the request, with any retries). Each part
//! has its own percentiles, which do not add up to the whole's. Throughput counts the records
//! acknowledged from the start to the last acknowledgement.

use crate::output::out;

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use quipu_client::{Client, ClientError, Consumer, Producer, ProducerConfig, StartAt, TopicConfig};

use crate::commands::{Acks, Connection};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produces records as fast as possible (or at `--rate`) and reports throughput and latency.
    ///
    /// Example: quipu bench produce --records 1000000 --record-size 1024 --acks all
    Produce(ProduceBench),
    /// Consumes a topic from the start and reports throughput.
    ///
    /// Example: quipu bench consume --records 1000000
    Consume(ConsumeBench),
    /// Consumes a topic from the start through a node's Kafka listener, with the Kafka protocol
    /// itself (no client library), and reports throughput: the Kafka path beside `consume`.
    ///
    /// Example: quipu bench kafka-consume --kafka-bootstrap 127.0.0.1:9092 --topic bench
    KafkaConsume(crate::bench_kafka::KafkaConsumeBench),
    /// Commits offsets to one consumer group's coordinator from concurrent tasks and reports
    /// commits per second and latency (each commit is acknowledged once committed by a
    /// majority).
    ///
    /// Example: quipu bench commits --tasks 16 --duration 10
    Commits(CommitsBench),
}

#[derive(Debug, Args)]
pub struct CommitsBench {
    /// The group committed to (a group without members: commits of generation -1).
    #[arg(long, default_value = "bench-commits")]
    group: String,
    /// Concurrent committers, each committing its own partition's offset in a loop.
    #[arg(long, default_value_t = 16)]
    tasks: u32,
    /// How long to commit, in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct ProduceBench {
    /// Topic (created if missing, with --partitions and --replication-factor).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions of a topic this command creates.
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Replication factor of a topic this command creates [default: 3, or the node count].
    #[arg(long)]
    replication_factor: Option<u32>,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records to send (with --duration: whichever ends first).
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Give records keys, one of this many distinct ones in turn, so that they spread over the
    /// partitions by key hash as a keyed Kafka producer's do (every partition busy at once);
    /// 0: no keys (each batch fills one partition, then the next, Kafka's sticky partitioner).
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// Longest run, in seconds.
    #[arg(long)]
    duration: Option<u64>,
    /// Records per second in all (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Bytes that close a batch.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// Bytes of records the producer holds at once, across partitions, until acknowledged
    /// (Kafka's `buffer.memory`); a task waits for room.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    buffer_bytes: usize,
    /// How long a batch waits for more records, in ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// What each record waits for: 0, 1 or all.
    #[arg(long, value_enum, default_value = "all")]
    acks: Acks,
    /// Concurrent producer tasks (each with its own batches).
    #[arg(long, default_value_t = 4)]
    concurrency: u64,
    /// Records a producer task may have unacknowledged at once.
    #[arg(long, default_value_t = 50_000)]
    window: usize,
    /// Plain batches (no producer id, no retries of unknown outcomes), to compare with the
    /// idempotent default.
    #[arg(long)]
    no_idempotence: bool,
    /// Batches of one partition on their way at once, 1 to 5 [default: 5] (idempotent only: not
    /// with --no-idempotence or --acks 0).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=5))]
    max_in_flight: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Before the run, measure the storage engine alone in this directory (on the cluster's
    /// disk): `--batch-bytes` batches appended and fdatasynced one at a time for 5 s, the
    /// baseline the cluster's figure is compared with.
    #[arg(long, value_name = "DIR")]
    storage_baseline: Option<std::path::PathBuf>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct ConsumeBench {
    /// Topic to read, every partition from its start.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Records to read in all (stops earlier at the end of every partition).
    #[arg(long, default_value_t = u64::MAX)]
    records: u64,
    /// Read as one member of this consumer group (from its committed offsets, else the start;
    /// committing every second) instead of partition by partition.
    #[arg(long)]
    group: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

fn progress(total: u64, hidden: bool) -> indicatif::ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} records, {per_sec}, eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Microseconds, at least 1 (a histogram's lowest value).
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A histogram's value at quantile `q` (0..=1), in ms (the histograms hold microseconds).
fn ms(histogram: &Histogram<u64>, q: f64) -> f64 {
    histogram.value_at_quantile(q) as f64 / 1000.0
}

/// A histogram's percentiles in ms, as `bench produce --json` writes them.
fn percentiles_ms(histogram: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "p50": ms(histogram, 0.5), "p99": ms(histogram, 0.99), "p99_9": ms(histogram, 0.999),
        "max": histogram.max() as f64 / 1000.0,
    })
}

/// What one producer task measured.
struct TaskResult {
    sent: u64,
    failed: u64,
    first_error: Option<ClientError>,
    /// From when a record was due to its acknowledgement.
    latency: Histogram<u64>,
    /// From when it was due to its batch's first request.
    queued: Histogram<u64>,
    /// From its batch's first request to the acknowledgement.
    request: Histogram<u64>,
    /// When its last record was acknowledged: the run's throughput counts up to the last
    /// acknowledgement, not the bookkeeping of the acknowledgements held until the end.
    last_acknowledged: Option<Instant>,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce(args) => produce(args).await,
        BenchCommand::Consume(args) if args.group.is_some() => consume_group(args).await,
        BenchCommand::Consume(args) => consume(args).await,
        BenchCommand::Commits(args) => commits(args).await,
        BenchCommand::KafkaConsume(args) => crate::bench_kafka::kafka_consume(args).await,
    }
}

/// The storage engine's own `fsync=always` append of `batch_bytes` batches of `record_size`
/// records, one append + sync at a time for `seconds`: MiB/s.
fn storage_baseline(
    dir: &std::path::Path,
    batch_bytes: usize,
    record_size: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let dir = dir.join(format!("quipu-bench-baseline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = (|| {
        let log = quipu_storage::Log::open(&dir, quipu_storage::LogConfig::default())
            .context("cannot open the baseline log")?;
        let mut builder = quipu_record::BatchBuilder::new(0, quipu_record::Compression::None);
        let value = vec![b'q'; record_size];
        while builder.size_bytes() < batch_bytes {
            builder.push(0, None, Some(&value), &[]);
        }
        let batch = builder.build().context("cannot build the baseline batch")?;
        let start = Instant::now();
        let mut bytes = 0u64;
        while start.elapsed() < Duration::from_secs(seconds) {
            let index = log.next_index();
            log.append(&[quipu_storage::NewEntry::records(index, 1, batch.clone())])
                .context("baseline append failed")?;
            log.sync_to(index + 1).context("baseline sync failed")?;
            bytes += batch.len() as u64;
        }
        Ok(bytes as f64 / start.elapsed().as_secs_f64() / (1024.0 * 1024.0))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// How often the pacer releases the records that have come due at a fixed `--rate`. Finer than
/// tokio's 1 ms timer, whose ticks would hand the producer each millisecond's records at once;
/// 0.2 ms cost the bench a quarter more CPU than that timer, 0.5 ms a few percent.
const PACER_TICK: Duration = Duration::from_micros(500);

/// Records a producer task takes at once from those released: a task woken for a tick's
/// records sends them (up to this many) and hands the rest on, so that a tick wakes one or two
/// tasks, not all of them (each wake-up is CPU the node under test does not get).
const CLAIM_MAX: u64 = 64;

/// Paces a run at a fixed rate: record `i` is due at `begin + i / rate`, and every
/// [`PACER_TICK`] the pacer releases those that have come due, so records reach the producer
/// evenly in time, as a steady stream of events would, rather than in tokio's 1 ms ticks. Each
/// record's latency counts from when it was due, so a producer that falls behind (released
/// records pile up) has its delay counted (no coordinated omission); the pacer's own rounding
/// (up to one tick, plus the runtime's wake-up) is counted too.
struct Pacer {
    shared: std::sync::Arc<Paced>,
    task: tokio::task::JoinHandle<()>,
}

/// What the pacer and the producer tasks share.
struct Paced {
    /// When record 0 was due.
    begin: Instant,
    /// Records per second.
    rate: u64,
    /// Records released so far: records `0..released` are due.
    released: std::sync::atomic::AtomicU64,
    /// Records taken by producer tasks so far (at most `released`).
    taken: std::sync::atomic::AtomicU64,
    /// Set when no more records will be released (all were, the deadline passed, or the run is
    /// over).
    ended: std::sync::atomic::AtomicBool,
    /// Wakes one waiting task when records are released (it wakes the next if it leaves some).
    more: tokio::sync::Notify,
}

impl Paced {
    /// When record `i` is due: `begin + i / rate`, rounded down to the nanosecond (the one
    /// schedule the pacer releases by and each record's latency counts from).
    fn due(&self, i: u64) -> Instant {
        let nanos = u128::from(i) * 1_000_000_000 / u128::from(self.rate);
        self.begin + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many records are due at `now`: records `0..n`, each with `i / rate` at or before
    /// `now - begin`, so none whose [`Paced::due`] is after `now`.
    fn due_by(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.begin).as_nanos();
        u64::try_from(elapsed * u128::from(self.rate) / 1_000_000_000)
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Takes up to [`CLAIM_MAX`] released records, waiting for the pacer if none is; `None`
    /// once every record is taken or the pacer has ended.
    async fn take(&self) -> Option<std::ops::Range<u64>> {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let more = self.more.notified();
            tokio::pin!(more);
            // Registered before the check, so that a release in between still wakes this task.
            more.as_mut().enable();
            let (released, taken) = (self.released.load(SeqCst), self.taken.load(SeqCst));
            if taken < released {
                let end = released.min(taken + CLAIM_MAX);
                if self
                    .taken
                    .compare_exchange(taken, end, SeqCst, SeqCst)
                    .is_ok()
                {
                    if end < released {
                        self.more.notify_one();
                    }
                    return Some(taken..end);
                }
                continue;
            }
            if self.ended.load(SeqCst) {
                return None;
            }
            more.await;
        }
    }
}

impl Pacer {
    /// Releases `records` records at `rate` from `begin`, until `deadline` if any. The ticks
    /// come from a timerfd that the runtime polls beside its sockets, so that a tick wakes no
    /// other thread (a thread of its own cost the bench a quarter more CPU in futex wake-ups,
    /// which a saturated node felt).
    fn start(
        rate: u64,
        records: u64,
        begin: Instant,
        deadline: Option<Instant>,
    ) -> anyhow::Result<Pacer> {
        use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
        use std::sync::atomic::Ordering::SeqCst;
        let timer = rustix::time::timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .context("cannot create the pacer's timer")?;
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(PACER_TICK.subsec_nanos()),
        };
        rustix::time::timerfd_settime(
            &timer,
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: tick,
                it_value: tick,
            },
        )
        .context("cannot start the pacer's timer")?;
        // `AsyncFd::new` is deprecated because a caller could close a descriptor it only
        // borrowed while the runtime polls it; this one owns its `OwnedFd`, so it stays open for
        // as long as it is registered (the condition `AsyncFd::register`, the unsafe
        // replacement, asks its caller to keep), and this workspace denies unsafe code.
        #[allow(deprecated)]
        let timer =
            tokio::io::unix::AsyncFd::new(timer).context("cannot poll the pacer's timer")?;
        let shared = std::sync::Arc::new(Paced {
            begin,
            rate,
            released: std::sync::atomic::AtomicU64::new(0),
            taken: std::sync::atomic::AtomicU64::new(0),
            ended: std::sync::atomic::AtomicBool::new(false),
            more: tokio::sync::Notify::new(),
        });
        let paced = std::sync::Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let now = Instant::now();
                let due = paced.due_by(now).min(records);
                if due > paced.released.load(SeqCst) {
                    paced.released.store(due, SeqCst);
                    paced.more.notify_one();
                }
                if due >= records || deadline.is_some_and(|d| now >= d) || paced.ended.load(SeqCst)
                {
                    break;
                }
                // The next tick (the count of expirations read is not needed: `due` is
                // computed from the clock).
                let Ok(mut ready) = timer.readable().await else {
                    break;
                };
                let mut expirations = [0u8; 8];
                if let Err(rustix::io::Errno::AGAIN) =
                    rustix::io::read(ready.get_inner(), &mut expirations)
                {
                    ready.clear_ready();
                }
            }
            paced.ended.store(true, SeqCst);
            paced.more.notify_waiters();
        });
        Ok(Pacer { shared, task })
    }

    async fn finish(self) {
        self.shared
            .ended
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.task.await;
    }
}

async fn produce(args: ProduceBench) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.record_size == 0 {
        bail!("--concurrency and --record-size must be at least 1");
    }
    let baseline = match &args.storage_baseline {
        Some(dir) => {
            let (dir, batch_bytes, record_size) = (dir.clone(), args.batch_bytes, args.record_size);
            Some(
                tokio::task::spawn_blocking(move || {
                    storage_baseline(&dir, batch_bytes, record_size, 5)
                })
                .await
                .context("the baseline task failed")??,
            )
        }
        None => None,
    };
    let client = args.connection.connect().await?;
    match client.describe_topic(&args.topic).await {
        Ok(_) => {}
        Err(ClientError::UnknownTopic(_)) => {
            let replication_factor = match args.replication_factor {
                Some(r) => r,
                None => {
                    let nodes = client.describe_cluster().await?.nodes.len();
                    u32::try_from(nodes.clamp(1, 3)).unwrap_or(3)
                }
            };
            client
                .create_topic(
                    &args.topic,
                    args.partitions,
                    replication_factor,
                    TopicConfig::default(),
                )
                .await
                .with_context(|| format!("cannot create topic {}", args.topic))?;
            wait_for_leaders(&client, &args.topic).await?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read topic {}", args.topic)),
    }
    let idempotent = !args.no_idempotence && !matches!(args.acks, Acks::Zero);
    if !idempotent && args.max_in_flight.is_some() {
        bail!(
            "--max-in-flight applies to idempotent producers only, not with --no-idempotence or --acks 0"
        );
    }
    let producer = Producer::new(
        &client,
        ProducerConfig {
            linger: Duration::from_millis(args.linger_ms),
            batch_bytes: args.batch_bytes,
            buffer_bytes: args.buffer_bytes,
            acks: args.acks.into(),
            idempotent,
            max_in_flight: args.max_in_flight.map_or(quipu_client::IN_FLIGHT_MAX, |n| {
                usize::try_from(n).unwrap_or(1)
            }),
            ..ProducerConfig::default()
        },
    );
    let value = vec![b'q'; args.record_size];
    let bar = progress(args.records, args.json);
    let start = Instant::now();
    let deadline = args.duration.map(|s| start + Duration::from_secs(s));
    let pacer = match args.rate {
        0 => None,
        rate => Some(Pacer::start(rate, args.records, start, deadline)?),
    };
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (producer, value, topic, bar) = (
            producer.clone(),
            value.clone(),
            args.topic.clone(),
            bar.clone(),
        );
        let window = args.window.max(1);
        let (keys, records, next) = (args.keys, args.records, next.clone());
        let paced = pacer.as_ref().map(|p| std::sync::Arc::clone(&p.shared));
        tasks.spawn(async move {
            let mut result = TaskResult {
                sent: 0,
                failed: 0,
                first_error: None,
                latency: histogram(),
                queued: histogram(),
                request: histogram(),
                last_acknowledged: None,
            };
            let mut pending = VecDeque::new();
            let settle =
                |result: &mut TaskResult,
                 (due, ack): (Instant, Result<quipu_client::Sent, ClientError>)| {
                    match ack {
                        Ok(sent) => {
                            // From when the record was due to when its acknowledgement arrived.
                            let waited = sent.acknowledged_at.saturating_duration_since(due);
                            let _ = result.latency.record(micros(waited));
                            let queued = sent.sent_at.saturating_duration_since(due);
                            let _ = result.queued.record(micros(queued));
                            let request =
                                sent.acknowledged_at.saturating_duration_since(sent.sent_at);
                            let _ = result.request.record(micros(request));
                            result.last_acknowledged =
                                result.last_acknowledged.max(Some(sent.acknowledged_at));
                        }
                        Err(e) => {
                            result.failed += 1;
                            result.first_error.get_or_insert(e);
                        }
                    }
                    bar.inc(1);
                };
            // Paced, the records released and taken a few at a time; else one at a time.
            let mut taken = 0..0;
            loop {
                let i = match (taken.next(), &paced) {
                    (Some(i), _) => i,
                    (None, Some(paced)) => match paced.take().await {
                        Some(range) => {
                            taken = range;
                            continue;
                        }
                        None => break,
                    },
                    (None, None) => next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                };
                if i >= records {
                    break;
                }
                // One clock read per record serves the deadline and, unpaced, its due time.
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    break;
                }
                let due = paced.as_ref().map_or(now, |paced| paced.due(i));
                let key = (keys > 0).then(|| (i % keys).to_string());
                let ack = match producer
                    .send(
                        &topic,
                        None,
                        key.as_deref().map(str::as_bytes),
                        Some(&value),
                        &[],
                    )
                    .await
                {
                    Ok(ack) => ack,
                    Err(e) => {
                        result.failed += 1;
                        result.first_error.get_or_insert(e);
                        continue;
                    }
                };
                result.sent += 1;
                pending.push_back((due, ack));
                while pending.len() > window {
                    if let Some((due, ack)) = pending.pop_front() {
                        let ack = ack.await.unwrap_or_else(|_| {
                            Err(ClientError::Other("the producer stopped".to_string()))
                        });
                        settle(&mut result, (due, ack));
                    }
                }
            }
            producer.flush().await;
            while let Some((due, ack)) = pending.pop_front() {
                let ack = ack.await.unwrap_or_else(|_| {
                    Err(ClientError::Other("the producer stopped".to_string()))
                });
                settle(&mut result, (due, ack));
            }
            result
        });
    }
    let (mut latency, mut queued, mut request) = (histogram(), histogram(), histogram());
    let (mut sent, mut failed, mut first_error) = (0u64, 0u64, None);
    let mut last_acknowledged = None;
    while let Some(done) = tasks.join_next().await {
        let result = done.context("a producer task failed")?;
        last_acknowledged = last_acknowledged.max(result.last_acknowledged);
        sent += result.sent;
        failed += result.failed;
        if first_error.is_none() {
            first_error = result.first_error;
        }
        for (all, one) in [
            (&mut latency, &result.latency),
            (&mut queued, &result.queued),
            (&mut request, &result.request),
        ] {
            all.add(one).context("cannot merge latency histograms")?;
        }
    }
    if let Some(pacer) = pacer {
        pacer.finish().await;
    }
    bar.finish_and_clear();
    // Up to the last acknowledgement (each task settles the acknowledgements it still holds
    // after its last send, which is the load generator's work, not the system's).
    let elapsed = last_acknowledged
        .map_or_else(
            || start.elapsed(),
            |last| last.saturating_duration_since(start),
        )
        .as_secs_f64();
    let acknowledged = sent.saturating_sub(failed);
    let bytes = acknowledged as f64 * args.record_size as f64;
    if args.json {
        out!(
            "{}",
            serde_json::json!({
                "records": acknowledged,
                "failed": failed,
                "seconds": elapsed,
                "records_per_second": acknowledged as f64 / elapsed,
                "mib_per_second": bytes / elapsed / (1024.0 * 1024.0),
                "latency_ms": percentiles_ms(&latency),
                "queued_ms": percentiles_ms(&queued),
                "request_ms": percentiles_ms(&request),
                "record_size": args.record_size,
                "acks": format!("{:?}", args.acks),
                "rate": args.rate,
                "storage_baseline_mib_per_second": baseline,
            })
        );
    } else {
        out!(
            "{acknowledged} records sent in {elapsed:.2} s: {:.0} records/s, {:.2} MiB/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            acknowledged as f64 / elapsed,
            bytes / elapsed / (1024.0 * 1024.0),
            ms(&latency, 0.5),
            ms(&latency, 0.99),
            ms(&latency, 0.999),
            latency.max() as f64 / 1000.0
        );
        out!(
            "  waiting in the producer (batching) p50 {:.2} ms, p99 {:.2} ms; its batch's request p50 {:.2} ms, p99 {:.2} ms",
            ms(&queued, 0.5),
            ms(&queued, 0.99),
            ms(&request, 0.5),
            ms(&request, 0.99)
        );
        if let Some(mib) = baseline {
            out!("storage engine alone (same batches, fsync=always): {mib:.2} MiB/s");
        }
    }
    if failed > 0 {
        let cause = first_error.map_or_else(String::new, |e| e.to_string());
        bail!("{failed} records were not acknowledged; the first error: {cause}");
    }
    Ok(())
}

/// Longest wait for a new topic's partitions to elect their leaders.
const LEADERS_PATIENCE: Duration = Duration::from_secs(300);

/// Waits until every partition of a topic just created has a leader, so that what is measured
/// is the produce path, not the node opening replicas.
async fn wait_for_leaders(client: &Client, topic: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + LEADERS_PATIENCE;
    loop {
        let description = client.describe_topic_everywhere(topic).await?;
        let waiting = description
            .partitions
            .iter()
            .filter(|p| p.leader.is_none())
            .count();
        if waiting == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{waiting} of the {} partitions of {topic} have no leader after {} s",
                description.partitions.len(),
                LEADERS_PATIENCE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn consume(args: ConsumeBench) -> anyhow::Result<()> {
    let client = args.connection.connect().await?;
    let topic = client
        .describe_topic(&args.topic)
        .await
        .with_context(|| format!("cannot read topic {}", args.topic))?;
    let mut consumers = Vec::new();
    for p in &topic.partitions {
        consumers.push(
            Consumer::new(&client, &args.topic, p.partition, StartAt::Earliest, false).await?,
        );
    }
    let bar = progress(
        args.records.min(u64::MAX / 2),
        args.json || args.records == u64::MAX,
    );
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut consumer in consumers {
        let bar = bar.clone();
        tasks.spawn(async move {
            let (mut records, mut bytes) = (0u64, 0u64);
            while let Some(batch) = consumer.next_batch().await? {
                records += batch.len() as u64;
                bytes += batch
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
                    .sum::<u64>();
                bar.inc(batch.len() as u64);
            }
            Ok::<_, ClientError>((records, bytes))
        });
    }
    let (mut records, mut bytes) = (0u64, 0u64);
    while let Some(done) = tasks.join_next().await {
        let (r, b) = done.context("a consumer task failed")??;
        records += r;
        bytes += b;
        if records >= args.records {
            tasks.abort_all();
            break;
        }
    }
    bar.finish_and_clear();
    report_consume(records, bytes, start.elapsed(), args.json, "");
    Ok(())
}

/// `bench consume --group`: one group member reads the topic to the end as it was when the
/// bench started.
async fn consume_group(args: ConsumeBench) -> anyhow::Result<()> {
    let client = args.connection.connect().await?;
    let group = args.group.clone().unwrap_or_default();
    let topic = client
        .describe_topic(&args.topic)
        .await
        .with_context(|| format!("cannot read topic {}", args.topic))?;
    let mut end = 0u64;
    for p in &topic.partitions {
        end += client
            .list_offsets(&args.topic, p.partition, StartAt::Latest)
            .await?;
    }
    let total = end.min(args.records);
    let bar = progress(total, args.json);
    let config = quipu_client::GroupConsumerConfig {
        auto_commit_interval: Some(Duration::from_secs(1)),
        client_id: "quipu-bench".to_string(),
        ..quipu_client::GroupConsumerConfig::new(&group, &[&args.topic])
    };
    let start = Instant::now();
    let mut member = quipu_client::GroupConsumer::join(&client, config)
        .await
        .with_context(|| format!("cannot join group {group}"))?;
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut idle_since = Instant::now();
    while records < total {
        let batch = member.poll(100_000).await?;
        if batch.is_empty() {
            if idle_since.elapsed() > Duration::from_secs(10) {
                bail!(
                    "no record for 10 s with {records} of {total} read (committed offsets past the start?)"
                );
            }
            continue;
        }
        idle_since = Instant::now();
        records += batch.len() as u64;
        bytes += batch
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
            .sum::<u64>();
        bar.inc(batch.len() as u64);
    }
    let elapsed = start.elapsed();
    member.close().await?;
    bar.finish_and_clear();
    report_consume(records, bytes, elapsed, args.json, " (one group member)");
    Ok(())
}

/// `bench commits`.
async fn commits(args: CommitsBench) -> anyhow::Result<()> {
    let client = args.connection.connect().await?;
    // The coordinator found (and the offsets topic created) before the clock starts.
    client
        .commit_offsets(&args.group, "", -1, &[("bench".to_string(), 0, 0)])
        .await
        .context("cannot commit a first offset")?;
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..args.tasks {
        let (client, group) = (client.clone(), args.group.clone());
        tasks.spawn(async move {
            let mut latencies = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut offset = 0i64;
            let partition = i32::try_from(task).unwrap_or(i32::MAX);
            while Instant::now() < deadline {
                offset += 1;
                let sent = Instant::now();
                let errors = client
                    .commit_offsets(&group, "", -1, &[("bench".to_string(), partition, offset)])
                    .await?;
                if let Some(error) = errors.into_iter().flatten().next() {
                    anyhow::bail!("a commit was refused: {error}");
                }
                latencies.saturating_record(
                    u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX),
                );
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while let Some(done) = tasks.join_next().await {
        all.add(done.context("a commit task failed")??)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let count = all.len();
    if args.json {
        out!(
            "{}",
            serde_json::json!({
                "commits": count,
                "seconds": seconds,
                "commits_per_second": count as f64 / seconds,
                "latency_ms": {"p50": ms(&all, 0.5), "p99": ms(&all, 0.99), "max": all.max() as f64 / 1000.0},
            })
        );
    } else {
        out!(
            "{count} commits in {seconds:.1} s: {:.0} commits/s from {} tasks; latency p50 {:.2} ms, p99 {:.2} ms",
            count as f64 / seconds,
            args.tasks,
            ms(&all, 0.5),
            ms(&all, 0.99)
        );
    }
    Ok(())
}

/// Prints what a consume bench read: one JSON object, or a line of text (`path` says how).
pub(crate) fn report_consume(records: u64, bytes: u64, elapsed: Duration, json: bool, path: &str) {
    let seconds = elapsed.as_secs_f64();
    let mib = bytes as f64 / seconds / (1024.0 * 1024.0);
    if json {
        out!(
            "{}",
            serde_json::json!({
                "records": records,
                "seconds": seconds,
                "records_per_second": records as f64 / seconds,
                "mib_per_second": mib,
            })
        );
    } else {
        out!(
            "{records} records read in {seconds:.2} s{path}: {:.0} records/s, {mib:.2} MiB/s of values",
            records as f64 / seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pacer never releases a record before it is due, releases each record once, and then
    /// lets every task see that the run is over.
    #[tokio::test]
    async fn the_pacer_releases_each_record_once_due_then_ends() {
        let (rate, records) = (2_000u64, 40u64);
        let begin = Instant::now();
        let pacer = Pacer::start(rate, records, begin, None).unwrap();
        let mut next = 0;
        while let Some(range) = pacer.shared.take().await {
            assert_eq!(range.start, next, "records taken twice or skipped");
            assert!(range.end - range.start <= CLAIM_MAX);
            let last = range.end - 1;
            let due = begin + Duration::from_secs_f64(last as f64 / rate as f64);
            assert!(
                Instant::now() >= due,
                "record {last} released before it was due"
            );
            next = range.end;
        }
        assert_eq!(next, records);
        pacer.finish().await;
    }
}
