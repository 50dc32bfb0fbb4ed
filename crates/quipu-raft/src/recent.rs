//! [`Recent`]: a partition's newest entries as its log wrote them, kept in memory until applied.
//!
//! Right after an append, openraft reads the same entries back: the leader's replication tasks
//! to send them, and every replica's state machine to apply them. Read from the segment's map,
//! each read verifies the frame's CRC over the whole payload and faults the new pages in. The
//! log store keeps what [`quipu_storage::Log::append_kept`] returns here instead, and serves a
//! read from it when the whole range is here.
//!
//! Invariants:
//! - the entries are consecutive, and each is exactly what the log holds at its index now: the
//!   log store clears them before any truncation or reset and replaces them when an append does
//!   not follow on;
//! - they are dropped once applied (or covered by an installed snapshot), and hold at most
//!   [`RECENT_BYTES_MAX`] of payload (the oldest go first); only appends of at most that much
//!   are kept, and a kept entry holds its append's whole buffer, so a partition holds at most
//!   about twice that in memory, and an idle one nothing;
//! - a failed append or sync drops them, and none are served while the log is poisoned;
//! - all the partitions of a process keep at most [`RECENT_NODE_BYTES_MAX`] of payload between
//!   them: an append that would go over it is not kept (its reads go to the log), so commits
//!   stalled on many partitions at once cannot pile entries up in memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use quipu_storage::Entry as StoredEntry;

/// Most payload bytes a partition keeps in memory for reads of entries not yet applied.
pub const RECENT_BYTES_MAX: usize = 1024 * 1024;

/// Most payload bytes all the partitions of a process keep in memory between them.
pub const RECENT_NODE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Whether an append of `bytes` of payload is worth keeping at all: a kept entry holds its whole
/// append's buffer, so only appends within a partition's bound are.
pub(crate) fn keeps_appends_of(bytes: usize) -> bool {
    bytes <= RECENT_BYTES_MAX
}

/// Payload bytes kept by every [`Recent`] of this process that counts against the node's bound.
static NODE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The newest entries of a log, not yet applied.
#[derive(Debug)]
pub(crate) struct Recent {
    entries: VecDeque<StoredEntry>,
    bytes: usize,
    /// Payload bytes kept by every `Recent` sharing this bound, and the bound.
    shared_bytes: &'static AtomicUsize,
    shared_max: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::within(&NODE_BYTES, RECENT_NODE_BYTES_MAX)
    }
}

impl Drop for Recent {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Recent {
    /// A `Recent` that keeps, together with the others counting in `shared_bytes`, at most
    /// `shared_max` bytes of payload.
    fn within(shared_bytes: &'static AtomicUsize, shared_max: usize) -> Recent {
        Recent {
            entries: VecDeque::new(),
            bytes: 0,
            shared_bytes,
            shared_max,
        }
    }

    /// Keeps `appended` (consecutive entries just written) after what is kept already, or
    /// instead of it if they do not follow on; keeps nothing of it if the shared bound would be
    /// passed (then nothing before it either: what is kept stays consecutive up to the log's end).
    pub(crate) fn keep(&mut self, appended: Vec<StoredEntry>) {
        let Some(first) = appended.first() else {
            return;
        };
        if self.next_index() != Some(first.index) {
            self.clear();
        }
        let incoming: usize = appended.iter().map(|e| e.payload.len()).sum();
        let before = self.shared_bytes.fetch_add(incoming, Ordering::SeqCst);
        if before.saturating_add(incoming) > self.shared_max {
            self.shared_bytes.fetch_sub(incoming, Ordering::SeqCst);
            self.clear();
            return;
        }
        self.bytes += incoming;
        self.entries.extend(appended);
        while self.bytes > RECENT_BYTES_MAX {
            let Some(oldest) = self.entries.pop_front() else {
                break;
            };
            self.forget(oldest.payload.len());
        }
    }

    /// Counts `len` bytes of payload no longer kept.
    fn forget(&mut self, len: usize) {
        self.bytes -= len;
        self.shared_bytes.fetch_sub(len, Ordering::SeqCst);
    }

    /// The entries `start..end`, if every one of them is kept; at least the first and then as
    /// many as fit in `max_bytes` of payload, as a read of the log returns them.
    pub(crate) fn read(&self, start: u64, end: u64, max_bytes: u64) -> Option<Vec<StoredEntry>> {
        let first = self.entries.front()?.index;
        let next = self.next_index()?;
        if start >= end || start < first || end > next {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        let count = usize::try_from(end - start).ok()?;
        let mut out = Vec::with_capacity(count);
        let mut total = 0u64;
        for entry in self.entries.iter().skip(skip).take(count) {
            let len = entry.payload.len() as u64;
            if !out.is_empty() && total + len > max_bytes {
                break;
            }
            total += len;
            out.push(entry.clone());
        }
        Some(out)
    }

    /// Drops the entries at or below `index` (applied).
    pub(crate) fn release(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            let entry = self.entries.pop_front().expect("checked");
            self.forget(entry.payload.len());
        }
    }

    /// Drops every entry (before a truncation or reset of the log).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        let bytes = self.bytes;
        self.forget(bytes);
    }

    fn next_index(&self) -> Option<u64> {
        self.entries.back().map(|e| e.index + 1)
    }

    /// Payload bytes kept.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use quipu_storage::{EntryKind, Offset};

    use super::*;

    fn entry(index: u64, len: usize) -> StoredEntry {
        StoredEntry {
            index,
            term: 1,
            base_offset: Offset(index * 10),
            record_count: 0,
            max_timestamp: -1,
            kind: EntryKind::Internal,
            payload: Bytes::from(vec![index.to_le_bytes()[0]; len]),
        }
    }

    fn indexes(entries: &[StoredEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.index).collect()
    }

    #[test]
    fn reads_only_ranges_it_holds_whole() {
        let mut recent = Recent::default();
        recent.keep(vec![entry(5, 10), entry(6, 10)]);
        recent.keep(vec![entry(7, 10)]);
        assert_eq!(indexes(&recent.read(5, 8, u64::MAX).unwrap()), [5, 6, 7]);
        assert_eq!(indexes(&recent.read(6, 7, u64::MAX).unwrap()), [6]);
        assert!(recent.read(4, 6, u64::MAX).is_none(), "starts before");
        assert!(recent.read(7, 9, u64::MAX).is_none(), "ends after");
        assert!(recent.read(6, 6, u64::MAX).is_none(), "empty");
        // As a log read: the first entry whole, then what fits.
        assert_eq!(indexes(&recent.read(5, 8, 15).unwrap()), [5]);
        assert_eq!(indexes(&recent.read(5, 8, 20).unwrap()), [5, 6]);
        assert_eq!(recent.read(6, 7, 0).unwrap()[0], entry(6, 10));
    }

    #[test]
    fn an_append_that_does_not_follow_on_replaces_what_is_kept() {
        let mut recent = Recent::default();
        recent.keep(vec![entry(5, 10), entry(6, 10)]);
        recent.keep(vec![entry(9, 10)]);
        assert!(recent.read(5, 6, u64::MAX).is_none());
        assert_eq!(indexes(&recent.read(9, 10, u64::MAX).unwrap()), [9]);
        assert_eq!(recent.bytes(), 10);
    }

    #[test]
    fn partitions_share_the_nodes_bound() {
        static SHARED: AtomicUsize = AtomicUsize::new(0);
        let (mut one, mut two) = (Recent::within(&SHARED, 25), Recent::within(&SHARED, 25));
        one.keep(vec![entry(1, 10), entry(2, 10)]);
        two.keep(vec![entry(7, 10)]);
        assert!(
            two.read(7, 8, u64::MAX).is_none(),
            "over the shared bound: not kept"
        );
        assert_eq!(SHARED.load(Ordering::SeqCst), 20);
        two.keep(vec![entry(8, 5)]);
        assert_eq!(indexes(&two.read(8, 9, u64::MAX).unwrap()), [8]);
        assert_eq!(SHARED.load(Ordering::SeqCst), 25);
        // Going over drops what the partition kept too, so that the rest stays consecutive.
        one.keep(vec![entry(3, 1)]);
        assert!(one.read(1, 3, u64::MAX).is_none());
        assert_eq!(SHARED.load(Ordering::SeqCst), 5);
        one.keep(vec![entry(4, 10)]);
        one.release(4);
        drop(two);
        assert_eq!(
            SHARED.load(Ordering::SeqCst),
            0,
            "released and dropped bytes are given back"
        );
    }

    #[test]
    fn applied_entries_go_and_the_bound_holds() {
        let mut recent = Recent::default();
        recent.keep(vec![entry(1, 100), entry(2, 100), entry(3, 100)]);
        recent.release(2);
        assert_eq!(indexes(&recent.read(3, 4, u64::MAX).unwrap()), [3]);
        assert!(recent.read(2, 4, u64::MAX).is_none());
        recent.release(3);
        assert_eq!(recent.bytes(), 0);
        assert!(recent.read(3, 4, u64::MAX).is_none());

        let big = RECENT_BYTES_MAX / 2 + 1;
        recent.keep(vec![entry(4, big), entry(5, big)]);
        assert!(recent.read(4, 5, u64::MAX).is_none(), "the oldest went");
        assert_eq!(indexes(&recent.read(5, 6, u64::MAX).unwrap()), [5]);
        assert!(recent.bytes() <= RECENT_BYTES_MAX);
        recent.clear();
        assert_eq!(recent.bytes(), 0);
        assert!(recent.read(5, 6, u64::MAX).is_none());
    }
}
