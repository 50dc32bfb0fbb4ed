//! Partition moves and preferred leaders.
//!
//! A move is started by the controller (the partition's `target` in the metadata; nodes that are
//! to get a replica open an empty one). The partition's leader, wherever it is, carries it out:
//! it adds the new replicas to its Raft group as learners, waits until they are within
//! [`CATCH_UP_ENTRIES`] of its log, changes the group's voters to the target (openraft's joint
//! consensus: the old and the new majority both commit the change), and only then asks the
//! controller to complete the move, whose effect deletes the replicas it took away. Every step
//! is idempotent and read back from the group's membership, so a leader that dies mid-move leaves
//! the next one to finish it. Behaviour: `docs/protocol/membership.md`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ChangeMembers;
use quipu_raft::NodeId;

use crate::cluster::CATCH_UP_ENTRIES;
use crate::controller::{ControllerError, ControllerRequest};
use crate::groups::Groups;
use crate::network::Peers;
use crate::node::Inner;
use crate::quiesce::Liveness;
use crate::routing::request_controller;
use crate::{GroupId, Partition};

/// How often a node looks for moves whose partition it leads.
const SCAN_INTERVAL: Duration = Duration::from_millis(250);

/// How long one wait for new replicas to catch up lasts before the move is checked again
/// (replaced, or this node no longer leads).
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// How long a preferred replica has to stand for election when asked.
const ELECTION_WAIT: Duration = Duration::from_secs(5);

/// A step of a move failed; the next scan tries again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MoveError {
    /// The Raft group refused a membership change (no longer leader, a change under way…).
    #[error("partition {group}: cannot change the group's members")]
    Membership {
        /// The partition.
        group: GroupId,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The controller did not take the completion.
    #[error("partition {group}: the controller did not complete the move")]
    Complete {
        /// The partition.
        group: GroupId,
        /// The cause.
        #[source]
        source: ControllerError,
    },
    /// A new replica's node is not registered (removed meanwhile).
    #[error("partition {group}: node {node} has no address in the metadata")]
    NoAddress {
        /// The partition.
        group: GroupId,
        /// The node.
        node: NodeId,
    },
}

/// Drives the moves of the partitions this node leads, one task per partition.
pub(crate) async fn run_reassignments(inner: Arc<Inner>) {
    let running: Arc<Mutex<HashSet<GroupId>>> = Arc::default();
    let mut ticker = tokio::time::interval(SCAN_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let moves: Vec<(GroupId, Vec<NodeId>)> = inner.metadata.with_metadata(|m| {
            m.reassignments()
                .filter_map(|(_, _, p)| Some((GroupId(p.group), p.target.clone()?)))
                .collect()
        });
        // The new replicas of the moves this node leads: their catch-up is throttled.
        let catching_up: HashSet<(GroupId, NodeId)> = moves
            .iter()
            .filter_map(|(group, target)| {
                let voters = inner.partition(*group).filter(|p| p.is_leader())?.voters();
                Some(
                    target
                        .iter()
                        .filter(|n| !voters.contains(n))
                        .map(|n| (*group, *n))
                        .collect::<Vec<_>>(),
                )
            })
            .flatten()
            .collect();
        inner.peers.throttle.set_throttled(catching_up);
        for (group, target) in moves {
            let Some(partition) = inner.partition(group).filter(|p| p.is_leader()) else {
                continue;
            };
            if !running
                .lock()
                .expect("moves lock poisoned by a panic")
                .insert(group)
            {
                continue;
            }
            let (inner, running) = (Arc::clone(&inner), Arc::clone(&running));
            tokio::spawn(async move {
                match drive(&inner, &partition, &target).await {
                    Ok(true) => tracing::info!(%group, replicas = ?target, "partition moved"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(
                            error = &e as &dyn std::error::Error,
                            "partition move interrupted; retried"
                        );
                    }
                }
                running
                    .lock()
                    .expect("moves lock poisoned by a panic")
                    .remove(&group);
            });
        }
    }
}

/// Carries out one partition's move to `target` while this node leads it and the move is the
/// one under way. Returns whether it completed it.
async fn drive(inner: &Inner, partition: &Partition, target: &[NodeId]) -> Result<bool, MoveError> {
    let group = partition.group();
    let raft = partition.raft();
    let wanted: BTreeSet<NodeId> = target.iter().copied().collect();
    let membership_error =
        |source: Box<dyn std::error::Error + Send + Sync>| MoveError::Membership { group, source };
    loop {
        let current = inner
            .metadata
            .with_metadata(|m| m.partition(group.0).and_then(|(_, _, p)| p.target.clone()));
        if current.as_deref() != Some(target) || !partition.is_leader() {
            return Ok(false);
        }
        let (voters, members) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
            (voters, members)
        };
        if voters == wanted {
            // The new voters are committed (openraft answers a change once its uniform
            // configuration is): learners left from an earlier target go, then the controller
            // completes the move, which deletes the replicas it took away.
            let strays: BTreeSet<NodeId> = members.difference(&wanted).copied().collect();
            if !strays.is_empty() {
                raft.change_membership(ChangeMembers::RemoveNodes(strays), false)
                    .await
                    .map_err(|e| membership_error(Box::new(e)))?;
            }
            let request = ControllerRequest::CompleteReassignment {
                group: group.0,
                replicas: target.to_vec(),
            };
            return match request_controller(inner, &request).await {
                Ok(_) => Ok(true),
                // Completed by an earlier attempt whose answer was lost, or replaced.
                Err(ControllerError::Refused(_)) => Ok(false),
                Err(source) => Err(MoveError::Complete { group, source }),
            };
        }
        for node in wanted.difference(&members) {
            let addr = inner
                .metadata
                .with_metadata(|m| m.node(*node).map(|n| n.raft_addr.clone()))
                .ok_or(MoveError::NoAddress { group, node: *node })?;
            raft.add_learner(*node, openraft::BasicNode { addr }, false)
                .await
                .map_err(|e| membership_error(Box::new(e)))?;
            tracing::info!(%group, node, "new replica added as a learner");
        }
        let caught_up = raft
            .wait(Some(CATCH_UP_WAIT))
            .metrics(
                |m| {
                    let last = m.last_log_index.unwrap_or(0);
                    m.replication.as_ref().is_some_and(|replication| {
                        // The new replicas (voters already in the target replicate as they
                        // always do: one may be down, as in any group).
                        wanted.difference(&voters).all(|node| {
                            *node == inner.config.node_id
                                || replication.get(node).is_some_and(|matched| {
                                    matched.map_or(0, |l| l.index) + CATCH_UP_ENTRIES >= last
                                })
                        })
                    })
                },
                "new replicas caught up",
            )
            .await;
        if caught_up.is_err() {
            continue; // checked again: still this move, still leading?
        }
        raft.change_membership(ChangeMembers::ReplaceAllVoters(wanted.clone()), false)
            .await
            .map_err(|e| membership_error(Box::new(e)))?;
        tracing::info!(%group, voters = ?wanted, "partition's voters changed");
    }
}

/// What choosing preferred leaders needs of a node (the transport service has no [`Inner`]).
pub(crate) struct Leaders<'a> {
    pub me: NodeId,
    pub groups: &'a Groups,
    pub metadata: &'a quipu_raft::ControllerStateMachine,
    pub liveness: &'a Liveness,
    pub liveness_timeout: Duration,
    pub peers: &'a Peers,
}

impl Leaders<'_> {
    /// Hands each partition this node leads (of `only`, or all) to its preferred replica (the
    /// first of its replicas) when that replica is alive, not draining and holds the whole
    /// log; partitions that are moving are left alone. Returns the groups whose preferred
    /// replica stood for election, and those this node leads as their preferred replica.
    pub(crate) async fn elect_preferred(&self, only: Option<&HashSet<u64>>) -> Elected {
        let mut asks: BTreeMap<NodeId, (String, Vec<u64>)> = BTreeMap::new();
        let mut already = Vec::new();
        for (group, hosted) in self.groups.partitions() {
            if only.is_some_and(|only| !only.contains(&group.0)) {
                continue;
            }
            let leads = hosted.raft.metrics().borrow().current_leader == Some(self.me);
            // The preferred replica, and whether leadership may go to it now (an active node,
            // the partition not moving).
            let Some((preferred, eligible)) = self.metadata.with_metadata(|m| {
                let (_, _, p) = m.partition(group.0)?;
                let first = *p.replicas.first()?;
                let active = m.node_state(first) == Some(quipu_meta::NodeState::Active);
                Some((first, p.target.is_none() && active))
            }) else {
                continue;
            };
            if preferred == self.me {
                if leads {
                    already.push(group.0);
                }
                continue;
            }
            if !eligible {
                continue;
            }
            if !self.liveness.is_alive(preferred, self.liveness_timeout) {
                continue;
            }
            let addr = {
                let metrics = hosted.raft.metrics();
                let m = metrics.borrow();
                let caught_up = m.current_leader == Some(self.me)
                    && m.replication.as_ref().is_some_and(|r| {
                        r.get(&preferred)
                            .is_some_and(|matched| matched.map(|l| l.index) == m.last_log_index)
                    });
                let voter = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == preferred);
                (caught_up && voter)
                    .then(|| {
                        m.membership_config
                            .membership()
                            .get_node(&preferred)
                            .map(|n| n.addr.clone())
                    })
                    .flatten()
            };
            if let Some(addr) = addr {
                asks.entry(preferred)
                    .or_insert_with(|| (addr, Vec::new()))
                    .1
                    .push(group.0);
            }
        }
        let deadline = tokio::time::Instant::now() + ELECTION_WAIT;
        let started = crate::handoff::ask_to_campaign(self.peers, self.me, asks, deadline).await;
        if !started.is_empty() {
            tracing::info!(
                groups = started.len(),
                "leadership handed to preferred replicas"
            );
        }
        Elected {
            asked: started,
            already,
        }
    }
}

/// What a preferred leader election did, by partition group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elected {
    /// Partitions whose preferred replica stood for election.
    pub asked: Vec<u64>,
    /// Partitions whose preferred replica leads already.
    pub already: Vec<u64>,
}

impl Inner {
    pub(crate) fn leaders(&self) -> Leaders<'_> {
        Leaders {
            me: self.config.node_id,
            groups: &self.groups,
            metadata: &self.metadata,
            liveness: &self.liveness,
            liveness_timeout: crate::quiesce::Timings::of(&self.raft_config).liveness,
            peers: &self.peers,
        }
    }
}

/// Every `leader_rebalance_interval`, hands the partitions this node leads to their preferred
/// replicas (Kafka's `auto.leader.rebalance.enable`).
pub(crate) async fn run_preferred_leaders(inner: Arc<Inner>) {
    let Some(interval) = inner.config.leader_rebalance_interval else {
        return;
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if inner.is_draining() {
            continue;
        }
        inner.leaders().elect_preferred(None).await;
    }
}
