//! The log store and state machine of a data partition beyond openraft's suite: records are
//! stored once with log-assigned offsets, the high watermark follows them, and the vote, purge
//! point and snapshot survive a power loss.
#![allow(clippy::unwrap_used)] // tests unwrap

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder,
    Vote,
};
use quipu_raft::shared::PartitionShared;
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

async fn open(
    dir: &std::path::Path,
) -> (
    Arc<Log>,
    LogStore,
    PartitionStateMachine,
    Arc<PartitionShared>,
) {
    let log = Arc::new(Log::open(dir, LogConfig::default()).unwrap());
    let shared = Arc::new(PartitionShared::default());
    let store = LogStore::open(Arc::clone(&log), Arc::clone(&shared))
        .await
        .unwrap();
    let sm = PartitionStateMachine::open(dir.to_path_buf(), Arc::clone(&shared))
        .await
        .unwrap();
    (log, store, sm, shared)
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
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
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
