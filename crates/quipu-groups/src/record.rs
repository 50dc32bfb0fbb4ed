//! The records of the offsets topic: Kafka records whose key says what the record is about and
//! whose value is its new state (none: a tombstone, it is gone). Layout, byte by byte:
//! `docs/format/group-records.md`. Every length is checked before anything is allocated.

use serde::{Deserialize, Serialize};

/// Longest group id, topic name or other name in a record, in bytes.
pub const NAME_BYTES_MAX: usize = 1024;
/// Longest metadata string a client may commit with an offset (Kafka's
/// `offset.metadata.max.bytes` default).
pub const METADATA_BYTES_MAX: usize = 4096;

/// Most members one group metadata record may hold.
pub const MEMBERS_MAX: usize = 1_000_000;
/// Longest subscription or assignment of one member in a group metadata record, in bytes.
pub const MEMBER_BYTES_MAX: usize = 1024 * 1024;

/// Key type of an offset commit.
const KEY_OFFSET: u16 = 0;
/// Key type of a group's metadata (its generation and members).
const KEY_GROUP: u16 = 1;
/// Key type of a KIP-848 group's state.
const KEY_CONSUMER_GROUP: u16 = 2;
/// Largest value of a KIP-848 group's record, in bytes.
pub const CONSUMER_GROUP_BYTES_MAX: usize = 16 * 1024 * 1024;
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

/// A classic group's metadata as of its last generation that completed (or emptied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMetadata {
    /// The protocol type ("consumer"; empty for an empty group).
    pub protocol_type: String,
    /// The generation.
    pub generation: i32,
    /// The assignor chosen (empty for an empty group).
    pub protocol_name: String,
    /// The leader's member id (empty for an empty group).
    pub leader: String,
    /// The members, with their subscriptions and assignments.
    pub members: Vec<MemberMetadata>,
}

/// One member of a [`GroupMetadata`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMetadata {
    /// Its member id.
    pub member_id: String,
    /// Its `group.instance.id`, for a static member.
    pub instance_id: Option<String>,
    /// The client id it joined with.
    pub client_id: String,
    /// The address it joined from.
    pub client_host: String,
    /// Its session timeout, in ms.
    pub session_timeout_ms: i32,
    /// Its rebalance timeout, in ms.
    pub rebalance_timeout_ms: i32,
    /// Its metadata for the chosen protocol (a consumer's subscription).
    pub subscription: Vec<u8>,
    /// Its assignment, as the leader wrote it.
    pub assignment: Vec<u8>,
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
    /// A group's metadata (`None`: the group is deleted).
    Group {
        /// The group id.
        group: String,
        /// Its metadata; `None` is a tombstone.
        value: Option<GroupMetadata>,
    },
    /// A KIP-848 group's state (`None`: the group is deleted).
    ConsumerGroup {
        /// The group id.
        group: String,
        /// Its state; `None` is a tombstone.
        value: Option<crate::consumer::ConsumerGroupRecord>,
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
    /// A value's body does not decode.
    #[error("{0} does not decode")]
    Malformed(&'static str),
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
            GroupRecord::ConsumerGroup { group, value } => {
                let mut k = Vec::with_capacity(2 + 2 + group.len());
                k.extend_from_slice(&KEY_CONSUMER_GROUP.to_be_bytes());
                put_string(&mut k, "group", group, NAME_BYTES_MAX)?;
                let v = match value {
                    None => None,
                    Some(value) => {
                        let mut v = VALUE_VERSION.to_be_bytes().to_vec();
                        let body =
                            postcard::to_allocvec(value).map_err(|_| RecordError::TooLong {
                                field: "consumer group",
                                len: usize::MAX,
                                max: CONSUMER_GROUP_BYTES_MAX,
                            })?;
                        if body.len() > CONSUMER_GROUP_BYTES_MAX {
                            return Err(RecordError::TooLong {
                                field: "consumer group",
                                len: body.len(),
                                max: CONSUMER_GROUP_BYTES_MAX,
                            });
                        }
                        v.extend_from_slice(&body);
                        Some(v)
                    }
                };
                Ok((k, v))
            }
            GroupRecord::Group { group, value } => {
                let mut k = Vec::with_capacity(2 + 2 + group.len());
                k.extend_from_slice(&KEY_GROUP.to_be_bytes());
                put_string(&mut k, "group", group, NAME_BYTES_MAX)?;
                let v = match value {
                    None => None,
                    Some(value) => Some(encode_group(value)?),
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
            KEY_GROUP => {
                let group = k.string("group", NAME_BYTES_MAX)?;
                k.end()?;
                let value = match value {
                    None => None,
                    Some(bytes) => Some(decode_group(bytes)?),
                };
                Ok(GroupRecord::Group { group, value })
            }
            KEY_CONSUMER_GROUP => {
                let group = k.string("group", NAME_BYTES_MAX)?;
                k.end()?;
                let value = match value {
                    None => None,
                    Some(bytes) => {
                        let mut v = Reader(bytes);
                        let version = v.u16("value version")?;
                        if version != VALUE_VERSION {
                            return Err(RecordError::UnknownVersion(version));
                        }
                        if v.0.len() > CONSUMER_GROUP_BYTES_MAX {
                            return Err(RecordError::TooLong {
                                field: "consumer group",
                                len: v.0.len(),
                                max: CONSUMER_GROUP_BYTES_MAX,
                            });
                        }
                        // postcard: every length is checked against the bytes left before it
                        // is allocated (serde preallocates at most 1 MiB per sequence).
                        Some(
                            postcard::from_bytes(v.0)
                                .map_err(|_| RecordError::Malformed("consumer group"))?,
                        )
                    }
                };
                Ok(GroupRecord::ConsumerGroup { group, value })
            }
            other => Err(RecordError::UnknownType(other)),
        }
    }
}

fn encode_group(value: &GroupMetadata) -> Result<Vec<u8>, RecordError> {
    if value.members.len() > MEMBERS_MAX {
        return Err(RecordError::TooLong {
            field: "members",
            len: value.members.len(),
            max: MEMBERS_MAX,
        });
    }
    let mut v = Vec::new();
    v.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    put_string(
        &mut v,
        "protocol type",
        &value.protocol_type,
        NAME_BYTES_MAX,
    )?;
    v.extend_from_slice(&value.generation.to_be_bytes());
    put_string(
        &mut v,
        "protocol name",
        &value.protocol_name,
        NAME_BYTES_MAX,
    )?;
    put_string(&mut v, "leader", &value.leader, NAME_BYTES_MAX)?;
    let count = u32::try_from(value.members.len()).unwrap_or(u32::MAX);
    v.extend_from_slice(&count.to_be_bytes());
    for m in &value.members {
        put_string(&mut v, "member id", &m.member_id, NAME_BYTES_MAX)?;
        match &m.instance_id {
            None => v.push(0),
            Some(instance) => {
                v.push(1);
                put_string(&mut v, "instance id", instance, NAME_BYTES_MAX)?;
            }
        }
        put_string(&mut v, "client id", &m.client_id, NAME_BYTES_MAX)?;
        put_string(&mut v, "client host", &m.client_host, NAME_BYTES_MAX)?;
        v.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
        v.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
        put_bytes(&mut v, "subscription", &m.subscription)?;
        put_bytes(&mut v, "assignment", &m.assignment)?;
    }
    Ok(v)
}

fn decode_group(bytes: &[u8]) -> Result<GroupMetadata, RecordError> {
    let mut v = Reader(bytes);
    let version = v.u16("value version")?;
    if version != VALUE_VERSION {
        return Err(RecordError::UnknownVersion(version));
    }
    let protocol_type = v.string("protocol type", NAME_BYTES_MAX)?;
    let generation = v.i32("generation")?;
    let protocol_name = v.string("protocol name", NAME_BYTES_MAX)?;
    let leader = v.string("leader", NAME_BYTES_MAX)?;
    let count = usize::try_from(u32::from_be_bytes(v.array("members")?)).unwrap_or(usize::MAX);
    if count > MEMBERS_MAX {
        return Err(RecordError::TooLong {
            field: "members",
            len: count,
            max: MEMBERS_MAX,
        });
    }
    // Each member takes at least 23 bytes: no more are reserved than the bytes could hold.
    let mut members = Vec::with_capacity(count.min(v.0.len() / 23));
    for _ in 0..count {
        let member_id = v.string("member id", NAME_BYTES_MAX)?;
        let instance_id = match v.take("instance id flag", 1)?[0] {
            0 => None,
            _ => Some(v.string("instance id", NAME_BYTES_MAX)?),
        };
        members.push(MemberMetadata {
            member_id,
            instance_id,
            client_id: v.string("client id", NAME_BYTES_MAX)?,
            client_host: v.string("client host", NAME_BYTES_MAX)?,
            session_timeout_ms: v.i32("session timeout")?,
            rebalance_timeout_ms: v.i32("rebalance timeout")?,
            subscription: v.bytes("subscription")?,
            assignment: v.bytes("assignment")?,
        });
    }
    v.end()?;
    Ok(GroupMetadata {
        protocol_type,
        generation,
        protocol_name,
        leader,
        members,
    })
}

/// A u32 big-endian length, then the bytes (at most [`MEMBER_BYTES_MAX`]).
fn put_bytes(out: &mut Vec<u8>, field: &'static str, bytes: &[u8]) -> Result<(), RecordError> {
    if bytes.len() > MEMBER_BYTES_MAX {
        return Err(RecordError::TooLong {
            field,
            len: bytes.len(),
            max: MEMBER_BYTES_MAX,
        });
    }
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
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
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

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

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, RecordError> {
        let len = usize::try_from(u32::from_be_bytes(self.array(field)?)).unwrap_or(usize::MAX);
        if len > MEMBER_BYTES_MAX {
            return Err(RecordError::TooLong {
                field,
                len,
                max: MEMBER_BYTES_MAX,
            });
        }
        Ok(self.take(field, len)?.to_vec())
    }

    pub(crate) fn string(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<String, RecordError> {
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
        // A member count beyond the limit is refused before anything is allocated.
        let (key, _) = GroupRecord::Group {
            group: "g".into(),
            value: None,
        }
        .encode()
        .unwrap();
        let mut members = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        members.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            GroupRecord::decode(Some(&key), Some(&members)),
            Err(RecordError::TooLong {
                field: "members",
                ..
            })
        ));
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
        fn group_metadata_survives_encoding(
            group in ".{1,20}",
            generation in any::<i32>(),
            members in proptest::collection::vec(
                (".{1,20}", proptest::option::of(".{1,10}"), any::<i32>(),
                 proptest::collection::vec(any::<u8>(), 0..40),
                 proptest::collection::vec(any::<u8>(), 0..40)),
                0..5),
            tombstone in any::<bool>(),
        ) {
            let value = GroupMetadata {
                protocol_type: "consumer".into(),
                generation,
                protocol_name: "range".into(),
                leader: members.first().map(|m| m.0.clone()).unwrap_or_default(),
                members: members
                    .into_iter()
                    .map(|(member_id, instance_id, timeout, subscription, assignment)| MemberMetadata {
                        member_id,
                        instance_id,
                        client_id: "client".into(),
                        client_host: "/127.0.0.1".into(),
                        session_timeout_ms: timeout,
                        rebalance_timeout_ms: timeout,
                        subscription,
                        assignment,
                    })
                    .collect(),
            };
            let record = GroupRecord::Group { group, value: (!tombstone).then_some(value) };
            let (key, value) = record.encode().unwrap();
            prop_assert_eq!(GroupRecord::decode(Some(&key), value.as_deref()).unwrap(), record);
        }

        #[test]
        fn arbitrary_bytes_never_panic(key in proptest::collection::vec(any::<u8>(), 0..64), value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
            let _ = GroupRecord::decode(Some(&key), value.as_deref());
        }
    }
}
