//! Produce throughput through Raft: 1 KiB records in 64 KiB batches, acks=all, replication
//! factor 1 and 3 with every node in this process (real gRPC on 127.0.0.1, `fsync=always`),
//! beside the storage engine's own `fsync=always` append of the same batches in the same run.
//! Figures go to `docs/benchmarks.md`.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // benchmark set-up unwraps

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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
        let config = NodeConfig {
            node_id: i as u64 + 1,
            data_dir: dir.path().to_path_buf(),
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            raft: NodeConfig::default_raft(),
            log: LogConfig::default(),
        };
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

fn produce_through_raft(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
        group.bench_function(format!("rf{replicas}_acks_all_sequential"), |b| {
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
        group.bench_function(
            format!("rf{replicas}_acks_all_{IN_FLIGHT}_in_flight"),
            |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let start = Instant::now();
                        let mut tasks = tokio::task::JoinSet::new();
                        for lane in 0..IN_FLIGHT as u64 {
                            let (leader, batch) = (Arc::clone(&leader), batch.clone());
                            let count = iters / IN_FLIGHT as u64
                                + u64::from(lane < iters % IN_FLIGHT as u64);
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
            },
        );
        runtime.block_on(async {
            for node in nodes {
                node.stop().await;
            }
        });
    }
    group.finish();
}

criterion_group!(benches, produce_through_raft);
criterion_main!(benches);
