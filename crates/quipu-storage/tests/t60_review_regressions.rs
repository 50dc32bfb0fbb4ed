//! Regression tests for defects found in review of the storage engine; each test names its bug.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

use std::sync::Arc;

use common::*;
use quipu_record::{BatchBuilder, Compression, decode_records};
use quipu_storage::fault::{PowerLoss, fail_next_sync, power_loss};
use quipu_storage::{FsyncPolicy, Log, LogConfig, NewEntry, Offset, OpenError, SyncError};

/// Bug: after a failed fdatasync, a concurrent waiter could start its own fdatasync, which Linux
/// reports as a success, and report lost data as durable. Twice: a waiter woken by the failure
/// went on to sync, and (found by this test failing once in CI) a waiter that took its ticket
/// just before the failure started a sync just after it. The second is a race of a few
/// instructions, so the test runs many rounds of four threads released at once.
#[test]
fn a_writeback_error_is_never_followed_by_a_successful_sync() {
    for round in 0..300 {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), small_config()).unwrap());
        log.append(&[records(0, 1, 0, 2, 10, 0)]).unwrap();
        fail_next_sync(dir.path());
        let start = std::sync::Barrier::new(4);
        let results: Vec<Result<(), SyncError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        log.sync_to(1)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            results.iter().all(Result::is_err),
            "round {round}: {results:?}"
        );
        assert_eq!(
            results
                .iter()
                .filter(|r| matches!(r, Err(SyncError::Io { .. })))
                .count(),
            1,
            "round {round}"
        );
        assert!(
            log.sync_to(1).is_err(),
            "round {round}: the next sync would succeed: it must not be tried"
        );
        assert_eq!(log.durable_next_index(), 0, "round {round}");
    }
}

/// Bug: opening after a process crash reported recovered entries durable without syncing them.
#[test]
fn entries_recovered_after_a_process_crash_are_synced_before_being_reported_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = || LogConfig {
        preallocate_bytes: 0,
        fsync: FsyncPolicy::Never,
        ..small_config()
    };
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..5 {
        log.append(&[records(i, 1, i, 2, 50, 0)]).unwrap();
    }
    drop(log); // a process crash: the data is in the page cache only
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.durable_next_index(), 5);
    drop(log);
    power_loss(dir.path(), PowerLoss::LoseUnsynced).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.next_index(), 5, "an entry reported durable was lost");
}

fn batch_at(timestamps: &[i64]) -> bytes::Bytes {
    let mut builder = BatchBuilder::new(0, Compression::None);
    for ts in timestamps {
        builder.push(*ts, None, Some(&[7u8; 60]), &[]);
    }
    builder.build().unwrap()
}

/// Bug: a segment's maximum timestamp was taken from the last slots only, missing a frame whose
/// timestamp rose between slots, after a reopen; lookups and age retention then skipped it.
#[test]
fn timestamp_lookups_agree_with_a_full_scan_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let config = || LogConfig {
        index_interval_bytes: 256,
        ..small_config()
    };
    let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..120u64 {
        let ts: Vec<i64> = (0..1 + next() % 3)
            .map(|_| (next() % 10_000) as i64)
            .collect();
        log.append(&[NewEntry::records(i, 1, batch_at(&ts))])
            .unwrap();
    }
    let check = |log: &Log, context: &str| {
        let all = log
            .read_records(Offset(0), log.next_offset(), u64::MAX)
            .unwrap();
        let mut records: Vec<(u64, i64)> = Vec::new();
        for entry in &all {
            for (k, record) in decode_records(&entry.payload, 1 << 20)
                .unwrap()
                .into_iter()
                .enumerate()
            {
                let header = quipu_record::BatchHeader::parse(&entry.payload).unwrap();
                records.push((
                    entry.base_offset.0 + k as u64,
                    record.timestamp(header.base_timestamp),
                ));
            }
        }
        for query in (0..10_200).step_by(97) {
            let want = records
                .iter()
                .find(|(_, ts)| *ts >= query)
                .map(|(o, _)| Offset(*o));
            assert_eq!(
                log.offset_for_timestamp(query, log.next_offset()).unwrap(),
                want,
                "{context}: ts {query}"
            );
        }
    };
    check(&log, "live");
    log.close().unwrap();
    for round in 0..2 {
        let log = Log::open(dir.path(), config()).unwrap();
        check(&log, &format!("clean reopen {round}"));
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), config()).unwrap();
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    check(&log, "after a crash");
}

/// Index files of the right size with wrong contents (here: swapped between segments) are
/// detected and rebuilt, not trusted.
#[test]
fn plausible_but_wrong_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..60u64 {
        log.append(&[records(i, 1, i, 2, 40, i as i64)]).unwrap();
    }
    let written = log.read_entries(0, 60, u64::MAX).unwrap();
    log.close().unwrap();
    let indexes = files_with_extension(dir.path(), "index");
    assert!(indexes.len() >= 3);
    let (a, b) = (
        std::fs::read(&indexes[0]).unwrap(),
        std::fs::read(&indexes[1]).unwrap(),
    );
    std::fs::write(&indexes[0], &b).unwrap();
    std::fs::write(&indexes[1], &a).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.read_entries(0, 60, u64::MAX).unwrap(), written);
}

/// A missing segment in the middle of a log is damage: open refuses instead of dropping data.
#[test]
fn a_gap_between_segments_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..60u64 {
        log.append(&[records(i, 1, i, 2, 40, 0)]).unwrap();
    }
    log.close().unwrap();
    let segments = files_with_extension(dir.path(), "log");
    assert!(segments.len() >= 3);
    std::fs::remove_file(&segments[1]).unwrap();
    assert!(matches!(
        Log::open(dir.path(), small_config()),
        Err(OpenError::Corrupt { .. })
    ));
}

/// Bug: truncating in place checked only this `Log`'s own references to a map; bytes held from an
/// earlier instance of the same log would then fault (SIGBUS) or change under their reader.
#[test]
fn bytes_held_from_an_earlier_instance_survive_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..5u64 {
        log.append(&[records(i, 1, i, 2, 200, 0)]).unwrap();
    }
    let held = log.read_entries(2, 5, u64::MAX).unwrap();
    let copies: Vec<Vec<u8>> = held.iter().map(|e| e.payload.to_vec()).collect();
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    log.truncate_from(1).unwrap();
    log.append(&[records(1, 2, 99, 1, 1, 0)]).unwrap();
    for (entry, copy) in held.iter().zip(&copies) {
        assert_eq!(&entry.payload[..], &copy[..]);
    }
}

/// Another log in this process (or another process) cannot open a directory in use.
#[test]
fn a_directory_is_opened_by_one_log_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), small_config()),
        Err(OpenError::Locked { .. })
    ));
    drop(log);
    Log::open(dir.path(), small_config()).unwrap();
}
