//! Deletion of removed segments' files (purged, truncated away, or reset), paced, on a thread of
//! the process's own.
//!
//! Why: retention removes whole segments (256 MiB by default) of every busy partition at about
//! the same time. Unlinking such a file frees all its blocks at once, and on a filesystem that
//! discards freed blocks (mounted with `discard`, as this project's test VM is) that is one
//! large discard per file in front of every partition's syncs. Measured on that VM (three RF 3
//! nodes, 128 MiB segments, retention at 256 MiB, 70,000 records/s): heartbeats and appends got
//! no answer within their time limit after each round of purges, replication backed off for
//! 500 ms, and the produce p99 was 0.5-0.7 s. RocksDB paces its file deletions for the same
//! reason.
//!
//! How: a purge, truncation or reset renames a segment's files to `<name>.deleted` under the
//! log's lock (durable with a directory sync: the segment is out of the log) and hands them
//! here (a snapshot's install that resets a large log would otherwise free it all at once). This thread
//! shrinks each file by [`STEP_BYTES`] at a time, pausing [`PAUSE`] between steps, then
//! unlinks it.
//!
//! Invariants:
//! - Only files named `*.deleted` are handed here (the files of segments purged, truncated
//!   away or reset, and spares not reused: `<segment>.log.spare.deleted`), and nothing else opens them: a log's open removes
//!   any it finds (a process that stopped before deleting them), and a spare never goes through
//!   a `*.deleted` name on its way to reuse.
//! - A file is shrunk only while no map of it is alive in the process (readers hold bytes of
//!   segment maps, registered by the file's device and inode): it waits up to
//!   [`MAPPED_WAIT_MAX`] for them to go, and is otherwise only unlinked. No map of it can
//!   appear once it is renamed out of its log.
//! - A failure is logged, not returned: the segment is out of its log already; the file goes at
//!   the log's next open.
//! - Files are deleted in the order they were handed over; the queue holds at most the files of
//!   segments purged and not yet deleted.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex, OnceLock, mpsc};
use std::time::Duration;

/// What a removed segment's files are renamed with (appended to their names).
pub(crate) const DELETED_SUFFIX: &str = ".deleted";

/// `path` with [`DELETED_SUFFIX`] appended: the name a removed file goes to the deleter under.
pub(crate) fn deleted_name(path: &std::path::Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(DELETED_SUFFIX);
    PathBuf::from(name)
}

/// Bytes a file shrinks by at each step (each frees, and maybe discards, that much).
const STEP_BYTES: u64 = 8 * 1024 * 1024;

/// The pause between two steps: at most 8 MiB freed every 10 ms (800 MiB/s), far above the rate
/// at which a node writes, so the files never pile up, while other I/O goes between the steps.
const PAUSE: Duration = Duration::from_millis(10);

/// Longest a file waits for the last map of it to go before it is only unlinked.
const MAPPED_WAIT_MAX: Duration = Duration::from_secs(1);

struct Deleter {
    files: mpsc::Sender<PathBuf>,
    /// Files handed over and not yet deleted.
    pending: Mutex<usize>,
    done: Condvar,
}

/// The deleter, its thread started at first use; `None` if it could not start (files are then
/// deleted at once, by the caller).
fn deleter() -> Option<&'static Deleter> {
    static DELETER: OnceLock<Option<Deleter>> = OnceLock::new();
    DELETER
        .get_or_init(|| {
            let (files, queued) = mpsc::channel::<PathBuf>();
            let started = std::thread::Builder::new()
                .name("quipu-deleter".to_string())
                .spawn(move || {
                    while let Ok(path) = queued.recv() {
                        delete_paced(&path);
                        if let Some(deleter) = deleter() {
                            let mut pending = lock(&deleter.pending);
                            *pending = pending.saturating_sub(1);
                            deleter.done.notify_all();
                        }
                    }
                });
            match started {
                Ok(_) => Some(Deleter {
                    files,
                    pending: Mutex::new(0),
                    done: Condvar::new(),
                }),
                Err(e) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "cannot start the thread that deletes removed segments: they go at once"
                    );
                    None
                }
            }
        })
        .as_ref()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these; a poisoned lock's value is still whole.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deletes `files` (removed segments' files, renamed `*.deleted`) in the background, paced.
pub(crate) fn delete(files: Vec<PathBuf>) {
    for path in files {
        let handed = deleter().is_some_and(|deleter| {
            *lock(&deleter.pending) += 1;
            let sent = deleter.files.send(path.clone()).is_ok();
            if !sent {
                *lock(&deleter.pending) -= 1;
            }
            sent
        });
        if !handed {
            delete_paced(&path);
        }
    }
}

/// Blocks until every removed segment's file handed over so far is deleted (tests, and a caller
/// that wants the space back before it goes on).
pub fn wait_for_deletions() {
    if let Some(deleter) = deleter() {
        let mut pending = lock(&deleter.pending);
        while *pending > 0 {
            pending = deleter
                .done
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Shrinks `path` step by step, then unlinks it. A file some reader still maps is only
/// unlinked: shrinking it would take pages from under the reader (its blocks are then freed
/// when the last map goes).
fn delete_paced(path: &std::path::Path) {
    let shrunk = (|| -> std::io::Result<()> {
        // The check is of the file opened (maps are registered by the file's identity, not its
        // name), whatever file the name held when it was opened; none can be mapped once it is
        // out of its log.
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        // A read in progress holds a map for a moment: wait a little for it to go.
        let mut waited = Duration::ZERO;
        while crate::mmap::is_mapped(&file) {
            if waited >= MAPPED_WAIT_MAX {
                return Ok(());
            }
            std::thread::sleep(PAUSE);
            waited += PAUSE;
        }
        let mut len = file.metadata()?.len();
        while len > STEP_BYTES {
            len -= STEP_BYTES;
            crate::io::set_len(&file, path, len)?;
            std::thread::sleep(PAUSE);
        }
        Ok(())
    })();
    if let Err(e) = shrunk
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(
            file = %path.display(),
            error = &e as &dyn std::error::Error,
            "cannot shrink a removed segment's file before deleting it"
        );
    }
    if let Err(e) = crate::io::remove_if_present(path) {
        tracing::warn!(
            file = %path.display(),
            error = &e as &dyn std::error::Error,
            "cannot delete a removed segment's file; it goes when its log is next opened"
        );
    }
}
