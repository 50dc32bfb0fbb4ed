//! A partition's writes on its leader: a batch's validation, its producer's sequence, its
//! proposal to Raft through the coalescer, and the answers it waits for.

use bytes::Bytes;
use openraft::BasicNode;
use openraft::error::ClientWriteError;
use quipu_raft::producers::{ProducerBatch, SequenceCheck};
use quipu_raft::{NodeId, Request};
use quipu_storage::Offset;

use super::{Partition, ProduceLimits};
use crate::coalesce::Answer;
use crate::limits::{PRODUCE_ROOM_WAIT, ProduceRoom};
use crate::sequencer::{Checked, DUPLICATE_WAIT, TERM_APPLIED_WAIT};
use crate::{GroupId, ProduceError, ProposalError};

/// Uncompressed batches up to this size are validated on the calling task (a CRC-32C and a walk
/// of the records: tens of µs at most, less than a hop to the blocking pool and back); larger
/// or compressed ones on the blocking pool.
const INLINE_VALIDATION_BYTES_MAX: usize = 256 * 1024;

impl Partition {
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

    /// Appends a batch of group records (the coordinator's) and returns its offset once a
    /// majority has it and this replica applied it.
    pub(crate) async fn write_group_records(&self, batch: Bytes) -> Result<Offset, ProduceError> {
        match self.propose(batch).await? {
            Proposed::Batch(proposal) => proposal.committed().await,
            // The coordinator's batches name no producer.
            Proposed::Duplicate(_) => Err(self.not_leader()),
        }
    }

    pub(super) fn produce_limits(&self) -> ProduceLimits {
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

    /// Appends one record batch and returns the offset of its first record once a majority of
    /// replicas has it durably (Kafka's `acks=all`). The batch is validated before anything is
    /// proposed.
    pub async fn produce(&self, batch: Bytes) -> Result<Offset, ProduceError> {
        Ok(self.produce_stamped(batch, false).await?.0)
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
