//! [`ConsumerGroup`]: one group under the KIP-848 consumer protocol (Kafka's
//! ConsumerGroupHeartbeat, and Quipu's gRPC group heartbeat), as a pure state machine. The
//! coordinator assigns partitions itself (assignors `uniform` and `range`) and hands them out
//! incrementally: a partition goes to its new owner only once its previous owner released it.
//!
//! Epochs (Kafka's): the **group epoch** rises when membership, subscriptions or the partition
//! counts of subscribed topics change; then the **target assignment** is recomputed for that
//! epoch. Each member has a **member epoch**: the target epoch it has reconciled to. A member
//! that holds partitions its target no longer includes keeps its epoch until a heartbeat shows
//! it released them (`UnrevokedPartitions`); then it moves to the target epoch and gets its new
//! partitions, except those another member still holds (`UnreleasedPartitions`, given later).
//!
//! Time comes in as milliseconds of a monotonic clock and topic partition counts from the
//! caller; member ids too (the caller makes them unique).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// The server-side assignors.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// Why a heartbeat is refused (Kafka's error of the same name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerError {
    /// The member id is not one of the group's (rejoin with epoch 0).
    #[error("unknown member id")]
    UnknownMemberId,
    /// The member epoch is not the member's (rejoin with epoch 0).
    #[error("member epoch {asked} is not the member's ({current})")]
    FencedMemberEpoch {
        /// Asked.
        asked: i32,
        /// The member's.
        current: i32,
    },
    /// A request the protocol does not allow (a join without subscription or rebalance timeout).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The assignor named is not one of [`ASSIGNORS`].
    #[error("unsupported assignor {0}")]
    UnsupportedAssignor(String),
    /// The group has its most members.
    #[error("the group has its most members ({0})")]
    GroupMaxSizeReached(usize),
    /// A static member's instance id is held by another live member.
    #[error("the instance id is in use by another member")]
    UnreleasedInstanceId,
    /// A static member's instance id belongs to another member id.
    #[error("the instance id belongs to another member")]
    FencedInstanceId,
    /// An offset commit names another epoch than the member's (Kafka's STALE_MEMBER_EPOCH).
    #[error("member epoch {asked} is not the member's ({current})")]
    StaleMemberEpoch {
        /// Asked.
        asked: i32,
        /// The member's.
        current: i32,
    },
    /// The group uses the classic protocol (Kafka's GROUP_ID_NOT_FOUND for a KIP-848 member).
    #[error("the group uses the classic protocol")]
    ClassicGroup,
}

/// A heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// The member id (the client's, or the caller's new id for one that sent none).
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member to leave for now; else its epoch.
    pub member_epoch: i32,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// Rebalance timeout, in ms (-1: unchanged).
    pub rebalance_timeout_ms: i32,
    /// Subscribed topic names (`None`: unchanged).
    pub subscribed_topics: Option<Vec<String>>,
    /// The assignor asked for (`None`: unchanged, or the default).
    pub server_assignor: Option<String>,
    /// The partitions the member holds now (`None`: unchanged).
    pub owned: Option<Assignment>,
    /// The client's id (for describing).
    pub client_id: String,
    /// The client's address (for describing).
    pub client_host: String,
}

/// A heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The member id.
    pub member_id: String,
    /// The member's epoch now (-1 after leaving).
    pub member_epoch: i32,
    /// The partitions the member should hold, when they changed (or on a join or full request).
    pub assignment: Option<Assignment>,
}

/// A member's reconciliation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// At the target epoch with every partition of its target.
    Stable,
    /// Must release partitions its target no longer holds.
    UnrevokedPartitions,
    /// At the target epoch, waiting for partitions other members still hold.
    UnreleasedPartitions,
}

/// The group's bounds and timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLimits {
    /// A member not heard from for this long is removed, in ms (Kafka's
    /// `group.consumer.session.timeout.ms`).
    pub session_timeout_ms: i32,
    /// How often members should heartbeat, in ms (`group.consumer.heartbeat.interval.ms`).
    pub heartbeat_interval_ms: i32,
    /// Most members of one group.
    pub members_max: usize,
}

impl Default for ConsumerLimits {
    fn default() -> Self {
        ConsumerLimits {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            members_max: 1_000,
        }
    }
}

/// One member as the group describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Its id.
    pub member_id: String,
    /// Its instance id.
    pub instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// Its address.
    pub client_host: String,
    /// Its epoch.
    pub member_epoch: i32,
    /// Its subscription.
    pub subscribed_topics: Vec<String>,
    /// What it holds now.
    pub assigned: Assignment,
    /// What it is to hold.
    pub target: Assignment,
    /// Its reconciliation state.
    pub state: MemberState,
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    subscribed: Vec<String>,
    assignor: Option<String>,
    epoch: i32,
    previous_epoch: i32,
    state: MemberState,
    assigned: Assignment,
    revoking: Assignment,
    heard_ms: u64,
    /// When the member must have released its revoked partitions.
    revoke_deadline_ms: Option<u64>,
    /// The assignment last sent to it.
    sent: Option<Assignment>,
}

/// A KIP-848 group as its record keeps it (key type 2 of `docs/format/group-records.md`): what a
/// new coordinator needs to go on without members rejoining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroupRecord {
    /// Rises with every record written for the group; a replica keeps the highest.
    pub version: u64,
    /// The group epoch.
    pub group_epoch: i32,
    /// The target assignment's epoch.
    pub assignment_epoch: i32,
    /// The partition counts of the subscribed topics the target was computed for.
    pub topics: BTreeMap<String, u32>,
    /// The members.
    pub members: Vec<ConsumerMemberRecord>,
}

/// One member of a [`ConsumerGroupRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMemberRecord {
    /// Its id.
    pub member_id: String,
    /// Its instance id.
    pub instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// Its address.
    pub client_host: String,
    /// Its rebalance timeout, in ms.
    pub rebalance_timeout_ms: i32,
    /// Its subscription.
    pub subscribed: Vec<String>,
    /// The assignor it asked for.
    pub assignor: Option<String>,
    /// Its epoch.
    pub epoch: i32,
    /// Its previous epoch.
    pub previous_epoch: i32,
    /// What it holds.
    pub assigned: Assignment,
    /// What it must release.
    pub revoking: Assignment,
    /// Its target.
    pub target: Assignment,
}

/// One consumer group (KIP-848).
#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    /// The version of the last record written (or read) for the group.
    version: u64,
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    /// Each member's target assignment (of `assignment_epoch`).
    target: BTreeMap<String, Assignment>,
    /// The partition counts of the subscribed topics the target was computed for.
    topics: BTreeMap<String, u32>,
}

impl ConsumerGroup {
    /// An empty group.
    pub fn new() -> ConsumerGroup {
        ConsumerGroup::default()
    }

    /// What a record keeps of the group now (at the current version).
    pub fn record(&self) -> ConsumerGroupRecord {
        ConsumerGroupRecord {
            version: self.version,
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            topics: self.topics.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| ConsumerMemberRecord {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed: m.subscribed.clone(),
                    assignor: m.assignor.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    assigned: m.assigned.clone(),
                    revoking: m.revoking.clone(),
                    target: self.target.get(id).cloned().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// The record to write if the group changed since `before` (a record taken earlier): the
    /// current state at the next version. `None` if nothing a record keeps changed.
    pub fn changed_since(&mut self, before: &ConsumerGroupRecord) -> Option<ConsumerGroupRecord> {
        let now = self.record();
        if now == *before {
            return None;
        }
        self.version += 1;
        Some(ConsumerGroupRecord {
            version: self.version,
            ..now
        })
    }

    /// The group as its record kept it, at `now_ms` (members' sessions start now; their
    /// topics' partition counts are learnt again at the next heartbeat).
    pub fn from_record(record: &ConsumerGroupRecord, now_ms: u64) -> ConsumerGroup {
        let mut group = ConsumerGroup {
            version: record.version,
            group_epoch: record.group_epoch,
            assignment_epoch: record.assignment_epoch,
            ..ConsumerGroup::default()
        };
        for m in &record.members {
            group.target.insert(m.member_id.clone(), m.target.clone());
            let state = if !m.revoking.is_empty() {
                MemberState::UnrevokedPartitions
            } else if m.assigned != m.target {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
            group.members.insert(
                m.member_id.clone(),
                Member {
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed: m.subscribed.clone(),
                    assignor: m.assignor.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    state,
                    assigned: m.assigned.clone(),
                    revoking: m.revoking.clone(),
                    heard_ms: now_ms,
                    revoke_deadline_ms: (!m.revoking.is_empty())
                        .then(|| now_ms + u64::try_from(m.rebalance_timeout_ms).unwrap_or(0)),
                    sent: Some(m.assigned.clone()),
                },
            );
        }
        group.topics = record.topics.clone();
        group
    }

    /// The group epoch.
    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    /// The target assignment's epoch.
    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    /// Whether the group has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kafka's state name: Empty, Assigning (target behind the group epoch), Reconciling (some
    /// member not at the target), Stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor the group uses: the one most members ask for, else the first.
    pub fn assignor(&self) -> &'static str {
        let mut votes = [0usize; ASSIGNORS.len()];
        for member in self.members.values() {
            if let Some(at) = member
                .assignor
                .as_deref()
                .and_then(|a| ASSIGNORS.iter().position(|n| *n == a))
            {
                votes[at] += 1;
            }
        }
        let most = votes.iter().copied().max().unwrap_or(0);
        let at = votes.iter().position(|v| *v == most).unwrap_or(0);
        ASSIGNORS[at]
    }

    /// The members, as described.
    pub fn members(&self) -> Vec<MemberView> {
        self.members
            .iter()
            .map(|(id, m)| MemberView {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                member_epoch: m.epoch,
                subscribed_topics: m.subscribed.clone(),
                assigned: m.assigned.clone(),
                target: self.target.get(id).cloned().unwrap_or_default(),
                state: m.state,
            })
            .collect()
    }

    /// Checks an offset commit: from a member at its current epoch; a group without members
    /// takes commits of epoch < 0 (clients that assign partitions themselves).
    pub fn check_commit(
        &mut self,
        member_id: &str,
        epoch: i32,
        now_ms: u64,
    ) -> Result<(), ConsumerError> {
        if self.members.is_empty() && epoch < 0 {
            return Ok(());
        }
        let member = self
            .members
            .get_mut(member_id)
            .ok_or(ConsumerError::UnknownMemberId)?;
        if epoch != member.epoch {
            return Err(ConsumerError::StaleMemberEpoch {
                asked: epoch,
                current: member.epoch,
            });
        }
        member.heard_ms = now_ms;
        Ok(())
    }

    /// Handles a heartbeat at `now_ms`; `partitions` gives a topic's partition count (`None`: no
    /// such topic).
    pub fn heartbeat(
        &mut self,
        request: Heartbeat,
        limits: &ConsumerLimits,
        partitions: &dyn Fn(&str) -> Option<u32>,
        now_ms: u64,
    ) -> Result<HeartbeatReply, ConsumerError> {
        if let Some(assignor) = &request.server_assignor
            && !ASSIGNORS.contains(&assignor.as_str())
        {
            return Err(ConsumerError::UnsupportedAssignor(assignor.clone()));
        }
        let id = request.member_id.clone();
        if request.member_epoch < 0 {
            // Leaving (-1), or a static member leaving for now (-2): its partitions go to the
            // others.
            if self.members.remove(&id).is_some() {
                self.target.remove(&id);
                self.group_epoch += 1;
            }
            return Ok(HeartbeatReply {
                member_id: id,
                member_epoch: request.member_epoch,
                assignment: None,
            });
        }
        let full = request.subscribed_topics.is_some() && request.owned.is_some();
        let mut bump = false;
        if request.member_epoch == 0 {
            bump = self.join(&request, limits, now_ms)?;
        } else {
            let member = self
                .members
                .get(&id)
                .ok_or(ConsumerError::UnknownMemberId)?;
            if request.instance_id.is_some() && member.instance_id != request.instance_id {
                return Err(ConsumerError::FencedInstanceId);
            }
            let lost_response = request.member_epoch == member.previous_epoch
                && request
                    .owned
                    .as_ref()
                    .is_some_and(|owned| is_subset(owned, &member.assigned));
            if request.member_epoch != member.epoch && !lost_response {
                return Err(ConsumerError::FencedMemberEpoch {
                    asked: request.member_epoch,
                    current: member.epoch,
                });
            }
        }
        let member = self.members.get_mut(&id).expect("joined or checked above");
        member.heard_ms = now_ms;
        if request.rebalance_timeout_ms >= 0 {
            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        }
        if request.server_assignor.is_some() {
            member.assignor = request.server_assignor.clone();
        }
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        if let Some(topics) = &request.subscribed_topics {
            let mut topics = topics.clone();
            topics.sort_unstable();
            topics.dedup();
            if topics != member.subscribed {
                member.subscribed = topics;
                bump = true;
            }
        }
        if let Some(owned) = &request.owned {
            // What the member released: revoked partitions it no longer holds are free.
            for (topic, held) in &mut member.revoking {
                let still = owned.get(topic);
                held.retain(|p| still.is_some_and(|s| s.contains(p)));
            }
            member.revoking.retain(|_, held| !held.is_empty());
        }
        // The partition counts of every subscribed topic, as they are now.
        let subscribed: BTreeSet<String> = self
            .members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect();
        let counts: BTreeMap<String, u32> = subscribed
            .into_iter()
            .filter_map(|t| partitions(&t).map(|n| (t, n)))
            .collect();
        if counts != self.topics {
            self.topics = counts;
            bump = true;
        }
        if bump {
            self.group_epoch += 1;
        }
        if self.assignment_epoch < self.group_epoch {
            self.compute_target();
        }
        self.reconcile(&id, now_ms);
        let member = self.members.get_mut(&id).expect("still there");
        let changed = member.sent.as_ref() != Some(&member.assigned);
        let assignment = (request.member_epoch == 0 || full || changed).then(|| {
            member.sent = Some(member.assigned.clone());
            member.assigned.clone()
        });
        Ok(HeartbeatReply {
            member_id: id,
            member_epoch: member.epoch,
            assignment,
        })
    }

    /// Removes members whose session ran out, or that did not release revoked partitions
    /// within their rebalance timeout. Returns whether any went.
    pub fn tick(&mut self, limits: &ConsumerLimits, now_ms: u64) -> bool {
        let session = u64::try_from(limits.session_timeout_ms).unwrap_or(0);
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                now_ms >= m.heard_ms + session || m.revoke_deadline_ms.is_some_and(|d| now_ms >= d)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.members.remove(id);
            self.target.remove(id);
        }
        if !gone.is_empty() {
            self.group_epoch += 1;
        }
        !gone.is_empty()
    }

    /// Admits a joining member (epoch 0); returns whether it is new to the group.
    fn join(
        &mut self,
        request: &Heartbeat,
        limits: &ConsumerLimits,
        now_ms: u64,
    ) -> Result<bool, ConsumerError> {
        if request.rebalance_timeout_ms < 0 {
            return Err(ConsumerError::InvalidRequest(
                "a joining member must give its rebalance timeout",
            ));
        }
        if request.subscribed_topics.is_none() {
            return Err(ConsumerError::InvalidRequest(
                "a joining member must give its subscription",
            ));
        }
        if request.owned.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(ConsumerError::InvalidRequest(
                "a joining member owns no partitions",
            ));
        }
        let id = &request.member_id;
        // A static member that comes back takes its instance's place and assignment.
        if let Some(instance) = &request.instance_id {
            let holder = self
                .members
                .iter()
                .find(|(_, m)| m.instance_id.as_deref() == Some(instance.as_str()))
                .map(|(id, _)| id.clone());
            if let Some(old) = holder
                && old != *id
            {
                let previous = self.members.remove(&old).expect("found");
                if previous.epoch >= 0 && now_ms < previous.heard_ms + 1000 {
                    self.members.insert(old, previous);
                    return Err(ConsumerError::UnreleasedInstanceId);
                }
                if let Some(target) = self.target.remove(&old) {
                    self.target.insert(id.clone(), target);
                }
                let mut member = previous;
                member.epoch = 0;
                member.previous_epoch = 0;
                member.assigned.clear();
                member.revoking.clear();
                member.sent = None;
                self.members.insert(id.clone(), member);
                return Ok(false);
            }
        }
        match self.members.get_mut(id) {
            Some(member) => {
                // A known member rejoining (after a fence, say): it starts over, holding nothing.
                member.epoch = 0;
                member.previous_epoch = 0;
                member.assigned.clear();
                member.revoking.clear();
                member.sent = None;
            }
            None => {
                if self.members.len() >= limits.members_max {
                    return Err(ConsumerError::GroupMaxSizeReached(limits.members_max));
                }
                self.members.insert(
                    id.clone(),
                    Member {
                        instance_id: request.instance_id.clone(),
                        client_id: request.client_id.clone(),
                        client_host: request.client_host.clone(),
                        rebalance_timeout_ms: request.rebalance_timeout_ms,
                        subscribed: Vec::new(),
                        assignor: None,
                        epoch: 0,
                        previous_epoch: 0,
                        state: MemberState::Stable,
                        assigned: Assignment::new(),
                        revoking: Assignment::new(),
                        heard_ms: now_ms,
                        revoke_deadline_ms: None,
                        sent: None,
                    },
                );
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Recomputes the target assignment for the group epoch.
    fn compute_target(&mut self) {
        let subscriptions: BTreeMap<String, (Option<String>, Vec<String>)> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), (m.instance_id.clone(), m.subscribed.clone())))
            .collect();
        self.target = match self.assignor() {
            "range" => range(&subscriptions, &self.topics),
            _ => uniform(&subscriptions, &self.topics, &self.target),
        };
        self.assignment_epoch = self.group_epoch;
    }

    /// Moves member `id` towards its target (Kafka's CurrentAssignmentBuilder).
    fn reconcile(&mut self, id: &str, now_ms: u64) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        // Who else holds (or still releases) each partition.
        let mut held_elsewhere: BTreeSet<(String, i32)> = BTreeSet::new();
        for (other, m) in &self.members {
            if other != id {
                for (topic, parts) in m.assigned.iter().chain(m.revoking.iter()) {
                    held_elsewhere.extend(parts.iter().map(|p| (topic.clone(), *p)));
                }
            }
        }
        let epoch = self.assignment_epoch;
        let member = self.members.get_mut(id).expect("a member");
        if !member.revoking.is_empty() {
            // Still releasing: stays at its epoch.
            member.state = MemberState::UnrevokedPartitions;
            return;
        }
        // Partitions it holds that its target no longer has: revoke them first.
        let mut keep = Assignment::new();
        let mut revoke = Assignment::new();
        for (topic, parts) in &member.assigned {
            for p in parts {
                if target.get(topic).is_some_and(|t| t.contains(p)) {
                    keep.entry(topic.clone()).or_default().insert(*p);
                } else {
                    revoke.entry(topic.clone()).or_default().insert(*p);
                }
            }
        }
        if !revoke.is_empty() {
            member.assigned = keep;
            member.revoking = revoke;
            member.state = MemberState::UnrevokedPartitions;
            member.revoke_deadline_ms =
                Some(now_ms + u64::try_from(member.rebalance_timeout_ms).unwrap_or(0));
            return;
        }
        member.revoke_deadline_ms = None;
        if member.epoch != epoch {
            member.previous_epoch = member.epoch;
            member.epoch = epoch;
        }
        // Add what the target has and nobody else holds.
        let mut unreleased = false;
        for (topic, parts) in &target {
            for p in parts {
                if held_elsewhere.contains(&(topic.clone(), *p)) {
                    unreleased = true;
                } else {
                    member.assigned.entry(topic.clone()).or_default().insert(*p);
                }
            }
        }
        member.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
    }
}

fn is_subset(small: &Assignment, big: &Assignment) -> bool {
    small.iter().all(|(topic, parts)| {
        parts.is_empty() || big.get(topic).is_some_and(|b| parts.is_subset(b))
    })
}

/// Kafka's `uniform` assignor: every partition of a subscribed topic to one member subscribed
/// to it, counts balanced to within one where subscriptions allow, keeping each member's
/// previous partitions where it can (sticky).
fn uniform(
    members: &BTreeMap<String, (Option<String>, Vec<String>)>,
    topics: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    // Keep what is still valid.
    for (id, assignment) in previous {
        let Some((_, subscribed)) = members.get(id) else {
            continue;
        };
        for (topic, parts) in assignment {
            let Some(count) = topics.get(topic) else {
                continue;
            };
            if !subscribed.contains(topic) {
                continue;
            }
            for p in parts {
                if u32::try_from(*p).is_ok_and(|p| p < *count) {
                    owner
                        .entry((topic.clone(), *p))
                        .or_insert_with(|| id.clone());
                }
            }
        }
    }
    let mut counts: BTreeMap<String, usize> = members.keys().map(|id| (id.clone(), 0)).collect();
    for id in owner.values() {
        *counts.entry(id.clone()).or_default() += 1;
    }
    let eligible = |topic: &str| -> Vec<String> {
        members
            .iter()
            .filter(|(_, (_, subscribed))| subscribed.iter().any(|t| t == topic))
            .map(|(id, _)| id.clone())
            .collect()
    };
    // Place the rest on the least loaded eligible member.
    for (topic, count) in topics {
        let candidates = eligible(topic);
        if candidates.is_empty() {
            continue;
        }
        for p in 0..i32::try_from(*count).unwrap_or(i32::MAX) {
            let key = (topic.clone(), p);
            if owner.contains_key(&key) {
                continue;
            }
            let least = candidates
                .iter()
                .min_by_key(|id| (counts.get(*id).copied().unwrap_or(0), (*id).clone()))
                .expect("candidates");
            *counts.entry(least.clone()).or_default() += 1;
            owner.insert(key, least.clone());
        }
    }
    // Balance: move a partition from a member with two more than an eligible one, while any.
    let partitions: Vec<(String, i32)> = owner.keys().cloned().collect();
    let mut moved = true;
    let mut rounds = 0;
    while moved && rounds < partitions.len() + 1 {
        moved = false;
        rounds += 1;
        for key in &partitions {
            let from = owner[key].clone();
            let from_count = counts[&from];
            if let Some(to) = eligible(&key.0)
                .into_iter()
                .filter(|id| counts[id] + 1 < from_count)
                .min_by_key(|id| (counts[id], id.clone()))
            {
                *counts.get_mut(&from).expect("counted") -= 1;
                *counts.get_mut(&to).expect("counted") += 1;
                owner.insert(key.clone(), to);
                moved = true;
            }
        }
    }
    let mut target: BTreeMap<String, Assignment> = members
        .keys()
        .map(|id| (id.clone(), Assignment::new()))
        .collect();
    for ((topic, p), id) in owner {
        target
            .entry(id)
            .or_default()
            .entry(topic)
            .or_default()
            .insert(p);
    }
    target
}

/// Kafka's `range` assignor: per topic, its subscribers in (instance id, member id) order each
/// get a contiguous range of partitions, the first ones one more when they do not divide evenly.
fn range(
    members: &BTreeMap<String, (Option<String>, Vec<String>)>,
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, Assignment> {
    let mut target: BTreeMap<String, Assignment> = members
        .keys()
        .map(|id| (id.clone(), Assignment::new()))
        .collect();
    for (topic, count) in topics {
        let mut subscribers: Vec<(&Option<String>, &String)> = members
            .iter()
            .filter(|(_, (_, subscribed))| subscribed.contains(topic))
            .map(|(id, (instance, _))| (instance, id))
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort();
        let n = usize::try_from(*count).unwrap_or(0);
        let each = n / subscribers.len();
        let extra = n % subscribers.len();
        let mut next = 0usize;
        for (i, (_, id)) in subscribers.iter().enumerate() {
            let take = each + usize::from(i < extra);
            let parts = target.entry((*id).clone()).or_default();
            for p in next..next + take {
                parts
                    .entry(topic.clone())
                    .or_default()
                    .insert(i32::try_from(p).unwrap_or(i32::MAX));
            }
            next += take;
        }
    }
    target
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap

    use super::*;

    const LIMITS: ConsumerLimits = ConsumerLimits {
        session_timeout_ms: 10_000,
        heartbeat_interval_ms: 1_000,
        members_max: 10,
    };

    fn counts(topic: &str) -> Option<u32> {
        match topic {
            "t" => Some(4),
            "u" => Some(2),
            _ => None,
        }
    }

    fn join(id: &str, topics: &[&str]) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 5_000,
            subscribed_topics: Some(topics.iter().map(|t| t.to_string()).collect()),
            owned: Some(Assignment::new()),
            ..Heartbeat::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: &Assignment) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: Some(owned.clone()),
            ..Heartbeat::default()
        }
    }

    fn parts(list: &[i32]) -> Assignment {
        let mut a = Assignment::new();
        if !list.is_empty() {
            a.insert("t".into(), list.iter().copied().collect());
        }
        a
    }

    #[test]
    fn a_second_member_gets_its_partitions_once_the_first_released_them() {
        let mut group = ConsumerGroup::new();
        let a = group
            .heartbeat(join("a", &["t"]), &LIMITS, &counts, 0)
            .unwrap();
        assert_eq!(
            (a.member_epoch, a.assignment.clone()),
            (1, Some(parts(&[0, 1, 2, 3])))
        );
        let b = group
            .heartbeat(join("b", &["t"]), &LIMITS, &counts, 10)
            .unwrap();
        // b is at epoch 2 but its partitions are still a's.
        assert_eq!(
            (b.member_epoch, b.assignment.clone()),
            (2, Some(parts(&[])))
        );
        assert_eq!(group.state_name(), "Reconciling");
        // a is told to keep half (its epoch stays 1 until it releases the rest).
        let a = group
            .heartbeat(beat("a", 1, &parts(&[0, 1, 2, 3])), &LIMITS, &counts, 20)
            .unwrap();
        assert_eq!(a.member_epoch, 1);
        let kept = a.assignment.clone().unwrap();
        assert_eq!(kept["t"].len(), 2);
        // a released them: epoch 2.
        let a = group
            .heartbeat(beat("a", 1, &kept), &LIMITS, &counts, 30)
            .unwrap();
        assert_eq!(a.member_epoch, 2);
        // b now gets the other two.
        let b = group
            .heartbeat(beat("b", 2, &parts(&[])), &LIMITS, &counts, 40)
            .unwrap();
        let got = b.assignment.unwrap();
        assert_eq!(got["t"].len(), 2);
        assert!(got["t"].is_disjoint(&kept["t"]));
        assert_eq!(group.state_name(), "Stable");
        // Nothing changed: no assignment in the answer.
        let b = group
            .heartbeat(beat("b", 2, &got), &LIMITS, &counts, 50)
            .unwrap();
        assert_eq!(b.assignment, None);
    }

    #[test]
    fn a_group_read_back_from_its_record_goes_on_where_it_was() {
        let mut group = ConsumerGroup::new();
        let before = group.record();
        let a = group
            .heartbeat(join("a", &["t"]), &LIMITS, &counts, 0)
            .unwrap();
        let record = group
            .changed_since(&before)
            .expect("a join changes the group");
        assert_eq!(record.version, 1);
        assert!(
            group.changed_since(&group.record()).is_none(),
            "nothing more changed"
        );
        // Through its encoding, as the offsets topic keeps it.
        let (key, value) = crate::GroupRecord::ConsumerGroup {
            group: "g".into(),
            value: Some(record.clone()),
        }
        .encode()
        .unwrap();
        let crate::GroupRecord::ConsumerGroup {
            value: Some(read), ..
        } = crate::GroupRecord::decode(Some(&key), value.as_deref()).unwrap()
        else {
            panic!("not a consumer group record")
        };
        assert_eq!(read, record);
        // A new coordinator: the member goes on at its epoch, holding what it held.
        let mut loaded = ConsumerGroup::from_record(&read, 100_000);
        let again = loaded
            .heartbeat(
                beat("a", a.member_epoch, &parts(&[0, 1, 2, 3])),
                &LIMITS,
                &counts,
                100_100,
            )
            .unwrap();
        assert_eq!(again.member_epoch, a.member_epoch);
        assert_eq!(again.assignment, None, "nothing changed for it");
        assert_eq!(loaded.group_epoch(), group.group_epoch());
        // The next record's version is above the one read.
        let before = loaded.record();
        loaded
            .heartbeat(join("b", &["t"]), &LIMITS, &counts, 100_200)
            .unwrap();
        assert_eq!(loaded.changed_since(&before).unwrap().version, 2);
    }

    #[test]
    fn epochs_are_fenced_and_a_lost_answer_is_forgiven() {
        let mut group = ConsumerGroup::new();
        group
            .heartbeat(join("a", &["t"]), &LIMITS, &counts, 0)
            .unwrap();
        assert!(matches!(
            group.heartbeat(beat("a", 7, &parts(&[])), &LIMITS, &counts, 1),
            Err(ConsumerError::FencedMemberEpoch {
                asked: 7,
                current: 1
            })
        ));
        assert_eq!(
            group.heartbeat(beat("zz", 1, &parts(&[])), &LIMITS, &counts, 1),
            Err(ConsumerError::UnknownMemberId)
        );
        // A joined with epoch 0 -> 1; b joins (epoch 2 for a once reconciled).
        group
            .heartbeat(join("b", &["t"]), &LIMITS, &counts, 2)
            .unwrap();
        let a = group
            .heartbeat(beat("a", 1, &parts(&[0, 1, 2, 3])), &LIMITS, &counts, 3)
            .unwrap();
        let kept = a.assignment.unwrap();
        let a = group
            .heartbeat(beat("a", 1, &kept), &LIMITS, &counts, 4)
            .unwrap();
        assert_eq!(a.member_epoch, 2);
        // The answer was lost: a heartbeats with its previous epoch, holding a subset. Fine.
        let again = group
            .heartbeat(beat("a", 1, &kept), &LIMITS, &counts, 5)
            .unwrap();
        assert_eq!(again.member_epoch, 2);
        // Holding more than its assignment at the old epoch is fenced.
        assert!(matches!(
            group.heartbeat(beat("a", 1, &parts(&[0, 1, 2, 3])), &LIMITS, &counts, 6),
            Err(ConsumerError::FencedMemberEpoch { .. })
        ));
    }

    #[test]
    fn members_that_leave_or_go_silent_give_their_partitions_back() {
        let mut group = ConsumerGroup::new();
        group
            .heartbeat(join("a", &["t"]), &LIMITS, &counts, 0)
            .unwrap();
        let left = group
            .heartbeat(
                Heartbeat {
                    member_id: "a".into(),
                    member_epoch: -1,
                    ..Heartbeat::default()
                },
                &LIMITS,
                &counts,
                1,
            )
            .unwrap();
        assert_eq!(left.member_epoch, -1);
        assert!(group.is_empty());
        group
            .heartbeat(join("b", &["t"]), &LIMITS, &counts, 100)
            .unwrap();
        let c = group
            .heartbeat(join("c", &["t"]), &LIMITS, &counts, 100)
            .unwrap();
        assert!(!group.tick(&LIMITS, 5_000));
        // c heartbeats, b does not: b is removed after its session.
        let c = group
            .heartbeat(
                beat("c", c.member_epoch, &parts(&[])),
                &LIMITS,
                &counts,
                9_000,
            )
            .unwrap();
        assert!(group.tick(&LIMITS, 10_100));
        let c = group
            .heartbeat(
                beat("c", c.member_epoch, &parts(&[])),
                &LIMITS,
                &counts,
                10_200,
            )
            .unwrap();
        assert_eq!(c.assignment, Some(parts(&[0, 1, 2, 3])));
    }

    #[test]
    fn a_member_that_never_releases_is_removed_after_its_rebalance_timeout() {
        let mut group = ConsumerGroup::new();
        group
            .heartbeat(join("a", &["t"]), &LIMITS, &counts, 0)
            .unwrap();
        group
            .heartbeat(join("b", &["t"]), &LIMITS, &counts, 0)
            .unwrap();
        group
            .heartbeat(beat("a", 1, &parts(&[0, 1, 2, 3])), &LIMITS, &counts, 100)
            .unwrap();
        // a keeps heartbeating but never releases: removed at 100 + 5_000.
        group
            .heartbeat(beat("a", 1, &parts(&[0, 1, 2, 3])), &LIMITS, &counts, 4_000)
            .unwrap();
        assert!(!group.tick(&LIMITS, 5_000));
        assert!(group.tick(&LIMITS, 5_100));
        assert!(group.members().iter().all(|m| m.member_id == "b"));
    }

    #[test]
    fn joins_are_checked() {
        let mut group = ConsumerGroup::new();
        let mut no_timeout = join("a", &["t"]);
        no_timeout.rebalance_timeout_ms = -1;
        assert!(matches!(
            group.heartbeat(no_timeout, &LIMITS, &counts, 0),
            Err(ConsumerError::InvalidRequest(_))
        ));
        let mut assignor = join("a", &["t"]);
        assignor.server_assignor = Some("sticky".into());
        assert_eq!(
            group.heartbeat(assignor, &LIMITS, &counts, 0),
            Err(ConsumerError::UnsupportedAssignor("sticky".into()))
        );
    }

    #[test]
    fn assignors_balance_and_keep_ranges() {
        let members: BTreeMap<String, (Option<String>, Vec<String>)> = ["a", "b", "c"]
            .iter()
            .map(|id| {
                (
                    id.to_string(),
                    (None, vec!["t".to_string(), "u".to_string()]),
                )
            })
            .collect();
        let topics: BTreeMap<String, u32> = [("t".to_string(), 4), ("u".to_string(), 2)].into();
        let uniform = uniform(&members, &topics, &BTreeMap::new());
        let sizes: Vec<usize> = uniform
            .values()
            .map(|a| a.values().map(BTreeSet::len).sum())
            .collect();
        assert_eq!(sizes, [2, 2, 2]);
        // Sticky: adding a member moves as little as needed.
        let mut more = members.clone();
        more.insert("d".into(), (None, vec!["t".into(), "u".into()]));
        let after = super::uniform(&more, &topics, &uniform);
        let kept: usize = ["a", "b", "c"]
            .iter()
            .map(|id| {
                after[*id]
                    .iter()
                    .map(|(t, p)| {
                        p.intersection(uniform[*id].get(t).unwrap_or(&BTreeSet::new()))
                            .count()
                    })
                    .sum::<usize>()
            })
            .sum();
        assert!(kept >= 4, "kept {kept} of 6");
        let range = range(&members, &topics);
        assert_eq!(range["a"]["t"], [0, 1].into());
        assert_eq!(range["b"]["t"], [2].into());
        assert_eq!(range["c"]["t"], [3].into());
        assert_eq!(range["a"]["u"], [0].into());
    }
}
