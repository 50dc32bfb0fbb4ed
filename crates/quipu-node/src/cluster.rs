//! The cluster's shape: a new node joining through any member (`--join`), the controller
//! group's voters kept at `controller_voters` as nodes join and leave, and a drained node handing
//! its leaderships over. Behaviour: `docs/protocol/membership.md`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;
use quipu_meta::NodeState;
use quipu_raft::NodeId;

use crate::controller::{CONTROLLER_PATIENCE, ControllerError, ControllerHandle};
use crate::node::Inner;
use crate::{GroupId, NodeError};

/// How often the controller leader checks its group's voters against the metadata.
const VOTERS_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A replica counts as caught up (to become a voter) when at most this many entries behind its
/// leader.
pub const CATCH_UP_ENTRIES: u64 = 64;

/// Asks `seed` (any member's Raft transport address) to admit node `id`, listening at
/// `raft_addr`, to the cluster; retries while no member answers or the controller has no
/// leader, for at most `patience`. A removed node is refused at once.
pub(crate) async fn ask_to_join(
    inner: &Inner,
    seed: &str,
    patience: Duration,
) -> Result<(), NodeError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = Duration::from_millis(100);
    let failed = |source: ControllerError| NodeError::Join {
        seed: seed.to_string(),
        source,
    };
    loop {
        let attempt = async {
            let mut client = inner
                .peers
                .client(seed)
                .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
            let request = quipu_proto::v1::JoinRequest {
                node_id: inner.config.node_id,
                raft_addr: inner.advertised_addr(),
            };
            let reply = tokio::time::timeout(CONTROLLER_PATIENCE, client.join(request))
                .await
                .map_err(|_| ControllerError::Unavailable(format!("{seed} did not answer")))?
                .map_err(|status| {
                    if status.code() == tonic::Code::FailedPrecondition {
                        ControllerError::OtherCluster(status.message().to_string())
                    } else {
                        ControllerError::Unavailable(status.message().to_string())
                    }
                })?;
            postcard::from_bytes::<Result<Option<u64>, ControllerError>>(&reply.into_inner().result)
                .map_err(|e| ControllerError::Unavailable(format!("undecodable reply: {e}")))?
                .map(|_| ())
        };
        match attempt.await {
            Ok(()) => {
                tracing::info!(
                    node_id = inner.config.node_id,
                    seed,
                    "admitted to the cluster"
                );
                return Ok(());
            }
            Err(
                e @ (ControllerError::NodeRemoved(_)
                | ControllerError::Plan(_)
                | ControllerError::OtherCluster(_)),
            ) => {
                return Err(failed(e));
            }
            Err(e) if tokio::time::Instant::now() + backoff >= deadline => return Err(failed(e)),
            Err(e) => {
                tracing::warn!(
                    node_id = inner.config.node_id,
                    seed,
                    error = &e as &dyn std::error::Error,
                    "cannot join yet"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// On the controller leader: keeps the controller group's members in line with the metadata.
/// Removed nodes leave it; registered learners that caught up become voters while there are
/// fewer than `controller_voters`, two at a time from an odd count so that the voters stay odd
/// (an even count tolerates no more failures than one fewer).
pub(crate) async fn run_controller_voters(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(VOTERS_CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if inner.control.leader() != Some(inner.config.node_id) {
            continue;
        }
        name_cluster(&inner.control).await;
        if let Err(e) = reconcile_voters(&inner.control, inner.config.controller_voters).await {
            tracing::warn!(
                // A boxed error is not an `Error` itself: the one it holds is.
                error = &*e as &dyn std::error::Error,
                "cannot change the controller group's members yet"
            );
        }
    }
}

/// On the controller leader of a cluster that has no id yet (new, or formed before ids
/// existed): names it, once ([`quipu_meta::Command::SetClusterId`]; a second leader's proposal
/// of another name is refused by the metadata).
async fn name_cluster(control: &ControllerHandle) {
    if control.metadata.with_metadata(|m| m.cluster_id().is_some()) {
        return;
    }
    let id = crate::identity::new_cluster_id();
    match control
        .propose(&quipu_meta::Command::SetClusterId { id: id.clone() })
        .await
    {
        Ok(_) => tracing::info!(cluster_id = id, "the cluster is named"),
        Err(e) => tracing::warn!(
            error = &e as &dyn std::error::Error,
            "cannot name the cluster yet"
        ),
    }
}

/// One round of [`run_controller_voters`].
async fn reconcile_voters(
    control: &ControllerHandle,
    size: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (voters, members, last_index, matched) = {
        let metrics = control.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let matched: Vec<(NodeId, u64)> = m
            .replication
            .iter()
            .flatten()
            .map(|(id, log)| (*id, log.map_or(0, |l| l.index)))
            .collect();
        (voters, members, m.last_log_index.unwrap_or(0), matched)
    };
    let (removed, eligible): (BTreeSet<NodeId>, BTreeSet<NodeId>) =
        control.metadata.with_metadata(|m| {
            (
                members
                    .iter()
                    .copied()
                    .filter(|id| m.is_removed(*id))
                    .collect(),
                members
                    .iter()
                    .copied()
                    .filter(|id| m.node_state(*id) == Some(NodeState::Active))
                    .collect(),
            )
        });
    if !removed.is_empty() {
        let voters_left = voters.difference(&removed).count();
        if voters_left == 0 {
            return Err("every controller voter was removed".into());
        }
        let removed_voters: BTreeSet<NodeId> = removed.intersection(&voters).copied().collect();
        if !removed_voters.is_empty() {
            control
                .raft
                .change_membership(ChangeMembers::RemoveVoters(removed_voters.clone()), false)
                .await?;
            tracing::info!(nodes = ?removed_voters, "removed nodes left the controller's voters");
        }
        control
            .raft
            .change_membership(ChangeMembers::RemoveNodes(removed.clone()), false)
            .await?;
        tracing::info!(nodes = ?removed, "removed nodes left the controller group");
        return Ok(());
    }
    let wanted = size.saturating_sub(voters.len());
    let ready: Vec<NodeId> = matched
        .iter()
        .filter(|(id, index)| {
            !voters.contains(id) && eligible.contains(id) && *index + CATCH_UP_ENTRIES >= last_index
        })
        .map(|(id, _)| *id)
        .collect();
    let promote = if voters.len() % 2 == 1 { 2 } else { 1 };
    if wanted < promote || ready.len() < promote {
        return Ok(());
    }
    let promoted: BTreeSet<NodeId> = ready.into_iter().take(promote).collect();
    control
        .raft
        .change_membership(ChangeMembers::AddVoterIds(promoted.clone()), false)
        .await?;
    tracing::info!(nodes = ?promoted, "learners became controller voters");
    Ok(())
}

impl Inner {
    /// Whether the metadata says this node is being drained (or was removed).
    pub(crate) fn is_draining(&self) -> bool {
        self.metadata.with_metadata(|m| {
            matches!(
                m.node_state(self.config.node_id),
                Some(NodeState::Draining | NodeState::Removed)
            )
        })
    }

    /// This node is drained or removed: none of its groups stands for election here any more,
    /// and the leaderships it holds go to caught-up followers.
    pub(crate) async fn step_aside(self: Arc<Self>) {
        for partition in self.hosted_partitions() {
            partition.quiet().leave(partition.raft());
        }
        if let Some(controller) = self.groups.get_hosted(GroupId::CONTROLLER) {
            controller.quiet.leave(&controller.raft);
        }
        let handed = crate::handoff::hand_off_leadership(&self, false).await;
        tracing::info!(
            node_id = self.config.node_id,
            handed,
            "drained: leaderships handed over"
        );
    }
}

/// A node as `quipu node list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its id.
    pub id: NodeId,
    /// Its Raft transport, client API and Kafka addresses (empty when unknown or none).
    pub raft_addr: String,
    /// Client gRPC API address.
    pub api_addr: String,
    /// Kafka listener address.
    pub kafka_addr: String,
    /// Its rack, empty for none.
    pub rack: String,
    /// `joining` (in the controller group, not registered yet), `active`, `draining` or
    /// `removed`.
    pub state: &'static str,
    /// `voter` or `learner` of the controller group, or empty.
    pub controller_role: &'static str,
    /// Partitions with a replica on it (kept or to come).
    pub replicas: usize,
    /// Partitions whose preferred leader it is.
    pub preferred_leaders: usize,
    /// Whether its node heartbeats reach the answering node.
    pub alive: bool,
}

/// How long a restarting member asks the cluster whether it was removed meanwhile.
const MEMBER_CHECK_PATIENCE: Duration = Duration::from_secs(5);

/// Longest wait for a partition's preferred replicas to be asked, across the cluster.
const ELECT_LEADERS_WAIT: Duration = Duration::from_secs(10);

impl crate::NodeHandle {
    /// Makes this node a member of the cluster whose controller voters are `voters` (id and
    /// transport address, this node included). The voter with the lowest id initializes the
    /// controller group the first time; whichever voter leads the controller registers them all.
    pub async fn join(&self, voters: Vec<(NodeId, String)>) -> Result<(), NodeError> {
        let lowest = voters.iter().map(|(id, _)| *id).min();
        // After a restart the group exists; openraft would log the refused initialize as an error.
        let initialized = self
            .inner
            .controller
            .is_initialized()
            .await
            .unwrap_or(false);
        if lowest == Some(self.id()) && !initialized {
            let members: std::collections::BTreeMap<NodeId, openraft::BasicNode> = voters
                .into_iter()
                .map(|(id, addr)| (id, openraft::BasicNode { addr }))
                .collect();
            match self.inner.controller.initialize(members).await {
                Ok(()) => {}
                // Already initialized: a restart, or another attempt won.
                Err(openraft::error::RaftError::APIError(
                    openraft::error::InitializeError::NotAllowed(_),
                )) => {}
                Err(e) => {
                    return Err(NodeError::Raft {
                        group: GroupId::CONTROLLER,
                        source: Box::new(e),
                    });
                }
            }
        }
        Ok(())
    }

    /// Joins the cluster `seed` (any member's Raft transport address) belongs to, unless this
    /// node is a member already (a restart): the controller admits it as a learner, then it
    /// registers itself. Retries for at most `patience` while no member answers; a removed
    /// node is refused.
    pub async fn join_through(&self, seed: &str, patience: Duration) -> Result<(), NodeError> {
        if !self.inner.control.is_member() {
            return ask_to_join(&self.inner, seed, patience).await;
        }
        // A restart: the cluster is asked once more, briefly, so that a node removed while it
        // was down (or pointed at another cluster's member) learns it now and stops, instead of
        // running with data that every member refuses. Any other failure (the seed is down)
        // does not keep a member from starting.
        match ask_to_join(&self.inner, seed, MEMBER_CHECK_PATIENCE).await {
            Err(
                e @ NodeError::Join {
                    source: ControllerError::NodeRemoved(_) | ControllerError::OtherCluster(_),
                    ..
                },
            ) => Err(e),
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "a member restarting could not check its membership with the cluster"
                );
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Waits, at most `patience`, until this node's registration is in its own metadata (after
    /// a join: it then knows the cluster's topics). Returns whether it is.
    pub async fn wait_until_registered(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        let me = self.inner.config.node_id;
        while tokio::time::Instant::now() < deadline {
            if self.inner.metadata.with_metadata(|m| m.node(me).is_some()) {
                return true;
            }
            // Registration is a metadata change nothing signals; checked as `register_self`
            // checks it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Every node the cluster knows: registered, joining (in the controller group, not
    /// registered yet) and removed.
    pub fn cluster_nodes(&self) -> Vec<NodeStatus> {
        let (voters, members): (BTreeSet<NodeId>, Vec<(NodeId, String)>) = {
            let metrics = self.inner.controller.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            (
                membership.voter_ids().collect(),
                membership
                    .nodes()
                    .map(|(id, n)| (*id, n.addr.clone()))
                    .collect(),
            )
        };
        let role = |id: NodeId| {
            if voters.contains(&id) {
                "voter"
            } else if members.iter().any(|(m, _)| *m == id) {
                "learner"
            } else {
                ""
            }
        };
        self.inner.metadata.with_metadata(|m| {
            let mut load: std::collections::BTreeMap<NodeId, (usize, usize)> =
                std::collections::BTreeMap::new();
            for partition in m.topics().flat_map(|t| &t.partitions) {
                let mut held: BTreeSet<NodeId> = partition.replicas.iter().copied().collect();
                held.extend(partition.final_replicas());
                for node in held {
                    load.entry(node).or_default().0 += 1;
                }
                if let Some(first) = partition.final_replicas().first() {
                    load.entry(*first).or_default().1 += 1;
                }
            }
            // A node as the metadata and the controller group know it, addresses aside.
            let status = |id: NodeId, state: &'static str| NodeStatus {
                id,
                raft_addr: String::new(),
                api_addr: String::new(),
                kafka_addr: String::new(),
                rack: String::new(),
                state,
                controller_role: role(id),
                replicas: load.get(&id).map_or(0, |l| l.0),
                preferred_leaders: load.get(&id).map_or(0, |l| l.1),
                alive: self.is_alive(id),
            };
            let mut nodes: Vec<NodeStatus> = m
                .nodes()
                .map(|n| NodeStatus {
                    raft_addr: n.raft_addr.clone(),
                    api_addr: n.api_addr.clone(),
                    kafka_addr: n.kafka_addr.clone(),
                    rack: n.rack.clone(),
                    ..status(n.id, m.node_state(n.id).map_or("active", NodeState::name))
                })
                .collect();
            for (id, raft_addr) in &members {
                if m.node(*id).is_none() && !m.is_removed(*id) {
                    nodes.push(NodeStatus {
                        raft_addr: raft_addr.clone(),
                        ..status(*id, "joining")
                    });
                }
            }
            for id in m.removed_nodes() {
                nodes.push(NodeStatus {
                    alive: false,
                    ..status(id, NodeState::Removed.name())
                });
            }
            nodes.sort_by_key(|n| n.id);
            nodes
        })
    }

    /// Drains node `id`: it gets no new replicas, hands its leaderships over at once, and its
    /// replicas move to other nodes (placed as new ones are).
    pub async fn drain_node(&self, id: NodeId) -> Result<(), ControllerError> {
        self.request_controller(crate::ControllerRequest::DrainNode { id })
            .await
    }

    /// Removes node `id` for good. Refused while it holds replicas, unless `force` (a node that
    /// is gone for good): its replicas are then re-created on other nodes from the surviving
    /// ones. Its id is never used again.
    pub async fn remove_node(&self, id: NodeId, force: bool) -> Result<(), ControllerError> {
        self.request_controller(crate::ControllerRequest::RemoveNode { id, force })
            .await
    }

    /// Moves partition `partition` of `topic` to `replicas` (preferred leader first). Returns
    /// once the move is under way; `topic describe` shows its progress.
    pub async fn move_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: Vec<NodeId>,
    ) -> Result<(), ControllerError> {
        self.request_controller(crate::ControllerRequest::MovePartition {
            topic: topic.to_string(),
            partition,
            replicas,
        })
        .await
    }

    /// The moves a rebalance would start now, as this node's metadata says (a dry run).
    pub fn plan_rebalance(&self) -> Vec<quipu_meta::Move> {
        self.inner.metadata.with_metadata(|m| m.plan_rebalance())
    }

    /// Spreads replicas and preferred leaders evenly over the eligible nodes; returns how many
    /// partitions it started moving.
    pub async fn rebalance(&self) -> Result<usize, ControllerError> {
        crate::routing::request_controller(&self.inner, &crate::ControllerRequest::Rebalance)
            .await
            .map(|moved| usize::try_from(moved.unwrap_or(0)).unwrap_or(usize::MAX))
    }

    /// Hands each partition (of `groups`, or all) to its preferred replica where that replica
    /// is alive and caught up, asking every node to do so for the partitions it leads. Returns
    /// the partitions whose preferred replicas stood for election, and those they lead already
    /// (a partition in neither has no leader, or a preferred replica that is not available).
    pub async fn elect_leaders(&self, groups: Option<Vec<u64>>) -> crate::reassign::Elected {
        let only: Option<std::collections::HashSet<u64>> =
            groups.as_ref().map(|g| g.iter().copied().collect());
        let me = self.inner.config.node_id;
        let peers: Vec<(NodeId, String)> = self.inner.metadata.with_metadata(|m| {
            m.nodes()
                .filter(|n| n.id != me)
                .map(|n| (n.id, n.raft_addr.clone()))
                .collect()
        });
        let mut calls = tokio::task::JoinSet::new();
        for (id, addr) in peers {
            let Ok(mut client) = self.inner.peers.client(&addr) else {
                continue;
            };
            let group_ids = groups.clone().unwrap_or_default();
            calls.spawn(async move {
                let request = quipu_proto::v1::ElectLeadersRequest {
                    from_node: me,
                    to_node: id,
                    group_ids,
                };
                match tokio::time::timeout(ELECT_LEADERS_WAIT, client.elect_leaders(request)).await
                {
                    Ok(Ok(reply)) => {
                        let reply = reply.into_inner();
                        crate::reassign::Elected {
                            asked: reply.asked,
                            already: reply.already,
                        }
                    }
                    _ => crate::reassign::Elected::default(),
                }
            });
        }
        let mut elected = self.inner.leaders().elect_preferred(only.as_ref()).await;
        while let Some(done) = calls.join_next().await {
            let more = done.unwrap_or_default();
            elected.asked.extend(more.asked);
            elected.already.extend(more.already);
        }
        elected
    }
}
