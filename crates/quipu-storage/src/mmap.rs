//! The only module allowed `unsafe`: it maps files into memory.
//!
//! Mapping a file is `unsafe` because the bytes behind the map can change or vanish if the file is
//! modified or truncated by anyone while the map is alive. The engine upholds, for every map made
//! here:
//! - the file is written only past the end of every range handed out to readers (appends), or
//!   through the map itself while the owner holds the log's write lock (index files), or, when a
//!   purged segment's file is recycled as a new segment's (`crate::recycle`), from its start,
//!   only once no map of the segment it was is alive ([`is_mapped`], checked under the log's
//!   lock just before; none can appear after, as it was renamed out of the log first);
//! - a file is shrunk below data handed out only while no other map of it is alive anywhere in
//!   the process ([`is_shared`] checks a process-wide registry of data maps, so it also sees
//!   readers of a `Log` that was dropped or reopened); otherwise a trimmed copy replaces it by
//!   rename and the old inode lives on for the readers (see `Segment::truncate_to`); sealing trims
//!   only preallocated space past the data, which no reader ever touches; a removed segment's
//!   file is shrunk before its unlink only while no map of it is alive ([`is_mapped`], checked by
//!   `crate::deleter` just before; none can appear after, as the file was renamed out of the log
//!   first), else it is only unlinked; a crash recovery's cut (`Segment::rebuild`, at open) is
//!   below no range handed out, as nothing was read yet;
//! - another process never opens the same directory: `Log::open` holds an exclusive `flock` on
//!   its `LOCK` file;
//! - nothing outside the engine modifies a log directory while a log is open (documented for
//!   operators in `docs/format/segment.md`).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use memmap2::{Mmap, MmapMut, MmapOptions};

/// Every live read-only map of a segment data file in this process, by path.
static DATA_MAPS: Mutex<Vec<(PathBuf, Weak<Mmap>)>> = Mutex::new(Vec::new());

/// Maps `len` bytes of `file` read-only. `len` may exceed the file's current length (the active
/// segment is mapped at its maximum size once); readers only touch bytes below the length the
/// writer has published, which are always inside the file.
pub(crate) fn map_read(file: &File, path: &Path, len: usize) -> io::Result<Arc<Mmap>> {
    // SAFETY: see the module invariants; readers never access past the published data length.
    let map = Arc::new(unsafe { MmapOptions::new().len(len).map(file) }?);
    let mut maps = DATA_MAPS.lock().unwrap_or_else(|e| e.into_inner());
    maps.retain(|(_, weak)| weak.strong_count() > 0);
    maps.push((path.to_path_buf(), Arc::downgrade(&map)));
    Ok(map)
}

/// Whether any map of `path` other than the caller's `own` (held only by the caller) is alive.
pub(crate) fn is_shared(path: &Path, own: &Arc<Mmap>) -> bool {
    if Arc::strong_count(own) > 1 {
        return true;
    }
    let maps = DATA_MAPS.lock().unwrap_or_else(|e| e.into_inner());
    maps.iter().any(|(mapped, weak)| {
        mapped == path && weak.strong_count() > 0 && !std::ptr::eq(weak.as_ptr(), Arc::as_ptr(own))
    })
}

/// Whether any map of the data file at `path` is alive anywhere in the process (a reader may
/// still hold bytes of it).
pub(crate) fn is_mapped(path: &Path) -> bool {
    let maps = DATA_MAPS.lock().unwrap_or_else(|e| e.into_inner());
    maps.iter()
        .any(|(mapped, weak)| mapped == path && weak.strong_count() > 0)
}

/// Maps the whole of `file` read-write (index files; their length is fixed while mapped).
pub(crate) fn map_write(file: &File) -> io::Result<MmapMut> {
    // SAFETY: index files are only written through this map, under the log's write lock, and are
    // resized only after the map is dropped.
    unsafe { MmapOptions::new().map_mut(file) }
}
