//! One segment: a data file of frames plus its two index files.
//!
//! Invariants:
//! - frames in `[SEGMENT_HEADER_LEN, data_len)` are valid, with dense indexes from `base_index`
//!   and base offsets continuing from `base_offset`, their CRCs under the header's salt; bytes
//!   past `data_len` are zero, unwritten, or a recycled file's old frames (whose CRCs are under
//!   another salt, so a scan stops at them);
//! - bytes below `data_len` never change while any reader holds the map (`truncate_to` copies
//!   instead of shrinking a shared map);
//! - a sealed segment's data and index files are trimmed and synced: after a crash only the last
//!   segment needs its tail verified;
//! - space preallocated past the data grows with it: none before the first append, then steps
//!   of what the file already holds (so quiet segments reserve little disk).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;
use tracing::{info, warn};

use crate::entry::{Entry, EntryKind, NewEntry, Offset};
use crate::error::Failure;
use crate::frame::{
    FRAME_HEADER_LEN, FrameHeader, SEGMENT_HEADER_LEN, SegmentHeader, read_frame, seal_crc,
};
use crate::index::{IndexFile, SLOT_LEN, Slot};
use crate::recycle::Spare;
use crate::{LogConfig, io, mmap};

/// File names of a segment: `{base_index:020}.log`, `.index`, `.timeindex`.
pub(crate) fn segment_paths(dir: &Path, base_index: u64) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("{base_index:020}.log")),
        dir.join(format!("{base_index:020}.index")),
        dir.join(format!("{base_index:020}.timeindex")),
    )
}

/// Parses `{20 digits}.log`.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How to treat an existing segment file on open.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OpenMode {
    /// Sealed: trimmed and synced when it was sealed.
    Sealed,
    /// The last segment after a clean close that recorded its data length.
    ActiveClean { data_len: u64 },
    /// The last segment after a crash: verify every frame, cut a bad tail, rebuild indexes.
    ActiveCrashed,
}

/// A read-only handle on a segment's bytes, usable without the log's lock.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub path: Arc<Path>,
    pub map: Arc<Mmap>,
    pub data_len: u64,
    /// The segment's salt, under which its frames' CRCs verify.
    pub salt: u64,
}

/// Owner of a mapped range, so that `Bytes` can point into the map without copying.
struct MapSlice {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

impl SegmentView {
    fn data(&self) -> &[u8] {
        let len = usize::try_from(self.data_len).expect("a mapped length fits usize");
        &self.map[..len]
    }

    /// Parses and verifies the frame at `position`.
    pub fn frame_at(&self, position: u64) -> Result<FrameHeader, Failure> {
        let pos = usize::try_from(position).map_err(|_| self.corrupt(position, "position"))?;
        read_frame(self.data(), pos, self.salt).map_err(|e| self.corrupt(position, &e.to_string()))
    }

    /// The entry whose verified header is `header` at `position`; its payload shares the map.
    pub fn entry(&self, header: &FrameHeader, position: u64) -> Entry {
        let start = usize::try_from(position).expect("verified frame position fits usize")
            + FRAME_HEADER_LEN;
        let end = start + usize::try_from(header.payload_len).expect("u32 fits usize");
        Entry {
            index: header.index,
            term: header.term,
            base_offset: Offset(header.base_offset),
            record_count: header.record_count,
            max_timestamp: header.max_timestamp,
            kind: header.kind,
            payload: Bytes::from_owner(MapSlice {
                map: Arc::clone(&self.map),
                start,
                end,
            }),
        }
    }

    fn corrupt(&self, position: u64, reason: &str) -> Failure {
        Failure::Corrupt {
            path: self.path.to_path_buf(),
            position,
            reason: reason.to_string(),
        }
    }
}

/// Summary of a run of verified frames.
#[derive(Debug, Clone, Copy)]
struct Scan {
    end: u64,
    next_index: u64,
    next_offset: u64,
    last_term: u64,
    max_timestamp: i64,
    /// Position and index of the first frame holding `max_timestamp`.
    max_at: Option<(u64, u64)>,
    /// Where the scan stopped early, and why.
    stopped: Option<(u64, &'static str)>,
}

/// Verifies frames of `view` from `position` on, calling `visit` for each; stops at the first
/// invalid or out-of-sequence frame, or at the view's data length.
fn scan(
    view: &SegmentView,
    mut position: u64,
    mut next_index: u64,
    mut next_offset: u64,
    mut last_term: u64,
    mut visit: impl FnMut(u64, &FrameHeader) -> Result<(), Failure>,
) -> Scan {
    let mut max_timestamp = -1i64;
    let mut max_at = None;
    let stopped = loop {
        if position >= view.data_len {
            break None;
        }
        let Ok(frame) = view.frame_at(position) else {
            break Some((position, "invalid frame"));
        };
        if frame.index != next_index {
            break Some((position, "frame index out of sequence"));
        }
        if frame.base_offset != next_offset {
            break Some((position, "frame base offset out of sequence"));
        }
        if frame.term < last_term {
            break Some((position, "frame term regresses"));
        }
        if (frame.kind == EntryKind::Records) != (frame.record_count > 0) {
            break Some((position, "frame record count does not match its kind"));
        }
        let Some(frame_next_offset) = next_offset.checked_add(u64::from(frame.record_count)) else {
            break Some((position, "frame offsets overflow"));
        };
        if visit(position, &frame).is_err() {
            break Some((position, "index write failed"));
        }
        if frame.max_timestamp > max_timestamp {
            max_timestamp = frame.max_timestamp;
            max_at = Some((position, frame.index));
        }
        position += frame.frame_len();
        next_index += 1;
        next_offset = frame_next_offset;
        last_term = frame.term;
    };
    Scan {
        end: position,
        next_index,
        next_offset,
        last_term,
        max_timestamp,
        max_at,
        stopped,
    }
}

/// What became of a spare offered to [`Segment::create_recycled`].
#[derive(Debug)]
pub(crate) enum Recycled {
    /// The new segment, in the spare's file.
    Segment(Box<Segment>),
    /// A reader still maps the file: kept for a later new segment.
    Mapped,
    /// Gone, too long, or failing before its rename: to be deleted.
    Unusable,
}

/// One segment of a log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub header: SegmentHeader,
    pub path: Arc<Path>,
    file: Arc<File>,
    map: Arc<Mmap>,
    /// Bytes of header and frames (including frames staged but not yet written).
    pub data_len: u64,
    /// Where staged frames start: everything below is written to the file.
    written_len: u64,
    /// File length (preallocated space included).
    allocated_len: u64,
    pub next_index: u64,
    pub next_offset: u64,
    pub last_term: u64,
    pub max_timestamp: i64,
    /// Position and relative index of the frame that holds `max_timestamp`.
    max_timestamp_at: Option<(u32, u32)>,
    offset_index: IndexFile,
    time_index: IndexFile,
    bytes_since_slot: u64,
    pub sealed: bool,
}

/// The first step by which an active segment's data file is preallocated (at its first append).
const PREALLOCATE_FIRST_BYTES: u64 = 64 * 1024;

fn index_capacity(config: &LogConfig) -> usize {
    usize::try_from(config.index_bytes_max / SLOT_LEN as u64).unwrap_or(usize::MAX)
}

/// How much of a segment file is mapped: enough for `segment_bytes_max`, and for one entry of
/// `entry_bytes_max` alone in a segment whatever `segment_bytes_max` is.
fn map_len(config: &LogConfig, file_len: u64) -> Result<usize, std::io::Error> {
    let one_entry = crate::config::SEGMENT_OVERHEAD_BYTES + config.entry_bytes_max;
    usize::try_from(config.segment_bytes_max.max(one_entry).max(file_len))
        .map_err(|_| std::io::Error::other("segment larger than the address space"))
}

impl Segment {
    /// Creates an empty active segment. The caller syncs the directory before relying on it.
    pub fn create(
        dir: &Path,
        header: SegmentHeader,
        last_term: u64,
        config: &LogConfig,
    ) -> Result<Segment, Failure> {
        let (log_path, _, _) = segment_paths(dir, header.base_index);
        let file = io::create(&log_path).map_err(Failure::io(&log_path))?;
        io::write_at(&file, &log_path, &header.encode(), 0).map_err(Failure::io(&log_path))?;
        io::sync_all(&file, &log_path).map_err(Failure::io(&log_path))?;
        // No space is preallocated before the first append ([`Segment::write_staged`]): an idle
        // segment holds its header only, whatever `preallocate_bytes` says.
        Segment::create_in(
            dir,
            header,
            last_term,
            config,
            file,
            SEGMENT_HEADER_LEN as u64,
        )
    }

    /// Creates an empty active segment in a recycled file, `spare` (a purged segment's data
    /// file that no reader maps any more; see `crate::recycle`), whose blocks are written
    /// already: appends into them need no `fallocate` and their syncs no extent conversion. The
    /// new header, with a salt of its own, is written and synced before the file is renamed to
    /// the segment's name, so the segment's file always starts with its own header; the old
    /// frames after it fail their CRC under the new salt, so a scan stops at them. The caller
    /// syncs the directory before relying on the segment.
    ///
    /// [`Recycled::Mapped`] if a reader in the process still maps the file (checked on the handle
    /// opened here, by the file's device and inode: no map of it can appear after, as it is out
    /// of the log); [`Recycled::Unusable`] if it is gone, longer than a segment may be, or fails
    /// before the rename (logged): the caller deletes it and makes the segment in a new file. A
    /// failure from the rename on is the log's.
    pub fn create_recycled(
        dir: &Path,
        header: SegmentHeader,
        last_term: u64,
        config: &LogConfig,
        spare: &Path,
    ) -> Result<Recycled, Failure> {
        let prepared = (|| -> std::io::Result<Result<(File, u64), Recycled>> {
            let file = io::open_rw(spare)?;
            if mmap::is_mapped(&file) {
                return Ok(Err(Recycled::Mapped));
            }
            let file_len = file.metadata()?.len();
            let longest = map_len(config, 0)?;
            if file_len < SEGMENT_HEADER_LEN as u64
                || usize::try_from(file_len).map_or(true, |len| len > longest)
            {
                // Longer than a segment may be now (`segment_bytes_max` went down since).
                return Ok(Err(Recycled::Unusable));
            }
            io::write_at(&file, spare, &header.encode(), 0)?;
            io::sync_all(&file, spare)?;
            Ok(Ok((file, file_len)))
        })();
        let (file, file_len) = match prepared {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(not_now)) => return Ok(not_now),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(
                        file = %spare.display(),
                        error = &e as &dyn std::error::Error,
                        "cannot reuse the spare segment file; the new segment gets a new file"
                    );
                }
                return Ok(Recycled::Unusable);
            }
        };
        let (log_path, _, _) = segment_paths(dir, header.base_index);
        io::rename_new(spare, &log_path).map_err(Failure::io(&log_path))?;
        Segment::create_in(dir, header, last_term, config, file, file_len)
            .map(|segment| Recycled::Segment(Box::new(segment)))
    }

    /// The rest of a segment's creation once its data file holds its synced header:
    /// `allocated_len` is the file's length.
    fn create_in(
        dir: &Path,
        header: SegmentHeader,
        last_term: u64,
        config: &LogConfig,
        file: File,
        allocated_len: u64,
    ) -> Result<Segment, Failure> {
        let (log_path, index_path, time_path) = segment_paths(dir, header.base_index);
        let map = mmap::map_read(
            &file,
            map_len(config, allocated_len).map_err(Failure::io(&log_path))?,
        )
        .map_err(Failure::io(&log_path))?;
        let capacity = index_capacity(config);
        let offset_index =
            IndexFile::create(&index_path, capacity).map_err(Failure::io(&index_path))?;
        let time_index =
            IndexFile::create(&time_path, capacity).map_err(Failure::io(&time_path))?;
        Ok(Segment {
            header,
            path: log_path.into(),
            file: Arc::new(file),
            map,
            data_len: SEGMENT_HEADER_LEN as u64,
            written_len: SEGMENT_HEADER_LEN as u64,
            allocated_len,
            next_index: header.base_index,
            next_offset: header.base_offset,
            last_term,
            max_timestamp: -1,
            max_timestamp_at: None,
            offset_index,
            time_index,
            bytes_since_slot: 0,
            sealed: false,
        })
    }

    /// Opens an existing segment, verifying and repairing as `mode` says.
    pub fn open(
        dir: &Path,
        base_index: u64,
        last_term: u64,
        mode: OpenMode,
        config: &LogConfig,
    ) -> Result<Segment, Failure> {
        let (log_path, index_path, time_path) = segment_paths(dir, base_index);
        let file = io::open_rw(&log_path).map_err(Failure::io(&log_path))?;
        let file_len = file.metadata().map_err(Failure::io(&log_path))?.len();
        let mut header_bytes = [0u8; SEGMENT_HEADER_LEN];
        let corrupt = |position: u64, reason: String| Failure::Corrupt {
            path: log_path.clone(),
            position,
            reason,
        };
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut header_bytes, 0)
            .map_err(|e| corrupt(0, format!("cannot read the segment header: {e}")))?;
        let header = SegmentHeader::decode(&header_bytes).map_err(|reason| corrupt(0, reason))?;
        if header.base_index != base_index {
            return Err(corrupt(
                0,
                format!(
                    "header names base index {} but the file name {base_index}",
                    header.base_index
                ),
            ));
        }
        let map = mmap::map_read(
            &file,
            map_len(config, file_len).map_err(Failure::io(&log_path))?,
        )
        .map_err(Failure::io(&log_path))?;
        let capacity = index_capacity(config);
        let active = !matches!(mode, OpenMode::Sealed);
        let existing = match mode {
            OpenMode::ActiveCrashed => None,
            _ => {
                let offset_index = IndexFile::open(&index_path, active, capacity)
                    .map_err(Failure::io(&index_path))?;
                let time_index = IndexFile::open(&time_path, active, capacity)
                    .map_err(Failure::io(&time_path))?;
                offset_index.zip(time_index)
            }
        };
        let have_indexes = existing.is_some();
        let (offset_index, time_index) = match existing {
            Some(pair) => pair,
            // Empty stand-ins: `rebuild` below recreates both files.
            None => (
                IndexFile::create(&index_path, 0).map_err(Failure::io(&index_path))?,
                IndexFile::create(&time_path, 0).map_err(Failure::io(&time_path))?,
            ),
        };
        let mut segment = Segment {
            header,
            path: log_path.clone().into(),
            file: Arc::new(file),
            map,
            data_len: file_len,
            written_len: file_len,
            allocated_len: file_len,
            next_index: header.base_index,
            next_offset: header.base_offset,
            last_term,
            max_timestamp: -1,
            max_timestamp_at: None,
            offset_index,
            time_index,
            bytes_since_slot: 0,
            sealed: !active,
        };
        let trusted_len = match mode {
            OpenMode::Sealed => Some(file_len),
            OpenMode::ActiveClean { data_len }
                if data_len <= file_len && data_len >= SEGMENT_HEADER_LEN as u64 =>
            {
                Some(data_len)
            }
            _ => None,
        };
        if let Some(data_len) = trusted_len {
            segment.data_len = data_len;
            segment.written_len = data_len;
            if have_indexes && segment.adopt_indexes() {
                return Ok(segment);
            }
            if !active {
                // A sealed segment with bad indexes: rebuild them, which verifies every frame.
                segment.rebuild(false, config)?;
                return Ok(segment);
            }
        }
        // Crash recovery of the active segment: verify every frame up to the file's end.
        segment.data_len = file_len;
        segment.rebuild(true, config)?;
        Ok(segment)
    }

    /// Checks the opened index files against the data; on success the segment's counters are
    /// set from the last slot and a short verified scan to `data_len`.
    fn adopt_indexes(&mut self) -> bool {
        let data_len = self.data_len;
        if !self.offset_index.is_consistent(data_len, true)
            || !self.time_index.is_consistent(data_len, false)
        {
            return false;
        }
        let has_frames = data_len > SEGMENT_HEADER_LEN as u64;
        let time_last = self.time_index.last();
        let start = match self.offset_index.last() {
            Some(slot)
                if has_frames
                    && self.offset_index.slot(0).position as usize == SEGMENT_HEADER_LEN =>
            {
                slot
            }
            None if !has_frames => return true,
            _ => return false,
        };
        let (Some(start_index), Some(start_offset)) = (
            self.header
                .base_index
                .checked_add(u64::from(start.rel_index)),
            self.header.base_offset.checked_add(start.value),
        ) else {
            return false;
        };
        let scan = scan(
            &self.view(),
            u64::from(start.position),
            start_index,
            start_offset,
            self.last_term,
            |_, _| Ok(()),
        );
        if scan.stopped.is_some() || scan.end != data_len {
            return false;
        }
        self.next_index = scan.next_index;
        self.next_offset = scan.next_offset;
        self.last_term = scan.last_term;
        // The last time slot covers every frame up to the last offset slot (see `index_frame`);
        // the scan covers the rest.
        self.max_timestamp = scan.max_timestamp;
        self.max_timestamp_at = scan
            .max_at
            .and_then(|(position, index)| self.slot_key(position, index));
        if let Some(slot) = time_last {
            let indexed = slot.value as i64;
            if indexed >= self.max_timestamp {
                self.max_timestamp = indexed;
                self.max_timestamp_at = Some((slot.position, slot.rel_index));
            }
        }
        self.bytes_since_slot = data_len - u64::from(start.position);
        true
    }

    /// Rebuilds both index files by verifying every frame from the header on. For the active
    /// segment (`active`), a bad tail is cut off durably; in a sealed segment it is corruption.
    fn rebuild(
        &mut self,
        active: bool,
        config: &LogConfig,
    ) -> Result<Option<(u64, &'static str)>, Failure> {
        let (_, index_path, time_path) = segment_paths(
            self.path.parent().expect("segment path has a directory"),
            self.header.base_index,
        );
        let capacity = index_capacity(config);
        self.offset_index =
            IndexFile::create(&index_path, capacity).map_err(Failure::io(&index_path))?;
        self.time_index =
            IndexFile::create(&time_path, capacity).map_err(Failure::io(&time_path))?;
        self.bytes_since_slot = 0;
        self.max_timestamp = -1;
        self.max_timestamp_at = None;
        let base = self.header;
        let view = self.view();
        let scan = scan(
            &view,
            SEGMENT_HEADER_LEN as u64,
            base.base_index,
            base.base_offset,
            self.last_term,
            |position, frame| self.index_frame(position, frame, config),
        );
        if self.offset_index.len() == 0 && scan.end > SEGMENT_HEADER_LEN as u64 {
            // Only a failed index write leaves frames unindexed.
            return Err(Failure::Io {
                path: self.offset_index.path().to_path_buf(),
                source: std::io::Error::other("cannot index the segment"),
            });
        }
        if let Some((position, reason)) = scan.stopped {
            if !active {
                return Err(Failure::Corrupt {
                    path: self.path.to_path_buf(),
                    position,
                    reason: reason.to_string(),
                });
            }
            let from =
                usize::try_from(position).map_or(view.data().len(), |p| p.min(view.data().len()));
            let garbage = view.data()[from..]
                .iter()
                .take(FRAME_HEADER_LEN)
                .any(|b| *b != 0);
            // A recycled file's old frames (a segment's earlier in the log, so lower indexes)
            // follow its data until appends overwrite them: expected, not damage.
            let old_frame = || {
                FrameHeader::decode(&view.data()[from..])
                    .is_ok_and(|frame| frame.index < scan.next_index)
            };
            if garbage && old_frame() {
                info!(
                    file = %self.path.display(),
                    position,
                    bytes_cut = self.data_len - position,
                    "cutting the old frames of a recycled file after the last valid frame"
                );
            } else if garbage {
                warn!(
                    file = %self.path.display(),
                    position,
                    bytes_cut = self.data_len - position,
                    reason,
                    "cutting a torn or corrupt tail"
                );
            }
        }
        drop(view);
        self.next_index = scan.next_index;
        self.next_offset = scan.next_offset;
        self.last_term = scan.last_term;
        if active {
            // What a crashed process left in the page cache may not be on disk yet: everything
            // kept is made durable before the log reports it durable.
            if scan.end < self.allocated_len {
                io::set_len(&self.file, &self.path, scan.end).map_err(Failure::io(&self.path))?;
                self.allocated_len = scan.end;
            }
            io::sync_all(&self.file, &self.path).map_err(Failure::io(&self.path))?;
        }
        self.data_len = scan.end;
        self.written_len = scan.end;
        if !active {
            self.push_time_slot().map_err(Failure::io(&time_path))?;
            self.offset_index.seal().map_err(Failure::io(&index_path))?;
            self.time_index.seal().map_err(Failure::io(&time_path))?;
        }
        Ok(scan.stopped)
    }

    /// `(position, rel_index)` of a frame, if they fit an index slot.
    fn slot_key(&self, position: u64, index: u64) -> Option<(u32, u32)> {
        let rel_index = index.checked_sub(self.header.base_index)?;
        Some((
            u32::try_from(position).ok()?,
            u32::try_from(rel_index).ok()?,
        ))
    }

    /// Adds index slots for a frame at `position` if the interval says so. Whenever the offset
    /// index gets a slot, the time index gets one for the running maximum if it grew, so the
    /// last time slot always covers every frame up to the last offset slot.
    fn index_frame(
        &mut self,
        position: u64,
        frame: &FrameHeader,
        config: &LogConfig,
    ) -> Result<(), Failure> {
        let (pos, rel_index) =
            self.slot_key(position, frame.index)
                .ok_or_else(|| Failure::Corrupt {
                    path: self.path.to_path_buf(),
                    position,
                    reason: "frame position or index does not fit an index slot".to_string(),
                })?;
        if frame.max_timestamp > self.max_timestamp {
            self.max_timestamp = frame.max_timestamp;
            self.max_timestamp_at = Some((pos, rel_index));
        }
        let due =
            self.offset_index.len() == 0 || self.bytes_since_slot >= config.index_interval_bytes;
        // One slot of each index stays free for the final time slot at sealing.
        let room = self.offset_index.len() + 1 < self.offset_index.capacity_max()
            && self.time_index.len() + 1 < self.time_index.capacity_max();
        if due && room {
            let value = frame.base_offset - self.header.base_offset;
            let path = self.offset_index.path().to_path_buf();
            self.offset_index
                .push(Slot {
                    position: pos,
                    rel_index,
                    value,
                })
                .map_err(Failure::io(&path))?;
            self.bytes_since_slot = 0;
            let path = self.time_index.path().to_path_buf();
            self.push_time_slot().map_err(Failure::io(&path))?;
        }
        self.bytes_since_slot += frame.frame_len();
        Ok(())
    }

    /// Adds a time slot for the running maximum if it is above the last one.
    fn push_time_slot(&mut self) -> std::io::Result<()> {
        if let Some((position, rel_index)) = self.max_timestamp_at {
            let indexed = self.time_index.last().map_or(i64::MIN, |s| s.value as i64);
            if self.max_timestamp > indexed && !self.time_index.is_full() {
                self.time_index.push(Slot {
                    position,
                    rel_index,
                    value: self.max_timestamp as u64,
                })?;
            }
        }
        Ok(())
    }

    /// Whether the next frame of `frame_len` bytes must go to a new segment.
    pub fn must_roll(&self, frame_len: u64, now_ms: i64, config: &LogConfig) -> bool {
        let has_frames = self.next_index > self.header.base_index;
        has_frames
            // The limits may have changed since this segment was mapped: it never grows past
            // its map.
            && (self.data_len + frame_len > config.segment_bytes_max.min(self.map.len() as u64)
                // Keep one slot free in each index for the final time slot at sealing.
                || self.offset_index.len() + 2 > self.offset_index.capacity_max()
                || self.time_index.len() + 2 > self.time_index.capacity_max()
                || now_ms.saturating_sub(self.header.created_ms) >= config.segment_ms_max)
    }

    /// Appends one frame to `staging` (the bytes not yet written to this segment) and indexes it.
    /// `payload` is copied; for record entries the batch's base offset and partition leader epoch
    /// are rewritten in the copy, both outside the batch's CRC.
    pub fn stage(
        &mut self,
        staging: &mut Vec<u8>,
        entry: &NewEntry,
        record_count: u32,
        max_timestamp: i64,
        config: &LogConfig,
    ) -> Result<(), Failure> {
        let (term, kind, payload) = (entry.term, entry.kind, &entry.payload[..]);
        debug_assert_eq!(self.written_len + staging.len() as u64, self.data_len);
        let frame = FrameHeader {
            crc: 0,
            payload_len: u32::try_from(payload.len()).expect("entry_bytes_max fits u32"),
            index: self.next_index,
            term,
            base_offset: self.next_offset,
            max_timestamp,
            record_count,
            kind,
        };
        let start = staging.len();
        let mut header = [0u8; FRAME_HEADER_LEN];
        frame.encode_into(&mut header);
        staging.extend_from_slice(&header);
        staging.extend_from_slice(payload);
        let payload_copy = &mut staging[start + FRAME_HEADER_LEN..];
        if kind == EntryKind::Records {
            // Each batch in turn: its base offset follows the previous batch's offsets.
            let mut base =
                i64::try_from(self.next_offset).expect("append checked the offset range");
            let epoch = i32::try_from(term).expect("append checked the term range");
            let mut at = 0;
            while at < payload_copy.len() {
                let batch = &mut payload_copy[at..];
                let header =
                    quipu_record::BatchHeader::parse(batch).expect("append validated the batch");
                let batch = &mut batch[..header.total_len()];
                quipu_record::set_base_offset(batch, base).expect("append validated the batch");
                quipu_record::set_partition_leader_epoch(batch, epoch)
                    .expect("append validated the batch");
                base += i64::try_from(header.offset_count()).expect("append checked the offsets");
                at += header.total_len();
            }
        }
        seal_crc(
            self.header.salt,
            &mut header,
            &staging[start + FRAME_HEADER_LEN..],
        );
        staging[start..start + FRAME_HEADER_LEN].copy_from_slice(&header);
        let position = self.data_len;
        self.index_frame(position, &frame, config)?;
        self.data_len += frame.frame_len();
        self.next_index += 1;
        self.next_offset += u64::from(record_count);
        self.last_term = term;
        Ok(())
    }

    /// Writes the staged frames to the file (growing the preallocated region first); the caller
    /// clears `staging` afterwards.
    ///
    /// The region grows as the index files do, geometrically: each step preallocates as much as
    /// the file already holds past its header, at least [`PREALLOCATE_FIRST_BYTES`] (or
    /// `preallocate_bytes` if smaller) and at most `preallocate_bytes`, and always to the end of
    /// what is written (an append larger than a step grows the file to its end). So a busy
    /// segment soon grows by whole `preallocate_bytes` steps, while a segment with little data
    /// reserves little disk (thousands of quiet partitions would otherwise hold
    /// `preallocate_bytes` of zeros each).
    pub fn write_staged(&mut self, staging: &[u8], config: &LogConfig) -> Result<(), Failure> {
        if staging.is_empty() {
            return Ok(());
        }
        let end = self.written_len + staging.len() as u64;
        if config.preallocate_bytes > 0 && end > self.allocated_len {
            let step = self
                .allocated_len
                .saturating_sub(SEGMENT_HEADER_LEN as u64)
                .clamp(
                    PREALLOCATE_FIRST_BYTES.min(config.preallocate_bytes),
                    config.preallocate_bytes,
                );
            let target = end
                .max(self.allocated_len + step)
                .min(config.segment_bytes_max.max(end));
            io::preallocate(
                &self.file,
                &self.path,
                self.allocated_len,
                target - self.allocated_len,
            )
            .map_err(Failure::io(&self.path))?;
            self.allocated_len = target;
        }
        io::write_at(&self.file, &self.path, staging, self.written_len)
            .map_err(Failure::io(&self.path))?;
        self.written_len = end;
        self.allocated_len = self.allocated_len.max(end);
        Ok(())
    }

    /// Seals the segment: final time slot, trimmed and synced data and index files.
    pub fn seal(&mut self) -> Result<(), Failure> {
        assert_eq!(self.written_len, self.data_len, "seal with staged frames");
        let time_path = self.time_index.path().to_path_buf();
        self.push_time_slot().map_err(Failure::io(&time_path))?;
        io::set_len(&self.file, &self.path, self.data_len).map_err(Failure::io(&self.path))?;
        io::sync_all(&self.file, &self.path).map_err(Failure::io(&self.path))?;
        self.allocated_len = self.data_len;
        let index_path = self.offset_index.path().to_path_buf();
        self.offset_index.seal().map_err(Failure::io(&index_path))?;
        let time_path = self.time_index.path().to_path_buf();
        self.time_index.seal().map_err(Failure::io(&time_path))?;
        self.sealed = true;
        Ok(())
    }

    /// The data file and its path, for a sync outside the log's lock.
    pub fn file(&self) -> (Arc<File>, Arc<Path>) {
        (Arc::clone(&self.file), Arc::clone(&self.path))
    }

    /// Makes the active segment's index files durable (a clean close trusts them on reopen).
    pub fn sync_indexes(&self) -> Result<(), Failure> {
        for index in [&self.offset_index, &self.time_index] {
            index.sync().map_err(Failure::io(index.path()))?;
        }
        Ok(())
    }

    pub fn view(&self) -> SegmentView {
        SegmentView {
            path: Arc::clone(&self.path),
            map: Arc::clone(&self.map),
            data_len: self.data_len,
            salt: self.header.salt,
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.data_len
    }

    /// Wall-clock time retention compares against: the newest record, else the creation time.
    pub fn retention_time_ms(&self) -> i64 {
        if self.max_timestamp >= 0 {
            self.max_timestamp
        } else {
            self.header.created_ms
        }
    }

    /// Position of the last indexed frame at or before Raft index `index`.
    pub fn position_for_index(&self, index: u64) -> u64 {
        let base = self.header.base_index;
        self.offset_index
            .last_where(|slot| base + u64::from(slot.rel_index) <= index)
            .map_or(SEGMENT_HEADER_LEN as u64, |i| {
                u64::from(self.offset_index.slot(i).position)
            })
    }

    /// Position of the last indexed frame whose base offset is at or before `offset`.
    pub fn position_for_offset(&self, offset: u64) -> u64 {
        let base = self.header.base_offset;
        self.offset_index
            .last_where(|slot| base + slot.value <= offset)
            .map_or(SEGMENT_HEADER_LEN as u64, |i| {
                u64::from(self.offset_index.slot(i).position)
            })
    }

    /// Position from which a scan finds the first record with a timestamp at or after
    /// `timestamp`: every frame before it has a smaller maximum timestamp.
    pub fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        self.time_index
            .last_where(|slot| (slot.value as i64) < timestamp)
            .map_or(SEGMENT_HEADER_LEN as u64, |i| {
                u64::from(self.time_index.slot(i).position)
            })
    }

    /// Removes every frame from index `keep_next` on and makes this the active segment again.
    /// The cut is durable when this returns. If a reader holds the map, the kept prefix is
    /// copied to a new file that replaces this one by rename, so the reader's bytes never change.
    pub fn truncate_to(
        &mut self,
        keep_next: u64,
        prev_term: u64,
        config: &LogConfig,
    ) -> Result<(), Failure> {
        assert!(keep_next >= self.header.base_index && keep_next <= self.next_index);
        let start = self.position_for_index(keep_next);
        let cut = {
            let view = self.view();
            let mut position = start;
            loop {
                if position >= self.data_len {
                    break position;
                }
                let frame = view.frame_at(position)?;
                if frame.index >= keep_next {
                    break position;
                }
                position += frame.frame_len();
            }
        };
        let dir = self
            .path
            .parent()
            .expect("segment path has a directory")
            .to_path_buf();
        let log_path = self.path.to_path_buf();
        if cut < self.data_len {
            if !mmap::is_shared(&self.file, &self.map) {
                io::set_len(&self.file, &log_path, cut).map_err(Failure::io(&log_path))?;
                io::sync_all(&self.file, &log_path).map_err(Failure::io(&log_path))?;
            } else {
                let tmp = log_path.with_extension("log.truncating");
                if tmp.exists() {
                    io::remove(&tmp).map_err(Failure::io(&tmp))?;
                }
                let file = io::create(&tmp).map_err(Failure::io(&tmp))?;
                let prefix = &self.map[..usize::try_from(cut).expect("mapped length fits usize")];
                io::write_at(&file, &tmp, prefix, 0).map_err(Failure::io(&tmp))?;
                io::sync_all(&file, &tmp).map_err(Failure::io(&tmp))?;
                io::rename(&tmp, &log_path).map_err(Failure::io(&log_path))?;
                io::sync_dir(&dir).map_err(Failure::io(&dir))?;
                self.file = Arc::new(file);
            }
        }
        self.map = mmap::map_read(
            &self.file,
            map_len(config, cut).map_err(Failure::io(&log_path))?,
        )
        .map_err(Failure::io(&log_path))?;
        self.allocated_len = if cut < self.data_len {
            cut
        } else {
            self.allocated_len.max(self.data_len)
        };
        self.data_len = cut;
        self.written_len = cut;
        self.sealed = false;
        // Rebuild the indexes (and counters) over the kept frames; a cut is rare, so the simple
        // full scan is worth more than incremental slot surgery.
        self.last_term = prev_term;
        let stopped = self.rebuild(true, config)?;
        if self.next_index != keep_next {
            return Err(Failure::Corrupt {
                path: log_path,
                position: self.data_len,
                reason: format!(
                    "expected to keep entries before {keep_next}, kept before {}: {stopped:?}",
                    self.next_index
                ),
            });
        }
        Ok(())
    }

    /// Takes the segment's files out of the log: renames each (data file first) to
    /// `<name>.deleted`, or the data file to the log's spare (`spare`, `<name>.spare`: see
    /// `crate::recycle`), then syncs the directory, so the removal is durable on return (open
    /// removes `*.deleted` files and never reads a spare). Returns the `*.deleted` files, which
    /// the caller hands to [`crate::deleter`] to free their space gradually, off the log's lock,
    /// and the spare if it made one. The spare never carries a `*.deleted` name, which the
    /// deleter may be working on.
    pub fn retire(&self, spare: bool) -> Result<(Vec<PathBuf>, Option<Spare>), Failure> {
        let dir = self.path.parent().expect("segment path has a directory");
        let (log_path, index_path, time_path) = segment_paths(dir, self.header.base_index);
        let spare_path = spare.then(|| Spare::of(log_path.clone()).path);
        let data_to = spare_path
            .clone()
            .unwrap_or_else(|| crate::deleter::deleted_name(&log_path));
        let (index_to, time_to) = (
            crate::deleter::deleted_name(&index_path),
            crate::deleter::deleted_name(&time_path),
        );
        let mut renamed = Vec::with_capacity(3);
        // The data file first.
        for (path, to) in [
            (log_path, data_to),
            (index_path, index_to),
            (time_path, time_to),
        ] {
            match io::rename(&path, &to) {
                Ok(()) => renamed.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Failure::Io { path, source: e }),
            }
        }
        io::sync_dir(dir).map_err(Failure::io(dir))?;
        // The spare, if the data file became one, is not the deleter's.
        let kept = spare_path.and_then(|path| {
            let at = renamed.iter().position(|renamed| *renamed == path)?;
            Some(Spare {
                path: renamed.remove(at),
            })
        });
        Ok((renamed, kept))
    }
}
