//! Group commit within a partition: the batches proposed on a partition's leader while its
//! previous entry is not yet durable in the leader's log go to Raft together, as one entry of
//! several RecordBatches back to back (`docs/format/raft-entries.md`).
//!
//! Why: openraft 0.9 appends and flushes each client write on its own (a leader's flush now runs
//! beside its replication, `docs/internals/replication.md`), so one partition paid one fsync per
//! batch however many producers were waiting. Now a partition has at most one entry on its way
//! into the leader's log (until the leader's log holds it durably, or a majority does); the
//! batches that arrive meanwhile wait here and share the next entry and its fsync. A batch that
//! finds nothing on its way goes at once: an idle partition adds no delay.
//!
//! Invariants:
//! - Batches enter the log in the order [`Coalescer::submit`] was called (it never waits, so a
//!   caller that holds the sequencer's lock keeps its order): entries are proposed one at a
//!   time, the next only once the leader's log holds the previous one, or Raft answered it.
//! - Every batch submitted gets an answer: its offset (the entry's base offset plus the offsets
//!   of the batches before it in the entry) or the error of its entry.
//! - An entry holds at most the log's `entry_bytes_max`, and at most [`ENTRY_BYTES_MAX`] unless
//!   one batch alone is larger.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use openraft::Raft;
use openraft::error::ClientWriteError;
use quipu_raft::shared::PartitionShared;
use quipu_raft::{NodeId, Request, TypeConfig};
use quipu_storage::Offset;
use tokio::sync::oneshot;

use crate::{GroupId, ProduceError, ProposalError};

/// Largest entry the coalescer builds from several batches: big enough that a busy partition's
/// waiting batches share one fsync, small enough that one entry does not hold a follower's
/// replication message for long.
pub(crate) const ENTRY_BYTES_MAX: usize = 1024 * 1024;

/// What a batch's producer waits for: its base offset, or why it has none.
pub(crate) type Answer = Result<Offset, ProduceError>;

/// The two answers a submitted batch gets: once the leader's log holds it durably (`appended`,
/// for acks=1; never sent if Raft answers first) and once a majority does (`committed`).
pub(crate) struct Answers {
    pub appended: oneshot::Receiver<Answer>,
    pub committed: oneshot::Receiver<Answer>,
}

/// A partition leader's queue of batches waiting for the next entry.
pub(crate) struct Coalescer {
    group: GroupId,
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    shared: Arc<PartitionShared>,
    /// The largest entry built of several batches: the log's `entry_bytes_max` (a node setting,
    /// fixed while the log is open), capped at [`ENTRY_BYTES_MAX`].
    entry_bytes_max: usize,
    queue: std::sync::Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Whether an entry is on its way into the leader's log (batches submitted now wait).
    in_flight: bool,
}

struct Waiting {
    batch: Bytes,
    /// When it was submitted (`quipu_produce_phase_seconds{phase="queued"}`).
    arrived: Instant,
    /// The offsets the batch occupies.
    offsets: u64,
    appended: oneshot::Sender<Answer>,
    committed: oneshot::Sender<Answer>,
}

impl Queue {
    /// The batches of the next entry, oldest first: at least one, then as many as fit in
    /// `entry_bytes_max`.
    fn next_entry(&mut self, entry_bytes_max: usize) -> Vec<Waiting> {
        let mut entry = Vec::new();
        let mut bytes = 0usize;
        while let Some(next) = self.waiting.front() {
            if !entry.is_empty() && bytes + next.batch.len() > entry_bytes_max {
                break;
            }
            bytes += next.batch.len();
            entry.extend(self.waiting.pop_front());
        }
        entry
    }
}

impl Coalescer {
    pub(crate) fn new(
        group: GroupId,
        node_id: NodeId,
        raft: Raft<TypeConfig>,
        shared: Arc<PartitionShared>,
        entry_bytes_max: u64,
    ) -> Coalescer {
        Coalescer {
            group,
            node_id,
            raft,
            shared,
            entry_bytes_max: usize::try_from(entry_bytes_max)
                .unwrap_or(usize::MAX)
                .min(ENTRY_BYTES_MAX),
            queue: std::sync::Mutex::new(Queue::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .expect("coalescer lock poisoned by a panic")
    }

    /// Queues a validated batch (one RecordBatch occupying `offsets` offsets) for the next
    /// entry, and proposes that entry at once if none is on its way. Never waits.
    pub(crate) fn submit(self: &Arc<Self>, batch: Bytes, offsets: u64) -> Answers {
        let (appended, appended_rx) = oneshot::channel();
        let (committed, committed_rx) = oneshot::channel();
        let mut queue = self.lock();
        queue.waiting.push_back(Waiting {
            batch,
            arrived: Instant::now(),
            offsets,
            appended,
            committed,
        });
        if !queue.in_flight {
            queue.in_flight = true;
            let entry = queue.next_entry(self.entry_bytes_max);
            drop(queue);
            tokio::spawn(Arc::clone(self).propose(entry));
        }
        Answers {
            appended: appended_rx,
            committed: committed_rx,
        }
    }

    /// The entry is in the leader's log, or Raft answered it: the next one goes, if any batch
    /// waits.
    fn next(self: &Arc<Self>) {
        let mut queue = self.lock();
        if queue.waiting.is_empty() {
            queue.in_flight = false;
            return;
        }
        let entry = queue.next_entry(self.entry_bytes_max);
        drop(queue);
        tokio::spawn(Arc::clone(self).propose(entry));
    }

    /// Proposes one entry of `batches` and answers each of them. Times each batch's phases
    /// (`quipu_produce_phase_seconds`): queued here, then into the leader's log (durable there,
    /// timed only if the leader's log answered before Raft did), then until committed and
    /// applied (timed only if that succeeded: from the leader's log holding it, or from the
    /// proposal when a majority held it first, as the leader syncs beside replication).
    async fn propose(self: Arc<Self>, batches: Vec<Waiting>) {
        let proposed = Instant::now();
        let queued = crate::telemetry::produce_phase("queued");
        for waiting in &batches {
            queued.record(proposed.saturating_duration_since(waiting.arrived));
        }
        let payload = match batches.as_slice() {
            [one] => one.batch.clone(),
            many => {
                let mut payload = BytesMut::with_capacity(many.iter().map(|w| w.batch.len()).sum());
                for waiting in many {
                    payload.extend_from_slice(&waiting.batch);
                }
                payload.freeze()
            }
        };
        crate::telemetry::proposed_entry(batches.len());
        let (token, mut appended) = self.shared.register_local_ack(self.node_id);
        let written = self
            .raft
            .client_write_ff(Request::Records {
                batch: payload,
                local_ack: Some(token),
            })
            .await;
        let mut committed = match written {
            Ok(committed) => committed,
            Err(e) => {
                self.shared.cancel_local_ack(token);
                self.next();
                for waiting in batches {
                    let _ = waiting.committed.send(Err(ProduceError::Unavailable {
                        group: self.group,
                        source: ProposalError::Raft(Box::new(e.clone())),
                    }));
                }
                return;
            }
        };
        // Either the leader's log holds the entry durably (its base offset), or Raft answered
        // first (leadership lost, Raft stopped).
        let early = tokio::select! {
            biased;
            base = &mut appended => Ok(base.ok()),
            answer = &mut committed => Err(answer),
        };
        self.shared.cancel_local_ack(token);
        self.next();
        // acks=1 producers hear now that the leader's log holds the entry. Otherwise each
        // `appended` sender is dropped only after its `committed` answer is sent, so that an
        // acks=1 waiter reads that answer rather than a dropped channel.
        let base = early.as_ref().ok().copied().flatten();
        let appended_at = base.is_some().then(Instant::now);
        if let Some(at) = appended_at {
            let took = at.saturating_duration_since(proposed);
            let leader_log = crate::telemetry::produce_phase("leader_log");
            batches.iter().for_each(|_| leader_log.record(took));
        }
        let mut delta = 0;
        let mut to_answer = Vec::with_capacity(batches.len());
        for waiting in batches {
            let appended = match base {
                Some(base) => {
                    let _ = waiting.appended.send(Ok(Offset(base + delta)));
                    None
                }
                None => Some(waiting.appended),
            };
            to_answer.push((waiting.committed, appended, delta));
            delta += waiting.offsets;
        }
        let answer = match early {
            Ok(_) => committed.await,
            Err(answer) => answer,
        };
        if let Ok(Ok(_)) = &answer {
            let took = appended_at.unwrap_or(proposed).elapsed();
            let commit = crate::telemetry::produce_phase("commit");
            to_answer.iter().for_each(|_| commit.record(took));
        }
        for (committed, appended, delta) in to_answer {
            let _ = committed.send(self.answer(&answer, delta));
            drop(appended);
        }
    }

    /// What Raft's answer to the entry means to the batch `delta` offsets into it.
    fn answer(
        &self,
        answer: &Result<openraft::raft::ClientWriteResult<TypeConfig>, oneshot::error::RecvError>,
        delta: u64,
    ) -> Answer {
        let unavailable = |source| ProduceError::Unavailable {
            group: self.group,
            source,
        };
        match answer {
            Ok(Ok(response)) => response
                .data
                .base_offset
                .map(|base| Offset(base + delta))
                .ok_or_else(|| unavailable(ProposalError::NoOffset)),
            Ok(Err(ClientWriteError::ForwardToLeader(forward))) => Err(ProduceError::NotLeader {
                group: self.group,
                leader: forward.leader_id,
                leader_addr: forward.leader_node.as_ref().map(|node| node.addr.clone()),
            }),
            Ok(Err(other)) => Err(unavailable(ProposalError::Raft(Box::new(other.clone())))),
            Err(_) => Err(unavailable(ProposalError::Dropped)),
        }
    }
}
