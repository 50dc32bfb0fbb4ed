//! Codec for Kafka's RecordBatch v2 (magic 2), the format of record batches on the wire and
//! on disk, shared by Quipu's storage engine, broker, client and tests.
//!
//! - [`BatchHeader`] parses the fixed 61-byte header; [`validate_batch`] checks that a buffer
//!   is exactly one sound batch (lengths, magic, CRC-32C, counts, compression code) without
//!   decoding its records.
//! - [`set_base_offset`] and [`set_partition_leader_epoch`] rewrite the two fields a leader
//!   assigns on append; both lie outside the CRC.
//! - [`batches`] splits a produce or fetch payload into zero-copy per-batch [`bytes::Bytes`].
//! - [`decode_records`] decompresses (gzip, snappy, lz4, zstd) within a size limit and decodes
//!   the [`Record`]s of one batch.
//! - [`BatchBuilder`] encodes records into a batch, as a producer does.
//!
//! Every function that reads bytes treats them as untrusted: lengths are checked against the
//! bytes that remain and against caller-given limits before anything is allocated, and any
//! input yields a [`BatchError`] rather than a panic.
//!
//! Deliberately not here: the legacy message formats (magic 0 and 1), rewriting fields
//! covered by the CRC (log-append time, compaction), interpreting control records, Kafka
//! request and response framing, and any I/O or async code.

mod builder;
mod compression;
mod decode;
mod error;
mod header;
mod iter;
mod record;
mod timestamp_type;
mod validate;
mod varint;

pub use builder::BatchBuilder;
pub use compression::Compression;
pub use decode::decode_records;
pub use error::{BatchError, CodecError};
pub use header::{
    BATCH_HEADER_LEN, BatchHeader, MAGIC_V2, add_sequence, set_base_offset, set_log_append_time,
    set_partition_leader_epoch, set_producer,
};
pub use iter::{BatchIter, BatchRanges, batch_ranges, batches, offset_count_of};
pub use record::{Header, Record};
pub use timestamp_type::TimestampType;
pub use validate::{RecordRules, validate_batch, validate_records};
