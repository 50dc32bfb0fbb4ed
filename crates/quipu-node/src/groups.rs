//! [`Groups`]: the registry of the Raft groups a node hosts, shared by the transport and the
//! quiescence task.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use openraft::Raft;
use quipu_raft::TypeConfig;

use crate::GroupId;
use crate::quiesce::QuietCell;

/// The Raft groups a node hosts (the controller and its partition replicas), by group; the
/// transport and the quiescence task look groups up here.
#[derive(Default)]
pub(crate) struct Groups {
    map: RwLock<HashMap<GroupId, Hosted>>,
}

/// One hosted group: its Raft instance and its quiescence state.
#[derive(Clone)]
pub(crate) struct Hosted {
    pub raft: Raft<TypeConfig>,
    pub quiet: Arc<QuietCell>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<GroupId> = self.read().keys().copied().collect();
        f.debug_struct("Groups").field("groups", &groups).finish()
    }
}

impl Groups {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<GroupId, Hosted>> {
        self.map.read().expect("groups lock poisoned by a panic")
    }

    pub fn get_hosted(&self, group: GroupId) -> Option<Hosted> {
        self.read().get(&group).cloned()
    }

    /// Calls `f` with the map of hosted groups under the read lock: `f` must not block.
    pub fn with_partitions<R>(&self, f: impl FnOnce(&HashMap<GroupId, Hosted>) -> R) -> R {
        f(&self.read())
    }

    /// Every hosted partition group (not the controller).
    pub fn partitions(&self) -> Vec<(GroupId, Hosted)> {
        self.read()
            .iter()
            .filter(|(group, _)| **group != GroupId::CONTROLLER)
            .map(|(group, hosted)| (*group, hosted.clone()))
            .collect()
    }

    pub(crate) fn insert(&self, group: GroupId, raft: Raft<TypeConfig>, quiet: Arc<QuietCell>) {
        self.map
            .write()
            .expect("groups lock poisoned by a panic")
            .insert(group, Hosted { raft, quiet });
    }

    pub(crate) fn remove(&self, group: GroupId) {
        self.map
            .write()
            .expect("groups lock poisoned by a panic")
            .remove(&group);
    }
}

/// The voters of the group `raft` runs, as its membership names them.
pub(crate) fn voter_ids(
    raft: &openraft::Raft<quipu_raft::TypeConfig>,
) -> std::collections::BTreeSet<u64> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// The transport address of member `id` of the group `raft` runs, as its membership names it.
pub(crate) fn member_addr(
    raft: &openraft::Raft<quipu_raft::TypeConfig>,
    id: u64,
) -> Option<String> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    m.membership_config
        .membership()
        .get_node(&id)
        .map(|node| node.addr.clone())
}
