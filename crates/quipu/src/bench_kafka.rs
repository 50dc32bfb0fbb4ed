//! `quipu bench kafka-consume`: reads a topic through a node's Kafka listener with the Kafka wire
//! protocol itself (Metadata, ListOffsets, then Fetch per partition leader, one request in flight
//! per partition, as librdkafka does), decoding every record as `quipu bench consume` does over
//! gRPC: a Kafka consumer without a client library's per-record cost, to compare the two paths.

use std::time::Instant;

use anyhow::{Context, bail};
use bytes::{BufMut, BytesMut};
use clap::Args;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Versions this bench speaks (Kafka 4's clients use these or later).
const METADATA_VERSION: i16 = 12;
const LIST_OFFSETS_VERSION: i16 = 7;
const FETCH_VERSION: i16 = 12;
/// Largest response frame this bench reads.
const RESPONSE_BYTES_MAX: usize = 128 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct KafkaConsumeBench {
    /// A node's Kafka listener, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka_bootstrap: String,
    /// Topic to read, every partition from its log start to its high watermark at the start.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Most bytes one Fetch answer carries per partition (librdkafka's
    /// max.partition.fetch.bytes; Kafka's default is 1 MiB).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    partition_max_bytes: i32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Connects over TLS (Kafka's SSL), trusting the CA certificates of this PEM file.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
}

/// A connection's byte stream: TCP, or TLS over TCP.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for S {}

/// One connection speaking the Kafka protocol, one request at a time.
struct Connection {
    stream: Box<dyn Stream>,
    correlation: i32,
    /// Where answers are read into, reused once the answer before has been dropped.
    room: BytesMut,
}

impl Connection {
    async fn open(
        addr: &str,
        tls: Option<&std::sync::Arc<quipu_tls::ClientTls>>,
    ) -> anyhow::Result<Connection> {
        let failed = || format!("cannot connect to the Kafka listener at {addr}");
        let stream: Box<dyn Stream> = match tls {
            None => {
                let stream = TcpStream::connect(addr).await.with_context(failed)?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            Some(tls) => {
                let (host, port) = addr
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                    .with_context(|| format!("{addr} is not HOST:PORT"))?;
                Box::new(tls.connect(host, port).await.with_context(failed)?)
            }
        };
        Ok(Connection {
            stream,
            correlation: 0,
            room: BytesMut::new(),
        })
    }

    async fn call<Q: Encodable + Message, R: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Q,
    ) -> anyhow::Result<R> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("quipu-bench")));
        let mut body = BytesMut::new();
        header.encode(&mut body, key.request_header_version(version))?;
        request.encode(&mut body, version)?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(i32::try_from(body.len()).context("request too large")?);
        frame.put_slice(&body);
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        let size = usize::try_from(self.stream.read_i32().await?).context("negative frame size")?;
        if size > RESPONSE_BYTES_MAX {
            bail!("a response of {size} bytes is larger than this bench reads");
        }
        // Read into the connection's own buffer: a fresh zeroed one per answer cost this client
        // a memset and a page fault per 4 KiB of every fetch.
        let mut answer = quipu_kafka::read_exactly(&mut self.stream, size, &mut self.room).await?;
        let header = ResponseHeader::decode(&mut answer, key.response_header_version(version))?;
        if header.correlation_id != self.correlation {
            bail!(
                "answer to request {} came for {}",
                self.correlation,
                header.correlation_id
            );
        }
        R::decode(&mut answer, version)
    }
}

/// A partition to read: its leader's address and the offsets to read between.
struct Work {
    partition: i32,
    leader: String,
    from: i64,
    to: i64,
}

pub async fn kafka_consume(args: KafkaConsumeBench) -> anyhow::Result<()> {
    let tls = quipu_tls::ClientTls::from_options(args.tls_ca.as_ref(), None, None, &[])
        .context("invalid --tls-ca")?;
    let mut bootstrap = Connection::open(&args.kafka_bootstrap, tls.as_ref()).await?;
    let topic = TopicName(StrBytes::from_string(args.topic.clone()));
    let metadata: MetadataResponse = bootstrap
        .call(
            ApiKey::Metadata,
            METADATA_VERSION,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic.clone())),
            ])),
        )
        .await?;
    let brokers: std::collections::HashMap<BrokerId, String> = metadata
        .brokers
        .iter()
        .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
        .collect();
    let described = metadata
        .topics
        .first()
        .filter(|t| t.error_code == 0)
        .with_context(|| format!("topic {} is not known to the cluster", args.topic))?;
    let mut work = Vec::new();
    for partition in &described.partitions {
        let leader = brokers
            .get(&partition.leader_id)
            .with_context(|| format!("partition {} has no leader", partition.partition_index))?
            .clone();
        let mut connection = Connection::open(&leader, tls.as_ref()).await?;
        let mut bounds = [0i64; 2];
        for (at, timestamp) in [(0, -2i64), (1, -1)] {
            let offsets: ListOffsetsResponse = connection
                .call(
                    ApiKey::ListOffsets,
                    LIST_OFFSETS_VERSION,
                    &ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![
                            ListOffsetsTopic::default()
                                .with_name(topic.clone())
                                .with_partitions(vec![
                                    ListOffsetsPartition::default()
                                        .with_partition_index(partition.partition_index)
                                        .with_timestamp(timestamp),
                                ]),
                        ]),
                )
                .await?;
            let answer = offsets
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .context("an empty ListOffsets answer")?;
            if answer.error_code != 0 {
                bail!(
                    "ListOffsets of partition {}: error {}",
                    partition.partition_index,
                    answer.error_code
                );
            }
            bounds[at] = answer.offset;
        }
        work.push(Work {
            partition: partition.partition_index,
            leader,
            from: bounds[0],
            to: bounds[1],
        });
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in work {
        let topic = topic.clone();
        let partition_max_bytes = args.partition_max_bytes;
        let tls = tls.clone();
        tasks.spawn(async move { read_partition(w, topic, partition_max_bytes, tls).await });
    }
    let (mut records, mut bytes) = (0u64, 0u64);
    while let Some(done) = tasks.join_next().await {
        let (r, b) = done.context("a partition reader failed")??;
        records += r;
        bytes += b;
    }
    crate::bench::report_consume(
        records,
        bytes,
        start.elapsed(),
        args.json,
        " through the Kafka listener",
    );
    Ok(())
}

/// Fetches one partition from `from` to `to`, one request in flight; returns the records and
/// value bytes decoded.
async fn read_partition(
    work: Work,
    topic: TopicName,
    partition_max_bytes: i32,
    tls: Option<std::sync::Arc<quipu_tls::ClientTls>>,
) -> anyhow::Result<(u64, u64)> {
    let mut connection = Connection::open(&work.leader, tls.as_ref()).await?;
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut offset = work.from;
    while offset < work.to {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(50 * 1024 * 1024)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(topic.clone())
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(work.partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(partition_max_bytes),
                    ]),
            ]);
        let answer: FetchResponse = connection
            .call(ApiKey::Fetch, FETCH_VERSION, &request)
            .await?;
        let data = answer
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .context("an empty Fetch answer")?;
        if data.error_code != 0 {
            bail!(
                "Fetch of partition {} at {offset}: error {}",
                work.partition,
                data.error_code
            );
        }
        let Some(batches) = data.records.clone() else {
            continue;
        };
        // Decoded off the async workers, as the gRPC consumer does.
        let (n, b, next) = tokio::task::spawn_blocking(move || {
            let (mut n, mut b, mut next) = (0u64, 0u64, None);
            for batch in quipu_record::batches(batches, usize::MAX) {
                let Ok(batch) = batch else { break }; // a partial batch ends an answer
                let header = quipu_record::BatchHeader::parse(&batch)?;
                for record in quipu_record::decode_records(&batch, 256 * 1024 * 1024)? {
                    n += 1;
                    b += record.value.as_ref().map_or(0, |v| v.len() as u64);
                }
                next = Some(header.base_offset + i64::from(header.last_offset_delta) + 1);
            }
            Ok::<_, quipu_record::BatchError>((n, b, next))
        })
        .await??;
        records += n;
        bytes += b;
        match next {
            Some(next) => offset = next,
            None => bail!(
                "partition {} at {offset}: an answer without a whole batch",
                work.partition
            ),
        }
    }
    let _ = connection.stream.shutdown().await;
    Ok((records, bytes))
}
