//! Leadership handoff on a graceful stop: each group this node leads asks a caught-up follower to
//! stand for election, so that clients see a new leader at once instead of after an election
//! timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::Raft;
use quipu_raft::{NodeId, TypeConfig};

use crate::GroupId;
use crate::node::Inner;
use crate::quiesce;

/// How long a leaving node waits for the groups it leads to elect new leaders.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// Hands the leadership of every group this node leads to a caught-up follower; returns how many
/// groups have another leader by the deadline. With `stopping`, the node's partitions refuse
/// produce requests from now on (it is about to stop; a drained node goes on serving until its
/// leaderships have moved).
pub(crate) async fn hand_off_leadership(inner: &Inner, stopping: bool) -> usize {
    let deadline = tokio::time::Instant::now() + HANDOFF_TIMEOUT;
    let me = inner.config.node_id;
    let partitions = inner.hosted_partitions();
    if stopping {
        for partition in &partitions {
            partition.drain();
        }
    }
    let mut led: Vec<(GroupId, Raft<TypeConfig>)> = partitions
        .iter()
        .filter(|p| p.is_leader())
        .map(|p| (p.group(), p.raft().clone()))
        .collect();
    if let Some(controller) = inner.groups.get_hosted(GroupId::CONTROLLER) {
        controller.quiet.leave(&controller.raft);
    }
    let leads_controller = inner.controller.metrics().borrow().current_leader == Some(me);
    if leads_controller {
        led.push((GroupId::CONTROLLER, inner.controller.clone()));
    }
    let liveness_timeout = quiesce::Timings::of(&inner.raft_config).liveness;
    // Unknown counts as alive (a node just started has heard nobody yet); silent does not.
    let alive = |id: NodeId| !inner.liveness.is_silent(id, liveness_timeout);
    // Each group's candidates: live followers that hold the whole log (waited for, since writes
    // proposed before draining may still be replicating), with their addresses.
    // A group with no other live voter has nobody to hand over to.
    led.retain(|(_, raft)| {
        crate::groups::voter_ids(raft)
            .into_iter()
            .any(|id| id != me && alive(id))
    });
    let mut candidates: Vec<(GroupId, Vec<(NodeId, String)>)> = Vec::new();
    for (group, raft) in &led {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let caught_up = raft
            .wait(Some(remaining))
            .metrics(
                |m| {
                    m.state != openraft::ServerState::Leader
                        || m.replication.as_ref().is_some_and(|r| {
                            r.iter().any(|(id, matched)| {
                                *id != me
                                    && alive(*id)
                                    && matched.map(|l| l.index) == m.last_log_index
                            })
                        })
                },
                "a follower holding the whole log",
            )
            .await;
        let Ok(m) = caught_up else {
            tracing::warn!(%group, "no follower caught up in time: leaving without a handoff");
            continue;
        };
        let Some(replication) = m.replication.as_ref() else {
            continue; // no longer the leader
        };
        let list: Vec<(NodeId, String)> = replication
            .iter()
            .filter(|(id, matched)| {
                **id != me && alive(**id) && matched.map(|l| l.index) == m.last_log_index
            })
            .filter_map(|(id, _)| {
                m.membership_config
                    .membership()
                    .get_node(id)
                    .map(|n| (*id, n.addr.clone()))
            })
            .collect();
        if !list.is_empty() {
            candidates.push((*group, list));
        }
    }
    // Ask the first candidates, spreading groups over them; a group whose candidate did not
    // stand for election (it had not heard from this leader yet, say) asks its next one.
    let mut started = std::collections::HashSet::new();
    for round in 0..2 {
        let mut asks: BTreeMap<NodeId, (String, Vec<u64>)> = BTreeMap::new();
        for (group, list) in &candidates {
            if started.contains(&group.0) {
                continue;
            }
            let mut ranked: Vec<&(NodeId, String)> = list.iter().collect();
            ranked.sort_by_key(|(id, _)| asks.get(id).map_or(0, |(_, groups)| groups.len()));
            let Some((successor, addr)) = ranked.get(round).or(ranked.first()) else {
                continue;
            };
            asks.entry(*successor)
                .or_insert_with(|| (addr.clone(), Vec::new()))
                .1
                .push(group.0);
        }
        if asks.is_empty() {
            break;
        }
        started.extend(ask_to_campaign(&inner.peers, me, asks, deadline).await);
    }
    // Only groups whose successor stood for election can change hands before this node leaves.
    let mut handed = 0;
    for (group, raft) in led.iter().filter(|(g, _)| started.contains(&g.0)) {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let moved = raft
            .wait(Some(remaining))
            .metrics(
                |m| m.current_leader.is_some_and(|leader| leader != me),
                "another leader",
            )
            .await;
        match moved {
            Ok(_) => handed += 1,
            Err(_) => tracing::warn!(%group, "leadership did not move in time"),
        }
    }
    tracing::info!(
        node_id = me,
        led = led.len(),
        handed,
        "leadership handed over"
    );
    handed
}

/// How long a replica asked to take over waits, while no leader is known, before it stands for
/// election again; and how many times it does so.
const STAND_AGAIN_AFTER: Duration = Duration::from_millis(200);
const STAND_AGAIN_TIMES: u32 = 10;

/// Follows up the election a leader asked this replica of `group` to start: while no leader is
/// known, stands again every [`STAND_AGAIN_AFTER`], at most [`STAND_AGAIN_TIMES`] times.
///
/// The first election of a handoff is often refused: a follower that heard the leader less than
/// a leader lease ago refuses every vote (openraft 0.9 has no way for a candidate the leader
/// chose to pass that check). Its higher term still makes the old leader step down, and the old
/// leader, with an uncommitted vote, grants the next election; without a second one, the old
/// leader's own election timer fired first and it won again, so that a preferred-leader election
/// of a busy partition never moved the leadership and cost it a leaderless half second each
/// time. Safe: an election never loses or reorders a committed entry; it only costs
/// availability, and this is bounded in count.
pub(crate) async fn stand_until_led(group: GroupId, hosted: crate::groups::Hosted) {
    for _ in 0..STAND_AGAIN_TIMES {
        tokio::time::sleep(STAND_AGAIN_AFTER).await;
        let (leader, state) = {
            let metrics = hosted.raft.metrics();
            let m = metrics.borrow();
            (m.current_leader, m.state)
        };
        if leader.is_some()
            || !matches!(
                state,
                openraft::ServerState::Follower | openraft::ServerState::Candidate
            )
            || !hosted.quiet.may_stand()
        {
            return;
        }
        tracing::info!(%group, "no leader after a handoff: standing for election again");
        if hosted.raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

/// Sends each successor its `Campaign` request (all at once) and returns the groups in which an
/// election was started.
pub(crate) async fn ask_to_campaign(
    peers: &crate::network::Peers,
    me: NodeId,
    asks: BTreeMap<NodeId, (String, Vec<u64>)>,
    deadline: tokio::time::Instant,
) -> Vec<u64> {
    let mut calls = tokio::task::JoinSet::new();
    for (successor, (addr, group_ids)) in asks {
        let Ok(mut client) = peers.client(&addr) else {
            continue;
        };
        calls.spawn(async move {
            let request = quipu_proto::v1::CampaignRequest {
                from_node: me,
                to_node: successor,
                group_ids,
            };
            match tokio::time::timeout_at(deadline, client.campaign(request)).await {
                Ok(Ok(reply)) => {
                    let started = reply.into_inner().started;
                    tracing::info!(successor, groups = started.len(), "handing leadership over");
                    started
                }
                Ok(Err(status)) => {
                    tracing::warn!(
                        successor,
                        status = &status as &dyn std::error::Error,
                        "handoff refused"
                    );
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(successor, "handoff request timed out");
                    Vec::new()
                }
            }
        });
    }
    let mut started = Vec::new();
    while let Some(done) = calls.join_next().await {
        started.extend(done.unwrap_or_default());
    }
    started
}
