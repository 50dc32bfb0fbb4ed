//! Arbitrary and corrupted bytes through every reading function: errors, never panics.

#![allow(
    clippy::unwrap_used,
    reason = "tests unwrap; helpers outside #[test] are not exempt"
)]

use bytes::Bytes;
use proptest::prelude::*;
use quipu_record::{
    BatchBuilder, BatchError, BatchHeader, Compression, batches, decode_records, validate_batch,
};

const LIMIT: usize = 1 << 20;

/// Runs every reader over `buf`; any panic fails the test.
fn read_everything(buf: &Bytes) {
    let _ = BatchHeader::parse(buf).map(|header| {
        let _ = (
            header.total_len(),
            header.offset_count(),
            header.compression(),
        );
    });
    let _ = validate_batch(buf, LIMIT);
    let _ = decode_records(buf, LIMIT);
    for batch in batches(buf.clone(), LIMIT).take(1000) {
        let Ok(batch) = batch else { break };
        let _ = validate_batch(&batch, LIMIT);
        let _ = decode_records(&batch, LIMIT);
    }
}

/// Replaces the CRC so that corruption reaches the record decoder instead of stopping at the
/// CRC check.
fn reseal(buf: &mut [u8]) {
    if buf.len() >= 21 {
        let crc = crc32c::crc32c(&buf[21..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

fn valid_batch(codec: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new(3, codec);
    builder.push(1, Some(b"key"), Some(b"value"), &[("header", Some(b"x"))]);
    builder.push(2, None, None, &[]);
    builder.push(
        3,
        Some(b""),
        Some(&[0u8; 300]),
        &[("", None), ("h", Some(b""))],
    );
    builder.build().unwrap().to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        read_everything(&Bytes::from(bytes));
    }

    #[test]
    fn random_bytes_behind_a_plausible_header_never_panic(
        records_count in any::<i32>(),
        attributes in any::<i16>(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut buf = valid_batch(Compression::None)[..61].to_vec();
        buf[21..23].copy_from_slice(&attributes.to_be_bytes());
        buf[57..61].copy_from_slice(&records_count.to_be_bytes());
        buf.extend_from_slice(&body);
        let batch_length = i32::try_from(buf.len() - 12).unwrap();
        buf[8..12].copy_from_slice(&batch_length.to_be_bytes());
        reseal(&mut buf);
        read_everything(&Bytes::from(buf));
    }

    #[test]
    fn corrupted_valid_batches_never_panic(
        codec in proptest::sample::select(Compression::ALL.to_vec()),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        resealed in any::<bool>(),
    ) {
        let mut buf = valid_batch(codec);
        for (index, byte) in &flips {
            let position = index.index(buf.len());
            buf[position] = *byte;
        }
        if resealed {
            reseal(&mut buf);
        }
        read_everything(&Bytes::from(buf));
    }

    #[test]
    fn truncated_valid_batches_are_errors(
        codec in proptest::sample::select(Compression::ALL.to_vec()),
        cut in any::<prop::sample::Index>(),
    ) {
        let buf = valid_batch(codec);
        let cut = cut.index(buf.len());
        let truncated = Bytes::copy_from_slice(&buf[..cut]);
        prop_assert!(validate_batch(&truncated, LIMIT).is_err());
        prop_assert!(decode_records(&truncated, LIMIT).is_err());
        let mut iter = batches(truncated, LIMIT);
        if cut == 0 {
            prop_assert!(iter.next().is_none());
        } else {
            let is_truncated = matches!(iter.next(), Some(Err(BatchError::Truncated { .. })));
            prop_assert!(is_truncated);
        }
    }
}

/// Every single-byte change of a valid batch is caught by the CRC (or an earlier check), except
/// in the fields the CRC deliberately leaves out.
#[test]
fn every_covered_byte_is_protected() {
    for codec in Compression::ALL {
        let good = valid_batch(codec);
        for position in 0..good.len() {
            let mut bad = good.clone();
            bad[position] ^= 0x01;
            let result = validate_batch(&bad, LIMIT);
            match position {
                // base_offset and partition_leader_epoch are outside the CRC by design.
                0..8 | 12..16 => assert!(result.is_ok(), "{codec:?} byte {position}"),
                _ => assert!(result.is_err(), "{codec:?} byte {position}"),
            }
        }
    }
}
