//! Error enums, one per family of operations.

use std::path::PathBuf;

use quipu_record::BatchError;

/// Opening or recovering a log failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A setting is out of its range.
    #[error("invalid log config")]
    Config(#[from] crate::config::ConfigError),
    /// A file operation failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process (or another `Log` in this one) has the directory open.
    #[error("log directory {dir} is in use by another log")]
    Locked {
        /// The log directory.
        dir: PathBuf,
        /// The `flock` failure.
        #[source]
        source: std::io::Error,
    },
    /// A sealed segment (or a segment header) is damaged: the replicated layer must repair this
    /// replica from a peer. Never skipped silently.
    #[error("corrupt segment {path} at position {position}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the damage.
        position: u64,
        /// What was found.
        reason: String,
    },
    /// A failed sync or write poisoned this log earlier (in this process, or in one before it on
    /// the same boot), and the entries it left unconfirmed could not be cut (the next open tries
    /// again).
    #[error("cannot cut the entries a failed sync left unconfirmed in {dir}")]
    UnsyncedTail {
        /// The log directory.
        dir: PathBuf,
        /// Why the truncation failed.
        #[source]
        source: Box<TruncateError>,
    },
}

/// An append was refused or failed. When refused (anything but `Io` and `Poisoned`), nothing was
/// written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The call carried no entries.
    #[error("append of no entries")]
    Empty,
    /// An entry's index is not the log's next index.
    #[error("entry index {got} is not the next index {expected}")]
    NotContiguous {
        /// The next index of the log.
        expected: u64,
        /// The index the entry carried.
        got: u64,
    },
    /// An entry's term is lower than the previous entry's.
    #[error("entry {index} has term {term}, lower than the previous term {last_term}")]
    TermRegression {
        /// The entry's index.
        index: u64,
        /// The entry's term.
        term: u64,
        /// The previous entry's term.
        last_term: u64,
    },
    /// A record entry's term does not fit Kafka's 32-bit partition leader epoch.
    #[error("entry {index} has term {term}, beyond the largest leader epoch")]
    TermTooLarge {
        /// The entry's index.
        index: u64,
        /// The entry's term.
        term: u64,
    },
    /// An entry's payload is larger than `entry_bytes_max`.
    #[error("entry {index} has {len} bytes, more than entry_bytes_max {max}")]
    TooLarge {
        /// The entry's index.
        index: u64,
        /// The payload length.
        len: usize,
        /// The configured maximum.
        max: u64,
    },
    /// A record entry's payload is not one valid RecordBatch v2.
    #[error("entry {index} is not a valid record batch")]
    InvalidBatch {
        /// The entry's index.
        index: u64,
        /// What is wrong with the batch.
        #[source]
        source: BatchError,
    },
    /// Offsets would overflow.
    #[error("entry {index} would overflow the offset space")]
    OffsetOverflow {
        /// The entry's index.
        index: u64,
    },
    /// The log failed an earlier write or sync and refuses all work until it is reopened.
    #[error("log {dir} is poisoned by an earlier failure: {cause}")]
    Poisoned {
        /// The log directory.
        dir: PathBuf,
        /// The failure that poisoned it.
        cause: String,
    },
    /// A file operation failed; the log is now poisoned.
    #[error("i/o error on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The index lies before the first entry still held (purged) or past the log end.
    #[error("index {requested} is outside the log [{first}, {next})")]
    IndexOutOfRange {
        /// The requested index.
        requested: u64,
        /// The first index held.
        first: u64,
        /// The next index to be appended.
        next: u64,
    },
    /// The offset lies before the log start offset or past the log end offset.
    #[error("offset {requested} is outside the log [{start}, {end}]")]
    OffsetOutOfRange {
        /// The requested offset.
        requested: u64,
        /// The log start offset.
        start: u64,
        /// The log end offset.
        end: u64,
    },
    /// Stored bytes failed verification: the read returns an error, never the bad bytes.
    #[error("corrupt segment {path} at position {position}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the damage.
        position: u64,
        /// What was found.
        reason: String,
    },
    /// A stored batch could not be decoded for a timestamp lookup.
    #[error("cannot decode the batch at offset {offset}")]
    Batch {
        /// The batch's base offset.
        offset: u64,
        /// The decoding failure.
        #[source]
        source: BatchError,
    },
    /// The log failed an earlier write or sync and refuses all work until it is reopened.
    #[error("log {dir} is poisoned by an earlier failure: {cause}")]
    Poisoned {
        /// The log directory.
        dir: PathBuf,
        /// The failure that poisoned it.
        cause: String,
    },
}

/// Making appended entries durable failed; the log is poisoned.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The sync itself failed.
    #[error("fsync of {path} failed")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log failed an earlier write or sync and refuses all work until it is reopened.
    #[error("log {dir} is poisoned by an earlier failure: {cause}")]
    Poisoned {
        /// The log directory.
        dir: PathBuf,
        /// The failure that poisoned it.
        cause: String,
    },
}

/// Removing entries (truncate, purge, reset, close) failed.
#[derive(Debug, thiserror::Error)]
pub enum TruncateError {
    /// Truncation would remove entries before the first one held.
    #[error("cannot truncate to next index {requested}: the log starts at {first}")]
    BeforeStart {
        /// The requested next index.
        requested: u64,
        /// The first index held.
        first: u64,
    },
    /// A file operation failed; the log is now poisoned.
    #[error("i/o error on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A segment being cut is damaged.
    #[error("corrupt segment {path} at position {position}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the damage.
        position: u64,
        /// What was found.
        reason: String,
    },
    /// The log failed an earlier write or sync and refuses all work until it is reopened.
    #[error("log {dir} is poisoned by an earlier failure: {cause}")]
    Poisoned {
        /// The log directory.
        dir: PathBuf,
        /// The failure that poisoned it.
        cause: String,
    },
}

/// Internal error carrying what every public family can express; converted at the API edge.
#[derive(Debug)]
pub(crate) enum Failure {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
}

impl Failure {
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Failure + '_ {
        move |source| Failure::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Failure::Io { path, source } => format!("i/o error on {}: {source}", path.display()),
            Failure::Corrupt {
                path,
                position,
                reason,
            } => format!("corrupt {} at {position}: {reason}", path.display()),
        }
    }
}

impl From<Failure> for OpenError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Io { path, source } => OpenError::Io { path, source },
            Failure::Corrupt {
                path,
                position,
                reason,
            } => OpenError::Corrupt {
                path,
                position,
                reason,
            },
        }
    }
}

impl From<Failure> for ReadError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Io { path, source } => ReadError::Corrupt {
                path,
                position: 0,
                reason: source.to_string(),
            },
            Failure::Corrupt {
                path,
                position,
                reason,
            } => ReadError::Corrupt {
                path,
                position,
                reason,
            },
        }
    }
}

impl From<Failure> for TruncateError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Io { path, source } => TruncateError::Io { path, source },
            Failure::Corrupt {
                path,
                position,
                reason,
            } => TruncateError::Corrupt {
                path,
                position,
                reason,
            },
        }
    }
}

impl From<Failure> for AppendError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Io { path, source } => AppendError::Io { path, source },
            Failure::Corrupt {
                path,
                position,
                reason,
            } => AppendError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("corrupt at {position}: {reason}"),
                ),
            },
        }
    }
}
