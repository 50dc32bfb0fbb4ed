//! Building a RecordBatch v2 as a producer sends it.
//!
//! Invariant: a batch from [`BatchBuilder::build`] passes [`crate::validate_batch`] (given a
//! large enough limit) and [`crate::decode_records`] returns the pushed records.

use bytes::{Bytes, BytesMut};

use crate::header::{BATCH_HEADER_LEN, LOG_OVERHEAD, MAGIC_V2, batch_crc, set_crc};
use crate::record::RecordFields;
use crate::{BatchError, BatchHeader, Compression, TimestampType};

/// The largest batch the i32 batch_length field can describe, in bytes.
const BATCH_BYTES_MAX: usize = LOG_OVERHEAD + 0x7fff_ffff;

/// Producer id, epoch and sequence of a batch from a producer that is not idempotent.
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
const NO_SEQUENCE: i32 = -1;
/// Producers leave the partition leader epoch unset; the leader fills it in on append.
const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// Accumulates records and encodes them as one RecordBatch v2.
///
/// Records get offset deltas 0, 1, 2, ... in push order. The base timestamp is the first
/// record's timestamp and max_timestamp the largest pushed. The partition leader epoch is -1
/// and, unless [`BatchBuilder::with_producer`] says otherwise, so are producer id, producer
/// epoch and base sequence. The CRC-32C is computed by [`BatchBuilder::build`].
#[derive(Debug)]
pub struct BatchBuilder {
    base_offset: i64,
    compression: Compression,
    timestamp_type: TimestampType,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    record_count: usize,
    /// A zeroed header followed by the encoded records, so that an uncompressed batch is
    /// finished in place.
    buf: BytesMut,
    /// Some key, value or header was too long for Kafka's i32 lengths.
    oversized: bool,
}

impl BatchBuilder {
    /// Starts an empty batch whose first record will have `base_offset`.
    pub fn new(base_offset: i64, compression: Compression) -> Self {
        Self {
            base_offset,
            compression,
            timestamp_type: TimestampType::CreateTime,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            base_timestamp: 0,
            max_timestamp: 0,
            record_count: 0,
            buf: BytesMut::zeroed(BATCH_HEADER_LEN),
            oversized: false,
        }
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn with_producer(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets the timestamp type attribute (create time by default).
    pub fn with_timestamp_type(mut self, t: TimestampType) -> Self {
        self.timestamp_type = t;
        self
    }

    /// Appends a record with the next offset delta.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        if self.record_count == 0 {
            self.base_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        // Past i32::MAX records `build` refuses the batch, so the saturated delta is never seen.
        let offset_delta = i32::try_from(self.record_count).unwrap_or(i32::MAX);
        let fields = RecordFields {
            offset_delta,
            // Wrapping keeps extreme timestamps exact: `Record::timestamp` wraps back.
            timestamp_delta: timestamp_ms.wrapping_sub(self.base_timestamp),
            key,
            value,
            headers,
        };
        if !fields.encode(&mut self.buf) {
            self.oversized = true;
        }
        self.record_count += 1;
    }

    /// Makes room for at least `bytes` more bytes of records, so that pushing them does not
    /// move the batch (a producer that knows its batch size reserves it once, instead of
    /// the batch growing by doubling, each time copying what it holds).
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }

    /// Number of records pushed.
    pub fn len(&self) -> usize {
        self.record_count
    }

    /// Size of the batch so far, header included, before compression (a producer closes a batch
    /// near its size target with this).
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Whether no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Encodes the batch.
    ///
    /// Fails on an empty builder ([`BatchError::Empty`]), on a compression failure, and on
    /// sizes the format cannot express: more than `i32::MAX` records, a key, value or header
    /// over 2 GiB, or a batch over 2 GiB.
    pub fn build(mut self) -> Result<Bytes, BatchError> {
        if self.record_count == 0 {
            return Err(BatchError::Empty);
        }
        let records_count = i32::try_from(self.record_count)
            .map_err(|_| BatchError::TooManyRecords(self.record_count))?;
        if self.oversized {
            return Err(BatchError::TooLarge {
                len: self.buf.len(),
                max: BATCH_BYTES_MAX,
            });
        }
        let mut batch = match self.compression {
            Compression::None => self.buf,
            codec => {
                let records = self.buf.split_off(BATCH_HEADER_LEN);
                codec.compress(records, &mut self.buf)?;
                self.buf
            }
        };
        let batch_length = batch
            .len()
            .checked_sub(LOG_OVERHEAD)
            .and_then(|len| i32::try_from(len).ok())
            .ok_or(BatchError::TooLarge {
                len: batch.len(),
                max: BATCH_BYTES_MAX,
            })?;
        let mut attributes = self.compression.code();
        if self.timestamp_type == TimestampType::LogAppendTime {
            attributes |= TimestampType::ATTRIBUTE_BIT;
        }
        let header = BatchHeader {
            base_offset: self.base_offset,
            batch_length,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            magic: MAGIC_V2,
            crc: 0,
            attributes,
            last_offset_delta: records_count - 1,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            records_count,
        };
        header.write(&mut batch)?;
        let crc = batch_crc(&batch);
        set_crc(&mut batch, crc)?;
        // A batch that filled less than half the room it was given (closed early, by its
        // linger) goes out in a buffer of its size: it lives until acknowledged, and must not
        // keep a whole batch's room meanwhile.
        if batch.capacity() > 2 * batch.len() {
            return Ok(Bytes::copy_from_slice(&batch));
        }
        Ok(batch.freeze())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records as kp;

    use super::*;
    use crate::{decode_records, validate_batch};

    const LIMIT: usize = 1 << 20;

    /// A batch given room for its records up front does not move as they are pushed (no
    /// copy of what it holds), and builds what it would have without the room.
    #[test]
    fn reserved_room_keeps_the_batch_in_place() {
        let value = [9u8; 1000];
        let mut plain = BatchBuilder::new(0, Compression::None);
        let mut roomy = BatchBuilder::new(0, Compression::None);
        roomy.reserve(64 * 1024);
        let at = roomy.buf.as_ptr();
        for n in 0..60 {
            plain.push(n, Some(b"key"), Some(&value), &[("h", Some(b"v"))]);
            roomy.push(n, Some(b"key"), Some(&value), &[("h", Some(b"v"))]);
        }
        assert_eq!(roomy.buf.as_ptr(), at, "the batch moved");
        assert_eq!(plain.build().unwrap(), roomy.build().unwrap());
        // Filled to less than half its room, it is built into a buffer of its own size.
        let mut early = BatchBuilder::new(0, Compression::None);
        early.reserve(64 * 1024);
        early.push(0, None, Some(&value), &[]);
        let batch = early.build().unwrap().try_into_mut().expect("not shared");
        assert!(
            batch.capacity() < 2 * 1024,
            "{} bytes of room",
            batch.capacity()
        );
    }

    /// One record, key "k", value "v", timestamp 1000, every byte spelled out.
    #[test]
    fn golden_single_record_batch() {
        let mut builder = BatchBuilder::new(0, Compression::None);
        builder.push(1000, Some(b"k"), Some(b"v"), &[]);
        let batch = builder.build().unwrap();

        #[rustfmt::skip]
        let mut expected: Vec<u8> = vec![
            0, 0, 0, 0, 0, 0, 0, 0,             // base_offset 0
            0, 0, 0, 58,                        // batch_length: 70 - 12
            0xff, 0xff, 0xff, 0xff,             // partition_leader_epoch -1
            2,                                  // magic
            0, 0, 0, 0,                         // crc, filled in below
            0, 0,                               // attributes: no compression, create time
            0, 0, 0, 0,                         // last_offset_delta
            0, 0, 0, 0, 0, 0, 0x03, 0xe8,       // base_timestamp 1000
            0, 0, 0, 0, 0, 0, 0x03, 0xe8,       // max_timestamp 1000
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producer_id -1
            0xff, 0xff,                         // producer_epoch -1
            0xff, 0xff, 0xff, 0xff,             // base_sequence -1
            0, 0, 0, 1,                         // records_count
            0x10,                               // record length 8
            0,                                  // record attributes
            0,                                  // timestamp_delta 0
            0,                                  // offset_delta 0
            0x02, b'k',                         // key "k"
            0x02, b'v',                         // value "v"
            0,                                  // no headers
        ];
        let crc = crc32c::crc32c(&expected[21..]);
        expected[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(batch.as_ref(), expected.as_slice());

        let header = validate_batch(&batch, LIMIT).unwrap();
        assert_eq!(header.crc, crc);
        assert_eq!(header.total_len(), 70);
        assert_eq!(header.offset_count(), 1);
    }

    /// Record `n` of a batch at base offset 5, as kafka-protocol models it.
    fn kafka_protocol_record(n: i32, value: &'static [u8]) -> kp::Record {
        let mut record = kp::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kp::TimestampType::Creation,
            offset: 5 + i64::from(n),
            // kafka-protocol starts a new batch whenever offset - sequence changes; this
            // gives base sequence -1 like ours.
            sequence: n - 1,
            timestamp: 1000 + i64::from(n),
            key: Some(Bytes::from_static(b"key")),
            value: Some(Bytes::from_static(value)),
            headers: Default::default(),
        };
        record.headers.insert(
            StrBytes::from_static_str("h"),
            Some(Bytes::from_static(b"x")),
        );
        record
    }

    fn kafka_protocol_compression(codec: Compression) -> kp::Compression {
        match codec {
            Compression::None => kp::Compression::None,
            Compression::Gzip => kp::Compression::Gzip,
            Compression::Snappy => kp::Compression::Snappy,
            Compression::Lz4 => kp::Compression::Lz4,
            Compression::Zstd => kp::Compression::Zstd,
        }
    }

    /// An independent encoder (kafka-protocol's) must produce the same bytes for an
    /// uncompressed batch, and each side must decode the other's batches with every codec.
    #[test]
    fn interoperates_with_kafka_protocol() {
        let values: [&'static [u8]; 3] = [b"one", b"two", b"three"];
        for codec in Compression::ALL {
            let theirs_records: Vec<kp::Record> = values
                .iter()
                .zip(0..)
                .map(|(value, n)| kafka_protocol_record(n, value))
                .collect();
            let mut theirs = bytes::BytesMut::new();
            let options = kp::RecordEncodeOptions {
                version: 2,
                compression: kafka_protocol_compression(codec),
            };
            kp::RecordBatchEncoder::encode(&mut theirs, &theirs_records, &options).unwrap();
            let theirs = theirs.freeze();

            let mut builder = BatchBuilder::new(5, codec);
            for (value, n) in values.iter().zip(0i64..) {
                builder.push(1000 + n, Some(b"key"), Some(value), &[("h", Some(b"x"))]);
            }
            let ours = builder.build().unwrap();
            if codec == Compression::None {
                assert_eq!(ours, theirs);
            }

            validate_batch(&theirs, LIMIT).unwrap();
            let decoded = decode_records(&theirs, LIMIT).unwrap();
            assert_eq!(decoded, decode_records(&ours, LIMIT).unwrap(), "{codec:?}");
            assert_eq!(decoded.len(), 3);

            let mut ours_buf = ours.clone();
            let set = kp::RecordBatchDecoder::decode(&mut ours_buf).unwrap();
            assert_eq!(set.records, theirs_records, "{codec:?}");
        }
    }

    #[test]
    fn producer_and_timestamp_settings_land_in_the_header() {
        let mut builder = BatchBuilder::new(42, Compression::Zstd)
            .with_producer(7, 3, 100)
            .with_timestamp_type(TimestampType::LogAppendTime);
        assert!(builder.is_empty());
        builder.push(500, None, None, &[]);
        builder.push(900, None, Some(b"v"), &[]);
        builder.push(100, Some(b"k"), None, &[("a", None), ("b", Some(b""))]);
        assert_eq!(builder.len(), 3);
        let batch = builder.build().unwrap();
        let header = validate_batch(&batch, LIMIT).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, -1);
        assert_eq!((header.producer_id, header.producer_epoch), (7, 3));
        assert_eq!(header.base_sequence, 100);
        assert_eq!(header.compression().unwrap(), Compression::Zstd);
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert!(!header.is_transactional() && !header.is_control());
        assert_eq!((header.base_timestamp, header.max_timestamp), (500, 900));
        assert_eq!((header.last_offset_delta, header.records_count), (2, 3));
        let records = decode_records(&batch, LIMIT).unwrap();
        let offsets: Vec<i64> = records.iter().map(|r| r.offset(42)).collect();
        let timestamps: Vec<i64> = records.iter().map(|r| r.timestamp(500)).collect();
        assert_eq!(offsets, [42, 43, 44]);
        assert_eq!(timestamps, [500, 900, 100]);
    }

    #[test]
    fn empty_builder_does_not_build() {
        let result = BatchBuilder::new(0, Compression::Gzip).build();
        assert!(matches!(result, Err(BatchError::Empty)));
    }
}
