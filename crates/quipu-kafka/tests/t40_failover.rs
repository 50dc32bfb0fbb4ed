//! A leader dies while confluent-kafka produces with acks=all: the client finds the new leader
//! through Metadata and goes on, and every acknowledged record is stored exactly once, at the
//! offset acknowledged, in the order acknowledged. Without idempotence some records may fail
//! (their outcome unknown, never retried); with it (`enable.idempotence` in confluent-kafka,
//! kafka-python, aiokafka, kafkajs and kcat, retries on) none may: every record is
//! acknowledged and stored once, in the order produced.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::collections::HashMap;

use common::*;
use quipu_kafka::KafkaConfig;
use tokio::io::AsyncBufReadExt;

const COUNT: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_goes_on_through_a_leader_failover() {
    failover("plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_loses_and_duplicates_nothing_through_a_leader_crash() {
    failover("idempotent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_kafka_python_producer_goes_through_a_leader_crash() {
    failover("kafka-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_aiokafka_producer_goes_through_a_leader_crash() {
    failover("aiokafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_kafkajs_producer_goes_through_a_leader_crash() {
    failover("kafkajs").await;
}

/// kcat (librdkafka's command line) reports no offsets, only whether everything was delivered:
/// it produces lines from its standard input with idempotence on while the leader's node
/// crashes after 300 are stored, exits successfully (every record acknowledged), and the
/// partition holds each line once, in the order written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_kcat_producer_goes_through_a_leader_crash() {
    use tokio::io::AsyncWriteExt;
    let kcat = require("kcat", "install Debian's kcat (apt-get install kcat)");
    let mut cluster = Cluster::start(KafkaConfig::default()).await;
    cluster.any().create_topic("failover", 1, 3).await.unwrap();
    cluster.wait_for_leaders("failover").await;
    let group = cluster
        .any()
        .with_metadata(|m| m.topic("failover").unwrap().partitions[0].group);
    let mut child = tokio::process::Command::new(&kcat)
        .args([
            "-b",
            &cluster.bootstrap(),
            "-P",
            "-t",
            "failover",
            "-p",
            "0",
        ])
        .args(["-X", "enable.idempotence=true", "-X", "linger.ms=5"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let leader_at = |cluster: &Cluster| cluster.leader_index(group);
    let written = async {
        for i in 0..COUNT {
            stdin
                .write_all(format!("v-{i}\n").as_bytes())
                .await
                .unwrap();
            if i == 400 {
                stdin.flush().await.unwrap();
                // Crash the leader's node once 300 records are stored.
                let started = std::time::Instant::now();
                let leader = loop {
                    let stored = leader_at(&cluster).and_then(|at| {
                        let node = cluster.nodes[at].node.as_ref()?;
                        let p = node.partition(quipu_node::GroupId(group))?;
                        Some((at, p.high_watermark().0))
                    });
                    if let Some((at, hw)) = stored
                        && hw >= 300
                    {
                        break at;
                    }
                    assert!(started.elapsed() < PATIENCE, "300 records never stored");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                };
                cluster.nodes[leader].crash().await;
            }
        }
        drop(stdin); // end of input: kcat delivers what is left and exits
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), written)
        .await
        .expect("kcat took every line in time");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .expect("kcat finished in time")
    .unwrap();
    assert!(
        out.status.success(),
        "kcat failed to deliver: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.wait_for_leaders("failover").await;
    let stored: Vec<String> = read_back(&cluster, "failover")
        .await
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
        .collect();
    let expected: Vec<String> = (0..COUNT).map(|i| format!("v-{i}")).collect();
    assert_eq!(stored.len(), COUNT, "each line stored once");
    assert!(stored == expected, "stored in the order written");
    cluster.stop().await;
}

/// `mode`: "kafkajs" (`tests/clients/kafkajs_failover.js`, one send at a time, so fewer
/// records), or one of `tests/clients/failover_producer.py`; all but "plain" are idempotent.
async fn failover(mode: &str) {
    let idempotent = mode != "plain";
    let count = if mode == "kafkajs" { COUNT / 3 } else { COUNT };
    let mut cluster = Cluster::start(KafkaConfig::default()).await;
    cluster.any().create_topic("failover", 1, 3).await.unwrap();
    cluster.wait_for_leaders("failover").await;
    let mut command = if mode == "kafkajs" {
        let (node, modules) = kafkajs();
        let mut command = tokio::process::Command::new(node);
        command
            .arg(client_script("kafkajs_failover.js"))
            .env("NODE_PATH", modules);
        command
    } else {
        let mut command = tokio::process::Command::new(python());
        command.arg(client_script("failover_producer.py"));
        command
    };
    command
        .arg(cluster.bootstrap())
        .arg("failover")
        .arg(count.to_string());
    if mode != "kafkajs" {
        command.arg(mode);
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked: Vec<(usize, u64)> = Vec::new();
    let mut failed = 0;
    let mut killed_after = None;
    let group = cluster
        .any()
        .with_metadata(|m| m.topic("failover").unwrap().partitions[0].group);
    let reading = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields[0] {
                "ack" => acked.push((fields[1].parse().unwrap(), fields[2].parse().unwrap())),
                _ => failed += 1,
            }
            if killed_after.is_none() && acked.len() >= 300 {
                // Stop the leader's node: as a crash would (no handoff, logs not closed) for the
                // idempotent producer, whose in-flight requests then have unknown outcomes and
                // are retried; gracefully for the other, which cannot retry.
                let leader = cluster.leader_index(group).unwrap();
                if idempotent {
                    cluster.nodes[leader].crash().await;
                } else {
                    cluster.nodes[leader].stop().await;
                }
                killed_after = Some(acked.len());
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), reading)
        .await
        .expect("the producer finished in time");
    assert!(child.wait().await.unwrap().success());
    let killed_after = killed_after.expect("the leader was stopped");
    assert!(
        acked.len() > killed_after + 100,
        "the producer went on after the failover: {} acknowledged, {killed_after} before it, {failed} failed",
        acked.len()
    );
    cluster.wait_for_leaders("failover").await;
    let stored = read_back(&cluster, "failover").await;
    let mut at: HashMap<String, Vec<u64>> = HashMap::new();
    for record in &stored {
        at.entry(String::from_utf8(record.value.clone().unwrap()).unwrap())
            .or_default()
            .push(record.offset);
    }
    let mut last = None;
    for (i, offset) in &acked {
        let offsets = at
            .get(&format!("v-{i}"))
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_eq!(
            offsets,
            [*offset],
            "v-{i} acknowledged at {offset}, stored at {offsets:?}"
        );
        assert!(
            last.is_none_or(|(last_i, last_offset)| last_i < *i && last_offset < *offset),
            "v-{i} acknowledged at {offset}, after {last:?}: acknowledgements out of order"
        );
        last = Some((*i, *offset));
    }
    if idempotent {
        assert_eq!(
            failed, 0,
            "an idempotent producer's records all get through"
        );
        assert_eq!(acked.len(), count);
        assert_eq!(stored.len(), count, "nothing stored twice");
        let mut in_order = acked.clone();
        in_order.sort_unstable();
        assert!(
            in_order.windows(2).all(|w| w[0].1 < w[1].1),
            "stored in the order produced"
        );
    }
    eprintln!(
        "{} acknowledged ({killed_after} before the failover), {failed} failed, {} stored",
        acked.len(),
        stored.len()
    );
    cluster.stop().await;
}
