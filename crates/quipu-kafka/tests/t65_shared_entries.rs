//! Reads from inside a Raft entry that holds several producers' batches (a partition leader's
//! group commit): Kafka's Fetch returns the whole entry, batches before the offset asked for
//! included, as Kafka returns a whole batch; kcat (librdkafka), confluent-kafka, kafka-python
//! and aiokafka skip what lies before it and start at the offset asked for.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::sync::Arc;

use common::*;
use quipu_kafka::KafkaConfig;
use quipu_record::{BatchBuilder, Compression};
use quipu_storage::Offset;

/// A batch of `count` records `"v{first}"`, `"v{first + 1}"`, ...
fn batch(first: u64, count: u64) -> bytes::Bytes {
    let mut builder = BatchBuilder::new(0, Compression::None);
    for i in first..first + count {
        builder.push(
            1_700_000_000_000,
            None,
            Some(format!("v{i}").as_bytes()),
            &[],
        );
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_inside_a_shared_entry_start_at_the_offset_asked_for() {
    let kcat = require("kcat", "install Debian's kcat (apt-get install kcat)");
    let python = python();
    let cluster = Cluster::start(KafkaConfig {
        auto_create_topics: true,
        default_partitions: 1,
        ..KafkaConfig::default()
    })
    .await;
    let bootstrap = cluster.bootstrap();
    let topic = "shared";
    run(
        &kcat,
        &[
            "-b", &bootstrap, "-P", "-t", topic, "-p", "0", "-X", "acks=all",
        ],
        Some(b"v0\n"),
    )
    .await;
    // The consumers below may ask any node about the topic the producer just created.
    cluster.wait_for_topic_everywhere(topic).await;
    let group = cluster
        .any()
        .with_metadata(|m| m.topic(topic).unwrap().partitions[0].group);
    let leader = cluster.leader_replica(group).expect("a leader");
    // Rounds of batches produced at once (each record's value is its offset), until an entry
    // holds several: the offset asked for is inside its second batch.
    let mut next = 1;
    let mut inside = None;
    for _ in 0..50 {
        let sends: Vec<_> = (0..16)
            .map(|_| {
                let leader = Arc::clone(&leader);
                tokio::spawn(async move { leader.produce(batch(0, 3)).await.unwrap() })
            })
            .collect();
        for send in sends {
            send.await.unwrap();
        }
        next += 16 * 3;
        let entries = leader.fetch(Offset(0), 64 << 20).await.unwrap();
        inside = entries.iter().find_map(|entry| {
            let batches: Vec<_> = entry.batches().map(Result::unwrap).collect();
            (batches.len() > 1).then(|| entry.base_offset.0 + 3 + 1)
        });
        if inside.is_some() {
            break;
        }
    }
    let from = inside.expect("an entry of several batches");
    assert_eq!(leader.high_watermark(), Offset(next));
    drop(leader);
    // Values were written as "v0".."v2" per batch: what matters is the offsets, in order from
    // the one asked for, and the values at them (offset mod 3 within the shared batches).
    let expected: Vec<String> = (from..from + 5)
        .map(|o| format!("{o} v{}", (o - 1) % 3))
        .collect();
    let got = run(
        &kcat,
        &[
            "-b",
            &bootstrap,
            "-C",
            "-t",
            topic,
            "-p",
            "0",
            "-o",
            &from.to_string(),
            "-c",
            "5",
            "-e",
            "-q",
            "-f",
            "%o %s\n",
        ],
        None,
    )
    .await;
    assert_eq!(got.lines().collect::<Vec<_>>(), expected, "kcat");
    let script = client_script("read_from.py");
    for client in ["confluent-kafka", "kafka-python", "aiokafka"] {
        let got = run(
            &python,
            &[&script, client, &bootstrap, topic, &from.to_string(), "5"],
            None,
        )
        .await;
        assert_eq!(got.lines().collect::<Vec<_>>(), expected, "{client}");
    }
    cluster.stop().await;
}
