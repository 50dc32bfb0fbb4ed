//! The partition's producer table as the state machine keeps it: recorded from applied batches,
//! carried by a snapshot to another replica and by a checkpoint across a restart, and not
//! changed when entries it already covers are applied again on top of a snapshot.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::sync::Arc;

use common::{append_and_apply, installed_from, open, snapshot};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use quipu_raft::producers::{ProducerBatch, SequenceCheck};
use quipu_raft::shared::PartitionShared;
use quipu_raft::{Request, TypeConfig};
use quipu_record::{BatchBuilder, Compression};

fn records(index: u64, producer: Option<(i64, i32)>, count: i32) -> Entry<TypeConfig> {
    let mut builder = BatchBuilder::new(0, Compression::None);
    if let Some((id, sequence)) = producer {
        builder = builder.with_producer(id, 0, sequence);
    }
    for i in 0..count {
        builder.push(1_000 + i64::from(i), None, Some(b"value"), &[]);
    }
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(Request::Records {
            batch: builder.build().unwrap(),
            local_ack: None,
        }),
    }
}

fn check(shared: &PartitionShared, id: i64, first: i32, count: i32) -> SequenceCheck {
    let batch = ProducerBatch {
        producer_id: id,
        epoch: 0,
        first_sequence: first,
        last_sequence: first + count - 1,
    };
    shared.with_producers(|table| table.check(&batch)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_table_follows_the_log_into_snapshots_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    // Producer 5 writes sequences 0..3 and 3..5, producer 6 sequence 0..2; a plain batch
    // between them is not tracked.
    let entries = vec![
        records(0, Some((5, 0)), 3),
        records(1, None, 4),
        records(2, Some((6, 0)), 2),
        records(3, Some((5, 3)), 2),
    ];
    let (log, mut store, mut sm, shared) = open(dir.path()).await;
    assert!(!sm.with_checkpoints(Arc::clone(&log)).await.unwrap());
    let read = append_and_apply(&mut store, &mut sm, entries, 0..4).await;
    assert_eq!(shared.with_producers(|t| t.len()), 2);
    // Offsets as the log gave them: 0, then 3 (the plain batch), 7, 9.
    assert_eq!(
        check(&shared, 5, 3, 2),
        SequenceCheck::Duplicate {
            base_offset: Some(9)
        }
    );
    assert_eq!(
        check(&shared, 5, 0, 3),
        SequenceCheck::Duplicate {
            base_offset: Some(0)
        }
    );
    assert_eq!(
        check(&shared, 6, 0, 2),
        SequenceCheck::Duplicate {
            base_offset: Some(7)
        }
    );
    assert_eq!(check(&shared, 5, 5, 1), SequenceCheck::Append);
    let table = shared.with_producers(|t| t.clone());

    // A snapshot carries the table to another replica, and applying entries it covers again
    // (as a follower does with the entries after a snapshot built below the applied index)
    // changes nothing.
    let (_other, mut follower, follower_shared) =
        installed_from(&mut sm, PartitionShared::default()).await;
    assert_eq!(follower_shared.with_producers(|t| t.clone()), table);
    follower.apply(read[2..].to_vec()).await.unwrap();
    assert_eq!(follower_shared.with_producers(|t| t.clone()), table);

    // A checkpoint carries it across a restart; so does the snapshot file alone.
    log.sync().unwrap();
    assert!(sm.checkpoint_now().await.unwrap());
    drop((log, store, sm, shared));
    let (log, _store, sm, shared) = open(dir.path()).await;
    assert_eq!(
        shared.with_producers(|t| t.clone()),
        table,
        "from the snapshot file"
    );
    std::fs::remove_file(dir.path().join(quipu_raft::SNAPSHOT_FILE)).unwrap();
    drop((log, _store, sm, shared));
    let (log, _store, sm, shared) = open(dir.path()).await;
    assert!(shared.with_producers(|t| t.is_empty()));
    assert!(sm.with_checkpoints(Arc::clone(&log)).await.unwrap());
    assert_eq!(
        shared.with_producers(|t| t.clone()),
        table,
        "from the checkpoint"
    );
}

/// Files written before producers were tracked (no table after the applied state) still open,
/// with an empty table.
#[tokio::test]
async fn a_snapshot_without_a_producer_table_opens_with_none() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut store, mut sm, _shared) = open(dir.path()).await;
        append_and_apply(&mut store, &mut sm, vec![records(0, None, 1)], 0..1).await;
        snapshot(&mut sm).await;
    }
    // Cut the (empty) table off the snapshot's data, as an older build wrote it.
    let body = quipu_storage::read_state_file(dir.path(), quipu_raft::SNAPSHOT_FILE, 1 << 20)
        .unwrap()
        .unwrap();
    let (meta, mut data): (openraft::SnapshotMeta<u64, openraft::BasicNode>, Vec<u8>) =
        postcard::from_bytes(&body).unwrap();
    assert_eq!(data.pop(), Some(0), "an empty table is one zero byte");
    let old = postcard::to_allocvec(&(meta, data)).unwrap();
    quipu_storage::write_state_file(dir.path(), quipu_raft::SNAPSHOT_FILE, &old).unwrap();
    let (_log, _store, mut sm, shared) = open(dir.path()).await;
    assert!(shared.with_producers(|t| t.is_empty()));
    assert!(sm.applied_state().await.unwrap().0.is_some());
}
