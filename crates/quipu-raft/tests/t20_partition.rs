//! The log store and state machine of a data partition beyond openraft's suite: records are
//! stored once with log-assigned offsets, the high watermark follows them, and the vote, purge
//! point and snapshot survive a power loss.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use common::{open, snapshot};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder,
    Vote,
};
use quipu_raft::{LogStore, PartitionStateMachine, Request, TypeConfig};
use quipu_record::{BatchBuilder, BatchHeader, Compression};
use quipu_storage::fault::{PowerLoss, power_loss};
use quipu_storage::{Log, LogConfig, Offset};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn batch(records: usize) -> Bytes {
    let mut builder = BatchBuilder::new(0, Compression::None);
    for i in 0..records {
        builder.push(
            1_000 + i as i64,
            None,
            Some(format!("value {i}").as_bytes()),
            &[],
        );
    }
    builder.build().unwrap()
}

fn records(term: u64, index: u64, batch: Bytes) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Request::Records {
            batch,
            local_ack: None,
        }),
    }
}

fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(term: u64, index: u64) -> Entry<TypeConfig> {
    let voters: BTreeSet<u64> = [1, 2, 3].into();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], None)),
    }
}

#[tokio::test]
async fn records_are_stored_once_and_the_high_watermark_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut store, mut sm, shared) = open(dir.path()).await;
    let (first, second) = (batch(3), batch(2));
    store
        .blocking_append([
            membership(1, 0),
            records(1, 1, first.clone()),
            blank(2, 2),
            records(2, 3, second.clone()),
        ])
        .await
        .unwrap();

    // The batches are the records frames' payloads: stored once, offsets assigned by the log.
    let stored = log
        .read_records(Offset(0), log.next_offset(), u64::MAX)
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(
        (stored[0].base_offset, stored[1].base_offset),
        (Offset(0), Offset(3))
    );
    assert_eq!(stored[1].payload[16..], second[16..]);
    assert_eq!(
        BatchHeader::parse(&stored[1].payload)
            .unwrap()
            .partition_leader_epoch,
        2
    );
    let frames =
        4 * quipu_storage::FRAME_HEADER_LEN as u64 + quipu_storage::SEGMENT_HEADER_LEN as u64;
    assert!(
        log.size_bytes() < frames + (first.len() + second.len()) as u64 + 200,
        "data stored twice?"
    );

    // Read back through openraft's reader and applied: the watermark is the end of each batch.
    let entries = store.try_get_log_entries(0..4).await.unwrap();
    assert_eq!(entries.len(), 4);
    let responses = sm.apply(entries).await.unwrap();
    let offsets: Vec<Option<u64>> = responses.iter().map(|r| r.base_offset).collect();
    assert_eq!(offsets, [None, Some(0), None, Some(3)]);
    assert_eq!(shared.high_watermark(), 5);
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(2, 3)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 0)));
}

#[tokio::test]
async fn vote_purge_point_and_snapshot_survive_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut store, mut sm, _shared) = open(dir.path()).await;
        store
            .blocking_append([
                membership(1, 0),
                records(1, 1, batch(4)),
                records(1, 2, batch(1)),
                blank(1, 3),
            ])
            .await
            .unwrap();
        let vote = Vote::new_committed(3, 2);
        store.save_vote(&vote).await.unwrap();
        let entries = store.try_get_log_entries(0..4).await.unwrap();
        sm.apply(entries).await.unwrap();
        snapshot(&mut sm).await;
        store.purge(log_id(1, 2)).await.unwrap();
    }
    let report = power_loss(dir.path(), PowerLoss::LoseUnsynced).unwrap();
    assert!(report.unsynced_truncations.is_empty());
    let (_log, mut store, mut sm, shared) = open(dir.path()).await;
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(Vote::new_committed(3, 2))
    );
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    let left = store.try_get_log_entries(0..10).await.unwrap();
    assert_eq!(
        left.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        [3],
        "purged entries are never returned"
    );
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 3)));
    assert_eq!(shared.high_watermark(), 5);
}

#[tokio::test]
async fn a_log_purged_past_its_end_restarts_at_the_installed_snapshot() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (_l, mut leader_store, mut leader_sm, _) = open(leader_dir.path()).await;
    let entries: Vec<_> = (1..=9).map(|i| records(1, i, batch(10))).collect();
    leader_store
        .blocking_append(std::iter::once(membership(1, 0)).chain(entries))
        .await
        .unwrap();
    let read = leader_store.try_get_log_entries(0..10).await.unwrap();
    leader_sm.apply(read).await.unwrap();
    let snapshot = leader_sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    // A new follower receives the snapshot, then openraft purges its log up to it.
    let follower_dir = tempfile::tempdir().unwrap();
    let (follower_log, mut store, mut sm, shared) = open(follower_dir.path()).await;
    let mut data = sm.begin_receiving_snapshot().await.unwrap();
    *data = *snapshot.snapshot;
    sm.install_snapshot(&snapshot.meta, data).await.unwrap();
    assert_eq!(shared.high_watermark(), 90);
    store.purge(log_id(1, 9)).await.unwrap();
    assert_eq!(
        (follower_log.next_index(), follower_log.next_offset()),
        (10, Offset(90))
    );
    store
        .blocking_append([records(2, 10, batch(2))])
        .await
        .unwrap();
    let appended = store.try_get_log_entries(10..11).await.unwrap();
    let applied = sm.apply(appended).await.unwrap();
    assert_eq!(
        applied[0].base_offset,
        Some(90),
        "offsets continue where the snapshot ends"
    );
    assert_eq!(shared.high_watermark(), 92);
}

/// A leader's snapshot ending at index 9 (offsets 0..90), as retention would take it.
async fn leader_snapshot_at_9() -> (tempfile::TempDir, openraft::Snapshot<TypeConfig>) {
    let dir = tempfile::tempdir().unwrap();
    let (_l, mut store, mut sm, _) = open(dir.path()).await;
    let entries: Vec<_> = (1..=9).map(|i| records(1, i, batch(10))).collect();
    store
        .blocking_append(std::iter::once(membership(1, 0)).chain(entries))
        .await
        .unwrap();
    let read = store.try_get_log_entries(0..10).await.unwrap();
    sm.apply(read).await.unwrap();
    let snapshot = snapshot(&mut sm).await;
    (dir, snapshot)
}

#[tokio::test]
async fn a_purge_past_the_end_before_the_install_waits_for_it_and_survives_a_crash() {
    let (_leader_dir, snapshot) = leader_snapshot_at_9().await;
    let dir = tempfile::tempdir().unwrap();
    {
        // A follower holding indexes 0..=2 (offsets 0..10).
        let (log, mut store, _sm, _shared) = open(dir.path()).await;
        store
            .blocking_append([membership(1, 0), records(1, 1, batch(10)), blank(1, 2)])
            .await
            .unwrap();
        // openraft asks for the purge before the state machine installed the snapshot: nothing
        // may change yet (the offset where the log restarts is not known durably).
        store.purge(log_id(1, 9)).await.unwrap();
        assert_eq!((log.first_index(), log.next_index()), (0, 3));
        // Crash here: the snapshot was never installed.
    }
    {
        let (log, mut store, mut sm, shared) = open(dir.path()).await;
        let state = store.get_log_state().await.unwrap();
        assert_eq!(
            state.last_purged_log_id, None,
            "no purge point was made durable"
        );
        assert_eq!(state.last_log_id, Some(log_id(1, 2)));
        assert_eq!(log.next_offset(), Offset(10));
        // Again, and this time the install completes before the next append.
        store.purge(log_id(1, 9)).await.unwrap();
        let mut data = sm.begin_receiving_snapshot().await.unwrap();
        *data = *snapshot.snapshot.clone();
        sm.install_snapshot(&snapshot.meta, data).await.unwrap();
        store
            .blocking_append([records(2, 10, batch(2))])
            .await
            .unwrap();
        assert_eq!((log.first_index(), log.next_index()), (10, 11));
        let appended = store.try_get_log_entries(10..11).await.unwrap();
        assert_eq!(sm.apply(appended).await.unwrap()[0].base_offset, Some(90));
        assert_eq!(shared.high_watermark(), 92);
    }
    // After a power loss everything above is still there.
    power_loss(dir.path(), PowerLoss::LoseUnsynced).unwrap();
    let (log, mut store, mut sm, shared) = open(dir.path()).await;
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 9)));
    assert_eq!(state.last_log_id, Some(log_id(2, 10)));
    assert_eq!(log.start_offset(), Offset(90));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 9)));
    assert_eq!(
        shared.high_watermark(),
        90,
        "the snapshot's point, until entry 10 is re-applied"
    );
}

#[tokio::test]
async fn an_installed_snapshot_without_its_log_reset_is_finished_at_the_next_open() {
    let (_leader_dir, snapshot) = leader_snapshot_at_9().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut store, mut sm, _) = open(dir.path()).await;
        store
            .blocking_append([membership(1, 0), records(1, 1, batch(10))])
            .await
            .unwrap();
        let mut data = sm.begin_receiving_snapshot().await.unwrap();
        *data = *snapshot.snapshot;
        sm.install_snapshot(&snapshot.meta, data).await.unwrap();
        // Crash before openraft's purge: the log still ends at index 1.
    }
    let (log, mut store, mut sm, _) = open(dir.path()).await;
    // openraft's start-up sees applied (9) beyond the log's end (1) and purges up to applied.
    let applied = sm.applied_state().await.unwrap().0.unwrap();
    assert_eq!(applied, log_id(1, 9));
    store.purge(applied).await.unwrap();
    assert_eq!((log.next_index(), log.next_offset()), (10, Offset(90)));
    assert_eq!(
        store.get_log_state().await.unwrap().last_purged_log_id,
        Some(log_id(1, 9))
    );
}

#[tokio::test]
async fn a_retention_snapshot_ends_at_the_requested_point_with_its_membership() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut store, mut sm, shared) = open(dir.path()).await;
    let mut entries = vec![membership(1, 0)];
    entries.extend((1..=5).map(|i| records(1, i, batch(10))));
    // A membership change after the point the snapshot will end at.
    entries.push(membership(2, 6));
    entries.extend((7..=9).map(|i| records(2, i, batch(10))));
    store.blocking_append(entries).await.unwrap();
    let read = store.try_get_log_entries(0..10).await.unwrap();
    sm.apply(read).await.unwrap();
    let at_5 = log.read_entries(5, 6, u64::MAX).unwrap().remove(0);
    shared.set_snapshot_target(quipu_raft::shared::SnapshotTarget {
        index: 5,
        term: at_5.term,
        next_offset: at_5.next_offset().0,
    });
    let snapshot = snapshot(&mut sm).await;
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 5)));
    assert_eq!(
        snapshot.meta.last_membership.log_id(),
        &Some(log_id(1, 0)),
        "the membership in effect at index 5, not the later one"
    );
    assert!(
        !snapshot.snapshot.get_ref().is_empty(),
        "the snapshot carries the state at its point"
    );
    // The live state is untouched; the next build without a target is at the applied index.
    assert_eq!(shared.high_watermark(), 80);
    let next = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(next.meta.last_log_id, Some(log_id(2, 9)));
    assert_eq!(next.meta.last_membership.log_id(), &Some(log_id(2, 6)));
    // A restart starts from the latest snapshot.
    drop((store, sm));
    let _ = (log, shared);
}

#[tokio::test]
async fn a_crash_between_the_purge_point_and_the_reset_still_lets_the_log_continue() {
    let (_leader_dir, snapshot) = leader_snapshot_at_9().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut store, mut sm, _) = open(dir.path()).await;
        store
            .blocking_append([membership(1, 0), records(1, 1, batch(10)), blank(1, 2)])
            .await
            .unwrap();
        let mut data = sm.begin_receiving_snapshot().await.unwrap();
        *data = *snapshot.snapshot;
        sm.install_snapshot(&snapshot.meta, data).await.unwrap();
    }
    // The state a crash inside the reset leaves: the purge point (9) is durable, the old
    // entries 0..=2 are still in the log. (`raft_meta` as the log store writes it: postcard of
    // its vote and purge point.)
    #[derive(serde::Serialize)]
    struct RaftMeta {
        vote: Option<Vote<u64>>,
        last_purged: Option<LogId<u64>>,
    }
    let meta = RaftMeta {
        vote: None,
        last_purged: Some(log_id(1, 9)),
    };
    quipu_storage::write_state_file(
        dir.path(),
        quipu_raft::META_FILE,
        &postcard::to_allocvec(&meta).unwrap(),
    )
    .unwrap();
    let (log, mut store, mut sm, shared) = open(dir.path()).await;
    let state = store.get_log_state().await.unwrap();
    assert_eq!(
        state.last_log_id,
        Some(log_id(1, 9)),
        "the old entries are hidden"
    );
    assert_eq!(log.next_index(), 3);
    // The leader's next entry restarts the log after the snapshot instead of failing forever.
    store
        .blocking_append([records(2, 10, batch(2))])
        .await
        .unwrap();
    assert_eq!((log.first_index(), log.next_index()), (10, 11));
    let appended = store.try_get_log_entries(10..11).await.unwrap();
    assert_eq!(sm.apply(appended).await.unwrap()[0].base_offset, Some(90));
    assert_eq!(shared.high_watermark(), 92);
}

/// The newest segment in `dir`, its bytes, and where its data ends (segments are preallocated
/// with zeros, so the data ends at the last non-zero byte).
/// Closes a replica as a clean stop does: its store and state machine first (they hold the log),
/// then the log, which leaves the clean-close marker.
fn close_cleanly(log: Arc<Log>, store: LogStore, sm: PartitionStateMachine) {
    drop((store, sm));
    Arc::try_unwrap(log).unwrap().close().unwrap();
}

fn newest_segment(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, usize) {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let path = segments.pop().unwrap();
    let data = std::fs::read(&path).unwrap();
    let end = data.iter().rposition(|b| *b != 0).unwrap() + 1;
    (path, data, end)
}

/// A disk that lost the last `bytes` of data of the newest segment in `dir`.
fn cut_newest_segment(dir: &std::path::Path, bytes: u64) {
    let (path, _, end) = newest_segment(dir);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(end as u64 - bytes)
        .unwrap();
}

#[tokio::test]
async fn a_log_that_opens_below_its_flush_mark_abstains_until_it_holds_the_lost_entries() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut store, _sm, shared) = open(dir.path()).await;
        store
            .blocking_append([
                membership(1, 0),
                records(1, 1, batch(1)),
                records(1, 2, batch(1)),
            ])
            .await
            .unwrap();
        assert!(!shared.is_abstaining());
        // openraft truncating a conflicting suffix is no loss: the mark goes down first.
        store.truncate(log_id(1, 2)).await.unwrap();
    }
    {
        let (log, mut store, sm, shared) = open(dir.path()).await;
        assert_eq!(log.next_index(), 2);
        assert!(!shared.is_abstaining(), "a truncation is not a loss");
        store
            .blocking_append([records(2, 2, batch(1))])
            .await
            .unwrap();
        // It leads term 2: openraft restores such a vote as leadership at once.
        store.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        // Closed cleanly, so that only the mark can tell of the loss below.
        close_cleanly(log, store, sm);
    }
    // The disk loses the durable last entry (its frame's tail is cut) while the replica is down.
    cut_newest_segment(dir.path(), 10);
    let (log, mut store, _sm, shared) = open(dir.path()).await;
    assert_eq!(log.next_index(), 2, "recovery cut the damaged frame");
    assert!(
        shared.is_abstaining(),
        "it lost an entry it had made durable"
    );
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(Vote::new(2, 1)),
        "leading again takes an election"
    );
    // The leader sends it again: once durable, the replica may vote again.
    store
        .blocking_append([records(2, 2, batch(1))])
        .await
        .unwrap();
    assert!(!shared.is_abstaining());
}

#[tokio::test]
async fn an_abstaining_replica_that_installs_a_snapshot_past_its_loss_votes_again() {
    let (_leader_dir, snapshot) = leader_snapshot_at_9().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut store, _sm, _shared) = open(dir.path()).await;
        store
            .blocking_append([membership(1, 0), records(1, 1, batch(1)), blank(1, 2)])
            .await
            .unwrap();
    }
    // The disk loses the last entry; the replica abstains until it holds index 2 again.
    cut_newest_segment(dir.path(), 5);
    let (_log, _store, mut sm, shared) = open(dir.path()).await;
    assert!(shared.is_abstaining());
    // The leader had purged: the replica catches up by its snapshot, with no append after.
    sm.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    assert!(!shared.is_abstaining(), "the snapshot covers what was lost");
}

/// The applied-state checkpoint: written in the background once enough is applied (only of
/// entries the log holds durably), taken up at the next open so nothing before it is applied
/// again, and ignored when the log no longer holds its last entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_spares_a_restart_the_applied_log_unless_the_log_lost_it() {
    let dir = tempfile::tempdir().unwrap();
    let entries: u64 = 4100;
    {
        let (log, mut store, sm, shared) = open(dir.path()).await;
        assert!(!sm.with_checkpoints(Arc::clone(&log)).await.unwrap());
        let mut batch_of_entries = vec![membership(1, 0)];
        for index in 1..entries {
            batch_of_entries.push(records(1, index, batch(1)));
        }
        store.blocking_append(batch_of_entries).await.unwrap();
        log.sync().unwrap();
        let read = store.try_get_log_entries(0..entries).await.unwrap();
        let mut sm_applier = sm.clone();
        sm_applier.apply(read).await.unwrap();
        assert_eq!(shared.high_watermark(), entries - 1);
        let file = dir.path().join(quipu_raft::CHECKPOINT_FILE);
        let start = std::time::Instant::now();
        while !file.exists() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "no checkpoint written"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    // Reopened: the state machine starts at the checkpoint, before anything is applied.
    {
        let (log, _store, mut sm, shared) = open(dir.path()).await;
        assert!(sm.with_checkpoints(Arc::clone(&log)).await.unwrap());
        assert_eq!(
            sm.applied_state().await.unwrap().0,
            Some(log_id(1, entries - 1))
        );
        assert_eq!(shared.high_watermark(), entries - 1);
    }
    // A damaged checkpoint file is ignored (the log is applied from the snapshot), never an
    // error that would fail the replica.
    {
        let file = dir.path().join(quipu_raft::CHECKPOINT_FILE);
        let good = std::fs::read(&file).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        std::fs::write(&file, &bad).unwrap();
        let (log, _store, mut sm, _shared) = open(dir.path()).await;
        assert!(!sm.with_checkpoints(Arc::clone(&log)).await.unwrap());
        assert_eq!(sm.applied_state().await.unwrap().0, None);
        drop((log, _store, sm));
        std::fs::write(&file, &good).unwrap();
    }
    // The log lost its tail (a disk that did not keep what it synced): the checkpoint names an
    // entry the log no longer holds, so it is not trusted.
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        log.truncate_from(entries - 10).unwrap();
        drop(log);
        let (log, _store, mut sm, shared) = open(dir.path()).await;
        assert!(!sm.with_checkpoints(Arc::clone(&log)).await.unwrap());
        assert_eq!(sm.applied_state().await.unwrap().0, None);
        assert_eq!(shared.high_watermark(), 0);
    }
}

/// Flips one byte of the newest segment in `dir`, `from_end` bytes before its data ends (the
/// map shares the file's pages, so a read of the log sees the change at once).
fn flip_newest_segment_byte(dir: &std::path::Path, from_end: usize) {
    use std::os::unix::fs::FileExt;
    let (path, data, end) = newest_segment(dir);
    let at = end - from_end;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[data[at] ^ 0xff], at as u64).unwrap();
}

#[tokio::test]
async fn entries_not_yet_applied_are_read_from_memory_until_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut store, mut sm, _shared) = open(dir.path()).await;
    let (first, second) = (batch(3), batch(2));
    store
        .blocking_append([membership(1, 0), records(1, 1, first.clone())])
        .await
        .unwrap();
    store
        .blocking_append([records(1, 2, second.clone())])
        .await
        .unwrap();
    // Damage the last entry's payload on disk: the log itself now refuses to read it.
    flip_newest_segment_byte(dir.path(), 10);
    assert!(log.read_entries(2, 3, u64::MAX).is_err());

    // Not applied yet: the store serves entries 0..3 from what the appends wrote.
    let kept = store.try_get_log_entries(0..3).await.unwrap();
    let payloads: Vec<Bytes> = kept
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Normal(Request::Records { batch, .. }) => Some(batch.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(payloads.len(), 2);
    assert_eq!(payloads[1][16..], second[16..], "the bytes as written");
    assert_eq!(BatchHeader::parse(&payloads[1]).unwrap().base_offset, 3);

    // Applied: released, so reads go to the log again (and meet the damage).
    sm.apply(kept).await.unwrap();
    assert!(store.try_get_log_entries(2..3).await.is_err());
}

#[tokio::test]
async fn a_truncation_drops_the_entries_kept_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut store, _sm, _shared) = open(dir.path()).await;
    // After a truncation and a new append at the same index, a read returns the new entry,
    // never the one truncated away.
    store
        .blocking_append([
            membership(1, 0),
            records(1, 1, batch(2)),
            records(1, 2, batch(3)),
        ])
        .await
        .unwrap();
    store
        .blocking_append([records(1, 3, batch(1)), records(1, 4, batch(4))])
        .await
        .unwrap();
    store.truncate(log_id(1, 4)).await.unwrap();
    let left = store.try_get_log_entries(3..5).await.unwrap();
    assert_eq!(left.len(), 1, "the truncated entry is gone");
    let replacement = batch(5);
    store
        .blocking_append([records(2, 4, replacement.clone())])
        .await
        .unwrap();
    let read = store.try_get_log_entries(3..5).await.unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[1].log_id, log_id(2, 4));
    match &read[1].payload {
        EntryPayload::Normal(Request::Records { batch, .. }) => {
            assert_eq!(batch[16..], replacement[16..]);
        }
        other => panic!("unexpected payload {other:?}"),
    }
}

#[tokio::test]
async fn entries_kept_in_memory_are_never_read_below_the_purge_point_or_from_a_failed_log() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut store, _sm, _shared) = open(dir.path()).await;
    store
        .blocking_append([
            membership(1, 0),
            records(1, 1, batch(2)),
            records(1, 2, batch(3)),
            records(1, 3, batch(1)),
        ])
        .await
        .unwrap();
    // Purged up to 1 while 0..4 are kept (not applied): a read from 0 starts after the purge
    // point, as the log's own read does.
    store.purge(log_id(1, 1)).await.unwrap();
    let read = store.try_get_log_entries(0..4).await.unwrap();
    let indexes: Vec<u64> = read.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, [2, 3]);

    // A failed sync poisons the log: what the append wrote is not served from memory either.
    quipu_storage::fault::fail_next_sync(dir.path());
    assert!(
        store
            .blocking_append([records(1, 4, batch(2))])
            .await
            .is_err()
    );
    assert!(store.try_get_log_entries(2..4).await.is_err());
    assert!(store.try_get_log_entries(4..5).await.is_err());
}

/// A leader's entries reach its followers before its own log syncs them (openraft's
/// `leader_flush_beside_replication`), so a leader's log that was not closed cleanly may have
/// lost entries its followers hold, with no flush mark to tell. Its committed vote must then not
/// restore it as leader without an election: it comes back uncommitted, and stays so.
#[tokio::test]
async fn a_leaders_vote_comes_back_uncommitted_after_a_crash_and_committed_after_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let leads = Vote::new_committed(2, common::NODE);
    // A clean close keeps the vote committed: nothing unsynced can have been lost.
    {
        let (log, mut store, sm, _shared) = open(dir.path()).await;
        store
            .blocking_append([membership(1, 0), records(2, 1, batch(2))])
            .await
            .unwrap();
        store.save_vote(&leads).await.unwrap();
        close_cleanly(log, store, sm);
    }
    {
        let (_log, mut store, _sm, _shared) = open(dir.path()).await;
        assert_eq!(store.read_vote().await.unwrap(), Some(leads));
        store
            .blocking_append([records(2, 2, batch(1))])
            .await
            .unwrap();
        // Dropped without a close: a crash.
    }
    power_loss(dir.path(), PowerLoss::LoseUnsynced).unwrap();
    {
        let (log, mut store, sm, shared) = open(dir.path()).await;
        assert_eq!(
            store.read_vote().await.unwrap(),
            Some(Vote::new(2, common::NODE)),
            "after a crash a leader's vote is handed over uncommitted"
        );
        assert!(!shared.is_abstaining(), "no synced entry was lost");
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(log_id(2, 2))
        );
        close_cleanly(log, store, sm);
    }
    // The demotion was stored: a clean close after it does not bring the committed vote back.
    let (_log, mut store, _sm, _shared) = open(dir.path()).await;
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(Vote::new(2, common::NODE))
    );
}

/// A snapshot never names an entry the log could still lose (H7 in
/// `docs/internals/leader-flush-overlap.md`): a build whose applied state runs past the log's
/// durable end syncs the log first, so a power loss right after keeps every entry it covers.
#[tokio::test]
async fn a_snapshot_past_the_durable_end_syncs_the_log_before_it_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A log that does not sync its appends, as a leader's log whose own sync has not run
        // yet while its followers' acknowledgements commit the entries.
        let config = LogConfig {
            fsync: quipu_storage::FsyncPolicy::Never,
            ..LogConfig::default()
        };
        let log = Arc::new(Log::open(dir.path(), config).unwrap());
        let shared = Arc::new(quipu_raft::shared::PartitionShared::default());
        let mut store = LogStore::open(Arc::clone(&log), Arc::clone(&shared), common::NODE)
            .await
            .unwrap();
        let mut sm = PartitionStateMachine::open(dir.path().to_path_buf(), Arc::clone(&shared))
            .await
            .unwrap();
        sm.with_checkpoints(Arc::clone(&log)).await.unwrap();
        let mut entries = vec![membership(1, 0)];
        entries.extend((1..=5).map(|i| records(1, i, batch(10))));
        store.blocking_append(entries).await.unwrap();
        let read = store.try_get_log_entries(0..6).await.unwrap();
        sm.apply(read).await.unwrap();
        assert!(log.durable_next_index() <= 5, "nothing synced the appends");
        let snapshot = snapshot(&mut sm).await;
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 5)));
        assert!(log.durable_next_index() > 5, "the build synced the log");
        // Dropped without a close: a crash.
    }
    power_loss(dir.path(), PowerLoss::LoseUnsynced).unwrap();
    let (log, _store, mut sm, shared) = open(dir.path()).await;
    assert_eq!(
        sm.applied_state().await.unwrap().0,
        Some(log_id(1, 5)),
        "restarted from the snapshot"
    );
    assert_eq!(
        log.next_index(),
        6,
        "the log still holds every entry the snapshot covers"
    );
    assert_eq!(
        log.read_entries(1, 6, u64::MAX).unwrap().len(),
        5,
        "and their records"
    );
    assert_eq!(shared.high_watermark(), 50);
}

/// A snapshot built right after one was installed past the log's end (the log restarts after
/// it only at the next append) claims nothing new: it is built, not refused for the log's end.
#[tokio::test]
async fn a_snapshot_built_right_after_an_install_past_the_log_end_is_not_refused() {
    let (_leader_dir, leaders) = leader_snapshot_at_9().await;
    let dir = tempfile::tempdir().unwrap();
    let (log, mut store, mut sm, _shared) = open(dir.path()).await;
    sm.with_checkpoints(Arc::clone(&log)).await.unwrap();
    // A follower holding indexes 0..=2, behind the leader's purge point.
    store
        .blocking_append([membership(1, 0), records(1, 1, batch(10)), blank(1, 2)])
        .await
        .unwrap();
    store.purge(log_id(1, 9)).await.unwrap();
    let mut data = sm.begin_receiving_snapshot().await.unwrap();
    *data = *leaders.snapshot.clone();
    sm.install_snapshot(&leaders.meta, data).await.unwrap();
    assert_eq!(
        log.next_index(),
        3,
        "the log restarts only at the next append"
    );
    let built = snapshot(&mut sm).await;
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 9)));
}
