//! Groups as an operator sees them: describe, list, delete a group, delete some of its offsets.
//! Each runs on the group's coordinator (list: on each node, for the groups it coordinates).

use quipu_groups::{GroupRecord, GroupState, OffsetKey};

use super::CoordinatorError;
use crate::node::NodeHandle;

/// A group as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Kafka's state name ("Empty", "PreparingRebalance", "CompletingRebalance", "Stable").
    pub state: &'static str,
    /// The protocol type ("consumer"; empty for a group with no members).
    pub protocol_type: String,
    /// The assignor of the current generation (empty when none).
    pub protocol: String,
    /// The generation.
    pub generation: i32,
    /// The members.
    pub members: Vec<MemberDescription>,
}

/// One member of a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Its member id.
    pub member_id: String,
    /// Its `group.instance.id`, for a static member.
    pub instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// Its address (`/ip`).
    pub client_host: String,
    /// Its metadata for the group's protocol (a consumer's subscription).
    pub metadata: Vec<u8>,
    /// Its assignment.
    pub assignment: Vec<u8>,
}

/// One committed offset of a group: topic, partition, the next offset the group reads.
pub type CommittedOffset = (String, i32, i64);

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group id.
    pub group: String,
    /// "consumer" for a KIP-848 group, "classic" otherwise.
    pub protocol: &'static str,
    /// Its protocol type (empty for a group with only committed offsets).
    pub protocol_type: String,
    /// Kafka's state name.
    pub state: &'static str,
    /// Its members now.
    pub members: usize,
    /// Its generation (a classic group) or group epoch (a KIP-848 group): it rises with every
    /// rebalance.
    pub generation: i32,
}

/// Why a group was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteGroupError {
    /// The coordinator cannot serve the group now.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// The group has members (Kafka's NON_EMPTY_GROUP).
    #[error("the group has members")]
    NotEmpty,
    /// The group has no members, metadata or committed offsets (GROUP_ID_NOT_FOUND).
    #[error("no such group")]
    NotFound,
}

/// Why one partition's offset was not deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetDeleteRefused {
    /// A member of the group subscribes to the topic (Kafka's GROUP_SUBSCRIBED_TO_TOPIC).
    #[error("the group's members subscribe to the topic")]
    Subscribed,
}

/// `group` as the applied state of its offsets partition `replica` describes it (no members
/// held by the coordinator now).
fn stored_summary(replica: &crate::Partition, group: String) -> ListedGroup {
    let (metadata, consumer) = replica
        .with_groups(|s| {
            (
                s.metadata(&group).cloned(),
                s.consumer_group(&group)
                    .map(|c| (c.members.len(), c.group_epoch)),
            )
        })
        .unwrap_or_default();
    if let Some((members, epoch)) = consumer {
        let state = if members == 0 { "Empty" } else { "Stable" };
        return ListedGroup {
            group,
            protocol: "consumer",
            protocol_type: "consumer".to_string(),
            state,
            members,
            generation: epoch,
        };
    }
    let (protocol_type, members, generation) = metadata
        .map(|m| (m.protocol_type, m.members.len(), m.generation))
        .unwrap_or_default();
    let state = if members == 0 {
        GroupState::Empty
    } else {
        GroupState::Stable
    };
    ListedGroup {
        group,
        protocol: "classic",
        protocol_type,
        state: state.kafka_name(),
        members,
        generation,
    }
}

impl NodeHandle {
    /// Describes `group` as its coordinator; `None` for a group it knows nothing of (Kafka's
    /// "Dead").
    pub async fn describe_group(
        &self,
        group: &str,
    ) -> Result<Option<GroupDescription>, CoordinatorError> {
        let (replica, term) = self.inner.coordinating(group).await?;
        let known = replica
            .with_groups(|s| s.groups().any(|g| g == group))
            .unwrap_or(false);
        Ok(self
            .inner
            .membership
            .with_group(group, &replica, term, |hosted, _| {
                let g = &hosted.group;
                // A KIP-848 group is described by ConsumerGroupDescribe (Kafka: Dead here).
                if (g.is_empty() && !known) || !hosted.consumer.is_empty() {
                    return None;
                }
                let clients: std::collections::HashMap<&str, (&str, &str)> = g
                    .clients()
                    .map(|(id, client, host)| (id, (client, host)))
                    .collect();
                Some(GroupDescription {
                    state: g.state().kafka_name(),
                    protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                    protocol: g.protocol_name().unwrap_or_default().to_string(),
                    generation: g.generation(),
                    members: g
                        .members()
                        .map(|(id, instance, metadata, assignment)| {
                            let (client, host) = clients.get(id).copied().unwrap_or_default();
                            MemberDescription {
                                member_id: id.to_string(),
                                instance_id: instance.map(str::to_string),
                                client_id: client.to_string(),
                                client_host: host.to_string(),
                                metadata: metadata.to_vec(),
                                assignment: assignment.to_vec(),
                            }
                        })
                        .collect(),
                })
            }))
    }

    /// The groups this node coordinates now: those of every offsets partition it leads (with
    /// committed offsets, metadata or members).
    pub fn list_groups(&self) -> Vec<ListedGroup> {
        self.coordinated_groups(false)
            .into_iter()
            .map(|(group, _)| group)
            .collect()
    }

    /// [`list_groups`](Self::list_groups) with each group's committed offsets (topic,
    /// partition, offset).
    pub fn list_groups_with_offsets(&self) -> Vec<(ListedGroup, Vec<CommittedOffset>)> {
        self.coordinated_groups(true)
    }

    fn coordinated_groups(&self, with_offsets: bool) -> Vec<(ListedGroup, Vec<CommittedOffset>)> {
        let inner = &self.inner;
        let partitions: Vec<u64> = inner.metadata.with_metadata(|m| {
            m.topic(quipu_groups::OFFSETS_TOPIC)
                .map(|t| t.partitions.iter().map(|p| p.group).collect())
                .unwrap_or_default()
        });
        let mut listed = Vec::new();
        for group_id in partitions {
            let Some(replica) = inner
                .partition(crate::GroupId(group_id))
                .filter(|p| p.is_leader())
            else {
                continue;
            };
            let term = replica.term();
            let mut names: Vec<String> = replica
                .with_groups(|s| s.groups().map(str::to_string).collect())
                .unwrap_or_default();
            names.extend(inner.membership.groups_of(replica.group(), term));
            names.sort_unstable();
            names.dedup();
            for name in names {
                let group = inner
                    .membership
                    .summary(&name, replica.group(), term)
                    .unwrap_or_else(|| stored_summary(&replica, name));
                let offsets = if with_offsets {
                    replica
                        .with_groups(|s| {
                            s.offsets(&group.group)
                                .map(|((topic, partition), value)| {
                                    (topic.clone(), *partition, value.offset)
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                listed.push((group, offsets));
            }
        }
        listed
    }

    /// Deletes `group` (its metadata and every committed offset) as its coordinator, if it has
    /// no members.
    pub async fn delete_group(&self, group: &str) -> Result<(), DeleteGroupError> {
        let (replica, term) = self.inner.coordinating(group).await?;
        let has_members = self
            .inner
            .membership
            .with_group(group, &replica, term, |hosted, _| {
                hosted.group.has_members() || !hosted.consumer.is_empty()
            });
        if has_members {
            return Err(DeleteGroupError::NotEmpty);
        }
        // A write of the group's last generation or emptying may still be under way: the
        // tombstones go after it.
        self.inner
            .membership
            .writes_done(group, super::membership::WRITES_WAIT)
            .await;
        let (offsets, has_metadata): (Vec<(String, i32)>, bool) = replica
            .with_groups(|s| {
                (
                    s.offsets(group).map(|(key, _)| key.clone()).collect(),
                    s.metadata(group).is_some() || s.consumer_group(group).is_some(),
                )
            })
            .unwrap_or_default();
        if offsets.is_empty() && !has_metadata {
            return Err(DeleteGroupError::NotFound);
        }
        let mut records = vec![
            GroupRecord::Group {
                group: group.to_string(),
                value: None,
            },
            GroupRecord::ConsumerGroup {
                group: group.to_string(),
                value: None,
            },
        ];
        records.extend(
            offsets
                .into_iter()
                .map(|(topic, partition)| GroupRecord::Offset {
                    key: OffsetKey {
                        group: group.to_string(),
                        topic,
                        partition,
                    },
                    value: None,
                }),
        );
        super::offsets::write_records(&replica, &records).await?;
        self.inner.membership.forget(group, term);
        Ok(())
    }

    /// Deletes `group`'s committed offsets of `partitions` as its coordinator: each, unless a
    /// member of the group subscribes to its topic.
    pub async fn delete_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), OffsetDeleteRefused>>, DeleteGroupError> {
        let (replica, term) = self.inner.coordinating(group).await?;
        let (subscribed, has_members): (Vec<String>, bool) =
            self.inner
                .membership
                .with_group(group, &replica, term, |hosted, _| {
                    let mut topics: Vec<String> = hosted
                        .group
                        .members()
                        .flat_map(|(_, _, metadata, _)| quipu_groups::subscribed_topics(metadata))
                        .collect();
                    topics.extend(
                        hosted
                            .consumer
                            .members()
                            .into_iter()
                            .flat_map(|m| m.subscribed_topics),
                    );
                    (
                        topics,
                        !hosted.group.is_empty() || !hosted.consumer.is_empty(),
                    )
                });
        let known = has_members
            || replica
                .with_groups(|s| s.groups().any(|g| g == group))
                .unwrap_or(false);
        if !known {
            return Err(DeleteGroupError::NotFound);
        }
        let results: Vec<Result<(), OffsetDeleteRefused>> = partitions
            .iter()
            .map(|(topic, _)| {
                if subscribed.contains(topic) {
                    Err(OffsetDeleteRefused::Subscribed)
                } else {
                    Ok(())
                }
            })
            .collect();
        let records: Vec<GroupRecord> = partitions
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.is_ok())
            .map(|((topic, partition), _)| GroupRecord::Offset {
                key: OffsetKey {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                },
                value: None,
            })
            .collect();
        if !records.is_empty() {
            super::offsets::write_records(&replica, &records).await?;
        }
        Ok(results)
    }
}
