//! Appends and reads by index, offset and timestamp; rolling; bad input.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

use bytes::Bytes;
use common::*;
use quipu_record::{BatchHeader, Compression, decode_records};
use quipu_storage::{AppendError, EntryKind, Log, LogConfig, NewEntry, Offset, ReadError};

#[test]
fn offsets_are_assigned_and_batches_rewritten_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let appended = log
        .append(&[
            records(0, 1, 0, 3, 10, 100),
            internal(1, 1, b"membership"),
            records(2, 2, 1, 2, 10, 200),
        ])
        .unwrap();
    assert_eq!(appended.first_index, 0);
    assert_eq!(appended.last_index, 2);
    assert_eq!(appended.base_offset, Offset(0));
    assert_eq!(appended.next_offset, Offset(5));

    let entries = log.read_entries(0, 3, u64::MAX).unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[1].kind, EntryKind::Internal);
    assert_eq!(&entries[1].payload[..], b"membership");
    assert_eq!(entries[1].base_offset, Offset(3));
    assert_eq!(entries[1].record_count, 0);
    let third = BatchHeader::parse(&entries[2].payload).unwrap();
    assert_eq!(third.base_offset, 3, "base offset rewritten");
    assert_eq!(third.partition_leader_epoch, 2, "leader epoch is the term");
    quipu_record::validate_batch(&entries[2].payload, usize::MAX)
        .expect("rewrite keeps the CRC valid");
    // Everything but the two rewritten fields is byte for byte what the producer sent.
    let original = batch(1, 2, 10, 200);
    assert_eq!(entries[2].payload[8..12], original[8..12]);
    assert_eq!(entries[2].payload[16..], original[16..]);
    let values: Vec<Bytes> = decode_records(&entries[2].payload, 1 << 20)
        .unwrap()
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect();
    assert!(values[0].starts_with(b"1:0:"));
}

#[test]
fn reads_by_offset_return_whole_batches_and_respect_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let mut index = 0;
    for tag in 0..40u64 {
        log.append(&[records(index, 1, tag, 5, 30, tag as i64 * 10)])
            .unwrap();
        index += 1;
        if tag % 7 == 0 {
            log.append(&[internal(index, 1, b"blank")]).unwrap();
            index += 1;
        }
    }
    assert!(
        log.segment_count() > 3,
        "small segments rolled: {}",
        log.segment_count()
    );
    assert_eq!(log.next_offset(), Offset(200));

    // From inside a batch: the whole batch holding the offset comes back.
    let got = log.read_records(Offset(12), Offset(200), 1).unwrap();
    assert_eq!(got.len(), 1, "first batch returned even past max_bytes");
    assert_eq!(got[0].base_offset, Offset(10));

    // Everything, across segments, in order, no gaps.
    let all = log.read_records(Offset(0), Offset(200), u64::MAX).unwrap();
    assert_eq!(all.len(), 40);
    for (i, entry) in all.iter().enumerate() {
        assert_eq!(entry.base_offset, Offset(i as u64 * 5));
        assert_eq!(entry.kind, EntryKind::Records);
    }
    // The high watermark bound: no batch reaching it is returned.
    let bounded = log.read_records(Offset(0), Offset(23), u64::MAX).unwrap();
    assert_eq!(bounded.last().unwrap().next_offset(), Offset(20));
    // max_bytes stops before the batch that would exceed it.
    let one_len = all[0].payload.len() as u64;
    assert_eq!(
        log.read_records(Offset(0), Offset(200), 3 * one_len)
            .unwrap()
            .len(),
        3
    );
    // At the end: empty; past it or before the start: an error.
    assert!(
        log.read_records(Offset(200), Offset(200), 100)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        log.read_records(Offset(201), Offset(300), 100),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn reads_by_index_cross_segments_and_honour_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..60u64 {
        log.append(&[internal(i, i / 10, &vec![i as u8; 50 + i as usize])])
            .unwrap();
    }
    let all = log.read_entries(0, 60, u64::MAX).unwrap();
    assert_eq!(
        all.iter().map(|e| e.index).collect::<Vec<_>>(),
        (0..60).collect::<Vec<_>>()
    );
    for entry in &all {
        assert_eq!(entry.payload.len(), 50 + entry.index as usize);
        assert_eq!(entry.term, entry.index / 10);
    }
    let some = log.read_entries(17, 60, 200).unwrap();
    assert_eq!(some.first().unwrap().index, 17);
    assert!(some.iter().map(|e| e.payload.len() as u64).sum::<u64>() <= 200);
    assert!(
        log.read_entries(59, 100, u64::MAX).unwrap().len() == 1,
        "end is clamped to the log end"
    );
    assert!(matches!(
        log.read_entries(61, 70, 10),
        Err(ReadError::IndexOutOfRange { .. })
    ));
    assert_eq!(log.last_term(), 5);
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let config = LogConfig {
        segment_ms_max: 1000,
        clock: clock.clock(),
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    log.append(&[internal(0, 1, b"a")]).unwrap();
    clock.advance(999);
    log.append(&[internal(1, 1, b"b")]).unwrap();
    assert_eq!(log.segment_count(), 1);
    clock.advance(1);
    log.append(&[internal(2, 1, b"c")]).unwrap();
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn timestamp_lookup_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    // Batches of 4 records at timestamps 1000*b + i; one batch out of order.
    for b in 0..30u64 {
        let ts = if b == 20 { 5_000 } else { 1000 * b as i64 };
        let batch = batch_with(b, 4, 20, ts, Compression::Lz4);
        log.append(&[NewEntry::records(b, 1, batch)]).unwrap();
    }
    let end = log.next_offset();
    assert_eq!(log.offset_for_timestamp(0, end).unwrap(), Some(Offset(0)));
    assert_eq!(log.offset_for_timestamp(2, end).unwrap(), Some(Offset(2)));
    assert_eq!(log.offset_for_timestamp(3, end).unwrap(), Some(Offset(3)));
    assert_eq!(
        log.offset_for_timestamp(4, end).unwrap(),
        Some(Offset(4)),
        "next batch starts at 1000"
    );
    assert_eq!(
        log.offset_for_timestamp(15_002, end).unwrap(),
        Some(Offset(15 * 4 + 2))
    );
    assert_eq!(
        log.offset_for_timestamp(29_003, end).unwrap(),
        Some(Offset(29 * 4 + 3))
    );
    assert_eq!(log.offset_for_timestamp(29_004, end).unwrap(), None);
    assert_eq!(
        log.offset_for_timestamp(15_000, Offset(60)).unwrap(),
        None,
        "bounded by the high watermark"
    );
}

#[test]
fn bad_batches_are_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&[records(0, 1, 0, 2, 10, 0)]).unwrap();
    let size = log.size_bytes();
    let good = batch(1, 2, 10, 0);

    let mut bad_crc = good.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let mut negative_count = good.to_vec();
    negative_count[57..61].copy_from_slice(&(-1i32).to_be_bytes());
    let mut absurd_length = good.to_vec();
    absurd_length[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("wrong crc", bad_crc),
        ("truncated header", good[..30].to_vec()),
        ("absurd length", absurd_length),
        ("negative record count", negative_count),
        ("empty", Vec::new()),
    ];
    for (name, bytes) in cases {
        // A good entry first: the whole call must be refused, not just the bad entry.
        let result = log.append(&[
            records(1, 1, 9, 1, 10, 0),
            NewEntry::records(2, 1, Bytes::from(bytes)),
        ]);
        assert!(
            matches!(result, Err(AppendError::InvalidBatch { index: 2, .. })),
            "{name}: {result:?}"
        );
        assert_eq!(log.size_bytes(), size, "{name}: nothing written");
        assert_eq!(log.next_index(), 1);
    }
    assert!(matches!(
        log.append(&[records(5, 1, 0, 1, 1, 0)]),
        Err(AppendError::NotContiguous {
            expected: 1,
            got: 5
        })
    ));
    assert!(matches!(
        log.append(&[records(1, 0, 0, 1, 1, 0)]),
        Err(AppendError::TermRegression { .. })
    ));
    assert!(matches!(log.append(&[]), Err(AppendError::Empty)));
    let too_big = NewEntry::internal(1, 1, Bytes::from(vec![0u8; 2049]));
    assert!(matches!(
        log.append(&[too_big]),
        Err(AppendError::TooLarge { .. })
    ));
    assert!(matches!(
        log.append(&[records(1, u64::from(u32::MAX), 0, 1, 1, 0)]),
        Err(AppendError::TermTooLarge { .. })
    ));
    // The log is not poisoned by refused input.
    log.append(&[records(1, 1, 2, 1, 1, 0)]).unwrap();
}

#[test]
fn a_reader_keeps_its_bytes_across_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..5 {
        log.append(&[records(i, 1, i, 2, 40, 0)]).unwrap();
    }
    let held = log.read_entries(3, 5, u64::MAX).unwrap();
    let copy: Vec<Vec<u8>> = held.iter().map(|e| e.payload.to_vec()).collect();
    log.truncate_suffix(2).unwrap();
    log.append(&[records(3, 2, 100, 3, 40, 0), records(4, 2, 101, 1, 40, 0)])
        .unwrap();
    for (entry, bytes) in held.iter().zip(&copy) {
        assert_eq!(
            &entry.payload[..],
            &bytes[..],
            "a held payload changed under its reader"
        );
    }
    let now = log.read_entries(3, 5, u64::MAX).unwrap();
    assert_eq!(now[0].term, 2);
    assert_eq!(now[0].record_count, 3);
    assert_eq!(log.next_offset(), Offset(6 + 3 + 1));
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.read_entries(3, 5, u64::MAX).unwrap(), now);
}

#[test]
fn clean_close_and_reopen_keep_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..100u64 {
        log.append(&[records(i, 1 + i / 30, i, 3, 25, i as i64)])
            .unwrap();
    }
    log.sync().unwrap();
    let before = log.read_entries(0, 100, u64::MAX).unwrap();
    log.close().unwrap();
    assert!(dir.path().join("clean_shutdown").exists());
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert!(
        !dir.path().join("clean_shutdown").exists(),
        "the marker is consumed on open"
    );
    assert_eq!(log.read_entries(0, 100, u64::MAX).unwrap(), before);
    assert_eq!(log.next_offset(), Offset(300));
    assert_eq!(log.last_term(), 4);
    log.append(&[records(100, 4, 100, 1, 1, 0)]).unwrap();
}

/// Batches back to back in one entry.
fn joined(parts: &[Bytes]) -> Bytes {
    Bytes::from(parts.concat())
}

#[test]
fn an_entry_of_several_batches_gets_consecutive_offsets_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    // Timestamps out of order across the batches: the frame keeps the largest.
    let parts = [
        batch(1, 3, 10, 500),
        batch(2, 1, 10, 900),
        batch(3, 2, 10, 100),
    ];
    let appended = log
        .append(&[
            records(0, 1, 0, 2, 10, 50),
            NewEntry::records(1, 4, joined(&parts)),
            records(2, 4, 9, 1, 10, 60),
        ])
        .unwrap();
    assert_eq!(appended.next_offset, Offset(2 + 6 + 1));

    let entry = log.read_entries(1, 2, u64::MAX).unwrap().remove(0);
    assert_eq!(entry.base_offset, Offset(2));
    assert_eq!(entry.record_count, 6);
    assert_eq!(entry.max_timestamp, 900);
    let mut expected_base = 2;
    let split: Vec<Bytes> = quipu_record::batches(entry.payload.clone(), usize::MAX)
        .map(Result::unwrap)
        .collect();
    assert_eq!(split.len(), 3);
    for (stored, sent) in split.iter().zip(&parts) {
        let header = quipu_record::validate_batch(stored, usize::MAX)
            .expect("each rewritten batch keeps a valid CRC");
        assert_eq!(
            header.base_offset, expected_base,
            "each batch's own base offset"
        );
        assert_eq!(header.partition_leader_epoch, 4);
        assert_eq!(
            stored[16..],
            sent[16..],
            "the rest is as the producer sent it"
        );
        expected_base += header.offset_count() as i64;
    }
    assert_eq!(quipu_record::offset_count_of(&entry.payload).unwrap(), 6);

    // A read from inside the entry starts at the batch holding the offset (as Kafka returns
    // the batch holding it first); the next entry follows whole.
    let got = log.read_records(Offset(6), Offset(9), u64::MAX).unwrap();
    assert_eq!(
        (
            got[0].base_offset,
            got[0].record_count,
            got[0].next_offset()
        ),
        (Offset(6), 2, Offset(8))
    );
    assert_eq!(got[0].payload, split[2]);
    assert_eq!(got[1].base_offset, Offset(8));
    let got = log.read_records(Offset(4), Offset(9), u64::MAX).unwrap();
    assert_eq!((got[0].base_offset, got[0].record_count), (Offset(2), 6));
    let got = log.read_records(Offset(5), Offset(9), u64::MAX).unwrap();
    assert_eq!(got[0].payload.len(), split[1].len() + split[2].len());
    // Time lookups look at each batch in turn, not only the first.
    let end = log.next_offset();
    assert_eq!(log.offset_for_timestamp(502, end).unwrap(), Some(Offset(4)));
    assert_eq!(log.offset_for_timestamp(503, end).unwrap(), Some(Offset(5)));
    // The earliest offset at or after the time: the first batch's, though a later batch of the
    // entry holds an earlier timestamp.
    assert_eq!(log.offset_for_timestamp(101, end).unwrap(), Some(Offset(2)));
    assert_eq!(
        log.max_timestamp_offset(end).unwrap(),
        Some((Offset(5), 900))
    );

    // Reopened (no clean marker: every frame verified), the entry reads the same.
    let payload = entry.payload.to_vec();
    drop((entry, got, split, log));
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_offset(), Offset(9));
    let again = log.read_entries(1, 2, u64::MAX).unwrap();
    assert_eq!(again[0].payload, payload);
}

#[test]
fn an_entry_with_one_bad_batch_among_good_ones_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let good = batch(1, 2, 10, 100);
    let mut bad = batch(2, 2, 10, 100).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let cases = [
        // A later batch fails its CRC.
        joined(&[good.clone(), Bytes::from(bad)]),
        // A later batch is cut short.
        joined(&[good.clone(), good.slice(..good.len() - 3)]),
        // Trailing bytes too few for a batch.
        joined(&[good.clone(), Bytes::from_static(b"xyz")]),
    ];
    for payload in cases {
        let error = log.append(&[NewEntry::records(0, 1, payload)]).unwrap_err();
        assert!(
            matches!(error, AppendError::InvalidBatch { index: 0, .. }),
            "{error:?}"
        );
        assert_eq!(log.next_offset(), Offset(0), "nothing written");
        assert_eq!(log.next_index(), 0);
    }
    let error = log
        .append(&[NewEntry::records(0, 1, Bytes::new())])
        .unwrap_err();
    assert!(
        matches!(error, AppendError::InvalidBatch { .. }),
        "{error:?}"
    );
    // The log still takes good entries.
    log.append(&[NewEntry::records(0, 1, joined(&[good.clone(), good]))])
        .unwrap();
    assert_eq!(log.next_offset(), Offset(4));
}

/// An active segment preallocates nothing before its first append, then grows in steps of what
/// it already holds past its header, from 64 KiB (or `preallocate_bytes` if smaller) up to
/// `preallocate_bytes`, and at least to the end of what was written: a node with thousands of
/// quiet partitions does not hold `preallocate_bytes` of zeros for each (1,824 empty partitions
/// held 29 GB with one whole 16 MiB step at creation). The data reads back, before and after a
/// reopen.
#[test]
fn preallocation_starts_at_the_first_append_and_doubles_up_to_its_step() {
    const KIB: u64 = 1024;
    let header = quipu_storage::SEGMENT_HEADER_LEN as u64;
    // (preallocate_bytes, value bytes of each entry, the file's lengths past its header in turn)
    let cases: [(u64, &[usize], &[u64]); 3] = [
        // 1 MiB steps, 400 entries of about 8 KiB: doubling from 64 KiB, then 1 MiB at a time.
        (
            1024 * KIB,
            &[8000; 400],
            &[64, 128, 256, 512, 1024, 2048, 3072, 4096],
        ),
        // A step below 64 KiB: every step is that step.
        (
            16 * KIB,
            &[4000; 40],
            &[16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192],
        ),
        // A first entry larger than the first step grows the file to the entry's end (not a
        // step past it); the next step doubles what the file then holds.
        (1024 * KIB, &[200_000, 100], &[]),
    ];
    for (preallocate_bytes, values, lengths_kib) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = || LogConfig {
            preallocate_bytes,
            fsync: quipu_storage::FsyncPolicy::Never,
            ..LogConfig::default()
        };
        let log_len = || {
            let files = files_with_extension(dir.path(), "log");
            assert_eq!(files.len(), 1, "{files:?}");
            std::fs::metadata(&files[0]).unwrap().len()
        };
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(
            log_len(),
            header,
            "a segment with no entry reserves nothing"
        );
        let mut lengths = Vec::new();
        for (i, value_len) in values.iter().enumerate() {
            let i = i as u64;
            log.append(&[records(i, 1, i, 1, *value_len, 0)]).unwrap();
            let len = log_len() - header;
            if lengths.last() != Some(&len) {
                lengths.push(len);
            }
        }
        if lengths_kib.is_empty() {
            let (first, second) = (lengths[0], lengths[1]);
            assert!(
                (200_000..200_000 + KIB).contains(&first),
                "grown to the first entry's end: {lengths:?}"
            );
            assert_eq!(second, 2 * first, "{lengths:?}");
        } else {
            let wanted: Vec<u64> = lengths_kib.iter().map(|k| k * KIB).collect();
            // The last step depends on the frames' exact sizes: the steps before it do not.
            assert!(
                lengths.len() >= wanted.len() - 2 && wanted.starts_with(&lengths),
                "preallocate_bytes {preallocate_bytes}: {lengths:?}"
            );
        }
        let count = values.len() as u64;
        let before = log.read_entries(0, count, u64::MAX).unwrap();
        assert_eq!(before.len() as u64, count);
        log.close().unwrap();
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(log.read_entries(0, count, u64::MAX).unwrap(), before);
        log.append(&[records(count, 1, count, 1, 100, 0)]).unwrap();
    }
}
