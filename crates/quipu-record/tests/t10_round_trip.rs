//! Round trips through the public API: build, validate, decode, for random records and every
//! codec.

#![allow(
    clippy::unwrap_used,
    reason = "tests unwrap; helpers outside #[test] are not exempt"
)]

use bytes::Bytes;
use proptest::prelude::*;
use quipu_record::{
    BatchBuilder, BatchHeader, Compression, Header, Record, TimestampType, batches, decode_records,
    set_base_offset, set_partition_leader_epoch, validate_batch,
};

const LIMIT: usize = 4 << 20;

/// What a producer hands the builder for one record.
#[derive(Debug, Clone)]
struct Input {
    timestamp_ms: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn input() -> impl Strategy<Value = Input> {
    let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64));
    let header = (".{0,8}", bytes());
    (
        prop_oneof![any::<i64>(), 1_600_000_000_000i64..1_800_000_000_000],
        bytes(),
        bytes(),
        proptest::collection::vec(header, 0..4),
    )
        .prop_map(|(timestamp_ms, key, value, headers)| Input {
            timestamp_ms,
            key,
            value,
            headers,
        })
}

fn compression() -> impl Strategy<Value = Compression> {
    proptest::sample::select(Compression::ALL.to_vec())
}

fn build(base_offset: i64, codec: Compression, inputs: &[Input]) -> Bytes {
    let mut builder = BatchBuilder::new(base_offset, codec);
    for input in inputs {
        let headers: Vec<(&str, Option<&[u8]>)> = input
            .headers
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_deref()))
            .collect();
        builder.push(
            input.timestamp_ms,
            input.key.as_deref(),
            input.value.as_deref(),
            &headers,
        );
    }
    assert_eq!(builder.len(), inputs.len());
    builder.build().unwrap()
}

fn assert_matches_inputs(header: &BatchHeader, records: &[Record], inputs: &[Input]) {
    assert_eq!(records.len(), inputs.len());
    for ((record, input), offset) in records.iter().zip(inputs).zip(header.base_offset..) {
        assert_eq!(record.offset(header.base_offset), offset);
        assert_eq!(record.timestamp(header.base_timestamp), input.timestamp_ms);
        assert_eq!(record.attributes, 0);
        assert_eq!(record.key.as_deref(), input.key.as_deref());
        assert_eq!(record.value.as_deref(), input.value.as_deref());
        let expected: Vec<Header> = input
            .headers
            .iter()
            .map(|(key, value)| Header {
                key: key.clone(),
                value: value.clone().map(Bytes::from),
            })
            .collect();
        assert_eq!(record.headers, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn build_validate_decode_round_trips(
        base_offset in any::<i64>(),
        codec in compression(),
        inputs in proptest::collection::vec(input(), 1..40),
    ) {
        let batch = build(base_offset, codec, &inputs);
        let header = validate_batch(&batch, LIMIT).unwrap();
        prop_assert_eq!(header.base_offset, base_offset);
        prop_assert_eq!(header.compression().unwrap(), codec);
        prop_assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        prop_assert_eq!(header.offset_count(), inputs.len() as u64);
        prop_assert_eq!(header.base_timestamp, inputs[0].timestamp_ms);
        let max_timestamp = inputs.iter().map(|input| input.timestamp_ms).max().unwrap();
        prop_assert_eq!(header.max_timestamp, max_timestamp);
        let records = decode_records(&batch, LIMIT).unwrap();
        assert_matches_inputs(&header, &records, &inputs);
    }

    #[test]
    fn leader_rewrites_keep_the_batch_valid(
        codec in compression(),
        inputs in proptest::collection::vec(input(), 1..10),
        base_offset in any::<i64>(),
        epoch in any::<i32>(),
    ) {
        let mut buf = build(0, codec, &inputs).to_vec();
        let before = validate_batch(&buf, LIMIT).unwrap();
        set_base_offset(&mut buf, base_offset).unwrap();
        set_partition_leader_epoch(&mut buf, epoch).unwrap();
        let after = validate_batch(&buf, LIMIT).unwrap();
        prop_assert_eq!(after.base_offset, base_offset);
        prop_assert_eq!(after.partition_leader_epoch, epoch);
        prop_assert_eq!(after.crc, before.crc);
        let records = decode_records(&Bytes::from(buf), LIMIT).unwrap();
        assert_matches_inputs(&after, &records, &inputs);
    }

    #[test]
    fn concatenated_batches_split_back_apart(
        groups in proptest::collection::vec(
            (compression(), proptest::collection::vec(input(), 1..5)),
            1..6,
        ),
    ) {
        let mut next_offset = 0i64;
        let mut built = Vec::new();
        for (codec, inputs) in &groups {
            built.push(build(next_offset, *codec, inputs));
            next_offset += inputs.len() as i64;
        }
        let payload = Bytes::from(built.concat());
        let split: Vec<Bytes> = batches(payload, LIMIT).map(Result::unwrap).collect();
        prop_assert_eq!(&split, &built);
        for (batch, (_, inputs)) in split.iter().zip(&groups) {
            let header = validate_batch(batch, LIMIT).unwrap();
            assert_matches_inputs(&header, &decode_records(batch, LIMIT).unwrap(), inputs);
        }
    }
}
