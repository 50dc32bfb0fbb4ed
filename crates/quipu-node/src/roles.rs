//! What a partition replica saw of its group's roles since it opened: leader changes and the
//! elections this node started. Fed by the replica's election watchdog, which already wakes on
//! every change of the group's server metrics (vote, role, leader, membership) and on nothing
//! else; read by the admin listener's scrape. Node-wide totals go to the `metrics` facade
//! (`quipu_leader_changes_total`, `quipu_elections_total`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::ServerState;
use openraft::metrics::RaftServerMetrics;
use quipu_raft::NodeId;

/// One replica's counts, and the last state they were derived from.
#[derive(Debug, Default)]
pub(crate) struct RoleEvents {
    leader_changes: AtomicU64,
    elections: AtomicU64,
    last: Mutex<Last>,
}

#[derive(Debug, Default)]
struct Last {
    leader: Option<NodeId>,
    candidate: bool,
}

impl RoleEvents {
    /// Takes in the group's server metrics after a change.
    pub(crate) fn observe(&self, m: &RaftServerMetrics<NodeId, openraft::BasicNode>) {
        let mut last = self.last.lock().expect("roles lock poisoned by a panic");
        // A leader learnt of (at open too) or replaced counts; losing one does not, the next
        // leader does.
        if m.current_leader.is_some() && m.current_leader != last.leader {
            self.leader_changes.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("quipu_leader_changes_total").increment(1);
        }
        if m.current_leader.is_some() {
            last.leader = m.current_leader;
        }
        let candidate = m.state == ServerState::Candidate;
        if candidate && !last.candidate {
            self.elections.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("quipu_elections_total").increment(1);
        }
        last.candidate = candidate;
    }

    /// Leaders this replica learnt of since it opened (the first one included).
    pub(crate) fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }

    /// Elections this replica started since it opened.
    pub(crate) fn elections(&self) -> u64 {
        self.elections.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(
        leader: Option<NodeId>,
        state: ServerState,
    ) -> RaftServerMetrics<NodeId, openraft::BasicNode> {
        RaftServerMetrics {
            id: 1,
            vote: openraft::Vote::default(),
            state,
            current_leader: leader,
            membership_config: std::sync::Arc::default(),
        }
    }

    #[test]
    fn leader_changes_and_elections_are_counted_once_each() {
        let events = RoleEvents::default();
        events.observe(&metrics(None, ServerState::Follower));
        assert_eq!(events.leader_changes(), 0);
        events.observe(&metrics(Some(2), ServerState::Follower));
        events.observe(&metrics(Some(2), ServerState::Follower)); // a membership change, say
        assert_eq!(events.leader_changes(), 1);
        // The leader goes; this node campaigns (twice in a row reported: one election).
        events.observe(&metrics(None, ServerState::Candidate));
        events.observe(&metrics(None, ServerState::Candidate));
        assert_eq!(events.elections(), 1);
        events.observe(&metrics(Some(1), ServerState::Leader));
        assert_eq!(events.leader_changes(), 2);
        // The old leader comes back as leader after a gap: a change again.
        events.observe(&metrics(None, ServerState::Follower));
        events.observe(&metrics(Some(2), ServerState::Follower));
        assert_eq!(events.leader_changes(), 3);
        events.observe(&metrics(None, ServerState::Candidate));
        assert_eq!(events.elections(), 2);
    }
}
