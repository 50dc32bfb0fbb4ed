//! openraft's storage conformance suite (`openraft::testing::Suite`) against the real
//! segment-backed log store and the partition state machine.
//!
//! Every test of the suite runs, each in its own runtime and directory, as `Suite::test_all`
//! would run them, except one: `get_initial_state_membership_from_log_and_sm` appends index 1 and
//! then index 3, leaving a hole that a segment log refuses by design (openraft's own contract says
//! the log must never have holes). That test is run too, and must fail with exactly that refusal.
#![allow(clippy::unwrap_used)] // tests unwrap

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use quipu_raft::shared::PartitionShared;
use quipu_raft::{LogStore, NodeId, PartitionStateMachine, TypeConfig};
use quipu_storage::{Log, LogConfig};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, PartitionStateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, PartitionStateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().unwrap();
        // Small segments, so purges and truncations cross segment boundaries.
        let config = LogConfig {
            segment_bytes_max: 1024,
            entry_bytes_max: 512,
            ..LogConfig::default()
        };
        let log = Arc::new(Log::open(dir.path(), config).unwrap());
        let shared = Arc::new(PartitionShared::default());
        let store = LogStore::open(log, Arc::clone(&shared), 0).await.unwrap();
        // As a partition's store does: reads of entries not yet applied come from memory.
        store.keep_recent_entries();
        let sm = PartitionStateMachine::open(dir.path().to_path_buf(), shared).await?;
        Ok((dir, store, sm))
    }
}

type S = Suite<TypeConfig, LogStore, PartitionStateMachine, Builder, TempDir>;

macro_rules! suite_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, store, sm) = Builder.build().await.unwrap();
            S::$name(store, sm).await.unwrap();
        }
    )*};
}

suite_tests!(
    last_membership_in_log_initial,
    last_membership_in_log,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_without_init,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_last_log_lt_sm,
    get_initial_state_log_ids,
    get_initial_state_re_apply_committed,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    try_get_log_entry,
    initial_logs,
    get_log_state,
    get_log_id,
    last_id_in_log,
    last_applied_state,
    purge_logs_upto_0,
    purge_logs_upto_5,
    purge_logs_upto_20,
    delete_logs_since_11,
    delete_logs_since_0,
    append_to_log,
    snapshot_meta,
    apply_single,
    apply_multiple,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_snapshot() {
    S::transfer_snapshot(&Builder).await.unwrap();
}

/// The one suite test that appends with a hole: its state machine applied up to index 2 with no
/// snapshot and an empty log, so start-up purges up to 2 past the log's end, which waits for a
/// snapshot ending at 2 (none will come); then it appends index 1. The store refuses instead of
/// storing a log that does not continue its purge point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_in_the_log_is_refused() {
    let (_dir, store, sm) = Builder.build().await.unwrap();
    let error = S::get_initial_state_membership_from_log_and_sm(store, sm)
        .await
        .unwrap_err();
    let text = format!("{error:?}");
    assert!(
        text.contains("entries from index 1 follow a snapshot ending at 2"),
        "{text}"
    );
}
