//! [`Log`]: one partition replica's log, a list of segments of which the last is active.
//!
//! Invariants:
//! - segments are contiguous: each one's base index and base offset are the previous one's next
//!   index and next offset; only the last segment is written;
//! - an append is validated whole before anything is written; entries are readable when
//!   `append` returns and durable once `sync_to` covers their index;
//! - `durable_next` (all indexes below it are on disk) never counts bytes a truncation removed: a
//!   sync that started before a truncation does not publish its result;
//! - after any failed write or sync the log is poisoned and refuses every operation until it is
//!   reopened, because the page cache may no longer match the disk; it then counts nothing
//!   durable, and no sync of it alone starts again; its next open (in this process or a later
//!   one on the same boot) cuts every entry from the index it was durable to, which the cache
//!   may show though the disk lost it (`crate::suspect`); a seal raises that index, so sealed
//!   segments are never cut;
//! - Linux reports a file's writeback error to one of two syncs of it only, so a roll's seal and
//!   a truncation's cut run alone among the log's syncs, its callers' in shared rounds included
//!   (`Log::claim_syncs`), and a truncation's or reset's own sync raises `durable_next` only
//!   while no other sync of the log is running (`SyncState::outcome_pending`); otherwise what
//!   was durable before it stays so, no more.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use tracing::{info, warn};

use crate::config::{ConfigError, LogLimits};
use crate::entry::{Entry, EntryKind, NewEntry, Offset};
use crate::error::{AppendError, Failure, OpenError, ReadError, SyncError, TruncateError};
use crate::frame::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::marker::CleanMarker;
use crate::recycle::Spare;
use crate::segment::{OpenMode, Recycled, Segment, SegmentView, parse_segment_name, segment_paths};
use crate::{FsyncPolicy, LogConfig, SharedSync, io, suspect};

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Index of the first entry appended.
    pub first_index: u64,
    /// Index of the last entry appended.
    pub last_index: u64,
    /// Offset given to the first record of the first record entry (offsets of the entries follow
    /// each other without gaps).
    pub base_offset: Offset,
    /// The log end offset after the append.
    pub next_offset: Offset,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Segments removed.
    pub segments: usize,
    /// Bytes removed.
    pub bytes: u64,
}

/// One partition replica's log. Shared between one writer and many readers (`&self` methods,
/// internally locked).
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    /// Holds the exclusive `flock` on `LOCK` for as long as the log is open; its inode tells
    /// whether the directory is still this log's (`Log::still_owns_dir`).
    lock_file: std::fs::File,
    /// Replaced whole by [`Log::set_limits`]; everything but the limits stays as opened.
    config: RwLock<Arc<LogConfig>>,
    state: RwLock<State>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// The group this log syncs through, fixed at open ([`LogConfig::shared_sync`], if the
    /// log's directory is on its filesystem).
    shared_sync: Option<Arc<SharedSync>>,
    /// Whether the last close was clean (or there was nothing to lose): see [`Log::opened_clean`].
    opened_clean: bool,
    /// Set by [`Log::keep_spares`] (a node whose disk runs low): purges keep no spare while it
    /// is. Read by purges under the state lock.
    spares_refused: AtomicBool,
    /// Whether `SyncState::failure` is set, readable without the sync lock: every check for
    /// poison reads it.
    sync_failed: AtomicBool,
}

/// What one sync of a log must make durable, taken before the sync starts: every entry below
/// `log_next` of the log as of `generation`.
#[derive(Debug)]
pub(crate) struct SyncTicket {
    generation: u64,
    log_next: u64,
}

/// A caller of the log counted in `SyncState::in_shared_rounds` while it waits in a round of the
/// log's [`SharedSync`]; uncounted on drop (a panic included), waking a seal or cut that waits.
struct InSharedRound<'a>(&'a Log);

impl Drop for InSharedRound<'_> {
    fn drop(&mut self) {
        let mut sync = self.0.sync.lock().unwrap_or_else(PoisonError::into_inner);
        sync.in_shared_rounds -= 1;
        self.0.synced.notify_all();
    }
}

/// A hold on `SyncState::in_progress`: the one sync of the log's active file running (a sync of
/// the log alone, or a seal or cut under [`Log::claim_syncs`]). [`SyncClaim::succeeded`] ends it;
/// [`SyncClaim::failed`], or a drop without either (a panic unwound through it), marks the log's
/// syncs failed, so that no sync of the file starts again (one could report success for pages
/// the failure lost). Either way it clears the flag and wakes the waiters.
struct SyncClaim<'a> {
    /// The log held; `None` once the claim has ended.
    log: Option<&'a Log>,
}

impl SyncClaim<'_> {
    /// Ends the hold after the sync succeeded; `noted` records its result under the same lock.
    fn succeeded(mut self, noted: impl FnOnce(&mut SyncState)) {
        self.end(Ok(noted));
    }

    /// Ends the hold after the sync failed for `cause`.
    fn failed(mut self, cause: String) {
        self.end(Err::<fn(&mut SyncState), _>(cause));
    }

    /// Ends the hold, if it still holds: records the outcome, clears `in_progress` and wakes
    /// the waiters, under one lock. A failure marks the log's syncs failed (the first cause
    /// stays), with its lock-free mirror.
    fn end(&mut self, outcome: Result<impl FnOnce(&mut SyncState), String>) {
        let Some(log) = self.log.take() else {
            return;
        };
        let mut sync = log.sync.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(noted) => noted(&mut sync),
            Err(cause) => {
                sync.failure.get_or_insert(cause);
                log.sync_failed.store(true, Ordering::SeqCst);
            }
        }
        sync.in_progress = false;
        log.synced.notify_all();
    }
}

impl Drop for SyncClaim<'_> {
    fn drop(&mut self) {
        if self.log.is_some() {
            let cause = "a sync of the log did not complete".to_string();
            self.end(Err::<fn(&mut SyncState), _>(cause));
        }
    }
}

impl Drop for Log {
    /// A log poisoned without its own failure (a failed round of its shared sync, or a sync
    /// claim a panic ended) notes how far it was durable, for its next open to cut the rest
    /// (`crate::suspect`); a log poisoned by its own failure noted it then (`Log::poison_for`).
    /// What it synced before the failure stays trusted: those pages were written and clean, and
    /// entries are never rewritten in place.
    fn drop(&mut self) {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if state.poisoned.is_none() && self.poisoned(&state).is_some() {
            self.note_unsynced(&state);
        }
    }
}

#[derive(Debug)]
struct State {
    /// Never empty; the last is the active segment.
    segments: Vec<Segment>,
    /// Frames of the append in progress, not yet written.
    staging: Vec<u8>,
    poisoned: Option<String>,
    /// Bumped by every truncation and reset.
    generation: u64,
    /// A purged segment's data file kept to become the next segment's (`crate::recycle`).
    spare: Option<Spare>,
}

#[derive(Debug)]
struct SyncState {
    /// Why a sync of the log failed, if one did: no sync may start again on this instance. Set
    /// only by a [`SyncClaim`] that did not succeed, with `Log::sync_failed` (its lock-free
    /// mirror), before any waiter is woken.
    failure: Option<String>,
    durable_next: u64,
    generation: u64,
    /// A sync of the log's active file runs: a sync of this log alone ([`Log::sync_alone`]), or a
    /// seal or cut under [`Log::claim_syncs`]. Held by a [`SyncClaim`].
    in_progress: bool,
    /// Callers of this log waiting in a round of its [`SharedSync`].
    in_shared_rounds: usize,
    last_sync_ms: i64,
}

impl SyncState {
    /// Whether a sync of the log's files, whose outcome is not known yet, may be running
    /// outside the state lock. While one is, a truncation or reset must not report its own sync
    /// as making the log durable: the two syncs share the open file, and if the running one
    /// fails, Linux reports the writeback error to one of them only, so the other's success
    /// says nothing about the pages lost.
    fn outcome_pending(&self) -> bool {
        self.failed() || self.in_progress || self.in_shared_rounds > 0
    }

    /// Whether a sync of the log failed.
    fn failed(&self) -> bool {
        self.failure.is_some()
    }
}

impl SyncState {
    /// Records a sync's result: what `ticket` names is durable as of `now_ms`. A result from
    /// before a truncation or reset says nothing about the log now, and is ignored.
    fn note_synced(&mut self, ticket: &SyncTicket, now_ms: i64) {
        if ticket.generation > self.generation {
            self.generation = ticket.generation;
            self.durable_next = ticket.log_next;
        } else if ticket.generation == self.generation {
            self.durable_next = self.durable_next.max(ticket.log_next);
        }
        self.last_sync_ms = now_ms;
    }
}

impl State {
    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has a segment")
    }

    fn first(&self) -> &Segment {
        self.segments.first().expect("a log always has a segment")
    }

    /// The segment holding `index` (which the caller checked is inside the log).
    fn segment_for_index(&self, index: u64) -> &Segment {
        let at = self
            .segments
            .partition_point(|s| s.header.base_index <= index);
        &self.segments[at.saturating_sub(1)]
    }

    /// The last segment whose base offset is at or before `offset`.
    fn segment_for_offset(&self, offset: u64) -> &Segment {
        let at = self
            .segments
            .partition_point(|s| s.header.base_offset <= offset);
        &self.segments[at.saturating_sub(1)]
    }
}

impl Log {
    /// Opens the log in `dir` (created if missing), recovering from a crash if the last close was
    /// not clean. A fresh log starts at index 0 and offset 0.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log, OpenError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            if let Some(parent) = dir.parent() {
                io::sync_dir(parent).map_err(io_err(parent))?;
            }
        }
        let lock = lock_dir(&dir)?;
        let marker = CleanMarker::take(&dir)?;
        let mut bases = Vec::new();
        let mut spare = None;
        for dirent in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let dirent = dirent.map_err(io_err(&dir))?;
            let name = dirent.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(base) = parse_segment_name(name) {
                bases.push(base);
            } else if name.ends_with(".log.truncating") {
                // A copy-on-truncate that did not reach its rename: the original is intact.
                io::remove(&dirent.path()).map_err(io_err(&dirent.path()))?;
            } else if name.ends_with(crate::deleter::DELETED_SUFFIX) {
                // A removed segment's file not deleted yet (the process stopped first, or the
                // deleter is on it: whichever comes second finds it gone).
                io::remove_if_present(&dirent.path()).map_err(io_err(&dirent.path()))?;
            } else if Spare::is_spare_name(name) {
                // One spare is kept (a log has at most one; more would be damage), none when
                // recycling is off.
                let found = Spare::of(dirent.path().with_extension(""));
                if config.recycle_segments && spare.is_none() {
                    spare = Some(found);
                } else {
                    crate::recycle::discard(found);
                }
            }
        }
        bases.sort_unstable();
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        let now = (config.clock)();
        for (i, base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            let mode = match marker {
                _ if !is_last => OpenMode::Sealed,
                Some(m) if m.active_base_index == *base => OpenMode::ActiveClean {
                    data_len: m.active_data_len,
                },
                _ => OpenMode::ActiveCrashed,
            };
            let last_term = segments.last().map_or(0, |s| s.last_term);
            let (log_path, _, _) = segment_paths(&dir, *base);
            if is_last && creation_incomplete(&log_path).map_err(io_err(&log_path))? {
                // A crash while creating the last segment, before its header was synced.
                warn!(file = %log_path.display(), "removing a segment whose creation did not complete");
                for path in <[PathBuf; 3]>::from(segment_paths(&dir, *base)) {
                    if path.exists() {
                        io::remove(&path).map_err(io_err(&path))?;
                    }
                }
                io::sync_dir(&dir).map_err(io_err(&dir))?;
                break;
            }
            let segment = Segment::open(&dir, *base, last_term, mode, &config)?;
            if let Some(previous) = segments.last()
                && (previous.next_index != segment.header.base_index
                    || previous.next_offset != segment.header.base_offset)
            {
                // Every removal is made durable before the next one, so no interrupted
                // truncation, purge or reset leaves a gap: a gap is damage.
                return Err(OpenError::Corrupt {
                    path: segment.path.to_path_buf(),
                    position: 0,
                    reason: format!(
                        "segment starts at index {} offset {}, but the previous one ends at index {} offset {}",
                        segment.header.base_index,
                        segment.header.base_offset,
                        previous.next_index,
                        previous.next_offset
                    ),
                });
            }
            segments.push(segment);
        }
        // Removing an incomplete last segment leaves a sealed one last: it becomes active again.
        let prev_term = segments.iter().rev().nth(1).map_or(0, |s| s.last_term);
        if let Some(last) = segments.last_mut()
            && last.sealed
        {
            last.truncate_to(last.next_index, prev_term, &config)?;
        }
        if segments.is_empty() {
            let header = SegmentHeader::new(0, 0, now);
            segments.push(Segment::create(&dir, header, 0, &config)?);
            io::sync_dir(&dir).map_err(io_err(&dir))?;
        }
        if marker.is_none() {
            // After a crash, the directory entries of what recovery kept may still be only in
            // the page cache.
            io::sync_dir(&dir).map_err(io_err(&dir))?;
        }
        let next_index = segments.last().map_or(0, |s| s.next_index);
        let shared_sync = match &config.shared_sync {
            Some(group) if group.covers(&dir).map_err(io_err(&dir))? => Some(Arc::clone(group)),
            Some(group) => {
                warn!(dir = %dir.display(), shared = %group.dir().display(), "this log is on another filesystem than its data directory: it syncs its own files");
                None
            }
            None => None,
        };
        info!(
            dir = %dir.display(),
            segments = segments.len(),
            first_index = segments[0].header.base_index,
            next_index,
            clean = marker.is_some(),
            "log opened"
        );
        let log = Log {
            dir,
            lock_file: lock,
            state: RwLock::new(State {
                segments,
                staging: Vec::new(),
                poisoned: None,
                generation: 0,
                spare,
            }),
            sync: Mutex::new(SyncState {
                failure: None,
                durable_next: next_index,
                generation: 0,
                in_progress: false,
                in_shared_rounds: 0,
                last_sync_ms: now,
            }),
            synced: Condvar::new(),
            shared_sync,
            opened_clean: marker.is_some() || bases.is_empty(),
            config: RwLock::new(Arc::new(config)),
            spares_refused: AtomicBool::new(false),
            sync_failed: AtomicBool::new(false),
        };
        let note = suspect::take(&log.dir).map_err(io_err(&log.dir))?;
        if let Some(durable_next) = note.durable_next {
            log.cut_unsynced_tail(durable_next).map_err(|source| {
                // Still not trusted: the next open tries again.
                suspect::note(&log.dir, durable_next);
                OpenError::UnsyncedTail {
                    dir: log.dir.clone(),
                    source: Box::new(source),
                }
            })?;
        }
        // Gone (durably) before any append: a note must never cut entries appended after it.
        note.clear(&log.dir).map_err(io_err(&log.dir))?;
        Ok(log)
    }

    /// Cuts every entry from `durable_next` on (from the first entry held, if that is later):
    /// what this log's directory held past the durable point when a failed sync or write
    /// poisoned the log that had it open, and that the page cache may show though the disk
    /// lost it (`crate::suspect`). Durable on return.
    fn cut_unsynced_tail(&self, durable_next: u64) -> Result<(), TruncateError> {
        let keep_next = durable_next.max(self.first_index());
        let next_index = self.next_index();
        if keep_next >= next_index {
            return Ok(());
        }
        warn!(
            dir = %self.dir.display(),
            keep_next,
            next_index,
            "cutting the entries a failed sync left unconfirmed: the page cache may show what the disk lost"
        );
        self.truncate_from(keep_next)
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .expect("log state lock poisoned by a panic")
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .expect("log state lock poisoned by a panic")
    }

    fn poisoned(&self, state: &State) -> Option<(PathBuf, String)> {
        let group_failure = || {
            self.shared_sync
                .as_ref()
                .and_then(|group| group.failure())
                .map(|cause| format!("a shared sync of its filesystem failed: {cause}"))
        };
        // Set before the failed sync's cause reaches `state` (it waits for the state lock).
        let sync_failure = || {
            self.sync_failed
                .load(Ordering::SeqCst)
                .then(|| "an earlier sync failed".to_string())
        };
        state
            .poisoned
            .clone()
            .or_else(group_failure)
            .or_else(sync_failure)
            .map(|cause| (self.dir.clone(), cause))
    }

    fn poison(&self, state: &mut State, failure: &Failure) {
        self.poison_for(state, failure.describe());
    }

    /// Poisons the log for `cause` and notes its unsynced tail, the first time only: a poisoned
    /// log refuses appends and truncations, so its tail cannot move after, and the first cause
    /// is the one that counts.
    fn poison_for(&self, state: &mut State, cause: String) {
        if let Some(first) = &state.poisoned {
            // Not "log poisoned" again: the log keeps, and reports, the first cause.
            tracing::error!(
                dir = %self.dir.display(),
                cause,
                poisoned_by = %first,
                "a poisoned log failed again"
            );
            return;
        }
        tracing::error!(dir = %self.dir.display(), cause, "log poisoned");
        state.poisoned = Some(cause);
        self.note_unsynced(state);
    }

    /// Notes, for the log's next open, the index from which its entries are not trusted: how
    /// far it was durable (`crate::suspect`). Called when the log is poisoned, so that a process
    /// that dies before the log is dropped leaves the note too, or on drop for a log poisoned
    /// otherwise (a failed shared sync poisons the log without its knowing). Skipped if the directory is no longer
    /// this log's (removed, and perhaps made again for another log): the note would cut that
    /// log's entries. Takes the sync lock: the caller holds the state lock (their order) and
    /// not the sync lock.
    fn note_unsynced(&self, state: &State) {
        let sync = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        let end = state.segments.last().map_or(0, |s| s.next_index);
        let durable_next = sync.durable_next.min(end);
        drop(sync);
        if self.still_owns_dir() {
            suspect::note(&self.dir, durable_next);
        }
    }

    /// Whether the log's directory is still the one this log locked: its `LOCK` file is the file
    /// the log holds open (whose inode cannot be reused while it is open).
    fn still_owns_dir(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (
            self.lock_file.metadata(),
            std::fs::metadata(self.dir.join(LOCK_FILE)),
        ) {
            (Ok(held), Ok(found)) => held.dev() == found.dev() && held.ino() == found.ino(),
            _ => false,
        }
    }

    /// Whether the log refuses every operation (a write or sync failed, see the module's
    /// invariants) until it is opened again.
    pub fn is_poisoned(&self) -> bool {
        let state = self.read_state();
        self.poisoned(&state).is_some()
    }

    /// `Err` naming the cause while the log is poisoned ([`Log::is_poisoned`]).
    pub fn check_poisoned(&self) -> Result<(), SyncError> {
        let state = self.read_state();
        match self.poisoned(&state) {
            Some((dir, cause)) => Err(SyncError::Poisoned { dir, cause }),
            None => Ok(()),
        }
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this open followed a clean close (the clean-close marker was there), or found no
    /// segment at all. Otherwise the last close was a crash, and entries written but not synced
    /// before it may be gone, though no mark recorded them.
    pub fn opened_clean(&self) -> bool {
        self.opened_clean
    }

    /// The log's configuration as it is now (its limits may have changed since it was opened).
    pub fn config(&self) -> Arc<LogConfig> {
        Arc::clone(
            &self
                .config
                .read()
                .expect("log config lock poisoned by a panic"),
        )
    }

    /// Changes the settings a topic may change while its replicas run: segment size and age
    /// apply from the next append (a segment is never made larger than it was mapped), retention
    /// from the next retention pass. Refused, with nothing changed, if they are not valid.
    pub fn set_limits(&self, limits: LogLimits) -> Result<(), ConfigError> {
        let mut config = self
            .config
            .write()
            .expect("log config lock poisoned by a panic");
        let changed = config.as_ref().clone().with_limits(limits);
        changed.validate()?;
        if config.limits() != limits {
            info!(dir = %self.dir.display(), ?limits, "log limits changed");
        }
        *config = Arc::new(changed);
        Ok(())
    }

    /// Appends entries, assigning their offsets. They are readable when this returns, durable
    /// once [`Log::sync_to`] covers them. Record batches are verified (CRC-32C) first.
    pub fn append(&self, entries: &[NewEntry]) -> Result<Appended, AppendError> {
        self.append_inner(entries, false)
            .map(|(appended, _)| appended)
    }

    /// [`Log::append`], also returning the appended entries as they were written (what
    /// [`Log::read_entries`] would return for them: base offsets and leader epochs rewritten),
    /// their payloads sharing one buffer with nothing else in it, so that a caller can serve
    /// reads of just-written entries from memory. If the append rolled the active segment, only
    /// the entries written after the roll are returned (always the last ones).
    pub fn append_kept(&self, entries: &[NewEntry]) -> Result<(Appended, Vec<Entry>), AppendError> {
        self.append_inner(entries, true)
    }

    fn append_inner(
        &self,
        entries: &[NewEntry],
        keep: bool,
    ) -> Result<(Appended, Vec<Entry>), AppendError> {
        let mut state = self.write_state();
        if let Some((dir, cause)) = self.poisoned(&state) {
            return Err(AppendError::Poisoned { dir, cause });
        }
        let first = entries.first().ok_or(AppendError::Empty)?;
        let config = self.config();
        let active = state.active();
        let mut next_index = active.next_index;
        let mut next_offset = active.next_offset;
        let mut last_term = active.last_term;
        let base_offset = next_offset;
        let mut metas = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.index != next_index {
                return Err(AppendError::NotContiguous {
                    expected: next_index,
                    got: entry.index,
                });
            }
            if entry.term < last_term {
                return Err(AppendError::TermRegression {
                    index: entry.index,
                    term: entry.term,
                    last_term,
                });
            }
            if entry.payload.len() as u64 > config.entry_bytes_max {
                return Err(AppendError::TooLarge {
                    index: entry.index,
                    len: entry.payload.len(),
                    max: config.entry_bytes_max,
                });
            }
            let (record_count, max_timestamp) = match entry.kind {
                EntryKind::Internal => (0u32, -1i64),
                EntryKind::Records => {
                    if i32::try_from(entry.term).is_err() {
                        return Err(AppendError::TermTooLarge {
                            index: entry.index,
                            term: entry.term,
                        });
                    }
                    let (count, max_timestamp) = validate_records(entry, &config)?;
                    let count = u32::try_from(count)
                        .map_err(|_| AppendError::OffsetOverflow { index: entry.index })?;
                    (count, max_timestamp)
                }
            };
            next_offset = next_offset
                .checked_add(u64::from(record_count))
                .filter(|end| i64::try_from(*end).is_ok())
                .ok_or(AppendError::OffsetOverflow { index: entry.index })?;
            next_index += 1;
            last_term = entry.term;
            metas.push((record_count, max_timestamp));
        }
        let kept = match self.stage_and_write(&mut state, &config, entries, &metas, keep) {
            Ok(kept) => kept,
            Err(failure) => {
                self.poison(&mut state, &failure);
                return Err(failure.into());
            }
        };
        let appended = Appended {
            first_index: first.index,
            last_index: next_index - 1,
            base_offset: Offset(base_offset),
            next_offset: Offset(next_offset),
        };
        Ok((appended, kept))
    }

    /// Stages the entries' frames and writes them; with `keep`, returns the entries written after
    /// the last roll as stored, their payloads slices of the written buffer (which then goes
    /// with them rather than back to `state.staging`).
    fn stage_and_write(
        &self,
        state: &mut State,
        config: &LogConfig,
        entries: &[NewEntry],
        metas: &[(u32, i64)],
        keep: bool,
    ) -> Result<Vec<Entry>, Failure> {
        let now = (config.clock)();
        let mut staging = std::mem::take(&mut state.staging);
        let frames_len: usize = entries
            .iter()
            .map(|e| FRAME_HEADER_LEN + e.payload.len())
            .sum();
        staging.reserve(frames_len);
        // Where each staged entry's payload lies in `staging`, and its stored header.
        let mut staged: Vec<(std::ops::Range<usize>, Entry)> = Vec::new();
        let result = (|| {
            for (entry, (record_count, max_timestamp)) in entries.iter().zip(metas) {
                let frame_len = (FRAME_HEADER_LEN + entry.payload.len()) as u64;
                if state.active().must_roll(frame_len, now, config) {
                    state.active_mut().write_staged(&staging, config)?;
                    staging.clear();
                    staged.clear();
                    self.roll(state, config, now)?;
                }
                if keep {
                    let active = state.active();
                    let payload = staging.len() + FRAME_HEADER_LEN;
                    staged.push((
                        payload..payload + entry.payload.len(),
                        Entry {
                            index: active.next_index,
                            term: entry.term,
                            base_offset: Offset(active.next_offset),
                            record_count: *record_count,
                            max_timestamp: *max_timestamp,
                            kind: entry.kind,
                            payload: Bytes::new(),
                        },
                    ));
                }
                state.active_mut().stage(
                    &mut staging,
                    entry,
                    *record_count,
                    *max_timestamp,
                    config,
                )?;
            }
            state.active_mut().write_staged(&staging, config)
        })();
        if result.is_err() || !keep {
            staging.clear();
            state.staging = staging;
            return result.map(|()| Vec::new());
        }
        // The written frames become the kept entries' memory; the next append stages into a
        // new buffer.
        let written = Bytes::from(staging);
        Ok(staged
            .into_iter()
            .map(|(payload, mut entry)| {
                entry.payload = written.slice(payload);
                entry
            })
            .collect())
    }

    /// Seals the active segment and starts a new one. The sealed segment is durable before the
    /// new file exists, so after a crash only the last segment needs verifying.
    fn roll(&self, state: &mut State, config: &LogConfig, now: i64) -> Result<(), Failure> {
        let claim = self.claim_syncs()?;
        let generation = state.generation;
        let active = state.active_mut();
        active.seal()?;
        // The seal synced the whole segment, alone among the log's syncs: everything before its
        // end is durable (under `interval_ms` and `never` too, where nothing else may say so).
        let sealed = SyncTicket {
            generation,
            log_next: active.next_index,
        };
        claim.succeeded(|sync| sync.note_synced(&sealed, now));
        let header = SegmentHeader::new(active.next_index, active.next_offset, now);
        let last_term = active.last_term;
        let (segment, recycled) = self.new_segment(state, header, last_term, config)?;
        info!(dir = %self.dir.display(), base_index = header.base_index, base_offset = header.base_offset, recycled, "segment rolled");
        io::sync_dir(&self.dir).map_err(Failure::io(&self.dir))?;
        state.segments.push(segment);
        Ok(())
    }

    /// Creates the new active segment `header` names, in the log's spare file if it has one
    /// that no reader maps (`crate::recycle`); whether it did. The caller syncs the directory.
    fn new_segment(
        &self,
        state: &mut State,
        header: SegmentHeader,
        last_term: u64,
        config: &LogConfig,
    ) -> Result<(Segment, bool), Failure> {
        if let Some(spare) = state.spare.take() {
            match Segment::create_recycled(&self.dir, header, last_term, config, &spare.path)? {
                Recycled::Segment(segment) => return Ok((*segment, true)),
                // A reader may still hold bytes of the segment it was: a later one reuses it.
                Recycled::Mapped => state.spare = Some(spare),
                Recycled::Unusable => crate::recycle::discard(spare),
            }
        }
        Ok((
            Segment::create(&self.dir, header, last_term, config)?,
            false,
        ))
    }

    /// Blocks until every entry below `next_index` (at most the log's next index) is durable.
    /// Concurrent callers share one `fdatasync` (group commit): whoever finds no sync running
    /// syncs everything written so far, the others wait for it and go round again if it did
    /// not cover them. A log with a [`SharedSync`] shares it with the other logs of its
    /// filesystem instead.
    pub fn sync_to(&self, next_index: u64) -> Result<(), SyncError> {
        match &self.shared_sync {
            Some(group) => self.sync_shared(group, next_index),
            None => self.sync_alone(next_index),
        }
    }

    /// [`Log::sync_to`] through `group`: takes a ticket, then joins the group's next round.
    fn sync_shared(&self, group: &SharedSync, next_index: u64) -> Result<(), SyncError> {
        // One round normally covers the ticket; a truncation during it makes the next ticket
        // name the log as it is now.
        loop {
            let Some(ticket) = self.sync_ticket(next_index)? else {
                return Ok(());
            };
            // Taken before this caller counts in `in_shared_rounds`, for the same reason as in
            // `sync_alone`: a seal or cut waits for the count to fall while holding the state
            // lock. Every entry the ticket names is in this file or in a segment sealed since.
            let file = self.active_file();
            let sync = self.sync.lock().expect("sync lock poisoned by a panic");
            let mut sync = self
                .synced
                .wait_while(sync, |sync| sync.in_progress)
                .expect("sync lock poisoned by a panic");
            if sync.failed() {
                // The seal or cut it waited for failed: no sync of the file starts after it.
                // The next ticket says why.
                continue;
            }
            sync.in_shared_rounds += 1;
            drop(sync);
            let in_round = InSharedRound(self);
            group.sync(self, file);
            drop(in_round);
            let now = (self.config().clock)();
            // A failed round poisons every log of the group for good: the next ticket says so.
            if group.failure().is_none() {
                self.sync
                    .lock()
                    .expect("sync lock poisoned by a panic")
                    .note_synced(&ticket, now);
            }
        }
    }

    /// What a sync must cover for every entry below `next_index` to be durable; `None` if they
    /// already are.
    fn sync_ticket(&self, next_index: u64) -> Result<Option<SyncTicket>, SyncError> {
        // Lock order: state before sync, never both held.
        let (generation, log_next) = {
            let state = self.read_state();
            if let Some((dir, cause)) = self.poisoned(&state) {
                return Err(SyncError::Poisoned { dir, cause });
            }
            (state.generation, state.active().next_index)
        };
        let sync = self.sync.lock().expect("sync lock poisoned by a panic");
        if sync.failed() {
            return Err(SyncError::Poisoned {
                dir: self.dir.clone(),
                cause: "an earlier sync failed".to_string(),
            });
        }
        if sync.generation == generation && sync.durable_next >= next_index.min(log_next) {
            return Ok(None);
        }
        Ok(Some(SyncTicket {
            generation,
            log_next,
        }))
    }

    /// The active segment's data file: everything not in a sealed (synced) segment is in it.
    /// Given even if the log is poisoned: syncing it does no harm, and the log's callers learn of
    /// the poison from their next ticket (a log's own failure must not fail its group's round).
    pub(crate) fn active_file(&self) -> (Arc<std::fs::File>, Arc<Path>) {
        self.read_state().active().file()
    }

    /// [`Log::sync_to`] of a log that syncs its own files.
    fn sync_alone(&self, next_index: u64) -> Result<(), SyncError> {
        loop {
            let Some(ticket) = self.sync_ticket(next_index)? else {
                return Ok(());
            };
            // Every entry the ticket names is in the active file or in a sealed segment, synced
            // when sealed (a roll since the ticket sealed the file it was in). Taken before the
            // sync is claimed: a roll or truncation holding the state lock waits for a running
            // sync (`Log::claim_syncs`), so a running one never waits for the state lock.
            let (file, path) = self.active_file();
            let mut sync = self.sync.lock().expect("sync lock poisoned by a panic");
            if sync.in_progress {
                drop(
                    self.synced
                        .wait(sync)
                        .expect("sync lock poisoned by a panic"),
                );
                continue;
            }
            if sync.failed() {
                // A sync failed between the ticket and this lock: starting another could report
                // success for what it lost. The next ticket says why.
                drop(sync);
                continue;
            }
            sync.in_progress = true;
            drop(sync);
            let claim = SyncClaim { log: Some(self) };
            if let Err(source) = io::sync_data(&file, &path) {
                // Failed: the claim, ended with the cause, marks it before the state lock is
                // taken (a roll or truncation holding it waits for this sync to end), so that no
                // sync starts, no seal or cut goes on, and no truncation reports its own sync as
                // making the log durable from here on (`SyncState::outcome_pending`). A second
                // sync of this file could report success for data the failed one lost.
                let cause = format!("fdatasync of {} failed: {source}", path.display());
                claim.failed(cause.clone());
                self.poison_for(&mut self.write_state(), cause);
                return Err(SyncError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
            let now = (self.config().clock)();
            claim.succeeded(|sync| sync.note_synced(&ticket, now));
        }
    }

    /// Makes the caller's sync of the active segment's file (a roll's seal, a truncation's cut,
    /// made with the state write lock held) the only sync of the log's files running, until the
    /// claim ends: it waits for a running [`Log::sync_alone`] and for this log's callers in
    /// rounds of its [`SharedSync`] (none of which needs the state lock meanwhile: they took
    /// their file before), and keeps new ones from starting. Linux reports a file's writeback
    /// error to one of two syncs of it only: had a seal's sync run beside a failing one, the seal
    /// could report success and the log would count the sealed segment intact. `Err` if a sync
    /// of the log failed (or a round of its group).
    fn claim_syncs(&self) -> Result<SyncClaim<'_>, Failure> {
        let sync = self.sync.lock().expect("sync lock poisoned by a panic");
        let mut sync = self
            .synced
            .wait_while(sync, |sync| sync.in_progress || sync.in_shared_rounds > 0)
            .expect("sync lock poisoned by a panic");
        let group_failure = self.shared_sync.as_ref().and_then(|g| g.failure());
        if sync.failed() || group_failure.is_some() {
            let cause = sync
                .failure
                .as_deref()
                .or(group_failure)
                .unwrap_or("an earlier sync failed");
            return Err(Failure::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(format!(
                    "an earlier sync of the log failed: {cause}"
                )),
            });
        }
        sync.in_progress = true;
        Ok(SyncClaim { log: Some(self) })
    }

    /// Records that, as of `generation` (the one after `generation - 1`, which a truncation or
    /// reset ends), every entry below `next_index` is durable: the removal's own sync made it so.
    /// Called with the state lock held (lock order: state, then sync). While another sync's
    /// outcome is pending (`SyncState::outcome_pending`) that sync proves nothing: only what the
    /// log counted durable before (below `next_index`) stays so, and nothing more until its next
    /// sync; `first_index` is the log's first index then.
    fn set_durable(&self, generation: u64, next_index: u64, first_index: u64) {
        let mut sync = self.sync.lock().expect("sync lock poisoned by a panic");
        let durable_next = if sync.outcome_pending() {
            let before = if sync.generation + 1 == generation {
                sync.durable_next
            } else {
                first_index
            };
            before.clamp(first_index, next_index)
        } else {
            next_index
        };
        sync.generation = generation;
        sync.durable_next = durable_next;
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<(), SyncError> {
        let next = self.next_index();
        self.sync_to(next)
    }

    /// Applies the fsync policy after appending entries below `next_index`: `always` syncs,
    /// `interval_ms` syncs when the interval has passed, `never` does nothing. `Err` on a
    /// poisoned log whatever the policy.
    pub fn sync_by_policy(&self, next_index: u64) -> Result<(), SyncError> {
        let config = self.config();
        match config.fsync {
            FsyncPolicy::Always => self.sync_to(next_index),
            FsyncPolicy::IntervalMs(interval) => {
                let last = self
                    .sync
                    .lock()
                    .expect("sync lock poisoned by a panic")
                    .last_sync_ms;
                let due = (config.clock)().saturating_sub(last)
                    >= i64::try_from(interval).unwrap_or(i64::MAX);
                if due {
                    self.sync_to(next_index)
                } else {
                    self.check_poisoned()
                }
            }
            // No sync, but a poisoned log says so, as a sync would.
            FsyncPolicy::Never => self.check_poisoned(),
        }
    }

    /// All indexes below this are durable.
    pub fn durable_next_index(&self) -> u64 {
        // Both read under the state lock (lock order: state, then sync): a truncation or reset
        // between the two reads would otherwise make a durable log look durable only up to its
        // first index.
        // A poisoned log vouches for nothing: a failed sync may have lost any page not synced
        // before it, and a caller that would rely on it must sync (and learn of the poison).
        let state = self.read_state();
        let sync = self.sync.lock().expect("sync lock poisoned by a panic");
        if sync.generation == state.generation && self.poisoned(&state).is_none() {
            sync.durable_next.min(state.active().next_index)
        } else {
            state.first().header.base_index
        }
    }

    /// Reads entries with indexes in `[start, end)`, stopping before `max_bytes` of payload
    /// would be exceeded (the first entry is always returned whole).
    pub fn read_entries(
        &self,
        start: u64,
        end: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, ReadError> {
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut next = start;
        let mut generation = None;
        while next < end {
            let (view, mut position) = {
                let state = self.read_state();
                if let Some((dir, cause)) = self.poisoned(&state) {
                    return Err(ReadError::Poisoned { dir, cause });
                }
                // One read never mixes entries from before and after a truncation.
                if *generation.get_or_insert(state.generation) != state.generation {
                    return Ok(out);
                }
                let (first, last) = (state.first().header.base_index, state.active().next_index);
                if next < first && !out.is_empty() {
                    // A purge removed what follows what was read: return that.
                    return Ok(out);
                }
                if next < first || (next > last && out.is_empty()) {
                    return Err(ReadError::IndexOutOfRange {
                        requested: next,
                        first,
                        next: last,
                    });
                }
                if next >= last {
                    break;
                }
                let segment = state.segment_for_index(next);
                (segment.view(), segment.position_for_index(next))
            };
            let before = next;
            while position < view.data_len && next < end {
                let frame = view.frame_at(position)?;
                if frame.index < next {
                    position += frame.frame_len();
                    continue;
                }
                if frame.index != next {
                    return Err(gap(&view, position, next, frame.index));
                }
                let len = u64::from(frame.payload_len);
                if !out.is_empty() && total + len > max_bytes {
                    return Ok(out);
                }
                out.push(view.entry(&frame, position));
                total += len;
                next += 1;
                position += frame.frame_len();
            }
            if next == before {
                return Err(gap(&view, position, next, next));
            }
        }
        Ok(out)
    }

    /// Reads whole record batches from the one holding `from` on, none reaching `max_offset` or
    /// beyond (the high watermark for consumers), stopping before `max_bytes` would be exceeded
    /// except that the first batch is always returned, as Kafka does. The first entry returned
    /// starts at the batch holding `from` (its earlier batches, if it holds several, are left
    /// out: [`Entry::from_batch_holding`]); the others are whole entries.
    pub fn read_records(
        &self,
        from: Offset,
        max_offset: Offset,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, ReadError> {
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut next = from.0;
        let mut generation = None;
        loop {
            let (view, mut position, segment_next_offset, log_next) = {
                let state = self.read_state();
                if let Some((dir, cause)) = self.poisoned(&state) {
                    return Err(ReadError::Poisoned { dir, cause });
                }
                // One read never mixes batches from before and after a truncation.
                if *generation.get_or_insert(state.generation) != state.generation {
                    return Ok(out);
                }
                let (start, end) = (state.first().header.base_offset, state.active().next_offset);
                if next < start && !out.is_empty() {
                    // A purge removed what follows what was read: return that.
                    return Ok(out);
                }
                if out.is_empty() && (next < start || next > end) {
                    return Err(ReadError::OffsetOutOfRange {
                        requested: next,
                        start,
                        end,
                    });
                }
                if next >= end.min(max_offset.0) {
                    break;
                }
                let segment = state.segment_for_offset(next);
                (
                    segment.view(),
                    segment.position_for_offset(next),
                    segment.next_offset,
                    end,
                )
            };
            while position < view.data_len {
                let frame = view.frame_at(position)?;
                let Some(frame_end) = frame.base_offset.checked_add(u64::from(frame.record_count))
                else {
                    return Err(gap(&view, position, next, frame.base_offset));
                };
                if frame.kind != EntryKind::Records || frame_end <= next {
                    position += frame.frame_len();
                    continue;
                }
                // The first batch holds `next`; each later one starts where the previous ended.
                if frame.base_offset > next || (!out.is_empty() && frame.base_offset != next) {
                    return Err(gap(&view, position, next, frame.base_offset));
                }
                if frame_end > max_offset.0 {
                    return Ok(out);
                }
                let mut entry = view.entry(&frame, position);
                if out.is_empty() {
                    // Kafka clients expect the first batch to hold the offset asked for; some
                    // (aiokafka) skip whole batches before it but not records of a later one.
                    entry = entry.from_batch_holding(Offset(next));
                }
                let len = entry.payload.len() as u64;
                if !out.is_empty() && total + len > max_bytes {
                    return Ok(out);
                }
                out.push(entry);
                total += len;
                next = frame_end;
                position += frame.frame_len();
            }
            if next < segment_next_offset.min(log_next) {
                return Err(gap(&view, position, next, next));
            }
            if next >= log_next {
                break;
            }
        }
        Ok(out)
    }

    /// The earliest offset below `max_offset` whose record timestamp is at or after
    /// `timestamp_ms`, as Kafka's ListOffsets by timestamp answers; `None` if there is none.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
        max_offset: Offset,
    ) -> Result<Option<Offset>, ReadError> {
        let candidates = self.segments_where(|s| {
            (s.max_timestamp >= timestamp_ms && s.header.base_offset < max_offset.0)
                .then(|| (s.view(), s.position_for_timestamp(timestamp_ms)))
        })?;
        for (view, mut position) in candidates {
            while position < view.data_len {
                let frame = view.frame_at(position)?;
                position += frame.frame_len();
                if frame.base_offset >= max_offset.0 {
                    return Ok(None);
                }
                if frame.kind != EntryKind::Records || frame.max_timestamp < timestamp_ms {
                    continue;
                }
                let entry = view.entry(&frame, position - frame.frame_len());
                if let Some(offset) = self.first_record_where(&entry, |ts| ts >= timestamp_ms)? {
                    return Ok((offset < max_offset.0).then_some(Offset(offset)));
                }
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the first record below `max_offset` whose timestamp is the
    /// largest, as Kafka's ListOffsets `MAX_TIMESTAMP` (-3) answers; `None` if there is no record.
    /// Segments are visited by their largest timestamp, so only those that may hold the answer
    /// are scanned (their frame headers), and one batch is decoded.
    pub fn max_timestamp_offset(
        &self,
        max_offset: Offset,
    ) -> Result<Option<(Offset, i64)>, ReadError> {
        let mut candidates = self.segments_where(|s| {
            (s.header.base_offset < max_offset.0 && s.max_timestamp >= 0)
                .then(|| (s.max_timestamp, s.header.base_offset, s.view()))
        })?;
        // Largest recorded timestamp first; among equals, the earliest segment.
        candidates.sort_by_key(|(max, base, _)| (std::cmp::Reverse(*max), *base));
        // (timestamp, frame, segment, position) of the best frame so far.
        let mut best: Option<(i64, crate::frame::FrameHeader, SegmentView, u64)> = None;
        for (recorded_max, _, view) in candidates {
            if best
                .as_ref()
                .is_some_and(|(ts, _, _, _)| *ts > recorded_max)
            {
                break; // no later candidate holds a timestamp as large
            }
            let mut position = SEGMENT_HEADER_LEN as u64;
            while position < view.data_len {
                let frame = view.frame_at(position)?;
                if frame.base_offset >= max_offset.0 {
                    break;
                }
                let better = best.as_ref().is_none_or(|(ts, found, _, _)| {
                    frame.max_timestamp > *ts
                        || (frame.max_timestamp == *ts && frame.base_offset < found.base_offset)
                });
                if frame.kind == EntryKind::Records && better {
                    best = Some((frame.max_timestamp, frame, view.clone(), position));
                }
                position += frame.frame_len();
            }
        }
        let Some((timestamp, frame, view, position)) = best else {
            return Ok(None);
        };
        let entry = view.entry(&frame, position);
        let offset = self
            .first_record_where(&entry, |ts| ts == timestamp)?
            .unwrap_or(frame.base_offset);
        Ok(Some((Offset(offset), timestamp)))
    }

    /// What `pick` takes from each segment, under the state lock, oldest segment first; refused
    /// on a poisoned log.
    fn segments_where<T>(
        &self,
        pick: impl FnMut(&Segment) -> Option<T>,
    ) -> Result<Vec<T>, ReadError> {
        let state = self.read_state();
        if let Some((dir, cause)) = self.poisoned(&state) {
            return Err(ReadError::Poisoned { dir, cause });
        }
        Ok(state.segments.iter().filter_map(pick).collect())
    }

    /// The offset of the first record of the record entry `entry` whose timestamp `matches`,
    /// decoding its batches in order (each within `decompressed_bytes_max`); a log-append-time
    /// batch stamps every record with the batch's own time, so its first offset if that time
    /// matches.
    fn first_record_where(
        &self,
        entry: &Entry,
        matches: impl Fn(i64) -> bool,
    ) -> Result<Option<u64>, ReadError> {
        let batch_err = |source| ReadError::Batch {
            offset: entry.base_offset.0,
            source,
        };
        for batch in entry.batches() {
            let batch = batch.map_err(batch_err)?;
            let header = quipu_record::BatchHeader::parse(&batch).map_err(batch_err)?;
            let base = u64::try_from(header.base_offset).unwrap_or(u64::MAX);
            if header.timestamp_type() == quipu_record::TimestampType::LogAppendTime {
                if matches(header.max_timestamp) {
                    return Ok(Some(base));
                }
                continue;
            }
            let records =
                quipu_record::decode_records(&batch, self.config().decompressed_bytes_max)
                    .map_err(batch_err)?;
            if let Some(record) = records
                .iter()
                .find(|r| matches(r.timestamp(header.base_timestamp)))
            {
                return Ok(Some(
                    u64::try_from(record.offset(header.base_offset)).unwrap_or(u64::MAX),
                ));
            }
        }
        Ok(None)
    }

    /// Removes every entry after `after_index` (Raft conflict resolution). Durable on return.
    pub fn truncate_suffix(&self, after_index: u64) -> Result<(), TruncateError> {
        match after_index.checked_add(1) {
            Some(keep_next) => self.truncate_from(keep_next),
            None => Ok(()),
        }
    }

    /// Removes every entry at `index` and after; `index` may be the first index held (the log
    /// becomes empty there). Durable on return.
    pub fn truncate_from(&self, index: u64) -> Result<(), TruncateError> {
        let mut state = self.write_state();
        if let Some((dir, cause)) = self.poisoned(&state) {
            return Err(TruncateError::Poisoned { dir, cause });
        }
        let keep_next = index;
        let first = state.first().header.base_index;
        if keep_next < first {
            return Err(TruncateError::BeforeStart {
                requested: keep_next,
                first,
            });
        }
        if keep_next >= state.active().next_index {
            return Ok(());
        }
        let mut retired = Vec::new();
        let result = (|| {
            // Newest first, each removal durable before the next, so that a crash part-way
            // leaves a contiguous prefix. The files go to the deleter, as a purge's do.
            while state.segments.len() > 1 && state.active().header.base_index > keep_next {
                let segment = state.segments.pop().expect("len > 1");
                retired.extend(segment.retire(false)?.0);
            }
            let prev_term = state
                .segments
                .iter()
                .rev()
                .nth(1)
                .map_or(0, |s| s.last_term);
            // Ended before `end_removal`, which must not take it for another sync.
            let claim = self.claim_syncs()?;
            state
                .active_mut()
                .truncate_to(keep_next, prev_term, &self.config())?;
            claim.succeeded(|_| {});
            Ok(())
        })();
        // The cut synced the whole segment, so everything kept is durable.
        self.end_removal(state, result, keep_next, retired)?;
        info!(dir = %self.dir.display(), next_index = keep_next, "log truncated");
        Ok(())
    }

    /// Ends a truncation or reset that removed `retired` segments' files: the log is poisoned
    /// if `result` failed, else everything below `next_index` is durable; then, with the lock
    /// released, the files go to the deleter.
    fn end_removal(
        &self,
        mut state: RwLockWriteGuard<'_, State>,
        result: Result<(), Failure>,
        next_index: u64,
        retired: Vec<PathBuf>,
    ) -> Result<(), TruncateError> {
        state.generation += 1;
        let outcome = match result {
            Err(failure) => {
                self.poison(&mut state, &failure);
                Err(failure.into())
            }
            Ok(()) => {
                let first_index = state.first().header.base_index;
                self.set_durable(state.generation, next_index, first_index);
                Ok(())
            }
        };
        drop(state);
        crate::deleter::delete(retired);
        outcome
    }

    /// Removes whole sealed segments all of whose entries are below `before_index`. Never the
    /// active segment. Returns what was removed.
    pub fn purge_prefix(&self, before_index: u64) -> Result<Purged, TruncateError> {
        self.purge_while(|segment, _| segment.next_index <= before_index)
    }

    /// Applies retention (`retention_bytes`, `retention_ms`) to whole sealed segments, oldest
    /// first, never removing an entry at or after `bound_index` (what the caller may discard:
    /// committed and covered by a snapshot).
    pub fn enforce_retention(&self, bound_index: u64) -> Result<Purged, TruncateError> {
        let expired = self.retention_rule(bound_index);
        self.purge_while(expired)
    }

    /// The last index of the segments [`Log::enforce_retention`] would remove with this
    /// `bound_index`, without removing anything; `None` if it would remove none. A replicated log
    /// first records a snapshot at that index, then purges up to it (`purge_prefix(index + 1)`
    /// removes exactly those segments).
    pub fn retention_point(&self, bound_index: u64) -> Option<u64> {
        self.retention_point_below(bound_index, Offset(0))
    }

    /// [`Log::retention_point`], where a segment whose records all lie below `deleted_before`
    /// (deleted by the partition's DeleteRecords) is past retention too.
    pub fn retention_point_below(&self, bound_index: u64, deleted_before: Offset) -> Option<u64> {
        let mut past = self.retention_rule(bound_index);
        let mut expired = |segment: &Segment, remaining: u64| {
            past(segment, remaining)
                || (segment.next_index <= bound_index && segment.next_offset <= deleted_before.0)
        };
        let state = self.read_state();
        let mut remaining: u64 = state.segments.iter().map(Segment::size_bytes).sum();
        let mut point = None;
        // As `purge_while`: oldest first, never the active (last) segment.
        for segment in &state.segments[..state.segments.len().saturating_sub(1)] {
            if !expired(segment, remaining) {
                break;
            }
            remaining -= segment.size_bytes();
            point = segment.next_index.checked_sub(1);
        }
        point
    }

    /// Whether a segment (oldest first, with `remaining_bytes` in it and the segments after it)
    /// is past retention and below `bound_index`.
    fn retention_rule(&self, bound_index: u64) -> impl FnMut(&Segment, u64) -> bool + use<> {
        let config = self.config();
        let now = (config.clock)();
        let (retention_bytes, retention_ms) = (config.retention_bytes, config.retention_ms);
        move |segment: &Segment, remaining_bytes: u64| {
            let too_big =
                retention_bytes.is_some_and(|max| remaining_bytes - segment.size_bytes() >= max);
            let too_old = retention_ms
                .is_some_and(|max| segment.retention_time_ms() < now.saturating_sub(max));
            segment.next_index <= bound_index && (too_big || too_old)
        }
    }

    fn purge_while(
        &self,
        mut remove: impl FnMut(&Segment, u64) -> bool,
    ) -> Result<Purged, TruncateError> {
        let mut state = self.write_state();
        if let Some((dir, cause)) = self.poisoned(&state) {
            return Err(TruncateError::Poisoned { dir, cause });
        }
        // Read under the lock: see `keep_spares`.
        let recycle = self.config().recycle_segments && !self.spares_refused.load(Ordering::SeqCst);
        let mut remaining: u64 = state.segments.iter().map(Segment::size_bytes).sum();
        let mut purged = Purged::default();
        let mut retired = Vec::new();
        let mut failed = None;
        while state.segments.len() > 1 && remove(state.first(), remaining) {
            let segment = state.segments.remove(0);
            remaining -= segment.size_bytes();
            purged.segments += 1;
            purged.bytes += segment.size_bytes();
            // Oldest first, each removal durable before the next, so that a crash part-way
            // leaves a contiguous suffix. The first data file becomes the log's spare if it
            // has none.
            match segment.retire(recycle && state.spare.is_none()) {
                Ok((files, spare)) => {
                    retired.extend(files);
                    if spare.is_some() {
                        state.spare = spare;
                    }
                }
                Err(failure) => {
                    self.poison(&mut state, &failure);
                    failed = Some(failure);
                    break;
                }
            }
        }
        drop(state);
        crate::deleter::delete(retired);
        if let Some(failure) = failed {
            return Err(failure.into());
        }
        if purged.segments > 0 {
            info!(dir = %self.dir.display(), segments = purged.segments, bytes = purged.bytes, "log prefix purged");
        }
        Ok(purged)
    }

    /// Whether purges may keep a spare (with `recycle_segments` on; they do by default). Off, as
    /// a node whose data disk runs low asks: the log's spare, if it has one, is deleted now, and
    /// purges delete every file they remove until it is on again. Returns the spare's bytes
    /// (freed as the deleter gets to it), 0 if there was none.
    pub fn keep_spares(&self, keep: bool) -> u64 {
        self.spares_refused.store(!keep, Ordering::SeqCst);
        // A purge reads the switch under the state lock: one that took the lock after the store
        // keeps no spare, and one that took it before has stored its spare before this lock.
        if keep || self.read_state().spare.is_none() {
            return 0;
        }
        let mut state = self.write_state();
        let Some(spare) = state.spare.take() else {
            return 0;
        };
        let bytes = std::fs::metadata(&spare.path).map_or(0, |m| m.len());
        // Renamed under the lock, so that no later spare of the same name is the one renamed.
        crate::recycle::discard(spare);
        bytes
    }

    /// Whether the log holds a spare file now.
    pub fn has_spare(&self) -> bool {
        self.read_state().spare.is_some()
    }

    /// Discards the whole log and starts it empty at `next_index` and `next_offset` (a replica
    /// that installs a snapshot beyond its log). Durable on return.
    pub fn reset(&self, next_index: u64, next_offset: Offset) -> Result<(), TruncateError> {
        let mut state = self.write_state();
        if let Some((dir, cause)) = self.poisoned(&state) {
            return Err(TruncateError::Poisoned { dir, cause });
        }
        let config = self.config();
        let mut retired = Vec::new();
        let result = (|| {
            // Newest first, each removal durable before the next. The files go to the deleter,
            // as a purge's do.
            while let Some(segment) = state.segments.pop() {
                retired.extend(segment.retire(false)?.0);
            }
            let header = SegmentHeader::new(next_index, next_offset.0, (config.clock)());
            let (segment, _) = self.new_segment(&mut state, header, 0, &config)?;
            state.segments.push(segment);
            io::sync_dir(&self.dir).map_err(Failure::io(&self.dir))
        })();
        self.end_removal(state, result, next_index, retired)?;
        info!(dir = %self.dir.display(), next_index, next_offset = next_offset.0, "log reset");
        Ok(())
    }

    /// Syncs everything and records a clean shutdown, so the next open trusts the active
    /// segment's indexes instead of verifying every frame.
    pub fn close(self) -> Result<(), TruncateError> {
        // Every source of poison, a failed shared round's too: a sync after it could succeed on
        // what it lost, and the clean marker would then vouch for it.
        let mut state = self.write_state();
        if let Some((dir, cause)) = self.poisoned(&state) {
            return Err(TruncateError::Poisoned { dir, cause });
        }
        let (file, path) = state.active().file();
        if let Err(source) = io::sync_data(&file, &path) {
            // As any failed sync: the poison notes the unsynced tail for the next open.
            let failure = Failure::io(&path)(source);
            self.poison(&mut state, &failure);
            return Err(failure.into());
        }
        let active = state.active();
        active.sync_indexes()?;
        CleanMarker {
            active_base_index: active.header.base_index,
            active_data_len: active.data_len,
        }
        .write(&self.dir)
        .map_err(TruncateError::from)?;
        Ok(())
    }

    /// Index of the first entry held.
    pub fn first_index(&self) -> u64 {
        self.read_state().first().header.base_index
    }

    /// Index the next appended entry must carry.
    pub fn next_index(&self) -> u64 {
        self.read_state().active().next_index
    }

    /// Term of the last entry (0 for an empty log).
    pub fn last_term(&self) -> u64 {
        self.read_state().active().last_term
    }

    /// The log start offset: the first offset still held.
    pub fn start_offset(&self) -> Offset {
        Offset(self.read_state().first().header.base_offset)
    }

    /// The log end offset: the offset the next record will get.
    pub fn next_offset(&self) -> Offset {
        Offset(self.read_state().active().next_offset)
    }

    /// Bytes of all segments (headers and frames).
    pub fn size_bytes(&self) -> u64 {
        self.read_state()
            .segments
            .iter()
            .map(Segment::size_bytes)
            .sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.read_state().segments.len()
    }

    /// When (by the log's clock, ms) its last sync finished, or it was opened if it has not
    /// synced since.
    pub fn last_sync_ms(&self) -> i64 {
        self.sync
            .lock()
            .expect("sync lock poisoned by a panic")
            .last_sync_ms
    }
}

/// The file a log holds locked (`flock`) while it is open.
const LOCK_FILE: &str = "LOCK";

/// Takes an exclusive `flock` on `dir/LOCK`, so that no other process (or second `Log` in this
/// one) opens the directory while this log is open: the engine maps its files.
fn lock_dir(dir: &Path) -> Result<std::fs::File, OpenError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| OpenError::Io {
            path: path.clone(),
            source,
        })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |errno| OpenError::Locked {
            dir: dir.to_path_buf(),
            source: errno.into(),
        },
    )?;
    Ok(file)
}

/// Whether a segment file holds nothing but zeros where its header and first frame would be:
/// what a crash while creating it leaves (the header is synced before any frame is written).
fn creation_incomplete(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = Vec::with_capacity(crate::SEGMENT_HEADER_LEN + FRAME_HEADER_LEN);
    std::fs::File::open(path)?
        .take((crate::SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64)
        .read_to_end(&mut head)?;
    Ok(head.iter().all(|b| *b == 0))
}

fn gap(view: &SegmentView, position: u64, expected: u64, found: u64) -> ReadError {
    ReadError::Corrupt {
        path: view.path.to_path_buf(),
        position,
        reason: format!("expected entry or offset {expected}, found {found}"),
    }
}

/// Checks a records entry's payload, one or more Kafka RecordBatches back to back, each whole
/// and valid (CRC-32C included) and none larger than `entry_bytes_max`; returns the offsets they
/// occupy together and their largest timestamp.
fn validate_records(entry: &NewEntry, config: &LogConfig) -> Result<(u64, i64), AppendError> {
    let invalid = |source| AppendError::InvalidBatch {
        index: entry.index,
        source,
    };
    let max = usize::try_from(config.entry_bytes_max).unwrap_or(usize::MAX);
    if entry.payload.is_empty() {
        // No batch at all: the validator names what is missing.
        quipu_record::validate_batch(&entry.payload, max).map_err(invalid)?;
    }
    let (mut count, mut max_timestamp) = (0u64, -1i64);
    for range in quipu_record::batch_ranges(&entry.payload, max) {
        let header = quipu_record::validate_batch(&entry.payload[range.map_err(invalid)?], max)
            .map_err(invalid)?;
        count = count.saturating_add(header.offset_count());
        max_timestamp = max_timestamp.max(header.max_timestamp);
    }
    Ok((count, max_timestamp))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    // The power-loss simulation (this crate's dev-dependency on itself turns it on for tests).
    use crate::fault::{fail_io, fail_next_sync, stop_failing_io};

    fn appended(dir: &Path, entries: std::ops::Range<u64>) -> Log {
        let log = Log::open(dir, LogConfig::default()).unwrap();
        append(&log, entries);
        log
    }

    /// Runs `work` on another thread; its result comes on the channel.
    fn on_a_thread<T: Send + 'static>(
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::sync::mpsc::Receiver<T> {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(work());
        });
        result
    }

    /// Asserts that what `result` comes from is still waiting (a fixed time: it cannot show
    /// that it would wait for ever, only that it did not go on at once).
    fn assert_waits<T>(result: &std::sync::mpsc::Receiver<T>, what: &str) {
        assert!(
            result
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "{what}"
        );
    }

    /// Ends a sync of the log alone that a test made look running, as `sync_alone` ends one.
    fn end_running_sync(log: &Log, failed: bool) {
        let mut sync = log.sync.lock().unwrap();
        if failed {
            sync.failure = Some("a test's failed sync".to_string());
            log.sync_failed.store(true, Ordering::SeqCst);
        }
        sync.in_progress = false;
        log.synced.notify_all();
    }

    /// [`partly_synced`], then poisoned by a failed sync.
    fn poisoned_after(dir: &Path, synced: u64, unsynced: u64) -> Log {
        let log = partly_synced(dir, synced, unsynced);
        fail_next_sync(dir);
        assert!(log.sync().is_err());
        log
    }

    /// A log holding `synced` synced (durable) entries, then `unsynced` more.
    fn partly_synced(dir: &Path, synced: u64, unsynced: u64) -> Log {
        let log = appended(dir, 0..synced);
        log.sync().unwrap();
        append(&log, synced..synced + unsynced);
        assert_eq!(log.durable_next_index(), synced);
        log
    }

    fn append(log: &Log, entries: std::ops::Range<u64>) {
        for index in entries {
            log.append(&[NewEntry::internal(index, 1, Bytes::from_static(b"entry"))])
                .unwrap();
        }
    }

    /// A truncation's or reset's own sync raises what counts durable only if no other sync of
    /// the log may be running: were that one to fail, the removal's success on the same file
    /// would say nothing of the pages it lost (found by review: a truncation then reported a
    /// poisoned log durable). A cut waits for the syncs running before it (the tests below), so
    /// only one that starts between its end and `end_removal` can be: this calls `set_durable`
    /// as `end_removal` does, with such a sync counted.
    #[test]
    fn a_removal_beside_a_running_sync_counts_no_more_durable_than_before() {
        let dir = tempfile::tempdir().unwrap();
        let log = partly_synced(dir.path(), 10, 10);
        for (running, durable) in [(true, 10), (false, 15)] {
            let mut state = log.write_state();
            state.generation += 1;
            log.sync.lock().unwrap().in_shared_rounds = usize::from(running);
            log.set_durable(state.generation, 15, 0);
            log.sync.lock().unwrap().in_shared_rounds = 0;
            drop(state);
            assert_eq!(log.durable_next_index(), durable, "running: {running}");
        }
    }

    /// A truncation waits for a running sync of the log alone before it cuts (and syncs) the
    /// active file, as a roll does: then its own sync counts.
    #[test]
    fn a_truncation_waits_for_a_running_sync_of_the_log_alone() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(partly_synced(dir.path(), 10, 10));
        log.sync.lock().unwrap().in_progress = true;
        let cutter = Arc::clone(&log);
        let truncated = on_a_thread(move || cutter.truncate_from(15).map(drop));
        assert_waits(&truncated, "the truncation cut beside a running sync");
        end_running_sync(&log, false);
        truncated.recv().unwrap().unwrap();
        assert_eq!(log.durable_next_index(), 15);
    }

    /// A log opened again in this process after a failed sync holds only what was synced before
    /// the failure: the page cache still shows the later entries (here they are even on disk),
    /// but a failed writeback may have lost them while leaving their pages readable, so they
    /// must not come back as held (a replica would count them toward commits). The cut is
    /// durable, and the note is used up: the log's later appends stay.
    #[test]
    fn a_reopen_after_a_failed_sync_cuts_the_entries_it_left_unconfirmed() {
        let dir = tempfile::tempdir().unwrap();
        drop(poisoned_after(dir.path(), 10, 5));
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.next_index(), 10, "the unconfirmed entries came back");
        assert!(!log.opened_clean());
        append(&log, 10..12);
        log.sync().unwrap();
        drop(log);
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.next_index(), 12, "a later open cut again");
    }

    /// The same when the failed sync is the close's own, and when the reopen fails too (its
    /// recovery's sync, here): the next open still does not trust the tail.
    #[test]
    fn a_failed_close_and_a_failed_reopen_leave_the_tail_untrusted() {
        let dir = tempfile::tempdir().unwrap();
        let log = partly_synced(dir.path(), 10, 3);
        fail_next_sync(dir.path());
        assert!(log.close().is_err());
        fail_next_sync(dir.path());
        assert!(Log::open(dir.path(), LogConfig::default()).is_err());
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.next_index(), 10, "the unconfirmed entries came back");
        assert_eq!(
            read_indexes(&log),
            (0..10).collect::<Vec<_>>(),
            "the kept entries are not whole"
        );
    }

    /// A cut that fails (its truncation's sync, here) fails the open with `UnsyncedTail`, and the
    /// next open holds only what the note trusted. (A note on a cleanly closed log does not
    /// arise otherwise: it makes the open's only sync the cut's.)
    #[test]
    fn a_cut_that_fails_fails_the_open_and_the_next_open_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let log = appended(dir.path(), 0..12);
        log.close().unwrap();
        suspect::note(dir.path(), 7);
        fail_next_sync(dir.path());
        match Log::open(dir.path(), LogConfig::default()) {
            Err(OpenError::UnsyncedTail { .. }) => {}
            other => panic!("the cut's failed sync was not reported: {other:?}"),
        }
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(read_indexes(&log), (0..7).collect::<Vec<_>>());
        assert!(!dir.path().join(suspect::UNSYNCED_FROM_FILE).exists());
    }

    /// A process started again on the same boot finds the page cache as the failed one left it:
    /// the note's file (not this process's table), written when the sync failed, makes its first
    /// open cut the tail, and that open removes the file, so a later open keeps what was
    /// appended since.
    #[test]
    fn a_new_process_cuts_the_tail_from_the_note_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let log = poisoned_after(dir.path(), 10, 4);
        // Written at the failure, not only at the drop: a process may die before it drops.
        assert!(dir.path().join(suspect::UNSYNCED_FROM_FILE).exists());
        drop(log);
        suspect::forget_in_process();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.next_index(), 10, "the unconfirmed entries came back");
        assert!(!dir.path().join(suspect::UNSYNCED_FROM_FILE).exists());
        append(&log, 10..16);
        log.sync().unwrap();
        log.close().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(read_indexes(&log), (0..16).collect::<Vec<_>>());
    }

    /// A seal syncs its segment, so a log that never syncs otherwise (`fsync = never`) still
    /// counts its sealed segments durable: a failure after a roll (here, the next roll's seal)
    /// cuts only what followed the seal (those records may have been acknowledged, and no crash
    /// loses a sealed segment).
    #[test]
    fn a_failure_after_a_roll_keeps_the_sealed_segment() {
        let dir = tempfile::tempdir().unwrap();
        let never = LogConfig {
            fsync: FsyncPolicy::Never,
            ..LogConfig::default()
        };
        let (log, rolls_at) = rolling_log_with(dir.path(), never.clone());
        let sealed_next = log.read_state().active().header.base_index;
        fail_io(dir.path());
        assert!(
            log.append(&[NewEntry::internal(
                rolls_at,
                1,
                Bytes::from_static(b"entry")
            )])
            .is_err()
        );
        stop_failing_io(dir.path());
        drop(log);
        let log = Log::open(dir.path(), never).unwrap();
        assert_eq!(
            log.next_index(),
            sealed_next,
            "cut more or less than the unsealed tail"
        );
    }

    /// A log that outlives its directory (removed, and made again for a new log) and is poisoned
    /// then leaves no note there, at the failure or when dropped: the note would cut the new
    /// log's entries.
    #[test]
    fn a_log_poisoned_after_its_directory_was_replaced_leaves_the_new_one_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica");
        let old = partly_synced(&path, 5, 2);
        std::fs::remove_dir_all(&path).unwrap();
        let new = Log::open(&path, LogConfig::default()).unwrap();
        append(&new, 0..8);
        new.close().unwrap();
        fail_next_sync(&path);
        assert!(old.sync().is_err());
        drop(old);
        assert!(!path.join(suspect::UNSYNCED_FROM_FILE).exists());
        let new = Log::open(&path, LogConfig::default()).unwrap();
        assert_eq!(read_indexes(&new), (0..8).collect::<Vec<_>>());
    }

    /// The indexes of every entry the log holds, read back.
    fn read_indexes(log: &Log) -> Vec<u64> {
        log.read_entries(log.first_index(), log.next_index(), u64::MAX)
            .unwrap()
            .iter()
            .map(|entry| entry.index)
            .collect()
    }

    /// After a failed sync the log vouches for nothing, not even for what synced before it.
    #[test]
    fn a_poisoned_log_counts_nothing_durable() {
        let dir = tempfile::tempdir().unwrap();
        let log = poisoned_after(dir.path(), 10, 2);
        assert_eq!(log.durable_next_index(), 0);
    }

    /// Whatever the fsync policy, applying it to a poisoned log fails (as a sync would), so that
    /// no caller takes it for a log that is merely not due for a sync: the flush mark, say, which
    /// must keep the last durable point it had.
    #[test]
    fn the_fsync_policy_of_a_poisoned_log_fails_even_without_a_sync() {
        for fsync in [FsyncPolicy::Never, FsyncPolicy::IntervalMs(3_600_000)] {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(
                dir.path(),
                LogConfig {
                    fsync,
                    ..LogConfig::default()
                },
            )
            .unwrap();
            append(&log, 0..3);
            log.sync_by_policy(3).unwrap();
            fail_io(dir.path());
            let entry = NewEntry::internal(3, 1, Bytes::from_static(b"entry"));
            assert!(log.append(&[entry]).is_err());
            stop_failing_io(dir.path());
            assert!(
                matches!(log.sync_by_policy(3), Err(SyncError::Poisoned { .. })),
                "{fsync:?}"
            );
        }
    }

    /// Entries of about 1 KiB into 8 KiB segments: a log and the index whose append rolls its
    /// second segment.
    fn rolling_log(dir: &Path) -> (Arc<Log>, u64) {
        rolling_log_syncing_through(dir, None)
    }

    /// [`rolling_log`], syncing through `group`.
    fn rolling_log_syncing_through(dir: &Path, group: Option<Arc<SharedSync>>) -> (Arc<Log>, u64) {
        rolling_log_with(
            dir,
            LogConfig {
                shared_sync: group,
                ..LogConfig::default()
            },
        )
    }

    /// [`rolling_log`], opened with `config` (its segment size and preallocation replaced).
    fn rolling_log_with(dir: &Path, config: LogConfig) -> (Arc<Log>, u64) {
        let config = LogConfig {
            segment_bytes_max: 8 * 1024,
            preallocate_bytes: 0,
            ..config
        };
        let log = Log::open(dir, config).unwrap();
        let payload = Bytes::from(vec![7u8; 1000]);
        let mut index = 0;
        while log.read_state().segments.len() == 1 {
            log.append(&[NewEntry::internal(index, 1, payload.clone())])
                .unwrap();
            index += 1;
        }
        // `index - 1` went into the second segment; each segment holds `index - 1` entries.
        let rolls_at = 2 * (index - 1);
        for next in index..rolls_at {
            log.append(&[NewEntry::internal(next, 1, payload.clone())])
                .unwrap();
        }
        assert_eq!(log.read_state().segments.len(), 2);
        (Arc::new(log), rolls_at)
    }

    /// Appends entry `index` on another thread; its result comes on the channel.
    fn append_beside(
        log: &Arc<Log>,
        index: u64,
    ) -> std::sync::mpsc::Receiver<Result<(), crate::AppendError>> {
        let log = Arc::clone(log);
        on_a_thread(move || {
            let entry = NewEntry::internal(index, 1, Bytes::from(vec![7u8; 1000]));
            log.append(&[entry]).map(drop)
        })
    }

    /// A roll's seal waits for a running sync of the log alone: the two never run at once
    /// (Linux reports a writeback error to one of two syncs of a file only, so the seal could
    /// report a segment intact whose pages the other lost). It seals once that sync succeeded;
    /// after a failed one it does not, and the log is poisoned.
    #[test]
    fn a_roll_waits_for_a_running_sync_and_seals_only_after_a_success() {
        for failed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (log, rolls_at) = rolling_log(dir.path());
            // A sync of the log alone runs.
            log.sync.lock().unwrap().in_progress = true;
            let appended = append_beside(&log, rolls_at);
            assert_waits(&appended, "the roll sealed beside a running sync");
            end_running_sync(&log, failed);
            let appended = appended.recv().unwrap();
            assert_eq!(appended.is_err(), failed);
            let state = log.read_state();
            assert_eq!(state.segments.len(), if failed { 2 } else { 3 });
            assert_eq!(state.segments[1].sealed, !failed, "failed: {failed}");
            drop(state);
            assert!(!log.sync.lock().unwrap().in_progress, "the claim ended");
            assert_eq!(log.sync().is_err(), failed);
        }
    }

    /// Lets a held sync go on: it and the roll that waited beside it complete, and everything
    /// appended becomes durable.
    fn release_and_complete(
        held: crate::fault::SyncsHeld,
        synced: std::thread::JoinHandle<Result<(), SyncError>>,
        appended: &std::sync::mpsc::Receiver<Result<(), crate::AppendError>>,
        log: &Log,
        rolls_at: u64,
    ) {
        held.release();
        synced.join().unwrap().unwrap();
        appended.recv().unwrap().unwrap();
        assert_eq!(log.read_state().segments.len(), 3);
        log.sync().unwrap();
        assert_eq!(log.durable_next_index(), rolls_at + 1);
    }

    /// The same with a real sync of the log alone held by the disk (the fault model's
    /// `hold_syncs`): the roll waits for it while holding the log's lock, the sync ends without
    /// that lock, and both complete.
    #[test]
    fn a_roll_and_a_held_sync_of_the_log_alone_both_complete() {
        let dir = tempfile::tempdir().unwrap();
        let (log, rolls_at) = rolling_log(dir.path());
        let held = crate::fault::hold_syncs(dir.path());
        let syncer = Arc::clone(&log);
        let synced = std::thread::spawn(move || syncer.sync());
        let start = std::time::Instant::now();
        while !log.sync.lock().unwrap().in_progress {
            assert!(start.elapsed() < std::time::Duration::from_secs(10));
            std::thread::yield_now();
        }
        let appended = append_beside(&log, rolls_at);
        assert_waits(&appended, "the roll sealed beside a running sync");
        release_and_complete(held, synced, &appended, &log, rolls_at);
    }

    /// A seal that fails marks the log's syncs failed: no sync of the file starts after it (one
    /// could report success for what the failed seal lost).
    #[test]
    fn a_failed_seal_stops_every_later_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (log, rolls_at) = rolling_log(dir.path());
        fail_io(dir.path());
        let entry = NewEntry::internal(rolls_at, 1, Bytes::from(vec![7u8; 1000]));
        assert!(log.append(&[entry]).is_err());
        stop_failing_io(dir.path());
        assert!(log.sync.lock().unwrap().failed());
        assert!(matches!(log.sync(), Err(SyncError::Poisoned { .. })));
    }

    /// [`rolling_log`] in `root/p0`, syncing through a shared sync of `root`: the group, the
    /// log's directory, the log and the index whose append rolls.
    fn rolling_log_in_a_group(root: &Path) -> (Arc<SharedSync>, PathBuf, Arc<Log>, u64) {
        let group = Arc::new(SharedSync::open(root).unwrap());
        let dir = root.join("p0");
        let (log, rolls_at) = rolling_log_syncing_through(&dir, Some(Arc::clone(&group)));
        (group, dir, log, rolls_at)
    }

    /// A log that syncs through a shared sync: a roll waits for a caller whose round is
    /// running (its fdatasync held by the disk), and both complete.
    #[test]
    fn a_roll_waits_for_a_callers_round_of_its_shared_sync() {
        let root = tempfile::tempdir().unwrap();
        let (group, dir, log, rolls_at) = rolling_log_in_a_group(root.path());
        let held = crate::fault::hold_syncs(&dir);
        let syncer = Arc::clone(&log);
        let synced = std::thread::spawn(move || syncer.sync());
        let start = std::time::Instant::now();
        while log.sync.lock().unwrap().in_shared_rounds == 0 {
            assert!(start.elapsed() < std::time::Duration::from_secs(10));
            std::thread::yield_now();
        }
        let appended = append_beside(&log, rolls_at);
        assert_waits(&appended, "the roll sealed beside a running round");
        // It waits before its seal: its sync has not started (the held disk would stop that
        // one too, so that it waits says nothing alone).
        assert!(!log.sync.lock().unwrap().in_progress, "the roll claimed");
        release_and_complete(held, synced, &appended, &log, rolls_at);
        assert_eq!(group.failure(), None);
    }

    /// A caller of a log that syncs through a shared sync, waiting for the log's seal or cut,
    /// starts no round once that failed (a round would sync the same file after the failure).
    #[test]
    fn after_a_failed_seal_no_shared_round_starts_for_the_log() {
        let root = tempfile::tempdir().unwrap();
        let (group, _, log, _) = rolling_log_in_a_group(root.path());
        let rounds = group.rounds();
        // A seal runs.
        log.sync.lock().unwrap().in_progress = true;
        let syncer = Arc::clone(&log);
        let synced = on_a_thread(move || syncer.sync());
        assert_waits(&synced, "a caller went on beside a seal");
        end_running_sync(&log, true);
        assert!(matches!(
            synced.recv().unwrap(),
            Err(SyncError::Poisoned { .. })
        ));
        assert_eq!(group.rounds(), rounds, "a round ran after the failed seal");
    }
}
