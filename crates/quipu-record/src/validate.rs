//! Whole-batch validation: everything a broker checks before it accepts a produced batch,
//! short of decoding the records.

use bytes::Bytes;

use crate::header::batch_crc;
use crate::{BatchError, BatchHeader, TimestampType, decode_records};

/// What a broker accepts in the records of a produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRules {
    /// The largest records section after decompression, in bytes.
    pub decompressed_bytes_max: usize,
    /// The earliest record timestamp accepted, ms since the Unix epoch (now minus the topic's
    /// `message.timestamp.before.max.ms`).
    pub timestamp_min: i64,
    /// The latest record timestamp accepted (now plus `message.timestamp.after.max.ms`).
    pub timestamp_max: i64,
}

/// Validates the records of a batch that [`validate_batch`] accepted, as Kafka's log validator
/// does for a produce: exactly `records_count` well-formed records fill the (decompressed,
/// bounded) records section; each record's offset delta is its position; every timestamp is
/// within `rules` and the header's `max_timestamp` is the largest of them; and the batch is
/// neither a control batch nor transactional, nor stamped with log-append time (only the broker
/// sets those).
///
/// Decompresses and decodes the whole batch: on an async runtime, call this off the runtime
/// threads for large or compressed batches.
pub fn validate_records(
    batch: &Bytes,
    header: &BatchHeader,
    rules: &RecordRules,
) -> Result<(), BatchError> {
    if header.is_control() {
        return Err(BatchError::NotAllowed("control"));
    }
    if header.is_transactional() {
        return Err(BatchError::NotAllowed("transactional"));
    }
    if header.timestamp_type() == TimestampType::LogAppendTime {
        return Err(BatchError::NotAllowed("log-append-time"));
    }
    let records = decode_records(batch, rules.decompressed_bytes_max)?;
    let mut computed = i64::MIN;
    for (index, record) in records.iter().enumerate() {
        if usize::try_from(record.offset_delta) != Ok(index) {
            return Err(BatchError::OffsetDeltaMismatch {
                index,
                offset_delta: record.offset_delta,
            });
        }
        let timestamp = header
            .base_timestamp
            .checked_add(record.timestamp_delta)
            .ok_or(BatchError::TimestampOverflow { index })?;
        if timestamp < rules.timestamp_min || timestamp > rules.timestamp_max {
            return Err(BatchError::TimestampOutOfRange {
                index,
                timestamp,
                min: rules.timestamp_min,
                max: rules.timestamp_max,
            });
        }
        computed = computed.max(timestamp);
    }
    if computed != header.max_timestamp {
        return Err(BatchError::MaxTimestampMismatch {
            declared: header.max_timestamp,
            computed,
        });
    }
    Ok(())
}

/// Validates that `buf` is exactly one whole RecordBatch v2 and returns its header.
///
/// Checks, in order: at least a header's worth of bytes, magic 2, a batch_length that covers
/// the header, total size (12 + batch_length) at most `max_batch_bytes`, total size equal to
/// `buf.len()`, the CRC-32C over bytes 21.., records_count >= 0, last_offset_delta >= 0,
/// records_count == last_offset_delta + 1 (Kafka requires this of produced batches), and a
/// known compression code. The records themselves are not decoded: see
/// [`crate::decode_records`].
///
/// The CRC runs over the whole batch: on an async runtime, call this off the runtime threads
/// for large batches.
pub fn validate_batch(buf: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total_len = header.total_len();
    if total_len > max_batch_bytes {
        return Err(BatchError::TooLarge {
            len: total_len,
            max: max_batch_bytes,
        });
    }
    if total_len != buf.len() {
        return Err(BatchError::LengthMismatch {
            declared: total_len,
            actual: buf.len(),
        });
    }
    let computed = batch_crc(buf);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.records_count < 0 {
        return Err(BatchError::NegativeCount(header.records_count));
    }
    if header.last_offset_delta < 0 {
        return Err(BatchError::NegativeLastOffsetDelta(
            header.last_offset_delta,
        ));
    }
    if i64::from(header.records_count) != i64::from(header.last_offset_delta) + 1 {
        return Err(BatchError::CountMismatch {
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    header.compression()?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{batch_crc, pos};
    use crate::{BatchBuilder, Compression};

    const LIMIT: usize = 1 << 20;

    fn good_batch() -> Vec<u8> {
        let mut builder = BatchBuilder::new(10, Compression::None);
        builder.push(1, Some(b"key"), Some(b"value"), &[("h", Some(b"v"))]);
        builder.push(2, None, Some(b"second"), &[]);
        builder.build().unwrap().to_vec()
    }

    fn put(buf: &mut [u8], position: usize, bytes: &[u8]) {
        buf[position..position + bytes.len()].copy_from_slice(bytes);
    }

    /// Changes a field covered by the CRC and recomputes the CRC, so that the check under
    /// test is the one that fires.
    fn resealed(position: usize, bytes: &[u8]) -> Vec<u8> {
        let mut buf = good_batch();
        put(&mut buf, position, bytes);
        let crc = batch_crc(&buf);
        put(&mut buf, pos::CRC, &crc.to_be_bytes());
        buf
    }

    #[test]
    fn accepts_a_good_batch() {
        let buf = good_batch();
        let header = validate_batch(&buf, LIMIT).unwrap();
        assert_eq!(header.total_len(), buf.len());
        assert_eq!(header.records_count, 2);
        // The limit is inclusive.
        validate_batch(&buf, buf.len()).unwrap();
    }

    #[test]
    fn each_defect_has_its_own_error() {
        let good = good_batch();
        let len = good.len();

        let truncated_header = validate_batch(&good[..40], LIMIT);
        assert!(
            matches!(
                truncated_header,
                Err(BatchError::Truncated {
                    needed: 61,
                    available: 40
                })
            ),
            "{truncated_header:?}"
        );

        let truncated_records = validate_batch(&good[..len - 1], LIMIT);
        assert!(
            matches!(truncated_records, Err(BatchError::LengthMismatch { declared, actual })
                if declared == len && actual == len - 1),
            "{truncated_records:?}"
        );

        let mut wrong_magic = good.clone();
        wrong_magic[pos::MAGIC] = 1;
        let wrong_magic = validate_batch(&wrong_magic, LIMIT);
        assert!(
            matches!(wrong_magic, Err(BatchError::BadMagic(1))),
            "{wrong_magic:?}"
        );

        let mut absurd_length = good.clone();
        put(
            &mut absurd_length,
            pos::BATCH_LENGTH,
            &i32::MAX.to_be_bytes(),
        );
        let absurd_length = validate_batch(&absurd_length, LIMIT);
        assert!(
            matches!(absurd_length, Err(BatchError::TooLarge { len, max: LIMIT })
                if len == 12 + 0x7fff_ffff),
            "{absurd_length:?}"
        );

        let mut negative_length = good.clone();
        put(
            &mut negative_length,
            pos::BATCH_LENGTH,
            &(-1i32).to_be_bytes(),
        );
        let negative_length = validate_batch(&negative_length, LIMIT);
        assert!(
            matches!(negative_length, Err(BatchError::InvalidBatchLength(-1))),
            "{negative_length:?}"
        );

        let too_large = validate_batch(&good, len - 1);
        assert!(
            matches!(too_large, Err(BatchError::TooLarge { len: l, max }) if l == len && max == len - 1),
            "{too_large:?}"
        );

        let mut flipped = good.clone();
        flipped[len - 3] ^= 0x10;
        let flipped = validate_batch(&flipped, LIMIT);
        assert!(
            matches!(flipped, Err(BatchError::CrcMismatch { stored, computed }) if stored != computed),
            "{flipped:?}"
        );

        let negative_count =
            validate_batch(&resealed(pos::RECORDS_COUNT, &(-2i32).to_be_bytes()), LIMIT);
        assert!(
            matches!(negative_count, Err(BatchError::NegativeCount(-2))),
            "{negative_count:?}"
        );

        let negative_delta = validate_batch(
            &resealed(pos::LAST_OFFSET_DELTA, &(-1i32).to_be_bytes()),
            LIMIT,
        );
        assert!(
            matches!(negative_delta, Err(BatchError::NegativeLastOffsetDelta(-1))),
            "{negative_delta:?}"
        );

        let count_mismatch =
            validate_batch(&resealed(pos::RECORDS_COUNT, &3i32.to_be_bytes()), LIMIT);
        assert!(
            matches!(
                count_mismatch,
                Err(BatchError::CountMismatch {
                    records_count: 3,
                    last_offset_delta: 1
                })
            ),
            "{count_mismatch:?}"
        );

        let unknown_compression =
            validate_batch(&resealed(pos::ATTRIBUTES, &6i16.to_be_bytes()), LIMIT);
        assert!(
            matches!(unknown_compression, Err(BatchError::UnknownCompression(6))),
            "{unknown_compression:?}"
        );
    }

    #[test]
    fn fields_outside_the_crc_do_not_break_it() {
        let mut buf = good_batch();
        crate::set_base_offset(&mut buf, 123_456).unwrap();
        crate::set_partition_leader_epoch(&mut buf, 9).unwrap();
        let header = validate_batch(&buf, LIMIT).unwrap();
        assert_eq!(
            (header.base_offset, header.partition_leader_epoch),
            (123_456, 9)
        );
    }

    const RULES: RecordRules = RecordRules {
        decompressed_bytes_max: LIMIT,
        timestamp_min: i64::MIN,
        timestamp_max: 1_000_000,
    };

    /// Runs both checks, as the produce path does.
    fn produce_check(buf: &[u8], rules: &RecordRules) -> Result<(), BatchError> {
        let header = validate_batch(buf, LIMIT)?;
        validate_records(&Bytes::copy_from_slice(buf), &header, rules)
    }

    /// A batch whose header claims `count` records (last offset delta to match) and holds none.
    fn empty_claiming(count: i32) -> Vec<u8> {
        let good = good_batch();
        let mut buf = good[..crate::BATCH_HEADER_LEN].to_vec();
        let batch_length = i32::try_from(crate::BATCH_HEADER_LEN - 12).unwrap();
        put(&mut buf, pos::BATCH_LENGTH, &batch_length.to_be_bytes());
        put(&mut buf, pos::RECORDS_COUNT, &count.to_be_bytes());
        put(&mut buf, pos::LAST_OFFSET_DELTA, &(count - 1).to_be_bytes());
        let crc = batch_crc(&buf);
        put(&mut buf, pos::CRC, &crc.to_be_bytes());
        buf
    }

    #[test]
    fn a_good_batch_passes_the_record_checks() {
        produce_check(&good_batch(), &RULES).unwrap();
        for compression in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Snappy,
        ] {
            let mut builder = BatchBuilder::new(0, compression);
            for i in 0..100 {
                builder.push(1000 + i, Some(b"k"), Some(&[b'v'; 100]), &[]);
            }
            produce_check(&builder.build().unwrap(), &RULES).unwrap();
        }
    }

    /// The malicious batches of issue 15: each passes the header and CRC checks and is refused
    /// by the record checks, so that it never reaches a log.
    #[test]
    fn batches_whose_records_disagree_with_their_header_are_refused() {
        // Claims five records, holds none: every consumer would fail at its offset forever.
        let five = empty_claiming(5);
        validate_batch(&five, LIMIT).unwrap();
        assert!(matches!(
            produce_check(&five, &RULES),
            Err(BatchError::MissingRecords {
                declared: 5,
                decoded: 0
            })
        ));
        // Two billion offsets in a 61-byte request.
        let huge = empty_claiming(i32::MAX);
        validate_batch(&huge, LIMIT).unwrap();
        assert!(matches!(
            produce_check(&huge, &RULES),
            Err(BatchError::MissingRecords { .. })
        ));
        // max_timestamp = i64::MAX would stop time-based retention for good.
        let far = resealed(pos::MAX_TIMESTAMP, &i64::MAX.to_be_bytes());
        assert!(matches!(
            produce_check(&far, &RULES),
            Err(BatchError::MaxTimestampMismatch {
                declared: i64::MAX,
                computed: 2
            })
        ));
        // Record timestamps beyond message.timestamp.after.max.ms.
        let future = resealed(pos::BASE_TIMESTAMP, &2_000_000i64.to_be_bytes());
        assert!(matches!(
            produce_check(&future, &RULES),
            Err(BatchError::TimestampOutOfRange { index: 0, .. })
        ));
        let late = RecordRules {
            timestamp_min: 5,
            ..RULES
        };
        assert!(matches!(
            produce_check(&good_batch(), &late),
            Err(BatchError::TimestampOutOfRange {
                index: 0,
                timestamp: 1,
                ..
            })
        ));
        // A base timestamp whose deltas overflow.
        let overflow = resealed(pos::BASE_TIMESTAMP, &i64::MAX.to_be_bytes());
        let wide = RecordRules {
            timestamp_max: i64::MAX,
            ..RULES
        };
        assert!(matches!(
            produce_check(&overflow, &wide),
            Err(BatchError::TimestampOverflow { index: 1 })
        ));
        // Control and transactional flags, and log-append time, are the broker's to set.
        for (bit, what) in [
            (0x20i16, "control"),
            (0x10, "transactional"),
            (0x08, "log-append-time"),
        ] {
            let flagged = resealed(pos::ATTRIBUTES, &bit.to_be_bytes());
            assert!(
                matches!(produce_check(&flagged, &RULES), Err(BatchError::NotAllowed(w)) if w == what),
                "{what}"
            );
        }
    }

    #[test]
    fn inner_offsets_must_be_consecutive_from_zero() {
        let mut builder = BatchBuilder::new(0, Compression::None);
        builder.push(1, None, Some(b"a"), &[]);
        builder.push(1, None, Some(b"b"), &[]);
        let mut buf = builder.build().unwrap().to_vec();
        // The second record's offset delta (zigzag varint 1 = 0x02) becomes 0.
        let header_len = crate::BATCH_HEADER_LEN;
        let first_len = usize::from(buf[header_len] / 2) + 1;
        let second = header_len + first_len;
        assert_eq!(
            buf[second + 3],
            0x02,
            "layout: length, attributes, timestamp delta, offset delta"
        );
        buf[second + 3] = 0x00;
        let crc = batch_crc(&buf);
        put(&mut buf, pos::CRC, &crc.to_be_bytes());
        assert!(matches!(
            produce_check(&buf, &RULES),
            Err(BatchError::OffsetDeltaMismatch {
                index: 1,
                offset_delta: 0
            })
        ));
    }
}
