//! Cluster membership through the `quipu` binary, as issue 17 asks: a one-node cluster grows to
//! four `quipu server` processes with `--join`, a partition moves with `quipu topic move`, a node
//! is drained and removed, a fifth joins, a node is SIGKILLed for good and removed with
//! `--force`, and a removed node that comes back is refused. Every record produced with
//! acks=all is read back once, in order, at the end.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{PATIENCE, Server, free_port};

fn quipu(bootstrap: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quipu"))
        .args(args)
        .env("QUIPU_BOOTSTRAP", bootstrap)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs a command that must succeed; returns its standard output.
fn ok(bootstrap: &str, args: &[&str]) -> String {
    let output = quipu(bootstrap, args);
    assert!(
        output.status.success(),
        "quipu {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < PATIENCE * 2,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `quipu node list` as (id, state, controller role, replicas held) per node.
fn nodes(bootstrap: &str) -> Vec<(u64, String, String, u64)> {
    ok(bootstrap, &["node", "list"])
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                f[2].to_string(),
                f[6].parse().unwrap(),
            )
        })
        .collect()
}

/// Whether `quipu topic describe` shows no partition moving.
fn settled(bootstrap: &str, topic: &str) -> bool {
    !ok(bootstrap, &["topic", "describe", topic]).contains("moving to")
}

/// A node's process and ports.
struct Node {
    id: u64,
    raft: u16,
    api: u16,
    dir: tempfile::TempDir,
    server: Option<Server>,
}

impl Node {
    fn new(id: u64) -> Node {
        Node {
            id,
            raft: free_port(),
            api: free_port(),
            dir: tempfile::tempdir().unwrap(),
            server: None,
        }
    }

    /// Starts the node, joining through `seed`'s Raft port (or forming a cluster alone).
    fn start(&mut self, seed: Option<u16>, rack: &str) {
        let mut args = vec![
            "--node-id".to_string(),
            self.id.to_string(),
            "--data-dir".into(),
            self.dir.path().to_str().unwrap().into(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.raft),
            "--api-listen".into(),
            format!("127.0.0.1:{}", self.api),
            "--kafka-listen".into(),
            "127.0.0.1:0".into(),
            "--rack".into(),
            rack.into(),
        ];
        if let Some(seed) = seed {
            args.extend(["--join".to_string(), format!("127.0.0.1:{seed}")]);
        }
        let server = Server::start(&args);
        server.wait_for("quipu server ready");
        self.server = Some(server);
    }

    fn api(&self) -> String {
        format!("127.0.0.1:{}", self.api)
    }
}

#[test]
fn a_cluster_grows_moves_drains_and_replaces_a_dead_node_through_the_cli() {
    let mut all: Vec<Node> = (1..=5).map(Node::new).collect();
    all[0].start(None, "a");
    let seed = all[0].raft;
    for (at, rack) in [(1, "b"), (2, "c"), (3, "a")] {
        all[at].start(Some(seed), rack);
    }
    let bootstrap = |nodes: &[&Node]| nodes.iter().map(|n| n.api()).collect::<Vec<_>>().join(",");
    let four = bootstrap(&[&all[0], &all[1], &all[2], &all[3]]);
    // The first node alone was the controller; two joined nodes became voters together, the
    // fourth stays a learner.
    wait_until("three controller voters", || {
        let list = nodes(&four);
        list.len() == 4
            && list.iter().all(|n| n.1 == "active")
            && list.iter().filter(|n| n.2 == "voter").count() == 3
    });

    ok(
        &four,
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "4",
            "--replication-factor",
            "3",
        ],
    );
    let mut expected: Vec<String> = Vec::new();
    let mut produce = |bootstrap: &str, from: usize, count: usize| {
        let lines: Vec<String> = (from..from + count)
            .map(|i| format!("k{}:v{i}", i % 4))
            .collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_quipu"))
            .args(["produce", "t", "--acks", "all", "--key-separator", ":"])
            .env("QUIPU_BOOTSTRAP", bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            lines.join("\n").as_bytes(),
        )
        .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "produce failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        expected.extend(
            lines
                .into_iter()
                .map(|l| l.split_once(':').unwrap().1.to_string()),
        );
    };
    produce(&four, 0, 500);

    // Replicas are spread over four nodes on three racks: no partition has two on rack a
    // (nodes 1 and 4).
    let describe = ok(&four, &["topic", "describe", "t"]);
    for line in describe
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric))
    {
        let replicas = line.split_whitespace().nth(2).unwrap();
        assert!(
            !(replicas.contains('1') && replicas.contains('4')),
            "two replicas on rack a: {line}"
        );
    }

    // Move partition 0 to nodes that do not all hold it.
    let dry = ok(&four, &["cluster", "rebalance"]);
    assert!(
        dry.contains("nothing to move") || dry.contains("a plan only"),
        "{dry}"
    );
    ok(
        &four,
        &[
            "topic",
            "move",
            "t",
            "--partition",
            "0",
            "--replicas",
            "4,2,3",
        ],
    );
    wait_until("the move to complete", || settled(&four, "t"));
    let describe = ok(&four, &["topic", "describe", "t"]);
    let row = describe
        .lines()
        .find(|l| l.split_whitespace().next() == Some("0"))
        .unwrap();
    assert_eq!(row.split_whitespace().nth(2), Some("4,2,3"), "{describe}");

    // Drain node 4, then remove it and stop its process.
    ok(&four, &["node", "drain", "4"]);
    wait_until("node 4 to hold nothing", || {
        settled(&four, "t") && nodes(&four).iter().any(|n| n.0 == 4 && n.3 == 0)
    });
    ok(&four, &["node", "remove", "4"]);
    drop(all[3].server.take());
    let three = bootstrap(&[&all[0], &all[1], &all[2]]);
    produce(&three, 500, 500);

    // Node 5 joins; node 3 dies for good and is removed with --force: its partitions regain
    // three replicas from the survivors.
    let seed = all[1].raft;
    all[4].start(Some(seed), "c");
    all[2].server.take().unwrap().kill();
    let survivors = bootstrap(&[&all[0], &all[1], &all[4]]);
    let refused = quipu(&survivors, &["node", "remove", "3"]);
    assert!(
        !refused.status.success(),
        "removed without --force while it holds replicas"
    );
    ok(&survivors, &["node", "remove", "3", "--force"]);
    wait_until("node 3's partitions to move to node 5", || {
        settled(&survivors, "t") && nodes(&survivors).iter().any(|n| n.0 == 5 && n.3 == 4)
    });
    produce(&survivors, 1000, 500);
    let states: Vec<(u64, String)> = nodes(&survivors).into_iter().map(|n| (n.0, n.1)).collect();
    assert_eq!(
        states,
        [
            (1, "active".to_string()),
            (2, "active".to_string()),
            (3, "removed".to_string()),
            (4, "removed".to_string()),
            (5, "active".to_string()),
        ]
    );

    // Every record once, in order within its partition (each key stays in one partition).
    let consumed = ok(
        &survivors,
        &["consume", "t", "--num", "1500", "--format", "json"],
    );
    let mut values: Vec<(String, String)> = consumed
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_string(),
                v["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(values.len(), 1500);
    for key in 0..4 {
        let of_key: Vec<&String> = values
            .iter()
            .filter(|(k, _)| *k == format!("k{key}"))
            .map(|(_, v)| v)
            .collect();
        let wanted: Vec<&String> = expected
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 == key)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(of_key, wanted, "key k{key}");
    }
    values.clear();

    // Node 3 comes back with its old data: it was removed, so it is refused and stops.
    let node3 = &all[2];
    let back = Server::start(&[
        "--node-id".to_string(),
        "3".into(),
        "--data-dir".into(),
        node3.dir.path().to_str().unwrap().into(),
        "--listen".into(),
        format!("127.0.0.1:{}", node3.raft),
        "--api-listen".into(),
        format!("127.0.0.1:{}", node3.api),
        "--kafka-listen".into(),
        "127.0.0.1:0".into(),
        "--join".into(),
        format!("127.0.0.1:{}", all[0].raft),
    ]);
    let status = back.wait();
    assert!(!status.success(), "a removed node started");
}
