//! The Kafka admin APIs through confluent-kafka's AdminClient, kafka-python's KafkaAdminClient,
//! aiokafka's AIOKafkaAdminClient (`tests/clients/admin_client.py`) and kafkajs's admin client
//! (`tests/clients/kafkajs_admin.js`): create (after a validate_only try) with a
//! config, refusals (duplicate, unknown config, cleanup.policy=compact), describe configs with
//! their sources, alter, grow partitions, page through them (DescribeTopicPartitions), find
//! every replica in the brokers' log dirs (DescribeLogDirs), delete records (DeleteRecords),
//! delete.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_kafka::KafkaConfig;

async fn admin(client: &str, incremental: bool) {
    let cluster = Cluster::start(KafkaConfig::default()).await;
    let topic = format!("admin-{}", client.replace('-', ""));
    let output = if client == "kafkajs" {
        let (node_js, modules) = kafkajs();
        let script = client_script("kafkajs_admin.js");
        run_with_env(
            &node_js,
            &[&script, &cluster.bootstrap(), &topic],
            &[("NODE_PATH", &modules)],
        )
        .await
    } else {
        let python = python();
        let script = client_script("admin_client.py");
        run(
            &python,
            &[&script, client, &cluster.bootstrap(), &topic],
            None,
        )
        .await
    };
    let seen: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    let described = &seen["described"];
    assert_eq!(described["retention.ms"][0], "3600000", "{seen}");
    assert_eq!(
        described["retention.ms"][1], false,
        "set by the topic: {seen}"
    );
    assert_eq!(described["retention.bytes"][0], "-1", "unlimited: {seen}");
    assert_eq!(described["retention.bytes"][1], true, "the default: {seen}");
    assert_eq!(described["cleanup.policy"][0], "delete", "{seen}");
    assert_eq!(
        described["segment.bytes"][0],
        (256 * 1024 * 1024).to_string(),
        "{seen}"
    );
    let altered = &seen["altered"];
    assert_eq!(altered["retention.bytes"][0], "1048576", "{seen}");
    assert_eq!(altered["retention.bytes"][1], false, "{seen}");
    // confluent-kafka's incremental alter deleted retention.ms; kafka-python's AlterConfigs
    // (which replaces every config) sent it along again.
    assert_eq!(altered["retention.ms"][1], incremental, "{seen}");
    assert_eq!(seen["partitions"], 5, "{seen}");
    if client == "kafka-python" {
        assert_eq!(
            seen["paged"],
            serde_json::json!([[0, 1, 2], [3, 4], null]),
            "{seen}"
        );
        assert_eq!(seen["log_dir_replicas"], 15, "{seen}");
        assert_eq!(seen["log_dirs_sized"], true, "{seen}");
        assert_eq!(seen["low_watermark"], 3, "{seen}");
        assert_eq!(seen["earliest"], 3, "{seen}");
    }
    if incremental {
        // confluent-kafka: ListOffsets MAX_TIMESTAMP finds the second of three records.
        assert_eq!(
            seen["max_timestamp"],
            serde_json::json!([1, 5_000_000]),
            "{seen}"
        );
        // confluent-kafka: a topic switched to LogAppendTime live.
        assert_eq!(
            seen["log_append_time"],
            serde_json::json!([true, true]),
            "{seen}"
        );
        assert_eq!(seen["timestamp_type"], "LogAppendTime", "{seen}");
    }
    assert_eq!(seen["deleted"], true);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_admin() {
    admin("confluent-kafka", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_admin() {
    admin("kafka-python", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka_admin() {
    admin("aiokafka", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_admin() {
    admin("kafkajs", false).await;
}
