//! Helpers shared by the partition tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{Entry, RaftLogReader, RaftSnapshotBuilder, Snapshot};
use quipu_raft::shared::PartitionShared;
use quipu_raft::{LogStore, PartitionStateMachine, TypeConfig};
use quipu_storage::{Log, LogConfig};

/// The node the helpers open replicas on.
pub const NODE: quipu_raft::NodeId = 1;

/// A partition replica's log, log store, state machine and shared state, opened in `dir` on
/// node [`NODE`].
pub async fn open(
    dir: &std::path::Path,
) -> (
    Arc<Log>,
    LogStore,
    PartitionStateMachine,
    Arc<PartitionShared>,
) {
    open_with(dir, PartitionShared::default()).await
}

/// [`open`] with the shared state `shared`.
pub async fn open_with(
    dir: &std::path::Path,
    shared: PartitionShared,
) -> (
    Arc<Log>,
    LogStore,
    PartitionStateMachine,
    Arc<PartitionShared>,
) {
    let log = Arc::new(Log::open(dir, LogConfig::default()).unwrap());
    let shared = Arc::new(shared);
    let store = LogStore::open(Arc::clone(&log), Arc::clone(&shared), NODE)
        .await
        .unwrap();
    // As a partition's store does.
    store.keep_recent_entries();
    let sm = PartitionStateMachine::open(dir.to_path_buf(), Arc::clone(&shared))
        .await
        .unwrap();
    (log, store, sm, shared)
}

/// Appends `entries` to `store`, then reads back those with indexes in `range` and applies
/// them to `sm`; returns what was applied.
pub async fn append_and_apply(
    store: &mut LogStore,
    sm: &mut PartitionStateMachine,
    entries: Vec<Entry<TypeConfig>>,
    range: std::ops::Range<u64>,
) -> Vec<Entry<TypeConfig>> {
    store.blocking_append(entries).await.unwrap();
    let read = store.try_get_log_entries(range).await.unwrap();
    sm.apply(read.clone()).await.unwrap();
    read
}

/// A snapshot of everything `sm` applied.
pub async fn snapshot(sm: &mut PartitionStateMachine) -> Snapshot<TypeConfig> {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap()
}

/// A new replica (in a new directory, sharing `shared`) that installed a snapshot of `sm`.
pub async fn installed_from(
    sm: &mut PartitionStateMachine,
    shared: PartitionShared,
) -> (
    tempfile::TempDir,
    PartitionStateMachine,
    Arc<PartitionShared>,
) {
    let snapshot = snapshot(sm).await;
    let dir = tempfile::tempdir().unwrap();
    let (_log, _store, mut replica, replica_shared) = open_with(dir.path(), shared).await;
    replica
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    (dir, replica, replica_shared)
}
