//! Opening, repairing and deleting this node's partition replicas, as the controller's effects
//! ask; reopening, with backoff, a replica an I/O error stopped (a full disk).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use quipu_meta::TopicSettings;
use quipu_raft::NodeId;

use crate::node::Inner;
use crate::{GroupId, NodeError, Partition};

/// How long a new partition's replica of rank `rank` (> 0) waits for its group to be formed by
/// the first replica before forming it itself: two election timeouts, then one more per rank.
fn bootstrap_fallback_after(raft: &openraft::Config, rank: usize) -> std::time::Duration {
    let steps = u64::try_from(rank).unwrap_or(u64::MAX).saturating_add(1);
    std::time::Duration::from_millis(raft.election_timeout_max.saturating_mul(steps))
}

impl Inner {
    pub(crate) fn partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock poisoned by a panic")
            .get(&group)
            .cloned()
    }

    /// Every replica open on this node now.
    pub(crate) fn hosted_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock poisoned by a panic")
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn partition_dir(&self, group: GroupId) -> PathBuf {
        self.config
            .data_dir
            .join("partitions")
            .join(format!("{:020}", group.0))
    }

    pub(crate) async fn open_partition(&self, group: GroupId) -> Result<Arc<Partition>, NodeError> {
        if group == GroupId::CONTROLLER || self.partition(group).is_some() {
            return Err(NodeError::AlreadyOpen(group));
        }
        let partition = Arc::new(self.open_or_repair(group).await?);
        {
            let mut map = self
                .partitions
                .write()
                .expect("partitions lock poisoned by a panic");
            if map.contains_key(&group) {
                return Err(NodeError::AlreadyOpen(group));
            }
            map.insert(group, Arc::clone(&partition));
        }
        self.groups
            .insert(group, partition.raft().clone(), partition.quiet());
        if self.is_draining() {
            partition.quiet().leave(partition.raft());
        }
        Ok(partition)
    }

    /// Opens this node's replica of `group`. A replica whose log is damaged (bit rot in a sealed
    /// segment, say: it fails its checks when re-applied at open) is set aside and started over
    /// empty with its vote; it abstains until it has re-replicated what it had acknowledged
    /// (`quipu_raft::repair`).
    pub(crate) async fn open_or_repair(&self, group: GroupId) -> Result<Partition, NodeError> {
        let dir = self.partition_dir(group);
        // A new replica must leave room in the process's open files and memory maps; one the
        // node already holds is always reopened.
        let at = dir.clone();
        blocking_io(group, move || {
            if at.exists() {
                return Ok(());
            }
            crate::resources::check_room_for_replica()
        })
        .await?
        .map_err(|source| NodeError::Resources { group, source })?;
        let settings = self.settings_of(group);
        let keeps_groups = self.is_offsets_partition(group);
        let log_config = self
            .config
            .log
            .clone()
            .with_limits(crate::config::log_limits(&settings));
        let open = || async {
            let host = crate::partition::Host {
                node_id: self.config.node_id,
                raft_config: Arc::clone(&self.raft_config),
                peers: Arc::clone(&self.peers),
                admission: Arc::clone(&self.admission),
            };
            let partition =
                Partition::open(&host, group, &dir, log_config.clone(), keeps_groups).await?;
            partition
                .apply_settings(&settings)
                .map_err(|e| NodeError::Log {
                    group,
                    source: e.into(),
                })?;
            Ok::<_, NodeError>(partition)
        };
        let repair_error = |e: quipu_raft::repair::RepairError| NodeError::Raft {
            group,
            source: Box::new(e),
        };
        let at = dir.clone();
        if blocking_io(group, move || quipu_raft::repair::finish_repair(&at))
            .await?
            .map_err(repair_error)?
        {
            tracing::warn!(%group, "finished setting aside a damaged replica (interrupted by a crash)");
        }
        let error = match open().await {
            Ok(partition) => return Ok(partition),
            Err(error) => error,
        };
        let (at, config) = (dir.clone(), self.config.log.clone());
        let Some(damage) =
            blocking_io(group, move || quipu_raft::repair::find_damage(&at, config)).await?
        else {
            return Err(error);
        };
        let at = dir.clone();
        let reached = damage.next_index;
        let aside = blocking_io(group, move || quipu_raft::repair::set_aside(&at, reached))
            .await?
            .map_err(repair_error)?;
        tracing::error!(
            node_id = self.config.node_id,
            %group,
            damage = %damage.description,
            aside = %aside.display(),
            "the replica's log is damaged: its files are set aside; it starts over empty, keeps its \
             vote, and neither votes nor stands for election until it has re-replicated what it \
             had acknowledged"
        );
        open().await
    }

    /// The settings `group`'s replica runs with: its topic's over this node's defaults (the
    /// defaults alone for a group the metadata does not know yet).
    pub(crate) fn settings_of(&self, group: GroupId) -> TopicSettings {
        let defaults = self.config.topic_defaults();
        self.metadata.with_metadata(|m| {
            m.partition_of_group(group.0)
                .map_or(defaults, |(topic, _)| topic.config.settings(&defaults))
        })
    }

    /// Whether `group` is a partition of the consumer groups' offsets topic (its replicas keep
    /// the groups' state), as the metadata says.
    pub(crate) fn is_offsets_partition(&self, group: GroupId) -> bool {
        self.metadata.with_metadata(|m| {
            m.partition_of_group(group.0)
                .is_some_and(|(topic, _)| topic.name == quipu_groups::OFFSETS_TOPIC)
        })
    }

    /// Applies a topic's changed settings to this node's replicas of it, live.
    pub(crate) fn apply_topic_config(&self, topic: &str) {
        let defaults = self.config.topic_defaults();
        let Some((settings, groups)) = self.metadata.with_metadata(|m| {
            m.topic(topic).map(|t| {
                let groups: Vec<GroupId> = t.partitions.iter().map(|p| GroupId(p.group)).collect();
                (t.config.settings(&defaults), groups)
            })
        }) else {
            return; // deleted since
        };
        for group in groups {
            let Some(partition) = self.partition(group) else {
                continue;
            };
            match partition.apply_settings(&settings) {
                Ok(()) => tracing::info!(
                    node_id = self.config.node_id,
                    topic,
                    %group,
                    ?settings,
                    "topic settings applied"
                ),
                // The controller checked them against this node's limits: only a node started
                // with other limits than the controller leader's gets here.
                Err(e) => tracing::error!(
                    node_id = self.config.node_id,
                    topic,
                    %group,
                    error = &e as &dyn std::error::Error,
                    "cannot apply the topic's settings: the replica keeps its previous ones"
                ),
            }
        }
    }

    pub(crate) async fn start_replica(&self, group: GroupId, replicas: &[NodeId], created: bool) {
        let partition = match self.partition(group) {
            Some(partition) => partition,
            None => match self.open_partition(group).await {
                Ok(partition) => partition,
                Err(e) => {
                    tracing::error!(node_id = self.config.node_id, %group, error = &e as &dyn std::error::Error, "cannot open an assigned partition");
                    return;
                }
            },
        };
        if !created {
            return;
        }
        let Some(rank) = replicas.iter().position(|id| *id == self.config.node_id) else {
            return;
        };
        let members: Vec<(NodeId, String)> = self.metadata.with_metadata(|m| {
            replicas
                .iter()
                .filter_map(|id| m.node(*id).map(|n| (*id, n.raft_addr.clone())))
                .collect()
        });
        if rank == 0 {
            // After a restart the group is already initialized: that error is expected.
            if let Err(e) = partition.bootstrap(members).await {
                tracing::debug!(%group, error = &e as &dyn std::error::Error, "partition bootstrap skipped");
            }
            return;
        }
        // The first replica forms the group and, once elected, tells the others. Should it not
        // (it died, or it is being drained and stands for election nowhere), nobody else knows
        // the group's voters and the partition would never have a leader: each other replica
        // forms the group itself when it has heard nothing after a while, later the lower its
        // rank, so that they rarely stand at once. Every replica forms it with the same first
        // entry, so this never makes two histories.
        let wait = bootstrap_fallback_after(&self.raft_config, rank);
        let metadata = self.metadata.clone();
        let creation: Vec<NodeId> = replicas.to_vec();
        // Weak: a replica deleted or reopened meanwhile is not held open by this wait.
        let partition = Arc::downgrade(&partition);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(partition) = partition.upgrade() else {
                return;
            };
            if partition.raft().is_initialized().await.unwrap_or(true) {
                return;
            }
            // Only while the voters are still those it was created with: once a move has
            // completed the group was formed, and this replica is merely behind.
            let unchanged = metadata.with_metadata(|m| {
                m.partition(group.0)
                    .is_some_and(|(_, _, assignment)| assignment.replicas == creation)
            });
            if !unchanged {
                return;
            }
            tracing::info!(%group, rank, ?wait, "no word from the partition's first replica: forming its group here");
            if let Err(e) = partition.bootstrap(members).await {
                tracing::debug!(%group, error = &e as &dyn std::error::Error, "partition bootstrap skipped");
            }
        });
    }

    /// Closes this node's replica of `group` and opens it again: the log runs its crash
    /// recovery (a write cut short by the error is dropped), the applied-state checkpoint is
    /// dropped so that the whole log is applied, and so verified, again (damage found then sets
    /// the replica aside to be rebuilt), and Raft catches the replica up from its leader.
    pub(crate) async fn reopen_partition(&self, group: GroupId) -> Result<(), NodeError> {
        let _changing = self.replica_changes.lock().await;
        // Deleted meanwhile (the controller's effects remove replicas under the same lock, and
        // take them out of `reopening`): never brought back.
        if self.partition(group).is_none() && !self.is_reopening(group) {
            return Ok(());
        }
        self.reopening
            .lock()
            .expect("reopening set poisoned by a panic")
            .insert(group);
        // Its log's lock goes with the last handle; a read still holding one makes the open
        // below fail, and the next attempt succeed.
        self.stop_replica(group).await;
        let checkpoint = self.partition_dir(group).join(quipu_raft::CHECKPOINT_FILE);
        let at = checkpoint.clone();
        blocking_io(group, move || match std::fs::remove_file(&at) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await?
        .map_err(|source| NodeError::RemoveFile {
            path: checkpoint,
            source,
        })?;
        self.open_partition(group).await?;
        // The reopened replica may lack what it had (rebuilt empty): its leader, perhaps quiet,
        // must talk to it again. A new incarnation makes every peer wake the groups it shares
        // with this node, as after a restart.
        self.incarnation.store(
            crate::node::incarnation(),
            std::sync::atomic::Ordering::SeqCst,
        );
        self.reopening
            .lock()
            .expect("reopening set poisoned by a panic")
            .remove(&group);
        Ok(())
    }

    /// Takes this node's replica of `group` out of service, if it hosts one: out of the
    /// partition map and the group registry, its Raft instance stopped and its log synced.
    async fn stop_replica(&self, group: GroupId) {
        let partition = self
            .partitions
            .write()
            .expect("partitions lock poisoned by a panic")
            .remove(&group);
        self.groups.remove(group);
        if let Some(partition) = partition {
            partition.shutdown().await;
        }
    }

    fn is_reopening(&self, group: GroupId) -> bool {
        self.reopening
            .lock()
            .expect("reopening set poisoned by a panic")
            .contains(&group)
    }

    pub(crate) async fn delete_replica(&self, group: GroupId) {
        self.reopening
            .lock()
            .expect("reopening set poisoned by a panic")
            .remove(&group);
        self.stop_replica(group).await;
        let dir = self.partition_dir(group);
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                if let Some(parent) = dir.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await;
        match removed {
            Ok(Ok(())) => {
                tracing::info!(node_id = self.config.node_id, %group, "partition replica deleted")
            }
            Ok(Err(e)) => {
                tracing::error!(node_id = self.config.node_id, %group, error = &e as &dyn std::error::Error, "cannot delete a partition's data")
            }
            Err(e) => {
                tracing::error!(node_id = self.config.node_id, %group, error = &e as &dyn std::error::Error, "partition deletion task failed")
            }
        }
    }
}

/// Runs blocking file work of `group` off the async runtime's threads.
pub(crate) async fn blocking_io<T: Send + 'static>(
    group: GroupId,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NodeError::Raft {
            group,
            source: Box::new(e),
        })
}

/// The first pause before a stopped replica is reopened; it doubles while reopening fails, up
/// to [`REOPEN_PAUSE_MAX`].
pub const REOPEN_PAUSE_MIN: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest pause between two reopenings of one replica.
pub const REOPEN_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// Reopens, with backoff, every replica whose Raft instance stopped on a fatal error (a write or
/// sync that failed: a full disk, an I/O error). Checks once per [`REOPEN_PAUSE_MIN`].
pub(crate) async fn run_reopen_stopped(inner: Arc<Inner>) {
    // Per stopped replica: when to try next, and the pause after that.
    let mut backoff: HashMap<GroupId, (tokio::time::Instant, std::time::Duration)> = HashMap::new();
    let mut ticker = tokio::time::interval(REOPEN_PAUSE_MIN);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = tokio::time::Instant::now();
        let mut stopped: Vec<(GroupId, String)> = inner
            .hosted_partitions()
            .iter()
            .filter_map(|p| p.needs_reopen().map(|reason| (p.group(), reason)))
            .collect();
        // Closed, and not reopened yet: tried again.
        let pending: Vec<GroupId> = inner
            .reopening
            .lock()
            .expect("reopening set poisoned by a panic")
            .iter()
            .copied()
            .collect();
        stopped.extend(
            pending
                .into_iter()
                .map(|g| (g, "its reopening failed".to_string())),
        );
        // A replica that stayed up for a while starts its backoff afresh.
        backoff.retain(|group, (next, _)| {
            stopped.iter().any(|(g, _)| g == group) || now < *next + REOPEN_PAUSE_MAX
        });
        for (group, reason) in stopped {
            let (next, pause) = backoff
                .entry(group)
                .or_insert((now + REOPEN_PAUSE_MIN, REOPEN_PAUSE_MIN));
            if now < *next {
                continue;
            }
            tracing::warn!(node_id = inner.config.node_id, %group, %reason, "reopening a replica stopped by an error");
            match inner.reopen_partition(group).await {
                Ok(()) => tracing::info!(%group, "replica reopened"),
                Err(e) => {
                    tracing::error!(%group, error = &e as &dyn std::error::Error, retry_in = ?*pause, "cannot reopen the replica")
                }
            }
            *next = tokio::time::Instant::now() + *pause;
            *pause = (*pause * 2).min(REOPEN_PAUSE_MAX);
        }
    }
}
