//! What idle partitions cost: three nodes in this process, each hosting a replica of every one of
//! `QUIPU_IDLE_PARTITIONS` (default 1,000) partitions with replication factor 3, default Raft
//! timings. After every partition has a leader, it measures this process's CPU time and resident
//! memory over `QUIPU_IDLE_SECONDS` (default 10) of idleness and prints them, per node (a third of
//! the process). Run: `cargo bench -p quipu-benches --bench idle`. Figures go to
//! `docs/benchmarks.md`.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss
)] // a measurement tool

use std::time::{Duration, Instant};

use quipu_node::{GroupId, Node, NodeConfig};
use quipu_storage::LogConfig;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (user + system CPU seconds of this process, resident bytes).
fn usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let cpu = (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()) as f64
        / ticks_per_second;
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap())
        .unwrap();
    (cpu, rss_kib * 1024)
}

fn main() {
    // `cargo bench` passes `--bench`; this tool takes its parameters from the environment.
    let partitions = env_or("QUIPU_IDLE_PARTITIONS", 1000);
    let seconds = env_or("QUIPU_IDLE_SECONDS", 10);
    // Both ways in one run (the same machine state): without quiescence, then with it.
    for quiesce in [false, true] {
        println!("--- quiescence {}", if quiesce { "on" } else { "off" });
        measure(partitions, seconds, quiesce);
    }
}

fn measure(partitions: u64, seconds: u64, quiesce: bool) {
    let runtime = quipu_benches::runtime();
    runtime.block_on(async {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut nodes = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let config = NodeConfig {
                // No preallocation, as in this bench's first runs (when every log reserved 16 MiB):
                // its figures stay comparable. With the default, each log's first append reserves
                // 64 KiB, 188 MiB for 3,000 logs.
                log: LogConfig { preallocate_bytes: 0, ..LogConfig::default() },
                quiesce,
                ..NodeConfig::new(i as u64 + 1, dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap())
            };
            nodes.push(Node::start(config).await.unwrap());
        }
        let members: Vec<(u64, String)> = nodes.iter().map(|n| (n.id(), n.addr().to_string())).collect();
        let (cpu_before_open, rss_before_open) = usage();
        let opening = Instant::now();
        for group in 1..=partitions {
            for node in &nodes {
                node.open_partition(GroupId(group)).await.unwrap();
            }
            nodes[(group % 3) as usize].partition(GroupId(group)).unwrap().bootstrap(members.clone()).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        for group in 1..=partitions {
            while !nodes.iter().any(|n| n.partition(GroupId(group)).unwrap().is_leader()) {
                assert!(Instant::now() < deadline, "partition {group} has no leader");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        println!("opened {partitions} partitions × 3 replicas in {:?}", opening.elapsed());
        // Let elections and the first heartbeats settle before measuring.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu0, _) = usage();
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu1, rss) = usage();
        let quiet = nodes
            .iter()
            .flat_map(|n| (1..=partitions).map(move |g| n.partition(GroupId(g)).unwrap()))
            .filter(|p| p.is_quiescent())
            .count();
        println!("quiescent replicas at the end: {quiet} of {}", 3 * partitions);
        let wall = start.elapsed().as_secs_f64();
        let core_share = (cpu1 - cpu0) / wall;
        println!(
            "idle over {wall:.1} s: process CPU {:.1}% of one core, {:.1}% per node; RSS {} MiB total, {} MiB per node ({} MiB before opening partitions, {:.1} KiB per replica)",
            core_share * 100.0,
            core_share * 100.0 / 3.0,
            rss / (1024 * 1024),
            rss / (3 * 1024 * 1024),
            rss_before_open / (1024 * 1024),
            (rss - rss_before_open) as f64 / (3 * partitions) as f64 / 1024.0,
        );
        let _ = cpu_before_open;
        for node in nodes {
            node.stop().await;
        }
    });
}
