//! A partition's reads: fetches on the leader, a replica's own reads, and the lookups by
//! timestamp and by leader epoch.

use std::sync::Arc;

use quipu_storage::{Entry, Log, Offset};

use super::Partition;
use crate::FetchError;

impl Partition {
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

    /// The highest offset a fetch may start at without being out of range (Kafka's rule for a
    /// leader: its log's end, not its high watermark). A new leader knows its high watermark
    /// only once it applied its first entry, so a consumer's position (at most a high watermark
    /// it was shown) may lie above it until then: such a fetch gets nothing yet and waits. The
    /// high watermark counts if it is ahead (a log that restarts after an installed snapshot
    /// only at its next append).
    pub fn fetch_offset_max(&self) -> Offset {
        self.log_end_offset().max(self.high_watermark())
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
}
