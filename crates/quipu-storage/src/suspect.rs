//! The unsynced tails that poisoned logs left behind, for their next open in this process.
//!
//! A failed `fdatasync` (or write) may have lost pages the page cache still shows: Linux marks
//! the pages of a failed writeback clean, so they read back as written, and a later sync reports
//! success without writing them (the "fsyncgate" behaviour). A log that opens again in the same
//! process (a replica reopened after an error) would verify those pages' CRCs against the cache,
//! find them whole, and hold entries the disk may not have; a replica could then count them
//! toward a commit. So a poisoned log, when it is dropped, notes here how far it was durable
//! (everything below that index was synced before the failure), and the next open of its
//! directory cuts every entry from there on, with a durable truncation, before anything reads
//! them. Those entries were never reported durable, so cutting them loses nothing promised: it is
//! what a crash could have done to them.
//!
//! The note lives in this process only. A process that stops after the failure and starts again
//! without a reboot still finds the page cache as it was; that case is not covered here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// Directory (as [`key`] names it) → the index from which its log's entries are not trusted.
static TAILS: Mutex<Option<HashMap<PathBuf, u64>>> = Mutex::new(None);

/// The name a log's directory is noted under: its canonical path, so that two spellings of one
/// directory meet; the path as given if it cannot be resolved.
pub(crate) fn key(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Notes that the log of `dir` holds nothing durable from index `durable_next` on. Two notes
/// before an open keep the lower index.
pub(crate) fn note(dir: PathBuf, durable_next: u64) {
    let mut tails = TAILS.lock().unwrap_or_else(PoisonError::into_inner);
    tails
        .get_or_insert_with(HashMap::new)
        .entry(dir)
        .and_modify(|next| *next = (*next).min(durable_next))
        .or_insert(durable_next);
}

/// Takes the note of `dir`, if any: the caller cuts the tail, or notes it again if it cannot.
pub(crate) fn take(dir: &Path) -> Option<u64> {
    let mut tails = TAILS.lock().unwrap_or_else(PoisonError::into_inner);
    tails.as_mut().and_then(|tails| tails.remove(dir))
}
