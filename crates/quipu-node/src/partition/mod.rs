//! [`Partition`]: one replica of a partition on this node: its opening and closing, settings,
//! leadership and retention here; its writes on the leader in `produce`, its reads in `read`.

use std::path::Path;
use std::sync::Arc;

use openraft::{BasicNode, Raft};
use quipu_raft::shared::{PartitionShared, ProducerSettings, SnapshotTarget};
use quipu_raft::{LogStore, NodeId, PartitionStateMachine, TypeConfig};
use quipu_storage::{Log, LogConfig, Offset};

use crate::coalesce::Coalescer;
use crate::limits::Admission;
use crate::network::{GroupNetwork, Peers};
use crate::quiesce::QuietCell;
use crate::roles::RoleEvents;
use crate::sequencer::Sequencer;
use crate::{GroupId, NodeError, ProduceError, ProposalError, RetentionError};

mod produce;
mod read;

/// What a produced batch must satisfy: the topic's `max.message.bytes` and
/// `message.timestamp.*` bounds, and the node's decompression bound.
#[derive(Debug, Clone, Copy)]
struct ProduceLimits {
    batch_bytes_max: usize,
    decompressed_bytes_max: usize,
    timestamp_before_max_ms: i64,
    timestamp_after_max_ms: i64,
    /// `message.timestamp.type=LogAppendTime`: the leader stamps each batch on append.
    log_append_time: bool,
}

/// How long a closing replica waits for the last holders of it and of its log to let go.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The value inside `shared` once no other holder is left, waiting at most [`CLOSE_WAIT`] for
/// them (reads in flight, tasks ending after a Raft shutdown); `None` if some remain.
async fn sole<T>(mut shared: Arc<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    loop {
        match Arc::try_unwrap(shared) {
            Ok(value) => return Some(value),
            Err(still) if tokio::time::Instant::now() < deadline => {
                shared = still;
                // Holders let go on their own schedule; nothing to await on an `Arc`.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(_) => return None,
        }
    }
}

/// How long retention waits for the snapshot it asked for.
const RETENTION_SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the node lends each replica it opens.
#[derive(Clone)]
pub(crate) struct Host {
    pub node_id: NodeId,
    pub raft_config: Arc<openraft::Config>,
    pub peers: Arc<Peers>,
    pub admission: Arc<Admission>,
}

/// One replica of a partition: its segment log, its Raft instance and its high watermark.
pub struct Partition {
    group: GroupId,
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    log: Arc<Log>,
    shared: Arc<PartitionShared>,
    /// The state machine Raft applies to (a clone sharing its state): a graceful stop saves its
    /// checkpoint.
    state_machine: PartitionStateMachine,
    /// What a produced batch must satisfy (the topic's settings); changes live.
    limits: std::sync::RwLock<ProduceLimits>,
    /// The node's disk reserve and bytes of produced batches in memory, shared by its replicas.
    admission: Arc<Admission>,
    election_watchdog: tokio::task::JoinHandle<()>,
    /// Leader changes and elections seen since the replica opened (fed by the watchdog).
    roles: Arc<RoleEvents>,
    quiet: Arc<QuietCell>,
    /// Set when the node is shutting down: produce is refused so that the log stops growing
    /// while leadership is handed over.
    draining: std::sync::atomic::AtomicBool,
    /// One retention pass at a time (its snapshot target is a single slot).
    retention: tokio::sync::Mutex<()>,
    /// Set when a read found damaged bytes in the log: the replica is reopened with its whole
    /// log verified again (`replicas::run_reopen_stopped`), which sets it aside to be rebuilt.
    damaged: std::sync::atomic::AtomicBool,
    /// Checks idempotent producers' batches before they are proposed.
    sequencer: Sequencer,
    /// Groups the batches proposed while the previous entry is on its way into one entry.
    coalescer: Arc<Coalescer>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("group", &self.group)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Partition {
    /// Opens (or creates) the replica stored in `dir` and starts its Raft instance; a replica
    /// of the offsets topic (`keeps_groups`) applies its group records to the groups' state.
    pub(crate) async fn open(
        host: &Host,
        group: GroupId,
        dir: &Path,
        log_config: LogConfig,
        keeps_groups: bool,
    ) -> Result<Partition, NodeError> {
        let Host {
            node_id,
            raft_config,
            peers,
            admission,
        } = host.clone();
        let batch_bytes_max = usize::try_from(log_config.entry_bytes_max).unwrap_or(usize::MAX);
        let decompressed_bytes_max = log_config.decompressed_bytes_max;
        let shared = PartitionShared::new(ProducerSettings {
            limits: admission.producers,
            clock: Some(Arc::clone(&log_config.clock)),
        });
        let shared = Arc::new(if keeps_groups {
            shared.keeping_groups()
        } else {
            shared
        });
        let (log, store) =
            open_log_store(group, node_id, dir, log_config, Arc::clone(&shared)).await?;
        // The partition's state machine releases them once applied (the controller's does not).
        store.keep_recent_entries();
        let raft_error = |source: crate::error::BoxError| NodeError::Raft { group, source };
        let state_machine = PartitionStateMachine::open(dir.to_path_buf(), Arc::clone(&shared))
            .await
            .map_err(|e| raft_error(Box::new(e)))?;
        let from_checkpoint = state_machine
            .with_checkpoints(Arc::clone(&log))
            .await
            .map_err(|e| raft_error(Box::new(e)))?;
        tracing::debug!(%group, from_checkpoint, "partition state machine opened");
        let network = GroupNetwork::new(group, node_id, peers);
        let raft = Raft::new(
            node_id,
            Arc::clone(&raft_config),
            network,
            store,
            state_machine.clone(),
        )
        .await
        .map_err(|e| raft_error(Box::new(e)))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = node_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ group.0.rotate_left(32)
            ^ u64::from(nanos);
        let quiet = Arc::new(QuietCell::new(&raft, Arc::clone(&shared)));
        let coalescer = Arc::new(Coalescer::new(
            group,
            node_id,
            raft.clone(),
            Arc::clone(&shared),
            log.config().entry_bytes_max,
        ));
        let roles = Arc::new(RoleEvents::default());
        let election_watchdog = tokio::spawn(break_split_votes(
            raft.clone(),
            raft_config,
            seed,
            Arc::clone(&quiet),
            Arc::clone(&roles),
        ));
        Ok(Partition {
            group,
            node_id,
            raft,
            log,
            shared,
            state_machine,
            limits: std::sync::RwLock::new(ProduceLimits {
                batch_bytes_max,
                decompressed_bytes_max,
                timestamp_before_max_ms: i64::MAX,
                timestamp_after_max_ms: i64::MAX,
                log_append_time: false,
            }),
            admission,
            election_watchdog,
            roles,
            quiet,
            draining: std::sync::atomic::AtomicBool::new(false),
            retention: tokio::sync::Mutex::new(()),
            damaged: std::sync::atomic::AtomicBool::new(false),
            sequencer: Sequencer::default(),
            coalescer,
        })
    }

    /// Runs this replica with a topic's settings from now on: segment size and age from the next
    /// append, retention from the next pass, the batch size limit from the next produce.
    pub(crate) fn apply_settings(
        &self,
        settings: &quipu_meta::TopicSettings,
    ) -> Result<(), quipu_storage::ConfigError> {
        self.log.set_limits(crate::config::log_limits(settings))?;
        let entry_bytes_max = self.log.config().entry_bytes_max;
        let mut limits = self
            .limits
            .write()
            .expect("limits lock poisoned by a panic");
        limits.batch_bytes_max =
            usize::try_from(settings.max_message_bytes.min(entry_bytes_max)).unwrap_or(usize::MAX);
        limits.timestamp_before_max_ms = settings.timestamp_before_max_ms;
        limits.timestamp_after_max_ms = settings.timestamp_after_max_ms;
        limits.log_append_time = settings.log_append_time;
        Ok(())
    }

    /// The settings this replica runs with now, as far as its log and produce path hold them.
    pub fn settings(&self) -> quipu_meta::TopicSettings {
        let config = self.log.config();
        let limits = self.produce_limits();
        quipu_meta::TopicSettings {
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            segment_bytes: config.segment_bytes_max,
            segment_ms: config.segment_ms_max,
            max_message_bytes: limits.batch_bytes_max as u64,
            timestamp_before_max_ms: limits.timestamp_before_max_ms,
            timestamp_after_max_ms: limits.timestamp_after_max_ms,
            log_append_time: limits.log_append_time,
        }
    }

    /// Whether this replica's log may keep a purged segment's file for reuse; off deletes the
    /// one it keeps (blocking: a rename). Returns the bytes of the file deleted.
    pub(crate) fn keep_spares(&self, keep: bool) -> u64 {
        self.log.keep_spares(keep)
    }

    /// Whether this replica's log keeps a purged segment's file for reuse now.
    pub fn has_spare(&self) -> bool {
        self.log.has_spare()
    }

    /// Makes everything appended so far durable, if it is not yet (blocking).
    pub(crate) fn sync_log(&self) -> Result<(), quipu_storage::SyncError> {
        self.log.sync()
    }

    /// Whether everything this replica's log holds is durable.
    pub fn is_durable(&self) -> bool {
        self.log.durable_next_index() >= self.log.next_index()
    }

    /// Largest batch this replica accepts now, in bytes (the topic's `max.message.bytes`).
    pub(crate) fn batch_bytes_max(&self) -> usize {
        self.produce_limits().batch_bytes_max
    }

    /// The Raft term this replica is in: Kafka's partition leader epoch (a leader's batches carry
    /// it). Terms never go backwards and each has at most one leader.
    /// The Raft term this replica is in.
    pub(crate) fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    pub fn leader_epoch(&self) -> i32 {
        let term = self.raft.metrics().borrow().current_term;
        i32::try_from(term).unwrap_or(i32::MAX)
    }

    /// The partition's group id.
    pub fn group(&self) -> GroupId {
        self.group
    }

    pub(crate) fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    pub(crate) fn quiet(&self) -> Arc<QuietCell> {
        Arc::clone(&self.quiet)
    }

    /// Whether this replica is quiescent: idle, caught up, and neither ticking nor heartbeating
    /// (its leader's node heartbeat stands in for the group's own).
    pub fn is_quiescent(&self) -> bool {
        self.quiet.is_quiet()
    }

    /// Leaders this replica learnt of since it opened (the first one included).
    pub fn leader_changes(&self) -> u64 {
        self.roles.leader_changes()
    }

    /// Elections this replica started since it opened.
    pub fn elections(&self) -> u64 {
        self.roles.elections()
    }

    /// Whether this replica is a voter of its group (else a learner catching up, or removed).
    pub fn is_voter(&self) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.node_id)
    }

    /// Segments of this replica's log.
    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    /// When (ms since the Unix epoch, by the log's clock) this replica's log last finished an
    /// fsync, or opened if it has not synced since.
    pub fn last_sync_ms(&self) -> i64 {
        self.log.last_sync_ms()
    }

    /// The leader this replica knows of.
    pub fn leader(&self) -> Option<NodeId> {
        // Copied out at once: a borrow of the metrics must not be held (it stalls Raft).
        self.raft.metrics().borrow().current_leader
    }

    /// `Err` with the reason once this replica's Raft instance stopped on a fatal error (a damaged
    /// log, a failed fsync): it then neither serves, votes nor acknowledges anything.
    pub fn health(&self) -> Result<(), String> {
        let state = self.raft.metrics().borrow().running_state.clone();
        state.map_err(|fatal| fatal.to_string())
    }

    /// Whether this replica lost log entries it had acknowledged (its disk was damaged after the
    /// sync) and has not got them back from the leader yet: meanwhile it neither votes nor stands
    /// for election.
    pub fn is_abstaining(&self) -> bool {
        self.shared.is_abstaining()
    }

    /// Whether this replica is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// The first offset not yet known committed here.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.shared.high_watermark())
    }

    /// Bytes of this replica's log on disk (every segment's header and frames).
    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// The offset the next record appended to this replica's log gets.
    pub fn log_end_offset(&self) -> Offset {
        self.log.next_offset()
    }

    /// Makes this replica's group a cluster of `members` (id → transport address). Called once,
    /// on one member, when the partition is created.
    pub async fn bootstrap(
        &self,
        members: impl IntoIterator<Item = (NodeId, String)>,
    ) -> Result<(), ProduceError> {
        let members: std::collections::BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        self.raft
            .initialize(members)
            .await
            .map_err(|e| ProduceError::Unavailable {
                group: self.group,
                source: ProposalError::Raft(Box::new(e)),
            })
    }

    /// The first offset this replica serves: records below it were removed by retention (here
    /// or, for a replica that caught up through a snapshot, on the leader) or deleted by
    /// [`Partition::delete_records`].
    pub fn log_start_offset(&self) -> Offset {
        self.log
            .start_offset()
            .max(Offset(self.shared.records_start()))
    }

    /// Applies the log's retention (`retention_bytes`, `retention_ms`) to this replica: when whole
    /// sealed segments below the applied index are past retention, it takes a snapshot ending at
    /// the last entry of the newest of them; openraft then purges the log up to that snapshot,
    /// which removes exactly those segments. Returns the snapshot's index, or `None` when nothing
    /// was due. Each replica applies retention by itself, as Kafka's do.
    pub async fn enforce_retention(&self) -> Result<Option<u64>, RetentionError> {
        let _one_pass = self.retention.lock().await;
        let group = self.group;
        let (applied, snapshot) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (
                m.last_applied.map(|id| id.index),
                m.snapshot.map(|id| id.index),
            )
        };
        let Some(applied) = applied else {
            return Ok(None);
        };
        let deleted_before = Offset(self.shared.records_start());
        let Some(point) = self.log.retention_point_below(applied + 1, deleted_before) else {
            return Ok(None);
        };
        if snapshot.is_some_and(|s| s >= point) {
            return Ok(None);
        }
        let log = Arc::clone(&self.log);
        let entry =
            tokio::task::spawn_blocking(move || log.read_entries(point, point + 1, u64::MAX))
                .await
                .map_err(|source| RetentionError::ReadStopped {
                    group,
                    index: point,
                    source,
                })?
                .map_err(|source| RetentionError::Read {
                    group,
                    index: point,
                    source,
                })?
                .into_iter()
                .next()
                .ok_or(RetentionError::EntryGone {
                    group,
                    index: point,
                })?;
        self.shared.set_snapshot_target(SnapshotTarget {
            index: point,
            term: entry.term,
            next_offset: entry.next_offset().0,
        });
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|source| RetentionError::SnapshotTrigger { group, source })?;
        self.raft
            .wait(Some(RETENTION_SNAPSHOT_WAIT))
            .metrics(
                |m| m.snapshot.is_some_and(|id| id.index >= point),
                "the retention snapshot",
            )
            .await
            .map_err(|source| RetentionError::SnapshotWait { group, source })?;
        tracing::info!(%group, index = point, start_offset = entry.next_offset().0, "retention: snapshot taken, log purged up to it");
        Ok(Some(point))
    }

    /// A receiver that sees every advance of this replica's high watermark (long-poll fetches).
    pub fn watch_high_watermark(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.watch_high_watermark()
    }

    /// The voters of this partition's group (this node included).
    pub fn voters(&self) -> Vec<NodeId> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config.membership().voter_ids().collect()
    }

    /// On the leader: how many Raft entries each follower is known to lack (0: caught up).
    pub fn follower_lag(&self) -> Vec<(NodeId, u64)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let last = m.last_log_index.unwrap_or(0);
        m.replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.node_id)
                    .map(|(id, matched)| {
                        let have = matched.map_or(0, |l| l.index + 1);
                        (*id, (last + 1).saturating_sub(have))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Roughly how many bytes `entries` entries of this replica's log take: the log's size
    /// over the entries it holds (a follower's or new replica's lag in bytes).
    pub fn estimated_bytes(&self, entries: u64) -> u64 {
        let held = self
            .log
            .next_index()
            .saturating_sub(self.log.first_index())
            .max(1);
        let average = self.log.size_bytes() / held;
        entries.saturating_mul(average)
    }

    /// Stops accepting produce requests (the node is leaving); requests get "not leader".
    pub(crate) fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // This replica never stands for election again.
        self.election_watchdog.abort();
        self.quiet.leave(&self.raft);
    }

    /// Whether this is a replica of a partition of the offsets topic (its state machine keeps
    /// the groups' state).
    pub fn keeps_groups(&self) -> bool {
        self.shared.with_groups(|_| ()).is_some()
    }

    /// Reads the groups' state this replica applied (`None`: not an offsets partition). `f`
    /// must be quick: it holds the lock the state machine applies under.
    pub fn with_groups<T>(&self, f: impl FnOnce(&quipu_groups::GroupsState) -> T) -> Option<T> {
        self.shared.with_groups(|state| f(state))
    }

    /// Whether this replica must be reopened: its Raft instance stopped on a fatal error, or a
    /// read found damaged bytes in its log.
    pub fn needs_reopen(&self) -> Option<String> {
        match self.health() {
            Err(reason) => Some(reason),
            Ok(()) if self.damaged.load(std::sync::atomic::Ordering::SeqCst) => {
                Some("a read found damaged bytes in the log".to_string())
            }
            Ok(()) => None,
        }
    }

    /// Stops the Raft instance and syncs the log (no clean-shutdown marker: the next open verifies
    /// the active segment as after a crash, which is always safe). The log is dropped once the
    /// last reader lets go.
    pub(crate) async fn shutdown(&self) {
        self.election_watchdog.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = %self.group, error = &e as &dyn std::error::Error, "raft did not shut down cleanly");
        }
        // Whatever the fsync policy left unsynced (`interval_ms`, `never`) is made durable.
        let log = Arc::clone(&self.log);
        match tokio::task::spawn_blocking(move || log.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(group = %self.group, error = &e as &dyn std::error::Error, "log not synced at shutdown")
            }
            Err(e) => {
                tracing::warn!(group = %self.group, error = &e as &dyn std::error::Error, "log sync task failed")
            }
        }
        // Everything applied is durable now: the next start need not apply it again.
        if let Err(e) = self.state_machine.checkpoint_now().await {
            tracing::warn!(group = %self.group, error = &e as &dyn std::error::Error, "no applied-state checkpoint at shutdown");
        }
    }

    /// Stops this replica for good, as a graceful node stop does: [`Partition::shutdown`], then,
    /// once nothing else holds the replica or its log (reads in flight finish; at most
    /// [`CLOSE_WAIT`]), closes the log, which syncs it and writes its clean-shutdown marker: the
    /// next open trusts the active segment's indexes instead of verifying every frame. If
    /// something still holds it, the log is only synced and the next open recovers it as after
    /// a crash, which is always safe. Returns whether the log was closed.
    pub(crate) async fn close(self: Arc<Self>) -> bool {
        self.shutdown().await;
        let group = self.group;
        let Some(partition) = sole(self).await else {
            tracing::warn!(%group, "replica still in use at stop: its log is not closed");
            return false;
        };
        let Partition {
            log,
            raft,
            state_machine,
            coalescer,
            ..
        } = partition;
        // The Raft handles hold the log store, and the state machine its checkpoints' log handle.
        drop((raft, coalescer, state_machine));
        close_log(group, log).await
    }
}

/// Closes `group`'s log once nothing else holds it (at most [`CLOSE_WAIT`]): synced, with its
/// clean-shutdown marker. Returns whether it was closed.
pub(crate) async fn close_log(group: GroupId, log: Arc<Log>) -> bool {
    let Some(log) = sole(log).await else {
        tracing::warn!(%group, "log still in use at stop: not closed");
        return false;
    };
    match tokio::task::spawn_blocking(move || log.close()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(%group, error = &e as &dyn std::error::Error, "log not closed");
            false
        }
        Err(e) => {
            tracing::warn!(%group, error = &e as &dyn std::error::Error, "log close task failed");
            false
        }
    }
}

/// Opens the segment log in `dir` and openraft's log store over it, on node `node_id`: every
/// group's first step.
pub(crate) async fn open_log_store(
    group: GroupId,
    node_id: NodeId,
    dir: &Path,
    log_config: LogConfig,
    shared: Arc<PartitionShared>,
) -> Result<(Arc<Log>, LogStore), NodeError> {
    let log_dir = dir.to_path_buf();
    let log = tokio::task::spawn_blocking(move || Log::open(&log_dir, log_config))
        .await
        .map_err(|e| NodeError::Raft {
            group,
            source: Box::new(e),
        })?
        .map_err(|source| NodeError::Log { group, source })?;
    let log = Arc::new(log);
    let store = LogStore::open(Arc::clone(&log), shared, node_id)
        .await
        .map_err(|e| NodeError::Raft {
            group,
            source: Box::new(e),
        })?;
    Ok((log, store))
}

/// openraft 0.9 draws each node's election timeout once, at start, and checks it on a fixed tick:
/// two candidates whose timeouts round to the same number of ticks, started within a round trip
/// of each other, split the vote every round forever (seen in our failover test). This task
/// breaks the tie: when this replica has known no leader for a whole maximum election timeout,
/// it starts an election itself after a random delay, which differs on every replica and every
/// round. It sleeps on the metrics channel while a leader is known: no cost for a healthy group.
async fn break_split_votes(
    raft: Raft<TypeConfig>,
    config: Arc<openraft::Config>,
    seed: u64,
    quiet: Arc<QuietCell>,
    roles: Arc<RoleEvents>,
) {
    use std::time::Duration;
    use tokio::time::Instant;
    // SplitMix64: distinct seeds give unrelated sequences (seeds differ per node and group).
    let mut state = seed;
    let mut random_below = move |bound: u64| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    };
    let patience = Duration::from_millis(config.election_timeout_max);
    // Server metrics change only with the vote, role, leader or membership; the full metrics
    // channel is sent on every turn of the Raft core (each tick and heartbeat), which would wake
    // this task thousands of times a second on a node with many groups.
    let mut metrics = raft.server_metrics();
    let mut leaderless_since: Option<Instant> = None;
    loop {
        let (leader, voters) = {
            let m = metrics.borrow_and_update();
            roles.observe(&m);
            (
                m.current_leader,
                m.membership_config.membership().voter_ids().count(),
            )
        };
        if leader.is_some() || voters < 2 {
            leaderless_since = None;
            if metrics.changed().await.is_err() {
                return; // Raft shut down.
            }
            continue;
        }
        let since = *leaderless_since.get_or_insert_with(Instant::now);
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(since + patience) => {
                let jitter = Duration::from_millis(random_below(config.election_timeout_min));
                tokio::time::sleep(jitter).await;
                if raft.metrics().borrow().current_leader.is_none() && quiet.may_stand() {
                    tracing::info!(?jitter, "no leader for a whole election timeout: starting an election");
                    if raft.trigger().elect().await.is_err() {
                        return;
                    }
                }
                leaderless_since = Some(Instant::now());
            }
        }
    }
}
