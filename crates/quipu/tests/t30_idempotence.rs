//! Idempotent produce through the CLI, as issue 12 asks: three `quipu server` processes, 400,000
//! lines piped into `quipu produce --acks all`, the leader of a partition SIGKILLed and
//! restarted, then another node SIGKILLed. The producer retries what it could not confirm and
//! the partitions write each batch once: every line is acknowledged exactly once, stored once,
//! and each partition holds its lines in input order.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{PATIENCE, Server, free_port};

const LINES: usize = 400_000;

fn quipu(bootstrap: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_quipu"))
        .args(args)
        .env("QUIPU_BOOTSTRAP", bootstrap)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "quipu {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The node leading partition `partition` of `topic`, from `quipu cluster info`.
fn leader_of(bootstrap: &str, topic: &str, partition: u32) -> Option<usize> {
    let info = quipu(bootstrap, &["cluster", "info"]);
    let prefix = format!("topic {topic} leaders (partition:node): ");
    let leaders = info.lines().find_map(|l| l.strip_prefix(&prefix))?;
    leaders.split_whitespace().find_map(|pair| {
        let (p, node) = pair.split_once(':')?;
        (p.parse::<u32>().ok()? == partition).then(|| node.parse().ok())?
    })
}

#[test]
fn every_line_is_acknowledged_once_through_a_leader_crash_its_restart_and_another_crash() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let raft: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let api: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = raft
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let bootstrap = api
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let start = |i: usize| {
        Server::start(&[
            "--node-id".into(),
            (i + 1).to_string(),
            "--data-dir".into(),
            dirs[i].path().to_str().unwrap().into(),
            "--listen".into(),
            format!("127.0.0.1:{}", raft[i]),
            "--api-listen".into(),
            format!("127.0.0.1:{}", api[i]),
            "--kafka-listen".into(),
            "127.0.0.1:0".into(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--voters".into(),
            voters.clone(),
        ])
    };
    let mut servers: Vec<Option<Server>> = (0..3).map(|i| Some(start(i))).collect();
    for server in servers.iter().flatten() {
        server.wait_for("quipu server ready");
    }
    quipu(
        &bootstrap,
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
    );
    let deadline = Instant::now() + PATIENCE;
    while (0..3).any(|p| leader_of(&bootstrap, "t", p).is_none()) {
        assert!(Instant::now() < deadline, "partitions without a leader");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The producer: every line acknowledged is printed as JSON, in input order.
    let mut producer = Command::new(env!("CARGO_BIN_EXE_quipu"))
        .args(["produce", "t", "--acks", "all", "--format", "json"])
        .env("QUIPU_BOOTSTRAP", &bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // As fast as the producer takes them (`seq 1 400000 | quipu produce`).
    let writer = {
        let mut pipe = producer.stdin.take().unwrap();
        std::thread::spawn(move || {
            for chunk in 0..LINES / 1000 {
                let text: String = (chunk * 1000..(chunk + 1) * 1000)
                    .map(|i| format!("line-{i}\n"))
                    .collect();
                pipe.write_all(text.as_bytes()).unwrap();
            }
        })
    };
    let acked = Arc::new(AtomicUsize::new(0));
    let stdout = producer.stdout.take().unwrap();
    let acks = {
        let acked = Arc::clone(&acked);
        std::thread::spawn(move || {
            let mut acks = Vec::with_capacity(LINES);
            for line in BufReader::new(stdout).lines() {
                let ack: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                acks.push((
                    u32::try_from(ack["partition"].as_u64().unwrap()).unwrap(),
                    ack["offset"].as_u64().unwrap(),
                ));
                acked.store(acks.len(), Ordering::SeqCst);
            }
            acks
        })
    };
    let stderr = producer.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let wait_acked = |lines: usize| {
        while acked.load(Ordering::SeqCst) < lines {
            assert!(!acks.is_finished(), "the producer stopped early");
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    // A third of the way: SIGKILL the leader of partition 0, then restart it from its data.
    wait_acked(LINES / 3);
    let first = leader_of(&bootstrap, "t", 0).unwrap() - 1;
    servers[first].take().unwrap().kill();
    let restarted = start(first);
    restarted.wait_for("quipu server ready");
    servers[first] = Some(restarted);
    // Two thirds: SIGKILL another node, for good (two of three remain, a majority).
    wait_acked(2 * LINES / 3);
    let second = (first + 1) % 3;
    servers[second].take().unwrap().kill();

    writer.join().unwrap();
    let status = producer.wait().unwrap();
    let acks = acks.join().unwrap();
    let errors = errors.join().unwrap();
    assert!(
        status.success(),
        "quipu produce failed: {}",
        errors.join("\n")
    );
    assert!(
        !errors.iter().any(|l| l.contains("not acknowledged")),
        "lines not acknowledged: {}",
        errors.join("\n")
    );
    assert_eq!(acks.len(), LINES, "every line acknowledged");

    // Each partition holds its lines once, at the offsets acknowledged, in input order.
    let mut at: HashMap<(u32, u64), usize> = HashMap::new();
    let mut stored = 0;
    for partition in 0..3u32 {
        let consumed = quipu(
            &bootstrap,
            &[
                "consume",
                "t",
                "--partition",
                &partition.to_string(),
                "--format",
                "json",
            ],
        );
        let mut last = None;
        for line in consumed.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let value = record["value"].as_str().unwrap();
            let index: usize = value.strip_prefix("line-").unwrap().parse().unwrap();
            let offset = record["offset"].as_u64().unwrap();
            assert!(
                last < Some(index),
                "partition {partition}: {value} after line {last:?}"
            );
            last = Some(index);
            assert!(at.insert((partition, offset), index).is_none());
            stored += 1;
        }
    }
    assert_eq!(stored, LINES, "nothing stored twice or lost");
    for (index, (partition, offset)) in acks.iter().enumerate() {
        assert_eq!(
            at.get(&(*partition, *offset)),
            Some(&index),
            "line-{index} acknowledged at {partition}/{offset}"
        );
    }
    eprintln!(
        "{LINES} lines, leader node {} SIGKILLed and restarted, node {} SIGKILLed: all acknowledged and stored once",
        first + 1,
        second + 1
    );
}
