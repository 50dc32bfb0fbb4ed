//! Kafka's zigzag varints and a bounds-checked reader over untrusted record bytes.
//!
//! Invariant: [`Reader`] never reads past the end of its buffer and never allocates more than
//! the bytes it has left; every failure is a `&'static str` reason that the caller wraps with
//! the record index.

use bytes::{BufMut, Bytes};

/// Longest zigzag varint (32-bit) in bytes.
const VARINT_BYTES_MAX: usize = 5;
/// Longest zigzag varlong (64-bit) in bytes.
const VARLONG_BYTES_MAX: usize = 10;

/// Appends `value` as a zigzag varint.
pub(crate) fn put_varint(buf: &mut impl BufMut, value: i32) {
    put_varlong(buf, i64::from(value));
}

/// Bytes [`put_varint`] writes for `value`.
pub(crate) fn varint_len(value: i32) -> usize {
    varlong_len(i64::from(value))
}

/// Bytes [`put_varlong`] writes for `value`: one per 7 bits of its zigzag form, at least one.
pub(crate) fn varlong_len(value: i64) -> usize {
    let bits = u64::BITS - zigzag(value).leading_zeros();
    (bits as usize).div_ceil(7).max(1)
}

/// `value` with its sign in the lowest bit, so that small magnitudes take few bytes.
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)).cast_unsigned()
}

/// Appends `value` as a zigzag varlong.
pub(crate) fn put_varlong(buf: &mut impl BufMut, value: i64) {
    let mut rest = zigzag(value);
    loop {
        let low = rest.to_le_bytes()[0] & 0x7f;
        rest >>= 7;
        if rest == 0 {
            buf.put_u8(low);
            return;
        }
        buf.put_u8(low | 0x80);
    }
}

/// A cursor over untrusted bytes; slices it hands out share the underlying [`Bytes`].
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
    position: usize,
}

impl Reader {
    /// Starts reading at the beginning of `buf`.
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf, position: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.position)
    }

    /// Reads one byte.
    pub(crate) fn i8(&mut self) -> Result<i8, &'static str> {
        let byte = *self.buf.get(self.position).ok_or("truncated attributes")?;
        self.position += 1;
        Ok(i8::from_be_bytes([byte]))
    }

    /// Reads a zigzag varint (at most 5 bytes, value must fit in 32 bits).
    pub(crate) fn varint(&mut self) -> Result<i32, &'static str> {
        let raw = self.unsigned_varint(VARINT_BYTES_MAX)?;
        let raw = u32::try_from(raw).map_err(|_| "varint out of range")?;
        Ok((raw >> 1).cast_signed() ^ -(raw & 1).cast_signed())
    }

    /// Reads a zigzag varlong (at most 10 bytes).
    pub(crate) fn varlong(&mut self) -> Result<i64, &'static str> {
        let raw = self.unsigned_varint(VARLONG_BYTES_MAX)?;
        Ok((raw >> 1).cast_signed() ^ -(raw & 1).cast_signed())
    }

    fn unsigned_varint(&mut self, bytes_max: usize) -> Result<u64, &'static str> {
        let mut value: u64 = 0;
        for index in 0..bytes_max {
            let byte = *self.buf.get(self.position).ok_or("truncated varint")?;
            self.position += 1;
            let shift = 7 * index;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte of a varlong may only carry the top bit of the 64-bit value.
            if shift == 63 && bits > 1 {
                return Err("varint out of range");
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long")
    }

    /// Takes the next `len` bytes as a zero-copy slice.
    pub(crate) fn bytes(&mut self, len: usize) -> Result<Bytes, &'static str> {
        if len > self.remaining() {
            return Err("length runs past the end of the record");
        }
        let end = self.position + len;
        let slice = self.buf.slice(self.position..end);
        self.position = end;
        Ok(slice)
    }

    /// Reads a varint length prefix followed by that many bytes; `-1` means null.
    pub(crate) fn nullable_bytes(&mut self) -> Result<Option<Bytes>, &'static str> {
        match self.varint()? {
            -1 => Ok(None),
            len => {
                let len = usize::try_from(len).map_err(|_| "negative length")?;
                self.bytes(len).map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded_varlong(value: i64) -> Vec<u8> {
        let mut buf = Vec::new();
        put_varlong(&mut buf, value);
        buf
    }

    #[test]
    fn computed_lengths_match_what_is_written() {
        // Both sides of every bit length (so of every 7-bit boundary), positive and negative.
        for shift in 0..64 {
            let power = 1i64 << shift;
            for value in [power, power.wrapping_sub(1), power.wrapping_neg(), !power] {
                assert_eq!(
                    varlong_len(value),
                    encoded_varlong(value).len(),
                    "value {value}"
                );
                if let Ok(value) = i32::try_from(value) {
                    let mut buf = Vec::new();
                    put_varint(&mut buf, value);
                    assert_eq!(varint_len(value), buf.len(), "value {value}");
                }
            }
        }
    }

    #[test]
    fn known_encodings_match_kafka() {
        // Values from Kafka's ByteUtilsTest.
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (300, &[0xd8, 0x04]),
            (i64::from(i32::MAX), &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i64::from(i32::MIN), &[0xff, 0xff, 0xff, 0xff, 0x0f]),
            (
                i64::MIN,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(value, bytes) in cases {
            assert_eq!(encoded_varlong(value), bytes, "value {value}");
            assert_eq!(varlong_len(value), bytes.len(), "length of {value}");
            let mut reader = Reader::new(Bytes::copy_from_slice(bytes));
            assert_eq!(reader.varlong().unwrap(), value);
            assert_eq!(reader.remaining(), 0);
        }
    }

    #[test]
    fn varint_round_trips_extremes() {
        for value in [0, 1, -1, i32::MAX, i32::MIN, 12345, -12345] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(Reader::new(Bytes::from(buf)).varint().unwrap(), value);
        }
    }

    #[test]
    fn malformed_varints_are_errors() {
        let cases: &[(&[u8], bool, &str)] = &[
            (&[], false, "truncated varint"),
            (&[0x80], false, "truncated varint"),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                false,
                "varint too long",
            ),
            (
                &[0xff, 0xff, 0xff, 0xff, 0x1f],
                false,
                "varint out of range",
            ),
            (&[0x80; 11], true, "varint too long"),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                true,
                "varint out of range",
            ),
        ];
        for &(bytes, long, reason) in cases {
            let mut reader = Reader::new(Bytes::copy_from_slice(bytes));
            let result = if long {
                reader.varlong().map(|_| ())
            } else {
                reader.varint().map(|_| ())
            };
            assert_eq!(result, Err(reason), "bytes {bytes:02x?}");
        }
    }

    #[test]
    fn nullable_bytes_rejects_bad_lengths() {
        let mut reader = Reader::new(Bytes::from_static(&[0x03]));
        assert_eq!(reader.nullable_bytes(), Err("negative length"));
        let mut reader = Reader::new(Bytes::from_static(&[0x04, b'a']));
        assert_eq!(
            reader.nullable_bytes(),
            Err("length runs past the end of the record")
        );
        let mut reader = Reader::new(Bytes::from_static(&[0x01, 0x02, b'a']));
        assert_eq!(reader.nullable_bytes(), Ok(None));
        assert_eq!(reader.nullable_bytes(), Ok(Some(Bytes::from_static(b"a"))));
    }
}
