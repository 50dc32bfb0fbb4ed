//! A partition of the consumer groups' offsets topic: the state machine applies its group
//! records to the groups' state, which a snapshot carries to another replica and a checkpoint
//! across a restart; other partitions keep none.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::sync::Arc;

use common::{append_and_apply, installed_from, open, open_with};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use quipu_groups::{GroupRecord, GroupsState, OffsetKey, OffsetValue};
use quipu_raft::shared::PartitionShared;
use quipu_raft::{Request, TypeConfig};
use quipu_record::{BatchBuilder, Compression};

fn commit(group: &str, partition: i32, offset: Option<i64>) -> GroupRecord {
    GroupRecord::Offset {
        key: OffsetKey {
            group: group.into(),
            topic: "orders".into(),
            partition,
        },
        value: offset.map(|offset| OffsetValue {
            offset,
            leader_epoch: 1,
            metadata: String::new(),
            commit_timestamp_ms: 1_700_000_000_000,
        }),
    }
}

/// Entry `index`: one batch of `records`, compressed or not.
fn entry(index: u64, records: &[GroupRecord], compression: Compression) -> Entry<TypeConfig> {
    let mut builder = BatchBuilder::new(0, compression);
    for record in records {
        let (key, value) = record.encode().unwrap();
        builder.push(1_700_000_000_000, Some(&key), value.as_deref(), &[]);
    }
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(Request::Records {
            batch: builder.build().unwrap(),
            local_ack: None,
        }),
    }
}

fn groups_of(shared: &PartitionShared) -> GroupsState {
    shared.with_groups(|groups| groups.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offsets_partition_applies_group_records_and_carries_them() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut store, mut sm, shared) =
        open_with(dir.path(), PartitionShared::default().keeping_groups()).await;
    assert!(!sm.with_checkpoints(Arc::clone(&log)).await.unwrap());
    let entries = vec![
        entry(
            0,
            &[commit("a", 0, Some(5)), commit("a", 1, Some(9))],
            Compression::None,
        ),
        entry(
            1,
            &[commit("b", 0, Some(2)), commit("a", 1, None)],
            Compression::Zstd,
        ),
    ];
    append_and_apply(&mut store, &mut sm, entries, 0..2).await;
    let state = groups_of(&shared);
    assert_eq!(state.committed("a", "orders", 0).map(|v| v.offset), Some(5));
    assert!(state.committed("a", "orders", 1).is_none());
    assert_eq!(state.committed("b", "orders", 0).map(|v| v.offset), Some(2));

    // A snapshot carries it to another replica of the partition.
    let (_other, _follower, follower_shared) =
        installed_from(&mut sm, PartitionShared::default().keeping_groups()).await;
    assert_eq!(groups_of(&follower_shared), state);

    // A checkpoint carries it across a restart.
    log.sync().unwrap();
    assert!(sm.checkpoint_now().await.unwrap());
    drop((log, store, sm, shared));
    std::fs::remove_file(dir.path().join(quipu_raft::SNAPSHOT_FILE)).unwrap();
    let (log, _store, sm, shared) =
        open_with(dir.path(), PartitionShared::default().keeping_groups()).await;
    assert!(sm.with_checkpoints(Arc::clone(&log)).await.unwrap());
    assert_eq!(groups_of(&shared), state);
}

#[tokio::test]
async fn other_partitions_keep_no_groups_state() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut store, mut sm, shared) = open(dir.path()).await;
    let batch = entry(0, &[commit("a", 0, Some(5))], Compression::None);
    append_and_apply(&mut store, &mut sm, vec![batch], 0..1).await;
    assert!(shared.with_groups(|_| ()).is_none());
}
