//! The only module allowed `unsafe`: it maps files into memory.
//!
//! Mapping a file is `unsafe` because the bytes behind the map can change or vanish if the file is
//! modified or truncated by anyone while the map is alive. The engine upholds, for every map made
//! here:
//! - the file is written only past the end of every range handed out to readers (appends), or
//!   through the map itself while the owner holds the log's write lock (index files);
//! - a file is shrunk below data handed out only while nothing but its segment holds the map
//!   (see `Segment::truncate_to`), otherwise a trimmed copy replaces it by rename and the old inode
//!   lives on for the readers; sealing trims only preallocated space past the data, which no
//!   reader ever touches;
//! - nothing outside the engine modifies a log directory while a log is open (documented for
//!   operators in `docs/format/segment.md`).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapMut, MmapOptions};

/// Maps `len` bytes of `file` read-only. `len` may exceed the file's current length (the active
/// segment is mapped at its maximum size once); readers only touch bytes below the length the
/// writer has published, which are always inside the file.
pub(crate) fn map_read(file: &File, len: usize) -> io::Result<Mmap> {
    // SAFETY: see the module invariants; readers never access past the published data length.
    unsafe { MmapOptions::new().len(len).map(file) }
}

/// Maps the whole of `file` read-write (index files; their length is fixed while mapped).
pub(crate) fn map_write(file: &File) -> io::Result<MmapMut> {
    // SAFETY: index files are only written through this map, under the log's write lock, and are
    // resized only after the map is dropped.
    unsafe { MmapOptions::new().map_mut(file) }
}
