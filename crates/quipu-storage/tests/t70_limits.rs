//! Limits that change while a log is open (a topic's settings), and the ranges every setting is
//! checked against.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

use common::*;
use quipu_storage::{FsyncPolicy, Log, LogConfig, LogLimits, Offset, OpenError};

fn limits_of(log: &Log) -> LogLimits {
    log.config().limits()
}

/// Pins the bug where topic settings were stored but never reached a running replica: retention
/// set on an open log applies at the next pass.
#[test]
fn retention_set_on_an_open_log_applies_at_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..60u64 {
        log.append(&[records(i, 1, i, 2, 100, 0)]).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments > 4, "{segments} segments");
    assert_eq!(log.enforce_retention(u64::MAX).unwrap().segments, 0);

    log.set_limits(LogLimits {
        retention_bytes: Some(5_000),
        ..limits_of(&log)
    })
    .unwrap();
    let purged = log.enforce_retention(u64::MAX).unwrap();
    assert!(purged.segments > 0);
    assert!(log.size_bytes() >= 5_000);
    assert!(log.segment_count() < segments);

    // Back to unlimited: nothing more goes.
    log.set_limits(LogLimits {
        retention_bytes: None,
        ..limits_of(&log)
    })
    .unwrap();
    let kept = log.segment_count();
    for i in 60..120u64 {
        log.append(&[records(i, 1, i, 2, 100, 0)]).unwrap();
    }
    assert_eq!(log.enforce_retention(u64::MAX).unwrap().segments, 0);
    assert!(log.segment_count() > kept);
}

#[test]
fn segment_size_changed_on_an_open_log_applies_from_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let mut index = 0u64;
    let mut append = |log: &Log, n: u64| {
        for _ in 0..n {
            log.append(&[records(index, 1, index, 2, 100, 0)]).unwrap();
            index += 1;
        }
    };
    append(&log, 40);
    let before = log.segment_count();
    // Four times the segments for the same data.
    log.set_limits(LogLimits {
        segment_bytes_max: 1024,
        ..limits_of(&log)
    })
    .unwrap();
    append(&log, 40);
    let small = log.segment_count() - before;
    assert!(small >= 3 * before, "{small} new segments vs {before}");

    // Larger again: the active segment was mapped for 1 KiB (plus one entry) and never grows
    // past its map; the next ones take the new size, and every entry stays readable.
    log.set_limits(LogLimits {
        segment_bytes_max: 64 * 1024,
        ..limits_of(&log)
    })
    .unwrap();
    append(&log, 200);
    let entries = log
        .read_entries(log.first_index(), index, u64::MAX)
        .unwrap();
    assert_eq!(entries.len() as u64, index - log.first_index());
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.next_index(), index);
    assert_eq!(log.next_offset(), Offset(2 * index));
}

/// An entry larger than `segment_bytes_max` (but within `entry_bytes_max`) gets a segment of its
/// own, as in Kafka, so a topic's segment size never limits its message size.
#[test]
fn an_entry_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 512,
        entry_bytes_max: 4096,
        ..small_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    log.append(&[records(0, 1, 0, 1, 100, 0)]).unwrap();
    log.append(&[records(1, 1, 1, 1, 3000, 0)]).unwrap();
    log.append(&[records(2, 1, 2, 1, 100, 0)]).unwrap();
    assert_eq!(log.segment_count(), 3);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    let entries = log.read_entries(0, 3, u64::MAX).unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries[1].payload.len() > 3000);
}

#[test]
fn settings_out_of_range_are_refused_naming_the_setting() {
    let cases: Vec<(&str, LogConfig)> = vec![
        (
            "retention_ms",
            LogConfig {
                retention_ms: Some(-1),
                ..LogConfig::default()
            },
        ),
        (
            "retention_ms",
            LogConfig {
                retention_ms: Some(0),
                ..LogConfig::default()
            },
        ),
        (
            "retention_bytes",
            LogConfig {
                retention_bytes: Some(0),
                ..LogConfig::default()
            },
        ),
        (
            "segment_bytes_max",
            LogConfig {
                segment_bytes_max: 10,
                ..LogConfig::default()
            },
        ),
        (
            "segment_bytes_max",
            LogConfig {
                segment_bytes_max: 1 << 32,
                ..LogConfig::default()
            },
        ),
        (
            "segment_ms_max",
            LogConfig {
                segment_ms_max: 0,
                ..LogConfig::default()
            },
        ),
        (
            "entry_bytes_max",
            LogConfig {
                entry_bytes_max: 0,
                ..LogConfig::default()
            },
        ),
        (
            "index_interval_bytes",
            LogConfig {
                index_interval_bytes: 0,
                ..LogConfig::default()
            },
        ),
        (
            "fsync",
            LogConfig {
                fsync: FsyncPolicy::IntervalMs(0),
                ..LogConfig::default()
            },
        ),
    ];
    for (key, config) in cases {
        let dir = tempfile::tempdir().unwrap();
        match Log::open(dir.path(), config) {
            Err(OpenError::Config(e)) => assert_eq!(e.key, key, "{e}"),
            other => panic!("{key}: expected a config error, got {other:?}"),
        }
    }
    // A refused change leaves the log as it was.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let before = limits_of(&log);
    let error = log
        .set_limits(LogLimits {
            retention_ms: Some(-1),
            ..before
        })
        .unwrap_err();
    assert_eq!(error.key, "retention_ms");
    assert_eq!(limits_of(&log), before);
}

/// Kafka's ListOffsets MAX_TIMESTAMP: the first record with the largest timestamp, below the
/// bound given (the high watermark), found across segments.
#[test]
fn the_record_with_the_largest_timestamp_is_found_below_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.max_timestamp_offset(Offset(u64::MAX)).unwrap(), None);
    // Two records per entry, timestamps ts, ts + 1; entry 17 holds the peak (9_000, 9_001),
    // entry 30 a later, equal peak, entry 35 a higher one.
    for i in 0..40u64 {
        let ts = match i {
            17 | 30 => 9_000,
            35 => 20_000,
            _ => 100 + i as i64,
        };
        log.append(&[records(i, 1, i, 2, 100, ts)]).unwrap();
    }
    assert!(log.segment_count() > 3);
    // Below offset 70 (entry 35 excluded): the first record at 9_001 is entry 17's second.
    assert_eq!(
        log.max_timestamp_offset(Offset(70)).unwrap(),
        Some((Offset(35), 9_001))
    );
    assert_eq!(
        log.max_timestamp_offset(Offset(80)).unwrap(),
        Some((Offset(71), 20_001))
    );
    // Below entry 17: the last ordinary records.
    assert_eq!(
        log.max_timestamp_offset(Offset(34)).unwrap(),
        Some((Offset(33), 117))
    );
}
