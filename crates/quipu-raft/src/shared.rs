//! State a partition's [`LogStore`](crate::LogStore) and
//! [`PartitionStateMachine`](crate::PartitionStateMachine) share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{oneshot, watch};

use quipu_storage::Entry as StoredEntry;

use crate::producers::{ProducerLimits, ProducerTable};
use crate::recent::Recent;

/// Written by the state machine, read by the log store and the fetch path.
#[derive(Debug, Default)]
pub struct PartitionShared {
    inner: Mutex<Inner>,
    /// acks=1 waiters of this replica (as leader), by token: resolved with the batch's base
    /// offset once it is durable in this replica's log.
    local_acks: Mutex<HashMap<u64, oneshot::Sender<u64>>>,
    next_token: AtomicU64,
    /// The high watermark, for fetches that wait for it to advance.
    high_watermark_changes: watch::Sender<u64>,
    /// The partition's idempotent producers as applied (`crate::producers`), and their bounds.
    producers: Mutex<ProducerTable>,
    producer_settings: ProducerSettings,
    /// For a partition of the consumer groups' offsets topic: the groups' state, applied from
    /// its records (`quipu_groups`); `None` for every other partition.
    groups: Option<Mutex<quipu_groups::GroupsState>>,
    /// The newest entries as the log wrote them, until applied ([`crate::recent`]).
    recent: Mutex<Recent>,
}

/// The bounds on a partition's producer table and the clock its producers age by.
#[derive(Clone, Default)]
pub struct ProducerSettings {
    /// The bounds.
    pub limits: ProducerLimits,
    /// The wall clock (ms); the system's when `None`.
    pub clock: Option<quipu_storage::Clock>,
}

impl std::fmt::Debug for ProducerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerSettings")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ProducerSettings {
    /// The time now by the settings' clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> i64 {
        match &self.clock {
            Some(clock) => clock(),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Inner {
    high_watermark: u64,
    /// Records below this offset are deleted (DeleteRecords), whether or not their segments are
    /// gone yet. Rebuilt on restart by applying the log after the last snapshot.
    records_start: u64,
    /// `(last index, next offset)` of this replica's durable snapshot (installed from a leader,
    /// built here, or loaded at open): where the log restarts when it is purged past its end.
    /// Set only once the snapshot file is durable.
    installed: Option<(u64, u64)>,
    /// Where the next snapshot built here ends (last index, its term, next offset), when a
    /// retention pass asked for one at a segment boundary rather than at the applied index.
    snapshot_target: Option<SnapshotTarget>,
    /// Set when the log opened ending below its flush mark: this replica lost entries it had
    /// acknowledged, so until its log reaches this next index again it must neither vote nor
    /// stand for election (its vote could elect a leader without committed entries).
    abstain_until: Option<u64>,
}

/// A log position a snapshot may end at: a whole number of entries, and the offset after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotTarget {
    /// The last index the snapshot covers.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The offset after that entry's records (the first offset the log keeps).
    pub next_offset: u64,
}

impl PartitionShared {
    /// Shared state of a partition whose producer table has `settings`.
    pub fn new(settings: ProducerSettings) -> PartitionShared {
        PartitionShared {
            producer_settings: settings,
            ..PartitionShared::default()
        }
    }

    /// Makes this the shared state of a partition of the offsets topic: its records are applied
    /// to a [`quipu_groups::GroupsState`] too.
    #[must_use]
    pub fn keeping_groups(mut self) -> PartitionShared {
        self.groups = Some(Mutex::default());
        self
    }

    /// Runs `f` on the groups' state, for a partition of the offsets topic (`None` for others).
    pub fn with_groups<T>(&self, f: impl FnOnce(&mut quipu_groups::GroupsState) -> T) -> Option<T> {
        self.groups.as_ref().map(|groups| {
            f(&mut groups
                .lock()
                .expect("groups state lock poisoned by a panic"))
        })
    }

    /// The bounds and clock of the producer table.
    pub fn producer_settings(&self) -> &ProducerSettings {
        &self.producer_settings
    }

    /// Runs `f` on the applied producer table (held locked meanwhile: keep it short).
    pub fn with_producers<T>(&self, f: impl FnOnce(&mut ProducerTable) -> T) -> T {
        f(&mut self
            .producers
            .lock()
            .expect("producer table lock poisoned by a panic"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("partition shared state poisoned by a panic")
    }

    /// The first offset not yet committed.
    pub fn high_watermark(&self) -> u64 {
        self.lock().high_watermark
    }

    /// The offset below which DeleteRecords deleted the records (0: none deleted).
    pub fn records_start(&self) -> u64 {
        self.lock().records_start
    }

    /// Raises [`PartitionShared::records_start`] to `before`, capped at the high watermark;
    /// returns it.
    pub(crate) fn delete_records_before(&self, before: u64) -> u64 {
        let mut inner = self.lock();
        inner.records_start = inner.records_start.max(before.min(inner.high_watermark));
        inner.records_start
    }

    pub(crate) fn set_high_watermark(&self, offset: u64) {
        self.lock().high_watermark = offset;
        self.high_watermark_changes.send_if_modified(|hw| {
            let changed = *hw != offset;
            *hw = offset;
            changed
        });
    }

    /// A receiver that sees every change of the high watermark (long-polling fetches).
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.high_watermark_changes.subscribe()
    }

    pub(crate) fn set_installed(&self, last_index: u64, next_offset: u64) {
        self.lock().installed = Some((last_index, next_offset));
    }

    /// Registers an acks=1 waiter of node `node_id`; the token goes into the proposed request.
    /// Tokens carry the node id, so a token replicated from another leader never matches.
    pub fn register_local_ack(&self, node_id: u64) -> (u64, oneshot::Receiver<u64>) {
        let token =
            (node_id << 40) | (self.next_token.fetch_add(1, Ordering::Relaxed) & ((1 << 40) - 1));
        let (tx, rx) = oneshot::channel();
        self.local_acks
            .lock()
            .expect("local acks lock poisoned by a panic")
            .insert(token, tx);
        (token, rx)
    }

    /// Forgets an acks=1 waiter that gave up.
    pub fn cancel_local_ack(&self, token: u64) {
        self.local_acks
            .lock()
            .expect("local acks lock poisoned by a panic")
            .remove(&token);
    }

    /// Resolves the acks=1 waiter of `token`, if this replica registered it.
    pub(crate) fn resolve_local_ack(&self, token: u64, base_offset: u64) {
        let waiter = self
            .local_acks
            .lock()
            .expect("local acks lock poisoned by a panic")
            .remove(&token);
        if let Some(waiter) = waiter {
            let _ = waiter.send(base_offset);
        }
    }

    /// Whether this replica lost acknowledged entries and has not got them back yet: it must
    /// neither grant votes nor stand for election.
    pub fn is_abstaining(&self) -> bool {
        self.lock().abstain_until.is_some()
    }

    pub(crate) fn abstain_until(&self, next_index: u64) {
        self.lock().abstain_until = Some(next_index);
    }

    /// The log durably holds every entry below `next_index`: ends the abstention once the lost
    /// entries are back. Returns whether it ended now.
    pub(crate) fn note_flushed(&self, next_index: u64) -> bool {
        let mut inner = self.lock();
        match inner.abstain_until {
            Some(until) if next_index >= until => {
                inner.abstain_until = None;
                true
            }
            _ => false,
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .expect("recent entries lock poisoned by a panic")
    }

    /// Keeps entries the log just wrote (`Log::append_kept`) for reads until they are applied.
    pub(crate) fn keep_recent(&self, appended: Vec<StoredEntry>) {
        self.recent().keep(appended);
    }

    /// The entries `start..end` as the log holds them, if all are kept in memory (at least the
    /// first, then as many as fit in `max_bytes`).
    pub(crate) fn read_recent(
        &self,
        start: u64,
        end: u64,
        max_bytes: u64,
    ) -> Option<Vec<StoredEntry>> {
        self.recent().read(start, end, max_bytes)
    }

    /// Forgets the kept entries at or below `index`: the state machine applied them.
    pub(crate) fn release_recent(&self, index: u64) {
        self.recent().release(index);
    }

    /// Forgets every kept entry: the log is about to be truncated or reset.
    pub(crate) fn clear_recent(&self) {
        self.recent().clear();
    }

    /// Asks that the next snapshot built end at `target` (see [`SnapshotTarget`]).
    pub fn set_snapshot_target(&self, target: SnapshotTarget) {
        self.lock().snapshot_target = Some(target);
    }

    pub(crate) fn take_snapshot_target(&self) -> Option<SnapshotTarget> {
        self.lock().snapshot_target.take()
    }

    /// Whether this replica holds a durable snapshot.
    pub(crate) fn has_snapshot(&self) -> bool {
        self.lock().installed.is_some()
    }

    /// The next offset after an installed snapshot whose last index is `last_index`.
    pub(crate) fn installed_next_offset(&self, last_index: u64) -> Option<u64> {
        match self.lock().installed {
            Some((index, offset)) if index == last_index => Some(offset),
            _ => None,
        }
    }
}
