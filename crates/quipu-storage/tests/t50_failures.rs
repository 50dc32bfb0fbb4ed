//! A failed write or fsync poisons the log until it is reopened; the format of version 1 stays
//! readable (fixture).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

use std::path::Path;

use common::*;
use quipu_storage::fault::{PowerLoss, fail_io, power_loss, stop_failing_io};
use quipu_storage::{
    AppendError, EntryKind, FsyncPolicy, Log, LogConfig, Offset, ReadError, SyncError,
};

#[test]
fn a_failed_fsync_poisons_the_log_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&[records(0, 1, 0, 2, 10, 0)]).unwrap();
    log.sync_to(1).unwrap();
    log.append(&[records(1, 1, 1, 2, 10, 0)]).unwrap();
    fail_io(dir.path());
    assert!(matches!(log.sync_to(2), Err(SyncError::Io { .. })));
    stop_failing_io(dir.path());
    // The disk works again, but the log never retries an fsync and carries on.
    assert!(matches!(log.sync_to(2), Err(SyncError::Poisoned { .. })));
    assert!(matches!(
        log.append(&[records(2, 1, 2, 1, 1, 0)]),
        Err(AppendError::Poisoned { .. })
    ));
    assert!(matches!(
        log.read_entries(0, 2, 100),
        Err(ReadError::Poisoned { .. })
    ));
    assert!(log.truncate_suffix(0).is_err());
    assert!(
        log.close().is_err(),
        "a poisoned log does not record a clean shutdown"
    );
    // What was durable before the failure survives a power loss; reopening clears the poison.
    power_loss(dir.path(), PowerLoss::LoseUnsynced).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert!(log.next_index() >= 1);
    log.append(&[records(log.next_index(), 1, 3, 1, 1, 0)])
        .unwrap();
}

#[test]
fn a_failed_write_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        ..small_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let mut index = 0;
    while log.segment_count() == 1 {
        log.append(&[records(index, 1, index, 2, 100, 0)]).unwrap();
        index += 1;
    }
    log.sync().unwrap();
    fail_io(dir.path());
    let mut failed = None;
    for _ in 0..100 {
        match log.append(&[records(index, 1, index, 2, 100, 0)]) {
            Ok(_) => index += 1,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    stop_failing_io(dir.path());
    assert!(matches!(failed, Some(AppendError::Io { .. })), "{failed:?}");
    assert!(matches!(
        log.append(&[records(index, 1, 0, 1, 1, 0)]),
        Err(AppendError::Poisoned { .. })
    ));
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    let entries = log.read_entries(0, log.next_index(), u64::MAX).unwrap();
    assert!(entries.len() as u64 >= 1 && entries.len() as u64 <= index);
}

/// Directory of the version 1 fixture: a log written by the first release of the format.
fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1")
}

fn fixture_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1024,
        entry_bytes_max: 512,
        index_interval_bytes: 128,
        preallocate_bytes: 0,
        ..small_config()
    }
}

/// Writes the fixture. Run with `QUIPU_WRITE_FIXTURES=1` only when a format version is released;
/// the files are committed and must never change afterwards.
fn write_fixture(dir: &Path) {
    let log = Log::open(dir, fixture_config()).unwrap();
    for i in 0..12u64 {
        if i % 4 == 3 {
            log.append(&[internal(i, 1 + i / 6, format!("internal {i}").as_bytes())])
                .unwrap();
        } else {
            log.append(&[records(
                i,
                1 + i / 6,
                i,
                3,
                20,
                1_700_000_000_000 + i as i64 * 1000,
            )])
            .unwrap();
        }
    }
    log.close().unwrap();
}

#[test]
fn format_v1_fixture_stays_readable() {
    let fixture = fixture_dir();
    if std::env::var_os("QUIPU_WRITE_FIXTURES").is_some() {
        let _ = std::fs::remove_dir_all(&fixture);
        write_fixture(&fixture);
    }
    // Work on a copy: opening consumes the clean-shutdown marker.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&fixture).expect("fixture exists (tests/fixtures/format-v1)") {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    assert!(dir.path().join("clean_shutdown").exists());
    let log = Log::open(dir.path(), fixture_config()).unwrap();
    assert!(log.segment_count() > 1);
    assert_eq!(
        (log.first_index(), log.next_index(), log.next_offset()),
        (0, 12, Offset(27))
    );
    assert_eq!(log.last_term(), 2);
    let entries = log.read_entries(0, 12, u64::MAX).unwrap();
    for entry in &entries {
        let want = if entry.index % 4 == 3 {
            internal(
                entry.index,
                1 + entry.index / 6,
                format!("internal {}", entry.index).as_bytes(),
            )
        } else {
            records(
                entry.index,
                1 + entry.index / 6,
                entry.index,
                3,
                20,
                1_700_000_000_000 + entry.index as i64 * 1000,
            )
        };
        assert_eq!(entry.kind, want.kind);
        match entry.kind {
            EntryKind::Internal => assert_eq!(entry.payload, want.payload),
            EntryKind::Records => assert_eq!(entry.payload[16..], want.payload[16..]),
        }
    }
    assert_eq!(
        log.offset_for_timestamp(1_700_000_005_000, log.next_offset())
            .unwrap(),
        Some(Offset(12))
    );
    // And it can be appended to.
    log.append(&[records(12, 2, 12, 1, 1, 0)]).unwrap();
}
