//! A full disk (issue 15), on a small tmpfs each test mounts itself: below `disk_reserve_bytes`
//! the node refuses produce requests with a retriable error, keeps serving fetches, and takes
//! records again by itself once space returns; a replica an ENOSPC stopped is reopened and
//! goes on with everything it had committed. Needs root (to mount the tmpfs).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; chunks are small

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::*;
use quipu_node::{Node, NodeConfig, Partition, ProduceError};
use quipu_storage::{LogConfig, Offset};

/// A tmpfs of a few MiB mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(size_mib: u64) -> SmallDisk {
        assert!(
            rustix::process::geteuid().is_root(),
            "the full-disk tests need root: they mount a small tmpfs"
        );
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&mount)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot mount a tmpfs on {}",
            mount.display()
        );
        SmallDisk { _dir: dir, mount }
    }

    /// Fills the disk with a ballast file until `left` bytes are free.
    fn fill_leaving(&self, left: u64) {
        let free = quipu_node::free_bytes(&self.mount).unwrap();
        let ballast = std::fs::File::create(self.ballast()).unwrap();
        ballast.set_len(0).unwrap();
        use std::io::Write;
        let chunk = vec![0xAB_u8; 64 * 1024];
        let mut writer = std::io::BufWriter::new(ballast);
        let mut to_write = free.saturating_sub(left);
        while to_write > 0 {
            let n = to_write.min(chunk.len() as u64) as usize;
            if writer.write_all(&chunk[..n]).is_err() {
                break; // the disk is full: as much as it takes
            }
            to_write -= n as u64;
        }
        let _ = writer.flush();
    }

    fn empty(&self) {
        std::fs::remove_file(self.ballast()).unwrap();
    }

    fn ballast(&self) -> PathBuf {
        self.mount.join("ballast")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
    }
}

/// A one-node cluster on `dir` with a one-partition topic; the partition's leader replica.
async fn single_node(dir: &Path, disk_reserve_bytes: u64) -> (Node, std::sync::Arc<Partition>) {
    let log = LogConfig {
        segment_bytes_max: 256 * 1024,
        ..small_log()
    };
    let config = NodeConfig {
        disk_reserve_bytes,
        ..config(1, &dir.join("node"), "127.0.0.1:0".parse().unwrap(), log)
    };
    let node = start_single(config).await;
    let partition = single_partition(&node, "topic").await;
    (node, partition)
}

/// A one-record batch of about 8 KiB.
fn record() -> Bytes {
    batch(&"v".repeat(8 * 1024))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_reserve_produce_is_refused_fetch_goes_on_and_space_brings_it_back() {
    let disk = SmallDisk::mount(32);
    let reserve = 8 * 1024 * 1024;
    let (node, partition) = single_node(&disk.mount, reserve).await;
    for _ in 0..5 {
        partition.produce(record()).await.unwrap();
    }
    disk.fill_leaving(reserve / 2);
    tokio::time::sleep(quipu_node::DISK_CHECK_INTERVAL).await; // the reading is refreshed
    for produce in [
        partition.produce(record()).await.map(drop),
        partition.produce_leader_ack(record()).await.map(drop),
        partition.produce_unacknowledged(record()).await,
    ] {
        match produce {
            Err(ProduceError::DiskLow(low)) => {
                assert_eq!(low.reserve, reserve);
                assert!(low.free < reserve);
            }
            other => panic!("expected a refusal for the disk reserve, got {other:?}"),
        }
    }
    // What the replica holds is still served.
    let fetched = partition.fetch(Offset(0), 1 << 20).await.unwrap();
    assert_eq!(fetched.len(), 5);
    assert_eq!(partition.high_watermark(), Offset(5));
    // Space returns: produce resumes by itself.
    disk.empty();
    assert_eq!(produce_until_accepted(&partition).await, Offset(5));
    node.stop().await;
}

/// Produces one record, retrying the refusals a full disk causes, for at most 30 s.
async fn produce_until_accepted(partition: &Partition) -> Offset {
    let start = std::time::Instant::now();
    loop {
        match partition.produce(record()).await {
            Ok(offset) => return offset,
            // A reopened replica answers "no leader" until its election is over.
            Err(
                ProduceError::DiskLow(_)
                | ProduceError::Unavailable { .. }
                | ProduceError::NotLeader { leader: None, .. },
            ) => {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(30),
                    "produce did not resume"
                );
                // The next free-space reading, or the reopened replica's election.
                tokio::time::sleep(quipu_node::DISK_CHECK_INTERVAL).await;
            }
            Err(e) => panic!("unexpected refusal: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_by_enospc_is_reopened_and_keeps_what_it_committed() {
    let disk = SmallDisk::mount(32);
    // No reserve: the writes themselves hit the full disk.
    let (node, partition) = single_node(&disk.mount, 0).await;
    for _ in 0..5 {
        partition.produce(record()).await.unwrap();
    }
    let group = partition.group();
    disk.fill_leaving(0);
    // Appends fail with ENOSPC (the segment roll or the write itself) and stop the replica.
    let mut stopped = false;
    for _ in 0..64 {
        if partition.produce(record()).await.is_err() && partition.health().is_err() {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "a full disk stops the replica");
    drop(partition);
    disk.empty();
    wait_for("the stopped replica reopened", || {
        node.partition(group).is_some_and(|p| p.health().is_ok())
    })
    .await;
    let partition = node.partition(group).unwrap();
    let offset = produce_until_accepted(&partition).await;
    assert!(
        offset >= Offset(5),
        "committed records kept: next offset {offset:?}"
    );
    let fetched = partition.fetch(Offset(0), 1 << 20).await.unwrap();
    assert!(fetched.len() >= 5);
    node.stop().await;
}

/// Recycled segment files (`log.recycle_segments`) give way to the reserve: once free space is
/// under twice `disk_reserve_bytes`, the node's logs delete their spares and purges keep none
/// (produces still go on, above the reserve); from three times the reserve they keep them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_reserve_the_logs_delete_their_spare_files_until_space_returns() {
    let disk = SmallDisk::mount(64);
    let reserve = 8 * 1024 * 1024;
    let log = LogConfig {
        segment_bytes_max: 256 * 1024,
        retention_bytes: Some(512 * 1024),
        ..small_log()
    };
    let config = NodeConfig {
        disk_reserve_bytes: reserve,
        ..config(
            1,
            &disk.mount.join("node"),
            "127.0.0.1:0".parse().unwrap(),
            log,
        )
    };
    let node = start_single(config).await;
    let partition = single_partition(&node, "topic").await;
    // Produces a MiB, applies retention, and waits for the purge (behind a snapshot).
    let fill_and_purge = || async {
        let start = partition.log_start_offset();
        for _ in 0..128 {
            partition.produce(record()).await.unwrap();
        }
        node.enforce_retention().await;
        wait_for("a purge", || partition.log_start_offset() > start).await;
    };
    fill_and_purge().await;
    assert!(partition.has_spare(), "the purge kept a spare");

    // Between the reserve and twice it: the spare goes, and none stays after the next purge
    // (that the purge itself keeps none is t40's, in quipu-storage: here the node's next
    // reading would delete one too).
    disk.fill_leaving(reserve * 3 / 2);
    wait_for("the spare to be deleted", || !partition.has_spare()).await;
    fill_and_purge().await;
    assert!(!partition.has_spare(), "a spare stayed near the reserve");

    // Space returns: purges keep a spare again once the node has read it.
    disk.empty();
    let start = std::time::Instant::now();
    while !partition.has_spare() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "purges never kept a spare again"
        );
        tokio::time::sleep(quipu_node::SPARE_CHECK_INTERVAL).await;
        fill_and_purge().await;
    }
    node.stop().await;
}
