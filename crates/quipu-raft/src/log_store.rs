//! [`LogStore`]: openraft's `RaftLogStorage` over a partition's segment log.
//!
//! Invariants (openraft's contract, `../shared/DEPENDENCIES.md`):
//! - entries are readable when `append` returns; its callback runs only after the fsync policy
//!   made them durable (`always`: after `fdatasync`), callbacks in append order, and a callback
//!   run means every earlier append is durable too (the contract of openraft's
//!   `leader_flush_beside_replication`: a leader's own append, `LogFlushed::is_leader_append`,
//!   is never synced on the task that called `append`, so openraft replicates it meanwhile);
//! - acks=1 producers hear an offset only once the leader's log holds the entry durably, and
//!   only if no truncation or reset came between the append and its sync;
//! - `save_vote` syncs the log, then writes the vote durably, before it returns, so no write is
//!   durable before an earlier one;
//! - a purge records the purge point durably first, then removes whole segments: entries at or
//!   below the purge point are never returned, even while their segment still exists;
//! - the log never has holes: a purge past the log's end (a snapshot installed from the leader)
//!   restarts the log right after the snapshot, at the offset the snapshot ends at; it is carried
//!   out only once the state machine holds that snapshot durably (openraft may ask for the purge
//!   first: then it waits for the next append, which openraft sends only after the install), so
//!   a crash never leaves a log that starts after a snapshot this replica does not have;
//! - the flush mark (`raft_flushed`) never names more than the log durably held: it is raised
//!   after each sync and lowered before a truncation. A log that opens ending below it lost
//!   acknowledged entries (damage after the sync), and the replica abstains
//!   ([`PartitionShared::is_abstaining`]) until it holds them again.
//! - openraft gets a committed vote (and restores a leader without an election) only from a log
//!   that syncs every append (`fsync = always`), does not abstain, and, for a vote naming this
//!   node as leader, was closed cleanly (a leader replicates its entries before its own sync): a
//!   log that may have lost unsynced entries its followers hold hands its vote over uncommitted.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, CommittedLeaderId, EntryPayload, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use quipu_storage::{
    EntryKind, FsyncPolicy, Log, MarkFile, NewEntry, Offset, read_state_file, write_state_file,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::codec::{from_stored, to_stored};
use crate::shared::PartitionShared;
use crate::{NodeId, Request, TypeConfig};

/// Name of the state file holding the vote and the purge point.
pub const META_FILE: &str = "raft_meta";
/// Name of the mark file holding the next index after the last entry made durable
/// (`docs/format/mark-file.md`).
pub const FLUSH_MARK_FILE: &str = "raft_flushed";
/// Name of the state file holding the last committed log id, for a store that keeps it
/// ([`LogStore::keep_committed`]: the controller's).
pub const COMMITTED_FILE: &str = "raft_committed";
/// Largest accepted `raft_meta` body.
pub(crate) const META_BYTES_MAX: usize = 4096;
/// Most payload bytes one `limited_get_log_entries` returns (the first entry always comes whole).
pub const READ_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Appends waiting for their flush, per partition.
const FLUSH_QUEUE_MAX: usize = 1024;
/// Most entries a read takes on the calling task (see [`LogStore::read`]).
const INLINE_READ_ENTRIES_MAX: u64 = 4;
/// How near the log's end a read taken on the calling task starts, in entries.
const INLINE_READ_RECENT: u64 = 64;

/// What `raft_meta` holds (postcard, inside a state file).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct RaftMeta {
    pub(crate) vote: Option<Vote<NodeId>>,
    pub(crate) last_purged: Option<LogId<NodeId>>,
}

/// Opening a log store failed.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The `raft_meta` state file could not be read.
    #[error("cannot read the raft state of {dir}")]
    Meta {
        /// The partition directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: quipu_storage::StateFileError,
    },
    /// The `raft_meta` body does not decode.
    #[error("cannot decode the raft state of {dir}")]
    MetaDecode {
        /// The partition directory.
        dir: PathBuf,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
    /// The raft state to store again (after a loss, or a leader's crash) does not encode.
    #[error("cannot encode the raft state of {dir}")]
    MetaEncode {
        /// The partition directory.
        dir: PathBuf,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
    /// The flush mark could not be opened.
    #[error("cannot open the flush mark of {dir}")]
    Mark {
        /// The partition directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

struct Flush {
    next_index: u64,
    callback: LogFlushed<TypeConfig>,
    /// acks=1 tokens of the appended batches with their base offsets, resolved after the sync.
    local_acks: Vec<(u64, u64)>,
    /// [`Inner::truncations`] when the entries were written: acks=1 tokens are resolved only if
    /// no truncation or reset came since (it may have removed them).
    truncations: u64,
}

/// A partition's Raft log store. Cheap to clone: clones share the log (the clone handed to
/// openraft as the log reader reads concurrently with the writer).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<Log>,
    /// The flush mark: the log's next index after its last sync.
    mark: Arc<MarkFile>,
    /// Held while the mark is raised (reading the log's end) and while it is lowered and the log
    /// truncated, so that a raise never writes an end a truncation just removed.
    mark_order: Arc<Mutex<()>>,
    meta: Mutex<RaftMeta>,
    shared: Arc<PartitionShared>,
    flushes: mpsc::Sender<Flush>,
    /// Flushes sent to the flush task whose callbacks have not been called yet. While none are,
    /// an append syncs in its own blocking step (see [`LogStore::append`]).
    flushes_pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Truncations and resets so far, bumped before each starts: a flush queued before one may
    /// complete after it (a leader's appends are replicated beside their flush, so openraft
    /// does not wait for it before a step-down and a truncation).
    truncations: Arc<std::sync::atomic::AtomicU64>,
    /// A purge past the log's end asked for before the state machine installed its snapshot.
    pending_reset: Mutex<Option<LogId<NodeId>>>,
    /// Whether the committed log id is kept in [`COMMITTED_FILE`].
    keep_committed: std::sync::atomic::AtomicBool,
    /// Whether appended entries are kept in memory until applied ([`crate::recent`]): only
    /// where the state machine releases them ([`crate::PartitionStateMachine`]).
    keep_recent: std::sync::atomic::AtomicBool,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.inner.log.dir())
            .finish_non_exhaustive()
    }
}

fn io_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageError::from(StorageIOError::write_logs(AnyError::new(&error)))
}

fn read_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageError::from(StorageIOError::read_logs(AnyError::new(&error)))
}

/// An error of the committed log id's file (`COMMITTED_FILE`), reading or writing it.
fn committed_error(
    verb: openraft::ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageError::from(StorageIOError::new(
        openraft::ErrorSubject::Store,
        verb,
        AnyError::new(&error),
    ))
}

fn vote_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageError::from(StorageIOError::write_vote(AnyError::new(&error)))
}

impl LogStore {
    /// Runs blocking work on this log off the async runtime's threads, on the log I/O threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, StorageError<NodeId>> + Send + 'static,
    ) -> Result<T, StorageError<NodeId>> {
        crate::io_threads::run(self.inner.log.dir(), work)
            .await
            .map_err(io_error)?
    }

    /// Opens the store of the partition whose log is `log`, on node `node`. Must run inside a
    /// tokio runtime: it starts the partition's flush task, which ends when the last clone is
    /// dropped.
    pub async fn open(
        log: Arc<Log>,
        shared: Arc<PartitionShared>,
        node: NodeId,
    ) -> Result<LogStore, LogStoreError> {
        let dir = log.dir().to_path_buf();
        let read_dir = dir.clone();
        let body = tokio::task::spawn_blocking(move || {
            read_state_file(&read_dir, META_FILE, META_BYTES_MAX)
        })
        .await
        .expect("reading a small file does not panic")
        .map_err(|source| LogStoreError::Meta {
            dir: dir.clone(),
            source,
        })?;
        let mut meta: RaftMeta = match body {
            Some(body) => {
                postcard::from_bytes(&body).map_err(|source| LogStoreError::MetaDecode {
                    dir: dir.clone(),
                    source,
                })?
            }
            None => RaftMeta::default(),
        };
        let mark_dir = dir.clone();
        let (mark, marked) =
            tokio::task::spawn_blocking(move || MarkFile::open(&mark_dir, FLUSH_MARK_FILE))
                .await
                .expect("opening a small file does not panic")
                .map_err(|source| LogStoreError::Mark {
                    dir: dir.clone(),
                    source,
                })?;
        // Where the log durably ends, counting a purge point past its end (a reset that a crash
        // interrupted is finished later; the entries before it are in the snapshot).
        let next_index = log
            .next_index()
            .max(meta.last_purged.map_or(0, |id| id.index + 1));
        let lost = marked.filter(|m| *m > next_index);
        if let Some(marked) = lost {
            tracing::warn!(
                dir = %dir.display(),
                next_index,
                flushed_next_index = marked,
                "this replica lost log entries it had made durable (damaged after the sync): \
                 it will neither vote nor stand for election until it holds them again"
            );
            shared.abstain_until(marked);
        }
        // openraft restores a replica whose committed vote names itself as leader at once, with
        // no election: a former leader that lost entries its followers hold would give its next
        // entries their log ids (two records at one offset). That happens when the log lost
        // entries it had synced (above), and may happen unseen when entries were replicated
        // before this log synced them: under `fsync` interval or never, and under `always` when
        // this node led (openraft replicates a leader's entries beside its own sync,
        // `leader_flush_beside_replication`) and the log was not closed cleanly (no mark records
        // such a loss). Then the vote stays (no second vote in its term) but uncommitted, so
        // leading again takes an election, which replicas holding more refuse (and the abstention
        // holds back).
        let unsynced = log.config().fsync != FsyncPolicy::Always;
        let crashed_leader = !log.opened_clean()
            && meta.vote.is_some_and(|vote| {
                vote.is_committed() && vote.leader_id().voted_for() == Some(node)
            });
        if (lost.is_some() || unsynced || crashed_leader)
            && let Some(vote) = meta.vote.filter(Vote::is_committed)
        {
            meta.vote = Some(Vote {
                committed: false,
                ..vote
            });
            // Stored for a loss found (it is known for good) and after a crash of a leader (a
            // later clean close would otherwise bring the committed vote back over a log that
            // lost entries at this one); for an unsynced log every open does it again (a later
            // write of the meta may store it uncommitted, which keeps the term and the node
            // voted for, all a vote must keep).
            if lost.is_some() || crashed_leader {
                let body =
                    postcard::to_allocvec(&meta).map_err(|source| LogStoreError::MetaEncode {
                        dir: dir.clone(),
                        source,
                    })?;
                let meta_dir = dir.clone();
                tokio::task::spawn_blocking(move || write_state_file(&meta_dir, META_FILE, &body))
                    .await
                    .expect("writing a small file does not panic")
                    .map_err(|source| LogStoreError::Meta {
                        dir: dir.clone(),
                        source,
                    })?;
            }
        }
        let mark = Arc::new(mark);
        let mark_order = Arc::new(Mutex::new(()));
        let (flushes, pending) = mpsc::channel(FLUSH_QUEUE_MAX);
        let flushes_pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let truncations = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // The task holds the log weakly: the log closes (and its directory lock is released)
        // as soon as the last clone of the store is dropped.
        tokio::spawn(flush_task(
            Arc::downgrade(&log),
            (Arc::clone(&mark), Arc::clone(&mark_order)),
            Arc::clone(&shared),
            (pending, Arc::clone(&flushes_pending)),
            Arc::clone(&truncations),
        ));
        Ok(LogStore {
            inner: Arc::new(Inner {
                log,
                mark,
                mark_order,
                meta: Mutex::new(meta),
                shared,
                flushes,
                flushes_pending,
                truncations,
                pending_reset: Mutex::new(None),
                keep_committed: std::sync::atomic::AtomicBool::new(false),
                keep_recent: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Keeps the committed log id in [`COMMITTED_FILE`] from now on, so that a restart applies
    /// what was committed at once instead of waiting for the leader to say it again. For a
    /// group that commits rarely (the controller): one state-file write per commit.
    pub fn keep_committed(&self) {
        self.inner
            .keep_committed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Keeps appended entries in memory until applied, for the reads that follow an append
    /// ([`crate::recent`]). Only for a store whose state machine releases them once applied
    /// ([`crate::PartitionStateMachine`] does; the controller's does not).
    pub fn keep_recent_entries(&self) {
        self.inner
            .keep_recent
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn keeps_committed(&self) -> bool {
        self.inner
            .keep_committed
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The segment log under this store.
    pub fn log(&self) -> &Arc<Log> {
        &self.inner.log
    }

    /// The purge point as openraft knows it: the durable one, or a pending purge past the end
    /// (in memory only until the snapshot it follows is durable; a crash forgets it, which is
    /// consistent with the older snapshot the replica then restarts from).
    fn purged(&self) -> Option<LogId<NodeId>> {
        let pending = *self
            .inner
            .pending_reset
            .lock()
            .expect("pending reset lock poisoned by a panic");
        self.meta().last_purged.max(pending)
    }

    fn take_pending_reset(&self) -> Option<LogId<NodeId>> {
        self.inner
            .pending_reset
            .lock()
            .expect("pending reset lock poisoned by a panic")
            .take()
    }

    /// Restarts the log right after `snapshot`, which the state machine holds durably: the purge
    /// point first, then the reset (a crash between them leaves old entries the purge point hides).
    async fn reset_after(&self, snapshot: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let offset = restart_offset(&self.inner.log, &self.inner.shared, snapshot.index)?;
        let mut meta = self.meta();
        meta.last_purged = Some(snapshot);
        self.save_meta(meta).await?;
        self.before_removal();
        let log = Arc::clone(&self.inner.log);
        self.blocking(move || log.reset(snapshot.index + 1, offset).map_err(io_error))
            .await
    }

    /// Before a truncation or reset removes entries: a flush queued earlier no longer answers
    /// acks=1 producers, and kept entries go first (a read must never find one the log no
    /// longer has).
    fn before_removal(&self) {
        self.inner
            .truncations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.shared.clear_recent();
    }

    fn meta(&self) -> RaftMeta {
        self.inner
            .meta
            .lock()
            .expect("raft meta lock poisoned by a panic")
            .clone()
    }

    async fn save_meta(&self, meta: RaftMeta) -> Result<(), StorageError<NodeId>> {
        let body = postcard::to_allocvec(&meta).map_err(vote_error)?;
        let dir = self.inner.log.dir().to_path_buf();
        self.blocking(move || write_state_file(&dir, META_FILE, &body).map_err(vote_error))
            .await?;
        *self
            .inner
            .meta
            .lock()
            .expect("raft meta lock poisoned by a panic") = meta;
        Ok(())
    }

    async fn read(
        &self,
        start: u64,
        end: u64,
        max_bytes: u64,
    ) -> Result<Vec<openraft::Entry<TypeConfig>>, StorageError<NodeId>> {
        let purged_next = self.purged().map_or(0, |id| id.index + 1);
        // Entries just written and not yet applied (what replication and the state machine
        // read right after an append) come from memory, unless the log failed since (a failed
        // append or sync also drops them).
        let kept = (start >= purged_next && !self.inner.log.is_poisoned())
            .then(|| self.inner.shared.read_recent(start, end, max_bytes))
            .flatten();
        if let Some(kept) = kept {
            return kept
                .into_iter()
                .map(|entry| from_stored(entry).map_err(read_error))
                .collect();
        }
        let log = Arc::clone(&self.inner.log);
        let read = move || {
            let start = start.max(purged_next).max(log.first_index());
            let end = end.min(log.next_index());
            if start >= end {
                return Ok(Vec::new());
            }
            log.read_entries(start, end, max_bytes).map_err(read_error)
        };
        // A few entries among the newest, as the state machine asks for what was just committed:
        // read here, from pages just written (in the page cache), without a hop to the blocking
        // pool. Anything else (a follower catching up, a restart's replay) on the pool.
        let next = self.inner.log.next_index();
        let recent = end.saturating_sub(start) <= INLINE_READ_ENTRIES_MAX
            && start.saturating_add(INLINE_READ_RECENT) >= next;
        let stored = if recent {
            read()?
        } else {
            self.blocking(read).await?
        };
        stored
            .into_iter()
            .map(|entry| from_stored(entry).map_err(read_error))
            .collect()
    }
}

/// Makes appended entries durable in order, then reports each append's completion. Consecutive
/// pending appends share one sync.
async fn flush_task(
    log: Weak<Log>,
    (mark, mark_order): (Arc<MarkFile>, Arc<Mutex<()>>),
    shared: Arc<PartitionShared>,
    (mut pending, count): (mpsc::Receiver<Flush>, Arc<std::sync::atomic::AtomicUsize>),
    truncations: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut batch = Vec::new();
    while pending.recv_many(&mut batch, FLUSH_QUEUE_MAX).await > 0 {
        let next_index = batch
            .iter()
            .map(|f| f.next_index)
            .max()
            .expect("recv_many returned some");
        let result = match log.upgrade() {
            None => Err("the log was closed".to_string()),
            Some(sync_log) => {
                let (mark, mark_order) = (Arc::clone(&mark), Arc::clone(&mark_order));
                let named = Arc::clone(&sync_log);
                let synced = crate::io_threads::run(named.dir(), move || {
                    sync_and_mark(&sync_log, &mark, &mark_order, next_index)
                })
                .await;
                match synced {
                    Ok(synced) => flushed(&shared, synced),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        for flush in batch.drain(..) {
            complete(&shared, flush, &result, &truncations);
            count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Makes the log durable up to `next_index` as its fsync policy says, then raises the flush
/// mark to what is durable now. Returns the log's durable next index.
fn sync_and_mark(
    log: &Log,
    mark: &MarkFile,
    mark_order: &Mutex<()>,
    next_index: u64,
) -> Result<u64, quipu_storage::SyncError> {
    log.sync_by_policy(next_index)?;
    let _order = mark_order.lock().unwrap_or_else(|e| e.into_inner());
    // What is durable now (under `interval_ms` or `never`, possibly less than was appended); a
    // truncation since these appends may have shortened the log.
    let durable_next = next_index
        .min(log.durable_next_index())
        .min(log.next_index());
    // A log poisoned since counts nothing durable: the mark keeps the last durable point it
    // had, which is what a reopened replica checks its log against.
    log.check_poisoned()?;
    if let Err(e) = mark.write(durable_next) {
        // Only the detection of later damage is weakened.
        tracing::warn!(
            error = &e as &dyn std::error::Error,
            "cannot update the flush mark"
        );
    }
    Ok(durable_next)
}

/// Notes what a sync made durable; the outcome every append it covered reports.
fn flushed(
    shared: &PartitionShared,
    synced: Result<u64, quipu_storage::SyncError>,
) -> Result<(), String> {
    let durable_next = synced.map_err(|e| {
        // The log is poisoned: nothing it wrote is served from memory any more.
        shared.clear_recent();
        e.to_string()
    })?;
    if shared.note_flushed(durable_next) {
        tracing::info!(
            next_index = durable_next,
            "the lost log entries are back: voting again"
        );
    }
    Ok(())
}

/// Reports one append's outcome: its acks=1 producers first (only once durable, and only if no
/// truncation or reset came since the append: `truncations` counts them), then openraft.
/// Unresolved acks=1 producers hear Raft's answer instead.
fn complete(
    shared: &PartitionShared,
    flush: Flush,
    result: &Result<(), String>,
    truncations: &std::sync::atomic::AtomicU64,
) {
    if result.is_ok() && flush.truncations == truncations.load(std::sync::atomic::Ordering::SeqCst)
    {
        for (token, base_offset) in &flush.local_acks {
            shared.resolve_local_ack(*token, *base_offset);
        }
    }
    flush
        .callback
        .log_io_completed(result.clone().map_err(io::Error::other));
}

/// The offset a log restarting right after index `last` starts at: where this replica's durable
/// snapshot ending at `last` says. Only a replica that never held a record and has no snapshot
/// may start at offset 0 without one (openraft's suite starts logs anywhere).
fn restart_offset(
    log: &Log,
    shared: &PartitionShared,
    last: u64,
) -> Result<Offset, StorageError<NodeId>> {
    if let Some(offset) = shared.installed_next_offset(last) {
        return Ok(Offset(offset));
    }
    if log.next_offset() == Offset(0) && !shared.has_snapshot() {
        return Ok(Offset(0));
    }
    Err(io_error(io::Error::other(format!(
        "the log cannot restart after index {last}: this replica has no snapshot ending there"
    ))))
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<openraft::Entry<TypeConfig>>, StorageError<NodeId>> {
        let (start, end) = bounds(&range);
        self.read(start, end, u64::MAX).await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<openraft::Entry<TypeConfig>>, StorageError<NodeId>> {
        self.read(start, end, READ_BYTES_MAX).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged = self.purged();
        let log = &self.inner.log;
        let (first, next, term) = (log.first_index(), log.next_index(), log.last_term());
        let has_unpurged = next > first && last_purged.is_none_or(|purged| next - 1 > purged.index);
        let last_log_id = if has_unpurged {
            Some(LogId::new(CommittedLeaderId::new(term, 0), next - 1))
        } else {
            last_purged
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let log = Arc::clone(&self.inner.log);
        self.blocking(move || log.sync().map_err(vote_error))
            .await?;
        let mut meta = self.meta();
        meta.vote = Some(*vote);
        self.save_meta(meta).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.meta().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        if !self.keeps_committed() {
            return Ok(());
        }
        let body = postcard::to_allocvec(&committed)
            .map_err(|e| committed_error(openraft::ErrorVerb::Write, e))?;
        let dir = self.inner.log.dir().to_path_buf();
        self.blocking(move || {
            write_state_file(&dir, COMMITTED_FILE, &body)
                .map_err(|e| committed_error(openraft::ErrorVerb::Write, e))
        })
        .await
    }

    /// The committed log id kept, if it is within the entries the log holds durably (openraft
    /// commits only entries already persisted; a log cut shorter since makes it unknown).
    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        if !self.keeps_committed() {
            return Ok(None);
        }
        let dir = self.inner.log.dir().to_path_buf();
        let body = self
            .blocking(move || {
                read_state_file(&dir, COMMITTED_FILE, META_BYTES_MAX)
                    .map_err(|e| committed_error(openraft::ErrorVerb::Read, e))
            })
            .await?;
        let Some(body) = body else {
            return Ok(None);
        };
        let committed: Option<LogId<NodeId>> = postcard::from_bytes(&body)
            .map_err(|e| committed_error(openraft::ErrorVerb::Read, e))?;
        let durable_end = self.inner.log.next_index();
        let purged = self.purged();
        Ok(committed
            .filter(|c| c.index < durable_end || purged.is_some_and(|p| p.index >= c.index)))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // acks=1 tokens by position among the entries; `to_stored` drops them (never stored).
        let mut tokens: Vec<(usize, u64)> = Vec::new();
        let entries: Vec<NewEntry> = entries
            .into_iter()
            .enumerate()
            .map(|(at, entry)| {
                if let EntryPayload::Normal(Request::Records {
                    local_ack: Some(token),
                    ..
                }) = &entry.payload
                {
                    tokens.push((at, *token));
                }
                to_stored(entry)
            })
            .collect::<Result<_, _>>()
            .map_err(io_error)?;
        let Some(first) = entries.first().map(|e| e.index) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let pending = self.take_pending_reset();
        if let Some(snapshot) = pending {
            if first != snapshot.index + 1 {
                return Err(io_error(io::Error::other(format!(
                    "entries from index {first} follow a snapshot ending at {}",
                    snapshot.index
                ))));
            }
            self.reset_after(snapshot).await?;
        }
        let log = Arc::clone(&self.inner.log);
        let shared = Arc::clone(&self.inner.shared);
        // Entries at or below the durable purge point do not count: a crash during a reset
        // (after the purge point was saved) leaves some of them behind, and the log then holds
        // nothing openraft knows of.
        let purged_next = self.meta().last_purged.map_or(0, |id| id.index + 1);
        // With no earlier append still waiting for its sync, this one syncs in the same blocking
        // step (one hop to the log I/O threads per append instead of two, and no hand-off to the
        // flush task); otherwise it queues behind them, so that appends complete in order.
        // Appends come one at a time (`&mut self`), and the count falls only after a queued
        // append's callback ran: zero means every earlier append has completed.
        // A leader's own append is replicated beside its sync (openraft's
        // `leader_flush_beside_replication`): it never syncs here, so `append` returns once the
        // entries are written and openraft sends them to the followers meanwhile.
        let sync_here = !callback.is_leader_append()
            && self
                .inner
                .flushes_pending
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0;
        // Read before the write: a truncation needs `&mut self`, so none runs until this
        // append returns.
        let truncations = self
            .inner
            .truncations
            .load(std::sync::atomic::Ordering::SeqCst);
        let (mark, mark_order) = (
            Arc::clone(&self.inner.mark),
            Arc::clone(&self.inner.mark_order),
        );
        let keep_recent = self
            .inner
            .keep_recent
            .load(std::sync::atomic::Ordering::SeqCst);
        let appended = self
            .blocking(move || {
                let empty =
                    log.first_index() == log.next_index() || log.next_index() <= purged_next;
                if empty && first != log.next_index() {
                    // Nothing is held (a snapshot was installed past the log's end): restart the log
                    // where the leader continues, at the offset the snapshot ends at.
                    let offset = restart_offset(&log, &shared, first.saturating_sub(1))?;
                    shared.clear_recent();
                    log.reset(first, offset).map_err(io_error)?;
                }
                let keep = keep_recent
                    && crate::recent::keeps_appends_of(
                        entries.iter().map(|e| e.payload.len()).sum(),
                    );
                let appended = if keep {
                    let kept = log.append_kept(&entries);
                    let (appended, kept) = kept
                        .inspect_err(|_| shared.clear_recent())
                        .map_err(io_error)?;
                    shared.keep_recent(kept);
                    appended
                } else {
                    if keep_recent {
                        // What is kept must reach the log's end: an append too large to keep ends it.
                        shared.clear_recent();
                    }
                    log.append(&entries).map_err(io_error)?
                };
                // Base offsets of the entries that carry a token: the first entry's base offset plus
                // the offsets of the record entries before it (batches the log just validated, one or
                // more per entry).
                let mut local_acks = Vec::with_capacity(tokens.len());
                let mut offset = appended.base_offset.0;
                let mut pending = tokens.iter().peekable();
                for (at, entry) in entries.iter().enumerate() {
                    if pending.peek().is_some_and(|(token_at, _)| *token_at == at) {
                        let (_, token) = pending.next().expect("peeked");
                        local_acks.push((*token, offset));
                    }
                    if entry.kind == EntryKind::Records {
                        offset +=
                            quipu_record::offset_count_of(&entry.payload).map_err(io_error)?;
                    }
                }
                let synced = sync_here
                    .then(|| sync_and_mark(&log, &mark, &mark_order, appended.last_index + 1));
                Ok((appended, local_acks, synced))
            })
            .await?;
        let (appended, local_acks, synced) = appended;
        let flush = Flush {
            next_index: appended.last_index + 1,
            callback,
            local_acks,
            truncations,
        };
        if let Some(synced) = synced {
            complete(
                &self.inner.shared,
                flush,
                &flushed(&self.inner.shared, synced),
                &self.inner.truncations,
            );
            return Ok(());
        }
        self.inner
            .flushes_pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.flushes.send(flush).await.map_err(|_| {
            self.inner
                .flushes_pending
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            io_error(io::Error::other("flush task stopped"))
        })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let log = Arc::clone(&self.inner.log);
        let mark = Arc::clone(&self.inner.mark);
        let mark_order = Arc::clone(&self.inner.mark_order);
        self.before_removal();
        self.blocking(move || {
            let _order = mark_order.lock().unwrap_or_else(|e| e.into_inner());
            // The mark first: it must never name entries the log no longer has.
            mark.lower_to(log_id.index).map_err(io_error)?;
            log.truncate_from(log_id.index).map_err(io_error)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut meta = self.meta();
        if self
            .purged()
            .is_some_and(|purged| purged.index >= log_id.index)
        {
            return Ok(());
        }
        if log_id.index >= self.inner.log.next_index() {
            // Past the log's end: a snapshot from the leader replaces the whole log.
            if self
                .inner
                .shared
                .installed_next_offset(log_id.index)
                .is_none()
            {
                // openraft purges without waiting for the state machine's install; the reset
                // waits for the next append, which comes only after the install.
                *self
                    .inner
                    .pending_reset
                    .lock()
                    .expect("pending reset lock poisoned by a panic") = Some(log_id);
                return Ok(());
            }
            return self.reset_after(log_id).await;
        }
        meta.last_purged = Some(log_id);
        self.save_meta(meta).await?;
        let log = Arc::clone(&self.inner.log);
        self.blocking(move || {
            log.purge_prefix(log_id.index + 1)
                .map(|_| ())
                .map_err(io_error)
        })
        .await
    }
}
