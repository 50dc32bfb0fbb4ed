//! When this node last heard each peer's node heartbeat ([`Liveness`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use quipu_raft::NodeId;
use tokio::time::Instant;

/// What this node last heard from a peer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heard {
    pub(super) at: Instant,
    pub(super) incarnation: u64,
    /// How many node heartbeats of this peer were handled.
    pub(super) heartbeats: u64,
}

/// When this node last heard each peer's node heartbeat.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    pub(super) heard: Mutex<HashMap<NodeId, Heard>>,
    /// Node heartbeats are handled one at a time (their numbering must follow their effects).
    pub(super) handling: Mutex<()>,
}

impl Liveness {
    pub(super) fn snapshot(&self) -> HashMap<NodeId, Heard> {
        self.heard
            .lock()
            .expect("liveness lock poisoned by a panic")
            .clone()
    }

    pub(super) fn last(&self, node: NodeId) -> Option<Heard> {
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

    pub(super) fn heartbeats(&self, node: NodeId) -> u64 {
        self.heard
            .lock()
            .expect("liveness lock poisoned by a panic")
            .get(&node)
            .map_or(0, |h| h.heartbeats)
    }

    pub(super) fn record(&self, node: NodeId, incarnation: u64, heartbeats: u64) {
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

pub(super) fn is_alive(heard: Option<&Heard>, now: Instant, timeout: Duration) -> bool {
    heard.is_some_and(|h| now.saturating_duration_since(h.at) < timeout)
}

/// Heard before, but not within `timeout`. A node never heard of is not silent: after a start,
/// nothing is known yet.
pub(super) fn is_silent(heard: Option<&Heard>, now: Instant, timeout: Duration) -> bool {
    heard.is_some_and(|h| now.saturating_duration_since(h.at) >= timeout)
}
