//! What the log stores: entries at dense Raft indexes, some of which carry Kafka record batches.

use bytes::Bytes;

/// A partition offset: the logical number of a record. Dense over records, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What an entry's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// One Kafka RecordBatch v2; takes as many offsets as the batch has offset deltas.
    Records = 1,
    /// Opaque bytes of the layer above (Raft blank or membership entries); takes no offsets.
    Internal = 2,
}

impl EntryKind {
    pub(crate) fn from_u8(byte: u8) -> Option<EntryKind> {
        match byte {
            1 => Some(EntryKind::Records),
            2 => Some(EntryKind::Internal),
            _ => None,
        }
    }
}

/// An entry handed to [`Log::append`](crate::Log::append). The engine assigns its offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Raft index: must be the log's next index.
    pub index: u64,
    /// Raft term of the entry; never lower than the previous entry's.
    pub term: u64,
    /// What the payload is.
    pub kind: EntryKind,
    /// For [`EntryKind::Records`], one or more RecordBatch v2 back to back, as the producers
    /// sent them (the leader groups the batches proposed together into one entry).
    pub payload: Bytes,
}

impl NewEntry {
    /// A record entry carrying one or more RecordBatch v2 back to back.
    pub fn records(index: u64, term: u64, batch: Bytes) -> NewEntry {
        NewEntry {
            index,
            term,
            kind: EntryKind::Records,
            payload: batch,
        }
    }

    /// An internal entry of the layer above.
    pub fn internal(index: u64, term: u64, payload: Bytes) -> NewEntry {
        NewEntry {
            index,
            term,
            kind: EntryKind::Internal,
            payload,
        }
    }
}

/// An entry as stored, read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// Offset of the entry's first record; for an entry without records, the next offset.
    pub base_offset: Offset,
    /// Offsets the entry occupies (0 for internal entries).
    pub record_count: u32,
    /// Largest record timestamp in the batches, in ms since the Unix epoch; -1 if none.
    pub max_timestamp: i64,
    /// What the payload is.
    pub kind: EntryKind,
    /// The payload. For records, the batches back to back, each with its base offset and
    /// partition leader epoch rewritten by the log. Shares memory with the segment's map: no
    /// copy was made.
    pub payload: Bytes,
}

impl Entry {
    /// This records entry from its batch that holds `offset` on: the earlier batches of an entry
    /// of several are left out (a zero-copy slice), and `base_offset` and `record_count` say
    /// what is left. An entry whose first batch holds `offset` (or ends before it, or does not
    /// split, which a validated entry never does) comes back as it is.
    pub fn from_batch_holding(mut self, offset: Offset) -> Entry {
        if self.kind != EntryKind::Records || offset <= self.base_offset {
            return self;
        }
        let mut start = 0;
        for range in quipu_record::batch_ranges(&self.payload, usize::MAX) {
            let Ok(range) = range else {
                return self;
            };
            let Ok(header) = quipu_record::BatchHeader::parse(&self.payload[range.clone()]) else {
                return self;
            };
            let base = u64::try_from(header.base_offset).unwrap_or(0);
            if base.saturating_add(header.offset_count()) > offset.0 {
                if start > 0 {
                    let end = self.next_offset();
                    self.payload = self.payload.slice(start..);
                    self.base_offset = Offset(base);
                    self.record_count = u32::try_from(end.0 - base).unwrap_or(self.record_count);
                }
                return self;
            }
            start = range.end;
        }
        self
    }

    /// The record batches of a records entry, in offset order, each a zero-copy slice of the
    /// payload (none for an internal entry).
    pub fn batches(&self) -> quipu_record::BatchIter {
        let payload = match self.kind {
            EntryKind::Records => self.payload.clone(),
            EntryKind::Internal => Bytes::new(),
        };
        quipu_record::batches(payload, usize::MAX)
    }

    /// The offset after this entry's last record.
    pub fn next_offset(&self) -> Offset {
        Offset(self.base_offset.0 + u64::from(self.record_count))
    }
}
