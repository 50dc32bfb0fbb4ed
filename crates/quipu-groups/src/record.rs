//! The records of the offsets topic: Kafka records whose key says what the record is about and
//! whose value is its new state (none: a tombstone, it is gone). Layout, byte by byte:
//! `docs/format/group-records.md`. Every length is checked before anything is allocated.

use serde::{Deserialize, Serialize};

/// Longest group id, topic name or other name in a record, in bytes.
pub const NAME_BYTES_MAX: usize = 1024;
/// Longest metadata string a client may commit with an offset (Kafka's
/// `offset.metadata.max.bytes` default).
pub const METADATA_BYTES_MAX: usize = 4096;

/// Key type of an offset commit.
const KEY_OFFSET: u16 = 0;
/// The only value version written so far.
const VALUE_VERSION: u16 = 0;

/// A group's committed position in one partition: what an offset record is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OffsetKey {
    /// The group id.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    /// The next offset the group reads (Kafka's committed offset), at least 0.
    pub offset: i64,
    /// The leader epoch of the record before it, if the client knew it (-1: unknown).
    pub leader_epoch: i32,
    /// The client's metadata string, at most [`METADATA_BYTES_MAX`] bytes.
    pub metadata: String,
    /// When the coordinator accepted the commit (ms since the Unix epoch, its clock).
    pub commit_timestamp_ms: i64,
}

/// One record of the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    /// A committed offset (`None`: deleted).
    Offset {
        /// What it is about.
        key: OffsetKey,
        /// Its value; `None` is a tombstone.
        value: Option<OffsetValue>,
    },
}

/// Why bytes are not a record of the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record has no key.
    #[error("a record of the offsets topic has no key")]
    NoKey,
    /// The key names a record type this build does not know.
    #[error("unknown offsets-topic record type {0}")]
    UnknownType(u16),
    /// The value has a version this build does not know.
    #[error("unknown offsets-topic value version {0}")]
    UnknownVersion(u16),
    /// The bytes end before a field does.
    #[error("offsets-topic record truncated: {field} needs {needed} bytes, {available} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// Bytes are left after the last field.
    #[error("offsets-topic record has {0} bytes after its last field")]
    Trailing(usize),
    /// A name or string is longer than its limit.
    #[error("{field} of {len} bytes exceeds {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A value out of its range (a negative offset or partition).
    #[error("{field} = {value} is out of range")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
}

impl GroupRecord {
    /// The record's key and value bytes (`None`: a tombstone).
    pub fn encode(&self) -> Result<(Vec<u8>, Option<Vec<u8>>), RecordError> {
        match self {
            GroupRecord::Offset { key, value } => {
                check_partition(key.partition)?;
                let mut k = Vec::with_capacity(2 + 2 + key.group.len() + 2 + key.topic.len() + 4);
                k.extend_from_slice(&KEY_OFFSET.to_be_bytes());
                put_string(&mut k, "group", &key.group, NAME_BYTES_MAX)?;
                put_string(&mut k, "topic", &key.topic, NAME_BYTES_MAX)?;
                k.extend_from_slice(&key.partition.to_be_bytes());
                let v = match value {
                    None => None,
                    Some(value) => {
                        if value.offset < 0 {
                            return Err(RecordError::OutOfRange {
                                field: "offset",
                                value: value.offset,
                            });
                        }
                        let mut v = Vec::with_capacity(2 + 8 + 4 + 2 + value.metadata.len() + 8);
                        v.extend_from_slice(&VALUE_VERSION.to_be_bytes());
                        v.extend_from_slice(&value.offset.to_be_bytes());
                        v.extend_from_slice(&value.leader_epoch.to_be_bytes());
                        put_string(&mut v, "metadata", &value.metadata, METADATA_BYTES_MAX)?;
                        v.extend_from_slice(&value.commit_timestamp_ms.to_be_bytes());
                        Some(v)
                    }
                };
                Ok((k, v))
            }
        }
    }

    /// Reads a record from its key and value bytes (`None`: a tombstone).
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<GroupRecord, RecordError> {
        let mut k = Reader(key.ok_or(RecordError::NoKey)?);
        match k.u16("key type")? {
            KEY_OFFSET => {
                let key = OffsetKey {
                    group: k.string("group", NAME_BYTES_MAX)?,
                    topic: k.string("topic", NAME_BYTES_MAX)?,
                    partition: k.i32("partition")?,
                };
                check_partition(key.partition)?;
                k.end()?;
                let value = match value {
                    None => None,
                    Some(bytes) => {
                        let mut v = Reader(bytes);
                        let version = v.u16("value version")?;
                        if version != VALUE_VERSION {
                            return Err(RecordError::UnknownVersion(version));
                        }
                        let value = OffsetValue {
                            offset: v.i64("offset")?,
                            leader_epoch: v.i32("leader epoch")?,
                            metadata: v.string("metadata", METADATA_BYTES_MAX)?,
                            commit_timestamp_ms: v.i64("commit timestamp")?,
                        };
                        if value.offset < 0 {
                            return Err(RecordError::OutOfRange {
                                field: "offset",
                                value: value.offset,
                            });
                        }
                        v.end()?;
                        Some(value)
                    }
                };
                Ok(GroupRecord::Offset { key, value })
            }
            other => Err(RecordError::UnknownType(other)),
        }
    }
}

fn check_partition(partition: i32) -> Result<(), RecordError> {
    if partition < 0 {
        return Err(RecordError::OutOfRange {
            field: "partition",
            value: i64::from(partition),
        });
    }
    Ok(())
}

/// A u16 big-endian length, then the UTF-8 bytes.
fn put_string(
    out: &mut Vec<u8>,
    field: &'static str,
    text: &str,
    max: usize,
) -> Result<(), RecordError> {
    if text.len() > max {
        return Err(RecordError::TooLong {
            field,
            len: text.len(),
            max,
        });
    }
    let len = u16::try_from(text.len()).map_err(|_| RecordError::TooLong {
        field,
        len: text.len(),
        max: usize::from(u16::MAX),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Reads fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, needed: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < needed {
            return Err(RecordError::Truncated {
                field,
                needed,
                available: self.0.len(),
            });
        }
        let (head, rest) = self.0.split_at(needed);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordError> {
        let bytes = self.take(field, N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    fn string(&mut self, field: &'static str, max: usize) -> Result<String, RecordError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(RecordError::TooLong { field, len, max });
        }
        let bytes = self.take(field, len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::NotUtf8(field))
    }

    fn end(&self) -> Result<(), RecordError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Trailing(self.0.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offset(group: &str, partition: i32, value: Option<i64>) -> GroupRecord {
        GroupRecord::Offset {
            key: OffsetKey {
                group: group.into(),
                topic: "orders".into(),
                partition,
            },
            value: value.map(|offset| OffsetValue {
                offset,
                leader_epoch: 3,
                metadata: "m".into(),
                commit_timestamp_ms: 1_700_000_000_000,
            }),
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let (key, value) = offset("g", 2, Some(42)).encode().unwrap();
        assert_eq!(
            key,
            [
                0, 0, 0, 1, b'g', 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0, 0, 0, 2
            ]
        );
        let value = value.unwrap();
        assert_eq!(&value[..2], [0, 0]);
        assert_eq!(&value[2..10], 42i64.to_be_bytes());
        assert_eq!(&value[10..14], 3i32.to_be_bytes());
        assert_eq!(&value[14..17], [0, 1, b'm']);
        assert_eq!(&value[17..], 1_700_000_000_000i64.to_be_bytes());
    }

    #[test]
    fn bad_bytes_are_errors() {
        let (key, value) = offset("g", 2, Some(42)).encode().unwrap();
        let value = value.unwrap();
        assert_eq!(
            GroupRecord::decode(None, Some(&value)),
            Err(RecordError::NoKey)
        );
        assert!(matches!(
            GroupRecord::decode(Some(&key[..5]), None),
            Err(RecordError::Truncated { .. })
        ));
        let mut long = key.clone();
        long.push(0);
        assert_eq!(
            GroupRecord::decode(Some(&long), None),
            Err(RecordError::Trailing(1))
        );
        assert_eq!(
            GroupRecord::decode(Some(&[0, 9]), None),
            Err(RecordError::UnknownType(9))
        );
        let mut version = value.clone();
        version[1] = 1;
        assert_eq!(
            GroupRecord::decode(Some(&key), Some(&version)),
            Err(RecordError::UnknownVersion(1))
        );
        // A length beyond the limit is refused before anything is allocated.
        assert!(matches!(
            GroupRecord::decode(Some(&[0, 0, 0xff, 0xff]), None),
            Err(RecordError::TooLong { .. })
        ));
        assert!(matches!(
            offset("g", -1, None).encode(),
            Err(RecordError::OutOfRange { .. })
        ));
        assert!(matches!(
            offset("g", 0, Some(-5)).encode(),
            Err(RecordError::OutOfRange { .. })
        ));
    }

    proptest! {
        #[test]
        fn records_survive_encoding(
            group in ".{0,40}",
            topic in "[a-z]{1,20}",
            partition in 0i32..1000,
            value in proptest::option::of((0i64..i64::MAX, -1i32..100, ".{0,30}", any::<i64>())),
        ) {
            let record = GroupRecord::Offset {
                key: OffsetKey { group, topic, partition },
                value: value.map(|(offset, leader_epoch, metadata, commit_timestamp_ms)| OffsetValue {
                    offset, leader_epoch, metadata, commit_timestamp_ms,
                }),
            };
            let (key, value) = record.encode().unwrap();
            prop_assert_eq!(GroupRecord::decode(Some(&key), value.as_deref()).unwrap(), record);
        }

        #[test]
        fn arbitrary_bytes_never_panic(key in proptest::collection::vec(any::<u8>(), 0..64), value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
            let _ = GroupRecord::decode(Some(&key), value.as_deref());
        }
    }
}
