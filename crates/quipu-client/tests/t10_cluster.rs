//! The client against three in-process nodes serving the real gRPC API on 127.0.0.1: admin,
//! keyed batching produce, consume by offset and by timestamp, not-leader redirection, and
//! group consumers (partitions shared, handed over, resumed from committed offsets; groups
//! listed, described, reset and deleted).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

use std::collections::HashMap;
use std::time::{Duration, Instant};

use quipu_client::{
    AckLevel, Client, ClientError, Consumer, Producer, ProducerConfig, RECORD_OVERHEAD_BYTES,
    StartAt, TopicConfig, partition_for_key,
};
mod common;

use common::{PATIENCE, cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_through_the_api() {
    let cluster = cluster().await;
    // Bootstrap from one node only: the client learns the others.
    let client = Client::connect([cluster.api_addrs[1].clone()])
        .await
        .unwrap();
    let start = Instant::now();
    while client.describe_cluster().await.unwrap().nodes.len() < 3 {
        assert!(start.elapsed() < PATIENCE, "the nodes did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client
        .create_topic("events", 4, 3, TopicConfig::default())
        .await
        .unwrap();
    assert!(matches!(
        client
            .create_topic("events", 4, 3, TopicConfig::default())
            .await,
        Err(ClientError::TopicExists(_))
    ));
    assert!(matches!(
        client.describe_topic("nope").await,
        Err(ClientError::UnknownTopic(_))
    ));
    // Any node answers, as it sees the metadata: one that has not applied the create yet lists
    // nothing (the controller leader answered the create once it was committed).
    let start = Instant::now();
    loop {
        let topics = client.list_topics().await.unwrap();
        let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
        if names == ["events"] {
            break;
        }
        assert!(names.is_empty(), "{names:?}");
        assert!(start.elapsed() < PATIENCE, "the topic was never listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 2,000 keyed records through the batching producer, acks=all.
    let producer = Producer::new(&client, ProducerConfig::default());
    let mut pending = Vec::new();
    for i in 0..2000u32 {
        let key = format!("key-{}", i % 37);
        let value = format!("value-{i}");
        let ack = producer
            .send(
                "events",
                None,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[],
            )
            .await
            .unwrap();
        pending.push((key, value, ack));
    }
    producer.flush().await;
    let mut expected: HashMap<u32, Vec<(u64, String, String)>> = HashMap::new();
    for (key, value, ack) in pending {
        let sent = ack.await.unwrap().unwrap();
        assert_eq!(
            sent.partition,
            partition_for_key(key.as_bytes(), 4),
            "Kafka's partition"
        );
        expected
            .entry(sent.partition)
            .or_default()
            .push((sent.offset.unwrap(), key, value));
    }

    // One producer id for the producer, as a Kafka producer has, each partition numbering its
    // own sequence under it (not an id per partition: 2,000 partitions would cost 2,000
    // InitProducerId calls).
    let mut ids = std::collections::BTreeSet::new();
    for partition in expected.keys() {
        for addr in &cluster.api_addrs {
            let replica = client
                .read_replica(addr, "events", *partition, 0)
                .await
                .unwrap();
            for batches in &replica.record_batches {
                for range in quipu_record::batch_ranges(batches, usize::MAX) {
                    let header =
                        quipu_record::BatchHeader::parse(&batches[range.unwrap()]).unwrap();
                    ids.insert((header.producer_id, header.producer_epoch));
                }
            }
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids.first().unwrap().0 >= 0, "{ids:?}");

    // Every partition reads back exactly what was acknowledged, in offset order.
    for (partition, records) in &mut expected {
        records.sort();
        let mut consumer = Consumer::new(&client, "events", *partition, StartAt::Earliest, false)
            .await
            .unwrap();
        let mut read = Vec::new();
        while let Some(batch) = consumer.next_batch().await.unwrap() {
            for r in batch {
                read.push((
                    r.offset,
                    String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
        }
        assert_eq!(&read, records, "partition {partition}");
        // From an offset in the middle, and from a timestamp at or before the first record.
        let middle = records[records.len() / 2].0;
        let mut consumer = Consumer::new(
            &client,
            "events",
            *partition,
            StartAt::Offset(middle),
            false,
        )
        .await
        .unwrap();
        let first = consumer.next_batch().await.unwrap().unwrap();
        assert_eq!(first[0].offset, middle);
        let at = client
            .list_offsets("events", *partition, StartAt::Timestamp(0))
            .await
            .unwrap();
        assert_eq!(at, 0);
        let end = client
            .list_offsets("events", *partition, StartAt::Latest)
            .await
            .unwrap();
        assert_eq!(end, records.len() as u64);
    }

    // A direct produce to a partition, through a node that may not lead it, is redirected.
    let mut builder = quipu_record::BatchBuilder::new(0, quipu_record::Compression::None);
    builder.push(1, None, Some(b"direct"), &[]);
    let offset = client
        .produce("events", 0, builder.build().unwrap(), AckLevel::All)
        .await
        .unwrap();
    assert_eq!(offset, Some(expected[&0].len() as u64));
    assert!(matches!(
        Consumer::new(&client, "events", 9, StartAt::Earliest, false).await,
        Err(ClientError::UnknownPartition(_))
    ));
    // A following consumer sees a record produced after it reached the end.
    let mut follower = Consumer::new(&client, "events", 1, StartAt::Latest, true)
        .await
        .unwrap();
    let waiting = tokio::spawn(async move { follower.next_batch().await });
    let mut builder = quipu_record::BatchBuilder::new(0, quipu_record::Compression::None);
    builder.push(2, None, Some(b"later"), &[]);
    client
        .produce("events", 1, builder.build().unwrap(), AckLevel::All)
        .await
        .unwrap();
    let seen = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen[0].value.as_deref(), Some(&b"later"[..]));

    // ProduceStream: several batches on one client stream, one answer each, in order; a bad
    // batch gets its own error without failing the others.
    let leader_addr = {
        let described = client.describe_topic_everywhere("events").await.unwrap();
        let leader = described.partitions[2].leader.unwrap();
        let cluster_view = client.describe_cluster().await.unwrap();
        cluster_view
            .nodes
            .iter()
            .find(|n| n.node_id == leader)
            .unwrap()
            .api_addr
            .clone()
    };
    let mut data =
        quipu_proto::v1::data_client::DataClient::connect(format!("http://{leader_addr}"))
            .await
            .unwrap();
    let requests: Vec<quipu_proto::v1::ProduceRequest> = (0..3)
        .map(|i| {
            let mut builder = quipu_record::BatchBuilder::new(0, quipu_record::Compression::None);
            builder.push(3, None, Some(format!("streamed-{i}").as_bytes()), &[]);
            let mut batch = builder.build().unwrap().to_vec();
            if i == 1 {
                batch[20] ^= 0xff; // breaks the CRC
            }
            quipu_proto::v1::ProduceRequest {
                topic: "events".to_string(),
                partition: 2,
                acks: quipu_proto::v1::Acks::All as i32,
                record_batch: batch.into(),
            }
        })
        .collect();
    let before = client
        .list_offsets("events", 2, StartAt::Latest)
        .await
        .unwrap();
    let reply = data
        .produce_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<i32> = reply.items.iter().map(|i| i.status_code).collect();
    assert_eq!(codes[0], 0);
    assert_eq!(codes[1], tonic::Code::InvalidArgument as i32);
    assert_eq!(codes[2], 0);
    assert_eq!(reply.items[0].response.unwrap().base_offset, Some(before));
    assert_eq!(
        reply.items[2].response.unwrap().base_offset,
        Some(before + 1)
    );

    client.delete_topic("events").await.unwrap();
    cluster.stop().await;
}

/// Polls `consumers` until they hold `total` distinct records between them; returns them.
async fn consume_all(
    consumers: &mut [&mut quipu_client::GroupConsumer],
    seen: &mut std::collections::BTreeSet<(u32, u64)>,
    total: usize,
) {
    let start = Instant::now();
    while seen.len() < total {
        assert!(
            start.elapsed() < PATIENCE,
            "only {} of {total} consumed",
            seen.len()
        );
        for consumer in consumers.iter_mut() {
            for record in consumer.poll(1000).await.unwrap() {
                seen.insert((record.partition, record.offset));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_consumers_share_hand_over_and_resume() {
    use quipu_client::{GroupConsumer, GroupConsumerConfig};
    let cluster = cluster().await;
    let client = cluster.registered_client().await;
    client
        .create_topic("clicks", 4, 3, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(&client, ProducerConfig::default());
    let mut acks = Vec::new();
    for i in 0..400u32 {
        acks.push(
            producer
                .send(
                    "clicks",
                    Some(i % 4),
                    None,
                    Some(format!("c{i}").as_bytes()),
                    &[],
                )
                .await
                .unwrap(),
        );
    }
    producer.flush().await;
    for ack in acks {
        ack.await.unwrap().unwrap();
    }

    let config = GroupConsumerConfig {
        auto_commit_interval: Some(Duration::from_millis(200)),
        client_id: "t10".into(),
        ..GroupConsumerConfig::new("clickers", &["clicks"])
    };
    let mut a = GroupConsumer::join(&client, config.clone()).await.unwrap();
    let mut b = GroupConsumer::join(&client, config.clone()).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    consume_all(&mut [&mut a, &mut b], &mut seen, 400).await;
    // They share the four partitions.
    let start = Instant::now();
    loop {
        a.poll(1000).await.unwrap();
        b.poll(1000).await.unwrap();
        let (held_a, held_b) = (a.assignment(), b.assignment());
        let count = |h: &quipu_client::Assignment| h.values().map(|p| p.len()).sum::<usize>();
        if count(&held_a) == 2 && count(&held_b) == 2 {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no even share: {held_a:?} {held_b:?}"
        );
    }
    let described = client.describe_group("clickers").await.unwrap();
    assert_eq!(described.protocol, "consumer");
    assert_eq!(described.members.len(), 2);
    assert!(
        client
            .list_groups()
            .await
            .unwrap()
            .iter()
            .any(|g| g.group == "clickers" && g.protocol == "consumer")
    );
    assert!(matches!(
        client.delete_group("clickers").await,
        Err(ClientError::GroupNotEmpty(_))
    ));

    // A third member joins: partitions move to it.
    let count = |h: &quipu_client::Assignment| h.values().map(|p| p.len()).sum::<usize>();
    let mut extra = GroupConsumer::join(&client, config.clone()).await.unwrap();
    let start = Instant::now();
    loop {
        a.poll(1000).await.unwrap();
        b.poll(1000).await.unwrap();
        extra.poll(1000).await.unwrap();
        let (held_a, held_b, held_extra) = (a.assignment(), b.assignment(), extra.assignment());
        if count(&held_extra) > 0 && count(&held_a) + count(&held_b) + count(&held_extra) == 4 {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "the third member got nothing");
    }
    // It is killed (dropped without leaving): after its session timeout (6 s) a and b hold
    // every partition again.
    drop(extra);
    let killed = Instant::now();
    while count(&a.assignment()) + count(&b.assignment()) < 4 {
        a.poll(1000).await.unwrap();
        b.poll(1000).await.unwrap();
        assert!(
            killed.elapsed() < PATIENCE,
            "the killed member's partitions did not move"
        );
    }
    assert!(
        killed.elapsed() >= Duration::from_secs(4),
        "before the session timeout"
    );

    // b leaves (committing); a takes every partition.
    b.close().await.unwrap();
    let start = Instant::now();
    while a.assignment().values().map(|p| p.len()).sum::<usize>() < 4 {
        a.poll(1000).await.unwrap();
        assert!(start.elapsed() < PATIENCE, "a did not take b's partitions");
    }
    a.commit().await.unwrap();
    a.close().await.unwrap();
    // Everything was committed: 100 per partition.
    let committed = client.fetch_offsets("clickers", &[]).await.unwrap();
    assert_eq!(committed.len(), 4);
    assert!(committed.iter().all(|c| c.offset == 100), "{committed:?}");

    // A new member resumes at the committed offsets: only the records produced now.
    for i in 0..4u32 {
        producer
            .send("clicks", Some(i), None, Some(b"late"), &[])
            .await
            .unwrap()
            .await
            .unwrap()
            .unwrap();
    }
    let mut c = GroupConsumer::join(&client, config.clone()).await.unwrap();
    let mut late = std::collections::BTreeSet::new();
    consume_all(&mut [&mut c], &mut late, 4).await;
    assert!(late.iter().all(|(_, offset)| *offset == 100), "{late:?}");
    c.close().await.unwrap();

    // An empty group's offsets can be reset (as `quipu group reset-offsets` does), then it can
    // be deleted.
    let reset = client
        .commit_offsets("clickers", "", -1, &[("clicks".into(), 0, 7)])
        .await
        .unwrap();
    assert_eq!(reset, [None]);
    let committed = client
        .fetch_offsets("clickers", &[("clicks".into(), 0)])
        .await
        .unwrap();
    assert_eq!(committed[0].offset, 7);
    client.delete_group("clickers").await.unwrap();
    assert!(matches!(
        client.describe_group("clickers").await,
        Err(ClientError::UnknownGroup(_))
    ));
    cluster.stop().await;
}

/// A partition's batches enter its send queue in the order they were closed, whether a batch
/// closed by filling up, by its linger timer, or (lingered while the partition was busy) by the
/// last outstanding batch to settle, each on another thread: tiny batches and a 1 ms linger make
/// all three happen all the time while up to five batches are on their way. Every
/// record's offset follows the order it was sent in. (The race this guards against, a closed
/// batch overtaken by the next one while it waited for room in the queue, showed on a loaded
/// machine in `quipu/tests/t40_membership.rs`; here it is exercised, not forced.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_keep_the_order_records_were_sent_in() {
    let cluster = cluster().await;
    let client = cluster.registered_client().await;
    client
        .create_topic("ordered", 1, 3, TopicConfig::default())
        .await
        .unwrap();
    let producer = Producer::new(
        &client,
        ProducerConfig {
            linger: Duration::from_millis(1),
            batch_bytes: 1024,
            ..ProducerConfig::default()
        },
    );
    let value = "x".repeat(200);
    let mut acks = Vec::new();
    for i in 0..5000u32 {
        let ack = producer
            .send("ordered", Some(0), None, Some(value.as_bytes()), &[])
            .await
            .unwrap();
        acks.push(ack);
        // Half the records paced (batches closed by their timers), half as fast as they go
        // (closed by filling up).
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
    }
    producer.flush().await;
    acknowledged_in_order(acks).await;
    cluster.stop().await;
}

/// Awaits each record's acknowledgement (each within `PATIENCE`, with no flush) and asserts
/// their offsets rise in the order the records were sent.
async fn acknowledged_in_order(
    acks: Vec<tokio::sync::oneshot::Receiver<Result<quipu_client::Sent, ClientError>>>,
) {
    let mut previous = None;
    for (i, ack) in acks.into_iter().enumerate() {
        let offset = tokio::time::timeout(PATIENCE, ack)
            .await
            .unwrap_or_else(|_| panic!("record {i} not acknowledged"))
            .unwrap()
            .unwrap()
            .offset
            .unwrap();
        assert!(
            previous.is_none_or(|p| offset > p),
            "record {i} got offset {offset}, after {previous:?}"
        );
        previous = Some(offset);
    }
}

/// A producer holds at most `buffer_bytes` of records across its partitions (Kafka's
/// `buffer.memory`): a record that does not fit waits until a batch is acknowledged and gives its
/// room back, and a record larger than the whole buffer is refused. And batches that lingered
/// while their partition was busy go without a flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffer_bounds_the_records_a_producer_holds() {
    let cluster = cluster().await;
    let client = cluster.registered_client().await;
    client
        .create_topic("bounded", 2, 3, TopicConfig::default())
        .await
        .unwrap();
    let value = vec![b'b'; 1000];
    let record = value.len() + RECORD_OVERHEAD_BYTES;
    let producer = Producer::new(
        &client,
        ProducerConfig {
            // Nothing goes before a flush: the room comes back only with acknowledgements.
            linger: Duration::from_secs(3600),
            batch_bytes: 1024 * 1024,
            buffer_bytes: 4 * record,
            ..ProducerConfig::default()
        },
    );
    let mut acks = Vec::new();
    for i in 0..4u32 {
        let send = producer.send("bounded", Some(i % 2), None, Some(&value), &[]);
        acks.push(send.await.unwrap());
    }
    let fifth = producer.send("bounded", Some(0), None, Some(&value), &[]);
    tokio::pin!(fifth);
    // A zero timeout polls the send once: it waits for room.
    assert!(
        tokio::time::timeout(Duration::ZERO, &mut fifth)
            .await
            .is_err(),
        "a fifth record found room in a buffer of four"
    );
    producer.flush().await;
    for ack in acks {
        ack.await.unwrap().unwrap();
    }
    let fifth = tokio::time::timeout(PATIENCE, fifth)
        .await
        .expect("the room of acknowledged batches came back")
        .unwrap();
    producer.flush().await;
    assert_eq!(fifth.await.unwrap().unwrap().offset, Some(2));

    // Lingered batches of a busy partition go without a flush: a record every 200 µs and a 1 ms
    // linger, the batches far from full, so many lingers end while the partition's last batch
    // is on its way (held back, sent by that batch's settling). All are acknowledged, in order.
    let lingering = Producer::new(
        &client,
        ProducerConfig {
            linger: Duration::from_millis(1),
            batch_bytes: 1024 * 1024,
            ..ProducerConfig::default()
        },
    );
    let mut acks = Vec::new();
    for _ in 0..300 {
        let send = lingering.send("bounded", Some(1), None, Some(&value), &[]);
        acks.push(send.await.unwrap());
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    acknowledged_in_order(acks).await;

    let too_large = vec![b'b'; 4 * record];
    match producer
        .send("bounded", Some(1), None, Some(&too_large), &[])
        .await
    {
        Err(ClientError::InvalidArgument(message)) => {
            assert!(message.contains("buffer"), "{message}");
        }
        other => panic!("a record larger than the buffer: {other:?}"),
    }
    cluster.stop().await;
}
