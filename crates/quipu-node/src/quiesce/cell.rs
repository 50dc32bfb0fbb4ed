//! One group's quiescence state on this node ([`QuietCell`]) and whether it may stand for
//! election ([`ElectionGate`]): the only place openraft's timers are switched.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{Raft, ServerState};
use quipu_proto::v1::QuietGroup;
use quipu_raft::shared::PartitionShared;
use quipu_raft::{NodeId, TypeConfig};
use tokio::time::Instant;

use super::rules::{GroupView, follower_may_quiesce, leader_may_quiesce, majority_alive};
use super::{Round, STABLE_ROUNDS};
use crate::GroupId;

/// How long a woken quiet follower waits before its election timer runs again (more than two
/// default heartbeat intervals).
pub(super) const ELECT_AFTER_WAKE: Duration = Duration::from_millis(250);

/// Where a group stands with respect to quiescence on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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

pub(super) const ACTIVE: State = State::Active {
    stable: 0,
    last_index: None,
    nudged: None,
};

/// Voters of a group other than this node, with their transport addresses.
pub(super) type PeerList = Arc<Vec<(NodeId, String)>>;

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
    pub(super) fn enable_elect(&self, raft: &Raft<TypeConfig>) {
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
pub(super) fn set_timers(raft: &Raft<TypeConfig>, on: bool, gate: &ElectionGate) {
    let config = raft.runtime_config();
    config.tick(on);
    config.heartbeat(on);
    if on {
        gate.enable_elect(raft);
    } else {
        config.elect(false);
    }
}

impl QuietCell {
    /// Whether the group is quiet on this node (as a leader or a follower).
    pub(crate) fn is_quiet(&self) -> bool {
        matches!(
            self.lock().0,
            State::Leading { .. } | State::Following { .. }
        )
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, (State, PeerList)> {
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

    /// A write is about to be proposed to this group on this node: a quiet leader wakes now,
    /// not at the next round, so the write does not wait for it.
    pub(crate) fn before_write(&self, group: GroupId, raft: &Raft<TypeConfig>) {
        let mut cell = self.lock();
        if let State::Leading { .. } = cell.0 {
            tracing::debug!(%group, "a write wakes a quiet leader");
            set_timers(raft, true, &self.gate);
            cell.0 = ACTIVE;
        }
    }

    /// Node heartbeat number `seen` from `leader` lists this group: go quiet if this follower
    /// agrees, or note that the leader still lists it.
    pub(super) fn listed(
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
    pub(super) fn round(
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

    pub(super) fn step(
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
pub(super) fn stand_for_election(
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
