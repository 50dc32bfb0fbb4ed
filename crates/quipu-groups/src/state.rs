//! [`GroupsState`]: what one partition of the offsets topic says about its groups, applied from
//! its committed records in log order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::{GroupMetadata, GroupRecord, OffsetKey, OffsetValue};

/// The committed offsets and the metadata of the groups of one offsets-topic partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsState {
    /// Per group, per (topic, partition), its committed offset.
    groups: BTreeMap<String, BTreeMap<(String, i32), OffsetValue>>,
    /// Per group, its metadata as last written (since format 1.5: older snapshots hold none).
    #[serde(default)]
    metadata: BTreeMap<String, GroupMetadata>,
    /// Per KIP-848 group, its state as last written (the highest version).
    #[serde(default)]
    consumer: BTreeMap<String, crate::consumer::ConsumerGroupRecord>,
}

impl GroupsState {
    /// The state a snapshot of format 1.4 held: committed offsets only.
    pub fn from_offsets(groups: BTreeMap<String, BTreeMap<(String, i32), OffsetValue>>) -> Self {
        GroupsState::from_parts(groups, BTreeMap::new())
    }

    /// The state a snapshot of format 1.5 held: committed offsets and classic groups' metadata.
    pub fn from_parts(
        groups: BTreeMap<String, BTreeMap<(String, i32), OffsetValue>>,
        metadata: BTreeMap<String, GroupMetadata>,
    ) -> Self {
        GroupsState {
            groups,
            metadata,
            consumer: BTreeMap::new(),
        }
    }

    /// Applies one committed record: an offset is set, or removed by a tombstone (a tombstone
    /// for an offset this state does not hold changes nothing; a group with no offsets left
    /// holds none); a group's metadata is replaced by one of the same or a later generation
    /// (an older one, re-applied after a snapshot that carried a newer, changes nothing), or
    /// removed by a tombstone.
    pub fn apply(&mut self, record: GroupRecord) {
        let (group, topic, partition, value) = match record {
            GroupRecord::Offset {
                key:
                    OffsetKey {
                        group,
                        topic,
                        partition,
                    },
                value,
            } => (group, topic, partition, value),
            GroupRecord::ConsumerGroup { group, value } => {
                match value {
                    None => {
                        self.consumer.remove(&group);
                    }
                    Some(value) => {
                        let newer = self
                            .consumer
                            .get(&group)
                            .is_none_or(|held| value.version > held.version);
                        if newer {
                            self.consumer.insert(group, value);
                        }
                    }
                }
                return;
            }
            GroupRecord::Group { group, value } => {
                match value {
                    None => {
                        self.metadata.remove(&group);
                    }
                    Some(value) => {
                        let newer = self
                            .metadata
                            .get(&group)
                            .is_none_or(|held| value.generation >= held.generation);
                        if newer {
                            self.metadata.insert(group, value);
                        }
                    }
                }
                return;
            }
        };
        match value {
            Some(value) => {
                self.groups
                    .entry(group)
                    .or_default()
                    .insert((topic, partition), value);
            }
            None => {
                if let Some(offsets) = self.groups.get_mut(&group) {
                    offsets.remove(&(topic, partition));
                    if offsets.is_empty() {
                        self.groups.remove(&group);
                    }
                }
            }
        }
    }

    /// The offset `group` committed for `topic`/`partition`, if any.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.groups.get(group)?.get(&(topic.to_string(), partition))
    }

    /// Every offset `group` committed, by (topic, partition).
    pub fn offsets(
        &self,
        group: &str,
    ) -> impl Iterator<Item = (&(String, i32), &OffsetValue)> + '_ {
        self.groups.get(group).into_iter().flatten()
    }

    /// The groups that hold at least one committed offset or metadata, in id order.
    pub fn groups(&self) -> impl Iterator<Item = &str> + '_ {
        let mut all: Vec<&str> = self
            .groups
            .keys()
            .chain(self.metadata.keys())
            .chain(self.consumer.keys())
            .map(String::as_str)
            .collect();
        all.sort_unstable();
        all.dedup();
        all.into_iter()
    }

    /// A KIP-848 group's state as last written, if any.
    pub fn consumer_group(&self, group: &str) -> Option<&crate::consumer::ConsumerGroupRecord> {
        self.consumer.get(group)
    }

    /// `group`'s metadata as last written, if any.
    pub fn metadata(&self, group: &str) -> Option<&GroupMetadata> {
        self.metadata.get(group)
    }

    /// Committed offsets held, over every group.
    pub fn len(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    /// Whether no offset and no metadata is held.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.metadata.is_empty() && self.consumer.is_empty()
    }

    /// The records that rebuild this state from nothing (one per group metadata, one per
    /// committed offset): what a compacted log of the partition would hold.
    pub fn records(&self) -> impl Iterator<Item = GroupRecord> + '_ {
        let metadata = self
            .metadata
            .iter()
            .map(|(group, value)| GroupRecord::Group {
                group: group.clone(),
                value: Some(value.clone()),
            });
        let consumer = self
            .consumer
            .iter()
            .map(|(group, value)| GroupRecord::ConsumerGroup {
                group: group.clone(),
                value: Some(value.clone()),
            });
        metadata
            .chain(consumer)
            .chain(self.groups.iter().flat_map(|(group, offsets)| {
                offsets
                    .iter()
                    .map(move |((topic, partition), value)| GroupRecord::Offset {
                        key: OffsetKey {
                            group: group.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                        },
                        value: Some(value.clone()),
                    })
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn commit(group: &str, partition: i32, offset: Option<i64>) -> GroupRecord {
        GroupRecord::Offset {
            key: OffsetKey {
                group: group.into(),
                topic: "t".into(),
                partition,
            },
            value: offset.map(|offset| OffsetValue {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            }),
        }
    }

    #[test]
    fn commits_set_offsets_and_tombstones_remove_them() {
        let mut state = GroupsState::default();
        state.apply(commit("a", 0, Some(10)));
        state.apply(commit("a", 0, Some(7))); // a client may move back (a seek)
        state.apply(commit("a", 1, Some(3)));
        state.apply(commit("b", 0, Some(1)));
        assert_eq!(state.committed("a", "t", 0).map(|v| v.offset), Some(7));
        assert_eq!(state.len(), 3);
        state.apply(commit("a", 1, None));
        state.apply(commit("a", 0, None));
        assert_eq!(state.groups().collect::<Vec<_>>(), ["b"]);
        // A tombstone for what is not there changes nothing.
        let before = state.clone();
        state.apply(commit("zz", 4, None));
        state.apply(commit("b", 9, None));
        assert_eq!(state, before);
    }

    fn metadata(group: &str, generation: Option<i32>) -> GroupRecord {
        GroupRecord::Group {
            group: group.into(),
            value: generation.map(|generation| crate::GroupMetadata {
                protocol_type: "consumer".into(),
                generation,
                protocol_name: "range".into(),
                leader: String::new(),
                members: Vec::new(),
            }),
        }
    }

    #[test]
    fn group_metadata_only_moves_forward_and_a_tombstone_removes_it() {
        let mut state = GroupsState::default();
        state.apply(metadata("g", Some(3)));
        state.apply(metadata("g", Some(2))); // re-applied after a newer snapshot
        assert_eq!(state.metadata("g").map(|m| m.generation), Some(3));
        state.apply(metadata("g", Some(4)));
        assert_eq!(state.metadata("g").map(|m| m.generation), Some(4));
        assert_eq!(state.groups().collect::<Vec<_>>(), ["g"]);
        state.apply(metadata("g", None));
        assert!(state.metadata("g").is_none());
        assert!(state.is_empty());
        // After a deletion, a group of the same id starts again from any generation.
        state.apply(metadata("g", Some(1)));
        assert_eq!(state.metadata("g").map(|m| m.generation), Some(1));
    }

    #[test]
    fn a_snapshot_of_format_1_4_reads_as_offsets_without_metadata() {
        let mut offsets_only: BTreeMap<String, BTreeMap<(String, i32), OffsetValue>> =
            BTreeMap::new();
        offsets_only.entry("g".into()).or_default().insert(
            ("t".into(), 0),
            OffsetValue {
                offset: 5,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            },
        );
        let old = postcard::to_allocvec(&offsets_only).unwrap();
        assert!(postcard::from_bytes::<GroupsState>(&old).is_err());
        let read = GroupsState::from_offsets(postcard::from_bytes(&old).unwrap());
        assert_eq!(read.committed("g", "t", 0).map(|v| v.offset), Some(5));
    }

    proptest! {
        /// Applying the records a state lists rebuilds it, and the state survives encoding (as
        /// a snapshot carries it).
        #[test]
        fn the_state_is_rebuilt_from_its_records(
            ops in proptest::collection::vec((0u8..4, 0i32..4, proptest::option::of(0i64..100)), 0..100)
        ) {
            let mut state = GroupsState::default();
            for (group, partition, offset) in ops {
                state.apply(commit(&format!("g{group}"), partition, offset));
            }
            let mut rebuilt = GroupsState::default();
            for record in state.records() {
                rebuilt.apply(record);
            }
            prop_assert_eq!(&rebuilt, &state);
            let bytes = postcard::to_allocvec(&state).unwrap();
            prop_assert_eq!(postcard::from_bytes::<GroupsState>(&bytes).unwrap(), state);
        }
    }
}
