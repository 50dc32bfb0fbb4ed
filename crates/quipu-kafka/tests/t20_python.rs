//! The Python Kafka clients (confluent-kafka on librdkafka 2.x, kafka-python, aiokafka) against a
//! three-node cluster, each in `tests/clients/python_client.py`: 10,000 keyed records with a
//! header per compression codec, produced with acks=all and read back byte for byte at the
//! partitions and offsets acknowledged; earliest and latest offsets; an offset by timestamp.
//! The producers are idempotent (`enable.idempotence`): each record is stored once, in a batch
//! that carries its producer id.
//! Keys land on the partitions Quipu's own murmur2 partitioner picks.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_kafka::KafkaConfig;

const PARTITIONS: u32 = 3;

async fn client(name: &str) {
    let python = python();
    let script = client_script("python_client.py");
    let cluster = Cluster::start(KafkaConfig {
        auto_create_topics: true,
        default_partitions: PARTITIONS as usize,
        ..KafkaConfig::default()
    })
    .await;
    let prefix = name.replace('-', "");
    let output = run(
        &python,
        &[&script, name, &cluster.bootstrap(), &prefix, "10000"],
        None,
    )
    .await;
    let summary: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    let partitions = summary["partitions"].as_object().unwrap();
    assert_eq!(partitions.len(), 10_000);
    for (key, partition) in partitions {
        assert_eq!(
            partition.as_u64().unwrap(),
            u64::from(quipu_client::partition_for_key(key.as_bytes(), PARTITIONS)),
            "{name}: key {key} landed where Quipu's murmur2 partitioner would not put it"
        );
    }
    assert_eq!(
        summary["timestamp_offset"], 1,
        "{name}: the record after the mark"
    );
    // The producers were idempotent (InitProducerId, sequence numbers), and each record is
    // stored once.
    for codec in ["none", "zstd"] {
        let stored = read_back(&cluster, &format!("{prefix}-{codec}")).await;
        assert_eq!(stored.len(), 10_000, "{name} {codec}: records stored");
        assert!(
            stored.iter().all(|r| r.producer_id >= 0),
            "{name} {codec}: a batch without a producer id"
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka() {
    client("confluent-kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python() {
    client("kafka-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka() {
    client("aiokafka").await;
}
