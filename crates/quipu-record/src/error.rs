//! The one error type of this crate: everything that can be wrong with a batch's bytes, plus
//! the few ways building a batch can fail.

use crate::Compression;

/// A boxed cause from a compression codec.
pub type CodecError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a record batch could not be parsed, validated, decoded or built.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The buffer ends before the structure being read does.
    #[error("batch truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes the buffer holds.
        available: usize,
    },
    /// The magic byte is not 2; only RecordBatch v2 is supported.
    #[error("unsupported batch magic {0}, expected 2")]
    BadMagic(i8),
    /// The batch_length field is smaller than the rest of a batch header.
    #[error("invalid batch length field {0}")]
    InvalidBatchLength(i32),
    /// The batch is larger than the configured maximum.
    #[error("batch of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Total batch size in bytes (12 + batch_length).
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The batch_length field disagrees with the size of the buffer holding the batch.
    #[error("batch length field says {declared} bytes but the buffer holds {actual}")]
    LengthMismatch {
        /// Total batch size in bytes according to batch_length (12 + batch_length).
        declared: usize,
        /// Size of the buffer.
        actual: usize,
    },
    /// The stored CRC-32C does not match the batch contents.
    #[error("batch crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the bytes from attributes to the end of the batch.
        computed: u32,
    },
    /// The records_count field is negative.
    #[error("negative records count {0}")]
    NegativeCount(i32),
    /// The last_offset_delta field is negative.
    #[error("negative last offset delta {0}")]
    NegativeLastOffsetDelta(i32),
    /// records_count is not last_offset_delta + 1, as Kafka requires of produced batches.
    #[error("records count {records_count} does not match last offset delta {last_offset_delta}")]
    CountMismatch {
        /// The records_count field.
        records_count: i32,
        /// The last_offset_delta field.
        last_offset_delta: i32,
    },
    /// The compression bits of the attributes name no known codec.
    #[error("unknown compression code {0}")]
    UnknownCompression(i16),
    /// Compressing the records of a new batch failed.
    #[error("{codec:?} compression failed")]
    Compress {
        /// The codec that failed.
        codec: Compression,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// Decompressing the records of a batch failed.
    #[error("{codec:?} decompression failed")]
    Decompress {
        /// The codec that failed.
        codec: Compression,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// The records decompress to more bytes than the configured maximum.
    #[error("records decompress to more than {max} bytes")]
    DecompressedTooLarge {
        /// The configured maximum.
        max: usize,
    },
    /// The records section ends before records_count records were read.
    #[error("batch declares {declared} records but holds only {decoded}")]
    MissingRecords {
        /// The records_count field.
        declared: i32,
        /// Records decoded before the records section ended.
        decoded: usize,
    },
    /// Bytes remain in the records section after records_count records were read.
    #[error("{len} bytes left over after the last declared record")]
    TrailingBytes {
        /// Bytes left over.
        len: usize,
    },
    /// One record inside the batch is malformed.
    #[error("corrupt record {index}: {reason}")]
    CorruptRecord {
        /// Position of the record in the batch, from 0.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A record's offset delta is not its position in the batch (Kafka requires consecutive
    /// inner offsets from 0).
    #[error("record {index} has offset delta {offset_delta}, expected {index}")]
    OffsetDeltaMismatch {
        /// Position of the record in the batch, from 0.
        index: usize,
        /// Its offset delta.
        offset_delta: i32,
    },
    /// A record's timestamp (base timestamp plus delta) overflows.
    #[error("record {index}'s timestamp overflows")]
    TimestampOverflow {
        /// Position of the record in the batch, from 0.
        index: usize,
    },
    /// The header's max_timestamp is not the largest record timestamp.
    #[error("batch declares max timestamp {declared} but its records' largest is {computed}")]
    MaxTimestampMismatch {
        /// The max_timestamp field.
        declared: i64,
        /// The largest record timestamp.
        computed: i64,
    },
    /// A record's timestamp is outside the topic's `message.timestamp.*` bounds.
    #[error("record {index} has timestamp {timestamp}, outside the accepted {min}..={max}")]
    TimestampOutOfRange {
        /// Position of the record in the batch, from 0.
        index: usize,
        /// Its timestamp, ms since the Unix epoch.
        timestamp: i64,
        /// The earliest accepted timestamp.
        min: i64,
        /// The latest accepted timestamp.
        max: i64,
    },
    /// A producer sent a batch with a flag only the broker may set or that needs a feature not
    /// implemented (control batches, transactions, log-append time).
    #[error("producers may not send {0} batches")]
    NotAllowed(&'static str),
    /// A batch builder had no records to build from.
    #[error("cannot build a batch without records")]
    Empty,
    /// A new batch would hold more records than an i32 count can describe.
    #[error("too many records for one batch: {0}")]
    TooManyRecords(usize),
}
