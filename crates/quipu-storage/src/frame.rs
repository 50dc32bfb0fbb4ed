//! Byte layouts of the segment header and of entry frames: `docs/format/segment.md`.
//!
//! Invariant: a frame is accepted only if its length fits in what remains of the file and its
//! CRC-32 (crc32fast) over its segment's salt (when not zero), the frame header (after the CRC
//! field) and the payload matches. Nothing here panics on file contents.
//!
//! The salt is drawn at random for each segment file written (a recycled file gets a new one),
//! so the old frames left in a recycled file fail their CRC under the new salt: a scan stops at
//! them even where a record's payload was made to look like the next frame.

use crate::entry::EntryKind;

/// Bytes of the segment file header ([format](../../../docs/format/segment.md#segment-header)).
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Bytes of a frame header ([format](../../../docs/format/segment.md#frames)).
pub const FRAME_HEADER_LEN: usize = 48;
/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"QUIPUSEG";
/// Version of the segment, frame and index formats written by this build: 2 has the segment
/// header's salt and the frame CRC over it. Version 1 (zeros there: no salt) is still read; a
/// build that knows only version 1 refuses a version 2 segment instead of taking every frame for
/// damage.
pub const FORMAT_VERSION: u16 = 2;
/// The version before salts, still read.
const FORMAT_VERSION_UNSALTED: u16 = 1;

/// The fixed header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub base_index: u64,
    pub base_offset: u64,
    pub created_ms: i64,
    /// Mixed into every frame's CRC (0: none, as in segments written before salts).
    pub salt: u64,
}

impl SegmentHeader {
    /// A header for a new segment file, with a salt of its own: random, never 0.
    pub fn new(base_index: u64, base_offset: u64, created_ms: i64) -> SegmentHeader {
        SegmentHeader {
            base_index,
            base_offset,
            created_ms,
            salt: new_salt(),
        }
    }

    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        buf[0..8].copy_from_slice(&SEGMENT_MAGIC);
        buf[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf[16..24].copy_from_slice(&self.base_index.to_le_bytes());
        buf[24..32].copy_from_slice(&self.base_offset.to_le_bytes());
        buf[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        buf[40..48].copy_from_slice(&self.salt.to_le_bytes());
        let crc = header_crc(&buf);
        buf[12..16].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, String> {
        let buf: &[u8; SEGMENT_HEADER_LEN] = buf
            .get(..SEGMENT_HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("segment header needs {SEGMENT_HEADER_LEN} bytes"))?;
        if buf[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic".to_string());
        }
        let version = u16::from_le_bytes([buf[8], buf[9]]);
        if version != FORMAT_VERSION && version != FORMAT_VERSION_UNSALTED {
            return Err(format!("unsupported segment format version {version}"));
        }
        let stored = u32_at(buf, 12);
        let computed = header_crc(buf);
        if stored != computed {
            return Err(format!(
                "segment header crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        Ok(SegmentHeader {
            base_index: u64_at(buf, 16),
            base_offset: u64_at(buf, 24),
            created_ms: i64::from_le_bytes(buf[32..40].try_into().expect("8 bytes")),
            // Version 1 headers have zeros here, but for segments of a development build that
            // wrote salts before the version went up: read whatever is there.
            salt: u64_at(buf, 40),
        })
    }
}

/// A random, non-zero salt from the operating system (`getrandom`), so that clients, who never
/// see a segment's header, cannot predict it. Should `getrandom` fail, SipHash keyed by std's
/// own random keys (`RandomState`) of a per-process counter and the time.
fn new_salt() -> u64 {
    let mut bytes = [0u8; 8];
    let salt = match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_le_bytes(bytes),
        _ => {
            use std::hash::BuildHasher;
            use std::sync::atomic::{AtomicU64, Ordering};
            static DRAWN: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            std::hash::RandomState::new().hash_one((DRAWN.fetch_add(1, Ordering::Relaxed), nanos))
        }
    };
    salt.max(1)
}

fn header_crc(buf: &[u8; SEGMENT_HEADER_LEN]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[0..12]);
    hasher.update(&buf[16..]);
    hasher.finalize()
}

/// The fixed header before every entry's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub crc: u32,
    pub payload_len: u32,
    pub index: u64,
    pub term: u64,
    pub base_offset: u64,
    pub max_timestamp: i64,
    pub record_count: u32,
    pub kind: EntryKind,
}

impl FrameHeader {
    /// Total bytes of the frame, header included.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    /// Encodes the header with `crc` left zero; [`seal_crc`] fills it in over header and payload.
    pub fn encode_into(&self, buf: &mut [u8; FRAME_HEADER_LEN]) {
        buf[0..4].copy_from_slice(&self.crc.to_le_bytes());
        buf[4..8].copy_from_slice(&self.payload_len.to_le_bytes());
        buf[8..16].copy_from_slice(&self.index.to_le_bytes());
        buf[16..24].copy_from_slice(&self.term.to_le_bytes());
        buf[24..32].copy_from_slice(&self.base_offset.to_le_bytes());
        buf[32..40].copy_from_slice(&self.max_timestamp.to_le_bytes());
        buf[40..44].copy_from_slice(&self.record_count.to_le_bytes());
        buf[44] = self.kind as u8;
        buf[45..48].fill(0);
    }

    /// Decodes a header without checking the CRC (the caller checks it over header and payload).
    pub fn decode(buf: &[u8]) -> Result<FrameHeader, FrameError> {
        let buf: &[u8; FRAME_HEADER_LEN] = buf
            .get(..FRAME_HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(FrameError::Truncated)?;
        let kind = EntryKind::from_u8(buf[44]).ok_or(FrameError::BadKind(buf[44]))?;
        if buf[45..48] != [0, 0, 0] {
            return Err(FrameError::BadReserved);
        }
        Ok(FrameHeader {
            crc: u32_at(buf, 0),
            payload_len: u32_at(buf, 4),
            index: u64_at(buf, 8),
            term: u64_at(buf, 16),
            base_offset: u64_at(buf, 24),
            max_timestamp: i64::from_le_bytes(buf[32..40].try_into().expect("8 bytes")),
            record_count: u32_at(buf, 40),
            kind,
        })
    }
}

/// Computes the frame CRC over the segment's salt (unless 0), header bytes 4.. and the payload.
pub(crate) fn frame_crc(salt: u64, header: &[u8; FRAME_HEADER_LEN], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if salt != 0 {
        hasher.update(&salt.to_le_bytes());
    }
    hasher.update(&header[4..]);
    hasher.update(payload);
    hasher.finalize()
}

/// Writes the CRC of an encoded header and its payload, under `salt`, into the header.
pub(crate) fn seal_crc(salt: u64, header: &mut [u8; FRAME_HEADER_LEN], payload: &[u8]) {
    let crc = frame_crc(salt, header, payload);
    header[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes at a position are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Fewer bytes remain than a frame header.
    Truncated,
    /// The payload length points past the end of the data.
    PayloadPastEnd { payload_len: u32 },
    /// The kind byte is not a known entry kind.
    BadKind(u8),
    /// Reserved header bytes are not zero.
    BadReserved,
    /// The CRC does not match.
    Crc { stored: u32, computed: u32 },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated => write!(f, "truncated frame header"),
            FrameError::PayloadPastEnd { payload_len } => {
                write!(
                    f,
                    "payload of {payload_len} bytes runs past the end of the data"
                )
            }
            FrameError::BadKind(kind) => write!(f, "unknown entry kind {kind}"),
            FrameError::BadReserved => write!(f, "reserved frame header bytes are not zero"),
            FrameError::Crc { stored, computed } => {
                write!(
                    f,
                    "frame crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
        }
    }
}

/// Parses and verifies the frame at `position` of `data` (which ends at the data length), in a
/// segment whose salt is `salt`. Returns the header; the payload is
/// `data[position + 48 .. position + frame_len]`.
pub(crate) fn read_frame(
    data: &[u8],
    position: usize,
    salt: u64,
) -> Result<FrameHeader, FrameError> {
    let rest = data.get(position..).ok_or(FrameError::Truncated)?;
    let header = FrameHeader::decode(rest)?;
    let payload_len =
        usize::try_from(header.payload_len).map_err(|_| FrameError::PayloadPastEnd {
            payload_len: header.payload_len,
        })?;
    let payload = rest
        .get(FRAME_HEADER_LEN..)
        .and_then(|r| r.get(..payload_len))
        .ok_or(FrameError::PayloadPastEnd {
            payload_len: header.payload_len,
        })?;
    let header_bytes: &[u8; FRAME_HEADER_LEN] = rest[..FRAME_HEADER_LEN]
        .try_into()
        .expect("decode checked the header length");
    let computed = frame_crc(salt, header_bytes, payload);
    if computed != header.crc {
        return Err(FrameError::Crc {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("caller checked length"))
}

pub(crate) fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("caller checked length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> FrameHeader {
        FrameHeader {
            crc: 0,
            payload_len: 3,
            index: 7,
            term: 2,
            base_offset: 100,
            max_timestamp: 1_700_000_000_000,
            record_count: 5,
            kind: EntryKind::Records,
        }
    }

    const SALT: u64 = 0x5a17_5a17_5a17_5a17;

    fn frame_bytes(payload: &[u8]) -> Vec<u8> {
        salted_frame_bytes(SALT, payload)
    }

    fn salted_frame_bytes(salt: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; FRAME_HEADER_LEN];
        header().encode_into(&mut buf);
        seal_crc(salt, &mut buf, payload);
        let mut out = buf.to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frame_round_trips_and_golden_layout() {
        let bytes = frame_bytes(b"abc");
        assert_eq!(bytes.len(), 51);
        assert_eq!(&bytes[4..8], &3u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &7u64.to_le_bytes());
        assert_eq!(bytes[44], 1);
        let parsed = read_frame(&bytes, 0, SALT).unwrap();
        assert_eq!(parsed.index, 7);
        assert_eq!(parsed.base_offset, 100);
        assert_eq!(parsed.frame_len(), 51);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = frame_bytes(b"payload bytes");
        for bit in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            let parsed = read_frame(&corrupt, 0, SALT);
            // A flip in the length may still describe a frame that fits: then the CRC catches it.
            assert!(parsed.is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn zeroes_and_short_input_are_not_frames() {
        assert!(read_frame(&[0u8; 100], 0, SALT).is_err());
        assert_eq!(read_frame(&[0u8; 10], 0, SALT), Err(FrameError::Truncated));
        assert_eq!(read_frame(&[0u8; 10], 20, SALT), Err(FrameError::Truncated));
    }

    #[test]
    fn a_frame_verifies_only_under_its_own_salt() {
        let bytes = salted_frame_bytes(SALT, b"abc");
        assert!(read_frame(&bytes, 0, SALT).is_ok());
        assert!(matches!(
            read_frame(&bytes, 0, SALT ^ 1),
            Err(FrameError::Crc { .. })
        ));
        assert!(matches!(
            read_frame(&bytes, 0, 0),
            Err(FrameError::Crc { .. })
        ));
        // Salt 0 (segments from before salts): the CRC covers header and payload only.
        let unsalted = salted_frame_bytes(0, b"abc");
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&unsalted[4..]);
        assert_eq!(&unsalted[0..4], &hasher.finalize().to_le_bytes());
        assert!(read_frame(&unsalted, 0, 0).is_ok());
        assert!(read_frame(&unsalted, 0, SALT).is_err());
    }

    #[test]
    fn new_headers_get_distinct_nonzero_salts() {
        let salts: std::collections::HashSet<u64> = (0..1000)
            .map(|i| SegmentHeader::new(i, i, 0).salt)
            .collect();
        assert_eq!(salts.len(), 1000);
        assert!(!salts.contains(&0));
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader::new(42, 1000, 5);
        let bytes = header.encode();
        assert_eq!(&bytes[40..48], &header.salt.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&bytes).unwrap(), header);
        for at in [0, 9, 13, 17, 30, 42, 50] {
            let mut bad = bytes;
            bad[at] ^= 0x40;
            assert!(SegmentHeader::decode(&bad).is_err(), "damage at byte {at}");
        }
        assert!(SegmentHeader::decode(&bytes[..10]).is_err());
    }

    #[test]
    fn a_version_1_header_reads_its_salt_field_and_version_3_is_refused() {
        let mut v1 = SegmentHeader::new(42, 1000, 5);
        let mut bytes = v1.encode();
        bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
        bytes[40..48].fill(0);
        let crc = header_crc(&bytes);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        v1.salt = 0;
        assert_eq!(SegmentHeader::decode(&bytes).unwrap(), v1);
        bytes[8..10].copy_from_slice(&3u16.to_le_bytes());
        let crc = header_crc(&bytes);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        assert!(
            SegmentHeader::decode(&bytes)
                .unwrap_err()
                .contains("unsupported segment format version 3")
        );
    }
}
