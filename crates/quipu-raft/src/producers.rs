//! [`ProducerTable`]: what a partition knows of its idempotent producers (Kafka's producer
//! state): per producer id, its epoch and the sequence ranges and base offsets of its last
//! [`BATCHES_KEPT`] batches. Sequence rules: `docs/protocol/idempotence.md`.
//!
//! The table is applied from the committed log like the rest of the partition's state (every
//! replica records the same batches in the same order), carried in snapshots and checkpoints,
//! and copied by a new leader, which checks each idempotent batch against it (plus the batches
//! it proposed since) before proposing it. Recording is unconditional: a batch in the committed
//! log is recorded whatever its sequence, because its records are there. Only a batch at or
//! below the producer's last recorded base offset is skipped: a snapshot carries the table as of
//! when it was built, and the entries after the snapshot's point are applied on top of it.
//!
//! Memory is bounded: at most [`ProducerLimits::max`] producers per partition, the one used
//! least recently going first, and a producer not used for [`ProducerLimits::expiration_ms`]
//! (by the clock of the replica that records) is forgotten. A forgotten producer that sends a
//! batch other than sequence 0 gets [`SequenceError::UnknownProducer`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use quipu_record::add_sequence;
use serde::{Deserialize, Serialize};

/// Batches kept per producer: a retry of any of them is recognised (Kafka keeps five, and its
/// clients keep at most five in flight per partition).
pub const BATCHES_KEPT: usize = 5;

/// Bounds on a partition's producer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerLimits {
    /// Producers tracked per partition; past it, the one used least recently is forgotten.
    pub max: usize,
    /// A producer not used for this long (ms) is forgotten (Kafka's
    /// `producer.id.expiration.ms`).
    pub expiration_ms: i64,
}

impl Default for ProducerLimits {
    fn default() -> Self {
        ProducerLimits {
            max: 10_000,
            expiration_ms: 24 * 60 * 60 * 1000,
        }
    }
}

/// The producer fields of one idempotent batch, as its header carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// The producer id (≥ 0).
    pub producer_id: i64,
    /// The producer epoch (≥ 0).
    pub epoch: i16,
    /// The sequence of its first record (≥ 0).
    pub first_sequence: i32,
    /// The sequence of its last record (wraps from `i32::MAX` to 0, as Kafka's).
    pub last_sequence: i32,
}

/// Why a batch that names a producer is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProducerFieldsError {
    /// A producer id with a negative epoch or base sequence.
    #[error(
        "producer {producer_id} batch has epoch {epoch} and base sequence {base_sequence} (both must be at least 0)"
    )]
    Negative {
        /// The producer id.
        producer_id: i64,
        /// The epoch given.
        epoch: i16,
        /// The base sequence given.
        base_sequence: i32,
    },
}

impl ProducerBatch {
    /// The producer fields of a batch with `header`, if it names a producer (id ≥ 0).
    /// (Transactional batches never get here: validation refuses them.)
    pub fn of(
        header: &quipu_record::BatchHeader,
    ) -> Result<Option<ProducerBatch>, ProducerFieldsError> {
        if header.producer_id < 0 {
            return Ok(None);
        }
        if header.producer_epoch < 0 || header.base_sequence < 0 {
            return Err(ProducerFieldsError::Negative {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                base_sequence: header.base_sequence,
            });
        }
        Ok(Some(ProducerBatch {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first_sequence: header.base_sequence,
            last_sequence: add_sequence(header.base_sequence, header.last_offset_delta),
        }))
    }
}

/// One recorded batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedBatch {
    /// Sequence of its first record.
    pub first_sequence: i32,
    /// Sequence of its last record.
    pub last_sequence: i32,
    /// Offset of its first record; `None` in a leader's projection while the batch is proposed
    /// but not yet applied.
    pub base_offset: Option<u64>,
}

/// One producer's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    /// Its current epoch.
    pub epoch: i16,
    /// Its last batches of that epoch, oldest first (at most [`BATCHES_KEPT`]).
    pub batches: VecDeque<RecordedBatch>,
    /// When a batch of it was last recorded (ms, the recording replica's clock).
    pub last_used_ms: i64,
}

/// What to do with a batch that passed the sequence rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// The next batch of its producer: append it.
    Append,
    /// A retry of one of the producer's last batches: do not append it again; the producer gets
    /// that batch's base offset (`None` while it is proposed but not applied yet).
    Duplicate {
        /// The original batch's base offset.
        base_offset: Option<u64>,
    },
}

/// Why a batch breaks the sequence rules (Kafka's errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// An epoch older than the producer's current one: a fenced, stale producer
    /// (INVALID_PRODUCER_EPOCH).
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    StaleEpoch {
        /// The producer id.
        producer_id: i64,
        /// The epoch sent.
        epoch: i16,
        /// The current epoch.
        current: i16,
    },
    /// The batch does not follow the producer's last one (OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("producer {producer_id} sent sequence {got}, expected {expected}")]
    OutOfOrder {
        /// The producer id.
        producer_id: i64,
        /// The first sequence sent.
        got: i32,
        /// The sequence that would follow.
        expected: i32,
    },
    /// The partition does not know the producer (never seen, or forgotten) and the batch does
    /// not start at sequence 0 (UNKNOWN_PRODUCER_ID).
    #[error(
        "producer {producer_id} is unknown to this partition (expired or never seen) and sent sequence {got}, not 0"
    )]
    UnknownProducer {
        /// The producer id.
        producer_id: i64,
        /// The first sequence sent.
        got: i32,
    },
}

/// The producers of one partition. Serialised as the clock-free list of entries; the age index
/// is rebuilt on decode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<(i64, ProducerEntry)>", into = "Vec<(i64, ProducerEntry)>")]
pub struct ProducerTable {
    producers: BTreeMap<i64, ProducerEntry>,
    /// `(last_used_ms, producer id)` of every producer: the least recently used first.
    by_age: BTreeSet<(i64, i64)>,
}

impl From<Vec<(i64, ProducerEntry)>> for ProducerTable {
    fn from(entries: Vec<(i64, ProducerEntry)>) -> Self {
        let mut table = ProducerTable::default();
        for (id, mut entry) in entries {
            // A damaged or hostile encoding must not break the window bound.
            while entry.batches.len() > BATCHES_KEPT {
                entry.batches.pop_front();
            }
            table.by_age.insert((entry.last_used_ms, id));
            if let Some(old) = table.producers.insert(id, entry) {
                table.by_age.remove(&(old.last_used_ms, id));
            }
        }
        table
    }
}

impl From<ProducerTable> for Vec<(i64, ProducerEntry)> {
    fn from(table: ProducerTable) -> Self {
        table.producers.into_iter().collect()
    }
}

impl ProducerTable {
    /// Producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The state of producer `id`, if tracked.
    pub fn get(&self, id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&id)
    }

    /// Checks `batch` against its producer's state, by Kafka's rules: an older epoch is fenced;
    /// a newer epoch must start at sequence 0; in the same epoch, a batch equal to one of the
    /// last [`BATCHES_KEPT`] (same first and last sequence) is a duplicate, else it must start
    /// right after the last one; an unknown producer must start at 0.
    pub fn check(&self, batch: &ProducerBatch) -> Result<SequenceCheck, SequenceError> {
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return if batch.first_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::UnknownProducer {
                    producer_id: batch.producer_id,
                    got: batch.first_sequence,
                })
            };
        };
        if batch.epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                current: entry.epoch,
            });
        }
        let expected = if batch.epoch > entry.epoch {
            0
        } else if let Some(duplicate) = entry.batches.iter().find(|b| {
            b.first_sequence == batch.first_sequence && b.last_sequence == batch.last_sequence
        }) {
            return Ok(SequenceCheck::Duplicate {
                base_offset: duplicate.base_offset,
            });
        } else {
            entry
                .batches
                .back()
                .map_or(0, |last| add_sequence(last.last_sequence, 1))
        };
        if batch.first_sequence == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(SequenceError::OutOfOrder {
                producer_id: batch.producer_id,
                got: batch.first_sequence,
                expected,
            })
        }
    }

    /// Records `batch`, appended at `base_offset` (`None`: proposed, not yet applied), at time
    /// `now_ms`; then forgets producers past `limits`. Unconditional (see the module doc),
    /// except that a batch at or below the producer's last recorded base offset was recorded
    /// already and is skipped.
    pub fn record(
        &mut self,
        batch: &ProducerBatch,
        base_offset: Option<u64>,
        now_ms: i64,
        limits: &ProducerLimits,
    ) {
        let id = batch.producer_id;
        let recorded = RecordedBatch {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence,
            base_offset,
        };
        match self.producers.get_mut(&id) {
            Some(entry) => {
                let last_offset = entry.batches.iter().filter_map(|b| b.base_offset).max();
                if let (Some(offset), Some(last)) = (base_offset, last_offset)
                    && offset <= last
                {
                    return;
                }
                if batch.epoch != entry.epoch {
                    entry.epoch = batch.epoch;
                    entry.batches.clear();
                }
                entry.batches.push_back(recorded);
                while entry.batches.len() > BATCHES_KEPT {
                    entry.batches.pop_front();
                }
                let used = now_ms.max(entry.last_used_ms);
                self.by_age.remove(&(entry.last_used_ms, id));
                entry.last_used_ms = used;
                self.by_age.insert((used, id));
            }
            None => {
                self.producers.insert(
                    id,
                    ProducerEntry {
                        epoch: batch.epoch,
                        batches: VecDeque::from([recorded]),
                        last_used_ms: now_ms,
                    },
                );
                self.by_age.insert((now_ms, id));
            }
        }
        self.forget(now_ms, limits, id);
    }

    /// Forgets producers unused for longer than the expiration, then the least recently used
    /// while more than `limits.max` are tracked; never `keep` (the one just recorded).
    fn forget(&mut self, now_ms: i64, limits: &ProducerLimits, keep: i64) {
        let deadline = now_ms.saturating_sub(limits.expiration_ms);
        while let Some(&(used, id)) = self.by_age.first() {
            let over = self.producers.len() > limits.max.max(1);
            if id == keep || (!over && used >= deadline) {
                break;
            }
            self.by_age.pop_first();
            self.producers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(id: i64, epoch: i16, first: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: id,
            epoch,
            first_sequence: first,
            last_sequence: add_sequence(first, count - 1),
        }
    }

    const LIMITS: ProducerLimits = ProducerLimits {
        max: 3,
        expiration_ms: 1_000,
    };

    #[test]
    fn sequences_follow_on_and_a_retry_of_a_recent_batch_is_a_duplicate() {
        let mut table = ProducerTable::default();
        assert_eq!(table.check(&batch(7, 0, 0, 10)), Ok(SequenceCheck::Append));
        table.record(&batch(7, 0, 0, 10), Some(100), 0, &LIMITS);
        assert_eq!(
            table.check(&batch(7, 0, 0, 10)),
            Ok(SequenceCheck::Duplicate {
                base_offset: Some(100)
            })
        );
        assert_eq!(table.check(&batch(7, 0, 10, 5)), Ok(SequenceCheck::Append));
        assert_eq!(
            table.check(&batch(7, 0, 11, 5)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                got: 11,
                expected: 10
            })
        );
        // Same start, different length: not the same batch.
        assert!(matches!(
            table.check(&batch(7, 0, 0, 9)),
            Err(SequenceError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_recognised() {
        let mut table = ProducerTable::default();
        for i in 0..6 {
            table.record(
                &batch(1, 0, i * 2, 2),
                Some(u64::try_from(i).unwrap() * 2),
                0,
                &LIMITS,
            );
        }
        assert!(matches!(
            table.check(&batch(1, 0, 0, 2)),
            Err(SequenceError::OutOfOrder { expected: 12, .. })
        ));
        assert_eq!(
            table.check(&batch(1, 0, 2, 2)),
            Ok(SequenceCheck::Duplicate {
                base_offset: Some(2)
            })
        );
    }

    #[test]
    fn epochs_fence_older_producers_and_a_new_epoch_starts_at_zero() {
        let mut table = ProducerTable::default();
        table.record(&batch(1, 3, 0, 4), Some(0), 0, &LIMITS);
        assert!(matches!(
            table.check(&batch(1, 2, 4, 1)),
            Err(SequenceError::StaleEpoch { current: 3, .. })
        ));
        assert!(matches!(
            table.check(&batch(1, 4, 4, 1)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        assert_eq!(table.check(&batch(1, 4, 0, 1)), Ok(SequenceCheck::Append));
        table.record(&batch(1, 4, 0, 1), Some(4), 0, &LIMITS);
        assert_eq!(table.get(1).map(|e| e.batches.len()), Some(1));
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut table = ProducerTable::default();
        let last = batch(1, 0, i32::MAX - 1, 2);
        assert_eq!(last.last_sequence, i32::MAX);
        table.record(
            &ProducerBatch {
                first_sequence: 0,
                last_sequence: i32::MAX - 2,
                ..last
            },
            Some(0),
            0,
            &LIMITS,
        );
        table.record(&last, Some(10), 0, &LIMITS);
        assert_eq!(table.check(&batch(1, 0, 0, 1)), Ok(SequenceCheck::Append));
        assert_eq!(batch(1, 0, i32::MAX, 3).last_sequence, 1);
    }

    #[test]
    fn unknown_producers_must_start_at_zero() {
        let table = ProducerTable::default();
        assert_eq!(
            table.check(&batch(9, 0, 5, 1)),
            Err(SequenceError::UnknownProducer {
                producer_id: 9,
                got: 5
            })
        );
    }

    #[test]
    fn producers_expire_and_the_least_recently_used_go_past_the_cap() {
        let mut table = ProducerTable::default();
        table.record(&batch(1, 0, 0, 1), Some(0), 0, &LIMITS);
        table.record(&batch(2, 0, 0, 1), Some(1), 500, &LIMITS);
        table.record(&batch(3, 0, 0, 1), Some(2), 600, &LIMITS);
        table.record(&batch(1, 0, 1, 1), Some(3), 700, &LIMITS);
        // Past the cap of 3: producer 2 is now the least recently used.
        table.record(&batch(4, 0, 0, 1), Some(4), 800, &LIMITS);
        assert!(table.get(2).is_none());
        assert_eq!(table.len(), 3);
        // 1,000 ms later than producer 3's use: it expired, and so did 1 (700).
        table.record(&batch(4, 0, 1, 1), Some(5), 1_750, &LIMITS);
        assert!(table.get(3).is_none() && table.get(1).is_none());
        assert!(matches!(
            table.check(&batch(1, 0, 2, 1)),
            Err(SequenceError::UnknownProducer { .. })
        ));
    }

    #[test]
    fn a_batch_recorded_already_is_skipped_when_applied_again() {
        let mut table = ProducerTable::default();
        table.record(&batch(1, 0, 0, 2), Some(10), 0, &LIMITS);
        table.record(&batch(1, 0, 2, 2), Some(12), 0, &LIMITS);
        let before = table.clone();
        table.record(&batch(1, 0, 0, 2), Some(10), 0, &LIMITS);
        table.record(&batch(1, 0, 2, 2), Some(12), 0, &LIMITS);
        assert_eq!(table, before);
    }

    #[test]
    fn a_batch_recorded_before_its_offset_is_known_is_a_duplicate_without_one() {
        let mut table = ProducerTable::default();
        table.record(&batch(1, 0, 0, 2), None, 0, &LIMITS);
        assert_eq!(
            table.check(&batch(1, 0, 0, 2)),
            Ok(SequenceCheck::Duplicate { base_offset: None })
        );
        assert_eq!(table.check(&batch(1, 0, 2, 1)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn the_table_survives_encoding() {
        let mut table = ProducerTable::default();
        table.record(&batch(1, 0, 0, 2), Some(10), 5, &LIMITS);
        table.record(&batch(-0x7fff_ffff, 2, 0, 2), Some(12), 6, &LIMITS);
        let bytes = postcard::to_allocvec(&table).unwrap();
        let back: ProducerTable = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, table);
    }

    /// A batch the model saw appended: first and last sequence, base offset.
    type Appended = (i32, i32, u64);

    /// The model: every batch a producer ever appended, in order, per epoch.
    #[derive(Default)]
    struct Model {
        appended: BTreeMap<i64, (i16, Vec<Appended>)>,
    }

    impl Model {
        fn check(&self, b: &ProducerBatch) -> Result<SequenceCheck, SequenceError> {
            let Some((epoch, batches)) = self.appended.get(&b.producer_id) else {
                return if b.first_sequence == 0 {
                    Ok(SequenceCheck::Append)
                } else {
                    Err(SequenceError::UnknownProducer {
                        producer_id: b.producer_id,
                        got: b.first_sequence,
                    })
                };
            };
            if b.epoch < *epoch {
                return Err(SequenceError::StaleEpoch {
                    producer_id: b.producer_id,
                    epoch: b.epoch,
                    current: *epoch,
                });
            }
            if b.epoch == *epoch {
                let recent = &batches[batches.len().saturating_sub(BATCHES_KEPT)..];
                if let Some(&(_, _, offset)) = recent
                    .iter()
                    .find(|(f, l, _)| *f == b.first_sequence && *l == b.last_sequence)
                {
                    return Ok(SequenceCheck::Duplicate {
                        base_offset: Some(offset),
                    });
                }
            }
            let expected = match batches.last() {
                Some(&(_, last, _)) if b.epoch == *epoch => add_sequence(last, 1),
                _ => 0,
            };
            if b.first_sequence == expected {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id: b.producer_id,
                    got: b.first_sequence,
                    expected,
                })
            }
        }

        fn record(&mut self, b: &ProducerBatch, offset: u64) {
            let entry = self
                .appended
                .entry(b.producer_id)
                .or_insert((b.epoch, Vec::new()));
            if entry.0 != b.epoch {
                *entry = (b.epoch, Vec::new());
            }
            entry.1.push((b.first_sequence, b.last_sequence, offset));
        }
    }

    proptest! {
        /// A producer that retries, skips ahead and bumps its epoch at random is judged the same
        /// way by the table (with no expiry or cap in play) as by the model of its whole history,
        /// and the log gets each sequence once, in order.
        #[test]
        fn the_table_judges_like_the_model_of_the_whole_history(
            steps in proptest::collection::vec((0i64..3, 0u8..6, 1i32..4, 1usize..8), 1..300)
        ) {
            let limits = ProducerLimits { max: 100, expiration_ms: i64::MAX };
            let mut table = ProducerTable::default();
            let mut model = Model::default();
            let mut next = BTreeMap::<i64, (i16, i32)>::new();
            let mut sent = BTreeMap::<i64, Vec<ProducerBatch>>::new();
            let mut offset = 0u64;
            let mut log = BTreeMap::<(i64, i16), Vec<i32>>::new();
            for (id, action, count, back) in steps {
                let (epoch, seq) = *next.get(&id).unwrap_or(&(0, 0));
                let history = sent.entry(id).or_default();
                let b = match action {
                    // Retry one of the last few batches sent.
                    0 | 1 if !history.is_empty() => history[history.len().saturating_sub(back)],
                    // Skip ahead (a gap).
                    2 => batch(id, epoch, seq + 1, count),
                    // A new epoch (or an old one).
                    3 => batch(id, epoch + 1, 0, count),
                    4 if epoch > 0 => batch(id, epoch - 1, 0, count),
                    _ => batch(id, epoch, seq, count),
                };
                let expected = model.check(&b);
                prop_assert_eq!(table.check(&b), expected);
                if expected == Ok(SequenceCheck::Append) {
                    table.record(&b, Some(offset), 0, &limits);
                    model.record(&b, offset);
                    offset += u64::try_from(count).unwrap();
                    log.entry((id, b.epoch)).or_default().push(b.first_sequence);
                    next.insert(id, (b.epoch, add_sequence(b.last_sequence, 1)));
                    history.push(b);
                }
            }
            // Within an epoch, the log holds strictly increasing, gap-free sequences.
            for sequences in log.values() {
                prop_assert!(sequences.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}
