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
//! gets its offset (committed, like any acks=all answer). A batch that arrives ahead of its
//! producer's sequence (an earlier batch is still on its way: Kafka requests of one connection
//! are handled concurrently, concurrent gRPC calls may overtake each other, and a retried batch
//! comes after those sent behind it) waits for the gap to fill, at most [`GAP_WAIT`], before it
//! is refused as out of order (or, for a producer the partition does not know yet, as unknown).
//! A batch behind the sequence that is not a duplicate is refused at once.

use std::sync::Arc;
use std::time::Duration;

use quipu_raft::producers::{ProducerBatch, ProducerTable, SequenceCheck, SequenceError};
use quipu_raft::shared::PartitionShared;

/// Longest a batch ahead of its producer's sequence waits for the gap to fill before it is out
/// of order.
pub(crate) const GAP_WAIT: Duration = Duration::from_secs(1);

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
}

#[derive(Debug, Default)]
struct Projection {
    term: Option<u64>,
    table: ProducerTable,
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
                Err(e) if ahead(&e) && tokio::time::Instant::now() < deadline => {
                    drop(projection);
                    // An earlier batch may be about to fill the gap: wait for the next record.
                    let _ = tokio::time::timeout_at(deadline, recorded).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether a refused batch is ahead of its producer's sequence (an earlier batch may still come
/// and fill the gap), rather than behind it or fenced.
fn ahead(error: &SequenceError) -> bool {
    match *error {
        SequenceError::OutOfOrder { got, expected, .. } => {
            // Sequences wrap at 2^31: ahead means less than half the circle forward.
            let forward = (i64::from(got) - i64::from(expected)).rem_euclid(1 << 31);
            forward > 0 && forward < 1 << 30
        }
        SequenceError::UnknownProducer { got, .. } => got > 0,
        SequenceError::StaleEpoch { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_batches_ahead_of_the_sequence_wait() {
        let order = |got, expected| SequenceError::OutOfOrder {
            producer_id: 1,
            got,
            expected,
        };
        assert!(ahead(&order(12, 10)));
        assert!(ahead(&order(1, i32::MAX)));
        assert!(!ahead(&order(8, 10)));
        assert!(!ahead(&order(i32::MAX, 3)));
        assert!(ahead(&SequenceError::UnknownProducer {
            producer_id: 1,
            got: 5
        }));
        assert!(!ahead(&SequenceError::StaleEpoch {
            producer_id: 1,
            epoch: 0,
            current: 1
        }));
    }
}
