//! The listener at the wire: ApiVersions is the handler table, an unknown ApiVersions version is
//! answered at v0 (KIP-511), refused versions and malformed or oversized frames close only their
//! own connection, as does an acks=0 produce that is refused, pipelined requests are answered in order, OffsetForLeaderEpoch tells where a
//! term ends, and arbitrary bytes never take the listener down (a bounded proptest).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

/// As in the `quipu` binary: a hostile count reserves address space instead of aborting.
#[global_allocator]
static ALLOCATOR: quipu_alloc::ReservingAllocator = quipu_alloc::ReservingAllocator;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use quipu_kafka::KafkaConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request frame: size, header, body.
fn frame<R: Encodable>(key: ApiKey, version: i16, correlation_id: i32, request: &R) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("quipu-test")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, key.request_header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    let mut out = BytesMut::new();
    out.put_i32(body.len() as i32);
    out.put_slice(&body);
    out.freeze()
}

/// A frame of raw bytes after an API key and version: what a broken or hostile client sends.
fn raw(key: i16, version: i16, rest: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(4 + rest.len() as i32);
    out.put_i16(key);
    out.put_i16(version);
    out.put_slice(rest);
    out.freeze()
}

/// Reads one response frame; `None` if the server closed the connection.
async fn response(stream: &mut TcpStream) -> Option<Bytes> {
    let size = stream.read_i32().await.ok()?;
    let mut body = vec![0u8; usize::try_from(size).unwrap()];
    stream.read_exact(&mut body).await.ok()?;
    Some(Bytes::from(body))
}

fn decode<R: Decodable>(key: ApiKey, version: i16, mut body: Bytes) -> (i32, R) {
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version)).unwrap();
    (
        header.correlation_id,
        R::decode(&mut body, version).unwrap(),
    )
}

/// Asserts that `stream` still gets an answer: an ApiVersions request with `id`.
async fn answers(stream: &mut TcpStream, id: i32) {
    stream
        .write_all(&frame(
            ApiKey::ApiVersions,
            3,
            id,
            &ApiVersionsRequest::default(),
        ))
        .await
        .unwrap();
    let (answered, _): (i32, ApiVersionsResponse) = decode(
        ApiKey::ApiVersions,
        3,
        response(stream).await.expect("an answer"),
    );
    assert_eq!(answered, id);
}

/// Sends ten Metadata requests at once and checks their answers come back in order.
async fn pipelined_metadata_in_order(stream: &mut TcpStream) {
    let mut batch = BytesMut::new();
    for id in 10..20 {
        batch.put_slice(&frame(
            ApiKey::Metadata,
            12,
            id,
            &MetadataRequest::default(),
        ));
    }
    stream.write_all(&batch).await.unwrap();
    for id in 10..20 {
        let (got, _): (i32, MetadataResponse) =
            decode(ApiKey::Metadata, 12, response(stream).await.unwrap());
        assert_eq!(got, id);
    }
}

async fn connect(cluster: &Cluster) -> TcpStream {
    TcpStream::connect(&cluster.nodes[0].kafka_addr)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wire_behaves_as_kafka_clients_expect() {
    let cluster = Cluster::start(KafkaConfig::default()).await;
    let mut stream = connect(&cluster).await;

    // ApiVersions lists exactly the handler table.
    stream
        .write_all(&frame(
            ApiKey::ApiVersions,
            3,
            1,
            &ApiVersionsRequest::default(),
        ))
        .await
        .unwrap();
    let (id, answer): (i32, ApiVersionsResponse) =
        decode(ApiKey::ApiVersions, 3, response(&mut stream).await.unwrap());
    assert_eq!(id, 1);
    let offered: Vec<(i16, i16, i16)> = answer
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect();
    let table: Vec<(i16, i16, i16)> = quipu_kafka::supported_apis()
        .iter()
        .map(|a| (a.key as i16, a.min, a.max))
        .collect();
    assert_eq!(offered, table);

    // KIP-511: a version from the future is answered at v0 with UNSUPPORTED_VERSION and the table.
    // Correlation id 2, no client id.
    let future = raw(ApiKey::ApiVersions as i16, 99, &[0, 0, 0, 2, 0xff, 0xff]);
    stream.write_all(&future).await.unwrap();
    let (id, answer): (i32, ApiVersionsResponse) =
        decode(ApiKey::ApiVersions, 0, response(&mut stream).await.unwrap());
    assert_eq!((id, answer.error_code), (2, 35));
    assert_eq!(answer.api_keys.len(), table.len());

    // Pipelined requests come back in order.
    pipelined_metadata_in_order(&mut stream).await;

    // The cluster id is the cluster's own, the same on every node.
    let node = cluster.nodes[0].node.as_ref().unwrap();
    let started = std::time::Instant::now();
    while node.cluster_id().is_none() {
        assert!(started.elapsed() < PATIENCE, "the cluster was never named");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stream
        .write_all(&frame(ApiKey::Metadata, 12, 4, &MetadataRequest::default()))
        .await
        .unwrap();
    let (_, metadata): (i32, MetadataResponse) =
        decode(ApiKey::Metadata, 12, response(&mut stream).await.unwrap());
    assert_eq!(
        metadata.cluster_id.map(|id| id.to_string()),
        node.cluster_id()
    );

    // Produce v2 is advertised (for old librdkafka) but refused by closing the connection.
    let mut old = connect(&cluster).await;
    let produce_v2 = raw(ApiKey::Produce as i16, 2, &[0, 0, 0, 7, 0xff, 0xff]);
    old.write_all(&produce_v2).await.unwrap();
    assert!(response(&mut old).await.is_none(), "closed");

    // An acks=0 produce the node refuses (here: an unknown topic) gets no answer, so the
    // connection is closed to tell the client, as Kafka does.
    let mut unacknowledged = connect(&cluster).await;
    let produce = ProduceRequest::default().with_acks(0).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("no-such-topic")))
            .with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from_static(b"not looked at"))),
            ]),
    ]);
    unacknowledged
        .write_all(&frame(ApiKey::Produce, 9, 8, &produce))
        .await
        .unwrap();
    assert!(response(&mut unacknowledged).await.is_none(), "closed");

    // An oversized frame closes its connection before anything is allocated; others go on.
    let mut big = connect(&cluster).await;
    big.write_all(&i32::MAX.to_be_bytes()).await.unwrap();
    assert!(response(&mut big).await.is_none(), "closed");
    answers(&mut stream, 3).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_for_leader_epoch_tells_where_a_term_ends() {
    let mut cluster = Cluster::start(KafkaConfig::default()).await;
    cluster.any().create_topic("epochs", 1, 3).await.unwrap();
    cluster.wait_for_leaders("epochs").await;
    let group = cluster
        .any()
        .with_metadata(|m| m.topic("epochs").unwrap().partitions[0].group);
    let leader_of = |cluster: &Cluster| cluster.leader_index(group);
    let batch = |value: &str| {
        let mut builder = quipu_record::BatchBuilder::new(0, quipu_record::Compression::None);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        builder.push(now, None, Some(value.as_bytes()), &[]);
        builder.build().unwrap()
    };
    // Three records under the first leader.
    let first = leader_of(&cluster).unwrap();
    let partition = cluster.nodes[first]
        .node
        .as_ref()
        .unwrap()
        .partition(quipu_node::GroupId(group))
        .unwrap();
    for value in ["a", "b", "c"] {
        partition.produce(batch(value)).await.unwrap();
    }
    let first_epoch = partition.leader_epoch();
    drop(partition);
    cluster.nodes[first].stop().await;
    cluster
        .wait_for("a new leader", |c| leader_of(c).is_some())
        .await;
    let second = leader_of(&cluster).unwrap();
    let partition = cluster.nodes[second]
        .node
        .as_ref()
        .unwrap()
        .partition(quipu_node::GroupId(group))
        .unwrap();
    partition.produce(batch("d")).await.unwrap();
    let second_epoch = partition.leader_epoch();
    assert!(second_epoch > first_epoch);

    let mut stream = TcpStream::connect(&cluster.nodes[second].kafka_addr)
        .await
        .unwrap();
    let ask = |epoch: i32| {
        OffsetForLeaderEpochRequest::default().with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("epochs")))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_leader_epoch(epoch),
                ]),
        ])
    };
    let mut answers = Vec::new();
    for (id, epoch) in [(1, first_epoch), (2, second_epoch), (3, 0)] {
        stream
            .write_all(&frame(ApiKey::OffsetForLeaderEpoch, 4, id, &ask(epoch)))
            .await
            .unwrap();
        let (_, answer): (i32, OffsetForLeaderEpochResponse) = decode(
            ApiKey::OffsetForLeaderEpoch,
            4,
            response(&mut stream).await.unwrap(),
        );
        let result = &answer.topics[0].partitions[0];
        answers.push((result.error_code, result.leader_epoch, result.end_offset));
    }
    // The first term ends where the second leader's first record went; the current term at the
    // log end; term 0 (the group's initial entry, no records) at offset 0.
    assert_eq!(answers[0], (0, first_epoch, 3));
    assert_eq!(answers[1], (0, second_epoch, 4));
    assert_eq!(answers[2], (0, 0, 0));
    cluster.stop().await;
}

/// A fetch above the high watermark but within the leader's log (a new leader's high watermark
/// lags what consumers were shown until it applies its first entry) gets no records and no
/// error, as Kafka's leader answers; only a fetch beyond the log's end is out of range. Answering
/// it out of range sent a consumer back to its reset policy (found by the fault-injection
/// suite: a group member reset to offset 0 and committed it after a leader change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_above_the_high_watermark_within_the_log_is_not_out_of_range() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let cluster = Cluster::start(KafkaConfig::default()).await;
    cluster.any().create_topic("ahead", 1, 3).await.unwrap();
    cluster.wait_for_leaders("ahead").await;
    let group = cluster
        .any()
        .with_metadata(|m| m.topic("ahead").unwrap().partitions[0].group);
    let leader = cluster.leader_index(group).unwrap();
    let partition = cluster.leader_replica(group).unwrap();
    let batch = |value: &str| {
        let mut builder = quipu_record::BatchBuilder::new(0, quipu_record::Compression::None);
        builder.push(0, None, Some(value.as_bytes()), &[]);
        builder.build().unwrap()
    };
    for value in ["a", "b", "c"] {
        partition.produce(batch(value)).await.unwrap();
    }
    // Cut off, the leader appends a batch it cannot commit: its log ends above its high
    // watermark.
    cluster.nodes[leader]
        .node
        .as_ref()
        .unwrap()
        .set_isolated(true);
    let stranded = {
        let partition = std::sync::Arc::clone(&partition);
        tokio::spawn(async move { partition.produce(batch("d")).await })
    };
    cluster
        .wait_for("the stranded append", |_| {
            partition.log_end_offset().0 > partition.high_watermark().0
        })
        .await;
    let (high_watermark, log_end) = (partition.high_watermark().0, partition.log_end_offset().0);
    assert_eq!((high_watermark, log_end), (3, 4));

    let mut stream = TcpStream::connect(&cluster.nodes[leader].kafka_addr)
        .await
        .unwrap();
    let fetch = |offset: i64| {
        FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("ahead")))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(offset)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ])
    };
    let mut answers = Vec::new();
    for (id, offset) in [(1, 3), (2, 4), (3, 5)] {
        stream
            .write_all(&frame(ApiKey::Fetch, 12, id, &fetch(offset)))
            .await
            .unwrap();
        let (_, answer): (i32, FetchResponse) =
            decode(ApiKey::Fetch, 12, response(&mut stream).await.unwrap());
        let result = &answer.responses[0].partitions[0];
        let records = result.records.as_ref().map_or(0, |r| r.len());
        answers.push((result.error_code, result.high_watermark, records));
    }
    // At the high watermark and above it within the log: nothing yet, no error. Beyond the
    // log's end: OFFSET_OUT_OF_RANGE (1).
    assert_eq!(answers[0], (0, 3, 0));
    assert_eq!(answers[1], (0, 3, 0));
    assert_eq!(answers[2].0, 1);
    cluster.nodes[leader]
        .node
        .as_ref()
        .unwrap()
        .set_isolated(false);
    let _ = stranded.await;
    cluster.stop().await;
}

/// Pins the abort found by the `kafka_request` fuzz target: a 17-byte DeleteRecords-shaped
/// frame whose array claims 2^31 elements made `kafka-protocol` ask for 62 GB up front. The
/// listener closes that connection and goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_claiming_billions_of_elements_does_not_take_the_node_down() {
    let cluster = Cluster::start(KafkaConfig::default()).await;
    // CreateTopics v5 whose topic array claims i32::MAX entries, in a 17-byte frame.
    let hostile = raw(
        ApiKey::CreateTopics as i16,
        5,
        &[
            0, 0, 0, 1, // correlation id
            0xff, 0xff, // no client id
            0,    // no tagged fields
            0xff, 0xff, 0xff, 0xff, 0x07, // compact array length: 2^31
        ],
    );
    let mut stream = connect(&cluster).await;
    stream.write_all(&hostile).await.unwrap();
    assert!(response(&mut stream).await.is_none(), "closed");
    answers(&mut connect(&cluster).await, 5).await;
    cluster.stop().await;
}

/// Requests wait for room in the listener's request-bytes pool rather than failing: with room for
/// one request at a time, ten pipelined ones are all answered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_queued_bytes_wait_for_room() {
    let cluster = Cluster::start(KafkaConfig {
        request_bytes_max: 1024,
        queued_request_bytes_max: 1024,
        ..KafkaConfig::default()
    })
    .await;
    let mut stream = connect(&cluster).await;
    pipelined_metadata_in_order(&mut stream).await;
    cluster.stop().await;
}

/// Kafka's `max.connections.per.ip`: the connection beyond the limit is closed at once; a slot
/// comes back when a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_bounded() {
    let cluster = Cluster::start(KafkaConfig {
        connections_per_address_max: 2,
        ..KafkaConfig::default()
    })
    .await;
    let ask = |id| frame(ApiKey::ApiVersions, 3, id, &ApiVersionsRequest::default());
    let mut first = connect(&cluster).await;
    let mut second = connect(&cluster).await;
    for (stream, id) in [(&mut first, 1), (&mut second, 2)] {
        stream.write_all(&ask(id)).await.unwrap();
        assert!(response(stream).await.is_some());
    }
    let mut third = connect(&cluster).await;
    let _ = third.write_all(&ask(3)).await;
    assert!(response(&mut third).await.is_none(), "the third is closed");
    drop(first);
    // The slot comes back once the listener has seen the close: retry for a bounded time.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut again = connect(&cluster).await;
        let _ = again.write_all(&ask(4)).await;
        if response(&mut again).await.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cluster.stop().await;
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Arbitrary bytes after a real API key and version never take the listener down: each
    /// connection gets an answer or is closed, and a fresh connection is answered afterwards.
    #[test]
    fn arbitrary_request_bodies_never_hurt_the_listener(
        key in proptest::sample::select(vec![0i16, 1, 2, 3, 18, 19, 20, 23, 32, 33, 37, 44, 60, 99]),
        version in -1i16..20,
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let cluster = Cluster::start(KafkaConfig::default()).await;
            let mut stream = TcpStream::connect(&cluster.nodes[0].kafka_addr).await.unwrap();
            stream.write_all(&raw(key, version, &body)).await.unwrap();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), response(&mut stream)).await;
            answers(&mut connect(&cluster).await, 9).await;
            cluster.stop().await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
    let cluster = Cluster::start(KafkaConfig {
        connections_max_idle_ms: 300,
        ..KafkaConfig::default()
    })
    .await;
    let mut idle = connect(&cluster).await;
    let mut busy = connect(&cluster).await;
    // The busy one asks something every 100 ms, past the idle limit in all.
    for id in 0..6 {
        answers(&mut busy, id).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The idle one was closed meanwhile (bounded wait: it closes within the limit).
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), response(&mut idle))
        .await
        .expect("the idle connection is closed within the bound");
    assert!(closed.is_none(), "closed");
    answers(&mut busy, 7).await;
    cluster.stop().await;
}
