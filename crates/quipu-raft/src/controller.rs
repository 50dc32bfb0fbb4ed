//! [`ControllerStateMachine`]: the state machine of the controller group (group 0). It applies
//! [`quipu_meta::Command`]s, carried as postcard in `Request::Metadata`, to the cluster's
//! [`Metadata`] in log order, and hands the effects for this node to the node runtime through a
//! bounded channel. A snapshot is the whole metadata, in the `controller_snapshot` state file;
//! openraft takes one every so many entries and purges the log before it.
//!
//! Invariant: a command the metadata refuses changes nothing and is answered with its error;
//! effects are emitted in log order, and again when entries are re-applied after a restart
//! (carrying them out is idempotent: opening an open replica is a no-op).
//! Invariant: a snapshot is written only once the node carried out every effect of the entries
//! it covers ([`EffectsProgress`]), since those entries are never applied again here: a restart
//! from it starts the replicas it says this node holds ([`Metadata::effects_to_restore`]), and a
//! snapshot installed from the leader emits what lies between the two states
//! ([`Metadata::effects_towards`]).

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StoredMembership,
};
use quipu_meta::{Command, Effect, Metadata};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::snapshot_file::{SnapshotFile, snapshot_error, snapshot_meta};
use crate::{NodeId, Request, Response, TypeConfig};

/// Name of the state file holding the controller's last snapshot.
pub const CONTROLLER_SNAPSHOT_FILE: &str = "controller_snapshot";
/// Largest accepted controller snapshot.
pub const SNAPSHOT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Effects waiting for the node runtime.
pub const EFFECTS_QUEUE_MAX: usize = 4096;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    metadata: Metadata,
}

/// How far the node runtime has carried out the effects the state machine emitted.
#[derive(Debug)]
pub struct EffectsProgress {
    /// Effects sent to the runtime (counted under the state lock, with the entry applied).
    emitted: std::sync::atomic::AtomicU64,
    /// Effects carried out, and whether the runtime stopped taking them.
    done: tokio::sync::watch::Sender<(u64, bool)>,
}

impl Default for EffectsProgress {
    fn default() -> Self {
        EffectsProgress {
            emitted: std::sync::atomic::AtomicU64::new(0),
            done: tokio::sync::watch::channel((0, false)).0,
        }
    }
}

impl EffectsProgress {
    /// The runtime carried out `count` more effects.
    pub fn carried_out(&self, count: u64) {
        self.done.send_modify(|(done, _)| *done += count);
    }

    /// The runtime takes no more effects (the node is stopping).
    pub fn close(&self) {
        self.done.send_modify(|(_, closed)| *closed = true);
    }

    /// Waits until `emitted` effects were carried out; false if the runtime stopped first.
    async fn wait_for(&self, emitted: u64) -> bool {
        let mut done = self.done.subscribe();
        done.wait_for(|(done, closed)| *done >= emitted || *closed)
            .await
            .is_ok_and(|seen| seen.0 >= emitted)
    }
}

#[derive(Debug, Default)]
struct State {
    applied: Applied,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
    /// Effects kept until the node takes them ([`ControllerStateMachine::attach`]): the
    /// snapshot's, and those of the entries openraft applies again while the node starts.
    held: Option<Vec<Effect>>,
}

/// The controller group's state machine on one node. Clones share state.
#[derive(Debug, Clone)]
pub struct ControllerStateMachine {
    file: SnapshotFile,
    local_node: NodeId,
    state: Arc<Mutex<State>>,
    effects: mpsc::Sender<Effect>,
    progress: Arc<EffectsProgress>,
}

impl ControllerStateMachine {
    /// Opens the controller state machine of `local_node` in `dir`, from its last snapshot.
    /// Effects for this node arrive on the returned receiver.
    pub async fn open(
        dir: PathBuf,
        local_node: NodeId,
    ) -> Result<(ControllerStateMachine, mpsc::Receiver<Effect>), StorageError<NodeId>> {
        let file = SnapshotFile {
            dir,
            name: CONTROLLER_SNAPSHOT_FILE,
            bytes_max: SNAPSHOT_BYTES_MAX,
        };
        let saved = file.load().await?;
        let mut state = State::default();
        if let Some((meta, data)) = saved {
            state.applied = postcard::from_bytes(&data).map_err(snapshot_error)?;
            state.snapshot = Some((meta, data));
        }
        // What the entries the snapshot covers had this node do: they are never applied here
        // again. Held, with what openraft applies again while the node starts, until the node
        // takes them.
        let held = state.applied.metadata.effects_to_restore(local_node);
        let progress = Arc::new(EffectsProgress::default());
        progress
            .emitted
            .fetch_add(held.len() as u64, std::sync::atomic::Ordering::SeqCst);
        state.held = Some(held);
        let (effects, receiver) = mpsc::channel(EFFECTS_QUEUE_MAX);
        Ok((
            ControllerStateMachine {
                file,
                local_node,
                state: Arc::new(Mutex::new(state)),
                effects,
                progress,
            },
            receiver,
        ))
    }

    /// The effects held since the state machine opened, in order, for the node to carry out
    /// before any that arrives on the channel: the snapshot's (a start of every replica it
    /// says this node holds, ...) and those of the entries openraft applied again as the node
    /// started (its committed log id is kept). From now on effects go to the channel. Held
    /// until then because openraft applies those entries before the node can take effects,
    /// and a bounded channel would stop it.
    pub fn attach(&self) -> Vec<Effect> {
        self.lock().held.take().unwrap_or_default()
    }

    /// Where the node runtime reports the effects it carried out.
    pub fn progress(&self) -> Arc<EffectsProgress> {
        Arc::clone(&self.progress)
    }

    /// Counts `effects`, emitted by a change to `state` (under its lock, so that a snapshot of
    /// that state waits for them), and returns those to send now: none while the node has not
    /// attached (they are held for it).
    fn emitted(&self, state: &mut State, effects: Vec<Effect>) -> Vec<Effect> {
        self.progress
            .emitted
            .fetch_add(effects.len() as u64, std::sync::atomic::Ordering::SeqCst);
        match state.held.as_mut() {
            Some(held) => {
                held.extend(effects);
                Vec::new()
            }
            None => effects,
        }
    }

    /// Sends `effects` to the runtime, in order.
    async fn send(&self, effects: Vec<Effect>) {
        for effect in effects {
            // The runtime owns the receiver for the node's life; if it is gone the node is
            // stopping and there is nobody left to act.
            if self.effects.send(effect).await.is_err() {
                tracing::warn!("controller effects dropped: the node runtime is gone");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("controller state lock poisoned by a panic")
    }

    /// A copy of the metadata as applied so far.
    pub fn metadata(&self) -> Metadata {
        self.lock().applied.metadata.clone()
    }

    /// Runs `f` on the metadata applied so far without copying it (a lookup on a request's
    /// path); `f` must not block.
    pub fn with_metadata<R>(&self, f: impl FnOnce(&Metadata) -> R) -> R {
        f(&self.lock().applied.metadata)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for ControllerStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (emitted, applied, built) = {
            let mut state = self.lock();
            state.snapshots_built += 1;
            (
                self.progress
                    .emitted
                    .load(std::sync::atomic::Ordering::SeqCst),
                state.applied.clone(),
                state.snapshots_built,
            )
        };
        // The entries it covers are never applied here again: their effects must be done.
        if !self.progress.wait_for(emitted).await {
            return Err(snapshot_error(std::io::Error::other(
                "the node stopped before carrying out the effects a snapshot would cover",
            )));
        }
        let (meta, data) = {
            let meta = snapshot_meta(applied.last_applied, applied.membership.clone(), built);
            (
                meta,
                postcard::to_allocvec(&applied).map_err(snapshot_error)?,
            )
        };
        self.file.save(&meta, &data).await?;
        self.lock().snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for ControllerStateMachine {
    type SnapshotBuilder = ControllerStateMachine;

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
        let mut responses = Vec::new();
        for entry in entries {
            let (response, effects) = {
                let mut state = self.lock();
                state.applied.last_applied = Some(entry.log_id);
                let (response, effects) = match entry.payload {
                    EntryPayload::Blank => (Response::default(), Vec::new()),
                    EntryPayload::Membership(membership) => {
                        state.applied.membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        (Response::default(), Vec::new())
                    }
                    EntryPayload::Normal(
                        Request::Records { .. } | Request::DeleteRecords { .. },
                    ) => {
                        let error =
                            Some("record batches cannot be written to the controller".to_string());
                        (
                            Response {
                                error,
                                ..Response::default()
                            },
                            Vec::new(),
                        )
                    }
                    EntryPayload::Normal(Request::Metadata(bytes)) => {
                        match postcard::from_bytes::<Command>(&bytes) {
                            Err(e) => (
                                Response {
                                    error: Some(format!("undecodable command: {e}")),
                                    ..Response::default()
                                },
                                Vec::new(),
                            ),
                            Ok(command) => {
                                let allocated =
                                    matches!(command, Command::AllocateProducerIds { .. })
                                        .then(|| state.applied.metadata.next_producer_id());
                                match state.applied.metadata.apply(&command, self.local_node) {
                                    Ok(effects) => (
                                        Response {
                                            allocated,
                                            ..Response::default()
                                        },
                                        effects,
                                    ),
                                    Err(e) => (
                                        Response {
                                            error: Some(e.to_string()),
                                            ..Response::default()
                                        },
                                        Vec::new(),
                                    ),
                                }
                            }
                        }
                    }
                };
                (response, self.emitted(&mut state, effects))
            };
            self.send(effects).await;
            responses.push(response);
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
        let data = snapshot.into_inner();
        let applied: Applied = postcard::from_bytes(&data).map_err(snapshot_error)?;
        self.file.save(meta, &data).await?;
        let effects = {
            let mut state = self.lock();
            // What the entries this node skips would have had it do.
            let effects = state
                .applied
                .metadata
                .effects_towards(&applied.metadata, self.local_node);
            state.applied = applied;
            state.snapshot = Some((meta.clone(), data));
            self.emitted(&mut state, effects)
        };
        self.send(effects).await;
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
