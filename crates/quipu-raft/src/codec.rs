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
}

/// An entry could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum EntryCodecError {
    /// An internal payload failed to encode or decode.
    #[error("internal entry {index}: {reason}")]
    Internal {
        /// The entry's Raft index.
        index: u64,
        /// The postcard error.
        reason: String,
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
        EntryPayload::Blank => InternalPayload::Blank,
        EntryPayload::Membership(membership) => InternalPayload::Membership(membership),
    };
    let bytes = postcard::to_allocvec(&internal).map_err(|e| EntryCodecError::Internal {
        index,
        reason: e.to_string(),
    })?;
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
                postcard::from_bytes(&entry.payload).map_err(|e| EntryCodecError::Internal {
                    index: entry.index,
                    reason: e.to_string(),
                })?;
            match internal {
                InternalPayload::Blank => EntryPayload::Blank,
                InternalPayload::Membership(membership) => EntryPayload::Membership(membership),
                InternalPayload::Metadata(bytes) => EntryPayload::Normal(Request::Metadata(bytes)),
            }
        }
    };
    Ok(openraft::Entry { log_id, payload })
}
