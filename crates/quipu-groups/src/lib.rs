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
mod consumer_protocol;
mod record;
mod state;

pub use classic::{
    Answer, ClassicGroup, Completions, GroupError, GroupLimits, GroupState, JoinReply, JoinRequest,
    SyncReply,
};
pub use consumer_protocol::{assigned_partitions, subscribed_topics};
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
}
