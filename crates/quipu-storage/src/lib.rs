//! Quipu's storage engine: one append-only log per partition replica, made of segment files.
//!
//! A [`Log`] stores entries at dense Raft indexes. Record entries carry one Kafka RecordBatch v2
//! each, kept byte for byte except for the base offset and partition leader epoch the log
//! assigns; internal entries carry opaque bytes of the layer above. Each segment is a data file of
//! CRC-framed entries plus a sparse offset index and a time index, both memory-mapped. Reads hand
//! out [`bytes::Bytes`] that point into the segment's map, with no copy.
//!
//! Durability follows [`FsyncPolicy`]: with `always`, concurrent appends share one `fdatasync`
//! (group commit) through [`Log::sync_to`]; logs opened with a [`SharedSync`] share syncs with
//! the other logs of their filesystem (one `syncfs` for all the logs waiting at once). Opening a log after a crash verifies the last
//! segment frame by frame and cuts a torn tail; a damaged sealed segment is an error, never
//! skipped.
//!
//! The engine is synchronous and knows nothing of Raft, Kafka's network protocol, tokio or
//! sockets; it never panics on file contents. Byte layouts: `docs/format/segment.md`.
//!
//! [`write_state_file`] and [`read_state_file`] keep small state (a Raft vote, a snapshot of a
//! small state machine) in files replaced atomically.
//!
//! A [`MarkFile`] holds one number, rewritten in place and never synced: a lower bound of how far
//! something durable got, for detecting data lost after it was made durable (and, for a log a
//! failed sync poisoned, where the entries its next open cuts begin).
//!
//! With the `fault-injection` feature, [`fault`] simulates power loss for tests.

mod config;
mod deleter;
mod entry;
mod error;
pub mod fault;
mod frame;
mod index;
mod io;
mod log;
mod mark;
mod marker;
mod mmap;
mod recycle;
mod segment;
mod shared_sync;
mod state_file;
mod suspect;

pub use config::{
    Clock, ConfigError, FsyncPolicy, LogConfig, LogLimits, SEGMENT_OVERHEAD_BYTES, system_clock,
};
pub use deleter::wait_for_deletions;
pub use entry::{Entry, EntryKind, NewEntry, Offset};
pub use error::{AppendError, OpenError, ReadError, SyncError, TruncateError};
pub use frame::{FORMAT_VERSION, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
pub use log::{Appended, Log, Purged};
pub use mark::{MARK_LEN, MarkFile};
pub use shared_sync::{SharedSync, SharedSyncError};
pub use state_file::{StateFileError, read_state_file, write_state_file};
