//! The data directory's free space: [`DiskGuard`] keeps a reserve (`disk_reserve_bytes`) below
//! which the node refuses produce requests (reads, fetches and Raft traffic go on, so replicas
//! keep what they already hold in step); it resumes by itself once space returns. Before that,
//! from twice the reserve, the logs delete their spare segment files ([`run_spare_release`]).
//! And the sync scope of its logs ([`open_shared_sync`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quipu_storage::SharedSync;

use crate::config::{NodeConfig, SyncScope};
use crate::error::NodeError;
use crate::node::Inner;

/// How long a free-space reading is trusted: at most one `statvfs` per interval.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How often [`run_spare_release`] reads the data disk's free space.
pub const SPARE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Free space, in reserves, under which the logs keep no spare files: a node deletes its spares
/// before the reserve stops its produces.
const SPARES_DELETED_UNDER_RESERVES: u64 = 2;

/// Free space, in reserves, from which the logs keep spares again (above the point they stop,
/// so that a disk hovering there does not turn them on and off at every reading).
const SPARES_KEPT_FROM_RESERVES: u64 = 3;

/// Keeps the logs' spare files (`quipu_storage`'s recycled segments, `log.recycle_segments`) from
/// filling the data disk: while its free space is under twice `disk_reserve_bytes`, every
/// replica's log (and the controller's) deletes its spare and purges keep none, until free space
/// is back to three times the reserve (so on a disk smaller than that, never once it fell under
/// twice). Reads free space every [`SPARE_CHECK_INTERVAL`]; under the mark it tells every log
/// again at each reading, so that replicas opened meanwhile follow. Does nothing without a
/// reserve or with recycling off.
pub(crate) async fn run_spare_release(inner: Arc<Inner>) {
    let (dir, reserve) = (
        inner.config.data_dir.clone(),
        inner.config.disk_reserve_bytes,
    );
    if reserve == 0 || !inner.config.log.recycle_segments {
        return;
    }
    let mut ticker = tokio::time::interval(SPARE_CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keeping = true;
    loop {
        ticker.tick().await;
        let free = match free_bytes(&dir) {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = &e as &dyn std::error::Error, "cannot read the data disk's free space");
                continue;
            }
        };
        let keep = if keeping {
            free >= reserve.saturating_mul(SPARES_DELETED_UNDER_RESERVES)
        } else {
            free >= reserve.saturating_mul(SPARES_KEPT_FROM_RESERVES)
        };
        if keep && keeping {
            continue;
        }
        let partitions = inner.hosted_partitions();
        let controller = inner.controller_log.upgrade();
        let told = tokio::task::spawn_blocking(move || {
            let replicas: u64 = partitions.iter().map(|p| p.keep_spares(keep)).sum();
            replicas + controller.map_or(0, |log| log.keep_spares(keep))
        })
        .await;
        let released = match told {
            Ok(released) => released,
            Err(e) => {
                // Told again at the next reading.
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "spare release task failed"
                );
                continue;
            }
        };
        metrics::counter!("quipu_log_spare_bytes_released_total").increment(released);
        if keep != keeping {
            if keep {
                tracing::info!(dir = %dir.display(), free, reserve, "the data disk has room again: logs keep spare segment files");
            } else {
                tracing::warn!(dir = %dir.display(), free, reserve, released, "the data disk nears its reserve: logs delete their spare segment files and keep none");
            }
        }
        keeping = keep;
    }
}

/// The data directory's disk has less free space than the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the data disk has {free} bytes free, under the reserve of {reserve} (disk_reserve_bytes)")]
pub struct DiskLow {
    /// Free bytes (available to this process).
    pub free: u64,
    /// The reserve.
    pub reserve: u64,
}

/// The free-space reserve of one directory's file system. Every produce of the node checks it:
/// no lock, the last reading in two atomics.
#[derive(Debug)]
pub struct DiskGuard {
    dir: PathBuf,
    reserve: u64,
    /// When this guard was made: readings are timed from it.
    born: Instant,
    /// When free space was last read, in µs since `born` plus one (0: never).
    read_at_us: AtomicU64,
    /// What it was.
    free: AtomicU64,
}

impl DiskGuard {
    /// A reserve of `reserve` bytes on the file system holding `dir` (0: no reserve).
    pub fn new(dir: PathBuf, reserve: u64) -> DiskGuard {
        DiskGuard {
            dir,
            reserve,
            born: Instant::now(),
            read_at_us: AtomicU64::new(0),
            free: AtomicU64::new(0),
        }
    }

    /// `Err` while the file system has less than the reserve free. Reads free space at most
    /// once per [`DISK_CHECK_INTERVAL`]; a failed reading lets the request through (the write
    /// itself then reports the disk's state).
    pub fn check(&self) -> Result<(), DiskLow> {
        if self.reserve == 0 {
            return Ok(());
        }
        let now_us = u64::try_from(self.born.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let read_at = self.read_at_us.load(Ordering::Acquire);
        let interval_us = u64::try_from(DISK_CHECK_INTERVAL.as_micros()).unwrap_or(u64::MAX);
        let free = if read_at != 0 && now_us.saturating_sub(read_at) < interval_us {
            self.free.load(Ordering::Acquire)
        } else {
            // Produces that find the reading stale together may each read; they agree closely.
            match free_bytes(&self.dir) {
                Ok(free) => {
                    self.free.store(free, Ordering::Release);
                    self.read_at_us.store(now_us, Ordering::Release);
                    free
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = &e as &dyn std::error::Error, "cannot read the data disk's free space");
                    return Ok(());
                }
            }
        };
        if free < self.reserve {
            return Err(DiskLow {
                free,
                reserve: self.reserve,
            });
        }
        Ok(())
    }
}

/// Size of the file system holding `dir`, in bytes.
pub fn total_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_blocks.saturating_mul(stat.f_frsize))
}

/// Bytes an unprivileged process may still write on the file system holding `dir`.
pub fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The group the logs of the data directory sync through, as `sync_scope` says (before any log
/// opens: a `syncfs` reports the write errors that happen after its group opened).
pub(crate) fn open_shared_sync(config: &NodeConfig) -> Result<Option<Arc<SharedSync>>, NodeError> {
    let dir = &config.data_dir;
    if config.sync_scope == SyncScope::File {
        return Ok(None);
    }
    let group = SharedSync::open(dir).map_err(NodeError::SharedSync)?;
    tracing::info!(dir = %dir.display(), filesystem = group.filesystem(), "logs waiting at once share one sync of the filesystem");
    Ok(Some(Arc::new(group)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_measured_against_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        DiskGuard::new(dir.path().to_path_buf(), 0).check().unwrap();
        DiskGuard::new(dir.path().to_path_buf(), 1).check().unwrap();
        let low = DiskGuard::new(dir.path().to_path_buf(), u64::MAX)
            .check()
            .unwrap_err();
        assert_eq!(low.reserve, u64::MAX);
        assert!(low.free > 0);
    }
}
