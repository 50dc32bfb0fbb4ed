//! [`Readiness`]: whether a node can serve, for `/readyz`, the gRPC `Health` call and `quipu
//! cluster health` alike: registered in the cluster's metadata, a controller leader known, every
//! replica assigned to it open and none stopped on a fatal error.

use crate::NodeHandle;

/// What a node knows of its own readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// This node's id.
    pub node_id: u64,
    /// Registered in the metadata (joined).
    pub registered: bool,
    /// The controller leader this node knows, if any.
    pub controller_leader: Option<u64>,
    /// Replicas the metadata assigns to this node.
    pub assigned_replicas: usize,
    /// Replicas open on this node (a partition moving away may have one not assigned).
    pub open_replicas: usize,
    /// Assigned replicas not open (yet) on this node.
    pub missing_replicas: usize,
    /// Open replicas that stopped on a fatal error.
    pub failed_replicas: usize,
}

impl Readiness {
    /// Why the node is not ready (empty: it is).
    pub fn not_ready_because(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.registered {
            reasons.push("not registered in the cluster yet".to_owned());
        }
        if self.controller_leader.is_none() {
            reasons.push("no controller leader known".to_owned());
        }
        if self.missing_replicas > 0 {
            reasons.push(format!(
                "{} of {} assigned replicas not open",
                self.missing_replicas, self.assigned_replicas
            ));
        }
        if self.failed_replicas > 0 {
            reasons.push(format!(
                "{} replicas stopped on a fatal error (see the log)",
                self.failed_replicas
            ));
        }
        reasons
    }

    /// Whether the node can serve.
    pub fn ready(&self) -> bool {
        self.not_ready_because().is_empty()
    }
}

impl NodeHandle {
    /// This node's readiness now.
    pub fn readiness(&self) -> Readiness {
        let me = self.id();
        let groups = self.partitions();
        let open: std::collections::HashSet<u64> = groups.iter().map(|g| g.0).collect();
        let (registered, assigned_replicas, missing_replicas) = self.with_metadata(|m| {
            let (mut assigned, mut missing) = (0, 0);
            for p in m.topics().flat_map(|t| &t.partitions) {
                if p.replicas.contains(&me) {
                    assigned += 1;
                    missing += usize::from(!open.contains(&p.group));
                }
            }
            (m.node(me).is_some(), assigned, missing)
        });
        let failed_replicas = groups
            .iter()
            .filter_map(|g| self.partition(*g))
            .filter(|p| p.health().is_err())
            .count();
        Readiness {
            node_id: me,
            registered,
            controller_leader: self.controller_leader(),
            assigned_replicas,
            open_replicas: groups.len(),
            missing_replicas,
            failed_replicas,
        }
    }
}
