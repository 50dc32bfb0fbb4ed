//! [`ClassicGroup`]: one group's membership under Kafka's classic protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup), as a pure state machine: time comes in as milliseconds of a monotonic
//! clock, member ids come from the caller, and requests that must wait for the rest of the group
//! (a join until the join barrier, a follower's sync until the leader's assignment) are answered
//! later, through the [`Completions`] of whichever call completes them.
//!
//! States (Kafka's): `Empty` (no members) → `PreparingRebalance` (the join barrier: waiting for
//! every member to (re)join, at most the largest rebalance timeout; a new group first waits
//! the initial rebalance delay for more members) → `CompletingRebalance` (a new generation; the
//! members got their join answers, the leader the member list; waiting for the leader's
//! assignment) → `Stable` (everyone synced). A member leaving, expiring or changing its
//! protocols, or a new member joining, goes back to `PreparingRebalance`.
//!
//! The coordinator relays assignments unchanged: the assignors run in the clients (range,
//! roundrobin, cooperative-sticky all look the same from here).

use std::collections::BTreeMap;

use crate::record::{GroupMetadata, MEMBER_BYTES_MAX, MemberMetadata, NAME_BYTES_MAX};

/// Why a group request is refused (Kafka's error of the same name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The member id is not one of the group's.
    #[error("unknown member id")]
    UnknownMemberId,
    /// The request names another generation than the group's.
    #[error("generation {asked} is not the group's ({current})")]
    IllegalGeneration {
        /// The generation the request named.
        asked: i32,
        /// The group's.
        current: i32,
    },
    /// The group is rebalancing: rejoin.
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// A first JoinGroup (v4+) gets a member id to rejoin with.
    #[error("a member id is required: rejoin with {0}")]
    MemberIdRequired(String),
    /// A static member's instance id belongs to another member id.
    #[error("the instance id belongs to another member")]
    FencedInstanceId,
    /// The protocol type or protocols do not match the group's.
    #[error("the member's protocols are not the group's")]
    InconsistentGroupProtocol,
    /// The session timeout is outside the coordinator's bounds.
    #[error("session timeout {asked} ms is outside {min} to {max} ms")]
    InvalidSessionTimeout {
        /// Asked.
        asked: i32,
        /// Smallest allowed.
        min: i32,
        /// Largest allowed.
        max: i32,
    },
    /// The group has its most members.
    #[error("the group has its most members ({0})")]
    GroupMaxSizeReached(usize),
    /// A field is longer than the group's records can keep (Kafka's INVALID_REQUEST).
    #[error("{0} is too long for the group's records")]
    TooLong(&'static str),
}

/// The coordinator's bounds and delays for every group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Smallest session timeout a member may ask for, in ms (Kafka's
    /// `group.min.session.timeout.ms`).
    pub session_timeout_min_ms: i32,
    /// Largest session timeout, in ms (`group.max.session.timeout.ms`).
    pub session_timeout_max_ms: i32,
    /// How long a new group waits for more members before its first rebalance completes, in ms
    /// (`group.initial.rebalance.delay.ms`); each new member extends it, up to the rebalance
    /// timeout.
    pub initial_rebalance_delay_ms: i32,
    /// Most members of one group (`group.max.size`).
    pub members_max: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            session_timeout_min_ms: 6_000,
            session_timeout_max_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            members_max: 1_000,
        }
    }
}

/// A JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The member id the client sent ("" for a new member).
    pub member_id: String,
    /// The id this coordinator gives a new member (the caller makes it unique).
    pub new_member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// The client's id (DescribeGroups shows it).
    pub client_id: String,
    /// The address the client joined from (DescribeGroups shows it).
    pub client_host: String,
    /// Session timeout, in ms.
    pub session_timeout_ms: i32,
    /// Rebalance timeout, in ms (the session timeout for JoinGroup v0).
    pub rebalance_timeout_ms: i32,
    /// "consumer" for consumers.
    pub protocol_type: String,
    /// The assignors the member supports, in its order of preference, with its metadata for
    /// each.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// Whether a new member must first get its id and rejoin (JoinGroup v4+).
    pub require_known_member_id: bool,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    /// `None`: joined.
    pub error: Option<GroupError>,
    /// The generation joined (-1 on an error).
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The assignor chosen.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// For the leader: every member (id, instance id, metadata for the chosen protocol).
    pub members: Vec<(String, Option<String>, Vec<u8>)>,
}

impl JoinReply {
    /// A refusal: `error`, no generation, for `member_id`.
    pub fn refused(error: GroupError, member_id: &str) -> JoinReply {
        JoinReply {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup answer: the member's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReply {
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The assignor chosen.
    pub protocol_name: Option<String>,
    /// The member's assignment, as the leader wrote it.
    pub assignment: Vec<u8>,
}

/// What a join or a sync gets now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// The answer.
    Now(T),
    /// Answered later, in some call's [`Completions`] (or dropped when the group goes).
    Wait,
}

/// Answers to requests that waited, completed by a call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Completions {
    /// Waiting joins, by member id.
    pub joins: Vec<(String, JoinReply)>,
    /// Waiting syncs, by member id.
    pub syncs: Vec<(String, Result<SyncReply, GroupError>)>,
}

impl Completions {
    /// Whether nothing was completed.
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.syncs.is_empty()
    }
}

/// The group's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for the members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
}

impl GroupState {
    /// Kafka's name of the state (DescribeGroups).
    pub fn kafka_name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
    /// When the member was last heard from (a request of any kind).
    heard_ms: u64,
    /// It has a join waiting at the barrier.
    joining: bool,
    /// It has a sync waiting for the leader's assignment.
    syncing: bool,
}

/// One group's classic membership.
#[derive(Debug, Clone)]
pub struct ClassicGroup {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until their owners rejoin (or the
    /// session timeout passes: the value is the deadline).
    pending: BTreeMap<String, u64>,
    /// When the join barrier gives up on members that did not rejoin.
    rebalance_deadline_ms: u64,
    /// A new group's barrier does not complete before this (initial rebalance delay).
    initial_delay_until_ms: u64,
    /// When members that did not sync in `CompletingRebalance` are dropped.
    sync_deadline_ms: u64,
    /// The group reached a state worth keeping (stable, or empty) since the last
    /// [`ClassicGroup::take_metadata`].
    dirty: bool,
}

impl Default for ClassicGroup {
    fn default() -> Self {
        ClassicGroup::new()
    }
}

impl ClassicGroup {
    /// An empty group at generation 0.
    pub fn new() -> ClassicGroup {
        ClassicGroup {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: 0,
            sync_deadline_ms: 0,
            dirty: false,
        }
    }

    /// The group as its metadata record kept it, at `now_ms`: stable with those members (their
    /// sessions start now), or empty at that generation. A new coordinator starts from this.
    pub fn from_metadata(metadata: &GroupMetadata, now_ms: u64) -> ClassicGroup {
        let mut group = ClassicGroup::new();
        group.generation = metadata.generation;
        if metadata.members.is_empty() {
            return group;
        }
        group.state = GroupState::Stable;
        group.protocol_type = Some(metadata.protocol_type.clone());
        group.protocol_name = Some(metadata.protocol_name.clone());
        group.leader = Some(metadata.leader.clone());
        for m in &metadata.members {
            group.members.insert(
                m.member_id.clone(),
                Member {
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![(metadata.protocol_name.clone(), m.subscription.clone())],
                    assignment: m.assignment.clone(),
                    heard_ms: now_ms,
                    joining: false,
                    syncing: false,
                },
            );
        }
        group
    }

    /// The group's metadata to write, if it became stable or empty since the last call: each
    /// new generation's members and assignments, and each time it empties.
    pub fn take_metadata(&mut self) -> Option<GroupMetadata> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let protocol_name = self.protocol_name.clone().unwrap_or_default();
        Some(GroupMetadata {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol_name: protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberMetadata {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscription: m
                        .protocols
                        .iter()
                        .find(|(p, _)| *p == protocol_name)
                        .map(|(_, metadata)| metadata.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Starts a rebalance now (the group's last state could not be written: a new generation
    /// will be).
    pub fn force_rebalance(&mut self, now_ms: u64) -> Completions {
        let mut done = Completions::default();
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now_ms, &mut done);
        }
        done
    }

    /// The state.
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// The generation.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The protocol type, once a member joined.
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    /// The assignor of the current generation.
    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    /// The leader's member id.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Whether the group has no members and no member ids pending.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Whether the group has members. Member ids pending (handed out with MEMBER_ID_REQUIRED,
    /// not joined with yet) are not members: the group's state is Empty without members, and,
    /// as in Kafka, such a group can be deleted (the pending ids go with it; a join with one
    /// is then refused as an unknown member, and the client joins afresh).
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// Each member's client id and host, by member id.
    pub fn clients(&self) -> impl Iterator<Item = (&str, &str, &str)> + '_ {
        self.members
            .iter()
            .map(|(id, m)| (id.as_str(), m.client_id.as_str(), m.client_host.as_str()))
    }

    /// The members: id, instance id, metadata for the current protocol, assignment.
    pub fn members(&self) -> impl Iterator<Item = (&str, Option<&str>, &[u8], &[u8])> + '_ {
        self.members.iter().map(|(id, m)| {
            let metadata = self
                .protocol_name
                .as_deref()
                .and_then(|name| m.protocols.iter().find(|(p, _)| p == name))
                .map_or(&[][..], |(_, metadata)| metadata.as_slice());
            (
                id.as_str(),
                m.instance_id.as_deref(),
                metadata,
                m.assignment.as_slice(),
            )
        })
    }

    /// The rebalance timeout member `id` joined with, in ms.
    pub fn rebalance_timeout_ms(&self, id: &str) -> Option<i32> {
        self.members.get(id).map(|m| m.rebalance_timeout_ms)
    }

    /// Handles a JoinGroup at `now_ms`.
    pub fn join(
        &mut self,
        request: JoinRequest,
        limits: &GroupLimits,
        now_ms: u64,
    ) -> (Answer<JoinReply>, Completions) {
        let mut done = Completions::default();
        let refuse = |error, member: &str| {
            (
                Answer::Now(JoinReply::refused(error, member)),
                Completions::default(),
            )
        };
        if request.session_timeout_ms < limits.session_timeout_min_ms
            || request.session_timeout_ms > limits.session_timeout_max_ms
        {
            return refuse(
                GroupError::InvalidSessionTimeout {
                    asked: request.session_timeout_ms,
                    min: limits.session_timeout_min_ms,
                    max: limits.session_timeout_max_ms,
                },
                &request.member_id,
            );
        }
        // Everything the group's metadata record keeps must fit it: refused here, never a
        // record that cannot be written.
        if let Err(e) = check_lengths(&request) {
            return refuse(e, &request.member_id);
        }
        if request.protocol_type.is_empty()
            || request.protocols.is_empty()
            || !self.supports(&request.protocol_type, &request.protocols)
        {
            return refuse(GroupError::InconsistentGroupProtocol, &request.member_id);
        }
        let known = if request.member_id.is_empty() {
            None
        } else {
            Some(request.member_id.clone())
        };
        let member_id = match known {
            None => {
                // A static member that rejoins with a new incarnation takes its instance's
                // place (KIP-345).
                if let Some(instance) = &request.instance_id
                    && let Some(old) = self.member_of_instance(instance)
                {
                    return self.replace_static(old, request, now_ms);
                }
                if self.members.len() + self.pending.len() >= limits.members_max {
                    return refuse(
                        GroupError::GroupMaxSizeReached(limits.members_max),
                        &request.member_id,
                    );
                }
                if request.require_known_member_id && request.instance_id.is_none() {
                    let id = request.new_member_id.clone();
                    let deadline = now_ms + timeout(request.session_timeout_ms);
                    self.pending.insert(id.clone(), deadline);
                    return refuse(GroupError::MemberIdRequired(id.clone()), &id);
                }
                let id = request.new_member_id.clone();
                self.add_member(&id, &request, limits, now_ms, &mut done);
                id
            }
            Some(id) if self.pending.remove(&id).is_some() => {
                self.add_member(&id, &request, limits, now_ms, &mut done);
                id
            }
            Some(id) => {
                let Some(member) = self.members.get(&id) else {
                    return refuse(GroupError::UnknownMemberId, &id);
                };
                if member.instance_id != request.instance_id {
                    return refuse(GroupError::FencedInstanceId, &id);
                }
                let changed = member.protocols != request.protocols;
                let is_leader = self.leader.as_deref() == Some(id.as_str());
                let state = self.state;
                let member = self.members.get_mut(&id).expect("looked up above");
                member.heard_ms = now_ms;
                member.session_timeout_ms = request.session_timeout_ms;
                member.rebalance_timeout_ms = request.rebalance_timeout_ms;
                // In `Stable`, the leader's rejoin or changed protocols start a rebalance; in
                // `CompletingRebalance`, changed protocols do. Otherwise the member gets the
                // current generation again.
                let rebalance = match state {
                    GroupState::PreparingRebalance => false,
                    GroupState::CompletingRebalance => changed,
                    GroupState::Stable => changed || is_leader,
                    GroupState::Empty => return refuse(GroupError::UnknownMemberId, &id),
                };
                if state != GroupState::PreparingRebalance && !rebalance {
                    return (Answer::Now(self.join_reply(&id)), done);
                }
                member.protocols = request.protocols;
                if rebalance {
                    self.prepare_rebalance(now_ms, &mut done);
                }
                id
            }
        };
        self.wait_at_barrier(&member_id, now_ms, done)
    }

    /// Member `id` waits at the join barrier; answered now if it completed the barrier.
    fn wait_at_barrier(
        &mut self,
        id: &str,
        now_ms: u64,
        mut done: Completions,
    ) -> (Answer<JoinReply>, Completions) {
        if let Some(member) = self.members.get_mut(id) {
            member.joining = true;
        }
        self.try_complete_join(now_ms, &mut done);
        // The barrier may have completed with this very join: take its answer out.
        if let Some(at) = done.joins.iter().position(|(m, _)| m == id) {
            let (_, reply) = done.joins.remove(at);
            return (Answer::Now(reply), done);
        }
        (Answer::Wait, done)
    }

    /// The ids of the members for which `select` holds.
    fn member_ids(&self, select: impl Fn(&Member) -> bool) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, m)| select(m))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Handles a SyncGroup at `now_ms`; the leader's carries every member's assignment.
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
        now_ms: u64,
    ) -> (Answer<Result<SyncReply, GroupError>>, Completions) {
        let mut done = Completions::default();
        if let Err(e) = self.check_member(member_id, instance_id, generation, now_ms) {
            return (Answer::Now(Err(e)), done);
        }
        if assignments.iter().any(|(_, a)| a.len() > MEMBER_BYTES_MAX) {
            return (Answer::Now(Err(GroupError::TooLong("an assignment"))), done);
        }
        match self.state {
            GroupState::Empty => (Answer::Now(Err(GroupError::UnknownMemberId)), done),
            GroupState::PreparingRebalance => {
                (Answer::Now(Err(GroupError::RebalanceInProgress)), done)
            }
            GroupState::Stable => (Answer::Now(Ok(self.sync_reply(member_id))), done),
            GroupState::CompletingRebalance => {
                if let Some(member) = self.members.get_mut(member_id) {
                    member.syncing = true;
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut assignments: BTreeMap<String, Vec<u8>> =
                        assignments.into_iter().collect();
                    for (id, member) in &mut self.members {
                        member.assignment = assignments.remove(id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.dirty = true;
                    let syncing = self.member_ids(|m| m.syncing);
                    for id in syncing {
                        if let Some(member) = self.members.get_mut(&id) {
                            member.syncing = false;
                        }
                        let reply = self.sync_reply(&id);
                        done.syncs.push((id, Ok(reply)));
                    }
                }
                if let Some(at) = done.syncs.iter().position(|(id, _)| id == member_id) {
                    let (_, reply) = done.syncs.remove(at);
                    return (Answer::Now(reply), done);
                }
                (Answer::Wait, done)
            }
        }
    }

    /// Handles a Heartbeat at `now_ms`.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: u64,
    ) -> Result<(), GroupError> {
        self.check_member(member_id, instance_id, generation, now_ms)?;
        match self.state {
            GroupState::Empty => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// Handles a LeaveGroup for each of `members` (member id, or "" with the instance id of a
    /// static member), at `now_ms`.
    pub fn leave(
        &mut self,
        members: &[(String, Option<String>)],
        now_ms: u64,
    ) -> (Vec<Result<(), GroupError>>, Completions) {
        let mut done = Completions::default();
        let mut results = Vec::with_capacity(members.len());
        let mut left = false;
        for (member_id, instance_id) in members {
            let id = match (member_id.is_empty(), instance_id) {
                (true, Some(instance)) => self.member_of_instance(instance),
                _ => Some(member_id.clone()),
            };
            let result = match id {
                Some(id) if self.pending.remove(&id).is_some() => Ok(()),
                Some(id) => match self.members.get(&id) {
                    None => Err(GroupError::UnknownMemberId),
                    Some(member) if instance_id.is_some() && member.instance_id != *instance_id => {
                        Err(GroupError::FencedInstanceId)
                    }
                    Some(_) => {
                        self.remove_member(&id, &mut done);
                        left = true;
                        Ok(())
                    }
                },
                None => Err(GroupError::UnknownMemberId),
            };
            results.push(result);
        }
        if left {
            self.after_removal(now_ms, &mut done);
        }
        (results, done)
    }

    /// Checks an offset commit against the membership: a group without members takes commits
    /// of generation < 0 (clients that assign partitions themselves); a group with members only
    /// from a member of the current generation, outside `CompletingRebalance`. A member's commit
    /// counts as hearing from it.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: u64,
    ) -> Result<(), GroupError> {
        if self.members.is_empty() {
            if generation < 0 {
                return Ok(());
            }
            return Err(GroupError::IllegalGeneration {
                asked: generation,
                current: self.generation,
            });
        }
        if member_id.is_empty() && generation < 0 {
            return Err(GroupError::UnknownMemberId);
        }
        self.check_member(member_id, instance_id, generation, now_ms)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Expires members and pending member ids whose session ran out, completes a join barrier
    /// whose time is up, and drops members that did not sync in time.
    pub fn tick(&mut self, now_ms: u64) -> Completions {
        let mut done = Completions::default();
        self.pending.retain(|_, deadline| *deadline > now_ms);
        let expired = self.member_ids(|m| {
            !m.joining && !m.syncing && now_ms >= m.heard_ms + timeout(m.session_timeout_ms)
        });
        for id in &expired {
            self.remove_member(id, &mut done);
        }
        if !expired.is_empty() {
            self.after_removal(now_ms, &mut done);
        }
        match self.state {
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, &mut done),
            GroupState::CompletingRebalance if now_ms >= self.sync_deadline_ms => {
                // The leader never sent the assignment, or members never synced: drop those
                // that did not, and rebalance without them.
                let silent = self.member_ids(|m| !m.syncing);
                for id in &silent {
                    self.remove_member(id, &mut done);
                }
                self.after_removal(now_ms, &mut done);
                if self.state == GroupState::CompletingRebalance {
                    self.prepare_rebalance(now_ms, &mut done);
                }
            }
            _ => {}
        }
        done
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Vec<u8>)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        // Some protocol every member (this one included) supports.
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(p, _)| p == name))
        })
    }

    fn member_of_instance(&self, instance: &str) -> Option<String> {
        self.members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
            .map(|(id, _)| id.clone())
    }

    fn check_member(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: u64,
    ) -> Result<(), GroupError> {
        let Some(member) = self.members.get_mut(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if instance_id.is_some() && member.instance_id.as_deref() != instance_id {
            return Err(GroupError::FencedInstanceId);
        }
        member.heard_ms = now_ms;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                asked: generation,
                current: self.generation,
            });
        }
        Ok(())
    }

    fn add_member(
        &mut self,
        id: &str,
        request: &JoinRequest,
        limits: &GroupLimits,
        now_ms: u64,
        done: &mut Completions,
    ) {
        let delay = timeout(limits.initial_rebalance_delay_ms);
        let was_empty = self.members.is_empty();
        if was_empty {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        self.members.insert(
            id.to_string(),
            Member {
                instance_id: request.instance_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: request.protocols.clone(),
                assignment: Vec::new(),
                heard_ms: now_ms,
                joining: false,
                syncing: false,
            },
        );
        if self.state == GroupState::PreparingRebalance {
            // Each arrival extends a new group's initial delay, up to the rebalance timeout.
            if self.initial_delay_until_ms > 0 {
                self.initial_delay_until_ms = self
                    .initial_delay_until_ms
                    .max(now_ms + delay)
                    .min(self.rebalance_deadline_ms);
            }
        } else {
            self.prepare_rebalance(now_ms, done);
            if was_empty {
                self.initial_delay_until_ms = (now_ms + delay).min(self.rebalance_deadline_ms);
            }
        }
    }

    fn replace_static(
        &mut self,
        old: String,
        request: JoinRequest,
        now_ms: u64,
    ) -> (Answer<JoinReply>, Completions) {
        let mut done = Completions::default();
        let mut member = self.members.remove(&old).expect("found by instance id");
        let new_id = request.new_member_id.clone();
        if member.joining {
            done.joins.push((
                old.clone(),
                JoinReply::refused(GroupError::FencedInstanceId, &old),
            ));
        }
        if member.syncing {
            done.syncs
                .push((old.clone(), Err(GroupError::FencedInstanceId)));
        }
        let changed = member.protocols != request.protocols;
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.heard_ms = now_ms;
        member.joining = false;
        member.syncing = false;
        self.members.insert(new_id.clone(), member);
        if self.leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(new_id.clone());
        }
        if self.state == GroupState::Stable && !changed {
            // Same assignment, no rebalance: the member syncs and gets it. Its new member id
            // is kept.
            self.dirty = true;
            return (Answer::Now(self.join_reply(&new_id)), done);
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now_ms, &mut done);
        }
        self.wait_at_barrier(&new_id, now_ms, done)
    }

    fn remove_member(&mut self, id: &str, done: &mut Completions) {
        if let Some(member) = self.members.remove(id) {
            if member.joining {
                done.joins.push((
                    id.to_string(),
                    JoinReply::refused(GroupError::UnknownMemberId, id),
                ));
            }
            if member.syncing {
                done.syncs
                    .push((id.to_string(), Err(GroupError::UnknownMemberId)));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// After members went: an empty group is `Empty` (a new generation); a stable or completing
    /// one rebalances; a preparing one may now complete its barrier.
    fn after_removal(&mut self, now_ms: u64, done: &mut Completions) {
        if self.members.is_empty() {
            if self.state != GroupState::Empty {
                self.generation += 1;
                self.dirty = true;
            }
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, done);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, done),
            GroupState::Empty => {}
        }
    }

    fn prepare_rebalance(&mut self, now_ms: u64, done: &mut Completions) {
        if self.state == GroupState::CompletingRebalance {
            // Syncs waiting for an assignment that will not come: rejoin.
            for (id, member) in &mut self.members {
                if member.syncing {
                    member.syncing = false;
                    done.syncs
                        .push((id.clone(), Err(GroupError::RebalanceInProgress)));
                }
            }
        }
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| timeout(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline_ms = now_ms + rebalance_timeout;
        self.initial_delay_until_ms = 0;
    }

    fn try_complete_join(&mut self, now_ms: u64, done: &mut Completions) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let everyone = self.members.values().all(|m| m.joining) && self.pending.is_empty();
        let delayed = now_ms < self.initial_delay_until_ms;
        let timed_out = now_ms >= self.rebalance_deadline_ms;
        if !(timed_out || (everyone && !delayed)) {
            return;
        }
        // Members that did not rejoin in time are dropped.
        let absent = self.member_ids(|m| !m.joining);
        for id in &absent {
            self.remove_member(id, done);
        }
        self.pending.clear();
        self.generation += 1;
        if self.members.is_empty() {
            self.dirty = true;
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        self.protocol_name = Some(self.vote());
        if self
            .leader
            .as_ref()
            .is_none_or(|leader| !self.members.contains_key(leader))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let sync_timeout = self
            .members
            .values()
            .map(|m| timeout(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        self.sync_deadline_ms = now_ms + sync_timeout;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            if let Some(member) = self.members.get_mut(&id) {
                member.joining = false;
                member.heard_ms = now_ms;
            }
            let reply = self.join_reply(&id);
            done.joins.push((id, reply));
        }
    }

    /// The protocol most members prefer among those every member supports (Kafka's vote: each
    /// member votes for its first supported candidate; ties go to the first candidate in name
    /// order).
    fn vote(&self) -> String {
        let candidates: Vec<&str> = self
            .members
            .values()
            .next()
            .map(|m| m.protocols.iter().map(|(name, _)| name.as_str()).collect())
            .unwrap_or_default();
        let candidates: Vec<&str> = candidates
            .into_iter()
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == name))
            })
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(p, _)| candidates.contains(&p.as_str()))
            {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let most = votes.values().copied().max().unwrap_or(0);
        votes
            .into_iter()
            .find(|(_, count)| *count == most)
            .map(|(name, _)| name.to_string())
            .unwrap_or_default()
    }

    fn join_reply(&self, member_id: &str) -> JoinReply {
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinReply {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members()
                    .map(|(id, instance, metadata, _)| {
                        (
                            id.to_string(),
                            instance.map(str::to_string),
                            metadata.to_vec(),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn sync_reply(&self, member_id: &str) -> SyncReply {
        SyncReply {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }
}

/// Whether a join's fields fit the group's metadata record (`docs/format/group-records.md`).
fn check_lengths(request: &JoinRequest) -> Result<(), GroupError> {
    let names = [
        ("the protocol type", request.protocol_type.as_str()),
        ("the member id", request.member_id.as_str()),
        ("the new member id", request.new_member_id.as_str()),
        (
            "the instance id",
            request.instance_id.as_deref().unwrap_or(""),
        ),
        ("the client id", request.client_id.as_str()),
        ("the client host", request.client_host.as_str()),
    ];
    if let Some((field, _)) = names.iter().find(|(_, v)| v.len() > NAME_BYTES_MAX) {
        return Err(GroupError::TooLong(field));
    }
    for (name, metadata) in &request.protocols {
        if name.len() > NAME_BYTES_MAX {
            return Err(GroupError::TooLong("a protocol name"));
        }
        if metadata.len() > MEMBER_BYTES_MAX {
            return Err(GroupError::TooLong("a protocol's metadata"));
        }
    }
    Ok(())
}

/// A timeout in ms as a clock distance (negative ones count as 0).
fn timeout(ms: i32) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap

    use super::*;

    const LIMITS: GroupLimits = GroupLimits {
        session_timeout_min_ms: 1_000,
        session_timeout_max_ms: 60_000,
        initial_rebalance_delay_ms: 300,
        members_max: 3,
    };

    fn request(member: &str, new: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member.to_string(),
            new_member_id: new.to_string(),
            instance_id: None,
            client_id: "client".to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 20_000,
            protocol_type: "consumer".to_string(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), format!("{new}:{p}").into_bytes()))
                .collect(),
            require_known_member_id: true,
        }
    }

    /// Joins a new member the v4 way (MEMBER_ID_REQUIRED, then again with the id).
    fn join_new(group: &mut ClassicGroup, id: &str, now: u64) -> (Answer<JoinReply>, Completions) {
        let (answer, _) = group.join(request("", id, &["range", "roundrobin"]), &LIMITS, now);
        let Answer::Now(reply) = answer else {
            panic!("a first join is answered at once")
        };
        assert_eq!(
            reply.error,
            Some(GroupError::MemberIdRequired(id.to_string()))
        );
        group.join(
            request(id, "unused", &["range", "roundrobin"]),
            &LIMITS,
            now,
        )
    }

    fn joined(completions: &Completions, id: &str) -> JoinReply {
        completions
            .joins
            .iter()
            .find(|(m, _)| m == id)
            .map(|(_, reply)| reply.clone())
            .unwrap_or_else(|| panic!("no join answer for {id}: {completions:?}"))
    }

    /// Two members joined, synced and stable at generation 1: a is the leader.
    fn stable_pair() -> ClassicGroup {
        let mut group = ClassicGroup::new();
        assert_eq!(join_new(&mut group, "a", 0).0, Answer::Wait);
        assert_eq!(join_new(&mut group, "b", 100).0, Answer::Wait);
        // The initial delay (300 ms, extended by b to 400) holds the barrier.
        assert!(group.tick(350).is_empty());
        let done = group.tick(400);
        let a = joined(&done, "a");
        let b = joined(&done, "b");
        assert_eq!((a.generation, b.generation), (1, 1));
        assert_eq!(a.leader, "a");
        assert_eq!(a.protocol_name.as_deref(), Some("range"));
        assert_eq!(a.members.len(), 2, "the leader gets every member");
        assert!(b.members.is_empty());
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        // The follower's sync waits for the leader's.
        let (answer, _) = group.sync("b", None, 1, Vec::new(), 450);
        assert_eq!(answer, Answer::Wait);
        let (answer, done) = group.sync(
            "a",
            None,
            1,
            vec![("a".into(), b"pa".to_vec()), ("b".into(), b"pb".to_vec())],
            460,
        );
        let Answer::Now(Ok(reply)) = answer else {
            panic!("the leader's sync is answered at once")
        };
        assert_eq!(reply.assignment, b"pa");
        assert_eq!(
            done.syncs,
            vec![(
                "b".to_string(),
                Ok(SyncReply {
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some("range".into()),
                    assignment: b"pb".to_vec(),
                })
            )]
        );
        assert_eq!(group.state(), GroupState::Stable);
        group
    }

    #[test]
    fn a_stable_group_is_written_and_read_back_as_it_was() {
        let mut group = stable_pair();
        let metadata = group
            .take_metadata()
            .expect("a new stable generation is written");
        assert_eq!(group.take_metadata(), None, "once");
        assert_eq!((metadata.generation, metadata.members.len()), (1, 2));
        assert_eq!(metadata.leader, "a");
        assert_eq!(metadata.members[1].assignment, b"pb");
        // (the metadata of the join that entered the group: `join_new` rejoins as "unused")
        assert_eq!(metadata.members[1].subscription, b"unused:range");
        // A new coordinator starts from it: stable, same generation, members' sessions anew.
        let mut loaded = ClassicGroup::from_metadata(&metadata, 50_000);
        assert_eq!(loaded.state(), GroupState::Stable);
        assert_eq!(loaded.heartbeat("b", None, 1, 50_100), Ok(()));
        let (answer, _) = loaded.sync("b", None, 1, Vec::new(), 50_200);
        assert!(
            matches!(answer, Answer::Now(Ok(SyncReply { ref assignment, .. })) if assignment == b"pb")
        );
        // Members keep their place: a follower's rejoin with the protocol it was recorded with
        // gets generation 1 back (with others, as in Kafka, the group rebalances).
        let mut same = request("b", "", &["range"]);
        same.protocols = vec![("range".into(), b"unused:range".to_vec())];
        let (answer, _) = loaded.join(same, &LIMITS, 50_300);
        assert!(matches!(
            answer,
            Answer::Now(JoinReply { generation: 1, .. })
        ));
        // The last member leaving empties it: that is written too.
        loaded.leave(&[("a".into(), None), ("b".into(), None)], 50_400);
        let empty = loaded.take_metadata().unwrap();
        assert!(empty.members.is_empty());
        assert_eq!(
            ClassicGroup::from_metadata(&empty, 0).state(),
            GroupState::Empty
        );
    }

    #[test]
    fn members_join_sync_and_heartbeat() {
        let mut group = stable_pair();
        assert_eq!(group.heartbeat("a", None, 1, 500), Ok(()));
        assert_eq!(
            group.heartbeat("a", None, 0, 500),
            Err(GroupError::IllegalGeneration {
                asked: 0,
                current: 1
            })
        );
        assert_eq!(
            group.heartbeat("zz", None, 1, 500),
            Err(GroupError::UnknownMemberId)
        );
        // A stable member syncing again gets its assignment.
        let (answer, _) = group.sync("b", None, 1, Vec::new(), 600);
        assert!(
            matches!(answer, Answer::Now(Ok(SyncReply { ref assignment, .. })) if assignment == b"pb")
        );
    }

    #[test]
    fn a_new_member_starts_a_rebalance_that_waits_for_everyone() {
        let mut group = stable_pair();
        assert_eq!(join_new(&mut group, "c", 1_000).0, Answer::Wait);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            group.heartbeat("a", None, 1, 1_100),
            Err(GroupError::RebalanceInProgress)
        );
        // a rejoins; the barrier still waits for b.
        let (answer, done) = group.join(request("a", "", &["range", "roundrobin"]), &LIMITS, 1_200);
        assert_eq!(answer, Answer::Wait);
        assert!(done.is_empty());
        // b rejoins: everyone is in, generation 2 for all three.
        let (answer, done) = group.join(request("b", "", &["range", "roundrobin"]), &LIMITS, 1_300);
        let Answer::Now(b) = answer else {
            panic!("the last join completes the barrier")
        };
        assert_eq!(b.generation, 2);
        assert_eq!(joined(&done, "a").members.len(), 3);
        assert_eq!(joined(&done, "c").generation, 2);
        assert_eq!(group.generation(), 2);
    }

    #[test]
    fn a_silent_member_expires_and_the_rest_rebalance_without_it() {
        let mut group = stable_pair();
        assert_eq!(group.heartbeat("a", None, 1, 9_000), Ok(()));
        // b was last heard at 460 (its sync): its 10 s session ends at 10_460.
        assert!(group.tick(10_000).is_empty());
        let done = group.tick(10_460);
        assert!(done.is_empty());
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        let (answer, _) = group.join(request("a", "", &["range", "roundrobin"]), &LIMITS, 10_500);
        let Answer::Now(a) = answer else {
            panic!("a alone completes the barrier")
        };
        assert_eq!((a.generation, a.members.len()), (2, 1));
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let mut group = stable_pair();
        let (_, _) = group.leave(&[("zz".into(), None)], 500);
        assert_eq!(join_new(&mut group, "c", 1_000).0, Answer::Wait);
        let (answer, _) = group.join(request("a", "", &["range", "roundrobin"]), &LIMITS, 1_100);
        assert_eq!(answer, Answer::Wait);
        // b heartbeats (told to rejoin) but never rejoins: after the largest rebalance timeout
        // (20 s from 1_000) the barrier completes without it.
        for at in [9_000, 18_000] {
            assert_eq!(
                group.heartbeat("b", None, 1, at),
                Err(GroupError::RebalanceInProgress)
            );
            assert!(group.tick(at).joins.is_empty());
        }
        assert!(group.tick(20_999).joins.is_empty());
        let done = group.tick(21_000);
        assert_eq!(joined(&done, "a").members.len(), 2);
        assert!(group.members().all(|(id, ..)| id != "b"));
    }

    #[test]
    fn leaving_starts_a_rebalance_and_the_last_one_out_empties_the_group() {
        let mut group = stable_pair();
        let (results, _) = group.leave(&[("b".into(), None), ("nobody".into(), None)], 500);
        assert_eq!(results, vec![Ok(()), Err(GroupError::UnknownMemberId)]);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        let (results, _) = group.leave(&[("a".into(), None)], 600);
        assert_eq!(results, vec![Ok(())]);
        assert_eq!(group.state(), GroupState::Empty);
        assert_eq!(group.generation(), 2);
        assert!(group.is_empty());
    }

    #[test]
    fn commits_are_checked_against_the_generation() {
        let mut empty = ClassicGroup::new();
        assert_eq!(empty.check_commit("", None, -1, 0), Ok(()));
        assert!(matches!(
            empty.check_commit("x", None, 3, 0),
            Err(GroupError::IllegalGeneration { asked: 3, .. })
        ));
        let mut group = stable_pair();
        assert_eq!(group.check_commit("a", None, 1, 500), Ok(()));
        assert_eq!(
            group.check_commit("", None, -1, 500),
            Err(GroupError::UnknownMemberId)
        );
        assert!(matches!(
            group.check_commit("a", None, 0, 500),
            Err(GroupError::IllegalGeneration { .. })
        ));
        assert_eq!(
            group.check_commit("zz", None, 1, 500),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn protocols_must_match_the_group() {
        let mut group = stable_pair();
        let (answer, _) = group.join(request("", "c", &["sticky"]), &LIMITS, 500);
        assert!(matches!(
            answer,
            Answer::Now(JoinReply {
                error: Some(GroupError::InconsistentGroupProtocol),
                ..
            })
        ));
        let mut other = request("", "c", &["range"]);
        other.protocol_type = "connect".into();
        let (answer, _) = group.join(other, &LIMITS, 500);
        assert!(matches!(
            answer,
            Answer::Now(JoinReply {
                error: Some(GroupError::InconsistentGroupProtocol),
                ..
            })
        ));
        let mut short = request("", "c", &["range"]);
        short.session_timeout_ms = 10;
        let (answer, _) = group.join(short, &LIMITS, 500);
        assert!(matches!(
            answer,
            Answer::Now(JoinReply {
                error: Some(GroupError::InvalidSessionTimeout { .. }),
                ..
            })
        ));
    }

    #[test]
    fn fields_the_record_cannot_keep_are_refused() {
        let mut group = ClassicGroup::new();
        let mut long = request("", "a", &["range"]);
        long.protocols[0].0 = "p".repeat(NAME_BYTES_MAX + 1);
        let (answer, _) = group.join(long, &LIMITS, 0);
        assert!(matches!(
            answer,
            Answer::Now(JoinReply {
                error: Some(GroupError::TooLong(_)),
                ..
            })
        ));
        let mut group = stable_pair();
        let (answer, _) = group.sync(
            "a",
            None,
            1,
            vec![("a".into(), vec![0; MEMBER_BYTES_MAX + 1])],
            500,
        );
        assert_eq!(
            answer,
            Answer::Now(Err(GroupError::TooLong("an assignment")))
        );
        // Nothing of it was kept, and a fitting join still works.
        let (answer, _) = group.join(request("", "c", &["range"]), &LIMITS, 600);
        assert!(matches!(
            answer,
            Answer::Now(JoinReply {
                error: Some(GroupError::MemberIdRequired(_)),
                ..
            })
        ));
    }

    #[test]
    fn a_group_has_a_most_members() {
        let mut group = stable_pair();
        assert_eq!(join_new(&mut group, "c", 500).0, Answer::Wait);
        let (answer, _) = group.join(request("", "d", &["range"]), &LIMITS, 600);
        assert!(matches!(
            answer,
            Answer::Now(JoinReply {
                error: Some(GroupError::GroupMaxSizeReached(3)),
                ..
            })
        ));
    }

    #[test]
    fn a_static_member_rejoining_keeps_its_assignment_without_a_rebalance() {
        let mut group = ClassicGroup::new();
        let mut first = request("", "s1", &["range"]);
        first.instance_id = Some("host-1".into());
        let (answer, _) = group.join(first.clone(), &LIMITS, 0);
        assert_eq!(
            answer,
            Answer::Wait,
            "a static member joins without MEMBER_ID_REQUIRED"
        );
        let done = group.tick(300);
        assert_eq!(joined(&done, "s1").generation, 1);
        let (answer, _) = group.sync(
            "s1",
            Some("host-1"),
            1,
            vec![("s1".into(), b"all".to_vec())],
            310,
        );
        assert!(matches!(answer, Answer::Now(Ok(_))));
        // It restarts: same instance id, no member id.
        let mut again = first;
        again.new_member_id = "s2".into();
        let (answer, _) = group.join(again, &LIMITS, 5_000);
        let Answer::Now(reply) = answer else {
            panic!("answered at once")
        };
        assert_eq!((reply.member_id.as_str(), reply.generation), ("s2", 1));
        assert_eq!(group.state(), GroupState::Stable);
        let (answer, _) = group.sync("s2", Some("host-1"), 1, Vec::new(), 5_010);
        assert!(
            matches!(answer, Answer::Now(Ok(SyncReply { ref assignment, .. })) if assignment == b"all")
        );
        // The old incarnation is fenced out.
        assert_eq!(
            group.heartbeat("s1", Some("host-1"), 1, 5_020),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            group.heartbeat("s2", Some("host-2"), 1, 5_020),
            Err(GroupError::FencedInstanceId)
        );
    }

    #[test]
    fn a_leader_that_never_syncs_is_dropped() {
        let mut group = ClassicGroup::new();
        join_new(&mut group, "a", 0);
        join_new(&mut group, "b", 0);
        let done = group.tick(300);
        assert_eq!(joined(&done, "a").leader, "a");
        let (answer, _) = group.sync("b", None, 1, Vec::new(), 400);
        assert_eq!(answer, Answer::Wait);
        // a never syncs: at the rebalance timeout it goes, b is told to rejoin.
        let done = group.tick(20_300);
        assert_eq!(
            done.syncs,
            vec![("b".to_string(), Err(GroupError::RebalanceInProgress))]
        );
        assert!(group.members().all(|(id, ..)| id == "b"));
    }
}
