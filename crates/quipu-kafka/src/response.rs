//! [`Response`]: an encoded answer, held as a list of byte chunks. A fetch answer's record batches
//! stay the log's own bytes (the segments' maps) instead of being copied into the answer: the
//! chunks go out in vectored writes, so the only copy of a batch in plaintext is the kernel's
//! into the socket (over TLS, rustls's into its records).
//!
//! `kafka-protocol` takes a partition's records as one buffer, while the log holds them as one
//! buffer per Raft entry. So records are given to it as a *span marker* ([`span_marker`]): a
//! buffer of the right length whose bytes are never read or sent. [`Encoding`] replaces each
//! marker it is asked to write, in order, by the entries' own bytes ([`Encoding::new`]'s
//! spans); an answer in which a marker and its span do not match is refused, never sent.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut, buf::UninitSlice};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Records of at least this many bytes go out as span markers (their entries' own bytes);
/// shorter ones are copied into the answer, which is cheaper than more chunks (and `iovec`s).
pub(crate) const SPAN_BYTES_MIN: usize = 4096;

/// The longest span a marker stands in for; longer records are joined into one buffer instead.
pub(crate) const SPAN_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What span markers point into: zeros never read, so never backed by memory (a zeroed
/// allocation this large is a fresh anonymous mapping), unless an answer with a marker were
/// encoded without its span, which [`Encoding::finish`] refuses.
static REGION: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();

fn marker_region() -> &'static Bytes {
    REGION.get_or_init(|| Bytes::from(vec![0u8; SPAN_BYTES_MAX]))
}

fn static_region() -> Option<&'static Bytes> {
    REGION.get()
}

/// A stand-in for `len` bytes of records that several entries hold, to be replaced by them when
/// the answer is encoded; `None` past [`SPAN_BYTES_MAX`].
pub(crate) fn span_marker(len: usize) -> Option<Bytes> {
    (len <= SPAN_BYTES_MAX).then(|| marker_region().slice(..len))
}

/// Whether `bytes` is (part of) a span marker. Asks for the region without making it: until a
/// marker was made, nothing is one.
fn is_span_marker(bytes: &[u8]) -> bool {
    static_region().is_some_and(|region| {
        let start = region.as_ptr() as usize;
        let at = bytes.as_ptr() as usize;
        start <= at && at < start + SPAN_BYTES_MAX
    })
}

/// An answer had a span marker without its span (or the reverse): a bug, reported instead of
/// sending the marker's zeros.
#[derive(Debug, thiserror::Error)]
#[error("a fetch answer's records and the entries that hold them did not match")]
pub(crate) struct SpanMismatch;

/// One encoded answer, size prefix included: its chunks in order.
#[derive(Debug, Default)]
pub(crate) struct Response {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl Response {
    /// Every byte of the answer, in one buffer (a copy: for tests and small answers only).
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> Bytes {
        let mut all = BytesMut::with_capacity(self.remaining);
        for chunk in &self.chunks {
            all.extend_from_slice(chunk);
        }
        all.freeze()
    }

    /// How many chunks the answer has.
    #[cfg(test)]
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len();
            self.chunks.push_back(chunk);
        }
    }
}

impl From<Bytes> for Response {
    fn from(bytes: Bytes) -> Response {
        let mut response = Response::default();
        response.push(bytes);
        response
    }
}

impl Buf for Response {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |chunk| &chunk[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, chunk) in dst.iter_mut().zip(&self.chunks) {
            *slot = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return; // past the end: `Buf` leaves that to the caller; nothing left to drop
            };
            let step = cnt.min(front.len());
            front.advance(step);
            self.remaining -= step;
            cnt -= step;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }
}

/// The buffer an answer is encoded into: writes gather in `head`, except a span marker, which
/// becomes the chunks of its span.
pub(crate) struct Encoding {
    /// The spans that the markers to be written stand for, in the order they are written.
    spans: VecDeque<Vec<Bytes>>,
    /// A marker came without its span.
    mismatched: bool,
    done: Response,
    head: BytesMut,
}

impl Encoding {
    /// An empty answer with room for `capacity` copied bytes, whose span markers will be
    /// replaced, in order, by `spans`' bytes.
    pub(crate) fn new(capacity: usize, spans: Vec<Vec<Bytes>>) -> Encoding {
        Encoding {
            spans: spans.into(),
            mismatched: false,
            done: Response::default(),
            head: BytesMut::with_capacity(capacity),
        }
    }

    /// The answer encoded; refused if a span marker and its span did not match.
    pub(crate) fn finish(mut self) -> Result<Response, SpanMismatch> {
        if self.mismatched || !self.spans.is_empty() {
            return Err(SpanMismatch);
        }
        let head = self.head.split().freeze();
        self.done.push(head);
        Ok(self.done)
    }

    /// Bytes encoded so far.
    fn len(&self) -> usize {
        self.done.remaining + self.head.len()
    }

    /// Makes every chunk one buffer again, for a write into what was already encoded (the
    /// message encoders never do this; record encoders do).
    fn flatten(&mut self) {
        if self.done.chunks.is_empty() {
            return;
        }
        let mut all = BytesMut::with_capacity(self.len() + self.head.capacity());
        for chunk in self.done.chunks.drain(..) {
            all.extend_from_slice(&chunk);
        }
        all.extend_from_slice(&self.head);
        self.done.remaining = 0;
        self.head = all;
    }
}

// SAFETY: every method delegates to `head`, a `BytesMut`, whose own `BufMut` contract holds;
// `put_slice` only appends whole chunks or calls `head`'s safe methods.
#[allow(unsafe_code)]
unsafe impl BufMut for Encoding {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise (`cnt` bytes of `chunk_mut` initialized) is about
        // `head`'s chunk, which `chunk_mut` returned.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if is_span_marker(src) {
            let span = self.spans.pop_front();
            let len: usize = span.iter().flatten().map(Bytes::len).sum();
            if let Some(span) = span.filter(|_| len == src.len()) {
                let head = self.head.split().freeze();
                self.done.push(head);
                for part in span {
                    self.done.push(part);
                }
            } else {
                self.mismatched = true;
            }
            return;
        }
        self.head.extend_from_slice(src);
    }
}

impl ByteBufMut for Encoding {
    fn offset(&self) -> usize {
        self.len()
    }

    fn seek(&mut self, offset: usize) {
        self.flatten();
        self.head.resize(offset, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        self.flatten();
        &mut self.head[r]
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap
    )]

    use super::*;

    fn shared_batch(len: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn a_span_is_referenced_and_other_writes_copied() {
        let big = shared_batch(10_000, 1);
        let other = shared_batch(10_000, 2); // no marker: copied
        let span = big.slice(100..9_000);
        let mut encoding = Encoding::new(64, vec![vec![span.clone()]]);
        encoding.put_i32(7);
        encoding.put_slice(&span_marker(span.len()).unwrap()); // a span: referenced
        encoding.put_u8(9);
        encoding.put_slice(&big[..100]); // small: copied
        encoding.put_slice(&other); // large, not a marker: copied
        let response = encoding.finish().unwrap();

        let mut expected = BytesMut::new();
        expected.put_i32(7);
        expected.put_slice(&big[100..9_000]);
        expected.put_u8(9);
        expected.put_slice(&big[..100]);
        expected.put_slice(&other);
        assert_eq!(response.to_bytes(), expected.freeze());
        assert_eq!(response.chunk_count(), 3);
        assert_eq!(
            response.chunks[1].as_ptr(),
            big[100..].as_ptr(),
            "not copied"
        );
    }

    #[test]
    fn a_write_into_what_was_encoded_flattens_first() {
        let big = shared_batch(8_192, 3);
        let mut encoding = Encoding::new(0, vec![vec![big.clone()]]);
        encoding.put_u16(1);
        encoding.put_slice(&span_marker(big.len()).unwrap());
        let at = encoding.offset();
        let gap = encoding.put_gap(4);
        encoding.put_u8(5);
        encoding.gap_buf(gap).copy_from_slice(&[1, 2, 3, 4]);
        let response = encoding.finish().unwrap();
        let bytes = response.to_bytes();
        assert_eq!(bytes.len(), 2 + 8_192 + 4 + 1);
        assert_eq!(&bytes[at..at + 4], &[1, 2, 3, 4]);
        assert_eq!(&bytes[2..2 + 8_192], &big[..]);
    }

    #[test]
    fn span_markers_are_replaced_in_order_by_their_spans() {
        let parts = [
            shared_batch(5_000, 4),
            shared_batch(300, 5),
            shared_batch(7_000, 6),
        ];
        let (first, second) = (&parts[..2], &parts[2..]);
        let len = |span: &[Bytes]| span.iter().map(Bytes::len).sum::<usize>();
        let mut encoding = Encoding::new(16, vec![first.to_vec(), second.to_vec()]);
        encoding.put_u8(1);
        encoding.put_slice(&span_marker(len(first)).unwrap());
        encoding.put_u8(2);
        encoding.put_slice(&span_marker(len(second)).unwrap());
        let response = encoding.finish().unwrap();
        let mut expected = vec![1u8];
        first.iter().for_each(|p| expected.extend_from_slice(p));
        expected.push(2);
        second.iter().for_each(|p| expected.extend_from_slice(p));
        assert_eq!(response.to_bytes(), expected);
        assert_eq!(response.chunks[1].as_ptr(), parts[0].as_ptr(), "not copied");
    }

    #[test]
    fn a_marker_without_its_span_is_refused_not_sent() {
        let span = vec![shared_batch(5_000, 7)];
        // The marker's length does not match its span.
        let mut encoding = Encoding::new(0, vec![span.clone()]);
        encoding.put_slice(&span_marker(4_999).unwrap());
        assert!(encoding.finish().is_err());
        // No span at all.
        let mut encoding = Encoding::new(0, Vec::new());
        encoding.put_slice(&span_marker(5_000).unwrap());
        assert!(encoding.finish().is_err());
        // A span never written.
        let encoding = Encoding::new(0, vec![span]);
        assert!(encoding.finish().is_err());
        assert!(span_marker(SPAN_BYTES_MAX + 1).is_none());
    }

    #[test]
    fn a_response_is_written_chunk_by_chunk_across_partial_writes() {
        let mut response = Response::from(Bytes::from_static(b"abc"));
        response.push(Bytes::from_static(b"defgh"));
        response.push(Bytes::new());
        assert_eq!(response.remaining(), 8);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(response.chunks_vectored(&mut slices), 2);
        response.advance(4);
        assert_eq!(response.chunk(), b"efgh");
        assert_eq!(response.remaining(), 4);
        response.advance(4);
        assert!(!response.has_remaining());
        assert_eq!(response.chunk(), b"");
    }
}
