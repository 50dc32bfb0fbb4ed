//! Whole-batch validation: everything a broker checks before it accepts a produced batch,
//! short of decoding the records.

use crate::header::batch_crc;
use crate::{BatchError, BatchHeader};

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
}
