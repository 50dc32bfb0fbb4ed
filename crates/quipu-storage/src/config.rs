//! Per-log configuration. Every size in bytes, every duration in milliseconds.

use crate::frame::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is durable before it is acknowledged. Concurrent appends share one
    /// `fdatasync` (group commit).
    Always,
    /// Data is synced when at least this many ms passed since the last sync; a crash may lose
    /// what was appended since.
    IntervalMs(u64),
    /// Data is synced only when a segment is sealed and when the log is closed.
    Never,
}

/// A millisecond wall clock; replaceable so tests can move time.
pub type Clock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system wall clock, in ms since the Unix epoch.
pub fn system_clock() -> Clock {
    std::sync::Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// Configuration of one log (one partition replica).
#[derive(Clone)]
pub struct LogConfig {
    /// A segment is sealed before an append would make it larger than this. At most 4 GiB - 1.
    pub segment_bytes_max: u64,
    /// A non-empty segment older than this is sealed at the next append.
    pub segment_ms_max: i64,
    /// Largest payload of one entry.
    pub entry_bytes_max: u64,
    /// A sparse index entry is written at most every this many bytes of frames.
    pub index_interval_bytes: u64,
    /// Largest size of each index file (they grow by doubling from 64 KiB); a full index seals
    /// the segment.
    pub index_bytes_max: u64,
    /// Largest step by which an active data file's preallocated space grows (0: no
    /// preallocation). Nothing is preallocated before a segment's first append; then each step
    /// is what the file already holds, at least 64 KiB (or this, if smaller) and at most this,
    /// so quiet segments reserve little disk.
    pub preallocate_bytes: u64,
    /// Keep one purged segment's data file per log and reuse it as the next segment's file
    /// (its blocks are written already, so appends into it sync faster); the spare counts on
    /// the disk, not in the log's size. Off: purged files are deleted.
    pub recycle_segments: bool,
    /// When data is synced.
    pub fsync: FsyncPolicy,
    /// Retention: oldest segments are removed while the log stays at least this large.
    pub retention_bytes: Option<u64>,
    /// Retention: segments whose newest record is older than this are removed.
    pub retention_ms: Option<i64>,
    /// Largest decompressed batch examined by timestamp lookups.
    pub decompressed_bytes_max: usize,
    /// The wall clock used for segment age and retention.
    pub clock: Clock,
    /// The group this log syncs with, if its filesystem's other logs share syncs
    /// ([`crate::SharedSync`]); `None`: it syncs its own files.
    pub shared_sync: Option<std::sync::Arc<crate::SharedSync>>,
}

impl std::fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogConfig")
            .field("segment_bytes_max", &self.segment_bytes_max)
            .field("segment_ms_max", &self.segment_ms_max)
            .field("entry_bytes_max", &self.entry_bytes_max)
            .field("index_interval_bytes", &self.index_interval_bytes)
            .field("index_bytes_max", &self.index_bytes_max)
            .field("preallocate_bytes", &self.preallocate_bytes)
            .field("recycle_segments", &self.recycle_segments)
            .field("fsync", &self.fsync)
            .field("retention_bytes", &self.retention_bytes)
            .field("retention_ms", &self.retention_ms)
            .field(
                "shared_sync",
                &self
                    .shared_sync
                    .as_ref()
                    .map(|group| group.dir().to_path_buf()),
            )
            .finish_non_exhaustive()
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 256 * 1024 * 1024,
            segment_ms_max: 7 * 24 * 3600 * 1000,
            entry_bytes_max: 8 * 1024 * 1024,
            index_interval_bytes: 4096,
            index_bytes_max: 2 * 1024 * 1024,
            preallocate_bytes: 16 * 1024 * 1024,
            recycle_segments: true,
            fsync: FsyncPolicy::Always,
            retention_bytes: None,
            retention_ms: None,
            decompressed_bytes_max: 64 * 1024 * 1024,
            clock: system_clock(),
            shared_sync: None,
        }
    }
}

/// The settings of a log that a topic may change while its replicas run
/// ([`crate::Log::set_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// See [`LogConfig::segment_bytes_max`].
    pub segment_bytes_max: u64,
    /// See [`LogConfig::segment_ms_max`].
    pub segment_ms_max: i64,
    /// See [`LogConfig::retention_bytes`].
    pub retention_bytes: Option<u64>,
    /// See [`LogConfig::retention_ms`].
    pub retention_ms: Option<i64>,
}

/// A log setting is out of its range; nothing was opened or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid log setting {key} = {value}: {allowed}")]
pub struct ConfigError {
    /// The setting's name.
    pub key: &'static str,
    /// The value given.
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

/// Bytes of a segment that hold no payload when it holds one frame: the segment header and one
/// frame header.
pub const SEGMENT_OVERHEAD_BYTES: u64 = (SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64;

impl LogConfig {
    /// The settings a topic may change.
    pub fn limits(&self) -> LogLimits {
        LogLimits {
            segment_bytes_max: self.segment_bytes_max,
            segment_ms_max: self.segment_ms_max,
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
        }
    }

    /// This configuration with `limits` in place of its own.
    pub fn with_limits(self, limits: LogLimits) -> LogConfig {
        LogConfig {
            segment_bytes_max: limits.segment_bytes_max,
            segment_ms_max: limits.segment_ms_max,
            retention_bytes: limits.retention_bytes,
            retention_ms: limits.retention_ms,
            ..self
        }
    }

    /// Checks every setting against its range. A segment holds at least one entry whatever
    /// `segment_bytes_max` says (an entry larger than it gets a segment of its own), so the two
    /// limits are independent; positions in a segment are 32-bit, which bounds both.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, value: &dyn std::fmt::Display, allowed: String| {
            Err(ConfigError {
                key,
                value: value.to_string(),
                allowed,
            })
        };
        let position_max = u64::from(u32::MAX);
        if self.segment_bytes_max <= SEGMENT_OVERHEAD_BYTES || self.segment_bytes_max > position_max
        {
            return bad(
                "segment_bytes_max",
                &self.segment_bytes_max,
                format!("{} to {position_max} bytes", SEGMENT_OVERHEAD_BYTES + 1),
            );
        }
        if self.entry_bytes_max == 0 || self.entry_bytes_max > position_max - SEGMENT_OVERHEAD_BYTES
        {
            return bad(
                "entry_bytes_max",
                &self.entry_bytes_max,
                format!("1 to {} bytes", position_max - SEGMENT_OVERHEAD_BYTES),
            );
        }
        if self.index_bytes_max < 2 * crate::index::SLOT_LEN as u64 {
            return bad(
                "index_bytes_max",
                &self.index_bytes_max,
                format!(
                    "at least {} bytes (two entries)",
                    2 * crate::index::SLOT_LEN
                ),
            );
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes", &0, "at least 1 byte".to_string());
        }
        if self.segment_ms_max <= 0 {
            return bad(
                "segment_ms_max",
                &self.segment_ms_max,
                "at least 1 ms".to_string(),
            );
        }
        if let FsyncPolicy::IntervalMs(0) = self.fsync {
            return bad(
                "fsync",
                &0,
                "\"always\", \"never\" or at least 1 ms".to_string(),
            );
        }
        if let Some(bytes) = self.retention_bytes
            && bytes == 0
        {
            return bad(
                "retention_bytes",
                &bytes,
                "at least 1 byte (none: unlimited)".to_string(),
            );
        }
        if let Some(ms) = self.retention_ms
            && ms <= 0
        {
            return bad(
                "retention_ms",
                &ms,
                "at least 1 ms (none: unlimited)".to_string(),
            );
        }
        if self.decompressed_bytes_max == 0 {
            return bad("decompressed_bytes_max", &0, "at least 1 byte".to_string());
        }
        Ok(())
    }
}
