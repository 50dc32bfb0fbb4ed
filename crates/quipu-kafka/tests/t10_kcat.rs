//! Debian's kcat (librdkafka) against a three-node cluster: metadata (a stopped node leaving the
//! ISR), produce with every compression codec, consume back by partition and offset with keys and
//! headers, and offsets by timestamp.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::collections::BTreeSet;

use common::*;
use quipu_kafka::KafkaConfig;

fn config() -> KafkaConfig {
    KafkaConfig {
        auto_create_topics: true,
        default_partitions: 3,
        ..KafkaConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_and_consumes_with_every_codec() {
    let kcat = require("kcat", "install Debian's kcat (apt-get install kcat)");
    let cluster = Cluster::start(config()).await;
    let bootstrap = cluster.bootstrap();

    // Metadata: every node is a broker.
    let listing = run(&kcat, &["-b", &bootstrap, "-L", "-J"], None).await;
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(listing["brokers"].as_array().unwrap().len(), 3, "{listing}");

    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("kcat-{codec}");
        let input: String = (0..1000).map(|i| format!("key-{i}:value-{i}\n")).collect();
        run(
            &kcat,
            &[
                "-b",
                &bootstrap,
                "-P",
                "-t",
                &topic,
                "-K",
                ":",
                "-z",
                codec,
                "-H",
                "origin=kcat",
                "-X",
                "acks=all",
            ],
            Some(input.as_bytes()),
        )
        .await;
        let consumed = run(
            &kcat,
            &[
                "-b",
                &bootstrap,
                "-C",
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%p %o %k %s %h\n",
            ],
            None,
        )
        .await;
        let lines: Vec<&str> = consumed.lines().collect();
        assert_eq!(lines.len(), 1000, "{codec}: {consumed}");
        let mut seen = BTreeSet::new();
        let mut positions = BTreeSet::new();
        for line in &lines {
            let fields: Vec<&str> = line.split(' ').collect();
            let (partition, offset, key, value, headers) =
                (fields[0], fields[1], fields[2], fields[3], fields[4]);
            assert_eq!(key.replace("key-", "value-"), value, "{codec}: {line}");
            assert_eq!(headers, "origin=kcat", "{codec}: {line}");
            assert!(seen.insert(value.to_string()), "{codec}: {value} twice");
            assert!(positions.insert((partition.to_string(), offset.to_string())));
        }
        // The records of one partition, by offset, from the middle.
        let partition0 = lines.iter().filter(|l| l.starts_with("0 ")).count();
        if partition0 > 10 {
            let tail = run(
                &kcat,
                &[
                    "-b", &bootstrap, "-C", "-t", &topic, "-p", "0", "-o", "10", "-e", "-q", "-f",
                    "%o\n",
                ],
                None,
            )
            .await;
            let offsets: Vec<u64> = tail.lines().map(|l| l.parse().unwrap()).collect();
            assert_eq!(offsets.first(), Some(&10), "{codec}");
            assert_eq!(offsets.len(), partition0 - 10, "{codec}");
        }
    }

    // Offsets by timestamp: records produced after `mark` are found from it.
    let topic = "kcat-time";
    run(
        &kcat,
        &["-b", &bootstrap, "-P", "-t", topic, "-p", "0"],
        Some(b"early\n"),
    )
    .await;
    // The consumer below may ask any node about the topic the producer just created.
    cluster.wait_for_topic_everywhere(topic).await;
    let mark = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 1;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    run(
        &kcat,
        &["-b", &bootstrap, "-P", "-t", topic, "-p", "0"],
        Some(b"late\n"),
    )
    .await;
    let from_mark = run(
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
            &format!("s@{mark}"),
            "-e",
            "-q",
        ],
        None,
    )
    .await;
    assert_eq!(from_mark.trim(), "late");
    cluster.stop().await;
}

/// The ids of the replicas and of the in-sync replicas of `topic`'s partition 0, in kcat's JSON
/// metadata listing.
async fn kcat_isr(kcat: &str, bootstrap: &str, topic: &str) -> (Vec<u64>, Vec<u64>) {
    let listing = run(kcat, &["-b", bootstrap, "-L", "-J", "-t", topic], None).await;
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let partition = &listing["topics"][0]["partitions"][0];
    let ids = |key: &str| -> Vec<u64> {
        partition[key]
            .as_array()
            .map(|list| list.iter().filter_map(|r| r["id"].as_u64()).collect())
            .unwrap_or_default()
    };
    (ids("replicas"), ids("isrs"))
}

/// A replica on a node that stopped leaves the ISR Kafka clients see (its replica stays
/// assigned), so tools that count under-replicated partitions count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_sees_a_stopped_node_leave_the_isr() {
    let kcat = require("kcat", "install Debian's kcat (apt-get install kcat)");
    let mut cluster = Cluster::start(config()).await;
    cluster.any().create_topic("isr", 1, 3).await.unwrap();
    cluster.wait_for_topic_everywhere("isr").await;
    cluster.wait_for_leaders("isr").await;
    let ids: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.node.as_ref().unwrap().id())
        .collect();
    let start = std::time::Instant::now();
    loop {
        let (replicas, isr) = kcat_isr(&kcat, &cluster.bootstrap(), "isr").await;
        assert_eq!(replicas.len(), 3, "{replicas:?}");
        if isr.len() == 3 {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the ISR never held every replica: {isr:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let stopped = ids[2];
    let mut running = ids[..2].to_vec();
    running.sort_unstable();
    cluster.nodes[2].crash().await;
    let start = std::time::Instant::now();
    loop {
        let (replicas, mut isr) = kcat_isr(&kcat, &cluster.bootstrap(), "isr").await;
        assert_eq!(
            replicas.len(),
            3,
            "the stopped node's replica stays assigned"
        );
        isr.sort_unstable();
        if isr == running {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the ISR never became the running nodes {running:?}: {isr:?} (node {stopped} stopped)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    cluster.stop().await;
}
