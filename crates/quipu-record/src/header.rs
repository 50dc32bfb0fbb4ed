//! The fixed 61-byte header of a RecordBatch v2, and in-place rewrites of the fields that lie
//! outside the CRC.
//!
//! Layout (big-endian): base_offset i64 @0, batch_length i32 @8 (bytes after this field),
//! partition_leader_epoch i32 @12, magic i8 @16, crc u32 @17 (CRC-32C over bytes 21..end),
//! attributes i16 @21, last_offset_delta i32 @23, base_timestamp i64 @27, max_timestamp i64
//! @35, producer_id i64 @43, producer_epoch i16 @51, base_sequence i32 @53, records_count i32
//! @57, then the records.
//!
//! Invariant: a [`BatchHeader`] returned by [`BatchHeader::parse`] has magic 2 and a
//! batch_length that covers at least the rest of the header, so [`BatchHeader::total_len`] is
//! at least [`BATCH_HEADER_LEN`].

use crate::{BatchError, Compression, TimestampType};

/// Size in bytes of a RecordBatch v2 header; the records start here.
pub const BATCH_HEADER_LEN: usize = 61;
/// The magic byte of RecordBatch v2, the only format this crate reads or writes.
pub const MAGIC_V2: i8 = 2;

/// Byte positions of the header fields.
pub(crate) mod pos {
    pub(crate) const BASE_OFFSET: usize = 0;
    pub(crate) const BATCH_LENGTH: usize = 8;
    pub(crate) const PARTITION_LEADER_EPOCH: usize = 12;
    pub(crate) const MAGIC: usize = 16;
    pub(crate) const CRC: usize = 17;
    pub(crate) const ATTRIBUTES: usize = 21;
    pub(crate) const LAST_OFFSET_DELTA: usize = 23;
    pub(crate) const BASE_TIMESTAMP: usize = 27;
    pub(crate) const MAX_TIMESTAMP: usize = 35;
    pub(crate) const PRODUCER_ID: usize = 43;
    pub(crate) const PRODUCER_EPOCH: usize = 51;
    pub(crate) const BASE_SEQUENCE: usize = 53;
    pub(crate) const RECORDS_COUNT: usize = 57;
}

/// Bytes before the batch_length count starts: base_offset and batch_length itself.
pub(crate) const LOG_OVERHEAD: usize = 12;

const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// The header fields of one RecordBatch v2, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes in the batch after this field: the total size is 12 + batch_length.
    pub batch_length: i32,
    /// Epoch of the leader that appended the batch; -1 as sent by producers.
    pub partition_leader_epoch: i32,
    /// Format version, always [`MAGIC_V2`] once parsed.
    pub magic: i8,
    /// CRC-32C (Castagnoli) of the bytes from attributes to the end of the batch.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record minus base_offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record; record timestamps are deltas from it.
    pub base_timestamp: i64,
    /// Largest record timestamp (or the append time for log-append-time batches).
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 when none.
    pub producer_id: i64,
    /// Idempotent producer epoch, -1 when none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 when none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

/// `sequence + delta` for an idempotent producer's record sequence numbers, wrapping from
/// `i32::MAX` to 0 (Kafka's `incrementSequence`); a negative `delta` counts as 0.
pub fn add_sequence(sequence: i32, delta: i32) -> i32 {
    let sum = i64::from(sequence) + i64::from(delta.max(0));
    let wrapped = sum % (i64::from(i32::MAX) + 1);
    i32::try_from(wrapped).unwrap_or(0)
}

impl BatchHeader {
    /// Parses the header fields at the start of `buf`, which must hold at least
    /// [`BATCH_HEADER_LEN`] bytes. Checks the magic byte and that batch_length covers the
    /// header; does not look at the CRC or the records (see [`crate::validate_batch`]).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let header: &[u8; BATCH_HEADER_LEN] = buf.first_chunk().ok_or(BatchError::Truncated {
            needed: BATCH_HEADER_LEN,
            available: buf.len(),
        })?;
        let magic = i8::from_be_bytes(field(header, pos::MAGIC));
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(magic));
        }
        let batch_length = i32::from_be_bytes(field(header, pos::BATCH_LENGTH));
        if !batch_length_is_plausible(batch_length) {
            return Err(BatchError::InvalidBatchLength(batch_length));
        }
        Ok(BatchHeader {
            base_offset: i64::from_be_bytes(field(header, pos::BASE_OFFSET)),
            batch_length,
            partition_leader_epoch: i32::from_be_bytes(field(header, pos::PARTITION_LEADER_EPOCH)),
            magic,
            crc: u32::from_be_bytes(field(header, pos::CRC)),
            attributes: i16::from_be_bytes(field(header, pos::ATTRIBUTES)),
            last_offset_delta: i32::from_be_bytes(field(header, pos::LAST_OFFSET_DELTA)),
            base_timestamp: i64::from_be_bytes(field(header, pos::BASE_TIMESTAMP)),
            max_timestamp: i64::from_be_bytes(field(header, pos::MAX_TIMESTAMP)),
            producer_id: i64::from_be_bytes(field(header, pos::PRODUCER_ID)),
            producer_epoch: i16::from_be_bytes(field(header, pos::PRODUCER_EPOCH)),
            base_sequence: i32::from_be_bytes(field(header, pos::BASE_SEQUENCE)),
            records_count: i32::from_be_bytes(field(header, pos::RECORDS_COUNT)),
        })
    }

    /// Total size of the batch in bytes: 12 + batch_length. A hand-made header with a
    /// negative batch_length counts as 12.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + usize::try_from(self.batch_length).unwrap_or(0)
    }

    /// The codec of the records section.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }

    /// Whether timestamps are create times or log-append times.
    pub fn timestamp_type(&self) -> TimestampType {
        TimestampType::from_attributes(self.attributes)
    }

    /// Whether the batch belongs to a transaction (attribute bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds control records such as transaction markers (attribute bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Number of offsets the batch occupies: last_offset_delta + 1 (0 if that is negative,
    /// which [`crate::validate_batch`] rejects).
    pub fn offset_count(&self) -> u64 {
        u64::try_from(i64::from(self.last_offset_delta) + 1).unwrap_or(0)
    }
}

impl BatchHeader {
    /// Writes every field into the first [`BATCH_HEADER_LEN`] bytes of `buf`, as stored (the
    /// crc field is written as it is, not computed).
    pub(crate) fn write(&self, buf: &mut [u8]) -> Result<(), BatchError> {
        write_field(buf, pos::BASE_OFFSET, &self.base_offset.to_be_bytes())?;
        write_field(buf, pos::BATCH_LENGTH, &self.batch_length.to_be_bytes())?;
        let epoch = self.partition_leader_epoch.to_be_bytes();
        write_field(buf, pos::PARTITION_LEADER_EPOCH, &epoch)?;
        write_field(buf, pos::MAGIC, &self.magic.to_be_bytes())?;
        write_field(buf, pos::CRC, &self.crc.to_be_bytes())?;
        write_field(buf, pos::ATTRIBUTES, &self.attributes.to_be_bytes())?;
        let last_offset_delta = self.last_offset_delta.to_be_bytes();
        write_field(buf, pos::LAST_OFFSET_DELTA, &last_offset_delta)?;
        write_field(buf, pos::BASE_TIMESTAMP, &self.base_timestamp.to_be_bytes())?;
        write_field(buf, pos::MAX_TIMESTAMP, &self.max_timestamp.to_be_bytes())?;
        write_field(buf, pos::PRODUCER_ID, &self.producer_id.to_be_bytes())?;
        write_field(buf, pos::PRODUCER_EPOCH, &self.producer_epoch.to_be_bytes())?;
        write_field(buf, pos::BASE_SEQUENCE, &self.base_sequence.to_be_bytes())?;
        write_field(buf, pos::RECORDS_COUNT, &self.records_count.to_be_bytes())
    }
}

/// The CRC-32C a batch must carry: over the bytes from attributes to the end of `batch`.
pub(crate) fn batch_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(pos::ATTRIBUTES..).unwrap_or_default())
}

/// Writes `crc` into the crc field of the batch at the start of `buf`.
pub(crate) fn set_crc(buf: &mut [u8], crc: u32) -> Result<(), BatchError> {
    write_field(buf, pos::CRC, &crc.to_be_bytes())
}

/// Whether a batch_length field can describe a batch: it must cover the rest of the header.
pub(crate) fn batch_length_is_plausible(batch_length: i32) -> bool {
    usize::try_from(batch_length).is_ok_and(|len| len >= BATCH_HEADER_LEN - LOG_OVERHEAD)
}

/// Copies the `N` bytes of the field at `position` out of a whole header.
fn field<const N: usize>(header: &[u8; BATCH_HEADER_LEN], position: usize) -> [u8; N] {
    debug_assert!(position + N <= BATCH_HEADER_LEN, "field past the header");
    let mut out = [0u8; N];
    // Positions are the constants in `pos`, all within the header: the fallback never runs.
    if let Some(bytes) = header.get(position..position + N) {
        out.copy_from_slice(bytes);
    }
    out
}

/// Overwrites the field at `position` in a buffer holding at least a whole header.
fn write_field(buf: &mut [u8], position: usize, bytes: &[u8]) -> Result<(), BatchError> {
    let available = buf.len();
    if available < BATCH_HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: BATCH_HEADER_LEN,
            available,
        });
    }
    let target = buf
        .get_mut(position..position + bytes.len())
        .ok_or(BatchError::Truncated {
            needed: BATCH_HEADER_LEN,
            available,
        })?;
    target.copy_from_slice(bytes);
    Ok(())
}

/// Sets the base offset of the batch at the start of `buf`, as a leader does on append. The
/// field lies outside the CRC, so the batch stays valid.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    write_field(buf, pos::BASE_OFFSET, &base_offset.to_be_bytes())
}

/// Sets the partition leader epoch of the batch at the start of `buf`, as a leader does on
/// append. The field lies outside the CRC, so the batch stays valid.
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    write_field(buf, pos::PARTITION_LEADER_EPOCH, &epoch.to_be_bytes())
}

/// Stamps the whole batch at the start of `buf` with the log append time `now_ms`, as a leader
/// does for a topic with `message.timestamp.type=LogAppendTime` (Kafka's rule): the attributes
/// say LogAppendTime, `max_timestamp` is `now_ms` (consumers read it as every record's
/// timestamp), and the CRC-32C, which covers both, is computed again over the batch.
pub fn set_log_append_time(buf: &mut [u8], now_ms: i64) -> Result<(), BatchError> {
    let header = BatchHeader::parse(buf)?;
    let end = whole(buf, &header)?;
    let attributes = header.attributes | TimestampType::ATTRIBUTE_BIT;
    write_field(buf, pos::ATTRIBUTES, &attributes.to_be_bytes())?;
    write_field(buf, pos::MAX_TIMESTAMP, &now_ms.to_be_bytes())?;
    write_crc(buf, end)
}

/// Sets the idempotent producer fields of the batch at the start of `buf` (as a producer does
/// that sends a batch again under a new producer id) and computes its CRC-32C again.
pub fn set_producer(
    buf: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), BatchError> {
    let header = BatchHeader::parse(buf)?;
    let end = whole(buf, &header)?;
    write_field(buf, pos::PRODUCER_ID, &producer_id.to_be_bytes())?;
    write_field(buf, pos::PRODUCER_EPOCH, &producer_epoch.to_be_bytes())?;
    write_field(buf, pos::BASE_SEQUENCE, &base_sequence.to_be_bytes())?;
    write_crc(buf, end)
}

/// The end of the batch `header` describes, which `buf` must hold whole.
fn whole(buf: &[u8], header: &BatchHeader) -> Result<usize, BatchError> {
    let end = header.total_len();
    if buf.len() < end {
        return Err(BatchError::Truncated {
            needed: end,
            available: buf.len(),
        });
    }
    Ok(end)
}

/// Writes the CRC-32C of the bytes from the attributes to `end`.
fn write_crc(buf: &mut [u8], end: usize) -> Result<(), BatchError> {
    let crc = crc32c::crc32c(&buf[pos::ATTRIBUTES..end]);
    write_field(buf, pos::CRC, &crc.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_producer_fields_keep_the_batch_valid() {
        let mut builder = crate::BatchBuilder::new(0, Compression::None).with_producer(4, 0, 10);
        builder.push(1_000, None, Some(b"a"), &[]);
        let mut batch = builder.build().unwrap().to_vec();
        set_producer(&mut batch, 77, 2, 0).unwrap();
        let header = crate::validate_batch(&batch, usize::MAX).unwrap();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (77, 2, 0)
        );
    }

    #[test]
    fn a_log_append_time_stamp_keeps_the_batch_valid() {
        let mut builder = crate::BatchBuilder::new(0, Compression::None);
        builder.push(1_000, None, Some(b"a"), &[]);
        builder.push(2_000, None, Some(b"b"), &[]);
        let mut batch = builder.build().unwrap().to_vec();
        set_log_append_time(&mut batch, 5_000_000).unwrap();
        let header = crate::validate_batch(&batch, usize::MAX).unwrap();
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(header.max_timestamp, 5_000_000);
        assert_eq!(header.base_timestamp, 1_000);
        assert_eq!(
            crate::decode_records(&bytes::Bytes::from(batch), 1 << 20)
                .unwrap()
                .len(),
            2
        );
    }

    fn header_bytes() -> Vec<u8> {
        let mut buf = vec![0u8; BATCH_HEADER_LEN];
        buf[pos::BATCH_LENGTH..pos::BATCH_LENGTH + 4].copy_from_slice(&49i32.to_be_bytes());
        buf[pos::MAGIC] = 2;
        buf
    }

    #[test]
    fn parse_reads_every_field_at_its_position() {
        let mut buf = header_bytes();
        let mut put = |position: usize, bytes: &[u8]| {
            buf[position..position + bytes.len()].copy_from_slice(bytes);
        };
        put(pos::BASE_OFFSET, &0x0102_0304_0506_0708i64.to_be_bytes());
        put(pos::BATCH_LENGTH, &100i32.to_be_bytes());
        put(pos::PARTITION_LEADER_EPOCH, &7i32.to_be_bytes());
        put(pos::CRC, &0xdead_beefu32.to_be_bytes());
        put(pos::ATTRIBUTES, &0x003bi16.to_be_bytes());
        put(pos::LAST_OFFSET_DELTA, &4i32.to_be_bytes());
        put(pos::BASE_TIMESTAMP, &1000i64.to_be_bytes());
        put(pos::MAX_TIMESTAMP, &2000i64.to_be_bytes());
        put(pos::PRODUCER_ID, &(-1i64).to_be_bytes());
        put(pos::PRODUCER_EPOCH, &3i16.to_be_bytes());
        put(pos::BASE_SEQUENCE, &9i32.to_be_bytes());
        put(pos::RECORDS_COUNT, &5i32.to_be_bytes());
        let header = BatchHeader::parse(&buf).unwrap();
        assert_eq!(
            header,
            BatchHeader {
                base_offset: 0x0102_0304_0506_0708,
                batch_length: 100,
                partition_leader_epoch: 7,
                magic: 2,
                crc: 0xdead_beef,
                attributes: 0x3b,
                last_offset_delta: 4,
                base_timestamp: 1000,
                max_timestamp: 2000,
                producer_id: -1,
                producer_epoch: 3,
                base_sequence: 9,
                records_count: 5,
            }
        );
        assert_eq!(header.total_len(), 112);
        assert_eq!(header.offset_count(), 5);
        assert_eq!(header.compression().unwrap(), Compression::Lz4);
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert!(header.is_transactional());
        assert!(header.is_control());
    }

    #[test]
    fn parse_rejects_short_buffers_bad_magic_and_bad_lengths() {
        let buf = header_bytes();
        assert!(matches!(
            BatchHeader::parse(&buf[..60]),
            Err(BatchError::Truncated {
                needed: 61,
                available: 60
            })
        ));
        let mut bad_magic = buf.clone();
        bad_magic[pos::MAGIC] = 1;
        assert!(matches!(
            BatchHeader::parse(&bad_magic),
            Err(BatchError::BadMagic(1))
        ));
        for length in [-1, 0, 48] {
            let mut bad_length = buf.clone();
            bad_length[pos::BATCH_LENGTH..pos::BATCH_LENGTH + 4]
                .copy_from_slice(&i32::to_be_bytes(length));
            assert!(matches!(
                BatchHeader::parse(&bad_length),
                Err(BatchError::InvalidBatchLength(l)) if l == length
            ));
        }
    }

    #[test]
    fn derived_values_of_hand_made_headers_do_not_underflow() {
        let mut header = BatchHeader::parse(&header_bytes()).unwrap();
        header.batch_length = -5;
        header.last_offset_delta = i32::MIN;
        assert_eq!(header.total_len(), 12);
        assert_eq!(header.offset_count(), 0);
        header.last_offset_delta = i32::MAX;
        assert_eq!(header.offset_count(), 1 << 31);
    }

    #[test]
    fn write_is_the_inverse_of_parse() {
        let header = BatchHeader {
            base_offset: -9,
            batch_length: 1234,
            partition_leader_epoch: -1,
            magic: MAGIC_V2,
            crc: 0x0102_0304,
            attributes: 0x14,
            last_offset_delta: 0x7fff_0000,
            base_timestamp: i64::MIN,
            max_timestamp: i64::MAX,
            producer_id: 77,
            producer_epoch: -3,
            base_sequence: i32::MIN,
            records_count: 1,
        };
        let mut buf = [0u8; BATCH_HEADER_LEN];
        header.write(&mut buf).unwrap();
        assert_eq!(BatchHeader::parse(&buf).unwrap(), header);
        assert!(header.write(&mut buf[..60]).is_err());
    }

    #[test]
    fn setters_write_their_fields_and_reject_short_buffers() {
        let mut buf = header_bytes();
        set_base_offset(&mut buf, -2).unwrap();
        set_partition_leader_epoch(&mut buf, 0x0a0b_0c0d).unwrap();
        let header = BatchHeader::parse(&buf).unwrap();
        assert_eq!(header.base_offset, -2);
        assert_eq!(header.partition_leader_epoch, 0x0a0b_0c0d);
        assert!(matches!(
            set_base_offset(&mut buf[..60], 1),
            Err(BatchError::Truncated {
                needed: 61,
                available: 60
            })
        ));
        assert!(matches!(
            set_partition_leader_epoch(&mut [], 1),
            Err(BatchError::Truncated {
                needed: 61,
                available: 0
            })
        ));
    }
}
