//! [`SharedSync`]: the logs of one data directory make their appends durable together.
//!
//! With `fsync=always` a log syncs its active segment after each append (`fdatasync`; appends to
//! one log that wait at once share it). A disk completes a few thousand such syncs a second, one
//! after another, however many files they cover, so a node with hundreds of busy partitions
//! spends its time in syncs of a few KiB each (`docs/benchmarks.md`, "The produce path"). Logs
//! opened with a `SharedSync` ([`crate::LogConfig::shared_sync`]) sync through it instead, in
//! rounds: whoever finds no round running starts one covering every log waiting then. A round
//! of one log is an `fdatasync` of each of that log's files its callers took (its active file;
//! an older one too if it rolled meanwhile); a round of several is one `syncfs(2)` of the
//! filesystem holding the data directory, which writes back every dirty file on it and flushes
//! the disk's cache once. Logs that ask during a round wait for the next one.
//!
//! Invariants:
//! - a log counts as durable only what it had written before it joined a round (its
//!   [`SyncTicket`] is taken first), and a round syncs only what was written before it started;
//! - a failed round fails the whole group, for good: `syncfs` reports a writeback error of any
//!   file on the filesystem, once per open descriptor, and cannot say which file lost data (a
//!   retry would report success for data the failure lost). Every log opened with the group is
//!   poisoned from then on ([`SharedSync::failure`]) until the node opens its logs again with a
//!   new group;
//! - a caller takes its log's active file before it joins a round (and before it counts among
//!   the log's callers in rounds, which a roll's seal or a truncation's cut waits for, holding
//!   the log's lock: `Log::claim_syncs`), and neither a round nor a waiter needs a log's lock,
//!   so a one-log round never runs beside that log's seal or cut. (Another log's `syncfs` round
//!   may write the file back meanwhile: `syncfs` reports errors through the filesystem, apart
//!   from the file's own, so the seal still learns of its file's error.) A round that panics
//!   fails the group, as a failed one does, so that no waiter waits for it for ever;
//! - a group is opened only on a filesystem known to make every written file durable with
//!   `syncfs` and to report writeback errors through it ([`SharedSync::open`]), and a log joins
//!   only if its directory is on that same filesystem.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crate::io;
use crate::log::Log;

/// Filesystems whose `syncfs` writes back every file's data and metadata and flushes the device
/// (`statfs` magic numbers, `linux/magic.h`). Others (FUSE, network filesystems, overlayfs) may
/// do less than `fdatasync` would, so they keep per-file syncs.
const SYNCFS_FILESYSTEMS: [(i64, &str); 4] = [
    (0xEF53, "ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
];

/// The first Linux release whose `syncfs` reports writeback errors of the filesystem's files
/// (5.8); before it, a lost write would go unreported.
const SYNCFS_ERRORS_SINCE: (u32, u32) = (5, 8);

/// A [`SharedSync`] cannot serve this directory; its logs keep syncing each its own files.
#[derive(Debug, thiserror::Error)]
pub enum SharedSyncError {
    /// The directory could not be opened or examined.
    #[error("cannot open {dir} for shared syncs")]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory's filesystem is not one whose `syncfs` is known to make data durable.
    #[error(
        "{dir} is on a filesystem (statfs type {filesystem:#x}) whose syncfs is not known to make \
         every file durable; shared syncs need ext4, xfs, btrfs or tmpfs"
    )]
    Filesystem {
        /// The data directory.
        dir: PathBuf,
        /// The filesystem's `statfs` type.
        filesystem: i64,
    },
    /// The kernel's `syncfs` does not report writeback errors.
    #[error("Linux {release} does not report write errors through syncfs (5.8 and later do)")]
    Kernel {
        /// The kernel release.
        release: String,
    },
}

/// Rounds of syncs of the logs on one filesystem (see the module documentation).
#[derive(Debug)]
pub struct SharedSync {
    dir: PathBuf,
    /// The directory, opened when the group was: `syncfs` reports writeback errors that happened
    /// since this descriptor was opened.
    handle: File,
    /// The filesystem's device: a log joins only if its directory is on it.
    device: u64,
    filesystem: &'static str,
    rounds: Mutex<Rounds>,
    finished: Condvar,
    /// Why a round failed; set once, never cleared.
    failure: OnceLock<String>,
}

/// A round running; dropped only if it unwinds (a panic), which fails the group: its waiters
/// would otherwise wait for it for ever, counted among their logs' callers in rounds, and a roll
/// of one of those logs would wait for them holding the log's lock.
struct RoundRunning<'a> {
    group: &'a SharedSync,
    round: u64,
}

impl Drop for RoundRunning<'_> {
    fn drop(&mut self) {
        let mut rounds = self.group.lock();
        let cause = "a shared sync round did not complete (a panic)".to_string();
        self.group.finish(&mut rounds, self.round, Err(cause));
    }
}

/// A caller's log in a round, and the log's active data file as the caller took it (a later
/// caller of the same log may have taken a newer one, after a roll).
#[derive(Debug)]
struct Joined {
    log: usize,
    file: Arc<File>,
    path: Arc<Path>,
}

#[derive(Debug, Default)]
struct Rounds {
    /// Rounds started; the next one to start is `started + 1`.
    started: u64,
    /// Rounds finished. Each round finishes before the next starts: one runs while `started` is
    /// ahead of `finished`.
    finished: u64,
    /// Rounds that synced the whole filesystem (the others synced one log's files).
    filesystem_rounds: u64,
    /// The logs (by address, while they wait in [`SharedSync::sync`]) that joined the next round,
    /// each with the active file its caller took.
    joined: Vec<Joined>,
}

impl SharedSync {
    /// Opens the group for the filesystem holding `dir` (which must exist). Refused on a
    /// filesystem or kernel that does not qualify (see [`SharedSyncError`]).
    pub fn open(dir: &Path) -> Result<SharedSync, SharedSyncError> {
        let io_error = |source| SharedSyncError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_err(io_error)?;
        let release = release.trim();
        if !reports_syncfs_errors(release) {
            return Err(SharedSyncError::Kernel {
                release: release.to_string(),
            });
        }
        let handle = File::open(dir).map_err(io_error)?;
        let stat = rustix::fs::fstatfs(&handle).map_err(|e| io_error(e.into()))?;
        #[allow(clippy::useless_conversion)] // `f_type`'s width differs between targets.
        let kind = i64::from(stat.f_type);
        let Some((_, filesystem)) = SYNCFS_FILESYSTEMS.iter().find(|(magic, _)| *magic == kind)
        else {
            return Err(SharedSyncError::Filesystem {
                dir: dir.to_path_buf(),
                filesystem: kind,
            });
        };
        let device = handle.metadata().map_err(io_error)?.dev();
        Ok(SharedSync {
            dir: dir.to_path_buf(),
            handle,
            device,
            filesystem,
            rounds: Mutex::new(Rounds::default()),
            finished: Condvar::new(),
            failure: OnceLock::new(),
        })
    }

    /// The directory the group was opened for.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The name of the filesystem the group syncs.
    pub fn filesystem(&self) -> &'static str {
        self.filesystem
    }

    /// Whether `dir` (which exists) is on the group's filesystem.
    pub(crate) fn covers(&self, dir: &Path) -> std::io::Result<bool> {
        Ok(std::fs::metadata(dir)?.dev() == self.device)
    }

    /// Why a round failed, if one did: every log of the group is poisoned by it.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Rounds finished so far, and how many of them synced the whole filesystem.
    pub fn rounds(&self) -> (u64, u64) {
        let rounds = self.lock();
        (rounds.finished, rounds.filesystem_rounds)
    }

    fn lock(&self) -> MutexGuard<'_, Rounds> {
        self.rounds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes durable everything `log` held when its caller took a [`SyncTicket`] and then `file`
    /// (its active data file and path; both before this call): joins the next round, and runs it
    /// if no round is running. The caller learns of a failed round from [`SharedSync::failure`]
    /// (as the group's logs do, poisoned by it).
    pub(crate) fn sync(&self, log: &Log, (file, path): (Arc<File>, Arc<Path>)) {
        if self.failure().is_some() {
            return;
        }
        let mut rounds = self.lock();
        let round = rounds.started + 1;
        rounds.joined.push(Joined {
            log: std::ptr::from_ref(log) as usize,
            file,
            path,
        });
        while rounds.finished < round {
            if rounds.started > rounds.finished {
                rounds = self
                    .finished
                    .wait(rounds)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            if self.failure().is_some() {
                // A round failed while this log waited: no round starts again (a new one could
                // report success for what the failed one lost). What joined stays unsynced.
                return;
            }
            // This log's round has not started and nothing runs: start it, for every log that
            // joined it.
            rounds.started = round;
            let joined = std::mem::take(&mut rounds.joined);
            let mut logs: Vec<usize> = joined.iter().map(|j| j.log).collect();
            logs.sort_unstable();
            logs.dedup();
            drop(rounds);
            let unwinding = RoundRunning { group: self, round };
            let result = self.run(&joined, logs.len());
            std::mem::forget(unwinding);
            drop(joined);
            rounds = self.lock();
            if logs.len() > 1 {
                rounds.filesystem_rounds += 1;
            }
            self.finish(&mut rounds, round, result);
        }
    }

    /// Ends `round` (with `rounds` locked): a failure fails the group for good; wakes the waiters.
    fn finish(&self, rounds: &mut Rounds, round: u64, result: Result<(), String>) {
        rounds.finished = round;
        if let Err(cause) = result {
            tracing::error!(dir = %self.dir.display(), cause, "a shared sync failed: every log on this filesystem is poisoned");
            let _ = self.failure.set(cause);
            // No round starts again: what waits in the next one gives up (and lets its files go).
            rounds.joined.clear();
        }
        self.finished.notify_all();
    }

    /// One round for what `joined` it, `logs` distinct logs.
    fn run(&self, joined: &[Joined], logs: usize) -> Result<(), String> {
        metrics::histogram!("quipu_shared_sync_logs").record(logs as f64);
        if logs == 1 {
            // Every waiter is one log's. Each file a waiter took is that log's active file or a
            // segment sealed (synced) since, and no seal or cut of the log runs during the round
            // (they wait for its callers, `Log::claim_syncs`): the distinct files, synced, hold
            // everything any waiter's ticket names. Usually there is one; two after a roll.
            let mut synced: Vec<*const File> = Vec::new();
            for Joined { file, path, .. } in joined {
                if synced.contains(&Arc::as_ptr(file)) {
                    continue;
                }
                synced.push(Arc::as_ptr(file));
                io::sync_data(file, path)
                    .map_err(|e| format!("fdatasync of {} failed: {e}", path.display()))?;
            }
            return Ok(());
        }
        io::sync_filesystem(&self.handle, &self.dir)
            .map_err(|e| format!("syncfs of {} failed: {e}", self.dir.display()))
    }
}

/// Whether a kernel `release` ("6.18.0-1-amd64") is at least [`SYNCFS_ERRORS_SINCE`].
fn reports_syncfs_errors(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= SYNCFS_ERRORS_SINCE,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use super::*;
    // The power-loss simulation (this crate's dev-dependency on itself turns it on for tests).
    use crate::fault::{PowerLoss, fail_io, fail_next_sync, power_loss, stop_failing_io};
    use crate::{LogConfig, NewEntry, SyncError};

    fn config(group: Option<&Arc<SharedSync>>) -> LogConfig {
        LogConfig {
            shared_sync: group.map(Arc::clone),
            ..LogConfig::default()
        }
    }

    /// `count` logs under `root` sharing one group, each holding `entries` entries.
    fn logs(root: &Path, count: usize, entries: u64) -> (Arc<SharedSync>, Vec<Arc<Log>>) {
        let group = Arc::new(SharedSync::open(root).unwrap());
        let logs: Vec<Arc<Log>> = (0..count)
            .map(|i| {
                let log = Log::open(root.join(format!("p{i}")), config(Some(&group))).unwrap();
                for index in 0..entries {
                    let payload = Bytes::from(vec![u8::try_from(i).unwrap(); 100]);
                    log.append(&[NewEntry::internal(index, 1, payload)])
                        .unwrap();
                }
                Arc::new(log)
            })
            .collect();
        (group, logs)
    }

    /// Makes the group look as if a round were running until [`release`], so that every log
    /// that asks meanwhile joins the next round.
    fn hold(group: &SharedSync) {
        group.lock().started += 1;
    }

    fn release(group: &SharedSync) {
        let mut rounds = group.lock();
        rounds.finished = rounds.started;
        group.finished.notify_all();
    }

    fn wait_until_joined(group: &SharedSync, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while group.lock().joined.len() < count {
            assert!(Instant::now() < deadline, "the logs never joined the round");
            std::thread::yield_now();
        }
    }

    /// Syncs each of `logs` on its own thread while the group is held, so they share a round.
    fn sync_together(group: &SharedSync, logs: &[Arc<Log>]) -> Vec<Result<(), SyncError>> {
        hold(group);
        let threads: Vec<_> = logs
            .iter()
            .map(|log| {
                let log = Arc::clone(log);
                std::thread::spawn(move || log.sync())
            })
            .collect();
        wait_until_joined(group, logs.len());
        release(group);
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn logs_waiting_at_once_share_one_filesystem_sync_that_survives_a_power_loss() {
        let root = tempfile::tempdir().unwrap();
        let (group, logs) = logs(root.path(), 3, 5);
        for log in &logs {
            assert_eq!(log.durable_next_index(), 0);
        }
        for result in sync_together(&group, &logs) {
            result.unwrap();
        }
        // The held round, then one round for all three: a filesystem sync.
        assert_eq!(group.rounds(), (2, 1));
        for log in &logs {
            assert_eq!(log.durable_next_index(), 5);
        }
        // Alone, a log syncs its own file.
        logs[0]
            .append(&[NewEntry::internal(5, 1, Bytes::from_static(b"six"))])
            .unwrap();
        logs[0].sync().unwrap();
        assert_eq!(group.rounds(), (3, 1));
        assert_eq!(logs[0].durable_next_index(), 6);
        // What the rounds made durable survives a power loss; what came after does not.
        logs[1]
            .append(&[NewEntry::internal(5, 1, Bytes::from_static(b"lost"))])
            .unwrap();
        let dirs: Vec<PathBuf> = logs.iter().map(|log| log.dir().to_path_buf()).collect();
        drop(logs);
        for dir in &dirs {
            power_loss(dir, PowerLoss::LoseUnsynced).unwrap();
        }
        let next: Vec<u64> = dirs
            .iter()
            .map(|dir| Log::open(dir, config(None)).unwrap().next_index())
            .collect();
        assert_eq!(next, [6, 5, 5]);
    }

    #[test]
    fn a_failed_filesystem_sync_poisons_every_log_of_the_group() {
        let root = tempfile::tempdir().unwrap();
        let (group, logs) = logs(root.path(), 3, 2);
        // A writeback error in the first log's directory; the next syncfs reports it.
        fail_next_sync(logs[0].dir());
        let results = sync_together(&group, &logs[1..]);
        assert!(results.iter().all(Result::is_err), "{results:?}");
        assert!(group.failure().is_some());
        // The log that was not in the round is poisoned too, for reads and writes alike.
        assert!(matches!(logs[0].sync(), Err(SyncError::Poisoned { .. })));
        assert!(logs[0].read_entries(0, 1, u64::MAX).is_err());
        assert!(
            logs[0]
                .append(&[NewEntry::internal(2, 1, Bytes::from_static(b"x"))])
                .is_err()
        );
        for log in &logs {
            assert_eq!(log.durable_next_index(), 0, "nothing counts as durable");
        }
        // Opened again with a new group (as a restarted node does), the logs work.
        let dirs: Vec<PathBuf> = logs.iter().map(|log| log.dir().to_path_buf()).collect();
        drop(logs);
        let group = Arc::new(SharedSync::open(root.path()).unwrap());
        for dir in &dirs {
            let log = Log::open(dir, config(Some(&group))).unwrap();
            log.sync().unwrap();
        }
    }

    #[test]
    fn a_failed_sync_of_one_log_alone_poisons_the_others() {
        let root = tempfile::tempdir().unwrap();
        let (group, logs) = logs(root.path(), 2, 2);
        fail_next_sync(logs[0].dir());
        assert!(logs[0].sync().is_err());
        assert_eq!(group.rounds(), (1, 0));
        // Its writeback error could have been any file's: the other log no longer trusts its
        // own pages either.
        assert!(matches!(logs[1].sync(), Err(SyncError::Poisoned { .. })));
    }

    #[test]
    fn a_log_poisoned_by_its_own_failed_write_leaves_the_others_syncing() {
        let root = tempfile::tempdir().unwrap();
        let (group, logs) = logs(root.path(), 3, 1);
        // A failed write is reported by the write itself, not by a later sync: only its log
        // stops.
        fail_io(logs[0].dir());
        let entry = NewEntry::internal(1, 1, Bytes::from_static(b"x"));
        assert!(logs[0].append(std::slice::from_ref(&entry)).is_err());
        stop_failing_io(logs[0].dir());
        assert!(matches!(logs[0].sync(), Err(SyncError::Poisoned { .. })));
        for result in sync_together(&group, &logs[1..]) {
            result.unwrap();
        }
        assert_eq!(group.failure(), None);
        assert_eq!(group.rounds(), (2, 1));
        // A log poisoned after it joined a round, which it then has to itself: its caller learns
        // of the poison, and the group goes on.
        logs[2].append(std::slice::from_ref(&entry)).unwrap();
        let failing = Arc::clone(&logs[2]);
        let results = {
            hold(&group);
            let waiter = std::thread::spawn(move || failing.sync());
            wait_until_joined(&group, 1);
            fail_io(logs[2].dir());
            let next = NewEntry::internal(2, 1, Bytes::from_static(b"y"));
            assert!(logs[2].append(&[next]).is_err());
            stop_failing_io(logs[2].dir());
            release(&group);
            waiter.join().unwrap()
        };
        assert!(
            matches!(results, Err(SyncError::Poisoned { .. })),
            "{results:?}"
        );
        assert_eq!(group.failure(), None);
        logs[1].append(&[entry]).unwrap();
        logs[1].sync().unwrap();
        assert_eq!(group.failure(), None);
    }

    #[test]
    fn only_filesystems_known_to_sync_everything_qualify() {
        match SharedSync::open(Path::new("/proc")) {
            Err(SharedSyncError::Filesystem { filesystem, .. }) => {
                assert_eq!(filesystem, 0x9fa0, "procfs");
            }
            other => panic!("procfs qualified: {other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        let group = SharedSync::open(dir.path()).unwrap();
        assert!(group.covers(dir.path()).unwrap());
        assert!(!group.covers(Path::new("/proc")).unwrap());
    }

    #[test]
    fn kernels_from_5_8_report_syncfs_errors() {
        assert!(reports_syncfs_errors("6.18.0-1-amd64"));
        assert!(reports_syncfs_errors("5.8.0"));
        assert!(reports_syncfs_errors("5.10.209-198.858.amzn2.x86_64"));
        assert!(!reports_syncfs_errors("5.4.0-150-generic"));
        assert!(!reports_syncfs_errors("4.19.0"));
        assert!(!reports_syncfs_errors("weird"));
        assert!(!reports_syncfs_errors(""));
    }
}
