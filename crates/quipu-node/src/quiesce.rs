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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{Raft, ServerState};
use quipu_proto::v1::raft_transport_client::RaftTransportClient;
use quipu_proto::v1::{NodeHeartbeat, QuietGroup};
use quipu_raft::shared::PartitionShared;
use quipu_raft::{NodeId, TypeConfig};
use tokio::time::Instant;

use crate::GroupId;
use crate::groups::Groups;
use crate::network::Peers;

/// Rounds (one per Raft heartbeat interval) a leader's group must stay caught up and unchanged
/// before it goes quiet: enough for the commit index to have reached every follower.
pub(crate) const STABLE_ROUNDS: u32 = 3;
/// How long a woken quiet follower waits before its election timer runs again (more than two
/// default heartbeat intervals).
const ELECT_AFTER_WAKE: Duration = Duration::from_millis(250);

/// Most quiet groups one node heartbeat lists; a leader does not quiesce more groups with a peer.
pub(crate) const QUIET_GROUPS_MAX: usize = 65_536;

/// Where a group stands with respect to quiescence on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// openraft's own timers run. For a leader, `stable` counts consecutive rounds in which it
    /// could have gone quiet with `last_index` unchanged; `nudged` is the term in which this
    /// follower already started an election because its leader's node fell silent.
    Active {
        stable: u32,
        last_index: Option<u64>,
        nudged: Option<u64>,
    },
    /// A quiet leader: no ticks, no heartbeats.
    Leading { term: u64, last_index: u64 },
    /// A quiet follower of `leader` in `term`: no ticks, no election timer. `seen` is the number
    /// of the leader's last node heartbeat that listed the group.
    Following {
        leader: NodeId,
        term: u64,
        seen: u64,
    },
    /// A quiet follower whose leader stopped listing the group: its timers stay off until a
    /// message of the group arrives (a write, a heartbeat) or until `since` + an election timeout.
    Waking { since: Instant },
}

const ACTIVE: State = State::Active {
    stable: 0,
    last_index: None,
    nudged: None,
};

/// Voters of a group other than this node, with their transport addresses.
type PeerList = Arc<Vec<(NodeId, String)>>;

/// Whether a group may stand for election on this node: never once the node is leaving, and not
/// while its replica abstains because it lost entries it had acknowledged (`quipu-raft`'s flush
/// mark): a vote or a candidacy then could elect a leader without committed entries.
#[derive(Debug)]
pub(crate) struct ElectionGate {
    leaving: AtomicBool,
    shared: Arc<PartitionShared>,
    /// The election timer was switched off for an abstention that has not been seen to end.
    abstained: AtomicBool,
}

impl ElectionGate {
    /// Whether the group may stand for election (and grant votes) here now.
    pub(crate) fn may_stand(&self) -> bool {
        !self.leaving.load(Ordering::SeqCst) && !self.shared.is_abstaining()
    }

    /// Whether this replica abstains from votes and elections.
    pub(crate) fn abstaining(&self) -> bool {
        self.shared.is_abstaining()
    }

    /// Switches the group's election timer on if it may stand. Checked again after: a `leave`
    /// that ran in between (which switches it off) must win.
    fn enable_elect(&self, raft: &Raft<TypeConfig>) {
        if self.may_stand() {
            raft.runtime_config().elect(true);
            if !self.may_stand() {
                raft.runtime_config().elect(false);
            }
        }
    }
}

/// One group's quiescence state on this node.
#[derive(Debug)]
pub(crate) struct QuietCell {
    state: Mutex<(State, PeerList)>,
    gate: Arc<ElectionGate>,
}

impl QuietCell {
    /// The cell of a group whose log store and state machine share `shared`. A replica that
    /// abstains (see [`ElectionGate`]) has its election timer switched off now, until it holds
    /// its lost entries again.
    pub(crate) fn new(raft: &Raft<TypeConfig>, shared: Arc<PartitionShared>) -> QuietCell {
        let abstaining = shared.is_abstaining();
        if abstaining {
            raft.runtime_config().elect(false);
        }
        QuietCell {
            state: Mutex::new((ACTIVE, PeerList::default())),
            gate: Arc::new(ElectionGate {
                leaving: AtomicBool::new(false),
                shared,
                abstained: AtomicBool::new(abstaining),
            }),
        }
    }

    /// Whether the group may grant votes here (not while abstaining).
    pub(crate) fn may_vote(&self) -> bool {
        !self.gate.abstaining()
    }
}

/// Switches openraft's timers of a group on or off; the election timer stays off where the group
/// may not stand.
fn set_timers(raft: &Raft<TypeConfig>, on: bool, gate: &ElectionGate) {
    let config = raft.runtime_config();
    config.tick(on);
    config.heartbeat(on);
    if on {
        gate.enable_elect(raft);
    } else {
        config.elect(false);
    }
}

/// What the quiescence rounds read from a group's metrics, copied out at once (a held borrow
/// stalls the Raft core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupView {
    pub state: ServerState,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_index: Option<u64>,
    pub applied: Option<u64>,
    /// Voters other than this node, with their transport addresses.
    pub peers: Vec<(NodeId, String)>,
    /// On a leader: the last index each follower is known to hold.
    pub matched: BTreeMap<NodeId, Option<u64>>,
}

impl GroupView {
    /// The group's view; `peers` and `matched` stay empty unless `full` (they allocate, and a
    /// quiet group, whose membership cannot change without waking it, needs neither).
    pub(crate) fn of(raft: &Raft<TypeConfig>, full: bool) -> GroupView {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        if !full {
            return GroupView {
                state: m.state,
                term: m.current_term,
                leader: m.current_leader,
                last_index: m.last_log_index,
                applied: m.last_applied.map(|l| l.index),
                peers: Vec::new(),
                matched: BTreeMap::new(),
            };
        }
        let peers = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != m.id)
            .map(|id| {
                let addr = m
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.addr.clone())
                    .unwrap_or_default();
                (id, addr)
            })
            .collect();
        let matched = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, log_id)| (*id, log_id.map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        GroupView {
            state: m.state,
            term: m.current_term,
            leader: m.current_leader,
            last_index: m.last_log_index,
            applied: m.last_applied.map(|l| l.index),
            peers,
            matched,
        }
    }
}

/// Whether a leader described by `view` may stop heartbeating: its log is committed and applied,
/// a majority of voters (itself included) is alive, and every live follower holds the whole log.
/// Followers that are not alive are left out; when they come back the group wakes.
pub(crate) fn leader_may_quiesce(view: &GroupView, alive: impl Fn(NodeId) -> bool) -> bool {
    let Some(last_index) = view.last_index else {
        return false;
    };
    if view.state != ServerState::Leader || view.applied != Some(last_index) {
        return false;
    }
    let mut live_voters = 1; // the leader
    for (peer, _) in &view.peers {
        if !alive(*peer) {
            continue;
        }
        if view.matched.get(peer).copied().flatten() != Some(last_index) {
            return false;
        }
        live_voters += 1;
    }
    live_voters * 2 > view.peers.len() + 1
}

/// Whether a majority of a group's voters (this node and `peers`) is alive.
fn majority_alive(peers: &[(NodeId, String)], alive: impl Fn(NodeId) -> bool) -> bool {
    let live = 1 + peers.iter().filter(|(p, _)| alive(*p)).count();
    live * 2 > peers.len() + 1
}

/// Whether a follower described by `view` may go quiet under `leader`'s listing of its group.
fn follower_may_quiesce(view: &GroupView, leader: NodeId, term: u64, last_index: u64) -> bool {
    view.state == ServerState::Follower
        && view.leader == Some(leader)
        && view.term == term
        && view.last_index == Some(last_index)
        && view.applied == Some(last_index)
}

impl QuietCell {
    /// Whether the group is quiet on this node (as a leader or a follower).
    pub(crate) fn is_quiet(&self) -> bool {
        matches!(
            self.lock().0,
            State::Leading { .. } | State::Following { .. }
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, PeerList)> {
        self.state
            .lock()
            .expect("quiescence lock poisoned by a panic")
    }

    /// This node is leaving: the group must not stand for election here any more.
    pub(crate) fn leave(&self, raft: &Raft<TypeConfig>) {
        self.gate.leaving.store(true, Ordering::SeqCst);
        raft.runtime_config().elect(false);
    }

    /// Whether the group may stand for election here now (not leaving, not abstaining).
    pub(crate) fn may_stand(&self) -> bool {
        self.gate.may_stand()
    }

    /// Called after a Raft message of the group was handled: the group is needed, wake it.
    /// A quiet follower's election clock stopped when it went quiet, so it reads as long
    /// expired: if the waking message did not refresh it (a vote request it refused, a stale
    /// append), the follower would stand at its next tick and depose a healthy leader. Its
    /// election timer therefore comes back only after [`ELECT_AFTER_WAKE`], by when a live
    /// leader's heartbeats have refreshed the clock.
    pub(crate) fn after_message(&self, group: GroupId, raft: &Raft<TypeConfig>) {
        let mut cell = self.lock();
        match cell.0 {
            State::Active { .. } => {}
            State::Leading { .. } => {
                tracing::debug!(%group, "a raft message wakes a quiet leader");
                set_timers(raft, true, &self.gate);
                cell.0 = ACTIVE;
            }
            State::Following { .. } | State::Waking { .. } => {
                tracing::debug!(%group, from = ?cell.0, "a raft message wakes a quiet follower");
                let config = raft.runtime_config();
                config.tick(true);
                config.heartbeat(true);
                cell.0 = ACTIVE;
                let (raft, gate) = (raft.clone(), Arc::clone(&self.gate));
                tokio::spawn(async move {
                    tokio::time::sleep(ELECT_AFTER_WAKE).await;
                    gate.enable_elect(&raft);
                });
            }
        }
    }

    /// Node heartbeat number `seen` from `leader` lists this group: go quiet if this follower
    /// agrees, or note that the leader still lists it.
    fn listed(
        &self,
        group: GroupId,
        raft: &Raft<TypeConfig>,
        leader: NodeId,
        quiet: QuietGroup,
        seen: u64,
    ) {
        let mut cell = self.lock();
        match cell.0 {
            State::Following {
                leader: l, term: t, ..
            } if l == leader && t == quiet.term => {
                cell.0 = State::Following {
                    leader,
                    term: quiet.term,
                    seen,
                };
            }
            State::Active { .. } | State::Waking { .. } | State::Following { .. } => {
                let view = GroupView::of(raft, false);
                if follower_may_quiesce(&view, leader, quiet.term, quiet.last_index) {
                    set_timers(raft, false, &self.gate);
                    cell.0 = State::Following {
                        leader,
                        term: quiet.term,
                        seen,
                    };
                    tracing::debug!(%group, leader, term = quiet.term, last_index = quiet.last_index, "follower quiescent");
                }
            }
            State::Leading { .. } => {}
        }
    }

    /// One round of the node's quiescence task for this group. Returns the group's peers, and the
    /// group's entry for the node heartbeats to its live followers when it leads quietly.
    fn round(
        &self,
        group: GroupId,
        raft: &Raft<TypeConfig>,
        ctx: &Round<'_>,
    ) -> (PeerList, Option<QuietGroup>) {
        let mut cell = self.lock();
        let (state, peers) = &mut *cell;
        // An abstention that ended (the lost entries are back): elections come back.
        if self.gate.abstained.load(Ordering::SeqCst) && self.gate.may_stand() {
            self.gate.abstained.store(false, Ordering::SeqCst);
            if matches!(state, State::Active { .. }) {
                self.gate.enable_elect(raft);
            }
        }
        // A quiet follower's state cannot change without a message (which wakes it), so it
        // reads no metrics; a quiet leader's can (a client write), so it reads the cheap part.
        let view = match state {
            State::Active { .. } => {
                let view = GroupView::of(raft, true);
                *peers = Arc::new(view.peers.clone());
                Some(view)
            }
            State::Leading { .. } => Some(GroupView::of(raft, false)),
            State::Following { .. } | State::Waking { .. } => None,
        };
        let peers = Arc::clone(peers);
        let entry = Self::step(state, group, raft, view.as_ref(), &peers, &self.gate, ctx);
        (peers, entry)
    }

    fn step(
        state: &mut State,
        group: GroupId,
        raft: &Raft<TypeConfig>,
        view: Option<&GroupView>,
        peers: &[(NodeId, String)],
        gate: &Arc<ElectionGate>,
        ctx: &Round<'_>,
    ) -> Option<QuietGroup> {
        let alive = |peer: NodeId| ctx.is_alive(peer);
        match (*state, view) {
            (State::Leading { term, last_index }, Some(view)) => {
                // Live followers held the whole log when the group went quiet and nothing was
                // appended since; a follower that was left out wakes the group when it revives.
                let revived = peers.iter().any(|(p, _)| ctx.revived.contains(p));
                let full = peers.iter().any(|(p, _)| ctx.full(*p));
                if revived
                    || full
                    || view.state != ServerState::Leader
                    || view.term != term
                    || view.last_index != Some(last_index)
                    || view.applied != Some(last_index)
                    || !majority_alive(peers, alive)
                {
                    tracing::debug!(%group, revived, "quiet leader wakes");
                    set_timers(raft, true, gate);
                    *state = ACTIVE;
                    let raft = raft.clone();
                    // Followers hear from it at once instead of at the next tick.
                    tokio::spawn(async move {
                        let _ = raft.trigger().heartbeat().await;
                    });
                    return None;
                }
                Some(QuietGroup {
                    group_id: group.0,
                    term,
                    last_index,
                })
            }
            (
                State::Active {
                    stable,
                    last_index,
                    nudged,
                },
                Some(view),
            ) => {
                if view.state == ServerState::Leader {
                    let eligible = ctx.quiesce
                        && leader_may_quiesce(view, alive)
                        && !view.peers.iter().any(|(p, _)| ctx.full(*p));
                    let stable = if eligible && last_index == view.last_index {
                        stable + 1
                    } else {
                        0
                    };
                    if let (true, Some(index)) = (stable >= STABLE_ROUNDS, view.last_index) {
                        let config = raft.runtime_config();
                        config.heartbeat(false);
                        config.tick(false);
                        *state = State::Leading {
                            term: view.term,
                            last_index: index,
                        };
                        tracing::debug!(%group, term = view.term, last_index = index, "leader quiescent");
                        return Some(QuietGroup {
                            group_id: group.0,
                            term: view.term,
                            last_index: index,
                        });
                    }
                    *state = State::Active {
                        stable,
                        last_index: view.last_index,
                        nudged,
                    };
                    return None;
                }
                // A follower whose leader's node fell silent stands for election at once (in
                // turn with the other followers) instead of waiting out its own election timeout.
                if let Some(leader) = view.leader
                    && leader != ctx.node_id
                    && ctx.is_silent(leader)
                    && nudged != Some(view.term)
                {
                    *state = State::Active {
                        stable: 0,
                        last_index: view.last_index,
                        nudged: Some(view.term),
                    };
                    stand_for_election(group, raft, leader, peers, Arc::clone(gate), ctx);
                }
                None
            }
            (State::Following { leader, seen, term }, _) => {
                if !alive(leader) {
                    tracing::info!(%group, leader, "quiet group's leader is silent: waking");
                    // Ticks on; the election timer (stale after a quiet spell, so it would fire
                    // at the next tick on every follower at once) comes back after this
                    // follower's turn to stand, which is taken once for this term.
                    let config = raft.runtime_config();
                    config.tick(true);
                    config.heartbeat(true);
                    *state = State::Active {
                        stable: 0,
                        last_index: None,
                        nudged: Some(term),
                    };
                    stand_for_election(group, raft, leader, peers, Arc::clone(gate), ctx);
                } else if ctx.heartbeats(leader) > seen {
                    // The leader's latest node heartbeat left the group out: the leader woke
                    // (a write) or lost the group. Its next message wakes the group here.
                    tracing::debug!(%group, leader, "leader no longer lists the group: waking");
                    *state = State::Waking { since: ctx.now };
                }
                None
            }
            (State::Waking { since }, _) => {
                if ctx.now.duration_since(since) >= ctx.timings.liveness {
                    set_timers(raft, true, gate);
                    *state = ACTIVE;
                }
                None
            }
            (State::Leading { .. } | State::Active { .. }, None) => None,
        }
    }
}

/// Stands for election in `group`, whose leader's node is silent, after this node's turn: the
/// surviving voters go in node-id order, one `rank_step` apart (plus a little jitter), so they do
/// not split the vote. Skipped if another leader or candidate appeared meanwhile, or if this node
/// may not stand. Leaves the election timer on (unless it may not stand).
fn stand_for_election(
    group: GroupId,
    raft: &Raft<TypeConfig>,
    leader: NodeId,
    peers: &[(NodeId, String)],
    gate: Arc<ElectionGate>,
    ctx: &Round<'_>,
) {
    let mut survivors: Vec<NodeId> = peers
        .iter()
        .map(|(id, _)| *id)
        .chain(std::iter::once(ctx.node_id))
        .filter(|id| *id != leader)
        .collect();
    survivors.sort_unstable();
    let rank = survivors
        .iter()
        .position(|id| *id == ctx.node_id)
        .unwrap_or(0);
    let delay = ctx.timings.rank_step * u32::try_from(rank).unwrap_or(u32::MAX)
        + ctx.timings.jitter(group, ctx.node_id);
    let raft = raft.clone();
    tracing::info!(%group, leader, ?delay, "leader's node is silent: standing for election");
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let (leader_now, vote_committed) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            (m.current_leader, m.vote.is_committed())
        };
        if !gate.may_stand() {
            return;
        }
        if leader_now == Some(leader) && vote_committed {
            let _ = raft.trigger().elect().await;
        }
        gate.enable_elect(&raft);
    });
}

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

/// What this node last heard from a peer.
#[derive(Debug, Clone, Copy)]
struct Heard {
    at: Instant,
    incarnation: u64,
    /// How many node heartbeats of this peer were handled.
    heartbeats: u64,
}

/// When this node last heard each peer's node heartbeat.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    heard: Mutex<HashMap<NodeId, Heard>>,
    /// Node heartbeats are handled one at a time (their numbering must follow their effects).
    handling: Mutex<()>,
}

impl Liveness {
    fn snapshot(&self) -> HashMap<NodeId, Heard> {
        self.heard
            .lock()
            .expect("liveness lock poisoned by a panic")
            .clone()
    }

    fn last(&self, node: NodeId) -> Option<Heard> {
        self.heard
            .lock()
            .expect("liveness lock poisoned by a panic")
            .get(&node)
            .copied()
    }

    /// Whether `node`'s node heartbeats arrived within `timeout`.
    pub(crate) fn is_alive(&self, node: NodeId, timeout: Duration) -> bool {
        is_alive(self.last(node).as_ref(), Instant::now(), timeout)
    }

    /// Whether `node` was heard before but not within `timeout` (never heard: no).
    pub(crate) fn is_silent(&self, node: NodeId, timeout: Duration) -> bool {
        is_silent(self.last(node).as_ref(), Instant::now(), timeout)
    }

    fn heartbeats(&self, node: NodeId) -> u64 {
        self.heard
            .lock()
            .expect("liveness lock poisoned by a panic")
            .get(&node)
            .map_or(0, |h| h.heartbeats)
    }

    fn record(&self, node: NodeId, incarnation: u64, heartbeats: u64) {
        self.heard
            .lock()
            .expect("liveness lock poisoned by a panic")
            .insert(
                node,
                Heard {
                    at: Instant::now(),
                    incarnation,
                    heartbeats,
                },
            );
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

fn is_alive(heard: Option<&Heard>, now: Instant, timeout: Duration) -> bool {
    heard.is_some_and(|h| now.saturating_duration_since(h.at) < timeout)
}

/// Heard before, but not within `timeout`. A node never heard of is not silent: after a start,
/// nothing is known yet.
fn is_silent(heard: Option<&Heard>, now: Instant, timeout: Duration) -> bool {
    heard.is_some_and(|h| now.saturating_duration_since(h.at) >= timeout)
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
    incarnation: u64,
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
            let Ok(channel) = peers.channel(&addr) else {
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
                incarnation,
                quiet,
            };
            let deadline = timings.liveness;
            tokio::spawn(async move {
                let mut client = RaftTransportClient::new(channel)
                    .max_decoding_message_size(crate::network::MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(crate::network::MESSAGE_BYTES_MAX);
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

    fn leader_view(last: u64, applied: u64, matched: &[(NodeId, Option<u64>)]) -> GroupView {
        GroupView {
            state: ServerState::Leader,
            term: 3,
            leader: Some(1),
            last_index: Some(last),
            applied: Some(applied),
            peers: matched.iter().map(|(id, _)| (*id, String::new())).collect(),
            matched: matched.iter().copied().collect(),
        }
    }

    #[test]
    fn a_caught_up_committed_leader_may_quiesce() {
        let view = leader_view(10, 10, &[(2, Some(10)), (3, Some(10))]);
        assert!(leader_may_quiesce(&view, |_| true));
    }

    #[test]
    fn a_live_lagging_follower_keeps_the_leader_awake() {
        let view = leader_view(10, 10, &[(2, Some(10)), (3, Some(9))]);
        assert!(!leader_may_quiesce(&view, |_| true));
        let view = leader_view(10, 10, &[(2, Some(10)), (3, None)]);
        assert!(!leader_may_quiesce(&view, |_| true));
    }

    #[test]
    fn a_dead_follower_is_left_out_but_a_majority_must_be_alive() {
        let view = leader_view(10, 10, &[(2, Some(10)), (3, Some(4))]);
        assert!(leader_may_quiesce(&view, |p| p != 3));
        assert!(!leader_may_quiesce(&view, |_| false));
    }

    #[test]
    fn an_uncommitted_or_unapplied_tail_keeps_the_leader_awake() {
        let view = leader_view(10, 9, &[(2, Some(10)), (3, Some(10))]);
        assert!(!leader_may_quiesce(&view, |_| true));
        let mut view = leader_view(10, 10, &[(2, Some(10)), (3, Some(10))]);
        view.last_index = None;
        assert!(!leader_may_quiesce(&view, |_| true));
    }

    #[test]
    fn only_a_leader_may_quiesce_as_leader() {
        let mut view = leader_view(10, 10, &[(2, Some(10)), (3, Some(10))]);
        view.state = ServerState::Follower;
        assert!(!leader_may_quiesce(&view, |_| true));
    }

    #[test]
    fn a_follower_quiesces_only_in_agreement_with_its_leader() {
        let view = GroupView {
            state: ServerState::Follower,
            term: 3,
            leader: Some(1),
            last_index: Some(10),
            applied: Some(10),
            peers: vec![(1, String::new()), (3, String::new())],
            matched: BTreeMap::new(),
        };
        assert!(follower_may_quiesce(&view, 1, 3, 10));
        assert!(!follower_may_quiesce(&view, 3, 3, 10), "another leader");
        assert!(!follower_may_quiesce(&view, 1, 4, 10), "another term");
        assert!(!follower_may_quiesce(&view, 1, 3, 11), "a shorter log");
        let behind = GroupView {
            applied: Some(9),
            ..view.clone()
        };
        assert!(!follower_may_quiesce(&behind, 1, 3, 10), "not applied");
    }

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
