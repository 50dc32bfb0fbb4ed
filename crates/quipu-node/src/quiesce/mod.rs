//! Quiescence: idle partition groups stop ticking and heartbeating, and one heartbeat per node
//! pair stands in for all of them. Design and failure cases: "Quiescence" in
//! `docs/internals/replication.md`.
//!
//! Invariants:
//! - Only timers are switched (openraft's tick, heartbeat and election flags); no Raft message is
//!   suppressed or invented, so quiescence can cost availability, never safety.
//! - A leader goes quiet only when a majority of the group's voters is alive, every live voter
//!   holds its whole log, the log is committed and applied, and nothing changed for
//!   [`STABLE_ROUNDS`] rounds. A follower goes quiet only when its leader's node heartbeat lists
//!   the group with the follower's own term, leader and committed last index.
//! - Any Raft message for a quiet group wakes it, after the message is handled (so a follower's
//!   election timer is refreshed by its leader before it runs again).
//! - A quiet follower wakes when its leader's node falls silent for an election timeout, or when
//!   the leader stops listing the group (then on the group's next message, or after an election
//!   timeout at most).
//!
//! Modules: `cell` (one group's quiet state and its election gate), `rules` (when a leader or a
//! follower may go quiet: pure decisions over a group's metrics), `liveness` (when each peer's
//! node heartbeat was last heard); this file runs the rounds and handles node heartbeats.

mod cell;
mod liveness;
mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quipu_proto::v1::{NodeHeartbeat, QuietGroup};
use quipu_raft::NodeId;
use tokio::time::Instant;

pub(crate) use cell::QuietCell;
pub(crate) use liveness::Liveness;
use liveness::{Heard, is_alive, is_silent};
pub(crate) use rules::GroupView;

use crate::GroupId;
use crate::groups::Groups;
use crate::network::Peers;

/// Rounds (one per Raft heartbeat interval) a leader's group must stay caught up and unchanged
/// before it goes quiet: enough for the commit index to have reached every follower.
pub(crate) const STABLE_ROUNDS: u32 = 3;

/// Most quiet groups one node heartbeat lists; a leader does not quiesce more groups with a peer.
pub(crate) const QUIET_GROUPS_MAX: usize = 65_536;

/// The timings of quiescence, derived from the Raft configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    /// One round, and one node heartbeat per peer: the Raft heartbeat interval.
    pub round: Duration,
    /// A node not heard from for this long is silent: the maximum election timeout (openraft's
    /// leader lease, after which followers grant votes again) plus one heartbeat interval.
    pub liveness: Duration,
    /// The followers of a silent leader stand for election this far apart, in node-id order.
    pub rank_step: Duration,
}

impl Timings {
    pub(crate) fn of(config: &openraft::Config) -> Timings {
        Timings {
            round: Duration::from_millis(config.heartbeat_interval.max(1)),
            // One heartbeat interval past the lease: when a node is found silent, its followers'
            // leases (renewed by the group's last heartbeat, up to an interval apart from the
            // node's) have run out and they grant votes at once.
            liveness: Duration::from_millis(
                config.election_timeout_max + config.heartbeat_interval,
            ),
            rank_step: Duration::from_millis(config.election_timeout_min / 4),
        }
    }

    /// A delay below half a `rank_step` that differs between nodes, groups and calls.
    fn jitter(&self, group: GroupId, node: NodeId) -> Duration {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        let mut z = group.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ node.rotate_left(17) ^ nanos;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let max = u64::try_from(self.rank_step.as_millis() / 2).unwrap_or(u64::MAX);
        Duration::from_millis(z % max.max(1))
    }
}

/// What one round knows about all peers.
struct Round<'a> {
    node_id: NodeId,
    now: Instant,
    timings: Timings,
    /// Whether leaders may go quiet (node configuration).
    quiesce: bool,
    heard: &'a HashMap<NodeId, Heard>,
    /// Peers alive now that were not in the previous round, or that restarted.
    revived: &'a std::collections::HashSet<NodeId>,
    /// Quiet groups listed so far for each peer in this round.
    listed: &'a HashMap<NodeId, usize>,
}

impl Round<'_> {
    fn full(&self, peer: NodeId) -> bool {
        self.listed.get(&peer).copied().unwrap_or(0) >= QUIET_GROUPS_MAX
    }

    /// Heard within the liveness timeout.
    fn is_alive(&self, peer: NodeId) -> bool {
        is_alive(self.heard.get(&peer), self.now, self.timings.liveness)
    }

    /// Heard before, but not within the liveness timeout. A node never heard of is not silent:
    /// after a start, nothing is known yet.
    fn is_silent(&self, peer: NodeId) -> bool {
        is_silent(self.heard.get(&peer), self.now, self.timings.liveness)
    }

    fn heartbeats(&self, peer: NodeId) -> u64 {
        self.heard.get(&peer).map_or(0, |h| h.heartbeats)
    }
}

/// A node heartbeat arrived: update the quiet state of the groups it lists, then record the
/// sender alive (a round that sees the new count then sees the groups' updates too).
pub(crate) fn on_node_heartbeat(groups: &Groups, liveness: &Liveness, heartbeat: &NodeHeartbeat) {
    let from = heartbeat.from_node;
    let _one_at_a_time = liveness
        .handling
        .lock()
        .expect("liveness lock poisoned by a panic");
    let number = liveness.heartbeats(from) + 1;
    groups.with_partitions(|map| {
        for quiet in heartbeat.quiet.iter().take(QUIET_GROUPS_MAX) {
            let group = GroupId(quiet.group_id);
            if group == GroupId::CONTROLLER {
                continue;
            }
            if let Some(hosted) = map.get(&group) {
                hosted
                    .quiet
                    .listed(group, &hosted.raft, from, *quiet, number);
            }
        }
    });
    liveness.record(from, heartbeat.incarnation, number);
}

/// The node's quiescence task: every round it updates each partition group's quiet state and
/// sends each peer one node heartbeat. Runs until aborted.
pub(crate) async fn run(
    node_id: NodeId,
    incarnation: Arc<std::sync::atomic::AtomicU64>,
    groups: Arc<Groups>,
    peers: Arc<Peers>,
    liveness: Arc<Liveness>,
    timings: Timings,
    quiesce: bool,
) {
    let mut ticker = tokio::time::interval(timings.round);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_alive: HashMap<NodeId, u64> = HashMap::new();
    // The peers of the previous round (whose liveness this round compares).
    let mut known: BTreeMap<NodeId, String> = BTreeMap::new();
    let in_flight: Arc<Mutex<std::collections::HashSet<NodeId>>> = Arc::default();
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let hosted = groups.partitions();
        let heard = liveness.snapshot();
        let mut revived = std::collections::HashSet::new();
        let mut alive_now = HashMap::new();
        for peer in known.keys() {
            if let Some(h) = heard.get(peer)
                && is_alive(Some(h), now, timings.liveness)
            {
                if was_alive.get(peer) != Some(&h.incarnation) {
                    revived.insert(*peer);
                }
                alive_now.insert(*peer, h.incarnation);
            }
        }
        was_alive = alive_now;
        let mut lists: HashMap<NodeId, Vec<QuietGroup>> = HashMap::new();
        let mut listed: HashMap<NodeId, usize> = HashMap::new();
        // Every voter of every group is a peer to keep informed; learnt afresh each round.
        let mut addrs: BTreeMap<NodeId, String> = BTreeMap::new();
        for (group, hosted) in &hosted {
            let ctx = Round {
                node_id,
                now,
                timings,
                quiesce,
                heard: &heard,
                revived: &revived,
                listed: &listed,
            };
            let (group_peers, entry) = hosted.quiet.round(*group, &hosted.raft, &ctx);
            for (peer, addr) in group_peers.iter() {
                if !addrs.contains_key(peer) {
                    addrs.insert(*peer, addr.clone());
                }
                if let Some(entry) = entry
                    && is_alive(heard.get(peer), now, timings.liveness)
                {
                    *listed.entry(*peer).or_default() += 1;
                    lists.entry(*peer).or_default().push(entry);
                }
            }
        }
        // The controller's voters are peers too (a cluster without partitions still has node
        // liveness).
        if let Some(controller) = groups.get_hosted(GroupId::CONTROLLER) {
            for (peer, addr) in GroupView::of(&controller.raft, true).peers {
                addrs.entry(peer).or_insert(addr);
            }
        }
        known = addrs.clone();
        if peers.is_isolated() {
            continue;
        }
        for (peer, addr) in addrs {
            let quiet = lists.remove(&peer).unwrap_or_default();
            let Ok(mut client) = peers.client(&addr) else {
                continue;
            };
            {
                let mut busy = in_flight
                    .lock()
                    .expect("in-flight lock poisoned by a panic");
                if !busy.insert(peer) {
                    continue; // the previous heartbeat to this peer is still on its way
                }
            }
            let in_flight = Arc::clone(&in_flight);
            let heartbeat = NodeHeartbeat {
                from_node: node_id,
                to_node: peer,
                incarnation: incarnation.load(std::sync::atomic::Ordering::SeqCst),
                quiet,
            };
            let deadline = timings.liveness;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(deadline, client.heartbeat(heartbeat)).await;
                in_flight
                    .lock()
                    .expect("in-flight lock poisoned by a panic")
                    .remove(&peer);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_tells_alive_silent_and_unknown_apart() {
        let liveness = Liveness::default();
        let timings = Timings::of(&openraft::Config::default());
        let (revived, listed) = (std::collections::HashSet::new(), HashMap::new());
        let round_at = |now: Instant, heard: &HashMap<NodeId, Heard>| {
            let ctx = Round {
                node_id: 1,
                now,
                timings,
                quiesce: true,
                heard,
                revived: &revived,
                listed: &listed,
            };
            (ctx.is_alive(7), ctx.is_silent(7), ctx.heartbeats(7))
        };
        let never = liveness.snapshot();
        assert_eq!(
            round_at(Instant::now(), &never),
            (false, false, 0),
            "never heard is not silent"
        );
        liveness.record(7, 1, 1);
        let heard = liveness.snapshot();
        let now = Instant::now();
        assert_eq!(round_at(now, &heard), (true, false, 1));
        assert_eq!(round_at(now + timings.liveness, &heard), (false, true, 1));
    }
}
