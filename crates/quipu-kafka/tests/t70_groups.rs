//! Committed offsets through the Kafka listener, with real clients on a three-node cluster
//! (`tests/clients/groups_client.py`): confluent-kafka (librdkafka), kafka-python and aiokafka
//! find their group's coordinator, commit offsets with metadata for partitions they assigned
//! themselves, read them back, and a second consumer of the group starts at them. The offsets
//! are checked again on the coordinator itself.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_kafka::KafkaConfig;
use quipu_record::{BatchBuilder, Compression};

const PARTITIONS: usize = 3;

/// Ten records in each partition of `topic`.
async fn fill(cluster: &Cluster, topic: &str) {
    cluster
        .any()
        .create_topic(topic, PARTITIONS, 3)
        .await
        .unwrap();
    cluster.wait_for_leaders(topic).await;
    let groups: Vec<u64> = cluster.any().with_metadata(|m| {
        m.topic(topic)
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.group)
            .collect()
    });
    for group in groups {
        let mut builder = BatchBuilder::new(0, Compression::None);
        for i in 0..10 {
            builder.push(
                1_700_000_000_000,
                None,
                Some(format!("r{i}").as_bytes()),
                &[],
            );
        }
        let leader = cluster
            .nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .find_map(|n| {
                n.partition(quipu_node::GroupId(group))
                    .filter(|p| p.is_leader())
            })
            .unwrap();
        leader.produce(builder.build().unwrap()).await.unwrap();
    }
}

async fn client(name: &str) {
    let python = python();
    let script = client_script("groups_client.py");
    let cluster = Cluster::start(KafkaConfig::default()).await;
    let topic = format!("{}-offsets", name.replace('-', ""));
    let group = format!("{name}-group");
    fill(&cluster, &topic).await;
    let output = run(
        &python,
        &[&script, name, &cluster.bootstrap(), &topic, &group],
        None,
    )
    .await;
    let summary: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    for (partition, offset) in [(0, 3), (1, 5), (2, 7)] {
        let key = partition.to_string();
        let metadata = format!("{name}-meta-{partition}");
        assert_eq!(
            summary["committed"][&key],
            serde_json::json!([offset, metadata]),
            "{name}: committed offset of partition {partition} as the client read it back"
        );
        assert_eq!(
            summary["resumed"][&key], offset,
            "{name}: where a new consumer of the group started in partition {partition}"
        );
    }
    // On the coordinator: the same offsets and metadata, in one group.
    let node = cluster.any();
    let coordinator = node.find_coordinator(&group).await.unwrap();
    let coordinator = cluster
        .nodes
        .iter()
        .filter_map(|n| n.node.as_ref())
        .find(|n| n.id() == coordinator.id)
        .unwrap();
    let offsets = coordinator.fetch_offsets(&group, None).await.unwrap();
    let held: Vec<(String, i32, i64, String)> = offsets
        .into_iter()
        .map(|o| {
            let value = o.value.unwrap();
            // confluent-kafka's Python binding sends the metadata string with its C terminator
            // (it reads it back without); the coordinator keeps the bytes it was sent.
            let metadata = value.metadata.trim_end_matches('\0').to_string();
            (o.topic, o.partition, value.offset, metadata)
        })
        .collect();
    let wanted: Vec<(String, i32, i64, String)> = [(0, 3), (1, 5), (2, 7)]
        .into_iter()
        .map(|(p, o)| (topic.clone(), p, o, format!("{name}-meta-{p}")))
        .collect();
    assert_eq!(held, wanted, "{name}: offsets on the coordinator");
    // The offsets topic is listed as internal, and clients cannot delete it.
    assert!(
        node.metadata().topic("__consumer_offsets").is_some(),
        "{name}: the offsets topic exists"
    );
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
