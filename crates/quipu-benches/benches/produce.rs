//! Produce throughput through Raft: 1 KiB records in 64 KiB batches, acks=all, replication
//! factor 1 and 3 with every node in this process (real gRPC on 127.0.0.1, `fsync=always`), and
//! replication factor 3 with the two followers in processes of their own (this executable started
//! again as a bare node), beside the storage engine's own `fsync=always` append of the same
//! batches in the same run. Figures go to `docs/benchmarks.md`.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // benchmark set-up unwraps

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
use quipu_node::{GroupId, Node, NodeConfig, Partition};
use quipu_record::{BatchBuilder, Compression};
use quipu_storage::{Log, LogConfig, NewEntry};

const BATCH_BYTES: usize = 64 * 1024;
/// Produce calls in flight at once in the concurrent variants.
const IN_FLIGHT: usize = 8;

fn batch() -> Bytes {
    let mut builder = BatchBuilder::new(0, Compression::None);
    let value = vec![0x5a_u8; 1024 - 40];
    for i in 0..BATCH_BYTES / 1024 {
        builder.push(
            1_700_000_000_000 + i as i64,
            Some(format!("key-{i:08}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    builder.build().unwrap()
}

async fn cluster(replicas: usize, dirs: &[tempfile::TempDir]) -> (Vec<Node>, Arc<Partition>) {
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().take(replicas).enumerate() {
        let config = NodeConfig::new(
            i as u64 + 1,
            dir.path().to_path_buf(),
            "127.0.0.1:0".parse().unwrap(),
        );
        nodes.push(Node::start(config).await.unwrap());
    }
    let mut partitions = Vec::new();
    for node in &nodes {
        partitions.push(node.open_partition(GroupId(1)).await.unwrap());
    }
    let members: Vec<(u64, String)> = nodes
        .iter()
        .map(|n| (n.id(), n.addr().to_string()))
        .collect();
    partitions[0].bootstrap(members).await.unwrap();
    let start = Instant::now();
    let leader = loop {
        if let Some(p) = partitions.iter().find(|p| p.is_leader()) {
            break Arc::clone(p);
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    (nodes, leader)
}

/// Set in a follower process: `node_id,data_dir`.
const CHILD_ENV: &str = "QUIPU_BENCH_FOLLOWER";

/// A follower process: a node hosting partition 1, until its stdin closes (the benchmark ended or
/// died). It prints its transport address on its first line.
fn run_follower(spec: &str) {
    let (id, dir) = spec.split_once(',').unwrap();
    let runtime = quipu_benches::runtime();
    runtime.block_on(async {
        let config = NodeConfig::new(
            id.parse().unwrap(),
            dir.into(),
            "127.0.0.1:0".parse().unwrap(),
        );
        let node = Node::start(config).await.unwrap();
        node.open_partition(GroupId(1)).await.unwrap();
        println!("{}", node.addr());
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await;
        node.stop().await;
    });
}

/// This process leads partition 1; nodes 2 and 3 are follower processes.
async fn three_processes(dirs: &[tempfile::TempDir]) -> (Node, Vec<Child>, Arc<Partition>) {
    let mut children = Vec::new();
    let mut members = Vec::new();
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        let id = i as u64 + 1;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, format!("{id},{}", dir.path().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        members.push((id, line.trim().to_string()));
        children.push(child);
    }
    let config = NodeConfig::new(
        1,
        dirs[0].path().to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
    );
    let node = Node::start(config).await.unwrap();
    let partition = node.open_partition(GroupId(1)).await.unwrap();
    members.insert(0, (1, node.addr().to_string()));
    partition.bootstrap(members).await.unwrap();
    let start = Instant::now();
    while !partition.is_leader() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "this process does not lead"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (node, children, partition)
}

/// One produce at a time, then `IN_FLIGHT` at once, on `leader`, named `{name}_…`.
fn bench_produce(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    leader: &Arc<Partition>,
    batch: &Bytes,
) {
    group.bench_function(format!("{name}_acks_all_sequential"), |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    leader.produce(batch.clone()).await.unwrap();
                }
                start.elapsed()
            })
        });
    });
    group.bench_function(format!("{name}_acks_all_{IN_FLIGHT}_in_flight"), |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for lane in 0..IN_FLIGHT as u64 {
                    let (leader, batch) = (Arc::clone(leader), batch.clone());
                    let count =
                        iters / IN_FLIGHT as u64 + u64::from(lane < iters % IN_FLIGHT as u64);
                    tasks.spawn(async move {
                        for _ in 0..count {
                            leader.produce(batch.clone()).await.unwrap();
                        }
                    });
                }
                while let Some(done) = tasks.join_next().await {
                    done.unwrap();
                }
                start.elapsed()
            })
        });
    });
}

fn produce_through_raft(c: &mut Criterion) {
    let runtime = quipu_benches::runtime();
    let batch = batch();
    let mut group = c.benchmark_group("produce_64KiB_batches");
    group.measurement_time(Duration::from_secs(8));
    group.sample_size(20);
    group.throughput(Throughput::Bytes(batch.len() as u64));

    // The storage engine alone: the same batches, fsync=always, one append + sync at a time.
    group.bench_function("storage_engine_fsync_always", |b| {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let index = log.next_index();
                log.append(&[NewEntry::records(index, 1, batch.clone())])
                    .unwrap();
                log.sync_to(index + 1).unwrap();
            }
            start.elapsed()
        });
    });

    for replicas in [1usize, 3] {
        let dirs: Vec<tempfile::TempDir> = (0..replicas)
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let (nodes, leader) = runtime.block_on(cluster(replicas, &dirs));
        bench_produce(
            &mut group,
            &runtime,
            &format!("rf{replicas}"),
            &leader,
            &batch,
        );
        runtime.block_on(async {
            for node in nodes {
                node.stop().await;
            }
        });
    }

    // Three processes: the followers' Raft, transport and fsyncs run in processes of their own.
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (node, mut children, leader) = runtime.block_on(three_processes(&dirs));
    bench_produce(&mut group, &runtime, "rf3_three_processes", &leader, &batch);
    runtime.block_on(node.stop());
    for child in &mut children {
        drop(child.stdin.take()); // the follower stops when its stdin closes
        child.wait().unwrap();
    }
    group.finish();
}

criterion_group!(benches, produce_through_raft);

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_follower(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
