//! The postcard encoding of Raft messages between nodes (`docs/protocol/raft-transport.md`),
//! without copying record batches more than the transport must.
//!
//! - [`encode`] sizes a message first and writes it into one allocation of exactly that size: a
//!   64 KiB append grown by doubling was copied about once more on its way out.
//! - [`decode_shared`] decodes a received message so that the record batches (and controller
//!   commands) of its entries are slices of the received buffer, not copies of it. The bytes
//!   stay the ones that arrived: an entry holds the same bytes either way.
//!
//! Invariant: outside [`decode_shared`], a [`crate::Request`] decodes as before (its bytes are
//! copied), whatever the format; a slice is taken only of the buffer being decoded, and only
//! when postcard hands out bytes that lie inside it.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use serde::de::{DeserializeOwned, Deserializer, SeqAccess, Visitor};

thread_local! {
    /// The buffer [`decode_shared`] is decoding on this thread, if any.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// `value` in postcard, in a buffer of exactly its length.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    let len = postcard::experimental::serialized_size(value)?;
    postcard::to_extend(value, Vec::with_capacity(len))
}

/// Decodes `payload` (postcard); the record batches of a [`crate::Request`] inside it share
/// `payload`'s memory.
pub fn decode_shared<T: DeserializeOwned>(payload: &Bytes) -> postcard::Result<T> {
    /// Puts the caller's source back however decoding ends, on an unwind too, so that no
    /// later decode on this thread slices a buffer it was not given.
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SOURCE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let previous = SOURCE.with(|s| s.borrow_mut().replace(payload.clone()));
    let _restore = Restore(previous);
    postcard::from_bytes(payload)
}

/// `bytes` as a slice of the buffer being decoded when it lies inside it; otherwise a copy.
fn shared_or_copied(bytes: &[u8]) -> Bytes {
    SOURCE.with(|s| {
        let source = s.borrow();
        match source.as_ref() {
            Some(source) if within(source, bytes) => source.slice_ref(bytes),
            _ => Bytes::copy_from_slice(bytes),
        }
    })
}

/// Whether `part` lies within `whole`'s memory.
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (start, end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    let (part_start, part_end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
    !part.is_empty() && start <= part_start && part_end <= end
}

/// serde's `deserialize_with` for a `Bytes` field: as `bytes`' own implementation (the same
/// encodings accepted), except that borrowed bytes of the buffer [`decode_shared`] decodes are
/// sliced rather than copied.
pub(crate) fn shared_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    deserializer.deserialize_bytes(SharedBytes)
}

struct SharedBytes;

impl<'de> Visitor<'de> for SharedBytes {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(shared_or_copied(v))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // Self-describing formats may write bytes as a sequence; bounded by what the format
        // already holds, as `bytes`' own implementation.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use openraft::raft::AppendEntriesRequest;
    use openraft::{Entry, EntryPayload, Vote};

    use super::*;
    use crate::codec::log_id;
    use crate::{Request, TypeConfig};

    fn append(batches: &[&[u8]]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(3, 6)),
            entries: batches
                .iter()
                .enumerate()
                .map(|(i, batch)| Entry {
                    log_id: log_id(3, 7 + i as u64),
                    payload: EntryPayload::Normal(Request::Records {
                        batch: Bytes::copy_from_slice(batch),
                        local_ack: None,
                    }),
                })
                .chain(std::iter::once(Entry {
                    log_id: log_id(3, 7 + batches.len() as u64),
                    payload: EntryPayload::Normal(Request::Metadata(Bytes::from_static(b"cmd"))),
                }))
                .collect(),
            leader_commit: Some(log_id(3, 5)),
        }
    }

    fn payloads(request: &AppendEntriesRequest<TypeConfig>) -> Vec<Bytes> {
        request
            .entries
            .iter()
            .map(|entry| match &entry.payload {
                EntryPayload::Normal(Request::Records { batch, .. }) => batch.clone(),
                EntryPayload::Normal(Request::Metadata(bytes)) => bytes.clone(),
                other => panic!("unexpected payload {other:?}"),
            })
            .collect()
    }

    fn assert_same(
        got: &AppendEntriesRequest<TypeConfig>,
        want: &AppendEntriesRequest<TypeConfig>,
    ) {
        assert_eq!(got.vote, want.vote);
        assert_eq!(got.prev_log_id, want.prev_log_id);
        assert_eq!(got.entries, want.entries);
        assert_eq!(got.leader_commit, want.leader_commit);
    }

    #[test]
    fn an_encoding_fills_its_buffer_exactly_and_matches_postcards_own() {
        let request = append(&[&[7u8; 70_000], b"second"]);
        let encoded = encode(&request).unwrap();
        assert_eq!(encoded.len(), encoded.capacity());
        assert_eq!(encoded, postcard::to_allocvec(&request).unwrap());
    }

    #[test]
    fn decoded_batches_share_the_received_buffer() {
        let request = append(&[&[7u8; 70_000], b"second"]);
        let received = Bytes::from(encode(&request).unwrap());
        let decoded: AppendEntriesRequest<TypeConfig> = decode_shared(&received).unwrap();
        assert_same(&decoded, &request);
        for bytes in payloads(&decoded) {
            assert!(within(&received, &bytes), "a payload was copied");
        }
        // The source is gone once decoding is over: the same bytes decoded plainly are copies.
        let plain: AppendEntriesRequest<TypeConfig> = postcard::from_bytes(&received).unwrap();
        assert_same(&plain, &request);
        for bytes in payloads(&plain) {
            assert!(
                !within(&received, &bytes),
                "a plain decode shared the buffer"
            );
        }
    }

    #[test]
    fn bad_bytes_are_an_error_and_leave_no_source_behind() {
        let received = Bytes::from(encode(&append(&[b"batch"])).unwrap());
        let cut = received.slice(..received.len() - 4);
        assert!(decode_shared::<AppendEntriesRequest<TypeConfig>>(&cut).is_err());
        assert!(SOURCE.with(|s| s.borrow().is_none()));
    }

    #[test]
    fn other_formats_decode_requests_as_before() {
        let request = Request::Records {
            batch: Bytes::from_static(b"\x00\x01batch"),
            local_ack: Some(3),
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
    }
}
