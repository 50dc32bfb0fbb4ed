//! Idempotent produce on a partition's leader: each batch that names a producer is checked
//! against the producer table before it is proposed, so that a retried batch is never appended
//! twice and a batch out of sequence never at all. Rules: `docs/protocol/idempotence.md`.
//!
//! The leader checks against its *projection*: the applied table (`PartitionShared`'s) as it
//! stood once this leader had applied every entry of earlier terms, plus every batch it
//! proposed since, in proposal order. Checks and proposals are serialised by one lock per
//! partition, so the log holds batches in the order they were checked. The projection belongs to
//! one term: a leader of a later term (this node again, or another) starts from the applied
//! table afresh, so entries of a lost term never count.
//!
//! A retry of a batch that is proposed but not yet applied waits until it is applied and then
//! gets its offset (committed, like any acks=all answer). A batch that arrives before an
//! earlier batch of its producer that is already on its way through this node (Kafka pipelining
//! and concurrent gRPC calls can reorder them by a hair) waits for that batch's check, at most
//! [`GAP_WAIT`], before it is refused as out of order (or, for a producer the partition does
//! not know yet, as unknown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quipu_raft::producers::{ProducerBatch, ProducerTable, SequenceCheck, SequenceError};
use quipu_raft::shared::PartitionShared;

/// Longest a batch whose predecessor is on its way waits for it before it is out of order.
pub(crate) const GAP_WAIT: Duration = Duration::from_secs(2);

/// Longest a new leader waits for the entries of earlier terms to be applied before it checks
/// a batch (its first entry, a blank, commits them).
pub(crate) const TERM_APPLIED_WAIT: Duration = Duration::from_secs(5);

/// Longest a retry of a batch waits for that batch to be applied.
pub(crate) const DUPLICATE_WAIT: Duration = Duration::from_secs(30);

/// A partition's sequencer.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    projection: tokio::sync::Mutex<Projection>,
    /// Woken whenever the projection records a batch.
    recorded: tokio::sync::Notify,
    /// Idempotent batches of each producer that entered `propose` and are not checked yet.
    arriving: Mutex<HashMap<i64, usize>>,
}

#[derive(Debug, Default)]
pub(crate) struct Projection {
    term: Option<u64>,
    table: ProducerTable,
}

/// Counts a batch as arriving until dropped (after its check).
pub(crate) struct Arriving<'s> {
    sequencer: &'s Sequencer,
    producer_id: i64,
}

impl Drop for Arriving<'_> {
    fn drop(&mut self) {
        let mut arriving = self.sequencer.lock_arriving();
        if let Some(count) = arriving.get_mut(&self.producer_id) {
            *count -= 1;
            if *count == 0 {
                arriving.remove(&self.producer_id);
            }
        }
    }
}

/// What the check decided.
pub(crate) enum Checked<'s> {
    /// Propose the batch now, holding this guard; then [`Sequenced::proposed`].
    Append(Sequenced<'s>),
    /// A retry of a batch proposed already: answer with that batch's offset once applied.
    Duplicate,
    /// This replica no longer leads in the term it checked for.
    NotLeading,
}

/// The projection, locked for one batch's proposal.
pub(crate) struct Sequenced<'s> {
    sequencer: &'s Sequencer,
    projection: tokio::sync::MutexGuard<'s, Projection>,
}

impl Sequenced<'_> {
    /// Records the batch, handed to Raft, in the projection (releasing the lock).
    pub(crate) fn proposed(mut self, batch: &ProducerBatch, shared: &PartitionShared) {
        let settings = shared.producer_settings();
        self.projection
            .table
            .record(batch, None, settings.now_ms(), &settings.limits);
        drop(self.projection);
        self.sequencer.recorded.notify_waiters();
    }
}

impl Sequencer {
    fn lock_arriving(&self) -> std::sync::MutexGuard<'_, HashMap<i64, usize>> {
        self.arriving
            .lock()
            .expect("sequencer arrivals lock poisoned by a panic")
    }

    /// Counts a batch of `producer_id` as on its way to its check.
    pub(crate) fn arrive(&self, producer_id: i64) -> Arriving<'_> {
        *self.lock_arriving().entry(producer_id).or_default() += 1;
        Arriving {
            sequencer: self,
            producer_id,
        }
    }

    fn others_arriving(&self, producer_id: i64) -> bool {
        self.lock_arriving()
            .get(&producer_id)
            .is_some_and(|count| *count > 1)
    }

    /// Checks `batch` as the leader of `term` (which has applied every entry of earlier terms);
    /// a batch to append keeps the lock until it is proposed. `still_leads` says whether this
    /// replica still leads in `term`.
    pub(crate) async fn check(
        &self,
        batch: &ProducerBatch,
        term: u64,
        shared: &Arc<PartitionShared>,
        still_leads: impl Fn() -> bool,
    ) -> Result<Checked<'_>, SequenceError> {
        let deadline = tokio::time::Instant::now() + GAP_WAIT;
        loop {
            let recorded = self.recorded.notified();
            tokio::pin!(recorded);
            recorded.as_mut().enable();
            let mut projection = self.projection.lock().await;
            if !still_leads() {
                return Ok(Checked::NotLeading);
            }
            if projection.term != Some(term) {
                projection.table = shared.with_producers(|table| table.clone());
                projection.term = Some(term);
            }
            match projection.table.check(batch) {
                Ok(SequenceCheck::Append) => {
                    return Ok(Checked::Append(Sequenced {
                        sequencer: self,
                        projection,
                    }));
                }
                Ok(SequenceCheck::Duplicate { .. }) => return Ok(Checked::Duplicate),
                Err(SequenceError::OutOfOrder { .. } | SequenceError::UnknownProducer { .. })
                    if self.others_arriving(batch.producer_id)
                        && tokio::time::Instant::now() < deadline =>
                {
                    drop(projection);
                    // An earlier batch may be about to fill the gap: wait for the next record.
                    let _ = tokio::time::timeout_at(deadline, recorded).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
