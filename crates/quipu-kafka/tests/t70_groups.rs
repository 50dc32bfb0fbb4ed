//! Consumer groups through the Kafka listener, with real clients on a three-node cluster.
//! Committed offsets (`tests/clients/groups_client.py`): confluent-kafka (librdkafka),
//! kafka-python and aiokafka find their group's coordinator, commit offsets with metadata for
//! partitions they assigned themselves, read them back, and a second consumer of the group starts
//! at them; the offsets are checked again on the coordinator itself. Members
//! (`tests/clients/group_members.py`): two members of a group share a topic's partitions and
//! consume every record once between them; one leaves and the other takes its partitions; a new
//! member starts at the committed offsets.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_kafka::KafkaConfig;
use quipu_record::{BatchBuilder, Compression};

const PARTITIONS: usize = 3;

/// A topic of `partitions` partitions with ten records in each.
async fn fill(cluster: &Cluster, topic: &str, partitions: usize) {
    cluster
        .any()
        .create_topic(topic, partitions, 3)
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

/// The offsets topic's partitions in these tests (the default 16 would cost startup time only),
/// and no initial rebalance delay.
fn cluster_config() -> quipu_node::GroupsConfig {
    quipu_node::GroupsConfig {
        offsets_partitions: 4,
        limits: quipu_node::GroupLimits {
            initial_rebalance_delay_ms: 0,
            ..quipu_node::GroupLimits::default()
        },
        ..quipu_node::GroupsConfig::default()
    }
}

async fn members(name: &str) {
    let python = python();
    let script = client_script("group_members.py");
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    let topic = format!("{}-members", name.replace('-', ""));
    let group = format!("{name}-members");
    fill(&cluster, &topic, 4).await;
    let output = run(
        &python,
        &[&script, name, &cluster.bootstrap(), &topic, &group],
        None,
    )
    .await;
    let summary: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    let shared = summary["shared"].as_array().unwrap();
    assert_eq!(shared.len(), 2);
    assert_eq!(
        summary["first"], 40,
        "{name}: every record consumed by the two members"
    );
    assert_eq!(
        summary["second"], 60,
        "{name}: and the 20 produced after B left"
    );
    // C started at the committed offsets: only the last record, at offset 15 of partition 0
    // (10 + 5 of the 20 there).
    assert_eq!(
        summary["last"],
        serde_json::json!([[0, 15]]),
        "{name}: where C started"
    );
    cluster.stop().await;
}

async fn client(name: &str) {
    let python = python();
    let script = client_script("groups_client.py");
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    let topic = format!("{}-offsets", name.replace('-', ""));
    let group = format!("{name}-group");
    fill(&cluster, &topic, PARTITIONS).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_members() {
    members("confluent-kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_members() {
    members("kafka-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka_members() {
    members("aiokafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_members() {
    let (node_js, modules) = kafkajs();
    let script = client_script("kafkajs_members.js");
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    fill(&cluster, "kafkajs-members", 4).await;
    let output = run_with_env(
        &node_js,
        &[
            &script,
            &cluster.bootstrap(),
            "kafkajs-members",
            "kafkajs-members",
        ],
        &[("NODE_PATH", &modules)],
    )
    .await;
    let summary: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    assert_eq!(
        summary["first"], 40,
        "kafkajs: every record consumed by the two members"
    );
    assert_eq!(
        summary["second"], 60,
        "kafkajs: and the 20 produced after B left"
    );
    assert_eq!(
        summary["last"],
        serde_json::json!([[0, 15]]),
        "kafkajs: where C started"
    );
    cluster.stop().await;
}
