//! Sparse, memory-mapped index files of a segment: `.index` (Raft index and offset to position) and
//! `.timeindex` (running maximum timestamp to position). Layout: `docs/format/segment.md#indexes`.
//!
//! Both are arrays of 16-byte slots `(position u32, rel_index u32, value u64)`, little-endian. A slot
//! with position 0 is empty (position 0 is the segment header, never a frame). The active segment's
//! index files are filled through the map and grow, up to `index_bytes_max`, by doubling with
//! `fallocate` (real blocks: a write through a map into a hole of a full disk would fault the
//! process instead of failing); sealing trims them to their used slots and syncs them.
//!
//! Invariants: within a file, positions and rel_index strictly increase and values never decrease.
//! Index files are derived data: an index that fails validation is rebuilt from the segment.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::frame::{u32_at, u64_at};
use crate::{fault, io, mmap};

/// Bytes of one index slot.
pub(crate) const SLOT_LEN: usize = 16;
/// Slots a new active index file starts with (64 KiB).
const INITIAL_SLOTS: usize = 4096;

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Position of the frame in the segment file.
    pub position: u32,
    /// Frame's Raft index minus the segment's base index.
    pub rel_index: u32,
    /// Offset index: frame's base offset minus the segment's base offset. Time index: the
    /// running maximum timestamp up to and including the frame (as `i64` bits).
    pub value: u64,
}

/// One index file and its map.
#[derive(Debug)]
pub(crate) struct IndexFile {
    path: PathBuf,
    file: File,
    /// `None` when the file is empty (a zero-length file cannot be mapped).
    map: Option<MmapMut>,
    len: usize,
    /// Slots the file (and map) currently hold.
    capacity: usize,
    /// Slots the file may grow to.
    capacity_max: usize,
}

impl IndexFile {
    /// Creates (or resets) an empty index file that may grow to `capacity_max` slots.
    pub fn create(path: &Path, capacity_max: usize) -> std::io::Result<IndexFile> {
        let file = match io::open_rw(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => io::create(path)?,
            Err(e) => return Err(e),
        };
        io::set_len(&file, path, 0)?;
        let capacity = INITIAL_SLOTS.min(capacity_max);
        if capacity > 0 {
            io::preallocate(&file, path, 0, (capacity * SLOT_LEN) as u64)?;
        }
        let map = if capacity > 0 {
            Some(mmap::map_write(&file)?)
        } else {
            None
        };
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            map,
            len: 0,
            capacity,
            capacity_max,
        })
    }

    /// Opens an existing index file. A sealed file's slots are all used; an active file (`active`
    /// true) may grow to `capacity_max` slots and its used slots are the non-empty prefix.
    /// `None` when the file is missing or its size cannot be an index file.
    pub fn open(
        path: &Path,
        active: bool,
        capacity_max: usize,
    ) -> std::io::Result<Option<IndexFile>> {
        let file = match io::open_rw(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let file_len = file.metadata()?.len();
        if file_len % SLOT_LEN as u64 != 0 {
            return Ok(None);
        }
        let Ok(capacity) = usize::try_from(file_len / SLOT_LEN as u64) else {
            return Ok(None);
        };
        if active && capacity > capacity_max {
            return Ok(None);
        }
        let map = if capacity > 0 {
            Some(mmap::map_write(&file)?)
        } else {
            None
        };
        let mut index = IndexFile {
            path: path.to_path_buf(),
            file,
            map,
            len: capacity,
            capacity,
            capacity_max: if active { capacity_max } else { capacity },
        };
        if active {
            // Used slots form a prefix: binary search for the first empty one.
            let (mut lo, mut hi) = (0usize, capacity);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if index.raw_slot(mid).position == 0 {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            index.len = lo;
        }
        Ok(Some(index))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots the file may hold at most.
    pub fn capacity_max(&self) -> usize {
        self.capacity_max
    }

    /// Writes the map back and syncs the file.
    pub fn sync(&self) -> std::io::Result<()> {
        if let Some(map) = &self.map {
            map.flush()?;
        }
        io::sync_all(&self.file, &self.path)
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.capacity_max
    }

    fn raw_slot(&self, i: usize) -> Slot {
        let map = self
            .map
            .as_ref()
            .expect("slot index below capacity implies a map");
        let at = i * SLOT_LEN;
        Slot {
            position: u32_at(map, at),
            rel_index: u32_at(map, at + 4),
            value: u64_at(map, at + 8),
        }
    }

    /// The slot at `i`, which must be below `len()`.
    pub fn slot(&self, i: usize) -> Slot {
        assert!(i < self.len, "index slot {i} out of {}", self.len);
        self.raw_slot(i)
    }

    pub fn last(&self) -> Option<Slot> {
        self.len.checked_sub(1).map(|i| self.raw_slot(i))
    }

    /// Appends a slot, growing the file if needed; the caller checked `!is_full()` and the
    /// ordering invariants.
    pub fn push(&mut self, slot: Slot) -> std::io::Result<()> {
        assert!(
            !self.is_full(),
            "push into a full index {}",
            self.path.display()
        );
        assert!(slot.position != 0, "position 0 marks an empty slot");
        if let Some(last) = self.last() {
            debug_assert!(last.position < slot.position && last.rel_index < slot.rel_index);
        }
        if self.len == self.capacity {
            let grown =
                (self.capacity * 2).clamp(INITIAL_SLOTS.min(self.capacity_max), self.capacity_max);
            let from = (self.capacity * SLOT_LEN) as u64;
            io::preallocate(
                &self.file,
                &self.path,
                from,
                (grown * SLOT_LEN) as u64 - from,
            )?;
            // The old map covers the old length only; slots written through it are in the page
            // cache, which the new map shares.
            self.map = Some(mmap::map_write(&self.file)?);
            self.capacity = grown;
        }
        let at = self.len * SLOT_LEN;
        let map = self.map.as_mut().expect("a non-empty capacity has a map");
        map[at..at + 4].copy_from_slice(&slot.position.to_le_bytes());
        map[at + 4..at + 8].copy_from_slice(&slot.rel_index.to_le_bytes());
        map[at + 8..at + 16].copy_from_slice(&slot.value.to_le_bytes());
        self.len += 1;
        fault::on_mmap_write(&self.path);
        Ok(())
    }

    /// Index of the last slot for which `before(slot)` holds, given that `before` is true for a
    /// prefix of the slots.
    pub fn last_where(&self, before: impl Fn(Slot) -> bool) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(self.raw_slot(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    /// Checks the ordering invariants and that every position lies before `data_len`.
    pub fn is_consistent(&self, data_len: u64, values_monotonic: bool) -> bool {
        let mut previous: Option<Slot> = None;
        for i in 0..self.len {
            let slot = self.raw_slot(i);
            if slot.position == 0 || u64::from(slot.position) >= data_len {
                return false;
            }
            if let Some(prev) = previous
                && (prev.position >= slot.position
                    || prev.rel_index >= slot.rel_index
                    || (values_monotonic && prev.value > slot.value)
                    || (!values_monotonic && (prev.value as i64) >= (slot.value as i64)))
            {
                return false;
            }
            previous = Some(slot);
        }
        true
    }

    /// Trims the file to its used slots and makes it durable; the index stays readable.
    pub fn seal(&mut self) -> std::io::Result<()> {
        if let Some(map) = &self.map {
            map.flush()?;
        }
        self.map = None;
        let used = (self.len * SLOT_LEN) as u64;
        io::set_len(&self.file, &self.path, used)?;
        io::sync_all(&self.file, &self.path)?;
        self.capacity = self.len;
        self.capacity_max = self.len;
        if self.len > 0 {
            self.map = Some(mmap::map_write(&self.file)?);
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
