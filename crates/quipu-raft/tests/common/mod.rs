//! Helpers shared by the partition tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use quipu_raft::shared::PartitionShared;
use quipu_raft::{LogStore, PartitionStateMachine};
use quipu_storage::{Log, LogConfig};

/// A partition replica's log, log store, state machine and shared state, opened in `dir`.
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
    let store = LogStore::open(Arc::clone(&log), Arc::clone(&shared))
        .await
        .unwrap();
    let sm = PartitionStateMachine::open(dir.to_path_buf(), Arc::clone(&shared))
        .await
        .unwrap();
    (log, store, sm, shared)
}
