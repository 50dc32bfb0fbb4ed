//! The snapshot of a small state machine (a partition's applied state, the controller's
//! metadata), kept in a state file as postcard of `(SnapshotMeta, data)`; shared by both state
//! machines. Layout: `docs/format/raft-entries.md`.

use std::path::PathBuf;

use openraft::{
    AnyError, BasicNode, LogId, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use quipu_storage::{read_state_file, write_state_file};

use crate::NodeId;

pub(crate) fn snapshot_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageError::from(StorageIOError::write_snapshot(None, AnyError::new(&error)))
}

/// One state machine's snapshot file.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFile {
    pub dir: PathBuf,
    pub name: &'static str,
    pub bytes_max: usize,
}

impl SnapshotFile {
    /// The last snapshot saved, if any.
    pub async fn load(
        &self,
    ) -> Result<Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>, StorageError<NodeId>> {
        let file = self.clone();
        let body = tokio::task::spawn_blocking(move || {
            read_state_file(&file.dir, file.name, file.bytes_max)
        })
        .await
        .map_err(snapshot_error)?
        .map_err(snapshot_error)?;
        body.map(|body| postcard::from_bytes(&body).map_err(snapshot_error))
            .transpose()
    }

    /// Saves a snapshot durably, replacing the previous one.
    pub async fn save(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError<NodeId>> {
        let body = postcard::to_allocvec(&(meta, data)).map_err(snapshot_error)?;
        let file = self.clone();
        tokio::task::spawn_blocking(move || write_state_file(&file.dir, file.name, &body))
            .await
            .map_err(snapshot_error)?
            .map_err(snapshot_error)
    }
}

/// The metadata of a snapshot of the state applied up to `last_applied`; `sequence` makes ids of
/// snapshots built at the same point distinct.
pub(crate) fn snapshot_meta(
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    sequence: u64,
) -> SnapshotMeta<NodeId, BasicNode> {
    let snapshot_id = match last_applied {
        Some(id) => format!("{}-{}-{sequence}", id.leader_id.term, id.index),
        None => format!("none-{sequence}"),
    };
    SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
        snapshot_id,
    }
}
