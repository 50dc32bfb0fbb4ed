//! Classic group membership on the coordinator: each group's `quipu_groups::ClassicGroup`, held
//! in memory by the leader of the group's offsets partition for one term, with the joins and
//! syncs that wait for the rest of the group. A tick every [`TICK`] expires sessions and
//! completes barriers whose time is up; a group whose partition this node no longer leads in
//! that term is dropped, and its waiting requests are answered NOT_COORDINATOR.
//!
//! Each generation that completes (the leader's assignment arrived) and each time a group
//! empties, its metadata is written as a group record of the offsets partition; the leader's
//! and the followers' SyncGroup answers wait until that record is committed, so no member acts
//! on a generation a new coordinator would not know. A new coordinator (another node, or this
//! one in a later term) starts each group from its last record: stable with those members,
//! whose sessions start anew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quipu_groups::{
    Answer, ClassicGroup, Completions, GroupError, GroupMetadata, GroupRecord, JoinReply,
    JoinRequest, SyncReply,
};
use tokio::sync::oneshot;

use super::CoordinatorError;
use super::writes::{Writes, Writing};
use crate::node::{Inner, NodeHandle};
use crate::{GroupId, Partition};

/// How often groups are ticked (session expiry, barrier deadlines).
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Longest a join or sync waits beyond its rebalance timeout for the group (a bound: the
/// group's own deadlines answer it first).
const WAIT_SLACK: Duration = Duration::from_secs(5);

/// The groups this node coordinates now.
#[derive(Debug)]
pub(crate) struct Membership {
    groups: Mutex<HashMap<String, Hosted>>,
    /// The monotonic clock the groups' times count from.
    epoch: tokio::time::Instant,
    /// Writes of each group's records under way (metadata, offset commits): a deletion waits
    /// for them, so that none lands after its tombstone, and an offset fetch, so that it sees
    /// every commit accepted before it.
    writes: Arc<Writes>,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            groups: Mutex::default(),
            epoch: tokio::time::Instant::now(),
            writes: Arc::default(),
        }
    }
}

/// Longest a deletion waits for a group's writes under way.
pub(crate) const WRITES_WAIT: Duration = Duration::from_secs(10);

/// One group, as coordinated by this node in one term of its offsets partition.
#[derive(Debug)]
pub(crate) struct Hosted {
    partition: GroupId,
    term: u64,
    pub(crate) group: ClassicGroup,
    /// The group under the KIP-848 protocol (a group is one protocol at a time: at most one of
    /// the two has members).
    pub(crate) consumer: quipu_groups::consumer::ConsumerGroup,
    joins: HashMap<String, oneshot::Sender<JoinReply>>,
    syncs: HashMap<String, SyncWaiter>,
}

impl Hosted {
    fn new(partition: GroupId, term: u64) -> Hosted {
        Hosted {
            partition,
            term,
            group: ClassicGroup::new(),
            consumer: quipu_groups::consumer::ConsumerGroup::new(),
            joins: HashMap::new(),
            syncs: HashMap::new(),
        }
    }

    /// Answers the waiting requests `done` completed.
    fn deliver(&mut self, done: Completions) {
        self.take(done).send();
    }

    /// The waiting requests `done` completed, with their answers, to be sent later.
    fn take(&mut self, done: Completions) -> Deliveries {
        let mut deliveries = Deliveries::default();
        for (member, reply) in done.joins {
            if let Some(waiter) = self.joins.remove(&member) {
                deliveries.joins.push((waiter, reply));
            }
        }
        for (member, reply) in done.syncs {
            if let Some(waiter) = self.syncs.remove(&member) {
                deliveries.syncs.push((waiter, reply));
            }
        }
        deliveries
    }
}

/// Where a waiting SyncGroup gets its answer.
type SyncWaiter = oneshot::Sender<Result<SyncReply, GroupError>>;

/// Answers taken out of a group, to send once its metadata is committed.
#[derive(Debug, Default)]
struct Deliveries {
    joins: Vec<(oneshot::Sender<JoinReply>, JoinReply)>,
    syncs: Vec<(SyncWaiter, Result<SyncReply, GroupError>)>,
}

impl Deliveries {
    fn send(self) {
        for (waiter, reply) in self.joins {
            let _ = waiter.send(reply);
        }
        for (waiter, reply) in self.syncs {
            let _ = waiter.send(reply);
        }
    }

    /// Answers every sync with `error` instead (the metadata could not be written).
    fn refuse_syncs(self, error: &GroupError) {
        for (waiter, _) in self.syncs {
            let _ = waiter.send(Err(error.clone()));
        }
        for (waiter, reply) in self.joins {
            let _ = waiter.send(reply);
        }
    }
}

impl Membership {
    /// Counts a write of `group`'s records until the guard is dropped.
    pub(crate) fn writing(&self, group: &str) -> Writing {
        self.writes.writing(group)
    }

    /// Waits (at most `patience`) until no write of `group`'s records (its metadata, offset
    /// commits) is under way; returns whether none is.
    pub(crate) async fn writes_done(&self, group: &str, patience: Duration) -> bool {
        self.writes.done(group, patience).await
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hosted>> {
        self.groups
            .lock()
            .expect("membership lock poisoned by a panic")
    }

    /// Runs `f` on `group` as coordinated in `term` of `replica`'s partition: if this node did
    /// not coordinate it in that term, the group starts from its last metadata record (what
    /// an earlier term held is dropped, its waiting requests answered NOT_COORDINATOR by their
    /// closed channels).
    pub(crate) fn with_group<T>(
        &self,
        group: &str,
        replica: &Partition,
        term: u64,
        f: impl FnOnce(&mut Hosted, u64) -> T,
    ) -> T {
        let now = self.now_ms();
        let mut groups = self.lock();
        let partition = replica.group();
        let current = groups
            .get(group)
            .is_some_and(|h| h.partition == partition && h.term == term);
        if !current {
            let mut hosted = Hosted::new(partition, term);
            let (metadata, consumer) = replica
                .with_groups(|state| {
                    (
                        state.metadata(group).cloned(),
                        state.consumer_group(group).cloned(),
                    )
                })
                .unwrap_or_default();
            if let Some(metadata) = metadata {
                hosted.group = ClassicGroup::from_metadata(&metadata, now);
            }
            if let Some(record) = consumer {
                hosted.consumer = quipu_groups::consumer::ConsumerGroup::from_record(&record, now);
            }
            groups.insert(group.to_string(), hosted);
        }
        let hosted = groups.get_mut(group).expect("inserted above");
        f(hosted, now)
    }

    /// Checks an offset commit against `group`'s membership in `term`: the member epoch of a
    /// KIP-848 group's member, the generation of a classic group's. The commit counts as under
    /// way (an offset fetch of the group waits for it) until the returned guard is dropped: taken
    /// under the same lock as membership changes, so a member that gets a partition after its
    /// previous holder's last accepted commit reads that commit's offset.
    pub(crate) fn check_commit(
        &self,
        group: &str,
        partition: &Partition,
        term: u64,
        member: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<Writing, CoordinatorError> {
        self.with_group(group, partition, term, |hosted, now| {
            if hosted.consumer.is_empty() {
                hosted
                    .group
                    .check_commit(member, instance, generation, now)
                    .map_err(CoordinatorError::Group)?;
            } else {
                hosted
                    .consumer
                    .check_commit(member, generation, now)
                    .map_err(CoordinatorError::Consumer)?;
            }
            Ok(self.writing(group))
        })
    }

    /// The groups with members held for `term` of `partition` (an entry without any is only
    /// what a request for an unknown group left until the next tick).
    pub(crate) fn groups_of(&self, partition: GroupId, term: u64) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, h)| {
                h.partition == partition
                    && h.term == term
                    && !(h.group.is_empty() && h.consumer.is_empty())
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// `group` as ListGroups shows it, if it has members held for `term` of `partition`.
    pub(crate) fn summary(
        &self,
        group: &str,
        partition: GroupId,
        term: u64,
    ) -> Option<super::admin::ListedGroup> {
        let groups = self.lock();
        let h = groups
            .get(group)
            .filter(|h| h.partition == partition && h.term == term)?;
        if !h.consumer.is_empty() {
            return Some(super::admin::ListedGroup {
                group: group.to_string(),
                protocol: "consumer",
                protocol_type: "consumer".to_string(),
                state: h.consumer.state_name(),
                members: h.consumer.members().len(),
                generation: h.consumer.group_epoch(),
            });
        }
        (!h.group.is_empty()).then(|| super::admin::ListedGroup {
            group: group.to_string(),
            protocol: "classic",
            protocol_type: h.group.protocol_type().unwrap_or_default().to_string(),
            state: h.group.state().kafka_name(),
            members: h.group.members().count(),
            generation: h.group.generation(),
        })
    }

    /// Forgets `group` (deleted) if held for `term`.
    pub(crate) fn forget(&self, group: &str, term: u64) {
        let mut groups = self.lock();
        if groups.get(group).is_some_and(|h| h.term == term) {
            groups.remove(group);
        }
    }

    /// Starts a rebalance of `group` if this node still coordinates it in `term` (its metadata
    /// could not be written).
    fn force_rebalance(&self, group: &str, term: u64) {
        let now = self.now_ms();
        let mut groups = self.lock();
        if let Some(hosted) = groups.get_mut(group).filter(|h| h.term == term) {
            let done = hosted.group.force_rebalance(now);
            hosted.deliver(done);
        }
    }
}

/// A classic group's metadata record.
fn classic_record(group: &str, metadata: GroupMetadata) -> GroupRecord {
    GroupRecord::Group {
        group: group.to_string(),
        value: Some(metadata),
    }
}

/// Writes one record of a group's state through its offsets partition; `Ok` once committed.
pub(crate) async fn write_state(
    replica: &Partition,
    record: GroupRecord,
) -> Result<(), CoordinatorError> {
    super::offsets::write_records(replica, std::slice::from_ref(&record)).await
}

/// Writes one record of `group`'s state in the background (nobody waits for it: a group that
/// emptied, members that expired). If it fails the group rebalances, so that its next state is
/// written (a KIP-848 group's next change writes it whole anyway).
fn persist_later(
    inner: &Arc<Inner>,
    replica: Arc<Partition>,
    group: String,
    term: u64,
    record: GroupRecord,
) {
    let writing = inner.membership.writing(&group);
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        let _writing = writing;
        if let Err(e) = write_state(&replica, record).await {
            tracing::warn!(
                group,
                error = &e as &dyn std::error::Error,
                "cannot write a group's state; it rebalances"
            );
            inner.membership.force_rebalance(&group, term);
        }
    });
}

/// Ticks every group this node coordinates, every [`TICK`], until the node stops.
pub(crate) async fn run_ticks(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let membership = &inner.membership;
        let now = membership.now_ms();
        let mut groups = membership.lock();
        groups.retain(|group, hosted| {
            let Some(replica) = inner
                .partition(hosted.partition)
                .filter(|p| p.is_leader() && p.term() == hosted.term)
            else {
                // Dropping the waiters answers them NOT_COORDINATOR.
                return false;
            };
            let done = hosted.group.tick(now);
            hosted.deliver(done);
            let before = hosted.consumer.record();
            if hosted.consumer.tick(&inner.config.groups.consumer, now)
                && let Some(record) = hosted.consumer.changed_since(&before)
            {
                let record = GroupRecord::ConsumerGroup {
                    group: group.clone(),
                    value: Some(record),
                };
                persist_later(
                    &inner,
                    Arc::clone(&replica),
                    group.clone(),
                    hosted.term,
                    record,
                );
            }
            if let Some(metadata) = hosted.group.take_metadata() {
                let record = classic_record(group, metadata);
                persist_later(&inner, replica, group.clone(), hosted.term, record);
            }
            !(hosted.group.is_empty()
                && hosted.consumer.is_empty()
                && hosted.joins.is_empty()
                && hosted.syncs.is_empty())
        });
    }
}

/// A classic member's JoinGroup, as the coordinator receives it.
#[derive(Debug, Clone)]
pub struct JoinGroup {
    /// The member id ("" for a new member).
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// The client's id (the prefix of a new member's id).
    pub client_id: String,
    /// The address the client connects from (DescribeGroups shows it).
    pub client_host: String,
    /// Session timeout, in ms.
    pub session_timeout_ms: i32,
    /// Rebalance timeout, in ms.
    pub rebalance_timeout_ms: i32,
    /// The protocol type ("consumer").
    pub protocol_type: String,
    /// Assignors with the member's metadata for each, in its order of preference.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// Whether a new member first gets its id (JoinGroup v4+).
    pub require_known_member_id: bool,
}

/// Most bytes of a client id that start a new member's id.
const MEMBER_ID_PREFIX_BYTES: usize = 255;

/// Longest a request waits: its rebalance timeout and some slack.
fn wait_bound(rebalance_timeout_ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(rebalance_timeout_ms).unwrap_or(0)) + WAIT_SLACK
}

impl NodeHandle {
    /// Handles a JoinGroup as `group`'s coordinator: answered once the group's join barrier
    /// completes (every member rejoined, or the rebalance timeout passed).
    pub async fn join_group(
        &self,
        group: &str,
        request: JoinGroup,
    ) -> Result<JoinReply, CoordinatorError> {
        let (replica, term) = self.inner.coordinating(group).await?;
        // Kafka's `{client.id}-{uuid}`, the client id cut to keep member ids short.
        let prefix = match request.client_id.as_str() {
            "" => "member",
            id => {
                let mut end = id.len().min(MEMBER_ID_PREFIX_BYTES);
                while !id.is_char_boundary(end) {
                    end -= 1;
                }
                &id[..end]
            }
        };
        let new_member_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        let waiting_id = if request.member_id.is_empty() {
            new_member_id.clone()
        } else {
            request.member_id.clone()
        };
        let bound = wait_bound(request.rebalance_timeout_ms);
        let limits = self.inner.config.groups.limits;
        let join = JoinRequest {
            member_id: request.member_id,
            new_member_id,
            instance_id: request.instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocol_type: request.protocol_type,
            protocols: request.protocols,
            require_known_member_id: request.require_known_member_id,
        };
        let waiting = self
            .inner
            .membership
            .with_group(group, &replica, term, |hosted, now| {
                if !hosted.consumer.is_empty() {
                    // A group is one protocol at a time: Kafka's answer to a classic member
                    // of a KIP-848 group.
                    return Err(Box::new(JoinReply::refused(
                        GroupError::InconsistentGroupProtocol,
                        &join.member_id,
                    )));
                }
                let (answer, done) = hosted.group.join(join, &limits, now);
                hosted.deliver(done);
                if let Some(metadata) = hosted.group.take_metadata() {
                    persist_later(
                        &self.inner,
                        Arc::clone(&replica),
                        group.to_string(),
                        term,
                        classic_record(group, metadata),
                    );
                }
                match answer {
                    Answer::Now(reply) => Err(Box::new(reply)),
                    Answer::Wait => {
                        let (tx, rx) = oneshot::channel();
                        hosted.joins.insert(waiting_id.clone(), tx);
                        Ok(rx)
                    }
                }
            });
        let rx = match waiting {
            Err(reply) => return Ok(*reply),
            Ok(rx) => rx,
        };
        match tokio::time::timeout(bound, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(moved(&replica)),
            Err(_) => Err(CoordinatorError::Group(GroupError::RebalanceInProgress)),
        }
    }

    /// Handles a SyncGroup as `group`'s coordinator: the leader's carries the assignments; a
    /// follower's waits for them.
    pub async fn sync_group(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> Result<SyncReply, CoordinatorError> {
        let (replica, term) = self.inner.coordinating(group).await?;
        /// What the sync gets: an answer now (with the answers it completed, to send once the
        /// group's metadata is written), or a wait.
        enum Synced {
            Now(
                Result<SyncReply, GroupError>,
                Deliveries,
                Option<Box<GroupMetadata>>,
            ),
            Wait(oneshot::Receiver<Result<SyncReply, GroupError>>, i32),
        }
        let synced = self
            .inner
            .membership
            .with_group(group, &replica, term, |hosted, now| {
                let (answer, done) =
                    hosted
                        .group
                        .sync(member_id, instance_id, generation, assignments, now);
                let metadata = hosted.group.take_metadata();
                let deliveries = hosted.take(done);
                match answer {
                    Answer::Now(reply) => Synced::Now(reply, deliveries, metadata.map(Box::new)),
                    Answer::Wait => {
                        deliveries.send();
                        if let Some(metadata) = metadata {
                            persist_later(
                                &self.inner,
                                Arc::clone(&replica),
                                group.to_string(),
                                term,
                                classic_record(group, metadata),
                            );
                        }
                        let (tx, rx) = oneshot::channel();
                        hosted.syncs.insert(member_id.to_string(), tx);
                        let timeout = hosted.group.rebalance_timeout_ms(member_id);
                        Synced::Wait(rx, timeout.unwrap_or(0))
                    }
                }
            });
        let (rx, timeout) = match synced {
            Synced::Wait(rx, timeout) => (rx, timeout),
            Synced::Now(reply, deliveries, None) => {
                deliveries.send();
                return reply.map_err(CoordinatorError::Group);
            }
            Synced::Now(reply, deliveries, Some(metadata)) => {
                // The leader's assignment completed a generation: every member is answered
                // once it is committed.
                let _writing = self.inner.membership.writing(group);
                return match write_state(&replica, classic_record(group, *metadata)).await {
                    Ok(()) => {
                        deliveries.send();
                        reply.map_err(CoordinatorError::Group)
                    }
                    Err(e) => {
                        tracing::warn!(
                            group,
                            error = &e as &dyn std::error::Error,
                            "cannot write a group's new generation; it rebalances"
                        );
                        deliveries.refuse_syncs(&GroupError::RebalanceInProgress);
                        self.inner.membership.force_rebalance(group, term);
                        Err(e)
                    }
                };
            }
        };
        match tokio::time::timeout(wait_bound(timeout), rx).await {
            Ok(Ok(reply)) => reply.map_err(CoordinatorError::Group),
            Ok(Err(_)) => Err(moved(&replica)),
            Err(_) => Err(CoordinatorError::Group(GroupError::RebalanceInProgress)),
        }
    }

    /// Handles a Heartbeat as `group`'s coordinator.
    pub async fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), CoordinatorError> {
        let (replica, term) = self.inner.coordinating(group).await?;
        self.inner
            .membership
            .with_group(group, &replica, term, |hosted, now| {
                hosted
                    .group
                    .heartbeat(member_id, instance_id, generation, now)
            })
            .map_err(CoordinatorError::Group)
    }

    /// Handles a LeaveGroup of `members` (member id, or "" and a static member's instance id)
    /// as `group`'s coordinator; the result per member.
    pub async fn leave_group(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, CoordinatorError> {
        let (replica, term) = self.inner.coordinating(group).await?;
        Ok(self
            .inner
            .membership
            .with_group(group, &replica, term, |hosted, now| {
                let (results, done) = hosted.group.leave(members, now);
                hosted.deliver(done);
                if let Some(metadata) = hosted.group.take_metadata() {
                    persist_later(
                        &self.inner,
                        Arc::clone(&replica),
                        group.to_string(),
                        term,
                        classic_record(group, metadata),
                    );
                }
                results
            }))
    }
}

/// The group's coordinator moved while a request waited.
fn moved(replica: &Partition) -> CoordinatorError {
    CoordinatorError::NotCoordinator {
        group: replica.group(),
        leader: replica.leader(),
    }
}
