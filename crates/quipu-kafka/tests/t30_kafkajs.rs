//! kafkajs (npm) against a three-node cluster: 10,000 keyed records with a header per built-in
//! codec (none, gzip) in sends of 100, acks=all, from an idempotent producer; the records read
//! back from the cluster byte for byte at the offsets acknowledged, and read by kafkajs's
//! consumer the same, partition, offset, key, value and header; a seek to an offset; earliest
//! and latest offsets and an offset by timestamp through its admin client. (Its admin client:
//! `t50_admin.rs`; its group members: `t70_groups.rs`.)
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::collections::HashMap;

use common::*;
use quipu_kafka::KafkaConfig;

const PARTITIONS: u32 = 3;
const COUNT: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_produces_and_lists_offsets() {
    let (node_js, modules) = kafkajs();
    let cluster = Cluster::start(KafkaConfig {
        auto_create_topics: true,
        default_partitions: PARTITIONS as usize,
        ..KafkaConfig::default()
    })
    .await;
    let script = client_script("kafkajs_client.js");
    let output = run_with_env(
        &node_js,
        &[&script, &cluster.bootstrap(), "kafkajs", &COUNT.to_string()],
        &[("NODE_PATH", &modules)],
    )
    .await;
    let summary: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    for codec in ["none", "gzip"] {
        let stored = read_back(&cluster, &format!("kafkajs-{codec}")).await;
        assert_eq!(stored.len(), COUNT, "{codec}");
        assert!(
            stored.iter().all(|r| r.producer_id >= 0),
            "{codec}: the idempotent producer's batches carry its producer id"
        );
        let mut per_partition: HashMap<u32, u64> = HashMap::new();
        for record in &stored {
            let key = String::from_utf8(record.key.clone().unwrap()).unwrap();
            let i: usize = key.strip_prefix("key-").unwrap().parse().unwrap();
            let value = format!("value-{i}-{}", "x".repeat(i % 50));
            assert_eq!(
                record.value.as_deref(),
                Some(value.as_bytes()),
                "{codec}: {key}"
            );
            assert_eq!(
                record.headers,
                vec![("n".to_string(), Some(i.to_string().into_bytes()))],
                "{codec}: {key}"
            );
            assert_eq!(
                record.partition,
                quipu_client::partition_for_key(key.as_bytes(), PARTITIONS),
                "{codec}: kafkajs's default partitioner is murmur2, as Quipu's"
            );
            *per_partition.entry(record.partition).or_default() += 1;
        }
        // Every acknowledged batch starts at an offset that holds one of its records.
        for ack in summary[codec]["acks"].as_array().unwrap() {
            let (partition, base) = (
                ack["partition"].as_u64().unwrap(),
                ack["baseOffset"].as_u64().unwrap(),
            );
            assert!(
                stored
                    .iter()
                    .any(|r| u64::from(r.partition) == partition && r.offset == base),
                "{codec}: acknowledged {partition}@{base} is not stored"
            );
        }
        // What kafkajs's consumer read is what the cluster holds, record for record.
        let consumed: std::collections::HashSet<String> = summary[codec]["consumed"]
            .as_array()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(consumed.len(), COUNT, "{codec}: every record once");
        for record in &stored {
            let text = |b: &Option<Vec<u8>>| String::from_utf8(b.clone().unwrap()).unwrap();
            let header = record.headers[0].1.clone();
            let entry = serde_json::json!([
                record.partition,
                record.offset,
                text(&record.key),
                text(&record.value),
                text(&header),
            ]);
            assert!(
                consumed.contains(&entry.to_string()),
                "{codec}: kafkajs did not consume {entry}"
            );
        }
        // Seeking partition 0 to offset 5 reads from there.
        let fifth = stored
            .iter()
            .find(|r| r.partition == 0 && r.offset == 5)
            .unwrap();
        assert_eq!(
            summary[codec]["seeked"],
            serde_json::json!([5, String::from_utf8(fifth.key.clone().unwrap()).unwrap()]),
            "{codec}"
        );
        for offsets in summary[codec]["offsets"].as_array().unwrap() {
            let partition = u32::try_from(offsets["partition"].as_u64().unwrap()).unwrap();
            assert_eq!(offsets["low"], 0, "{codec}");
            assert_eq!(
                offsets["high"].as_u64().unwrap(),
                per_partition.get(&partition).copied().unwrap_or(0),
                "{codec}"
            );
        }
    }
    assert_eq!(summary["timestampOffset"], 1);
    cluster.stop().await;
}
