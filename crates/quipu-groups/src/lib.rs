//! Consumer groups' replicated state (issue 11, in progress): the records a group coordinator
//! writes to its partition of the internal offsets topic, and the state every replica of that
//! partition applies from them in log order. Pure: no clock, no I/O; the coordinator (membership,
//! rebalances, the Kafka and gRPC protocols) is built on it.
//!
//! - [`GroupRecord`]: one record's key and value, encoded as `docs/format/group-records.md`
//!   specifies (bad bytes give a [`RecordError`], never a panic or an unbounded allocation).
//! - [`GroupsState`]: the committed offsets of every group of one partition, changed only by
//!   [`GroupsState::apply`]. Applying the same records in the same order gives the same state on
//!   every replica; a tombstone for something unknown changes nothing.
//! - [`partition_for_group`]: which partition of the offsets topic holds a group.

mod classic;
pub mod consumer;
mod record;
mod state;

pub use classic::{
    Answer, ClassicGroup, Completions, GroupError, GroupLimits, GroupState, JoinReply, JoinRequest,
    SyncReply,
};
pub use record::{
    GroupMetadata, GroupRecord, MEMBER_BYTES_MAX, MEMBERS_MAX, METADATA_BYTES_MAX, MemberMetadata,
    NAME_BYTES_MAX, OffsetKey, OffsetValue, RecordError,
};
pub use state::GroupsState;

/// The internal topic that holds every group's state.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The partition of an offsets topic of `partitions` partitions that holds group `group`: Java's
/// `String.hashCode` of the id, made non-negative, modulo the partition count (as Kafka maps
/// groups), so a group's partition never changes while the count does not.
pub fn partition_for_group(group: &str, partitions: u32) -> u32 {
    let hash = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    // Kafka's Utils.abs: i32::MIN maps to 0.
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    u32::try_from(positive).unwrap_or(0) % partitions.max(1)
}

/// The partitions a classic consumer's assignment (the consumer protocol's: version, then per
/// topic its name and partitions) names, or none if the bytes are not one. Bounded by the
/// bytes.
pub fn assigned_partitions(assignment: &[u8]) -> consumer::Assignment {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if bytes.len() < n {
            return None;
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Some(head)
    }
    let mut bytes = assignment;
    let mut out = consumer::Assignment::new();
    let parsed = (|| {
        take(&mut bytes, 2)?; // version
        let topics = i32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?);
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take(&mut bytes, 2)?.try_into().ok()?);
            let name =
                String::from_utf8(take(&mut bytes, usize::try_from(len).ok()?)?.to_vec()).ok()?;
            let count = i32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?);
            let partitions = out.entry(name).or_default();
            for _ in 0..count.max(0) {
                partitions.insert(i32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?));
            }
        }
        Some(())
    })();
    if parsed.is_none() {
        out.clear();
    }
    out
}

/// The topics a consumer's subscription (its JoinGroup metadata for any of the consumer
/// protocol's assignors: version, then the topic names) names, or none if the bytes are not
/// one. Bounded by the bytes: nothing is allocated past what they hold.
pub fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if bytes.len() < n {
            return None;
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Some(head)
    }
    let mut bytes = metadata;
    let mut topics = Vec::new();
    let parsed = (|| {
        take(&mut bytes, 2)?; // version
        let count = i32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?);
        for _ in 0..count.max(0) {
            let len = i16::from_be_bytes(take(&mut bytes, 2)?.try_into().ok()?);
            let name = take(&mut bytes, usize::try_from(len).ok()?)?;
            topics.push(String::from_utf8(name.to_vec()).ok()?);
        }
        Some(())
    })();
    if parsed.is_none() {
        topics.clear();
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_partitions_as_kafka_maps_them() {
        // Java: "my-group".hashCode() = -1_906_497_762 (and "" hashes to 0).
        assert_eq!(partition_for_group("my-group", 50), 1_906_497_762 % 50);
        assert_eq!(partition_for_group("", 50), 0);
        for group in ["a", "orders-consumers", "ÿ", "🦀"] {
            assert!(partition_for_group(group, 8) < 8);
        }
    }

    #[test]
    fn assignments_name_their_partitions() {
        // Version 0, one topic "t" with partitions 2 and 0, then user data.
        let bytes = [
            0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff,
            0xff,
        ];
        assert_eq!(assigned_partitions(&bytes)["t"], [0, 2].into());
        assert!(assigned_partitions(&bytes[..12]).is_empty());
    }

    #[test]
    fn subscriptions_name_their_topics() {
        // Version 1, two topics, then user data and owned partitions (ignored).
        let mut subscription = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        subscription.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(subscribed_topics(&subscription), ["a", "bc"]);
        assert!(subscribed_topics(&[0, 1, 0x7f, 0xff, 0xff, 0xff]).is_empty());
        assert!(subscribed_topics(b"").is_empty());
    }
}
