//! Retention by size and age, prefix purges, and group commit under concurrent appenders.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use quipu_storage::fault::{PowerLoss, power_loss};
use quipu_storage::{Log, LogConfig, Offset, SharedSync};

#[test]
fn retention_by_age_removes_old_sealed_segments_up_to_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(10_000);
    let config = LogConfig {
        retention_ms: Some(5_000),
        clock: clock.clock(),
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    // Record timestamps 0..; segments hold about 8 entries each.
    for i in 0..80u64 {
        log.append(&[records(i, 1, i, 2, 100, i as i64 * 100)])
            .unwrap();
    }
    let segments = log.segment_count();
    assert!(segments > 5);
    // Now = 10_000: segments whose newest record is older than 5_000 may go, but the caller's
    // bound (say, the last snapshot) stops at index 20.
    let purged = log.enforce_retention(20).unwrap();
    assert!(purged.segments > 0);
    assert!(log.first_index() <= 20, "never past the bound");
    let first = log.first_index();
    assert!(log.read_entries(first, 80, u64::MAX).unwrap().len() as u64 == 80 - first);
    // With no bound, everything older than 5_000 goes; the rest stays.
    log.enforce_retention(u64::MAX).unwrap();
    let first_ts = log
        .read_records(log.start_offset(), log.next_offset(), 1)
        .unwrap()[0]
        .max_timestamp;
    assert!(
        first_ts >= 4_000,
        "a segment with records newer than 5_000 - 1 segment stays: {first_ts}"
    );
    // Much later everything but the active segment goes.
    clock.advance(1_000_000);
    log.enforce_retention(u64::MAX).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.next_offset(), Offset(160));
}

#[test]
fn retention_by_size_keeps_at_least_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(10_000),
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..100u64 {
        log.append(&[records(i, 1, i, 2, 100, 0)]).unwrap();
    }
    let before = log.size_bytes();
    let purged = log.enforce_retention(u64::MAX).unwrap();
    assert!(purged.bytes > 0);
    assert_eq!(log.size_bytes(), before - purged.bytes);
    assert!(log.size_bytes() >= 10_000, "kept {}", log.size_bytes());
    assert!(
        log.size_bytes() < 10_000 + 4096,
        "removed all it could: {}",
        log.size_bytes()
    );
    // Reopened, the log starts where the purge left it.
    let (first, start) = (log.first_index(), log.start_offset());
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!((log.first_index(), log.start_offset()), (first, start));
    assert!(log.read_entries(first - 1, first, 10).is_err());
}

#[test]
fn concurrent_appenders_share_syncs_and_every_synced_entry_survives_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 64 * 1024,
        entry_bytes_max: 8192,
        ..small_config()
    };
    let log = Arc::new(Log::open(dir.path(), config.clone()).unwrap());
    // Appends must carry the next index, so appenders take turns to append, then sync freely.
    let turn = Arc::new(Mutex::new(()));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (log, turn, acknowledged) = (
                Arc::clone(&log),
                Arc::clone(&turn),
                Arc::clone(&acknowledged),
            );
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let appended = {
                        let _turn = turn.lock().unwrap();
                        let index = log.next_index();
                        log.append(&[records(index, 1, t * 1000 + i, 3, 200, 0)])
                            .unwrap()
                    };
                    log.sync_to(appended.last_index + 1).unwrap();
                    acknowledged.lock().unwrap().push(appended.last_index);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let written = log.read_entries(0, log.next_index(), u64::MAX).unwrap();
    assert_eq!(written.len(), 200);
    let log = Arc::into_inner(log).unwrap();
    drop(log);
    power_loss(dir.path(), PowerLoss::LoseUnsynced).unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    let recovered = log.read_entries(0, log.next_index(), u64::MAX).unwrap();
    let max_acknowledged = *acknowledged.lock().unwrap().iter().max().unwrap();
    assert!(
        recovered.len() as u64 > max_acknowledged,
        "an acknowledged entry was lost"
    );
    assert_eq!(recovered, written[..recovered.len()]);
}

#[test]
fn retention_point_names_exactly_what_retention_would_remove() {
    for (by_size, bound) in [
        (false, 0),
        (false, 10),
        (false, 21),
        (false, u64::MAX),
        (true, 0),
        (true, 33),
        (true, u64::MAX),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(10_000);
        let config = LogConfig {
            retention_ms: (!by_size).then_some(5_000),
            retention_bytes: by_size.then_some(10_000),
            clock: clock.clock(),
            ..small_config()
        };
        let log = Log::open(dir.path(), config).unwrap();
        for i in 0..80u64 {
            log.append(&[records(i, 1, i, 2, 100, i as i64 * 100)])
                .unwrap();
        }
        let before = log.first_index();
        let point = log.retention_point(bound);
        // Purging up to the point removes what retention would: nothing more, nothing less.
        let check = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), check.path());
        log.enforce_retention(bound).unwrap();
        match point {
            None => assert_eq!(log.first_index(), before, "bound {bound}"),
            Some(p) => {
                assert!(p < bound, "never at or past the bound");
                assert_eq!(log.first_index(), p + 1, "bound {bound}");
            }
        }
        drop(log);
        if let Some(p) = point {
            let twin = Log::open(check.path(), small_config()).unwrap();
            twin.purge_prefix(p + 1).unwrap();
            assert_eq!(twin.first_index(), p + 1);
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Logs sharing syncs ([`SharedSync`]): appenders of several logs sync at once, across segment
/// rolls; after a power loss every log keeps every entry a sync reported durable.
#[test]
fn logs_sharing_syncs_keep_every_synced_entry_through_power_loss() {
    let root = tempfile::tempdir().unwrap();
    let group = Arc::new(SharedSync::open(root.path()).unwrap());
    // Small segments: a log rolls between one appender's ticket and another's sync.
    let config = LogConfig {
        segment_bytes_max: 8 * 1024,
        entry_bytes_max: 4096,
        shared_sync: Some(Arc::clone(&group)),
        ..small_config()
    };
    let logs: Vec<Arc<Log>> = (0..6)
        .map(|i| Arc::new(Log::open(root.path().join(format!("p{i}")), config.clone()).unwrap()))
        .collect();
    // Per log: a turn to append, and the highest index a sync reported durable.
    let turns: Vec<Arc<Mutex<u64>>> = logs.iter().map(|_| Arc::new(Mutex::new(0))).collect();
    let threads: Vec<_> = (0..12u64)
        .map(|t| {
            let at = usize::try_from(t).unwrap() % logs.len();
            let (log, turn) = (Arc::clone(&logs[at]), Arc::clone(&turns[at]));
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let appended = {
                        let _turn = turn.lock().unwrap();
                        let index = log.next_index();
                        log.append(&[records(index, 1, t * 1000 + i, 2, 300, 0)])
                            .unwrap()
                    };
                    log.sync_to(appended.last_index + 1).unwrap();
                    let mut acknowledged = turn.lock().unwrap();
                    *acknowledged = (*acknowledged).max(appended.last_index + 1);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let (rounds, _) = group.rounds();
    assert!((1..=480).contains(&rounds), "{rounds} rounds for 480 syncs");
    let written: Vec<_> = logs
        .iter()
        .map(|log| log.read_entries(0, log.next_index(), u64::MAX).unwrap())
        .collect();
    assert!(logs.iter().all(|log| log.segment_count() > 1), "rolled");
    let dirs: Vec<_> = logs.iter().map(|log| log.dir().to_path_buf()).collect();
    drop(logs);
    for dir in &dirs {
        power_loss(dir, PowerLoss::LoseUnsynced).unwrap();
    }
    for ((dir, written), acknowledged) in dirs.iter().zip(&written).zip(&turns) {
        let log = Log::open(dir, small_config()).unwrap();
        let recovered = log.read_entries(0, log.next_index(), u64::MAX).unwrap();
        let acknowledged = *acknowledged.lock().unwrap();
        assert!(
            recovered.len() as u64 >= acknowledged,
            "{}: {} entries survived, {acknowledged} were reported durable",
            dir.display(),
            recovered.len()
        );
        assert_eq!(recovered, written[..recovered.len()]);
    }
}

/// Asserts that the entries a reader holds still carry the bytes copied from them earlier.
fn assert_unchanged(held: &[quipu_storage::Entry], copies: &[Vec<u8>]) {
    for (entry, copy) in held.iter().zip(copies) {
        assert!(
            entry.payload[..] == copy[..],
            "entry {} changed under its reader",
            entry.index
        );
    }
}

/// A purge takes its segments out of the log durably (renamed `*.deleted`, the directory
/// synced) and leaves their deletion to the deleter: once it is done no file of theirs is left,
/// and a leftover the process did not get to delete goes at the next open.
#[test]
fn purged_segments_are_deleted_and_leftovers_go_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = || LogConfig {
        // Segments larger than the deleter's step, so that files shrink before they go.
        segment_bytes_max: 12 << 20,
        entry_bytes_max: 1 << 20,
        preallocate_bytes: 1 << 20,
        ..small_config()
    };
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..80u64 {
        log.append(&[records(i, 1, i, 8, 100_000, 0)]).unwrap();
    }
    let before = files_with_extension(dir.path(), "log").len();
    assert!(before >= 3, "{before} segments");
    // A reader holds entries of the segments about to go (bytes of their maps): a file still
    // mapped must not shrink under it, and the bytes it holds stay as they were.
    let held = log.read_entries(0, 5, u64::MAX).unwrap();
    let copies: Vec<Vec<u8>> = held.iter().map(|e| e.payload.to_vec()).collect();
    let purged = log.purge_prefix(30).unwrap();
    assert!(purged.segments > 0);
    // Out of the log at once, whatever the deleter has done yet.
    for extension in ["log", "index", "timeindex"] {
        assert_eq!(
            files_with_extension(dir.path(), extension).len(),
            before - purged.segments,
            "{extension} files"
        );
    }
    quipu_storage::wait_for_deletions();
    assert_unchanged(&held, &copies);
    drop(held);
    // Nothing maps them any more: the next purge's files shrink before they go.
    let before = files_with_extension(dir.path(), "log").len();
    let purged_again = log.purge_prefix(60).unwrap();
    assert!(purged_again.segments > 0);
    quipu_storage::wait_for_deletions();
    assert_eq!(
        files_with_extension(dir.path(), "log").len(),
        before - purged_again.segments
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|name| !name.ends_with(".deleted")),
        "{names:?}"
    );
    // As if the process had stopped before deleting them.
    let leftovers = [
        dir.path().join("00000000000000000000.log.deleted"),
        dir.path().join("00000000000000000000.index.deleted"),
    ];
    for leftover in &leftovers {
        std::fs::write(leftover, b"a purged segment's bytes").unwrap();
    }
    let first = log.first_index();
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    assert!(leftovers.iter().all(|leftover| !leftover.exists()));
    assert_eq!(log.first_index(), first);
    assert_eq!(
        log.read_entries(first, 80, u64::MAX).unwrap().len() as u64,
        80 - first
    );
}

/// The one file of `dir` whose name ends with `.log.spare`, if any.
fn spare_of(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let spares = files_with_extension(dir, "spare");
    assert!(
        spares.len() <= 1,
        "a log keeps at most one spare: {spares:?}"
    );
    spares.into_iter().next()
}

/// The base index of the log's second segment, from its file's name.
fn second_segment_base(dir: &std::path::Path) -> u64 {
    files_with_extension(dir, "log")[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn inode(path: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

/// A purge keeps the newest purged segment's data file as the log's spare, and the next new
/// segment is made in it (same inode, its written blocks kept), unless a reader still maps the
/// segment it was. Every entry reads back, through a crash too; and the spare's old frames are
/// never taken for entries, even where they continue the log exactly (their CRCs are under
/// another salt: the test fails if a recycled file keeps its old salt).
#[test]
fn purged_segments_are_recycled_and_their_old_frames_never_read_as_entries() {
    let dir = tempfile::tempdir().unwrap();
    let config = || LogConfig {
        segment_bytes_max: 64 * 1024,
        entry_bytes_max: 8192,
        preallocate_bytes: 16 * 1024,
        ..small_config()
    };
    // Four records of 1,000 bytes per entry, so an entry's base offset is 4 × its index.
    let append = |log: &Log, index: u64| {
        log.append(&[records(index, 1, index, 4, 1000, 0)]).unwrap();
    };
    let log = Log::open(dir.path(), config()).unwrap();
    for index in 0..60 {
        append(&log, index);
    }
    assert!(files_with_extension(dir.path(), "log").len() >= 3);
    // A reader holds an entry of the segment that will become the spare (the first).
    let second_base = second_segment_base(dir.path());
    let held = log
        .read_entries(second_base - 1, second_base, u64::MAX)
        .unwrap();
    let held_copy = held[0].payload.to_vec();
    let purged = log.purge_prefix(second_base).unwrap();
    assert_eq!(purged.segments, 1);
    let spare = spare_of(dir.path()).expect("the purge kept a spare");
    assert!(
        spare.ends_with("00000000000000000000.log.spare"),
        "{spare:?}"
    );
    let spare_inode = inode(&spare);
    let spare_len = std::fs::metadata(&spare).unwrap().len();
    // Still mapped by the reader: the next segments are new files, and its bytes stay.
    let mut index = 60;
    let segments_before = files_with_extension(dir.path(), "log").len();
    while files_with_extension(dir.path(), "log").len() == segments_before {
        append(&log, index);
        index += 1;
    }
    assert_eq!(
        spare_of(dir.path()).as_ref(),
        Some(&spare),
        "reused while mapped"
    );
    assert_eq!(held[0].payload[..], held_copy[..]);
    drop(held);
    // Unmapped: the next new segment is made in it.
    let segments_before = files_with_extension(dir.path(), "log").len();
    while files_with_extension(dir.path(), "log").len() == segments_before {
        append(&log, index);
        index += 1;
    }
    assert_eq!(spare_of(dir.path()), None, "the spare was not reused");
    let newest = files_with_extension(dir.path(), "log").pop().unwrap();
    assert_eq!(
        inode(&newest),
        spare_inode,
        "the new segment is the spare's file"
    );
    assert_eq!(std::fs::metadata(&newest).unwrap().len(), spare_len);
    for _ in 0..5 {
        append(&log, index);
        index += 1;
    }
    let first = log.first_index();
    let written = log.read_entries(first, index, u64::MAX).unwrap();
    assert_eq!(written.len() as u64, index - first);
    // A crash (no clean close): every entry is read back, none of the old frames after them.
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.next_index(), index);
    assert_eq!(log.read_entries(first, index, u64::MAX).unwrap(), written);
    // Readers of the segment to be purged next would keep its file from being reused.
    drop(written);

    // Old frames that continue the log exactly: the spare of the segment at `base`, then the
    // log reset to start at `base` in that very file.
    let base = log.first_index();
    let purged = log.purge_prefix(second_segment_base(dir.path())).unwrap();
    assert_eq!(purged.segments, 1);
    let spare = spare_of(dir.path()).expect("the purge kept a spare");
    assert!(spare.to_str().unwrap().contains(&format!("{base:020}")));
    let spare_inode = inode(&spare);
    log.reset(base, Offset(4 * base)).unwrap();
    assert_eq!(
        inode(&dir.path().join(format!("{base:020}.log"))),
        spare_inode,
        "the reset's segment is the spare's file"
    );
    drop(log);
    // After a crash with nothing appended (the recovery cuts the old frames), then a clean close.
    for _ in 0..2 {
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(
            (log.first_index(), log.next_index(), log.next_offset()),
            (base, base, Offset(4 * base)),
            "old frames were read as entries"
        );
        log.close().unwrap();
    }

    // The same entries appended again over the spare of the segment they were in: the old frame
    // after the new ones continues them exactly. Through a clean close (the marker bounds the
    // data) and an open that must rebuild the indexes (a scan to the file's end).
    let log = Log::open(dir.path(), config()).unwrap();
    for index in base..base + 60 {
        append(&log, index);
    }
    let purged = log.purge_prefix(second_segment_base(dir.path())).unwrap();
    assert_eq!(purged.segments, 1);
    assert!(spare_of(dir.path()).is_some());
    log.reset(base, Offset(4 * base)).unwrap();
    append(&log, base);
    append(&log, base + 1);
    let kept = log.read_entries(base, base + 2, u64::MAX).unwrap();
    log.close().unwrap();
    let active = dir.path().join(format!("{base:020}.log"));
    assert!(
        std::fs::metadata(&active).unwrap().len() > 16 * 1024,
        "the old frames are still in the file"
    );
    for rebuild in [false, true] {
        if rebuild {
            for extension in ["index", "timeindex"] {
                std::fs::remove_file(dir.path().join(format!("{base:020}.{extension}"))).unwrap();
            }
        }
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(
            (log.next_index(), log.next_offset()),
            (base + 2, Offset(4 * (base + 2))),
            "old frames were read as entries (indexes rebuilt: {rebuild})"
        );
        assert_eq!(log.read_entries(base, base + 2, u64::MAX).unwrap(), kept);
        log.close().unwrap();
    }
}

/// With `recycle_segments` off no spare is kept, and open deletes one left from before.
#[test]
fn without_recycling_purged_segments_are_deleted_and_a_spare_goes_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = |recycle_segments| LogConfig {
        recycle_segments,
        ..small_config()
    };
    let log = Log::open(dir.path(), config(false)).unwrap();
    for index in 0..40 {
        log.append(&[records(index, 1, index, 2, 100, 0)]).unwrap();
    }
    assert!(log.purge_prefix(30).unwrap().segments > 1);
    assert_eq!(spare_of(dir.path()), None);
    drop(log);
    // Made by a process that recycled.
    let log = Log::open(dir.path(), config(true)).unwrap();
    assert!(log.purge_prefix(39).unwrap().segments > 0);
    assert!(spare_of(dir.path()).is_some());
    drop(log);
    let log = Log::open(dir.path(), config(false)).unwrap();
    quipu_storage::wait_for_deletions();
    assert_eq!(spare_of(dir.path()), None);
    assert!(files_with_extension(dir.path(), "deleted").is_empty());
    assert_eq!(log.next_index(), 40);
}

/// `keep_spares(false)` (a node whose disk runs low) deletes the log's spare at once and keeps
/// purges from making another; `keep_spares(true)` lets them again.
#[test]
fn a_log_told_to_keep_no_spare_deletes_its_own_and_makes_none_until_told_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let mut index = 0;
    let mut append_and_purge = |log: &Log| {
        for _ in 0..20 {
            log.append(&[records(index, 1, index, 2, 100, 0)]).unwrap();
            index += 1;
        }
        assert!(log.purge_prefix(index - 1).unwrap().segments > 0);
    };
    append_and_purge(&log);
    let spare = spare_of(dir.path()).expect("the purge kept a spare");
    assert!(log.has_spare());
    let len = std::fs::metadata(&spare).unwrap().len();
    assert_eq!(log.keep_spares(false), len);
    assert!(!log.has_spare());
    quipu_storage::wait_for_deletions();
    assert_eq!(spare_of(dir.path()), None);
    assert!(files_with_extension(dir.path(), "deleted").is_empty());
    // Told again: nothing more to delete.
    assert_eq!(log.keep_spares(false), 0);
    append_and_purge(&log);
    assert_eq!(spare_of(dir.path()), None, "a purge kept a spare");
    assert_eq!(log.keep_spares(true), 0);
    append_and_purge(&log);
    assert!(spare_of(dir.path()).is_some(), "purges keep spares again");
    assert_eq!(
        log.read_entries(index - 1, index, u64::MAX).unwrap().len(),
        1
    );
}

/// A truncation's and a reset's removed segments leave the log at once (renamed `*.deleted`,
/// the directory synced) and are deleted by the deleter, as a purge's are.
#[test]
fn truncated_and_reset_segments_are_deleted_by_the_deleter() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for index in 0..60 {
        log.append(&[records(index, 1, index, 2, 100, 0)]).unwrap();
    }
    let before = files_with_extension(dir.path(), "log").len();
    assert!(before >= 4, "{before} segments");
    // A reader of the last segment keeps its file from going until it lets go (the deleter
    // waits up to a second for a mapped file), so it is seen renamed, not unlinked.
    let held = log.read_entries(59, 60, u64::MAX).unwrap();
    log.truncate_from(second_segment_base(dir.path()) + 1)
        .unwrap();
    assert_eq!(files_with_extension(dir.path(), "log").len(), 2);
    assert!(
        !files_with_extension(dir.path(), "deleted").is_empty(),
        "the truncated segments' files went to the deleter"
    );
    drop(held);
    assert_eq!(log.next_index(), second_segment_base(dir.path()) + 1);
    log.reset(100, Offset(1000)).unwrap();
    assert_eq!(files_with_extension(dir.path(), "log").len(), 1);
    quipu_storage::wait_for_deletions();
    assert!(files_with_extension(dir.path(), "deleted").is_empty());
    assert_eq!(
        (log.first_index(), log.next_index(), log.next_offset()),
        (100, 100, Offset(1000))
    );
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (100, 100));
}

/// A spare discarded at open (recycling turned off) while a reader of an earlier instance of
/// the log still maps the segment it was: the deleter must not shrink it under the reader (it
/// checks the maps under the segment's own name, not the spare's).
#[test]
fn a_discarded_spare_keeps_the_bytes_a_reader_holds() {
    let dir = tempfile::tempdir().unwrap();
    let config = |recycle_segments| LogConfig {
        recycle_segments,
        // Larger than the deleter's step, so that an unmapped file would shrink before it goes.
        segment_bytes_max: 12 << 20,
        entry_bytes_max: 1 << 20,
        preallocate_bytes: 1 << 20,
        ..small_config()
    };
    let log = Log::open(dir.path(), config(true)).unwrap();
    for index in 0..40 {
        log.append(&[records(index, 1, index, 8, 100_000, 0)])
            .unwrap();
    }
    // The last entries of the first segment: past where a first shrinking step would cut it.
    let second = second_segment_base(dir.path());
    let held = log.read_entries(second - 3, second, u64::MAX).unwrap();
    let copies: Vec<Vec<u8>> = held.iter().map(|e| e.payload.to_vec()).collect();
    assert_eq!(log.purge_prefix(second).unwrap().segments, 1);
    assert!(spare_of(dir.path()).is_some());
    drop(log);
    let log = Log::open(dir.path(), config(false)).unwrap();
    assert_eq!(spare_of(dir.path()), None);
    // Reading the held bytes while the deleter is at work: a shrunk file would fault.
    assert_unchanged(&held, &copies);
    quipu_storage::wait_for_deletions();
    assert_unchanged(&held, &copies);
    drop(held);
    assert!(files_with_extension(dir.path(), "deleted").is_empty());
    assert_eq!(log.next_index(), 40);
}

/// Readers are known by the file they map, not by its name: a log reopened through another
/// spelling of its directory (a symlink) still sees that an earlier instance's reader maps its
/// spare, and does not reuse it until the reader lets go.
#[test]
fn a_mapped_spare_is_not_reused_under_another_spelling_of_the_directory() {
    let root = tempfile::tempdir().unwrap();
    let (real, link) = (root.path().join("real"), root.path().join("link"));
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let config = || LogConfig {
        segment_bytes_max: 64 * 1024,
        entry_bytes_max: 8192,
        ..small_config()
    };
    let log = Log::open(&real, config()).unwrap();
    for index in 0..40 {
        log.append(&[records(index, 1, index, 4, 1000, 0)]).unwrap();
    }
    let second = second_segment_base(&real);
    let held = log.read_entries(second - 3, second, u64::MAX).unwrap();
    let copies: Vec<Vec<u8>> = held.iter().map(|e| e.payload.to_vec()).collect();
    assert_eq!(log.purge_prefix(second).unwrap().segments, 1);
    let spare = spare_of(&real).expect("the purge kept a spare");
    drop(log);
    let log = Log::open(&link, config()).unwrap();
    let roll = |log: &Log, next: &mut u64| {
        let segments = files_with_extension(&real, "log").len();
        while files_with_extension(&real, "log").len() == segments {
            log.append(&[records(*next, 1, *next, 4, 1000, 0)]).unwrap();
            *next += 1;
        }
    };
    let mut next = 40;
    roll(&log, &mut next);
    assert_eq!(
        spare_of(&real),
        Some(spare),
        "reused while a reader maps it"
    );
    assert_unchanged(&held, &copies);
    drop(held);
    roll(&log, &mut next);
    assert_eq!(spare_of(&real), None, "not reused once the reader let go");
}
