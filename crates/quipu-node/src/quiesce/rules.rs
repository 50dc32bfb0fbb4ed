//! When a group may go quiet: pure decisions over what its metrics say ([`GroupView`]) and which
//! peers are alive.

use std::collections::BTreeMap;

use openraft::{Raft, ServerState};
use quipu_raft::{NodeId, TypeConfig};

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
pub(super) fn majority_alive(peers: &[(NodeId, String)], alive: impl Fn(NodeId) -> bool) -> bool {
    let live = 1 + peers.iter().filter(|(p, _)| alive(*p)).count();
    live * 2 > peers.len() + 1
}

/// Whether a follower described by `view` may go quiet under `leader`'s listing of its group.
pub(super) fn follower_may_quiesce(
    view: &GroupView,
    leader: NodeId,
    term: u64,
    last_index: u64,
) -> bool {
    view.state == ServerState::Follower
        && view.leader == Some(leader)
        && view.term == term
        && view.last_index == Some(last_index)
        && view.applied == Some(last_index)
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
}
