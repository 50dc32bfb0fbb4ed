//! Decoding the records of one batch, decompressing them first if needed.
//!
//! Invariant: memory use is bounded by the caller's `max_decompressed_bytes`: the output of
//! decompression is capped while it is produced, and record vectors are sized by the bytes
//! that remain rather than by counts read from the batch.

use bytes::Bytes;

use crate::header::BATCH_HEADER_LEN;
use crate::varint::Reader;
use crate::{BatchError, BatchHeader, Record};

/// Smallest encoded record: length, attributes, timestamp delta, offset delta, null key, null
/// value and header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;

/// Decodes every record of `batch`, one whole batch that [`crate::validate_batch`] accepted
/// (this function does not check the CRC again).
///
/// `max_decompressed_bytes` bounds the size of the records section after decompression (for
/// an uncompressed batch, the records section as stored); a larger one is
/// [`BatchError::DecompressedTooLarge`], detected without producing more than one byte past
/// the limit. Exactly `records_count` records must fill the section: fewer is
/// [`BatchError::MissingRecords`], leftover bytes are [`BatchError::TrailingBytes`]. Keys,
/// values and header values are zero-copy slices of `batch` or of the decompressed section.
///
/// Decompression and decoding are CPU work proportional to the batch: on an async runtime,
/// call this off the runtime threads.
pub fn decode_records(
    batch: &Bytes,
    max_decompressed_bytes: usize,
) -> Result<Vec<Record>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let total_len = header.total_len();
    if total_len != batch.len() {
        return Err(BatchError::LengthMismatch {
            declared: total_len,
            actual: batch.len(),
        });
    }
    let declared = header.records_count;
    let count = usize::try_from(declared).map_err(|_| BatchError::NegativeCount(declared))?;
    let compression = header.compression()?;
    // `parse` guarantees total_len >= BATCH_HEADER_LEN, and total_len == batch.len().
    let payload = batch.slice(BATCH_HEADER_LEN..);
    let section = compression.decompress(payload, max_decompressed_bytes)?;
    let mut reader = Reader::new(section);
    let mut records = Vec::with_capacity(count.min(reader.remaining() / RECORD_BYTES_MIN));
    while records.len() < count {
        if reader.remaining() == 0 {
            return Err(BatchError::MissingRecords {
                declared,
                decoded: records.len(),
            });
        }
        let record = Record::decode(&mut reader).map_err(|reason| BatchError::CorruptRecord {
            index: records.len(),
            reason,
        })?;
        records.push(record);
    }
    if reader.remaining() != 0 {
        return Err(BatchError::TrailingBytes {
            len: reader.remaining(),
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;
    use crate::header::{batch_crc, pos, set_crc};
    use crate::varint::put_varint;
    use crate::{BatchBuilder, Compression, Header, validate_batch};

    const LIMIT: usize = 1 << 20;

    /// A sealed uncompressed batch whose records section is `section`, declaring `count`.
    fn batch_with_section(count: i32, section: &[u8]) -> Bytes {
        let header = BatchHeader {
            base_offset: 0,
            batch_length: i32::try_from(BATCH_HEADER_LEN - 12 + section.len()).unwrap(),
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count.max(1) - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: count,
        };
        let mut buf = BytesMut::zeroed(BATCH_HEADER_LEN);
        header.write(&mut buf).unwrap();
        buf.put_slice(section);
        let crc = batch_crc(&buf);
        set_crc(&mut buf, crc).unwrap();
        buf.freeze()
    }

    /// A minimal record: no key, the given value, no headers.
    fn record_bytes(offset_delta: i32, value: &[u8]) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.put_u8(0);
        body.put_u8(0);
        put_varint(&mut body, offset_delta);
        put_varint(&mut body, -1);
        put_varint(&mut body, i32::try_from(value.len()).unwrap());
        body.put_slice(value);
        body.put_u8(0);
        let mut out = BytesMut::new();
        put_varint(&mut out, i32::try_from(body.len()).unwrap());
        out.put_slice(&body);
        out.to_vec()
    }

    #[test]
    fn decodes_what_the_builder_built() {
        let mut builder = BatchBuilder::new(100, Compression::Snappy);
        builder.push(
            7,
            Some(b"k"),
            None,
            &[("trace", Some(b"abc")), ("empty", None)],
        );
        builder.push(8, None, Some(b"v"), &[]);
        let batch = builder.build().unwrap();
        let records = decode_records(&batch, LIMIT).unwrap();
        assert_eq!(
            records,
            [
                Record {
                    offset_delta: 0,
                    timestamp_delta: 0,
                    attributes: 0,
                    key: Some(Bytes::from_static(b"k")),
                    value: None,
                    headers: vec![
                        Header {
                            key: "trace".to_owned(),
                            value: Some(Bytes::from_static(b"abc"))
                        },
                        Header {
                            key: "empty".to_owned(),
                            value: None
                        },
                    ],
                },
                Record {
                    offset_delta: 1,
                    timestamp_delta: 1,
                    attributes: 0,
                    key: None,
                    value: Some(Bytes::from_static(b"v")),
                    headers: vec![],
                },
            ]
        );
    }

    #[test]
    fn records_section_must_match_the_declared_count() {
        let one = record_bytes(0, b"a");
        let two = [one.clone(), record_bytes(1, b"b")].concat();

        let exact = batch_with_section(2, &two);
        validate_batch(&exact, LIMIT).unwrap();
        assert_eq!(decode_records(&exact, LIMIT).unwrap().len(), 2);

        let missing = decode_records(&batch_with_section(3, &two), LIMIT);
        assert!(
            matches!(
                missing,
                Err(BatchError::MissingRecords {
                    declared: 3,
                    decoded: 2
                })
            ),
            "{missing:?}"
        );
        let trailing = decode_records(&batch_with_section(1, &two), LIMIT);
        assert!(
            matches!(trailing, Err(BatchError::TrailingBytes { len }) if len == one.len()),
            "{trailing:?}"
        );
        let negative = decode_records(&batch_with_section(-1, &two), LIMIT);
        assert!(
            matches!(negative, Err(BatchError::NegativeCount(-1))),
            "{negative:?}"
        );

        let cut = decode_records(&batch_with_section(2, &two[..two.len() - 1]), LIMIT);
        assert!(
            matches!(cut, Err(BatchError::CorruptRecord { index: 1, .. })),
            "{cut:?}"
        );
    }

    #[test]
    fn huge_declared_count_does_not_allocate_for_it() {
        let result = decode_records(&batch_with_section(i32::MAX, &record_bytes(0, b"a")), LIMIT);
        assert!(
            matches!(
                result,
                Err(BatchError::MissingRecords {
                    declared: i32::MAX,
                    decoded: 1
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn limit_applies_to_the_records_section() {
        let value = vec![7u8; 10_000];
        for codec in Compression::ALL {
            let mut builder = BatchBuilder::new(0, codec);
            builder.push(0, None, Some(&value), &[]);
            let batch = builder.build().unwrap();
            let result = decode_records(&batch, 5_000);
            assert!(
                matches!(result, Err(BatchError::DecompressedTooLarge { max: 5_000 })),
                "{codec:?}: {result:?}"
            );
            assert_eq!(
                decode_records(&batch, 10_100).unwrap().len(),
                1,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn rejects_batches_that_are_not_one_whole_batch() {
        let batch = batch_with_section(1, &record_bytes(0, b"a"));
        let longer = Bytes::from([batch.as_ref(), b"x"].concat());
        assert!(matches!(
            decode_records(&longer, LIMIT),
            Err(BatchError::LengthMismatch { .. })
        ));
        assert!(matches!(
            decode_records(&batch.slice(..60), LIMIT),
            Err(BatchError::Truncated {
                needed: 61,
                available: 60
            })
        ));
        let mut unknown = batch.to_vec();
        unknown[pos::ATTRIBUTES + 1] = 7;
        assert!(matches!(
            decode_records(&Bytes::from(unknown), LIMIT),
            Err(BatchError::UnknownCompression(7))
        ));
    }
}
