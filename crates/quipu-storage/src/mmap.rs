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
//!   the process ([`is_shared`] checks a process-wide registry of data maps, by device and
//!   inode, so it also sees readers of a `Log` that was dropped or reopened, under whatever
//!   spelling of its directory); otherwise a trimmed copy replaces it by
//!   rename and the old inode lives on for the readers (see `Segment::truncate_to`); sealing trims
//!   only preallocated space past the data, which no reader ever touches; a removed segment's
//!   file is shrunk before its unlink only while no map of it is alive ([`is_mapped`], checked by
//!   `crate::deleter` just before; none can appear after, as the file was renamed out of the log
//!   first), else it is only unlinked; a crash recovery's cut (`Segment::rebuild`, at open) is
//!   past every range handed out (a torn tail no reader was ever given);
//! - another process never opens the same directory: `Log::open` holds an exclusive `flock` on
//!   its `LOCK` file;
//! - nothing outside the engine modifies a log directory while a log is open (documented for
//!   operators in `docs/format/segment.md`).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, Weak};

use memmap2::{Mmap, MmapMut, MmapOptions};

/// A file's identity, whatever its name: device and inode. A file some map of which is alive
/// keeps its inode, so the pair names no other file meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(file: &File) -> io::Result<FileId> {
    let metadata = file.metadata()?;
    Ok(FileId {
        dev: metadata.dev(),
        ino: metadata.ino(),
    })
}

/// Every live read-only map of a segment data file in this process, by the file's identity
/// (not its name: files are renamed under readers, names are reused, and a directory can be
/// spelled several ways).
static DATA_MAPS: Mutex<Vec<(FileId, Weak<Mmap>)>> = Mutex::new(Vec::new());

/// Maps `len` bytes of `file` read-only. `len` may exceed the file's current length (the active
/// segment is mapped at its maximum size once); readers only touch bytes below the length the
/// writer has published, which are always inside the file.
pub(crate) fn map_read(file: &File, len: usize) -> io::Result<Arc<Mmap>> {
    let id = file_id(file)?;
    // SAFETY: see the module invariants; readers never access past the published data length.
    let map = Arc::new(unsafe { MmapOptions::new().len(len).map(file) }?);
    let mut maps = DATA_MAPS.lock().unwrap_or_else(|e| e.into_inner());
    maps.retain(|(_, weak)| weak.strong_count() > 0);
    maps.push((id, Arc::downgrade(&map)));
    Ok(map)
}

/// Whether any map of `file` other than the caller's `own` (held only by the caller) is alive;
/// `true` if the file cannot be identified.
pub(crate) fn is_shared(file: &File, own: &Arc<Mmap>) -> bool {
    Arc::strong_count(own) > 1 || mapped_other_than(file, Some(own))
}

/// Whether any map of `file` is alive anywhere in the process (a reader may still hold bytes
/// of it); `true` if the file cannot be identified.
pub(crate) fn is_mapped(file: &File) -> bool {
    mapped_other_than(file, None)
}

/// Whether a live map of `file`, other than `own`, is registered; `true` if the file cannot be
/// identified.
fn mapped_other_than(file: &File, own: Option<&Arc<Mmap>>) -> bool {
    let Ok(id) = file_id(file) else { return true };
    let maps = DATA_MAPS.lock().unwrap_or_else(|e| e.into_inner());
    maps.iter().any(|(mapped, weak)| {
        *mapped == id
            && weak.strong_count() > 0
            && own.is_none_or(|own| !std::ptr::eq(weak.as_ptr(), Arc::as_ptr(own)))
    })
}

/// Maps the whole of `file` read-write (index files; their length is fixed while mapped).
pub(crate) fn map_write(file: &File) -> io::Result<MmapMut> {
    // SAFETY: index files are only written through this map, under the log's write lock, and are
    // resized only after the map is dropped.
    unsafe { MmapOptions::new().map_mut(file) }
}
