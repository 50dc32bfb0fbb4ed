//! Purged segments' data files kept to become later segments' files (PostgreSQL recycles its
//! WAL files so).
//!
//! Why: a new segment's file grows by `fallocate`, which leaves unwritten extents, and every
//! `fdatasync` of an append into them also writes the metadata that marks the blocks written.
//! On this project's test VM that took each sync from about 2.7 device requests to about 3.9
//! and doubled its time; a recycled file's blocks are written already (`docs/benchmarks.md`,
//! "Segments recycled instead of deleted"). With retention, every segment after the first few
//! can be such a file.
//!
//! How: a purge renames the data file of the oldest segment it removes to the log's *spare*,
//! `<segment>.log.spare`, instead of `<segment>.log.deleted` for `crate::deleter` (durable with
//! the purge's directory sync); the log's next roll or reset writes the new segment's header,
//! with a salt of its own, into it, syncs it, and renames it to the new segment's name
//! (`Segment::create_recycled`).
//!
//! Invariants:
//! - A log has at most one spare, a file named `*.log.spare` in its directory. It is not part
//!   of the log: open lists only `*.log` segments and never reads a spare (its header may name
//!   another base than its file name, after a crash between a reuse's header sync and its
//!   rename); it keeps one spare (none with `recycle_segments` off) and deletes any other.
//! - Only a purged segment's data file becomes a spare: it was sealed (trimmed and synced), and
//!   its rename out of the log is durable before the purge returns. It never carries a
//!   `*.deleted` name, which the deleter may be working on.
//! - A spare is reused only while no map of it (of the segment it was) is alive in the
//!   process, checked by the file's device and inode under the log's lock: readers hold bytes
//!   of maps, and the new segment's appends overwrite the old frames. A spare still mapped
//!   waits for a later new segment. No new map of it can appear once it is out of the log.
//! - Reuse fails safe: a spare that cannot be opened, read, or have its new header written and
//!   synced is deleted and the segment made in a new file; only a failure from the rename on
//!   poisons the log. A spare longer than a segment may be is deleted instead of reused.
//! - The spare's blocks count on the disk and in no log's size: a log with retention may hold
//!   one segment's file more than its segments, until `Log::keep_spares(false)` (a node whose
//!   disk runs low) deletes it and stops purges from keeping another.

use std::path::PathBuf;

/// What a spare's name ends with (after its segment's `{base_index:020}.log`).
pub(crate) const SPARE_SUFFIX: &str = ".spare";

/// A log's spare: a purged segment's data file, waiting to become a new segment's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spare {
    /// `<segment>.log.spare`, in the log's directory.
    pub path: PathBuf,
}

impl Spare {
    /// The spare of the segment whose data file was `was` (`{base_index:020}.log`).
    pub fn of(was: PathBuf) -> Spare {
        let mut path = was.into_os_string();
        path.push(SPARE_SUFFIX);
        Spare {
            path: PathBuf::from(path),
        }
    }

    /// Whether `name` (a file name in a log's directory) is a spare's.
    pub fn is_spare_name(name: &str) -> bool {
        name.strip_suffix(SPARE_SUFFIX)
            .and_then(crate::segment::parse_segment_name)
            .is_some()
    }
}

/// Hands a spare that will not be reused to the deleter (renamed `*.deleted`, which open
/// removes should the process stop first).
pub(crate) fn discard(spare: Spare) {
    let deleted = crate::deleter::deleted_name(&spare.path);
    match crate::io::rename(&spare.path, &deleted) {
        Ok(()) => crate::deleter::delete(vec![deleted]),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            file = %spare.path.display(),
            error = &e as &dyn std::error::Error,
            "cannot delete a spare segment file"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_spare_names_the_segment_it_was() {
        let spare = Spare::of(PathBuf::from("/d/00000000000000000042.log"));
        assert_eq!(spare.path, Path::new("/d/00000000000000000042.log.spare"));
        assert!(Spare::is_spare_name("00000000000000000042.log.spare"));
        assert!(!Spare::is_spare_name("00000000000000000042.log"));
        assert!(!Spare::is_spare_name("00000000000000000042.index.spare"));
        assert!(!Spare::is_spare_name("x.log.spare"));
    }
}
