//! [`PartitionStateMachine`]: the state machine of a data partition. It holds no records: the
//! records live once, in the segment log. Applying a record entry advances the high watermark to
//! the end of its batch, whose base offset the log assigned on append (so the watermark is a
//! function of the entry alone and survives re-application from any point).
//!
//! A snapshot is the state at a log position (last log id, membership, and the offset after it),
//! kept in the `raft_snapshot` state file. It carries no records: it marks where a replica's log
//! starts. Retention asks for a snapshot at a segment boundary (`PartitionShared::
//! set_snapshot_target`), then openraft purges the log up to it; a follower whose log ends
//! before the leader's log start installs that snapshot, restarts its log right after it, and
//! receives the entries that follow by ordinary replication. See "Retention and followers behind
//! the log start" in `docs/internals/replication.md`.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::shared::{PartitionShared, SnapshotTarget};
use crate::snapshot_file::{SnapshotFile, snapshot_error, snapshot_meta};
use crate::{NodeId, Request, Response, TypeConfig};

/// Name of the state file holding the last snapshot.
pub const SNAPSHOT_FILE: &str = "raft_snapshot";
/// Largest accepted snapshot file body.
const SNAPSHOT_BYTES_MAX: usize = 1024 * 1024;

/// The applied state; also the snapshot's data (postcard).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    high_watermark: u64,
}

#[derive(Debug, Default)]
struct State {
    applied: Applied,
    /// Memberships applied before the current one, oldest first, back to the one in effect at
    /// the last snapshot: a snapshot below the applied index takes the membership of its point.
    earlier_memberships: Vec<StoredMembership<NodeId, BasicNode>>,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

impl State {
    /// The state at `target`, at or below the applied index: its log id, the membership in effect
    /// there, and the offset after it.
    fn at(&self, target: SnapshotTarget) -> Applied {
        let membership = std::iter::once(&self.applied.membership)
            .chain(self.earlier_memberships.iter().rev())
            .find(|m| m.log_id().is_none_or(|id| id.index <= target.index))
            .cloned()
            .unwrap_or_default();
        Applied {
            last_applied: Some(crate::codec::log_id(target.term, target.index)),
            membership,
            high_watermark: target.next_offset,
        }
    }

    /// Drops memberships no snapshot at or after `point` can need (keeps the one in effect there).
    fn forget_memberships_before(&mut self, point: Option<LogId<NodeId>>) {
        let Some(point) = point else { return };
        let in_effect = self
            .earlier_memberships
            .iter()
            .rposition(|m| m.log_id().is_none_or(|id| id.index <= point.index));
        if let Some(keep_from) = in_effect {
            self.earlier_memberships.drain(..keep_from);
        }
    }
}

/// A data partition's state machine. Clones share state (one is the snapshot builder).
#[derive(Debug, Clone)]
pub struct PartitionStateMachine {
    file: SnapshotFile,
    state: Arc<Mutex<State>>,
    shared: Arc<PartitionShared>,
    /// Held while a snapshot is saved and published (a build and an install may overlap).
    snapshot_io: Arc<tokio::sync::Mutex<()>>,
}

fn sm_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageError::from(StorageIOError::write_state_machine(AnyError::new(&error)))
}

impl PartitionStateMachine {
    /// Opens the state machine of the partition in `dir`, starting from its last snapshot.
    pub async fn open(
        dir: PathBuf,
        shared: Arc<PartitionShared>,
    ) -> Result<PartitionStateMachine, StorageError<NodeId>> {
        let file = SnapshotFile {
            dir,
            name: SNAPSHOT_FILE,
            bytes_max: SNAPSHOT_BYTES_MAX,
        };
        let saved = file.load().await?;
        let mut state = State::default();
        if let Some((meta, data)) = saved {
            state.applied = postcard::from_bytes(&data).map_err(snapshot_error)?;
            shared.set_high_watermark(state.applied.high_watermark);
            if let Some(last) = meta.last_log_id {
                shared.set_installed(last.index, state.applied.high_watermark);
            }
            state.snapshot = Some((meta, data));
        }
        Ok(PartitionStateMachine {
            file,
            state: Arc::new(Mutex::new(state)),
            shared,
            snapshot_io: Arc::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("state machine lock poisoned by a panic")
    }
}

impl RaftSnapshotBuilder<TypeConfig> for PartitionStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // openraft runs a build beside an install: both write the snapshot file one at a time,
        // and a snapshot never replaces a newer one.
        let _writing = self.snapshot_io.lock().await;
        let target = self.shared.take_snapshot_target();
        let (meta, data) = {
            let mut state = self.lock();
            let current = state
                .snapshot
                .as_ref()
                .and_then(|(meta, _)| meta.last_log_id);
            // A target at or below the current snapshot (a stale request) changes nothing.
            if let (Some(target), Some(current)) = (target, current)
                && target.index <= current.index
                && let Some((meta, data)) = state.snapshot.clone()
            {
                return Ok(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                });
            }
            state.snapshots_built += 1;
            let applied = match target {
                Some(target)
                    if state
                        .applied
                        .last_applied
                        .is_some_and(|applied| target.index <= applied.index) =>
                {
                    state.at(target)
                }
                _ => state.applied.clone(),
            };
            let meta = snapshot_meta(
                applied.last_applied,
                applied.membership.clone(),
                state.snapshots_built,
            );
            (
                meta,
                postcard::to_allocvec(&applied).map_err(snapshot_error)?,
            )
        };
        self.file.save(&meta, &data).await?;
        if let Some(last) = meta.last_log_id {
            let applied: Applied = postcard::from_bytes(&data).map_err(snapshot_error)?;
            self.shared
                .set_installed(last.index, applied.high_watermark);
        }
        {
            let mut state = self.lock();
            let point = meta.last_log_id;
            state.forget_memberships_before(point);
            state.snapshot = Some((meta.clone(), data.clone()));
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for PartitionStateMachine {
    type SnapshotBuilder = PartitionStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let state = self.lock();
        Ok((state.applied.last_applied, state.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self.lock();
        let mut responses = Vec::new();
        for entry in entries {
            state.applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank | EntryPayload::Normal(Request::Metadata(_)) => {
                    Response::default()
                }
                EntryPayload::Normal(Request::Records { batch, .. }) => {
                    // The log validated the batch and wrote its base offset when appending it.
                    let header = quipu_record::BatchHeader::parse(&batch).map_err(sm_error)?;
                    let base = u64::try_from(header.base_offset).map_err(sm_error)?;
                    state.applied.high_watermark = base + header.offset_count();
                    Response {
                        base_offset: Some(base),
                        error: None,
                    }
                }
                EntryPayload::Normal(Request::DeleteRecords { before }) => {
                    // Against the watermark of the entries applied before this one.
                    self.shared.set_high_watermark(state.applied.high_watermark);
                    Response {
                        base_offset: Some(self.shared.delete_records_before(before)),
                        error: None,
                    }
                }
                EntryPayload::Membership(membership) => {
                    let previous = std::mem::replace(
                        &mut state.applied.membership,
                        StoredMembership::new(Some(entry.log_id), membership),
                    );
                    state.earlier_memberships.push(previous);
                    Response::default()
                }
            };
            responses.push(response);
        }
        self.shared.set_high_watermark(state.applied.high_watermark);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let _writing = self.snapshot_io.lock().await;
        let data = snapshot.into_inner();
        let applied: Applied = postcard::from_bytes(&data).map_err(snapshot_error)?;
        self.file.save(meta, &data).await?;
        if let Some(last) = meta.last_log_id {
            self.shared
                .set_installed(last.index, applied.high_watermark);
            // Everything up to the snapshot is held durably now: a replica that abstained for
            // entries it lost may have them back this way, with no append after.
            self.shared.note_flushed(last.index + 1);
        }
        self.shared.set_high_watermark(applied.high_watermark);
        let mut state = self.lock();
        state.applied = applied;
        state.earlier_memberships.clear();
        state.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.lock().snapshot.clone().map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
