//! KIP-848 groups on the coordinator: each group's `quipu_groups::consumer::ConsumerGroup`,
//! held with its classic side in `membership` for one term of the group's offsets partition.
//! The coordinator assigns the partitions (assignors `uniform` and `range`). A heartbeat that
//! changed the group (members, epochs, assignments) is answered only once the group's new state
//! is committed as a record of the offsets partition (key type 2), so a new coordinator starts
//! the group where the members are, and they go on without rejoining.

use quipu_groups::consumer::{ConsumerError, Heartbeat, HeartbeatReply, MemberView};

use super::CoordinatorError;
use crate::node::NodeHandle;

/// A KIP-848 group as described (ConsumerGroupDescribe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    /// Kafka's state name (Empty, Assigning, Reconciling, Stable).
    pub state: &'static str,
    /// The group epoch.
    pub group_epoch: i32,
    /// The target assignment's epoch.
    pub assignment_epoch: i32,
    /// The assignor in use.
    pub assignor: &'static str,
    /// The members.
    pub members: Vec<MemberView>,
}

impl NodeHandle {
    /// Handles a KIP-848 heartbeat as `group`'s coordinator; also returns the heartbeat
    /// interval members should keep, in ms. An empty member id gets a new one.
    pub async fn consumer_heartbeat(
        &self,
        group: &str,
        mut request: Heartbeat,
    ) -> Result<(HeartbeatReply, i32), CoordinatorError> {
        let (replica, term) = self.inner.coordinating(group).await?;
        if request.member_id.is_empty() {
            request.member_id = uuid::Uuid::new_v4().to_string();
        }
        let limits = self.inner.config.groups.consumer;
        let counts = |topic: &str| {
            self.inner.metadata.with_metadata(|m| {
                m.topic(topic)
                    .filter(|t| t.name != quipu_groups::OFFSETS_TOPIC)
                    .and_then(|t| u32::try_from(t.partitions.len()).ok())
            })
        };
        let (reply, changed) = self
            .inner
            .membership
            .with_group(group, &replica, term, |hosted, now| {
                if !hosted.group.is_empty() {
                    return Err(ConsumerError::ClassicGroup);
                }
                let before = hosted.consumer.record();
                let reply = hosted.consumer.heartbeat(request, &limits, &counts, now)?;
                let changed = hosted
                    .consumer
                    .changed_since(&before)
                    .map(|record| (record, self.inner.membership.writing(group)));
                Ok((reply, changed))
            })
            .map_err(CoordinatorError::Consumer)?;
        if let Some((record, _writing)) = changed {
            let record = quipu_groups::GroupRecord::ConsumerGroup {
                group: group.to_string(),
                value: Some(record),
            };
            super::membership::write_state(&replica, record).await?;
        }
        Ok((reply, limits.heartbeat_interval_ms))
    }

    /// Describes a KIP-848 group as its coordinator (`None`: no such group with members).
    pub async fn describe_consumer_group(
        &self,
        group: &str,
    ) -> Result<Option<ConsumerGroupDescription>, CoordinatorError> {
        let (replica, term) = self.inner.coordinating(group).await?;
        Ok(self
            .inner
            .membership
            .with_group(group, &replica, term, |hosted, _| {
                let g = &hosted.consumer;
                (!g.is_empty()).then(|| ConsumerGroupDescription {
                    state: g.state_name(),
                    group_epoch: g.group_epoch(),
                    assignment_epoch: g.assignment_epoch(),
                    assignor: g.assignor(),
                    members: g.members(),
                })
            }))
    }
}
