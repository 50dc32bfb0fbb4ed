//! The unsynced tails that poisoned logs left behind, for their next open.
//!
//! A failed `fdatasync` (or write) may have lost pages the page cache still shows: Linux marks
//! the pages of a failed writeback clean, so they read back as written, and a later sync reports
//! success without writing them (the "fsyncgate" behaviour). A log opened again afterwards (a
//! replica reopened after an error, or the process started again without a reboot: the page
//! cache outlives the process) would verify those pages' CRCs against the cache, find them whole,
//! and hold entries the disk may not have; a replica could then count them toward a commit. So
//! a poisoned log notes how far it was durable (everything below that index was synced before
//! the failure, and entries are never rewritten in place), and the next open
//! of its directory cuts every entry from there on, with a durable truncation, before anything
//! reads them. Those entries were never made durable (under `fsync = always` never acknowledged
//! either; under `interval_ms` or `never`, acknowledged as a crash could lose them), so cutting
//! them is what a crash could have done to them. A seal syncs its segment, and counts it
//! durable, so sealed segments are never cut.
//!
//! The note is written when the log is poisoned, so that a process that dies before dropping
//! the log leaves it too, or when the log is dropped if it was poisoned without its own failure
//! (a failed round of its shared sync); neither is written into a directory that is no longer the
//! log's (its `LOCK` file another), where it would cut another log's entries. The file is
//! written into the page cache, which is what it must outlast; a disk failing may refuse even
//! that, and then only this process knows.
//!
//! The note is kept twice: in this process, and in the log's directory as a mark file
//! ([`UNSYNCED_FROM_FILE`], `docs/format/mark-file.md`), written and never synced, which is what
//! a later process on the same boot needs (after a reboot the page cache is gone, and a note
//! that survived only cuts entries never reported durable). The open that cut removes the file
//! durably before it returns, so no note outlives the entries appended after it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::{MarkFile, io};

/// The mark file, in a log's directory, holding the index from which a poisoned log's entries
/// are not trusted.
pub(crate) const UNSYNCED_FROM_FILE: &str = "log_unsynced_from";

/// Directory (as [`key`] names it) → the index from which its log's entries are not trusted.
static TAILS: Mutex<Option<HashMap<PathBuf, u64>>> = Mutex::new(None);

/// The name a log's directory is noted under in this process: its canonical path, so that two
/// spellings of one directory meet; the path as given if it cannot be resolved.
fn key(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// What [`take`] found for a log's directory.
#[derive(Debug)]
pub(crate) struct Note {
    /// The index from which the log's entries are not trusted, if any was noted.
    pub(crate) durable_next: Option<u64>,
    /// Whether the note's file is there (even if it did not read as a mark).
    file: bool,
}

impl Note {
    /// Removes the note's file, if there was one, durably: called once the tail is cut.
    pub(crate) fn clear(&self, dir: &Path) -> std::io::Result<()> {
        if self.file {
            io::remove(&dir.join(UNSYNCED_FROM_FILE))?;
            io::sync_dir(dir)?;
        }
        Ok(())
    }
}

/// Notes that the log of `dir` holds nothing durable from index `durable_next` on. Two notes
/// before an open keep the lower index. The file is written as well as it can be: a disk that
/// fails may refuse it, and then only this process knows.
pub(crate) fn note(dir: &Path, durable_next: u64) {
    let key = key(dir);
    TAILS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .and_modify(|next| *next = (*next).min(durable_next))
        .or_insert(durable_next);
    let written =
        MarkFile::open(dir, UNSYNCED_FROM_FILE).and_then(|(mark, _)| mark.lower_to(durable_next));
    if let Err(e) = written {
        tracing::warn!(
            dir = %dir.display(),
            durable_next,
            error = &e as &dyn std::error::Error,
            "cannot write the note of a poisoned log's unsynced entries: only this process will cut them"
        );
    }
}

/// The note of the log in `dir`, if any (the lower of this process's and the file's), taken out
/// of this process's table: the caller cuts the tail and then [`Note::clear`]s the file, or
/// notes the tail again if it cannot. Costs one `stat` when nothing was noted (every open).
pub(crate) fn take(dir: &Path) -> std::io::Result<Note> {
    // The file first: if it cannot be read, the note stays in the table for the next open.
    let file = dir.join(UNSYNCED_FROM_FILE).exists();
    let in_file = if file {
        MarkFile::open(dir, UNSYNCED_FROM_FILE)?.1
    } else {
        None
    };
    let in_process = {
        let mut tails = TAILS.lock().unwrap_or_else(PoisonError::into_inner);
        match tails.as_mut() {
            // Resolved only when some log was poisoned in this process.
            Some(tails) if !tails.is_empty() => tails.remove(&key(dir)),
            _ => None,
        }
    };
    let durable_next = match (in_process, in_file) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(Note { durable_next, file })
}

/// Forgets this process's notes, as a new process starts with none (tests).
#[cfg(test)]
pub(crate) fn forget_in_process() {
    TAILS.lock().unwrap_or_else(PoisonError::into_inner).take();
}
