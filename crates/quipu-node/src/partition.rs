//! [`Partition`]: one replica of a partition on this node.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use openraft::error::ClientWriteError;
use openraft::{BasicNode, Raft};
use quipu_raft::producers::{ProducerBatch, SequenceCheck};
use quipu_raft::shared::{PartitionShared, ProducerSettings, SnapshotTarget};
use quipu_raft::{LogStore, NodeId, PartitionStateMachine, Request, TypeConfig};
use quipu_storage::{Entry, Log, LogConfig, Offset};

use crate::coalesce::{Answer, Coalescer};
use crate::limits::{Admission, PRODUCE_ROOM_WAIT, ProduceRoom};
use crate::network::{GroupNetwork, Peers};
use crate::quiesce::QuietCell;
use crate::roles::RoleEvents;
use crate::sequencer::{Checked, DUPLICATE_WAIT, Sequencer, TERM_APPLIED_WAIT};
use crate::{FetchError, GroupId, NodeError, ProduceError, ProposalError, RetentionError};

/// Uncompressed batches up to this size are validated on the calling task (a CRC-32C and a walk
/// of the records: tens of µs at most, less than a hop to the blocking pool and back); larger
/// or compressed ones on the blocking pool.
const INLINE_VALIDATION_BYTES_MAX: usize = 256 * 1024;

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

    fn produce_limits(&self) -> ProduceLimits {
        *self.limits.read().expect("limits lock poisoned by a panic")
    }

    /// Validates a produced batch as Kafka's log validator does: header, size and CRC, then every
    /// record against the header and the topic's timestamp bounds. Large or compressed batches
    /// are checked on the blocking pool, not on the async workers. Returns the batch's header.
    async fn validate(&self, batch: &Bytes) -> Result<quipu_record::BatchHeader, ProduceError> {
        let limits = self.produce_limits();
        // The log's clock: the one its segment ages and retention go by.
        let now = (self.log.config().clock)();
        // Under LogAppendTime the producer's timestamps are replaced, so they are not bounded
        // (as in Kafka).
        let rules = if limits.log_append_time {
            quipu_record::RecordRules {
                decompressed_bytes_max: limits.decompressed_bytes_max,
                timestamp_min: i64::MIN,
                timestamp_max: i64::MAX,
            }
        } else {
            quipu_record::RecordRules {
                decompressed_bytes_max: limits.decompressed_bytes_max,
                timestamp_min: now.saturating_sub(limits.timestamp_before_max_ms),
                timestamp_max: now.saturating_add(limits.timestamp_after_max_ms),
            }
        };
        let check = move |batch: &Bytes| {
            let header = quipu_record::validate_batch(batch, limits.batch_bytes_max)?;
            quipu_record::validate_records(batch, &header, &rules)?;
            Ok(header)
        };
        let small_and_plain = batch.len() <= INLINE_VALIDATION_BYTES_MAX
            && quipu_record::BatchHeader::parse(batch).is_ok_and(|h| {
                h.compression()
                    .is_ok_and(|c| c == quipu_record::Compression::None)
            });
        let checked = if small_and_plain {
            check(batch)
        } else {
            let batch = batch.clone();
            tokio::task::spawn_blocking(move || check(&batch))
                .await
                .map_err(|source| ProduceError::Task {
                    group: self.group,
                    source,
                })?
        };
        checked.map_err(ProduceError::InvalidBatch)
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

    /// Appends one record batch and returns the offset of its first record once a majority of
    /// replicas has it durably (Kafka's `acks=all`). The batch is validated before anything is
    /// proposed.
    pub async fn produce(&self, batch: Bytes) -> Result<Offset, ProduceError> {
        Ok(self.produce_stamped(batch, false).await?.0)
    }

    /// The first offset this replica serves: records below it were removed by retention (here
    /// or, for a replica that caught up through a snapshot, on the leader) or deleted by
    /// [`Partition::delete_records`].
    pub fn log_start_offset(&self) -> Offset {
        self.log
            .start_offset()
            .max(Offset(self.shared.records_start()))
    }

    /// Deletes the records below `before` (`None`: below the high watermark), as Kafka's
    /// DeleteRecords: on the leader, through Raft, so every replica moves its log start offset
    /// there once the entry is committed. Returns the log start offset after it. Reads below it
    /// fail with "offset out of range" at once; the segments wholly below it go at the next
    /// retention pass.
    pub async fn delete_records(&self, before: Option<Offset>) -> Result<Offset, ProduceError> {
        self.require_writable_leader()?;
        let high_watermark = self.high_watermark();
        let before = before.unwrap_or(high_watermark);
        if before > high_watermark {
            return Err(ProduceError::BeyondHighWatermark {
                group: self.group,
                offset: before,
                high_watermark,
            });
        }
        let unavailable = |source| ProduceError::Unavailable {
            group: self.group,
            source,
        };
        self.quiet.before_write(self.group, &self.raft);
        match self
            .raft
            .client_write(Request::DeleteRecords { before: before.0 })
            .await
        {
            Ok(response) => response
                .data
                .base_offset
                .map(|start| self.log_start_offset().max(Offset(start)))
                .ok_or_else(|| unavailable(ProposalError::NoOffset)),
            Err(openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(
                forward,
            ))) => Err(ProduceError::NotLeader {
                group: self.group,
                leader: forward.leader_id,
                leader_addr: forward.leader_node.map(|node| node.addr),
            }),
            Err(e) => Err(unavailable(ProposalError::Raft(Box::new(e)))),
        }
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

    /// On the leader: the first committed offset whose record timestamp is at or after
    /// `timestamp_ms`, or the high watermark if no committed record is that recent.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Offset, FetchError> {
        self.require_leader()?;
        let high_watermark = self.high_watermark();
        let log = Arc::clone(&self.log);
        let group = self.group;
        let found = tokio::task::spawn_blocking(move || {
            log.offset_for_timestamp(timestamp_ms, high_watermark)
        })
        .await
        .map_err(|source| FetchError::Unavailable { group, source })?
        .map_err(|source| self.read_error(source))?;
        Ok(found.unwrap_or(high_watermark).max(self.log_start_offset()))
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

    /// Writes go to the leader only, and not while the node drains: else "not leader", naming
    /// the leader this replica knows of.
    fn require_writable_leader(&self) -> Result<(), ProduceError> {
        self.refuse_if_draining()?;
        if self.leader() != Some(self.node_id) {
            return Err(self.not_leader());
        }
        Ok(())
    }

    fn refuse_if_draining(&self) -> Result<(), ProduceError> {
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ProduceError::NotLeader {
                group: self.group,
                leader: None,
                leader_addr: None,
            });
        }
        Ok(())
    }

    /// Hands a batch to Raft on the leader: this replica leads, the data disk has its reserve
    /// free, the batch takes its room in the node's produce budget (waiting for it at most [`PRODUCE_ROOM_WAIT`]) and is valid. The
    /// cheap checks come first; validation may decompress the whole batch, within the room.
    ///
    /// A batch that names an idempotent producer is checked against the producer table first
    /// (`crate::sequencer`): out of sequence it is refused, and a retry of a batch already
    /// proposed is not proposed again ([`Proposed::Duplicate`]).
    async fn propose(&self, batch: Bytes) -> Result<Proposed, ProduceError> {
        self.require_writable_leader()?;
        let producer = match quipu_record::BatchHeader::parse(&batch) {
            Ok(header) => {
                ProducerBatch::of(&header).map_err(|source| ProduceError::ProducerFields {
                    group: self.group,
                    source,
                })?
            }
            // Validation says what is wrong with it.
            Err(_) => None,
        };
        self.admission.disk.check().map_err(ProduceError::DiskLow)?;
        let budget = &self.admission.budget;
        let room = budget
            .room(batch.len(), PRODUCE_ROOM_WAIT)
            .await
            .ok_or(ProduceError::Busy { max: budget.max() })?;
        let header = self.validate(&batch).await?;
        let (batch, log_append_time) = self.stamp(batch)?;
        let sequenced = match &producer {
            None => None,
            Some(producer) => match self.check_sequence(producer).await? {
                Checked::Append(sequenced) => Some(sequenced),
                Checked::Duplicate => return Ok(Proposed::Duplicate(*producer)),
                Checked::NotLeading => return Err(self.not_leader()),
            },
        };
        self.quiet.before_write(self.group, &self.raft);
        // Never waits: the sequencer's lock, if held, keeps the batch's place in the log.
        let answers = self.coalescer.submit(batch, header.offset_count());
        if let (Some(sequenced), Some(producer)) = (sequenced, &producer) {
            sequenced.proposed(producer, &self.shared);
        }
        Ok(Proposed::Batch(Proposal {
            group: self.group,
            room: Some(room),
            appended: answers.appended,
            committed: answers.committed,
            log_append_time,
        }))
    }

    /// Checks an idempotent producer's batch as the leader of the current term, once every
    /// entry of earlier terms is applied here (at most [`TERM_APPLIED_WAIT`]).
    async fn check_sequence(&self, producer: &ProducerBatch) -> Result<Checked<'_>, ProduceError> {
        let me = self.node_id;
        let term = self.settled_term().await?;
        let still_leads = || {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.current_leader == Some(me) && m.current_term == term
        };
        self.sequencer
            .check(producer, term, &self.shared, still_leads)
            .await
            .map_err(|source| ProduceError::Sequence {
                group: self.group,
                source,
            })
    }

    /// The term this replica leads in, once it has applied an entry of that term, so every
    /// entry of earlier terms (its first entry as leader, a blank, commits them): waits at most
    /// [`TERM_APPLIED_WAIT`]. What this replica's state machine holds then is every committed
    /// entry of earlier terms.
    pub(crate) async fn settled_term(&self) -> Result<u64, ProduceError> {
        let me = self.node_id;
        // `Some(term)` once this replica leads and has applied an entry of its own term; `None`
        // while it leads without (the blank that commits earlier terms is not applied yet).
        let settled = |m: &openraft::RaftMetrics<NodeId, BasicNode>| -> Result<Option<u64>, ()> {
            if m.current_leader != Some(me) {
                return Err(());
            }
            let applied_term = m.last_applied.map(|l| l.leader_id.term);
            Ok((applied_term == Some(m.current_term)).then_some(m.current_term))
        };
        // Almost always settled already: read the metrics in place (no copy, no waiter).
        let now = settled(&self.raft.metrics().borrow());
        let term = match now {
            Err(()) => return Err(self.not_leader()),
            Ok(Some(term)) => term,
            Ok(None) => {
                let metrics = self
                    .raft
                    .wait(Some(TERM_APPLIED_WAIT))
                    .metrics(
                        |m| settled(m) != Ok(None),
                        "the entries of earlier terms are applied",
                    )
                    .await
                    .map_err(|e| ProduceError::Unavailable {
                        group: self.group,
                        source: ProposalError::Raft(Box::new(e)),
                    })?;
                settled(&metrics)
                    .ok()
                    .flatten()
                    .ok_or_else(|| self.not_leader())?
            }
        };
        Ok(term)
    }

    /// "Not the leader", naming the leader this replica knows of.
    fn not_leader(&self) -> ProduceError {
        let leader = self.leader().filter(|l| *l != self.node_id);
        ProduceError::NotLeader {
            group: self.group,
            leader,
            leader_addr: leader.and_then(|id| crate::groups::member_addr(&self.raft, id)),
        }
    }

    /// The offset of the batch `producer` retried, once it is applied here (so committed), while
    /// this replica leads; at most [`DUPLICATE_WAIT`].
    async fn duplicate_offset(&self, producer: &ProducerBatch) -> Result<Offset, ProduceError> {
        let mut applied = self.shared.watch_high_watermark();
        let deadline = tokio::time::Instant::now() + DUPLICATE_WAIT;
        loop {
            if let Ok(SequenceCheck::Duplicate {
                base_offset: Some(offset),
            }) = self.shared.with_producers(|table| table.check(producer))
            {
                return Ok(Offset(offset));
            }
            self.require_writable_leader()?;
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(ProduceError::Unavailable {
                        group: self.group,
                        source: ProposalError::DuplicateNotApplied,
                    });
                }
            }
        }
    }

    /// Under `message.timestamp.type=LogAppendTime`, the batch stamped with the log's clock now
    /// (a copy: the client's bytes are shared), and that time; else the batch as it is.
    fn stamp(&self, batch: Bytes) -> Result<(Bytes, Option<i64>), ProduceError> {
        if !self.produce_limits().log_append_time {
            return Ok((batch, None));
        }
        let now = (self.log.config().clock)();
        let mut stamped = batch.to_vec();
        quipu_record::set_log_append_time(&mut stamped, now).map_err(ProduceError::InvalidBatch)?;
        Ok((Bytes::from(stamped), Some(now)))
    }

    /// Appends one record batch as [`Partition::produce`] (acks=all) or
    /// [`Partition::produce_leader_ack`] (acks=1, `leader_only`) does, and also says the log
    /// append time the leader stamped it with, under `message.timestamp.type=LogAppendTime`
    /// (Kafka's produce answer carries it).
    ///
    /// A retry of an idempotent producer's batch that is already in the log gets that batch's
    /// offset once it is committed, and no log append time.
    pub async fn produce_stamped(
        &self,
        batch: Bytes,
        leader_only: bool,
    ) -> Result<(Offset, Option<i64>), ProduceError> {
        self.refuse_internal()?;
        let proposal = match self.propose(batch).await? {
            Proposed::Batch(proposal) => proposal,
            Proposed::Duplicate(producer) => {
                return Ok((self.duplicate_offset(&producer).await?, None));
            }
        };
        let stamp = proposal.log_append_time;
        let offset = if leader_only {
            proposal.appended().await?
        } else {
            proposal.committed().await?
        };
        Ok((offset, stamp))
    }

    /// Appends one record batch and returns the offset of its first record once it is durable in
    /// the leader's own log, without waiting for the followers (Kafka's `acks=1`). If the leader
    /// loses its leadership before that, the batch may or may not be committed later: the error
    /// says so.
    pub async fn produce_leader_ack(&self, batch: Bytes) -> Result<Offset, ProduceError> {
        Ok(self.produce_stamped(batch, true).await?.0)
    }

    /// Appends one record batch without waiting for anything (Kafka's `acks=0`): the batch is
    /// validated and handed to Raft on the leader, and whether it is committed is never reported.
    /// Its room in the node's produce budget is held until the leader's log has it, so acks=0
    /// producers cannot queue without bound.
    pub async fn produce_unacknowledged(&self, batch: Bytes) -> Result<(), ProduceError> {
        self.refuse_internal()?;
        drop(self.propose(batch).await?);
        Ok(())
    }

    /// Clients never write to the offsets topic: its records are the group coordinator's.
    fn refuse_internal(&self) -> Result<(), ProduceError> {
        if self.keeps_groups() {
            return Err(ProduceError::InternalTopic { group: self.group });
        }
        Ok(())
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

    /// Appends a batch of group records (the coordinator's) and returns its offset once a
    /// majority has it and this replica applied it.
    pub(crate) async fn write_group_records(&self, batch: Bytes) -> Result<Offset, ProduceError> {
        match self.propose(batch).await? {
            Proposed::Batch(proposal) => proposal.committed().await,
            // The coordinator's batches name no producer.
            Proposed::Duplicate(_) => Err(self.not_leader()),
        }
    }

    /// Reads of committed data are served by the leader only.
    fn require_leader(&self) -> Result<(), FetchError> {
        let leader = self.leader();
        if leader != Some(self.node_id) {
            return Err(FetchError::NotLeader {
                group: self.group,
                leader,
            });
        }
        Ok(())
    }

    /// Committed record batches from the one holding `from` on, at most about `max_bytes` (the
    /// first batch comes whole), read on the leader only.
    pub async fn fetch(&self, from: Offset, max_bytes: u64) -> Result<Vec<Entry>, FetchError> {
        self.require_leader()?;
        let high_watermark = self.high_watermark();
        if from >= high_watermark {
            return Ok(Vec::new());
        }
        self.read(from, high_watermark, max_bytes).await
    }

    /// Everything this replica holds from `from` on, committed or not: for verification tools.
    pub async fn read_replica(
        &self,
        from: Offset,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, FetchError> {
        let end = self.log.next_offset();
        if from >= end {
            return Ok(Vec::new());
        }
        self.read(from, end, max_bytes).await
    }

    async fn read(
        &self,
        from: Offset,
        end: Offset,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, FetchError> {
        let start = self.log_start_offset();
        if from < start {
            // Deleted records are never served, even while their segment is still on disk.
            return Err(FetchError::Read {
                group: self.group,
                source: quipu_storage::ReadError::OffsetOutOfRange {
                    requested: from.0,
                    start: start.0,
                    end: end.0,
                },
            });
        }
        self.read_log(move |log| log.read_records(from, end, max_bytes))
            .await
    }

    /// Runs a read of the log on the blocking pool (reads touch mapped pages that may fault).
    async fn read_log<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Log) -> Result<T, quipu_storage::ReadError> + Send + 'static,
    ) -> Result<T, FetchError> {
        let log = Arc::clone(&self.log);
        let group = self.group;
        tokio::task::spawn_blocking(move || read(&log))
            .await
            .map_err(|source| FetchError::Unavailable { group, source })?
            .map_err(|source| self.read_error(source))
    }

    /// A failed read of the log; damaged bytes mark the replica for a verified reopen.
    fn read_error(&self, source: quipu_storage::ReadError) -> FetchError {
        if matches!(source, quipu_storage::ReadError::Corrupt { .. })
            && !self.damaged.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::error!(group = %self.group, error = &source as &dyn std::error::Error, "damaged log: the replica will be verified and rebuilt");
        }
        FetchError::Read {
            group: self.group,
            source,
        }
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

    /// The first committed record with the largest timestamp, and that timestamp (Kafka's
    /// ListOffsets `MAX_TIMESTAMP`), on the leader; `None` if no record is committed.
    pub async fn max_timestamp_offset(&self) -> Result<Option<(Offset, i64)>, FetchError> {
        self.require_leader()?;
        let high_watermark = self.high_watermark();
        self.read_log(move |log| log.max_timestamp_offset(high_watermark))
            .await
    }

    /// Kafka's OffsetForLeaderEpoch, on the leader: the largest leader epoch (Raft term) at or
    /// below `epoch` that this log holds entries of, and the offset where it ends (the first
    /// offset of the next term's entries, or the log end offset if no later term has any);
    /// `None` if the log holds no entry of a term at or below `epoch` (it was purged, or the
    /// epoch is older than the log).
    pub async fn end_offset_for_epoch(
        &self,
        epoch: u64,
    ) -> Result<Option<(u64, Offset)>, FetchError> {
        self.require_leader()?;
        self.read_log(move |log| {
            let term_at = |index: u64| -> Result<(u64, Offset), quipu_storage::ReadError> {
                let entries = log.read_entries(index, index + 1, 1)?;
                let entry = entries
                    .first()
                    .ok_or(quipu_storage::ReadError::IndexOutOfRange {
                        requested: index,
                        first: log.first_index(),
                        next: log.next_index(),
                    })?;
                Ok((entry.term, entry.base_offset))
            };
            let (first, next) = (log.first_index(), log.next_index());
            // Terms never decrease along the log: find the first entry of a later term.
            let (mut low, mut high) = (first, next);
            while low < high {
                let middle = low + (high - low) / 2;
                if term_at(middle)?.0 > epoch {
                    high = middle;
                } else {
                    low = middle + 1;
                }
            }
            if low == first {
                return Ok(None);
            }
            let (found, _) = term_at(low - 1)?;
            let end = if low == next {
                log.next_offset()
            } else {
                term_at(low)?.1
            };
            Ok(Some((found, end)))
        })
        .await
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

/// What became of a batch on its way to Raft.
enum Proposed {
    /// Handed to Raft.
    Batch(Proposal),
    /// A retry of an idempotent producer's batch handed to Raft already: not proposed again.
    Duplicate(ProducerBatch),
}

/// A batch handed to Raft on the leader (through the partition's [`Coalescer`]), with its room
/// in the node's produce budget and the two answers it may wait for: the leader's log has it
/// durably (`appended`), a majority has it (`committed`). Dropped before the leader's log has
/// the batch, it keeps the room until then.
struct Proposal {
    group: GroupId,
    room: Option<ProduceRoom>,
    appended: tokio::sync::oneshot::Receiver<Answer>,
    committed: tokio::sync::oneshot::Receiver<Answer>,
    /// The time the batch was stamped with, under LogAppendTime.
    log_append_time: Option<i64>,
}

/// A receiver that is already closed (a placeholder for one taken away).
fn closed_receiver<T>() -> tokio::sync::oneshot::Receiver<T> {
    tokio::sync::oneshot::channel().1
}

impl Proposal {
    fn unavailable(&self, source: ProposalError) -> ProduceError {
        ProduceError::Unavailable {
            group: self.group,
            source,
        }
    }

    /// The batch's base offset once the leader's log holds it durably (acks=1).
    async fn appended(mut self) -> Result<Offset, ProduceError> {
        let outcome = tokio::select! {
            // Raft's answer, when there is one, says more than a dropped `appended`.
            biased;
            answer = &mut self.committed => self.answer(answer),
            base_offset = &mut self.appended => base_offset
                .unwrap_or_else(|_| Err(self.unavailable(ProposalError::LogFailed))),
        };
        self.room = None;
        outcome
    }

    /// The batch's base offset once a majority holds it (acks=all). Its room goes back as soon
    /// as the leader's log has it.
    async fn committed(mut self) -> Result<Offset, ProduceError> {
        tokio::select! {
            answer = &mut self.committed => {
                self.room = None;
                return self.answer(answer);
            }
            _ = &mut self.appended => self.room = None,
        }
        let answer = (&mut self.committed).await;
        self.answer(answer)
    }

    /// The answer, or "dropped" if none came (Raft stopped).
    fn answer(
        &self,
        answer: Result<Answer, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<Offset, ProduceError> {
        answer.unwrap_or_else(|_| Err(self.unavailable(ProposalError::Dropped)))
    }
}

impl Drop for Proposal {
    fn drop(&mut self) {
        let Some(room) = self.room.take() else {
            return;
        };
        // The producer stopped waiting (acks=0, or it timed out) before the leader's log had the
        // batch: the batch still waits in Raft, so its room is held until it is appended or
        // Raft answers.
        let appended = std::mem::replace(&mut self.appended, closed_receiver());
        let committed = std::mem::replace(&mut self.committed, closed_receiver());
        let settle = async move {
            tokio::select! {
                _ = appended => {}
                _ = committed => {}
            }
            drop(room);
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn(settle));
        }
    }
}
