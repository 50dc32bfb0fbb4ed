//! [`GroupsState`]: what one partition of the offsets topic says about its groups, applied from
//! its committed records in log order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::{GroupRecord, OffsetKey, OffsetValue};

/// The committed offsets of the groups of one offsets-topic partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsState {
    /// Per group, per (topic, partition), its committed offset.
    groups: BTreeMap<String, BTreeMap<(String, i32), OffsetValue>>,
}

impl GroupsState {
    /// Applies one committed record: an offset is set, or removed by a tombstone (a tombstone
    /// for an offset this state does not hold changes nothing). A group with no offsets left is
    /// gone.
    pub fn apply(&mut self, record: GroupRecord) {
        let GroupRecord::Offset {
            key:
                OffsetKey {
                    group,
                    topic,
                    partition,
                },
            value,
        } = record;
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

    /// The groups that hold at least one committed offset, in id order.
    pub fn groups(&self) -> impl Iterator<Item = &str> + '_ {
        self.groups.keys().map(String::as_str)
    }

    /// Committed offsets held, over every group.
    pub fn len(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    /// Whether no offset is held.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The records that rebuild this state from nothing (one per committed offset): what a
    /// compacted log of the partition would hold.
    pub fn records(&self) -> impl Iterator<Item = GroupRecord> + '_ {
        self.groups.iter().flat_map(|(group, offsets)| {
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
        })
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
