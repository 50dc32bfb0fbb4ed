//! The workload, run in the client namespace (`quipu-jepsen workload`): producer processes send
//! unique values to partitions, consumer processes poll partitions from their positions, members
//! of a consumer group poll what the coordinator assigns them, commit, crash or leave and rejoin
//! (their committed offsets read every half second), and the history records every operation. Commands arrive on stdin, one per line:
//!
//! - `nemesis start <fault>` / `nemesis end <fault>`: recorded as the nemesis's lines;
//! - `final`: stop sending and polling, drain every partition from the start with every consumer
//!   process, read every replica (`Data.ReadReplica`), print `done` and exit.
//!
//! `ready` is printed once the topic exists and every partition has a leader.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use quipu_client::{AckLevel, Client, ClientConfig, ClientError, Consumer, StartAt, TopicConfig};
use quipu_record::{BatchBuilder, Compression};
use tokio::io::AsyncBufReadExt;

use crate::history::{F, NEMESIS, OpType, Read, Recorder, Value};
use crate::rng::Rng;

/// The topic every run uses.
pub const TOPIC: &str = "jepsen";
/// First process number of the consumers (producers are numbered from 0 and take a new number
/// after each unknown outcome, far below this).
const CONSUMER_PROCESS_BASE: i64 = 1_000_000_000;
/// Process number of the replica reads.
const REPLICA_PROCESS: i64 = 2_000_000_000;

/// What the workload does.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkloadArgs {
    /// API addresses of every node, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Partitions of the topic (each one is a key of the history).
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Replicas per partition.
    #[arg(long, default_value_t = 3)]
    pub replication: u32,
    /// Producer processes.
    #[arg(long, default_value_t = 3)]
    pub producers: u32,
    /// Consumer processes.
    #[arg(long, default_value_t = 2)]
    pub consumers: u32,
    /// Members of the consumer group (each joins, polls, commits, leaves or crashes, rejoins).
    #[arg(long, default_value_t = 2)]
    pub members: u32,
    /// Sends per second, all producers together.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Longest time one operation may take before it is recorded as `info`, in ms.
    #[arg(long, default_value_t = 5000)]
    pub op_timeout_ms: u64,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the history is written.
    #[arg(long)]
    pub history: PathBuf,
    /// Connects over TLS, trusting this CA (PEM)...
    #[arg(long, requires = "tls_cert", requires = "tls_key")]
    pub tls_ca: Option<PathBuf>,
    /// ...presenting this client certificate (PEM)...
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// ...and its key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
}

/// The history, shared by every process of the workload.
type Shared = Arc<Mutex<Recorder>>;

fn record(history: &Shared, process: i64, kind: OpType, f: F, value: Value, error: Option<String>) {
    let mut recorder = history.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = recorder.record(process, kind, f, value, error) {
        eprintln!("cannot write the history: {e}");
        std::process::exit(2);
    }
}

/// Runs the workload until `final` arrives on stdin and is carried out.
pub async fn run(args: WorkloadArgs) -> anyhow::Result<()> {
    let history: Shared = Arc::new(Mutex::new(Recorder::create(&args.history)?));
    let op_timeout = Duration::from_millis(args.op_timeout_ms);
    let config = ClientConfig {
        request_timeout: op_timeout,
        retry_deadline: op_timeout / 2,
        retry_backoff: Duration::from_millis(50),
        tls: quipu_tls::ClientTls::from_options(
            args.tls_ca.as_ref(),
            args.tls_cert.as_ref(),
            args.tls_key.as_ref(),
            &[b"h2"],
        )
        .context("invalid --tls-ca, --tls-cert or --tls-key")?,
        credentials: None,
    };
    let admin = connect(&args.bootstrap, config.clone()).await?;
    prepare_topic(&admin, &args).await?;
    println!("ready");

    let stop = Arc::new(AtomicBool::new(false));
    let next_value = Arc::new(AtomicU64::new(1));
    let mut rng = Rng::new(args.seed);
    let mut tasks = Vec::new();
    for producer in 0..args.producers {
        let client = Client::connect_with(args.bootstrap.clone(), config.clone()).await?;
        let interval = Duration::from_secs_f64(f64::from(args.producers) / f64::from(args.rate));
        tasks.push(tokio::spawn(produce_loop(
            client,
            i64::from(producer),
            i64::from(args.producers),
            args.partitions,
            interval,
            op_timeout,
            rng.fork(),
            Arc::clone(&next_value),
            Arc::clone(&stop),
            Arc::clone(&history),
        )));
    }
    for consumer in 0..args.consumers {
        let client = Client::connect_with(args.bootstrap.clone(), config.clone()).await?;
        tasks.push(tokio::spawn(poll_loop(
            client,
            CONSUMER_PROCESS_BASE + i64::from(consumer),
            args.partitions,
            op_timeout,
            Arc::clone(&stop),
            Arc::clone(&history),
        )));
    }
    for member in 0..args.members {
        let client = Client::connect_with(args.bootstrap.clone(), config.clone()).await?;
        tasks.push(tokio::spawn(member_loop(
            client,
            MEMBER_PROCESS_BASE + i64::from(member),
            i64::from(args.members),
            op_timeout,
            rng.fork(),
            Arc::clone(&stop),
            Arc::clone(&history),
        )));
    }
    let committed_client = Client::connect_with(args.bootstrap.clone(), config.clone()).await?;
    if args.members > 0 {
        tasks.push(tokio::spawn(committed_loop(
            committed_client.clone(),
            op_timeout,
            Arc::clone(&stop),
            Arc::clone(&history),
        )));
    }
    let flusher = {
        let history = Arc::clone(&history);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = history.lock().unwrap_or_else(|e| e.into_inner()).flush();
            }
        })
    };

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(fault) = line.strip_prefix("nemesis start ") {
            record(
                &history,
                NEMESIS,
                OpType::Invoke,
                F::Nemesis,
                fault_value(fault),
                None,
            );
        } else if let Some(fault) = line.strip_prefix("nemesis end ") {
            record(
                &history,
                NEMESIS,
                OpType::Info,
                F::Nemesis,
                fault_value(fault),
                None,
            );
        } else if line == "final" {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await?;
    }
    if args.members > 0 {
        read_committed(&committed_client, op_timeout, &history).await;
    }
    let drained = drain_all(&admin, &args, op_timeout, &history).await;
    read_replicas(&admin, &drained, &history).await?;
    flusher.abort();
    history.lock().unwrap_or_else(|e| e.into_inner()).flush()?;
    println!("done");
    Ok(())
}

fn fault_value(fault: &str) -> Value {
    Value {
        fault: Some(fault.to_string()),
        ..Value::default()
    }
}

/// Connects, waiting up to two minutes for the cluster to answer.
async fn connect(bootstrap: &[String], config: ClientConfig) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match Client::connect_with(bootstrap.to_vec(), config.clone()).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("the cluster did not answer within 2 minutes");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Creates the topic and waits until every partition has a leader.
async fn prepare_topic(client: &Client, args: &WorkloadArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let created = client
            .create_topic(
                TOPIC,
                args.partitions,
                args.replication,
                TopicConfig::default(),
            )
            .await;
        match created {
            Ok(()) | Err(ClientError::TopicExists(_)) => break,
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("cannot create the topic");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    loop {
        // Every node's answer merged: a node knows the leaders of the partitions it hosts.
        let led = client
            .describe_topic_everywhere(TOPIC)
            .await
            .map(|t| t.partitions.iter().all(|p| p.leader.is_some()))
            .unwrap_or(false);
        if led {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the partitions of {TOPIC} have no leaders after 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One record whose value is `value` in decimal, from idempotent producer `id` at `epoch` with
/// sequence number `sequence`.
fn one_record(value: u64, id: i64, epoch: i16, sequence: i32) -> anyhow::Result<bytes::Bytes> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut builder = BatchBuilder::new(0, Compression::None).with_producer(id, epoch, sequence);
    builder.push(now, None, Some(value.to_string().as_bytes()), &[]);
    Ok(builder.build()?)
}

/// A producer loop's idempotent producer: its id, epoch and each partition's next sequence.
struct Idempotent {
    id: i64,
    epoch: i16,
    next: Vec<i32>,
}

/// What a failed send proves: `Fail` only when the client says nothing was or will be written.
fn send_outcome(error: &ClientError) -> OpType {
    match error {
        ClientError::Unavailable(_)
        | ClientError::UnknownTopic(_)
        | ClientError::UnknownPartition(_)
        | ClientError::InvalidArgument(_)
        | ClientError::MessageTooLarge(_)
        | ClientError::TopicExists(_)
        | ClientError::LimitExceeded(_)
        | ClientError::OffsetOutOfRange(_)
        | ClientError::OutOfOrderSequence(_)
        | ClientError::ProducerRefused(_)
        | ClientError::NotAuthorized(_)
        | ClientError::NotAuthenticated(_) => OpType::Fail,
        // Group and node errors never come from a produce; if one did, it would prove nothing.
        ClientError::UnknownMember(_)
        | ClientError::FencedMember(_)
        | ClientError::GroupNotEmpty(_)
        | ClientError::UnknownGroup(_)
        | ClientError::GroupRefused(_)
        | ClientError::UnknownNode(_) => OpType::Info,
        ClientError::UnknownOutcome(_)
        | ClientError::Unreachable { .. }
        | ClientError::Other(_) => OpType::Info,
    }
}

#[allow(clippy::too_many_arguments)]
async fn produce_loop(
    client: Client,
    first_process: i64,
    process_step: i64,
    partitions: u32,
    interval: Duration,
    op_timeout: Duration,
    mut rng: Rng,
    next_value: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    history: Shared,
) {
    let mut process = first_process;
    let mut next_at = tokio::time::Instant::now();
    // Taken before the first send, and again after a send whose outcome stayed unknown (its
    // partition's sequence is then unknown too).
    let mut producer: Option<Idempotent> = None;
    while !stop.load(Ordering::SeqCst) {
        // Jittered pacing: on average `interval` between sends.
        let mean = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX / 2);
        let jitter = rng.between(0, 2 * mean);
        next_at += Duration::from_micros(jitter);
        tokio::time::sleep_until(next_at).await;
        // A send that took long does not cause a burst of catching-up sends.
        let now = tokio::time::Instant::now();
        next_at = next_at.max(now.checked_sub(interval).unwrap_or(now));
        let state = match producer.as_mut() {
            Some(state) => state,
            None => match tokio::time::timeout(op_timeout, client.init_producer_id()).await {
                Ok(Ok((id, epoch))) => producer.insert(Idempotent {
                    id,
                    epoch,
                    next: vec![0; partitions as usize],
                }),
                // No producer id yet (the controller is unavailable): no send this round.
                _ => continue,
            },
        };
        let partition = u32::try_from(rng.below(u64::from(partitions))).unwrap_or(0);
        let sequence = state.next[partition as usize];
        let (id, epoch) = (state.id, state.epoch);
        let value = next_value.fetch_add(1, Ordering::SeqCst);
        let asked = Value {
            partition: Some(partition),
            value: Some(value),
            ..Value::default()
        };
        record(
            &history,
            process,
            OpType::Invoke,
            F::Send,
            asked.clone(),
            None,
        );
        // Retried by the client, whatever the outcome of each try, until acknowledged or the
        // op times out: the checker's duplicate rule then covers every retry.
        let sent = match one_record(value, id, epoch, sequence) {
            Ok(batch) => {
                tokio::time::timeout(
                    op_timeout,
                    client.produce_idempotent(TOPIC, partition, batch, AckLevel::All, op_timeout),
                )
                .await
            }
            Err(e) => Ok(Err(ClientError::InvalidArgument(e.to_string()))),
        };
        // Only a refusal of this very batch (it is invalid) proves its sequence number unused.
        let batch_refused = matches!(
            sent,
            Ok(Err(
                ClientError::InvalidArgument(_) | ClientError::MessageTooLarge(_)
            ))
        );
        let (kind, offset, error) = match sent {
            Ok(Ok(offset)) => (OpType::Ok, Some(offset), None),
            Ok(Err(e)) => (send_outcome(&e), None, Some(e.to_string())),
            Err(_) => (OpType::Info, None, Some("timeout".to_string())),
        };
        if kind == OpType::Ok {
            if let Some(state) = producer.as_mut() {
                state.next[partition as usize] = quipu_record::add_sequence(sequence, 1);
            }
        } else if !batch_refused {
            // Unknown, refused by the sequence rules, or failed for a reason that does not name
            // this batch: its sequence number may be taken, so it is never used for another
            // value; the producer starts over with a new producer id.
            producer = None;
        }
        record(
            &history,
            process,
            kind,
            F::Send,
            Value { offset, ..asked },
            error,
        );
        if kind == OpType::Info {
            // The outcome is unknown and may resolve later: later sends are another process's.
            process += process_step;
        }
    }
}

async fn poll_loop(
    client: Client,
    process: i64,
    partitions: u32,
    op_timeout: Duration,
    stop: Arc<AtomicBool>,
    history: Shared,
) {
    let mut positions: Vec<u64> = vec![0; partitions as usize];
    let mut partition = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let from = positions[partition as usize];
        let asked = Value {
            partition: Some(partition),
            from: Some(from),
            ..Value::default()
        };
        record(
            &history,
            process,
            OpType::Invoke,
            F::Poll,
            asked.clone(),
            None,
        );
        let polled = tokio::time::timeout(op_timeout, async {
            let mut consumer =
                Consumer::new(&client, TOPIC, partition, StartAt::Offset(from), false).await?;
            consumer.next_batch().await
        })
        .await;
        match polled {
            Ok(Ok(batch)) => {
                let records: Vec<Read> = batch
                    .unwrap_or_default()
                    .iter()
                    .map(|r| (r.offset, parse_value(r.value.as_deref())))
                    .collect();
                if let Some(&(last, _)) = records.last() {
                    positions[partition as usize] = last + 1;
                }
                let value = Value {
                    records: Some(records),
                    ..asked
                };
                record(&history, process, OpType::Ok, F::Poll, value, None);
            }
            Ok(Err(e)) => {
                let kind = match e {
                    ClientError::OffsetOutOfRange(_) => OpType::Fail,
                    _ => OpType::Info,
                };
                record(&history, process, kind, F::Poll, asked, Some(e.to_string()));
            }
            Err(_) => record(
                &history,
                process,
                OpType::Info,
                F::Poll,
                asked,
                Some("timeout".to_string()),
            ),
        }
        partition = (partition + 1) % partitions;
    }
}

/// A record's value as sent (decimal); anything else reads as 0, which is never sent.
fn parse_value(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Every consumer process reads every partition from offset 0 to its end. Returns the end each
/// partition was drained to.
async fn drain_all(
    client: &Client,
    args: &WorkloadArgs,
    op_timeout: Duration,
    history: &Shared,
) -> BTreeMap<u32, u64> {
    let mut ends = BTreeMap::new();
    for consumer in 0..args.consumers {
        let process = CONSUMER_PROCESS_BASE + i64::from(consumer);
        for partition in 0..args.partitions {
            let asked = Value {
                partition: Some(partition),
                from: Some(0),
                ..Value::default()
            };
            record(
                history,
                process,
                OpType::Invoke,
                F::Drain,
                asked.clone(),
                None,
            );
            match drain(client, partition, op_timeout).await {
                Ok(records) => {
                    let end = records.last().map_or(0, |(o, _)| o + 1);
                    ends.entry(partition)
                        .and_modify(|e: &mut u64| *e = (*e).max(end))
                        .or_insert(end);
                    let value = Value {
                        records: Some(records),
                        ..asked
                    };
                    record(history, process, OpType::Ok, F::Drain, value, None);
                }
                Err(e) => record(
                    history,
                    process,
                    OpType::Info,
                    F::Drain,
                    asked,
                    Some(format!("{e:#}")),
                ),
            }
        }
    }
    ends
}

/// Reads one partition from 0 to its end: the end is where a read stops and, a second later, the
/// leader's high watermark still says so. Gives up after two minutes.
async fn drain(client: &Client, partition: u32, op_timeout: Duration) -> anyhow::Result<Vec<Read>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut consumer = loop {
        match Consumer::new(client, TOPIC, partition, StartAt::Offset(0), false).await {
            Ok(consumer) => break consumer,
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut records = Vec::new();
    let mut last_error = None;
    while Instant::now() < deadline {
        match tokio::time::timeout(op_timeout, consumer.next_batch()).await {
            Ok(Ok(Some(batch))) => records.extend(
                batch
                    .iter()
                    .map(|r| (r.offset, parse_value(r.value.as_deref()))),
            ),
            Ok(Ok(None)) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                match client.list_offsets(TOPIC, partition, StartAt::Latest).await {
                    Ok(end) if end == consumer.position() => return Ok(records),
                    Ok(_) => {}
                    Err(e) => last_error = Some(e.to_string()),
                }
            }
            Ok(Err(e)) => {
                last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => last_error = Some("timeout".to_string()),
        }
    }
    anyhow::bail!(
        "partition {partition} was not drained to its end within two minutes (last error: {})",
        last_error.unwrap_or_else(|| "none".to_string())
    )
}

/// Reads every replica of every partition on its own node, once its high watermark reached the
/// drained end (or after 30 s).
async fn read_replicas(
    client: &Client,
    drained: &BTreeMap<u32, u64>,
    history: &Shared,
) -> anyhow::Result<()> {
    let cluster = client.describe_cluster().await?;
    let topic = client.describe_topic(TOPIC).await?;
    for assignment in &topic.partitions {
        let partition = assignment.partition;
        let end = drained.get(&partition).copied().unwrap_or(0);
        for node in &assignment.replicas {
            let Some(addr) = cluster
                .nodes
                .iter()
                .find(|n| n.node_id == *node)
                .map(|n| n.api_addr.clone())
            else {
                continue;
            };
            let asked = Value {
                partition: Some(partition),
                node: Some(*node),
                ..Value::default()
            };
            record(
                history,
                REPLICA_PROCESS,
                OpType::Invoke,
                F::Replica,
                asked.clone(),
                None,
            );
            // A replica behind gets 30 s to catch up; one that cannot be read (not open on its
            // node, say) gets 5 s to become readable.
            let started = Instant::now();
            let read = loop {
                let read = read_replica(client, &addr, partition).await;
                let patience = match &read {
                    Ok((hw, _, _)) if *hw >= end => Duration::ZERO,
                    Ok(_) => Duration::from_secs(30),
                    Err(_) => Duration::from_secs(5),
                };
                if started.elapsed() >= patience {
                    break read;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            match read {
                Ok((high_watermark, from, records)) => {
                    let value = Value {
                        high_watermark: Some(high_watermark),
                        from: Some(from),
                        records: Some(records),
                        ..asked
                    };
                    record(
                        history,
                        REPLICA_PROCESS,
                        OpType::Ok,
                        F::Replica,
                        value,
                        None,
                    );
                }
                Err(e) => record(
                    history,
                    REPLICA_PROCESS,
                    OpType::Info,
                    F::Replica,
                    asked,
                    Some(format!("{e:#}")),
                ),
            }
        }
    }
    Ok(())
}

/// One replica's whole log: (its high watermark, its log start, the records).
async fn read_replica(
    client: &Client,
    addr: &str,
    partition: u32,
) -> anyhow::Result<(u64, u64, Vec<Read>)> {
    let whole = client.read_whole_replica(addr, TOPIC, partition).await?;
    let records = whole
        .records
        .iter()
        .map(|r| (r.offset, parse_value(r.value.as_deref())))
        .collect();
    Ok((whole.high_watermark, whole.log_start_offset, records))
}

/// The consumer group the members form.
const GROUP: &str = "jepsen-group";
/// First process number of the group members (each member takes a new number when it rejoins
/// and after a commit whose outcome is unknown).
const MEMBER_PROCESS_BASE: i64 = 1_500_000_000;
/// Process number of the committed-offsets reads.
const COMMITTED_PROCESS: i64 = 1_900_000_000;

/// A group member: joins, polls the partitions it is assigned and commits what it polled every
/// few hundred ms, then leaves or crashes (drops its membership without leaving: the coordinator
/// expires it after its session), pauses, and joins again, until `stop`.
#[allow(clippy::too_many_arguments)]
async fn member_loop(
    client: Client,
    first_process: i64,
    process_step: i64,
    op_timeout: Duration,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
    history: Shared,
) {
    let mut process = first_process;
    while !stop.load(Ordering::SeqCst) {
        let config = quipu_client::GroupConsumerConfig {
            auto_commit_interval: None,
            client_id: format!("jepsen-member-{process}"),
            rebalance_timeout_ms: 10_000,
            ..quipu_client::GroupConsumerConfig::new(GROUP, &[TOPIC])
        };
        let joined = tokio::time::timeout(
            op_timeout,
            quipu_client::GroupConsumer::join(&client, config),
        )
        .await;
        let Ok(Ok(mut member)) = joined else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let until = tokio::time::Instant::now() + Duration::from_millis(rng.between(2000, 6000));
        let mut next_commit = tokio::time::Instant::now();
        while tokio::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
            let polled = tokio::time::timeout(op_timeout, member.poll(500)).await;
            let Ok(Ok(records)) = polled else {
                break; // the member is broken (fenced, no coordinator): rejoin
            };
            let mut by_partition: BTreeMap<u32, Vec<Read>> = BTreeMap::new();
            for r in &records {
                by_partition
                    .entry(r.partition)
                    .or_default()
                    .push((r.offset, parse_value(r.value.as_deref())));
            }
            for (partition, records) in by_partition {
                let value = Value {
                    partition: Some(partition),
                    from: records.first().map(|r| r.0),
                    ..Value::default()
                };
                record(
                    &history,
                    process,
                    OpType::Invoke,
                    F::GroupPoll,
                    value.clone(),
                    None,
                );
                let value = Value {
                    records: Some(records),
                    ..value
                };
                record(&history, process, OpType::Ok, F::GroupPoll, value, None);
            }
            if tokio::time::Instant::now() >= next_commit {
                next_commit = tokio::time::Instant::now() + Duration::from_millis(300);
                let offsets: Vec<(u32, u64)> = member
                    .positions()
                    .into_iter()
                    .filter(|(topic, ..)| topic == TOPIC)
                    .filter_map(|(_, p, o)| Some((u32::try_from(p).ok()?, o)))
                    .collect();
                let asked = Value {
                    offsets: Some(offsets),
                    ..Value::default()
                };
                record(
                    &history,
                    process,
                    OpType::Invoke,
                    F::Commit,
                    asked.clone(),
                    None,
                );
                let (kind, error) = match tokio::time::timeout(op_timeout, member.commit()).await {
                    Ok(Ok(())) => (OpType::Ok, None),
                    // Refused by the group's checks before anything was written.
                    Ok(Err(
                        e @ (ClientError::UnknownMember(_)
                        | ClientError::FencedMember(_)
                        | ClientError::GroupRefused(_)),
                    )) => (OpType::Fail, Some(e.to_string())),
                    Ok(Err(e)) => (OpType::Info, Some(e.to_string())),
                    Err(_) => (OpType::Info, Some("timeout".to_string())),
                };
                record(&history, process, kind, F::Commit, asked, error);
                if kind != OpType::Ok {
                    // Its outcome may resolve later, or the member was fenced: go on as another
                    // process, after rejoining.
                    break;
                }
            }
        }
        if rng.below(2) == 0 {
            let _ = tokio::time::timeout(op_timeout, member.close()).await;
        } else {
            drop(member); // a crash: the coordinator expires it after its session timeout
        }
        process += process_step;
        tokio::time::sleep(Duration::from_millis(rng.between(0, 1000))).await;
    }
}

/// Reads the group's committed offsets every half second until `stop`, then once more.
async fn committed_loop(
    client: Client,
    op_timeout: Duration,
    stop: Arc<AtomicBool>,
    history: Shared,
) {
    while !stop.load(Ordering::SeqCst) {
        read_committed(&client, op_timeout, &history).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One read of the group's committed offsets, recorded.
async fn read_committed(client: &Client, op_timeout: Duration, history: &Shared) {
    record(
        history,
        COMMITTED_PROCESS,
        OpType::Invoke,
        F::Committed,
        Value::default(),
        None,
    );
    match tokio::time::timeout(op_timeout, client.fetch_offsets(GROUP, &[])).await {
        Ok(Ok(committed)) => {
            let offsets = committed
                .into_iter()
                .filter(|c| c.topic == TOPIC && c.offset >= 0)
                .filter_map(|c| {
                    Some((
                        u32::try_from(c.partition).ok()?,
                        u64::try_from(c.offset).ok()?,
                    ))
                })
                .collect();
            let value = Value {
                offsets: Some(offsets),
                ..Value::default()
            };
            record(
                history,
                COMMITTED_PROCESS,
                OpType::Ok,
                F::Committed,
                value,
                None,
            );
        }
        Ok(Err(e)) => record(
            history,
            COMMITTED_PROCESS,
            OpType::Info,
            F::Committed,
            Value::default(),
            Some(e.to_string()),
        ),
        Err(_) => record(
            history,
            COMMITTED_PROCESS,
            OpType::Info,
            F::Committed,
            Value::default(),
            Some("timeout".to_string()),
        ),
    }
}
