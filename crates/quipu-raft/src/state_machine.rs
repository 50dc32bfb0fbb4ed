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
//! the log start" in `docs/internals/replication.md`. Since a snapshot stands for the log before
//! its point, it is saved only once the log holds every entry up to that point durably.
//!
//! Applying an idempotent producer's batch records it in the partition's producer table
//! (`crate::producers`), which snapshots and checkpoints carry after the applied state. A
//! snapshot built below the applied index carries the table as of when it was built; applying
//! the entries after the snapshot's point on top of it skips what it recorded already.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::producers::{ProducerBatch, ProducerTable};
use crate::shared::{PartitionShared, SnapshotTarget};
use crate::snapshot_file::{SnapshotFile, snapshot_error, snapshot_meta};
use crate::{NodeId, Request, Response, TypeConfig};

/// Name of the state file holding the last snapshot.
pub const SNAPSHOT_FILE: &str = "raft_snapshot";
/// Largest accepted snapshot file body (the producer table is most of it: about 130 bytes per
/// producer at most, and at most 100,000 producers per partition).
pub const SNAPSHOT_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Name of the state file holding the applied-state checkpoint.
pub const CHECKPOINT_FILE: &str = "raft_applied";
/// Largest accepted checkpoint file body (as [`SNAPSHOT_BYTES_MAX`]).
const CHECKPOINT_BYTES_MAX: usize = SNAPSHOT_BYTES_MAX;
/// A checkpoint is due after this many applied entries, or [`CHECKPOINT_BYTES`] of applied
/// batches, whichever comes first...
const CHECKPOINT_ENTRIES: u64 = 4096;
/// ... (see [`CHECKPOINT_ENTRIES`]) ...
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;
/// ... and at most one is written per this interval (each costs two fsyncs).
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The applied state as a checkpoint saves it: what a restart starts from instead of applying
/// the log again from the last snapshot. Never sent to another replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    applied: Applied,
    earlier_memberships: Vec<StoredMembership<NodeId, BasicNode>>,
    records_start: u64,
}

/// When the next checkpoint is due, and where they are written.
#[derive(Debug)]
struct Checkpoints {
    log: Arc<quipu_storage::Log>,
    entries: u64,
    bytes: u64,
    last: std::time::Instant,
    /// Held while a checkpoint is written; holds the last index written, so that writes never go
    /// backwards.
    written: Arc<tokio::sync::Mutex<Option<u64>>>,
}

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
    /// Set by [`PartitionStateMachine::with_checkpoints`].
    checkpoints: Option<Checkpoints>,
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
            let (applied, tables) = decode_state::<Applied>(&data).map_err(snapshot_error)?;
            state.applied = applied;
            set_tables(&shared, tables);
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

    /// Starts from the applied-state checkpoint in this partition's directory if it is ahead of
    /// the snapshot and `log` holds its last entry (same index and term: a log that lost or
    /// replaced entries since is never trusted past them); from then on saves a checkpoint
    /// every [`CHECKPOINT_ENTRIES`] entries or [`CHECKPOINT_BYTES`] of batches (at most one per
    /// [`CHECKPOINT_INTERVAL`]), only ever of entries `log` holds durably. A restart then applies
    /// only what follows the checkpoint, and openraft's search for the last membership reads
    /// only that part of the log. Returns whether the checkpoint was taken up.
    pub async fn with_checkpoints(
        &self,
        log: Arc<quipu_storage::Log>,
    ) -> Result<bool, StorageError<NodeId>> {
        let dir = self.file.dir.clone();
        let read = tokio::task::spawn_blocking(move || {
            quipu_storage::read_state_file(&dir, CHECKPOINT_FILE, CHECKPOINT_BYTES_MAX)
        })
        .await
        .map_err(sm_error)?;
        // Only a shortcut: a checkpoint that cannot be read or decoded is set aside with a
        // warning and the log is applied from the snapshot, as without one; the replica is not
        // failed for it.
        let checkpoint = match read.map(|body| body.map(|b| decode_state::<Checkpoint>(&b))) {
            Ok(Some(Ok(checkpoint))) => Some(checkpoint),
            Ok(None) => None,
            Ok(Some(Err(e))) => {
                tracing::warn!(dir = %self.file.dir.display(), error = &e as &dyn std::error::Error, "undecodable applied-state checkpoint ignored");
                None
            }
            Err(e) => {
                tracing::warn!(dir = %self.file.dir.display(), error = &e as &dyn std::error::Error, "unreadable applied-state checkpoint ignored");
                None
            }
        };
        let mut taken = false;
        if let Some((checkpoint, tables)) = checkpoint {
            let snapshot_index = self.lock().applied.last_applied.map(|id| id.index);
            if let Some(last) = checkpoint.applied.last_applied
                && snapshot_index.is_none_or(|s| last.index > s)
                && holds(&log, last).await?
            {
                self.shared
                    .set_high_watermark(checkpoint.applied.high_watermark);
                self.shared.delete_records_before(checkpoint.records_start);
                set_tables(&self.shared, tables);
                let mut state = self.lock();
                state.applied = checkpoint.applied;
                state.earlier_memberships = checkpoint.earlier_memberships;
                taken = true;
            }
        }
        let now = std::time::Instant::now();
        self.lock().checkpoints = Some(Checkpoints {
            log,
            entries: 0,
            bytes: 0,
            // The first one may come as soon as it is due.
            last: now.checked_sub(CHECKPOINT_INTERVAL).unwrap_or(now),
            written: Arc::default(),
        });
        Ok(taken)
    }

    /// Saves a checkpoint of everything applied now if the log holds all of it durably (as a
    /// graceful stop does, after syncing the log); returns whether one was written.
    pub async fn checkpoint_now(&self) -> Result<bool, StorageError<NodeId>> {
        let due = {
            let mut state = self.lock();
            state.due_checkpoint(true)
        };
        match due {
            Some((mut checkpoint, written)) => {
                checkpoint.records_start = self.shared.records_start();
                let tables = tables_of(&self.shared);
                write_checkpoint(&self.file.dir, checkpoint, tables, &written).await
            }
            None => Ok(false),
        }
    }
}

/// Whether `log` holds the entry `id` (that index, written in that term).
async fn holds(
    log: &Arc<quipu_storage::Log>,
    id: LogId<NodeId>,
) -> Result<bool, StorageError<NodeId>> {
    let log = Arc::clone(log);
    let index = id.index;
    let entry = tokio::task::spawn_blocking(move || {
        if index < log.first_index() || index >= log.next_index() {
            return Ok(None);
        }
        log.read_entries(index, index + 1, 1)
            .map(|e| e.into_iter().next())
    })
    .await
    .map_err(sm_error)?
    .map_err(sm_error)?;
    Ok(entry.is_some_and(|e| e.index == id.index && e.term == id.leader_id.term))
}

/// Writes `checkpoint` unless a newer one was written already (writes are serialised on
/// `written`).
async fn write_checkpoint(
    dir: &std::path::Path,
    checkpoint: Checkpoint,
    tables: Tables,
    written: &Arc<tokio::sync::Mutex<Option<u64>>>,
) -> Result<bool, StorageError<NodeId>> {
    let index = checkpoint.applied.last_applied.map(|id| id.index);
    let mut last = written.lock().await;
    if index <= *last {
        return Ok(false);
    }
    let body = encode_state(&checkpoint, &tables).map_err(sm_error)?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        quipu_storage::write_state_file(&dir, CHECKPOINT_FILE, &body)
    })
    .await
    .map_err(sm_error)?
    .map_err(sm_error)?;
    *last = index;
    Ok(true)
}

impl State {
    /// The checkpoint to write now, if one is due (`now`: whenever anything was applied since)
    /// and the log holds everything applied durably; resets the counters when it is.
    fn due_checkpoint(
        &mut self,
        now: bool,
    ) -> Option<(Checkpoint, Arc<tokio::sync::Mutex<Option<u64>>>)> {
        let last_applied = self.applied.last_applied?;
        let checkpoints = self.checkpoints.as_mut()?;
        let due = now
            || ((checkpoints.entries >= CHECKPOINT_ENTRIES
                || checkpoints.bytes >= CHECKPOINT_BYTES)
                && checkpoints.last.elapsed() >= CHECKPOINT_INTERVAL);
        if !due || last_applied.index >= checkpoints.log.durable_next_index() {
            return None;
        }
        checkpoints.entries = 0;
        checkpoints.bytes = 0;
        checkpoints.last = std::time::Instant::now();
        let written = Arc::clone(&checkpoints.written);
        Some((
            Checkpoint {
                applied: self.applied.clone(),
                earlier_memberships: self.earlier_memberships.clone(),
                // Filled in by the caller, from the partition's shared state.
                records_start: 0,
            },
            written,
        ))
    }
}

/// Makes `log` hold every entry up to `index` durably, before a snapshot at `index` is saved. A
/// snapshot carries no records: it says where the log starts, and openraft purges the log up to
/// it, so a snapshot past the log's durable end would, after a power loss, claim records the log
/// no longer holds. Retention's targets lie at sealed (synced) segments, but the applied state
/// of a leader may run ahead of its own sync (its followers' acknowledgements commit an entry
/// first, `docs/internals/leader-flush-overlap.md`, H7), and so may that of a log with `fsync`
/// other than `always`.
async fn durable_through(log: Arc<quipu_storage::Log>, index: u64) -> Result<(), SnapshotError> {
    if index < log.durable_next_index() {
        return Ok(());
    }
    let syncing = Arc::clone(&log);
    tokio::task::spawn_blocking(move || syncing.sync_to(index + 1))
        .await
        .map_err(|source| SnapshotError::SyncStopped { index, source })?
        .map_err(|source| SnapshotError::Sync { index, source })?;
    let durable_next = log.durable_next_index();
    if index < durable_next {
        Ok(())
    } else {
        Err(SnapshotError::NotInLog {
            index,
            durable_next,
        })
    }
}

/// Why a snapshot was not built.
#[derive(Debug, thiserror::Error)]
enum SnapshotError {
    /// The blocking task syncing the log did not finish.
    #[error("the sync of the log through index {index} before a snapshot stopped")]
    SyncStopped {
        index: u64,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The log's sync failed.
    #[error("the log could not be synced through index {index} before a snapshot")]
    Sync {
        index: u64,
        #[source]
        source: quipu_storage::SyncError,
    },
    /// The log does not hold the entry the snapshot would end at (an applied entry it lost).
    #[error("a snapshot at index {index} refused: the log holds entries only below {durable_next}")]
    NotInLog { index: u64, durable_next: u64 },
}

impl From<SnapshotError> for StorageError<NodeId> {
    fn from(error: SnapshotError) -> Self {
        snapshot_error(error)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for PartitionStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // openraft runs a build beside an install: both write the snapshot file one at a time,
        // and a snapshot never replaces a newer one.
        let _writing = self.snapshot_io.lock().await;
        let target = self.shared.take_snapshot_target();
        let (meta, data, log, current) = {
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
            let tables = tables_of(&self.shared);
            (
                meta,
                encode_state(&applied, &tables).map_err(snapshot_error)?,
                state.checkpoints.as_ref().map(|c| Arc::clone(&c.log)),
                current,
            )
        };
        // A snapshot at or below the one this replica holds claims nothing new (after an install
        // past the log's end, the log restarts after it only at the next append).
        if let (Some(log), Some(last)) = (log, meta.last_log_id)
            && current.is_none_or(|current| last.index > current.index)
        {
            durable_through(log, last.index).await?;
        }
        self.file.save(&meta, &data).await?;
        if let Some(last) = meta.last_log_id {
            let (applied, _) = decode_state::<Applied>(&data).map_err(snapshot_error)?;
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
        let (mut applied_entries, mut applied_bytes) = (0u64, 0u64);
        for entry in entries {
            applied_entries += 1;
            if let EntryPayload::Normal(Request::Records { batch, .. }) = &entry.payload {
                applied_bytes += batch.len() as u64;
            }
            state.applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank | EntryPayload::Normal(Request::Metadata(_)) => {
                    Response::default()
                }
                EntryPayload::Normal(Request::Records { batch, .. }) => {
                    // The log validated the batches and wrote their base offsets when
                    // appending them; each is applied in turn.
                    let mut first = None;
                    for batch in quipu_record::batches(batch, usize::MAX) {
                        let batch = batch.map_err(sm_error)?;
                        let header = quipu_record::BatchHeader::parse(&batch).map_err(sm_error)?;
                        let base = u64::try_from(header.base_offset).map_err(sm_error)?;
                        first.get_or_insert(base);
                        state.applied.high_watermark = base + header.offset_count();
                        // The leader refused malformed producer fields before proposing; one
                        // that got into the log anyway (an older build) is simply not tracked.
                        if let Ok(Some(producer)) = ProducerBatch::of(&header) {
                            let settings = self.shared.producer_settings();
                            let now = settings.now_ms();
                            self.shared.with_producers(|table| {
                                table.record(&producer, Some(base), now, &settings.limits);
                            });
                        }
                        self.shared
                            .with_groups(|groups| apply_group_records(groups, &batch, base));
                    }
                    Response {
                        base_offset: first,
                        ..Response::default()
                    }
                }
                EntryPayload::Normal(Request::DeleteRecords { before }) => {
                    // Against the watermark of the entries applied before this one.
                    self.shared.set_high_watermark(state.applied.high_watermark);
                    Response {
                        base_offset: Some(self.shared.delete_records_before(before)),
                        ..Response::default()
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
        if let Some(checkpoints) = state.checkpoints.as_mut() {
            checkpoints.entries += applied_entries;
            checkpoints.bytes += applied_bytes;
        }
        if let Some(last) = state.applied.last_applied {
            // The log store kept these in memory for this read; they are not read again soon.
            self.shared.release_recent(last.index);
        }
        if let Some((mut checkpoint, written)) = state.due_checkpoint(false) {
            checkpoint.records_start = self.shared.records_start();
            let tables = tables_of(&self.shared);
            let dir = self.file.dir.clone();
            // In the background: the next apply need not wait for the two fsyncs.
            tokio::spawn(async move {
                if let Err(e) = write_checkpoint(&dir, checkpoint, tables, &written).await {
                    tracing::warn!(dir = %dir.display(), error = &e as &dyn std::error::Error, "cannot write the applied-state checkpoint");
                }
            });
        }
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
        let (applied, tables) = decode_state::<Applied>(&data).map_err(snapshot_error)?;
        self.file.save(meta, &data).await?;
        if let Some(last) = meta.last_log_id {
            self.shared.release_recent(last.index);
            self.shared
                .set_installed(last.index, applied.high_watermark);
            // Everything up to the snapshot is held durably now: a replica that abstained for
            // entries it lost may have them back this way, with no append after.
            self.shared.note_flushed(last.index + 1);
        }
        self.shared.set_high_watermark(applied.high_watermark);
        set_tables(&self.shared, tables);
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

/// What snapshots and checkpoints carry after the state: the producer table, and for a partition
/// of the offsets topic the groups' state.
#[derive(Debug, Default)]
struct Tables {
    producers: ProducerTable,
    groups: Option<quipu_groups::GroupsState>,
}

/// The tables of a partition now.
fn tables_of(shared: &PartitionShared) -> Tables {
    Tables {
        producers: shared.with_producers(|table| table.clone()),
        groups: shared.with_groups(|groups| groups.clone()),
    }
}

/// Puts `tables` in place (a partition of the offsets topic whose file holds no groups' state
/// gets an empty one).
fn set_tables(shared: &PartitionShared, tables: Tables) {
    shared.with_producers(|table| *table = tables.producers);
    shared.with_groups(|groups| *groups = tables.groups.unwrap_or_default());
}

/// Applies the records of a batch of the offsets topic to the groups' state. The coordinator
/// wrote them; a record that does not decode (never expected) is skipped with a warning, never
/// a reason to fail the replica.
fn apply_group_records(groups: &mut quipu_groups::GroupsState, batch: &bytes::Bytes, base: u64) {
    match quipu_record::decode_records(batch, GROUP_BATCH_BYTES_MAX) {
        Ok(records) => {
            for record in records {
                match quipu_groups::GroupRecord::decode(
                    record.key.as_deref(),
                    record.value.as_deref(),
                ) {
                    Ok(record) => groups.apply(record),
                    Err(e) => {
                        tracing::warn!(
                            base_offset = base,
                            error = &e as &dyn std::error::Error,
                            "an undecodable group record is skipped"
                        )
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(
                base_offset = base,
                error = &e as &dyn std::error::Error,
                "an undecodable batch of group records is skipped"
            )
        }
    }
}

/// Largest decompressed batch of the offsets topic that is applied.
const GROUP_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The state as snapshots and checkpoints hold it: postcard of `state`, then postcard of the
/// producer table, then, for a partition of the offsets topic, postcard of the groups' state
/// (files written before producers were tracked end after the state: an empty table).
fn encode_state<S: Serialize>(state: &S, tables: &Tables) -> Result<Vec<u8>, postcard::Error> {
    let mut bytes = postcard::to_allocvec(state)?;
    bytes.extend_from_slice(&postcard::to_allocvec(&tables.producers)?);
    if let Some(groups) = &tables.groups {
        bytes.extend_from_slice(&postcard::to_allocvec(groups)?);
    }
    Ok(bytes)
}

/// Reads what [`encode_state`] wrote.
fn decode_state<S: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<(S, Tables), postcard::Error> {
    let (state, rest) = postcard::take_from_bytes::<S>(bytes)?;
    let mut tables = Tables::default();
    if !rest.is_empty() {
        let (producers, rest) = postcard::take_from_bytes::<ProducerTable>(rest)?;
        tables.producers = producers;
        if !rest.is_empty() {
            // Format 1.4 held the committed offsets only, 1.5 classic groups' metadata too.
            type Offsets = std::collections::BTreeMap<
                String,
                std::collections::BTreeMap<(String, i32), quipu_groups::OffsetValue>,
            >;
            type Metadata = std::collections::BTreeMap<String, quipu_groups::GroupMetadata>;
            let groups = postcard::from_bytes(rest)
                .or_else(|_| {
                    postcard::from_bytes::<(Offsets, Metadata)>(rest).map(|(offsets, metadata)| {
                        quipu_groups::GroupsState::from_parts(offsets, metadata)
                    })
                })
                .or_else(|_| {
                    postcard::from_bytes(rest).map(quipu_groups::GroupsState::from_offsets)
                })?;
            tables.groups = Some(groups);
        }
    }
    Ok((state, tables))
}
