//! One record inside a batch, and its varint-framed encoding.
//!
//! Layout: length varint (bytes after it), attributes i8, timestamp_delta varlong,
//! offset_delta varint, key_length varint (-1 = null) + key, value_length varint (-1 = null) +
//! value, headers_count varint, then per header key_length varint + UTF-8 key and
//! value_length varint (-1 = null) + value.
//!
//! Invariant: decoding consumes exactly the bytes the length prefix announces, and every
//! allocation is bounded by the bytes that remain.

use bytes::{BufMut, Bytes, BytesMut};

use crate::varint::{Reader, put_varint, put_varlong, varint_len, varlong_len};

/// Smallest encoded header: an empty key and a null value, one varint byte each.
const HEADER_BYTES_MIN: usize = 2;

/// A record header: a string key and an optional value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Header value, `None` when null.
    pub value: Option<Bytes>,
}

/// One decoded record. Key, value and header values are zero-copy slices of the batch (or of
/// its decompressed records).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// Offset of this record minus the batch's base offset.
    pub offset_delta: i32,
    /// Timestamp of this record minus the batch's base timestamp.
    pub timestamp_delta: i64,
    /// Record attributes; unused by Kafka so far and written as 0.
    pub attributes: i8,
    /// Record key, `None` when null.
    pub key: Option<Bytes>,
    /// Record value, `None` when null (a tombstone in compacted topics).
    pub value: Option<Bytes>,
    /// Record headers in their stored order.
    pub headers: Vec<Header>,
}

impl Record {
    /// The record's offset in its partition, given the batch's base offset. Wraps instead of
    /// overflowing on corrupt deltas.
    pub fn offset(&self, base_offset: i64) -> i64 {
        base_offset.wrapping_add(i64::from(self.offset_delta))
    }

    /// The record's timestamp in milliseconds, given the batch's base timestamp. Wraps
    /// instead of overflowing on corrupt deltas.
    pub fn timestamp(&self, base_timestamp: i64) -> i64 {
        base_timestamp.wrapping_add(self.timestamp_delta)
    }

    /// Reads one length-prefixed record.
    pub(crate) fn decode(reader: &mut Reader) -> Result<Record, &'static str> {
        let len = reader.varint()?;
        let len = usize::try_from(len).map_err(|_| "negative record length")?;
        let mut body = Reader::new(reader.bytes(len)?);
        let attributes = body.i8()?;
        let timestamp_delta = body.varlong()?;
        let offset_delta = body.varint()?;
        let key = body.nullable_bytes()?;
        let value = body.nullable_bytes()?;
        let headers_count = body.varint()?;
        let headers_count = usize::try_from(headers_count).map_err(|_| "negative header count")?;
        let mut headers =
            Vec::with_capacity(headers_count.min(body.remaining() / HEADER_BYTES_MIN));
        for _ in 0..headers_count {
            let key_len = body.varint()?;
            let key_len = usize::try_from(key_len).map_err(|_| "negative header key length")?;
            let key = body.bytes(key_len)?;
            let key = std::str::from_utf8(&key).map_err(|_| "header key is not utf-8")?;
            let value = body.nullable_bytes()?;
            headers.push(Header {
                key: key.to_owned(),
                value,
            });
        }
        if body.remaining() != 0 {
            return Err("record length covers bytes past its last field");
        }
        Ok(Record {
            offset_delta,
            timestamp_delta,
            attributes,
            key,
            value,
            headers,
        })
    }
}

/// The fields of a record to encode, borrowed from the caller of [`crate::BatchBuilder::push`].
pub(crate) struct RecordFields<'a> {
    pub(crate) offset_delta: i32,
    pub(crate) timestamp_delta: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: &'a [(&'a str, Option<&'a [u8]>)],
}

impl RecordFields<'_> {
    /// Appends the record to `out`, in one piece: its length first (computed, not measured
    /// from a copy), then its fields. Returns false if some length does not fit the i32 varint
    /// Kafka uses (a part over 2 GiB); the bytes written are then unusable and the builder
    /// refuses to build.
    pub(crate) fn encode(&self, out: &mut BytesMut) -> bool {
        let body = self.body_len();
        out.reserve(length_len(body) + body);
        let mut fits = put_length(out, body);
        let fields = out.len();
        out.put_i8(0);
        put_varlong(out, self.timestamp_delta);
        put_varint(out, self.offset_delta);
        fits &= put_nullable_bytes(out, self.key);
        fits &= put_nullable_bytes(out, self.value);
        fits &= put_length(out, self.headers.len());
        for (key, value) in self.headers {
            fits &= put_nullable_bytes(out, Some(key.as_bytes()));
            fits &= put_nullable_bytes(out, *value);
        }
        debug_assert_eq!(out.len() - fields, body, "the record's length as computed");
        fits
    }

    /// The bytes of the record after its length prefix, as [`RecordFields::encode`] writes them.
    fn body_len(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(key, value)| nullable_len(Some(key.as_bytes())) + nullable_len(*value))
            .sum();
        1 + varlong_len(self.timestamp_delta)
            + varint_len(self.offset_delta)
            + nullable_len(self.key)
            + nullable_len(self.value)
            + length_len(self.headers.len())
            + headers
    }
}

/// Writes a length as Kafka's i32 varint: past i32::MAX, i32::MAX, and false (the record is
/// refused).
fn put_length(buf: &mut BytesMut, len: usize) -> bool {
    match i32::try_from(len) {
        Ok(len) => {
            put_varint(buf, len);
            true
        }
        Err(_) => {
            put_varint(buf, i32::MAX);
            false
        }
    }
}

/// Bytes [`put_length`] writes for `len`.
fn length_len(len: usize) -> usize {
    varint_len(i32::try_from(len).unwrap_or(i32::MAX))
}

fn put_nullable_bytes(buf: &mut BytesMut, bytes: Option<&[u8]>) -> bool {
    match bytes {
        None => {
            put_varint(buf, -1);
            true
        }
        Some(bytes) => {
            let fits = put_length(buf, bytes.len());
            buf.extend_from_slice(bytes);
            fits
        }
    }
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    bytes.map_or(varint_len(-1), |bytes| {
        length_len(bytes.len()) + bytes.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(fields: &RecordFields<'_>) -> Bytes {
        let mut out = BytesMut::new();
        assert!(fields.encode(&mut out));
        out.freeze()
    }

    fn decode(bytes: &[u8]) -> Result<Record, &'static str> {
        let mut reader = Reader::new(Bytes::copy_from_slice(bytes));
        let record = Record::decode(&mut reader)?;
        assert_eq!(reader.remaining(), 0);
        Ok(record)
    }

    #[test]
    fn encodes_the_kafka_layout() {
        let bytes = encode(&RecordFields {
            offset_delta: 1,
            timestamp_delta: -1,
            key: None,
            value: Some(b"ab"),
            headers: &[("h", None)],
        });
        assert_eq!(
            bytes.as_ref(),
            &[
                0x16, // length 11
                0x00, // attributes
                0x01, // timestamp delta -1
                0x02, // offset delta 1
                0x01, // null key
                0x04, b'a', b'b', // value "ab"
                0x02, // one header
                0x02, b'h', 0x01, // key "h", null value
            ]
        );
        let record = decode(&bytes).unwrap();
        assert_eq!(record.offset(100), 101);
        assert_eq!(record.timestamp(1000), 999);
        assert_eq!(record.key, None);
        assert_eq!(record.value.as_deref(), Some(b"ab".as_slice()));
        assert_eq!(
            record.headers,
            vec![Header {
                key: "h".to_owned(),
                value: None
            }]
        );
    }

    #[test]
    fn offset_and_timestamp_wrap_instead_of_panicking() {
        let record = decode(&[0x0c, 0, 0x01, 0x02, 0x01, 0x01, 0x00]).unwrap();
        assert_eq!(record.offset(i64::MAX), i64::MIN);
        assert_eq!(record.timestamp(i64::MIN), i64::MAX);
    }

    #[test]
    fn malformed_records_name_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x01], "negative record length"),
            (&[0x0e, 0x00], "length runs past the end of the record"),
            (&[0x00], "truncated attributes"),
            (&[0x02, 0x00], "truncated varint"),
            (&[0x0a, 0, 0, 0, 0x03, 0x01], "negative length"),
            (&[0x0c, 0, 0, 0, 0x01, 0x01, 0x01], "negative header count"),
            (
                &[0x0e, 0, 0, 0, 0x01, 0x01, 0x02, 0x01],
                "negative header key length",
            ),
            (
                &[0x10, 0, 0, 0, 0x01, 0x01, 0x02, 0x02, 0xff],
                "header key is not utf-8",
            ),
            (
                &[0x10, 0, 0, 0, 0x01, 0x01, 0x00, 0xaa, 0xbb],
                "record length covers bytes past its last field",
            ),
            // A huge header count must fail on the bytes, not allocate for the count.
            (
                &[0x14, 0, 0, 0, 0x01, 0x01, 0xfe, 0xff, 0xff, 0xff, 0x0f],
                "truncated varint",
            ),
        ];
        for &(bytes, reason) in cases {
            assert_eq!(decode(bytes), Err(reason), "bytes {bytes:02x?}");
        }
    }
}
