//! Splitting a produce or fetch payload into its batches by their length fields alone.
//!
//! Invariant: every batch yielded is a zero-copy slice of the input whose size is
//! 12 + its batch_length field, at least a header's worth and at most the configured maximum.
//! Nothing else about it is checked here: run [`crate::validate_batch`] on each.

use std::iter::FusedIterator;
use std::ops::Range;

use bytes::Bytes;

use crate::BatchError;
use crate::header::{LOG_OVERHEAD, batch_length_is_plausible};

/// Splits `buf`, several RecordBatch v2 back to back, into one [`Bytes`] per batch.
///
/// Each item is a whole batch by its length field, or the error that stopped the iteration
/// (after which it yields nothing): a batch that runs past the end of `buf`
/// ([`BatchError::Truncated`]), a length field below a header's size
/// ([`BatchError::InvalidBatchLength`]) or above `max_batch_bytes` ([`BatchError::TooLarge`]).
/// Fetch responses may legitimately end with a partial batch; readers of those treat a
/// trailing `Truncated` as the end of the data.
pub fn batches(buf: Bytes, max_batch_bytes: usize) -> BatchIter {
    BatchIter {
        rest: buf,
        max_batch_bytes,
        failed: false,
    }
}

/// Iterator over the batches of a payload; see [`batches`].
#[derive(Debug, Clone)]
pub struct BatchIter {
    rest: Bytes,
    max_batch_bytes: usize,
    failed: bool,
}

impl BatchIter {
    /// The bytes not yielded yet; after an error, the batch that failed and everything after.
    pub fn remainder(&self) -> &Bytes {
        &self.rest
    }
}

/// Size of the batch at the start of `rest` according to its length field, checked against the
/// limits.
fn next_len(rest: &[u8], max_batch_bytes: usize) -> Result<usize, BatchError> {
    let available = rest.len();
    let overhead: &[u8; LOG_OVERHEAD] = rest.first_chunk().ok_or(BatchError::Truncated {
        needed: LOG_OVERHEAD,
        available,
    })?;
    let [.., b0, b1, b2, b3] = *overhead;
    let batch_length = i32::from_be_bytes([b0, b1, b2, b3]);
    if !batch_length_is_plausible(batch_length) {
        return Err(BatchError::InvalidBatchLength(batch_length));
    }
    let len = usize::try_from(batch_length)
        .map_err(|_| BatchError::InvalidBatchLength(batch_length))?
        .saturating_add(LOG_OVERHEAD);
    if len > max_batch_bytes {
        return Err(BatchError::TooLarge {
            len,
            max: max_batch_bytes,
        });
    }
    if len > available {
        return Err(BatchError::Truncated {
            needed: len,
            available,
        });
    }
    Ok(len)
}

impl Iterator for BatchIter {
    type Item = Result<Bytes, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match next_len(&self.rest, self.max_batch_bytes) {
            Ok(len) => Some(Ok(self.rest.split_to(len))),
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

impl FusedIterator for BatchIter {}

/// Where each batch of `buf` (several RecordBatch v2 back to back) lies in it, by the batches'
/// length fields alone, as [`batches`] splits them but on a borrowed slice: each item is a
/// batch's range, or the error that stopped the iteration (after which it yields nothing).
pub fn batch_ranges(buf: &[u8], max_batch_bytes: usize) -> BatchRanges<'_> {
    BatchRanges {
        buf,
        at: 0,
        max_batch_bytes,
        failed: false,
    }
}

/// Iterator over the ranges of a payload's batches; see [`batch_ranges`].
#[derive(Debug, Clone)]
pub struct BatchRanges<'a> {
    buf: &'a [u8],
    at: usize,
    max_batch_bytes: usize,
    failed: bool,
}

impl Iterator for BatchRanges<'_> {
    type Item = Result<Range<usize>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.at..).unwrap_or_default();
        if self.failed || rest.is_empty() {
            return None;
        }
        match next_len(rest, self.max_batch_bytes) {
            Ok(len) => {
                let range = self.at..self.at + len;
                self.at = range.end;
                Some(Ok(range))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

impl FusedIterator for BatchRanges<'_> {}

/// The offsets the batches of `buf` occupy together (the sum of each one's
/// `last_offset_delta + 1`), reading their headers alone: for a payload the log validated.
pub fn offset_count_of(buf: &[u8]) -> Result<u64, BatchError> {
    let mut count = 0u64;
    for range in batch_ranges(buf, usize::MAX) {
        let header = crate::BatchHeader::parse(&buf[range?])?;
        count = count.saturating_add(header.offset_count());
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, Compression, validate_batch};

    const LIMIT: usize = 1 << 20;

    fn batch(base_offset: i64, values: &[&[u8]]) -> Bytes {
        let mut builder = BatchBuilder::new(base_offset, Compression::None);
        for value in values {
            builder.push(0, None, Some(value), &[]);
        }
        builder.build().unwrap()
    }

    fn concatenated(parts: &[&Bytes]) -> Bytes {
        Bytes::from(
            parts
                .iter()
                .flat_map(|part| part.iter().copied())
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn splits_concatenated_batches_without_copying() {
        let first = batch(0, &[b"a", b"b"]);
        let second = batch(2, &[b"a much longer value than the others"]);
        let third = batch(3, &[b"c"]);
        let payload = concatenated(&[&first, &second, &third]);
        let split: Vec<Bytes> = batches(payload.clone(), LIMIT)
            .map(Result::unwrap)
            .collect();
        assert_eq!(split, [first, second, third]);
        for part in &split {
            validate_batch(part, LIMIT).unwrap();
        }
        // Zero-copy: the second batch starts inside the payload's own memory.
        assert_eq!(split[1].as_ptr(), payload[split[0].len()..].as_ptr());
        assert_eq!(batches(Bytes::new(), LIMIT).count(), 0);
    }

    #[test]
    fn ranges_and_offset_counts_follow_the_batches() {
        let first = batch(0, &[b"a", b"b"]);
        let second = batch(2, &[b"a much longer value than the others"]);
        let payload = concatenated(&[&first, &second]);
        let ranges: Vec<Range<usize>> = batch_ranges(&payload, LIMIT).map(Result::unwrap).collect();
        assert_eq!(ranges, [0..first.len(), first.len()..payload.len()]);
        assert_eq!(offset_count_of(&payload).unwrap(), 3);
        assert_eq!(offset_count_of(&[]).unwrap(), 0);
        let cut = &payload[..payload.len() - 1];
        let results: Vec<_> = batch_ranges(cut, LIMIT).collect();
        assert_eq!(results.len(), 2);
        assert!(matches!(results[1], Err(BatchError::Truncated { .. })));
        assert!(offset_count_of(cut).is_err());
    }

    #[test]
    fn stops_at_a_truncated_trailing_batch() {
        let first = batch(0, &[b"a"]);
        let second = batch(1, &[b"b"]);
        for cut in [1, 11, 12, 40, second.len() - 1] {
            let payload = concatenated(&[&first, &second.slice(..cut)]);
            let mut iter = batches(payload, LIMIT);
            assert_eq!(iter.next().unwrap().unwrap(), first);
            let error = iter.next().unwrap().unwrap_err();
            let needed = if cut < 12 { 12 } else { second.len() };
            assert!(
                matches!(error, BatchError::Truncated { needed: n, available } if n == needed && available == cut),
                "cut {cut}: {error:?}"
            );
            assert_eq!(iter.remainder().len(), cut);
            assert!(iter.next().is_none());
        }
    }

    #[test]
    fn stops_at_absurd_lengths() {
        let good = batch(0, &[b"a"]);
        type Expected = fn(&BatchError) -> bool;
        let cases: &[(i32, Expected)] = &[
            (i32::MAX, |e| {
                matches!(e, BatchError::TooLarge { max: LIMIT, .. })
            }),
            (-7, |e| matches!(e, BatchError::InvalidBatchLength(-7))),
            (48, |e| matches!(e, BatchError::InvalidBatchLength(48))),
        ];
        for &(length, expected) in cases {
            let mut bad = good.to_vec();
            bad[8..12].copy_from_slice(&length.to_be_bytes());
            let payload = concatenated(&[&good, &Bytes::from(bad)]);
            let results: Vec<_> = batches(payload, LIMIT).collect();
            assert_eq!(results.len(), 2, "length {length}");
            assert!(results[0].is_ok());
            let error = results[1].as_ref().unwrap_err();
            assert!(expected(error), "length {length}: {error:?}");
        }
    }
}
