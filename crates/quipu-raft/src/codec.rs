//! Conversion between openraft entries and the segment log's entries:
//! `docs/format/raft-entries.md`.
//!
//! A `Request::Records` entry becomes a records entry whose payload is the batch itself, so the
//! data is stored once. Every other entry becomes an internal entry whose payload is the postcard
//! encoding of [`InternalPayload`].

use bytes::Bytes;
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, LogId, Membership};
use quipu_storage::{Entry as StoredEntry, EntryKind, NewEntry};
use serde::{Deserialize, Serialize};

use crate::{NodeId, Request, TypeConfig};

/// The payload of an internal entry, version 1. Variants are only ever appended.
#[derive(Debug, Serialize, Deserialize)]
enum InternalPayload {
    Blank,
    Membership(Membership<NodeId, BasicNode>),
    Metadata(Bytes),
    DeleteRecords(u64),
}

/// An entry could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum EntryCodecError {
    /// An internal payload failed to encode or decode.
    #[error("internal entry {index} does not encode or decode")]
    Internal {
        /// The entry's Raft index.
        index: u64,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
}

/// The segment-log entry for an openraft entry.
pub fn to_stored(entry: openraft::Entry<TypeConfig>) -> Result<NewEntry, EntryCodecError> {
    let index = entry.log_id.index;
    let term = entry.log_id.leader_id.term;
    let internal = match entry.payload {
        EntryPayload::Normal(Request::Records { batch, .. }) => {
            return Ok(NewEntry::records(index, term, batch));
        }
        EntryPayload::Normal(Request::Metadata(bytes)) => InternalPayload::Metadata(bytes),
        EntryPayload::Normal(Request::DeleteRecords { before }) => {
            InternalPayload::DeleteRecords(before)
        }
        EntryPayload::Blank => InternalPayload::Blank,
        EntryPayload::Membership(membership) => InternalPayload::Membership(membership),
    };
    let bytes = postcard::to_allocvec(&internal)
        .map_err(|source| EntryCodecError::Internal { index, source })?;
    Ok(NewEntry::internal(index, term, Bytes::from(bytes)))
}

/// The log id of the entry at `index` written in `term` (`single-term-leader`: the term is the
/// whole leader id).
pub fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

/// The openraft entry for a segment-log entry.
pub fn from_stored(entry: StoredEntry) -> Result<openraft::Entry<TypeConfig>, EntryCodecError> {
    let log_id = log_id(entry.term, entry.index);
    let payload = match entry.kind {
        EntryKind::Records => EntryPayload::Normal(Request::Records {
            batch: entry.payload,
            local_ack: None,
        }),
        EntryKind::Internal => {
            let internal: InternalPayload =
                postcard::from_bytes(&entry.payload).map_err(|source| {
                    EntryCodecError::Internal {
                        index: entry.index,
                        source,
                    }
                })?;
            match internal {
                InternalPayload::Blank => EntryPayload::Blank,
                InternalPayload::Membership(membership) => EntryPayload::Membership(membership),
                InternalPayload::Metadata(bytes) => EntryPayload::Normal(Request::Metadata(bytes)),
                InternalPayload::DeleteRecords(before) => {
                    EntryPayload::Normal(Request::DeleteRecords { before })
                }
            }
        }
    };
    Ok(openraft::Entry { log_id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_entries_round_trip_through_the_segment_log_form() {
        for request in [
            Request::DeleteRecords { before: 12_345 },
            Request::Metadata(Bytes::from_static(b"command")),
        ] {
            let entry = openraft::Entry::<TypeConfig> {
                log_id: log_id(3, 7),
                payload: EntryPayload::Normal(request.clone()),
            };
            let stored = to_stored(entry).unwrap();
            assert_eq!(stored.kind, EntryKind::Internal);
            let back = from_stored(StoredEntry {
                index: stored.index,
                term: stored.term,
                kind: stored.kind,
                payload: stored.payload,
                base_offset: quipu_storage::Offset(0),
                record_count: 0,
                max_timestamp: -1,
            })
            .unwrap();
            assert_eq!(back.log_id, log_id(3, 7));
            assert_eq!(back.payload, EntryPayload::Normal(request));
        }
    }
}
