//! The client commands of `quipu`: `topic`, `produce`, `consume`, `cluster` (`group` and
//! `consume --group` are in `groups.rs`). Each talks to a cluster through `quipu-client` and
//! prints one clear line on failure.

use crate::output::out;

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use quipu_client::{AckLevel, Client, Consumer, Producer, ProducerConfig, StartAt, TopicConfig};

/// Where the cluster is.
#[derive(Debug, Args)]
pub struct Connection {
    /// API addresses of one or more nodes, separated by commas (default: the nodes of `quipu
    /// dev`).
    #[arg(
        long,
        env = "QUIPU_BOOTSTRAP",
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103",
        value_delimiter = ','
    )]
    bootstrap: Vec<String>,
    /// Connects over TLS, trusting the CA certificates of this PEM file.
    #[arg(long, env = "QUIPU_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), for listeners that require one (with --tls-key).
    #[arg(
        long,
        env = "QUIPU_TLS_CERT",
        requires = "tls_ca",
        requires = "tls_key"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "QUIPU_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Authenticates as this user (over TLS only); its password comes from --password-file or
    /// QUIPU_PASSWORD, never from the command line.
    #[arg(long, env = "QUIPU_USER", requires = "tls_ca")]
    user: Option<String>,
    /// Reads --user's password from this file's first line.
    #[arg(long, env = "QUIPU_PASSWORD_FILE", requires = "user")]
    password_file: Option<std::path::PathBuf>,
}

/// `--user`'s password: the first line of `--password-file`, else `QUIPU_PASSWORD`.
fn password(file: Option<&std::path::PathBuf>) -> anyhow::Result<String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --password-file {}", file.display()))?;
        return Ok(text.lines().next().unwrap_or_default().to_owned());
    }
    std::env::var("QUIPU_PASSWORD").map_err(|_| {
        anyhow::anyhow!("--user needs a password: give --password-file or QUIPU_PASSWORD")
    })
}

impl Connection {
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let tls = quipu_tls::ClientTls::from_options(
            self.tls_ca.as_ref(),
            self.tls_cert.as_ref(),
            self.tls_key.as_ref(),
            &[b"h2"],
        )
        .context("invalid --tls-ca, --tls-cert or --tls-key")?;
        let credentials = match &self.user {
            None => None,
            Some(user) => Some(quipu_client::Credentials {
                user: user.clone(),
                password: password(self.password_file.as_ref())?,
            }),
        };
        let config = quipu_client::ClientConfig {
            tls,
            credentials,
            ..quipu_client::ClientConfig::default()
        };
        let hint = if self.tls_ca.is_none() {
            "cannot reach the cluster (start one with `quipu dev`, or pass --bootstrap; a cluster that serves TLS needs --tls-ca)"
        } else {
            "cannot reach the cluster (start one with `quipu dev --tls`, or pass --bootstrap)"
        };
        Client::connect_with(self.bootstrap.clone(), config)
            .await
            .context(hint)
    }
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Creates a topic.
    ///
    /// Example: quipu topic create orders --partitions 6 --replication-factor 3
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition [default: 3, or the number of nodes if fewer].
        #[arg(long, short = 'r')]
        replication_factor: Option<u32>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Deletes a topic and its data.
    ///
    /// Example: quipu topic delete orders
    Delete { name: String },
    /// Lists topics.
    ///
    /// Example: quipu topic list
    List {
        /// List internal topics too (the consumer groups' __consumer_offsets).
        #[arg(long)]
        include_internal: bool,
    },
    /// Shows a topic's partitions: leader, replicas, offsets and follower lag.
    ///
    /// Example: quipu topic describe orders
    Describe { name: String },
    /// Changes some of a topic's settings; the others keep their values. Applies to every
    /// replica at once, without a restart.
    ///
    /// Example: quipu topic alter-config orders --retention-ms 86400000 --reset segment.bytes
    AlterConfig {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
        /// Returns a setting to the node's default (Kafka name, such as retention.bytes);
        /// repeatable.
        #[arg(long, value_name = "KEY")]
        reset: Vec<String>,
    },
    /// Moves a partition to new replicas (the first is its preferred leader): they catch up,
    /// then become the partition's voters, then the replicas they replace are deleted. Returns
    /// once the move is under way; `topic describe` shows its progress.
    ///
    /// Example: quipu topic move orders --partition 0 --replicas 2,3,4
    Move {
        name: String,
        /// The partition's number.
        #[arg(long)]
        partition: u32,
        /// The new replicas' node ids, preferred leader first.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u64>,
    },
    /// Adds partitions to a topic.
    ///
    /// Example: quipu topic add-partitions orders --count 2
    AddPartitions {
        name: String,
        /// How many partitions to add.
        #[arg(long)]
        count: u32,
    },
}

/// Topic settings, by flag or by Kafka name; the server checks each against its range.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Retention by size, in bytes per partition (-1: unlimited); sets retention.bytes.
    #[arg(long, allow_hyphen_values = true)]
    retention_bytes: Option<i64>,
    /// Retention by age, in ms (-1: unlimited); sets retention.ms.
    #[arg(long, allow_hyphen_values = true)]
    retention_ms: Option<i64>,
    /// Segment size, in bytes (at least 1 MiB); sets segment.bytes.
    #[arg(long)]
    segment_bytes: Option<i64>,
    /// Any setting by its Kafka name: retention.ms, retention.bytes, segment.bytes, segment.ms,
    /// max.message.bytes; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pairs: Vec<(String, String)>,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

impl ConfigArgs {
    /// The settings given, as (Kafka name, value).
    fn pairs(&self) -> Vec<(String, String)> {
        let flags = [
            ("retention.bytes", self.retention_bytes),
            ("retention.ms", self.retention_ms),
            ("segment.bytes", self.segment_bytes),
        ];
        flags
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| (key.to_string(), v.to_string())))
            .chain(self.pairs.iter().cloned())
            .collect()
    }

    fn config(&self) -> TopicConfig {
        TopicConfig {
            entries: self.pairs().into_iter().collect(),
        }
    }
}

pub async fn topic(connection: &Connection, command: TopicCommand) -> anyhow::Result<()> {
    let client = connection.connect().await?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            config,
        } => {
            let replication_factor = match replication_factor {
                Some(r) => r,
                None => {
                    let nodes = client.describe_cluster().await?.nodes.len();
                    u32::try_from(nodes.clamp(1, 3)).unwrap_or(3)
                }
            };
            client
                .create_topic(&name, partitions, replication_factor, config.config())
                .await
                .with_context(|| format!("cannot create topic {name}"))?;
            out!(
                "created topic {name}: {partitions} partitions, replication factor {replication_factor}"
            );
        }
        TopicCommand::Delete { name } => {
            client
                .delete_topic(&name)
                .await
                .with_context(|| format!("cannot delete topic {name}"))?;
            out!("deleted topic {name}");
        }
        TopicCommand::List { include_internal } => {
            out!("{:<32} {:>10} {:>8}", "TOPIC", "PARTITIONS", "REPLICAS");
            for topic in client.list_topics_including(include_internal).await? {
                out!(
                    "{:<32} {:>10} {:>8}",
                    topic.name,
                    topic.partitions.len(),
                    topic.replication_factor
                );
            }
        }
        TopicCommand::Describe { name } => {
            let topic = client
                .describe_topic_everywhere(&name)
                .await
                .with_context(|| format!("cannot describe topic {name}"))?;
            out!(
                "topic {}: replication factor {}",
                topic.name,
                topic.replication_factor
            );
            for entry in &topic.effective_config {
                let source = if entry.is_default {
                    "node default"
                } else {
                    "topic"
                };
                out!("  {} = {} ({source})", entry.name, entry.value);
            }
            out!(
                "{:>9} {:>6} {:<12} {:>12} {:>14} {:>12}  LAG",
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "LOG-START",
                "HIGH-WATERMARK",
                "LOG-END"
            );
            for p in topic.partitions {
                let replicas = p
                    .replicas
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                let mut lag = p
                    .followers
                    .iter()
                    .map(|f| {
                        if f.lag_bytes > 0 {
                            format!("{}:{} (~{} B)", f.node_id, f.lag_entries, f.lag_bytes)
                        } else {
                            format!("{}:{}", f.node_id, f.lag_entries)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                if !p.target_replicas.is_empty() {
                    lag = format!(
                        "{lag}  moving to {} (removing {})",
                        ids(&p.target_replicas),
                        ids(&p.leaving_replicas)
                    );
                }
                out!(
                    "{:>9} {:>6} {:<12} {:>12} {:>14} {:>12}  {}",
                    p.partition,
                    show(p.leader),
                    replicas,
                    show(p.log_start_offset),
                    show(p.high_watermark),
                    show(p.log_end_offset),
                    lag
                );
            }
        }
        TopicCommand::Move {
            name,
            partition,
            replicas,
        } => {
            client
                .move_partition(&name, partition, replicas.clone())
                .await
                .with_context(|| format!("cannot move partition {partition} of {name}"))?;
            out!(
                "partition {partition} of {name} is moving to {}; `quipu topic describe {name}` shows its progress",
                ids(&replicas)
            );
        }
        TopicCommand::AlterConfig {
            name,
            config,
            reset,
        } => {
            client
                .alter_topic_config(&name, &config.pairs(), &reset)
                .await
                .with_context(|| format!("cannot alter topic {name}"))?;
            out!("altered topic {name}");
        }
        TopicCommand::AddPartitions { name, count } => {
            client
                .add_partitions(&name, count)
                .await
                .with_context(|| format!("cannot add partitions to {name}"))?;
            out!("added {count} partitions to {name}");
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The value alone (consume), nothing per record (produce).
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Acks {
    #[value(name = "0")]
    Zero,
    #[value(name = "1")]
    One,
    #[value(name = "all")]
    All,
}

impl From<Acks> for AckLevel {
    fn from(acks: Acks) -> AckLevel {
        match acks {
            Acks::Zero => AckLevel::None,
            Acks::One => AckLevel::Leader,
            Acks::All => AckLevel::All,
        }
    }
}

/// `quipu produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// The key of every record.
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each line at the first SEPARATOR into key and value.
    #[arg(long, value_name = "SEPARATOR")]
    key_separator: Option<String>,
    /// Write every record to this partition (default: by key, as Kafka does; keyless records
    /// go to one partition per batch).
    #[arg(long)]
    partition: Option<u32>,
    /// What each record waits for: 0 (nothing), 1 (the leader), all (a majority).
    #[arg(long, value_enum, default_value = "all")]
    acks: Acks,
    /// `json`: print {"partition":P,"offset":O} for each acknowledged record, in input order.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// How long a batch waits for more records, in ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Bytes that close a batch.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// Bytes of records the producer holds at once, across partitions, until acknowledged
    /// (Kafka's `buffer.memory`); reading input waits for room.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    buffer_bytes: usize,
    /// How long a batch is retried until it is acknowledged, in ms [default: 120000]
    /// (idempotent producers: a retried batch is written once; not with --no-idempotence or
    /// --acks 0).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    delivery_timeout_ms: Option<u64>,
    /// Send plain batches: no producer id, one batch per partition at a time, and a batch whose
    /// outcome is unknown (a leader failed while it was in flight) is reported, not retried.
    /// Acks 0 is always plain.
    #[arg(long)]
    no_idempotence: bool,
    /// Batches of one partition on their way at once, 1 to 5 [default: 5] (idempotent only,
    /// acknowledged in order; not with --no-idempotence or --acks 0).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=5))]
    max_in_flight: Option<u64>,
    #[command(flatten)]
    connection: Connection,
}

/// The producer `quipu produce` runs: idempotent unless `--no-idempotence` or acks 0, and then
/// the idempotent producer's own settings are refused rather than ignored.
fn producer_config(args: &ProduceArgs) -> anyhow::Result<ProducerConfig> {
    let idempotent = !args.no_idempotence && !matches!(args.acks, Acks::Zero);
    if !idempotent && (args.delivery_timeout_ms.is_some() || args.max_in_flight.is_some()) {
        bail!(
            "--delivery-timeout-ms and --max-in-flight apply to idempotent producers only, not with --no-idempotence or --acks 0"
        );
    }
    let defaults = ProducerConfig::default();
    Ok(ProducerConfig {
        linger: std::time::Duration::from_millis(args.linger_ms),
        batch_bytes: args.batch_bytes,
        buffer_bytes: args.buffer_bytes,
        acks: args.acks.into(),
        idempotent,
        delivery_timeout: args
            .delivery_timeout_ms
            .map_or(defaults.delivery_timeout, std::time::Duration::from_millis),
        max_in_flight: args
            .max_in_flight
            .map_or(defaults.max_in_flight, |n| usize::try_from(n).unwrap_or(1)),
        ..defaults
    })
}

/// Acknowledgements waiting to be printed, in input order, before reading waits.
const ACKS_PENDING_MAX: usize = 100_000;

pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let config = producer_config(&args)?;
    let client = args.connection.connect().await?;
    let producer = Producer::new(&client, config);
    // Lines come from a blocking reader thread; acknowledgements are printed by a task in order.
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<String>>(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if lines_tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::channel(ACKS_PENDING_MAX);
    let json = args.format == Format::Json;
    let printer = tokio::spawn(async move {
        let mut failed = 0u64;
        let mut stdout = std::io::BufWriter::new(std::io::stdout());
        while let Some((number, ack)) = acks_rx.recv().await {
            let ack: tokio::sync::oneshot::Receiver<_> = ack;
            match ack.await {
                Ok(Ok(sent)) => {
                    let sent: quipu_client::Sent = sent;
                    if let (true, Some(offset)) = (json, sent.offset) {
                        let _ = writeln!(
                            stdout,
                            "{{\"partition\":{},\"offset\":{offset}}}",
                            sent.partition
                        );
                    }
                }
                Ok(Err(e)) => {
                    failed += 1;
                    eprintln!("line {number}: not acknowledged: {e}");
                }
                Err(_) => {
                    failed += 1;
                    eprintln!("line {number}: not acknowledged: the producer stopped");
                }
            }
            if acks_rx.is_empty() {
                let _ = stdout.flush(); // nothing else to print yet: show what is acknowledged
            }
        }
        let _ = stdout.flush();
        failed
    });
    let mut number = 0u64;
    while let Some(line) = lines.recv().await {
        let line = line.context("cannot read standard input")?;
        number += 1;
        let (key, value) = match (&args.key, &args.key_separator) {
            (Some(key), _) => (Some(key.as_str()), line.as_str()),
            (None, Some(separator)) => match line.split_once(separator.as_str()) {
                Some((key, value)) => (Some(key), value),
                None => (None, line.as_str()),
            },
            (None, None) => (None, line.as_str()),
        };
        let ack = producer
            .send(
                &args.topic,
                args.partition,
                key.map(str::as_bytes),
                Some(value.as_bytes()),
                &[],
            )
            .await
            .with_context(|| format!("cannot produce to {}", args.topic))?;
        if acks_tx.send((number, ack)).await.is_err() {
            break;
        }
    }
    producer.flush().await;
    drop(acks_tx);
    let failed = printer.await.context("the output task failed")?;
    if failed > 0 {
        bail!("{failed} of {number} records were not acknowledged");
    }
    Ok(())
}

/// `quipu consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Read only this partition (default: every partition).
    #[arg(long)]
    partition: Option<u32>,
    /// Where to start: start, end, an offset N, or @<unix-ms> (the first record at or after).
    #[arg(long, default_value = "start")]
    offset: String,
    /// Stop after this many records.
    #[arg(long)]
    num: Option<u64>,
    /// Keep waiting for new records at the end.
    #[arg(long)]
    follow: bool,
    /// `text`: the value alone; `json`: partition, offset, timestamp, key, value, headers.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Consume as a member of this consumer group: the group's coordinator assigns the
    /// partitions, reading starts at the group's committed offsets (else at --offset, start or
    /// end), and what was printed is committed every second and on exit. Keeps following.
    #[arg(long, conflicts_with = "partition")]
    group: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

fn start_at(text: &str) -> anyhow::Result<StartAt> {
    Ok(match text {
        "start" | "earliest" | "beginning" => StartAt::Earliest,
        "end" | "latest" => StartAt::Latest,
        other => match other.strip_prefix('@') {
            Some(ms) => StartAt::Timestamp(
                ms.parse()
                    .with_context(|| format!("--offset {other}: @ must be followed by unix ms"))?,
            ),
            None => StartAt::Offset(other.parse().with_context(|| {
                format!("--offset {other}: expected start, end, a number or @<unix-ms>")
            })?),
        },
    })
}

/// A consumed record as `--format json` prints it (fields in this order; bytes that are not
/// UTF-8 are replaced by U+FFFD).
#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<std::borrow::Cow<'a, str>>,
    value: Option<std::borrow::Cow<'a, str>>,
    headers: Vec<JsonHeader<'a>>,
}

#[derive(serde::Serialize)]
struct JsonHeader<'a> {
    key: &'a str,
    value: Option<std::borrow::Cow<'a, str>>,
}

fn text(bytes: Option<&bytes::Bytes>) -> Option<std::borrow::Cow<'_, str>> {
    bytes.map(|b| String::from_utf8_lossy(b))
}

/// Writes one record as `format` says.
pub(crate) fn print_record(
    out: &mut impl Write,
    record: &quipu_client::ConsumedRecord,
    format: Format,
) -> anyhow::Result<()> {
    if format == Format::Json {
        let line = JsonRecord {
            partition: record.partition,
            offset: record.offset,
            timestamp: record.timestamp_ms,
            key: text(record.key.as_ref()),
            value: text(record.value.as_ref()),
            headers: record
                .headers
                .iter()
                .map(|(key, value)| JsonHeader {
                    key,
                    value: text(value.as_ref()),
                })
                .collect(),
        };
        serde_json::to_writer(&mut *out, &line).context("cannot write to standard output")?;
        writeln!(out).context("cannot write to standard output")?;
    } else {
        let value = record.value.clone().unwrap_or_default();
        out.write_all(&value)
            .and_then(|()| out.write_all(b"\n"))
            .context("cannot write to standard output")?;
    }
    Ok(())
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = args.connection.connect().await?;
    let start = start_at(&args.offset)?;
    if let Some(group) = &args.group {
        return crate::groups::consume(&client, group, &args.topic, start, args.num, args.format)
            .await;
    }
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => {
            let topic = client
                .describe_topic(&args.topic)
                .await
                .with_context(|| format!("cannot read topic {}", args.topic))?;
            topic.partitions.iter().map(|p| p.partition).collect()
        }
    };
    // One task per partition feeds a channel; records of one partition stay in order.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    for partition in partitions {
        let (client, topic, tx) = (client.clone(), args.topic.clone(), tx.clone());
        let follow = args.follow;
        tokio::spawn(async move {
            let mut consumer = match Consumer::new(&client, &topic, partition, start, follow).await
            {
                Ok(consumer) => consumer,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            loop {
                match consumer.next_batch().await {
                    Ok(Some(records)) => {
                        if tx.send(Ok(records)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    let mut printed = 0u64;
    let limit = args.num.unwrap_or(u64::MAX);
    let mut stdout = std::io::BufWriter::new(std::io::stdout());
    while let Some(batch) = rx.recv().await {
        let batch = batch.with_context(|| format!("cannot consume {}", args.topic))?;
        for record in batch {
            if printed == limit {
                stdout.flush().context("cannot write to standard output")?;
                return Ok(());
            }
            print_record(&mut stdout, &record, args.format)?;
            printed += 1;
        }
        stdout.flush().context("cannot write to standard output")?;
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes, the controller leader, and each partition's leader.
    ///
    /// Example: quipu cluster info
    Info,
    /// Each node's health.
    ///
    /// Example: quipu cluster health
    Health,
    /// Spreads replicas and preferred leaders evenly over the nodes (after nodes joined, say).
    /// Shows the plan; `--execute` starts the moves.
    ///
    /// Example: quipu cluster rebalance --execute
    Rebalance {
        /// Start the moves (otherwise only show them).
        #[arg(long)]
        execute: bool,
    },
    /// Hands each partition's leadership to its preferred replica (the first of its replicas)
    /// where that replica is alive and caught up, as after a failover.
    ///
    /// Example: quipu cluster elect-leaders --topic orders
    ElectLeaders {
        /// Only this topic's partitions.
        #[arg(long)]
        topic: Option<String>,
    },
}

/// Node ids as `2,3,4`.
fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// The cluster's nodes: state (joining, active, draining, removed), controller role, rack,
    /// replicas held, partitions led now and partitions it is the preferred leader of.
    ///
    /// Example: quipu node list
    List,
    /// Empties a node: it hands its leaderships over at once, gets no new replicas, and its
    /// replicas move to other nodes. Returns once the moves are under way.
    ///
    /// Example: quipu node drain 3
    Drain {
        /// The node's id.
        id: u64,
    },
    /// Removes a node for good; refused while it holds replicas (drain it first). With --force,
    /// for a node that is gone for good: its replicas are re-created on other nodes from the
    /// surviving ones. Its id is never used again.
    ///
    /// Example: quipu node remove 3 --force
    Remove {
        /// The node's id.
        id: u64,
        /// Remove it although it holds replicas.
        #[arg(long)]
        force: bool,
    },
}

pub async fn node(connection: &Connection, command: NodeCommand) -> anyhow::Result<()> {
    let client = connection.connect().await?;
    match command {
        NodeCommand::List => {
            let cluster = client.describe_cluster().await?;
            // Leaders as the nodes hosting each partition know them (every node asked).
            let mut leading: std::collections::HashMap<u64, usize> =
                std::collections::HashMap::new();
            for topic in client.list_topics_including(true).await? {
                let topic = client.describe_topic_everywhere(&topic.name).await?;
                for leader in topic.partitions.iter().filter_map(|p| p.leader) {
                    *leading.entry(leader).or_insert(0) += 1;
                }
            }
            out!(
                "{:>5} {:<9} {:<10} {:<8} {:<22} {:<22} {:>8} {:>8} {:>9} {:<5}",
                "NODE",
                "STATE",
                "CONTROLLER",
                "RACK",
                "API",
                "KAFKA",
                "REPLICAS",
                "LEADERS",
                "PREFERRED",
                "ALIVE"
            );
            for n in &cluster.nodes {
                let dash = |s: &str| {
                    if s.is_empty() {
                        "-".to_string()
                    } else {
                        s.to_string()
                    }
                };
                out!(
                    "{:>5} {:<9} {:<10} {:<8} {:<22} {:<22} {:>8} {:>8} {:>9} {:<5}",
                    n.node_id,
                    n.state,
                    dash(&n.controller_role),
                    dash(&n.rack),
                    dash(&n.api_addr),
                    dash(&n.kafka_addr),
                    n.replicas,
                    leading.get(&n.node_id).copied().unwrap_or(0),
                    n.preferred_leaders,
                    if n.alive { "yes" } else { "no" }
                );
            }
        }
        NodeCommand::Drain { id } => {
            client
                .drain_node(id)
                .await
                .with_context(|| format!("cannot drain node {id}"))?;
            out!("node {id} is draining; `quipu node list` shows the replicas it still holds");
        }
        NodeCommand::Remove { id, force } => {
            client
                .remove_node(id, force)
                .await
                .with_context(|| format!("cannot remove node {id}"))?;
            out!("node {id} is removed; its id is never used again");
        }
    }
    Ok(())
}

pub async fn cluster(connection: &Connection, command: ClusterCommand) -> anyhow::Result<()> {
    let client = connection.connect().await?;
    let cluster = client.describe_cluster().await?;
    match command {
        ClusterCommand::Rebalance { execute } => {
            let plan = client.rebalance(execute).await?;
            if plan.moves.is_empty() {
                out!("replicas and preferred leaders are even: nothing to move");
                return Ok(());
            }
            out!(
                "{:<30} {:>9} {:<14} {:<14}",
                "TOPIC",
                "PARTITION",
                "REPLICAS",
                "MOVE-TO"
            );
            for m in &plan.moves {
                out!(
                    "{:<30} {:>9} {:<14} {:<14}",
                    m.topic,
                    m.partition,
                    ids(&m.replicas),
                    ids(&m.target_replicas)
                );
            }
            if execute {
                out!(
                    "{} partitions are moving; `quipu topic describe` shows their progress",
                    plan.started
                );
            } else {
                out!("a plan only: run with --execute to start these moves");
            }
        }
        ClusterCommand::ElectLeaders { topic } => {
            let elected = client.elect_preferred_leaders(topic.as_deref()).await?;
            out!("{elected} partitions handed to their preferred replicas");
        }
        ClusterCommand::Info => {
            out!(
                "controller leader: {}",
                cluster
                    .controller_leader
                    .map_or("none".to_string(), |l| format!("node {l}"))
            );
            out!("{:>5} {:<22} {:<22} {:<6}", "NODE", "API", "RAFT", "ALIVE");
            for node in &cluster.nodes {
                out!(
                    "{:>5} {:<22} {:<22} {:<6}",
                    node.node_id,
                    node.api_addr,
                    node.raft_addr,
                    match (node.joining, node.alive) {
                        (true, _) => "joining",
                        (false, true) => "yes",
                        (false, false) => "no",
                    }
                );
            }
            for topic in client.list_topics().await? {
                let topic = client.describe_topic_everywhere(&topic.name).await?;
                let leaders = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        format!(
                            "{}:{}",
                            p.partition,
                            p.leader.map_or("-".to_string(), |l| l.to_string())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                out!("topic {} leaders (partition:node): {leaders}", topic.name);
            }
        }
        ClusterCommand::Health => {
            let mut unhealthy = 0;
            for node in &cluster.nodes {
                match client.health(&node.api_addr).await {
                    Ok(h) => {
                        // The node's own readiness, as its /readyz answers.
                        if !h.ready {
                            unhealthy += 1;
                        }
                        out!(
                            "node {}: {} (controller {}, {} replicas, {} failed){}",
                            h.node_id,
                            if h.ready { "ready" } else { "NOT READY" },
                            if h.controller_available {
                                "available"
                            } else {
                                "unavailable"
                            },
                            h.replicas,
                            h.failed_replicas,
                            if h.not_ready_because.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", h.not_ready_because.join("; "))
                            }
                        );
                    }
                    Err(e) => {
                        unhealthy += 1;
                        out!("node {}: DOWN ({e})", node.node_id);
                    }
                }
            }
            if unhealthy > 0 {
                bail!("{unhealthy} of {} nodes are not ready", cluster.nodes.len());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Produce {
        #[command(flatten)]
        args: ProduceArgs,
    }

    fn config(line: &str) -> anyhow::Result<ProducerConfig> {
        let parsed = Produce::try_parse_from(line.split_whitespace()).unwrap();
        producer_config(&parsed.args)
    }

    #[test]
    fn idempotence_is_the_default_and_its_settings_are_refused_where_it_is_off() {
        let default = config("produce t").unwrap();
        assert!(default.idempotent);
        assert_eq!(default.max_in_flight, quipu_client::IN_FLIGHT_MAX);
        let set = config("produce t --max-in-flight 1 --delivery-timeout-ms 5000").unwrap();
        assert_eq!(set.max_in_flight, 1);
        assert_eq!(set.delivery_timeout, std::time::Duration::from_secs(5));
        assert!(!config("produce t --no-idempotence").unwrap().idempotent);
        assert!(!config("produce t --acks 0").unwrap().idempotent);
        for line in [
            "produce t --no-idempotence --max-in-flight 2",
            "produce t --acks 0 --delivery-timeout-ms 1000",
        ] {
            let error = config(line).unwrap_err().to_string();
            assert!(
                error.contains("idempotent producers only"),
                "{line}: {error}"
            );
        }
    }
}
