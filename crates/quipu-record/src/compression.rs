//! Record compression codecs and their bounded decompression.
//!
//! Compression goes through `kafka-protocol`'s codecs, which produce exactly the framing Kafka
//! clients expect (xerial-framed snappy, LZ4 frames with independent blocks). Decompression
//! does not: those decoders buffer their whole output with no limit, and the snappy one
//! allocates whatever length the untrusted payload declares. Here every decoder is read through
//! a `take(max + 1)` limit, and snappy block lengths are checked against the limit before the
//! output grows, so a decompression bomb costs at most `max + 1` bytes of output.
//!
//! Codec working memory is bounded by the codecs themselves: LZ4 by its 4 MiB maximum block
//! size, zstd by its default window limit (2^27 bytes, as in Kafka's Java client).

use std::io::Read;

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::Compressor;

use crate::BatchError;

/// Mask of the compression bits (0-2) in the batch attributes.
const COMPRESSION_MASK: i16 = 0x07;

/// The xerial snappy-java stream magic; it is followed by two i32 version fields.
const SNAPPY_XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Length of the xerial header: magic, version, compatible version.
const SNAPPY_XERIAL_HEADER_LEN: usize = 16;

/// How the records section of a batch is compressed (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Records are stored as they are.
    None,
    /// gzip (code 1).
    Gzip,
    /// Snappy with snappy-java's xerial framing (code 2).
    Snappy,
    /// LZ4 frame format (code 3).
    Lz4,
    /// Zstandard (code 4).
    Zstd,
}

impl Compression {
    /// Every codec, in code order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Reads the codec from batch attributes; other attribute bits are ignored.
    pub fn from_attributes(attributes: i16) -> Result<Self, BatchError> {
        match attributes & COMPRESSION_MASK {
            0 => Ok(Self::None),
            1 => Ok(Self::Gzip),
            2 => Ok(Self::Snappy),
            3 => Ok(Self::Lz4),
            4 => Ok(Self::Zstd),
            code => Err(BatchError::UnknownCompression(code)),
        }
    }

    /// The codec's code in attribute bits 0-2.
    pub fn code(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    /// Appends `records` to `out`, compressed with this codec.
    pub(crate) fn compress(self, records: BytesMut, out: &mut BytesMut) -> Result<(), BatchError> {
        use kafka_protocol::compression::{Gzip, Lz4, Snappy, Zstd};

        if self == Self::None {
            out.extend_from_slice(&records);
            return Ok(());
        }
        // The codecs hand us an empty scratch buffer to fill with the uncompressed bytes;
        // moving ours in avoids a copy.
        let fill = move |scratch: &mut BytesMut| {
            *scratch = records;
            Ok(())
        };
        let result = match self {
            // Returned above; kept so a new codec cannot be missed here.
            Self::None => Ok(()),
            Self::Gzip => Gzip::compress(out, fill),
            Self::Snappy => Snappy::compress(out, fill),
            Self::Lz4 => Lz4::compress(out, fill),
            Self::Zstd => Zstd::compress(out, fill),
        };
        result.map_err(|source| BatchError::Compress {
            codec: self,
            source: source.into(),
        })
    }

    /// Decompresses a records section, failing once the output would exceed `max_bytes`.
    pub(crate) fn decompress(self, payload: Bytes, max_bytes: usize) -> Result<Bytes, BatchError> {
        let decompressed = match self {
            Self::None => {
                if payload.len() > max_bytes {
                    return Err(BatchError::DecompressedTooLarge { max: max_bytes });
                }
                return Ok(payload);
            }
            Self::Gzip => read_bounded(
                self,
                flate2::read::MultiGzDecoder::new(payload.as_ref()),
                max_bytes,
            )?,
            Self::Lz4 => {
                let decoder = lz4::Decoder::new(payload.as_ref()).map_err(|error| {
                    BatchError::Decompress {
                        codec: self,
                        source: error.into(),
                    }
                })?;
                read_bounded(self, decoder, max_bytes)?
            }
            Self::Zstd => {
                let decoder = zstd::stream::read::Decoder::with_buffer(payload.as_ref()).map_err(
                    |error| BatchError::Decompress {
                        codec: self,
                        source: error.into(),
                    },
                )?;
                read_bounded(self, decoder, max_bytes)?
            }
            Self::Snappy => snappy_decompress(&payload, max_bytes)?,
        };
        Ok(Bytes::from(decompressed))
    }
}

/// Reads `reader` to its end, failing once more than `max_bytes` come out.
fn read_bounded(
    codec: Compression,
    reader: impl Read,
    max_bytes: usize,
) -> Result<Vec<u8>, BatchError> {
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut out = Vec::new();
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|error| BatchError::Decompress {
            codec,
            source: error.into(),
        })?;
    if out.len() > max_bytes {
        return Err(BatchError::DecompressedTooLarge { max: max_bytes });
    }
    Ok(out)
}

/// Decodes snappy as Kafka's Java client does: xerial framing (big-endian u32 block length,
/// then a raw snappy block, repeated) when the magic is present, one raw block otherwise.
fn snappy_decompress(payload: &[u8], max_bytes: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    match payload.strip_prefix(SNAPPY_XERIAL_MAGIC.as_slice()) {
        None => snappy_block(payload, &mut out, max_bytes)?,
        Some(rest) => {
            let versions_len = SNAPPY_XERIAL_HEADER_LEN - SNAPPY_XERIAL_MAGIC.len();
            let mut rest = rest
                .get(versions_len..)
                .ok_or_else(|| snappy_error("truncated xerial header"))?;
            while !rest.is_empty() {
                let (len_bytes, tail) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| snappy_error("truncated xerial block length"))?;
                let block_len = usize::try_from(u32::from_be_bytes(*len_bytes))
                    .map_err(|_| snappy_error("xerial block length out of range"))?;
                if block_len > tail.len() {
                    return Err(snappy_error("xerial block runs past the payload"));
                }
                let (block, tail) = tail.split_at(block_len);
                snappy_block(block, &mut out, max_bytes)?;
                rest = tail;
            }
        }
    }
    Ok(out)
}

/// Appends one raw snappy block to `out`, checking its declared length against the limit
/// before growing `out`.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, max_bytes: usize) -> Result<(), BatchError> {
    let block_len = snap::raw::decompress_len(block).map_err(|error| BatchError::Decompress {
        codec: Compression::Snappy,
        source: error.into(),
    })?;
    let start = out.len();
    let end = start
        .checked_add(block_len)
        .filter(|&end| end <= max_bytes)
        .ok_or(BatchError::DecompressedTooLarge { max: max_bytes })?;
    out.resize(end, 0);
    let target = out
        .get_mut(start..)
        .ok_or_else(|| snappy_error("output buffer shorter than resized"))?;
    let written = snap::raw::Decoder::new()
        .decompress(block, target)
        .map_err(|error| BatchError::Decompress {
            codec: Compression::Snappy,
            source: error.into(),
        })?;
    out.truncate(start.saturating_add(written));
    Ok(())
}

fn snappy_error(reason: &'static str) -> BatchError {
    BatchError::Decompress {
        codec: Compression::Snappy,
        source: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    fn compressed(codec: Compression, data: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        codec.compress(BytesMut::from(data), &mut out).unwrap();
        out.freeze()
    }

    #[test]
    fn codes_round_trip_through_attributes() {
        for codec in Compression::ALL {
            // Higher attribute bits must not disturb the codec.
            let attributes = codec.code() | 0x38;
            assert_eq!(Compression::from_attributes(attributes).unwrap(), codec);
        }
        for code in 5..=7 {
            assert!(matches!(
                Compression::from_attributes(code),
                Err(BatchError::UnknownCompression(c)) if c == code
            ));
        }
    }

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|n| (n % 251).to_be_bytes())
            .collect();
        for codec in Compression::ALL {
            let packed = compressed(codec, &data);
            if codec != Compression::None {
                assert!(packed.len() < data.len(), "{codec:?} did not compress");
            }
            let unpacked = codec.decompress(packed, LIMIT).unwrap();
            assert_eq!(unpacked.as_ref(), data.as_slice(), "{codec:?}");
        }
    }

    #[test]
    fn every_codec_enforces_the_limit_on_bombs() {
        // 4 MiB of zeros compress to a few KiB; the limit must stop them at 64 KiB.
        let zeros = vec![0u8; 4 << 20];
        let max = 64 << 10;
        for codec in Compression::ALL {
            let packed = compressed(codec, &zeros);
            let result = codec.decompress(packed, max);
            assert!(
                matches!(result, Err(BatchError::DecompressedTooLarge { max: m }) if m == max),
                "{codec:?}: {result:?}"
            );
            // Exactly at the limit is fine.
            let packed = compressed(codec, &zeros[..max]);
            assert_eq!(codec.decompress(packed, max).unwrap().len(), max);
        }
    }

    /// A raw snappy block may declare up to 4 GiB of output in five bytes; that length must
    /// be checked before any allocation.
    #[test]
    fn snappy_declared_length_is_checked_before_allocating() {
        let mut raw = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
        let result = Compression::Snappy.decompress(Bytes::from(raw.clone()), LIMIT);
        assert!(matches!(
            result,
            Err(BatchError::DecompressedTooLarge { .. })
        ));
        let mut framed = SNAPPY_XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5]);
        framed.append(&mut raw);
        let result = Compression::Snappy.decompress(Bytes::from(framed), LIMIT);
        assert!(matches!(
            result,
            Err(BatchError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn snappy_accepts_kafka_framed_and_raw_blocks() {
        // Bytes from kafka-protocol's snappy tests, captured from a real Kafka producer.
        let framed = Bytes::from_static(
            b"\x82\x53\x4e\x41\x50\x50\x59\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x0f\x0d\x30\x18\x00\x00\x00\x01\x0csdfdsf\x00",
        );
        let raw = Bytes::from_static(b"\r0\x18\0\0\0\x01\x0csdfdsf\0");
        let from_framed = Compression::Snappy.decompress(framed, LIMIT).unwrap();
        let from_raw = Compression::Snappy.decompress(raw, LIMIT).unwrap();
        assert_eq!(from_framed, from_raw);
        assert_eq!(from_framed.len(), 13);
    }

    #[test]
    fn garbage_is_a_decompress_error() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let result =
                codec.decompress(Bytes::from_static(b"\x82SNAPPY\x00not compressed"), LIMIT);
            assert!(
                matches!(result, Err(BatchError::Decompress { codec: c, .. }) if c == codec),
                "{codec:?}: {result:?}"
            );
        }
    }
}
