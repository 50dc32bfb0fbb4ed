//! Committed offsets: OffsetCommit writes them as records of the group's offsets partition
//! (answered once committed and applied), OffsetFetch reads what that partition applied.

use std::time::Duration;

use quipu_groups::{GroupRecord, METADATA_BYTES_MAX, NAME_BYTES_MAX, OffsetKey, OffsetValue};
use quipu_record::{BatchBuilder, BatchError, Compression};

use super::{CoordinatorError, Unavailable};
use crate::ProduceError;
use crate::node::NodeHandle;

/// One partition's offset a client commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset the group reads.
    pub offset: i64,
    /// The leader epoch of the last record consumed (-1: unknown).
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: String,
}

/// Why one partition's offset of a commit was not committed (the others may have been).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitRefused {
    /// The metadata string is longer than `quipu_groups::METADATA_BYTES_MAX` bytes (Kafka's
    /// OFFSET_METADATA_TOO_LARGE).
    #[error("offset metadata of {len} bytes exceeds {max}")]
    MetadataTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A negative offset, a negative partition or a topic name over the limit.
    #[error("invalid offset {offset} for partition {partition} of a topic of {topic_len} bytes")]
    Invalid {
        /// The offset.
        offset: i64,
        /// The partition.
        partition: i32,
        /// The topic name's length.
        topic_len: usize,
    },
}

/// A committed offset, as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset and what came with it; `None`: the group committed none here.
    pub value: Option<OffsetValue>,
}

/// Longest an offset fetch waits to confirm the coordinator's leadership with a quorum and to
/// apply what was committed before it.
const READ_WAIT: Duration = Duration::from_secs(5);

impl NodeHandle {
    /// Commits `offsets` for `group` as its coordinator, for the member `member` (static:
    /// `instance`) of generation `generation` (-1 and "": a client that manages its partitions
    /// itself, accepted while the group has no members). Returns, per
    /// offset in order, whether it was committed: all that were are in one batch of the group's
    /// offsets partition, committed by a majority and applied here when this returns.
    pub async fn commit_offsets(
        &self,
        group: &str,
        generation: i32,
        member: &str,
        instance: Option<&str>,
        offsets: &[OffsetCommit],
    ) -> Result<Vec<Result<(), CommitRefused>>, CoordinatorError> {
        let (replica, term) = self.inner.coordinating(group).await?;
        let _writing = self
            .inner
            .membership
            .check_commit(group, &replica, term, member, instance, generation)?;
        let now = wall_clock_ms();
        let mut records = Vec::with_capacity(offsets.len());
        let results: Vec<Result<(), CommitRefused>> = offsets
            .iter()
            .map(|commit| {
                check(commit)?;
                records.push(GroupRecord::Offset {
                    key: OffsetKey {
                        group: group.to_string(),
                        topic: commit.topic.clone(),
                        partition: commit.partition,
                    },
                    value: Some(OffsetValue {
                        offset: commit.offset,
                        leader_epoch: commit.leader_epoch,
                        metadata: commit.metadata.clone(),
                        commit_timestamp_ms: now,
                    }),
                });
                Ok(())
            })
            .collect();
        if !records.is_empty() {
            write_records(&replica, &records).await?;
        }
        Ok(results)
    }

    /// The offsets `group` committed for `partitions` (each, whether committed or not), or for
    /// every partition it committed one for (`None`), as its coordinator: after confirming the
    /// leadership with a quorum and applying everything committed before the request.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<CommittedOffset>, CoordinatorError> {
        let (replica, _) = self.inner.coordinating(group).await?;
        // Commits accepted before this fetch are written first (Kafka's stable offsets).
        if !self.inner.membership.writes_done(group, READ_WAIT).await {
            return Err(CoordinatorError::NotAvailable(Unavailable::Unstable));
        }
        let not_coordinator = || CoordinatorError::NotCoordinator {
            group: replica.group(),
            leader: replica.leader(),
        };
        let raft = replica.raft();
        let (read, applied) = match tokio::time::timeout(READ_WAIT, raft.get_read_log_id()).await {
            Ok(Ok(ids)) => ids,
            Ok(Err(openraft::error::RaftError::APIError(_))) => return Err(not_coordinator()),
            Ok(Err(e)) => {
                return Err(CoordinatorError::NotAvailable(Unavailable::Read(Box::new(
                    e,
                ))));
            }
            Err(e) => {
                return Err(CoordinatorError::NotAvailable(Unavailable::Read(Box::new(
                    e,
                ))));
            }
        };
        let (read, applied) = (read.map(|l| l.index), applied.map(|l| l.index));
        if read > applied {
            raft.wait(Some(READ_WAIT))
                .applied_index_at_least(read, "an offset fetch's read index is applied")
                .await
                .map_err(|e| CoordinatorError::NotAvailable(Unavailable::Read(Box::new(e))))?;
        }
        let offsets = replica
            .with_groups(|state| match partitions {
                Some(partitions) => partitions
                    .iter()
                    .map(|(topic, partition)| CommittedOffset {
                        topic: topic.clone(),
                        partition: *partition,
                        value: state.committed(group, topic, *partition).cloned(),
                    })
                    .collect(),
                None => state
                    .offsets(group)
                    .map(|((topic, partition), value)| CommittedOffset {
                        topic: topic.clone(),
                        partition: *partition,
                        value: Some(value.clone()),
                    })
                    .collect(),
            })
            .unwrap_or_default();
        Ok(offsets)
    }
}

/// Checks one offset as its record will need it.
fn check(commit: &OffsetCommit) -> Result<(), CommitRefused> {
    if commit.metadata.len() > METADATA_BYTES_MAX {
        return Err(CommitRefused::MetadataTooLarge {
            len: commit.metadata.len(),
            max: METADATA_BYTES_MAX,
        });
    }
    if commit.offset < 0 || commit.partition < 0 || commit.topic.len() > NAME_BYTES_MAX {
        return Err(invalid(commit));
    }
    Ok(())
}

fn invalid(commit: &OffsetCommit) -> CommitRefused {
    CommitRefused::Invalid {
        offset: commit.offset,
        partition: commit.partition,
        topic_len: commit.topic.len(),
    }
}

/// Writes `records` as one batch of the group's offsets partition; `Ok` once a majority has
/// it and this replica applied it. The only way group records are written.
pub(super) async fn write_records(
    replica: &crate::Partition,
    records: &[GroupRecord],
) -> Result<(), CoordinatorError> {
    let now = wall_clock_ms();
    let mut builder = BatchBuilder::new(0, Compression::None);
    for record in records {
        let (key, value) = record
            .encode()
            .map_err(|e| CoordinatorError::NotAvailable(Unavailable::Record(e)))?;
        builder.push(now, Some(&key), value.as_deref(), &[]);
    }
    let batch = builder.build().map_err(|e| match e {
        BatchError::TooLarge { len, max } => CoordinatorError::RecordsTooLarge { bytes: len, max },
        other => {
            CoordinatorError::NotAvailable(Unavailable::Write(ProduceError::InvalidBatch(other)))
        }
    })?;
    let max = replica.batch_bytes_max();
    if batch.len() > max {
        return Err(CoordinatorError::RecordsTooLarge {
            bytes: batch.len(),
            max,
        });
    }
    match replica.write_group_records(batch).await {
        Ok(_) => Ok(()),
        Err(ProduceError::NotLeader { group, leader, .. }) => {
            Err(CoordinatorError::NotCoordinator { group, leader })
        }
        Err(e) => Err(CoordinatorError::NotAvailable(Unavailable::Write(e))),
    }
}

/// Milliseconds since the Unix epoch by this node's clock (0 if it is before 1970).
pub(super) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
