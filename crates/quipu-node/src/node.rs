//! [`Node`]: one Quipu node in a process.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use quipu_proto::v1::raft_transport_server::RaftTransportServer;
use quipu_raft::NodeId;
use quipu_storage::LogConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use openraft::Raft;
use quipu_meta::{Effect, Metadata, NodeInfo, TopicConfig};
use quipu_raft::shared::PartitionShared;
use quipu_raft::{ControllerStateMachine, TypeConfig};

use crate::controller::{
    CONTROLLER_PATIENCE, ControllerError, ControllerHandle, ControllerRequest,
};
use crate::network::{
    CONNECTION_WINDOW_BYTES, GroupNetwork, MESSAGE_BYTES_MAX, Peers, STREAM_WINDOW_BYTES,
};
use crate::partition::open_log_store;
use crate::quiesce::{self, Liveness, QuietCell};
use crate::transport::TransportService;
use crate::{GroupId, NodeError, Partition};

/// Configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster.
    pub node_id: NodeId,
    /// Where partitions keep their data: `data_dir/partitions/{group:020}`.
    pub data_dir: PathBuf,
    /// Address the Raft transport listens on (port 0 picks a free port).
    pub listen_addr: SocketAddr,
    /// Raft timing and limits, shared by every group of the node.
    pub raft: openraft::Config,
    /// Segment log configuration of every partition.
    pub log: LogConfig,
    /// Whether idle partition groups go quiet (no ticks, no heartbeats; one node heartbeat per
    /// peer stands in for them). Default on; off only to measure what it saves.
    pub quiesce: bool,
    /// How often each replica applies the log's retention (`retention_bytes`, `retention_ms`).
    pub retention_check_interval: Duration,
    /// The address clients reach this node's gRPC API at, as registered with the controller
    /// (other nodes hand it to clients); `None` if the node serves no API.
    pub api_addr: Option<String>,
}

impl NodeConfig {
    /// A node with default Raft timings, log settings and intervals.
    pub fn new(node_id: NodeId, data_dir: PathBuf, listen_addr: SocketAddr) -> NodeConfig {
        NodeConfig {
            node_id,
            data_dir,
            listen_addr,
            raft: NodeConfig::default_raft(),
            log: LogConfig::default(),
            quiesce: true,
            retention_check_interval: DEFAULT_RETENTION_CHECK_INTERVAL,
            api_addr: None,
        }
    }

    /// Raft timings for a cluster on one machine or a fast network: heartbeats every 100 ms;
    /// a follower that stops hearing from its leader stands for election after openraft's leader
    /// lease (the maximum election timeout, 1.4 s) plus its own timeout (0.5–1.4 s), so a new
    /// leader is normally in place within 3 s of a leader's death.
    pub fn default_raft() -> openraft::Config {
        openraft::Config {
            cluster_name: "quipu".to_string(),
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1400,
            // Snapshots are taken only by retention, at the segment boundary it purges up to;
            // openraft then purges the log up to the snapshot at once.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..openraft::Config::default()
        }
    }
}

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

    fn insert(&self, group: GroupId, raft: Raft<TypeConfig>, quiet: Arc<QuietCell>) {
        self.map
            .write()
            .expect("groups lock poisoned by a panic")
            .insert(group, Hosted { raft, quiet });
    }

    fn remove(&self, group: GroupId) {
        self.map
            .write()
            .expect("groups lock poisoned by a panic")
            .remove(&group);
    }
}

/// Kafka's `log.retention.check.interval.ms` default: 5 minutes.
pub const DEFAULT_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(300);

async fn enforce_retention(inner: &Inner) -> usize {
    let partitions: Vec<Arc<Partition>> = inner
        .partitions
        .read()
        .expect("partitions lock poisoned by a panic")
        .values()
        .cloned()
        .collect();
    let mut purged = 0;
    for partition in partitions {
        match partition.enforce_retention().await {
            Ok(Some(_)) => purged += 1,
            Ok(None) => {}
            Err(e) => tracing::warn!(group = %partition.group(), error = %e, "retention failed"),
        }
    }
    purged
}

/// Applies retention to every replica every `retention_check_interval`.
async fn run_retention(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(inner.config.retention_check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        ticker.tick().await;
        enforce_retention(&inner).await;
    }
}

/// How long a leaving node waits for the groups it leads to elect new leaders.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// Hands the leadership of every group this node leads to a caught-up follower; returns how many
/// groups have another leader by the deadline.
async fn hand_off_leadership(inner: &Inner) -> usize {
    let deadline = tokio::time::Instant::now() + HANDOFF_TIMEOUT;
    let me = inner.config.node_id;
    let partitions: Vec<Arc<Partition>> = inner
        .partitions
        .read()
        .expect("partitions lock poisoned by a panic")
        .values()
        .cloned()
        .collect();
    for partition in &partitions {
        partition.drain();
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
        let voters: Vec<NodeId> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        voters.into_iter().any(|id| id != me && alive(id))
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
        started.extend(ask_to_campaign(inner, me, asks, deadline).await);
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

/// Sends each successor its `Campaign` request (all at once) and returns the groups in which an
/// election was started.
async fn ask_to_campaign(
    inner: &Inner,
    me: NodeId,
    asks: BTreeMap<NodeId, (String, Vec<u64>)>,
    deadline: tokio::time::Instant,
) -> Vec<u64> {
    let mut calls = tokio::task::JoinSet::new();
    for (successor, (addr, group_ids)) in asks {
        let Ok(channel) = inner.peers.channel(&addr) else {
            continue;
        };
        calls.spawn(async move {
            let mut client =
                quipu_proto::v1::raft_transport_client::RaftTransportClient::new(channel);
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
                    tracing::warn!(successor, %status, "handoff refused");
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

/// A number that differs between two starts of a node process (peers use it to notice a restart).
fn incarnation() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let nanos = u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX);
    nanos ^ u64::from(std::process::id()).rotate_left(48)
}

/// What a node shares with its background tasks.
struct Inner {
    config: NodeConfig,
    raft_config: Arc<openraft::Config>,
    addr: SocketAddr,
    groups: Arc<Groups>,
    peers: Arc<Peers>,
    partitions: RwLock<HashMap<GroupId, Arc<Partition>>>,
    controller: Raft<TypeConfig>,
    metadata: ControllerStateMachine,
    /// Plans and proposes controller requests (shared with the transport service).
    control: ControllerHandle,
    /// The controller's initial voters (id, transport address), once known.
    voters: RwLock<Vec<(NodeId, String)>>,
    /// When each peer's node heartbeat last arrived.
    liveness: Arc<Liveness>,
}

/// A running node: its transport server, the controller group and the partitions it hosts. Its
/// queries and requests are [`NodeHandle`]'s (it dereferences to one); only the node itself
/// starts and stops.
#[derive(Debug)]
pub struct Node {
    inner: Arc<Inner>,
    handle: NodeHandle,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Binds the transport, opens this node's replica of the controller group (group 0) and starts
    /// carrying out the controller's effects. A new cluster is formed with [`Node::join`].
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let raft_config = config
            .raft
            .clone()
            .validate()
            .map_err(|e| NodeError::Raft {
                group: GroupId::CONTROLLER,
                reason: e.to_string(),
            })?;
        let raft_config = Arc::new(raft_config);
        std::fs::create_dir_all(config.data_dir.join("partitions")).map_err(|source| {
            NodeError::Dir {
                path: config.data_dir.clone(),
                source,
            }
        })?;
        let listener = tokio::net::TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| NodeError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen_addr,
            source,
        })?;
        let groups = Arc::new(Groups::default());
        let peers = Arc::new(Peers::default());

        let (controller, controller_quiet, metadata, effects) =
            open_controller(&config, Arc::clone(&raft_config), Arc::clone(&peers)).await?;
        groups.insert(GroupId::CONTROLLER, controller.clone(), controller_quiet);

        let liveness = Arc::new(Liveness::default());
        let control = ControllerHandle {
            node_id: config.node_id,
            raft: controller.clone(),
            metadata: metadata.clone(),
        };
        let service = TransportService {
            node_id: config.node_id,
            groups: Arc::clone(&groups),
            peers: Arc::clone(&peers),
            liveness: Arc::clone(&liveness),
            control: control.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .add_service(
                    RaftTransportServer::new(service)
                        .max_decoding_message_size(MESSAGE_BYTES_MAX)
                        .max_encoding_message_size(MESSAGE_BYTES_MAX),
                )
                .serve_with_incoming_shutdown(
                    // Options of accepted sockets are set here: the builder's apply only to
                    // listeners it binds itself. Without TCP_NODELAY every small reply waits for
                    // a delayed ACK.
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        let inner = Arc::new(Inner {
            config,
            raft_config,
            addr,
            groups,
            peers,
            partitions: RwLock::new(HashMap::new()),
            controller,
            metadata,
            control,
            voters: RwLock::new(Vec::new()),
            liveness: Arc::clone(&liveness),
        });
        let tasks = vec![
            tokio::spawn(carry_out_effects(Arc::clone(&inner), effects)),
            tokio::spawn(register_self(Arc::clone(&inner))),
            tokio::spawn(quiesce::run(
                inner.config.node_id,
                incarnation(),
                Arc::clone(&inner.groups),
                Arc::clone(&inner.peers),
                liveness,
                quiesce::Timings::of(&inner.raft_config),
                inner.config.quiesce,
            )),
            tokio::spawn(run_retention(Arc::clone(&inner))),
        ];
        tracing::info!(node_id = inner.config.node_id, %addr, "node started");
        Ok(Node {
            handle: NodeHandle {
                inner: Arc::clone(&inner),
            },
            inner,
            stop: Some(stop),
            server: Some(server),
            tasks,
        })
    }

    /// A handle on this node for other tasks (the client API): cheap to clone, valid while the
    /// node runs (afterwards its requests fail as a stopped node's would).
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops the node gracefully, as on SIGTERM: it refuses new produce requests, asks a follower
    /// holding the whole log of each group it leads (the controller included) to stand for
    /// election, waits until every such group has another leader (at most [`HANDOFF_TIMEOUT`]),
    /// then stops as [`Node::stop`] does. A group whose handoff did not finish elects a leader the
    /// usual way once this node is gone. Returns how many groups were handed over.
    pub async fn shutdown(self) -> usize {
        let handed = hand_off_leadership(&self.inner).await;
        self.stop().await;
        handed
    }

    /// Stops every group and the transport. Logs are not closed cleanly here: the next start
    /// recovers them as after a crash, which is always safe.
    pub async fn stop(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let partitions: Vec<Arc<Partition>> = {
            let mut map = self
                .inner
                .partitions
                .write()
                .expect("partitions lock poisoned by a panic");
            map.drain().map(|(_, partition)| partition).collect()
        };
        for partition in &partitions {
            self.inner.groups.remove(partition.group());
            partition.shutdown().await;
        }
        self.inner.groups.remove(GroupId::CONTROLLER);
        if let Err(e) = self.inner.controller.shutdown().await {
            tracing::warn!(node_id = self.id(), error = %e, "controller did not shut down cleanly");
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(node_id = self.id(), error = %e, "transport server failed")
                }
                Err(e) => {
                    tracing::warn!(node_id = self.id(), error = %e, "transport server task failed")
                }
            }
        }
        tracing::info!(node_id = self.id(), "node stopped");
    }
}

impl std::ops::Deref for Node {
    type Target = NodeHandle;

    fn deref(&self) -> &NodeHandle {
        &self.handle
    }
}

/// Queries and requests of a running node, shareable between tasks.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
}

impl NodeHandle {
    /// Makes this node a member of the cluster whose controller voters are `voters` (id and
    /// transport address, this node included). The voter with the lowest id initializes the
    /// controller group the first time; whichever voter leads the controller registers them all.
    pub async fn join(&self, voters: Vec<(NodeId, String)>) -> Result<(), NodeError> {
        *self
            .inner
            .voters
            .write()
            .expect("voters lock poisoned by a panic") = voters.clone();
        let lowest = voters.iter().map(|(id, _)| *id).min();
        // After a restart the group exists; openraft would log the refused initialize as an error.
        let initialized = self
            .inner
            .controller
            .is_initialized()
            .await
            .unwrap_or(false);
        if lowest == Some(self.id()) && !initialized {
            let members: std::collections::BTreeMap<NodeId, openraft::BasicNode> = voters
                .into_iter()
                .map(|(id, addr)| (id, openraft::BasicNode { addr }))
                .collect();
            match self.inner.controller.initialize(members).await {
                Ok(()) => {}
                // Already initialized: a restart, or another attempt won.
                Err(openraft::error::RaftError::APIError(
                    openraft::error::InitializeError::NotAllowed(_),
                )) => {}
                Err(e) => {
                    return Err(NodeError::Raft {
                        group: GroupId::CONTROLLER,
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.config.node_id
    }

    /// The address the transport listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The cluster metadata as this node applied it so far.
    pub fn metadata(&self) -> Metadata {
        self.inner.metadata.metadata()
    }

    /// Runs `f` on this node's view of the metadata without copying it; `f` must not block.
    pub fn with_metadata<R>(&self, f: impl FnOnce(&Metadata) -> R) -> R {
        self.inner.metadata.with_metadata(f)
    }

    /// The controller leader this node knows of.
    pub fn controller_leader(&self) -> Option<NodeId> {
        self.inner.controller.metrics().borrow().current_leader
    }

    /// Creates a topic with default settings, from any node (forwarded to the controller
    /// leader).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: usize,
        replication_factor: usize,
    ) -> Result<(), ControllerError> {
        self.request_controller(ControllerRequest::CreateTopic {
            name: name.to_string(),
            partitions,
            replication_factor,
            config: TopicConfig::default(),
        })
        .await
    }

    /// Adds `count` partitions to topic `name`, placed like a new topic's; each node opens its
    /// replicas of them as it applies the command.
    pub async fn add_partitions(&self, name: &str, count: usize) -> Result<(), ControllerError> {
        self.request_controller(ControllerRequest::AddPartitions {
            name: name.to_string(),
            count,
        })
        .await
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ControllerError> {
        self.request_controller(ControllerRequest::DeleteTopic {
            name: name.to_string(),
        })
        .await
    }

    /// Carries out `request` on the controller leader: here if this node leads, else forwarded
    /// to the leader (one hop). While no leader is known, or the one asked no longer leads, it
    /// retries with backoff for at most [`CONTROLLER_PATIENCE`]; other errors return at once.
    pub async fn request_controller(
        &self,
        request: ControllerRequest,
    ) -> Result<(), ControllerError> {
        request_controller(&self.inner, &request).await
    }

    /// Opens (or creates) this node's replica of partition `group` and starts its Raft instance.
    pub async fn open_partition(&self, group: GroupId) -> Result<Arc<Partition>, NodeError> {
        self.inner.open_partition(group).await
    }

    /// This node's replica of `group`, if open.
    pub fn partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.inner.partition(group)
    }

    /// The partitions this node hosts, by group.
    pub fn partitions(&self) -> Vec<GroupId> {
        self.inner
            .partitions
            .read()
            .expect("partitions lock poisoned by a panic")
            .keys()
            .copied()
            .collect()
    }

    /// Fault injection: cuts this node off the network (no Raft message in or out) or heals it.
    #[cfg(feature = "fault-injection")]
    pub fn set_isolated(&self, isolated: bool) {
        self.inner
            .peers
            .isolated
            .store(isolated, std::sync::atomic::Ordering::SeqCst);
        tracing::warn!(
            node_id = self.id(),
            isolated,
            "fault injection: network isolation changed"
        );
    }

    /// Applies retention to every partition replica on this node now (the node also does so every
    /// `retention_check_interval`). Returns how many replicas purged a prefix.
    pub async fn enforce_retention(&self) -> usize {
        enforce_retention(&self.inner).await
    }

    /// Whether `node`'s node heartbeats reach this node (this node itself: yes).
    pub fn is_alive(&self, node: NodeId) -> bool {
        node == self.inner.config.node_id
            || self
                .inner
                .liveness
                .is_alive(node, quiesce::Timings::of(&self.inner.raft_config).liveness)
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("node_id", &self.config.node_id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock poisoned by a panic")
            .get(&group)
            .cloned()
    }

    fn partition_dir(&self, group: GroupId) -> PathBuf {
        self.config
            .data_dir
            .join("partitions")
            .join(format!("{:020}", group.0))
    }

    async fn open_partition(&self, group: GroupId) -> Result<Arc<Partition>, NodeError> {
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
        Ok(partition)
    }

    /// Opens this node's replica of `group`. A replica whose log is damaged (bit rot in a sealed
    /// segment, say: it fails its checks when re-applied at open) is set aside and started over
    /// empty with its vote; it abstains until it has re-replicated what it had acknowledged
    /// (`quipu_raft::repair`).
    async fn open_or_repair(&self, group: GroupId) -> Result<Partition, NodeError> {
        let dir = self.partition_dir(group);
        let open = || {
            Partition::open(
                self.config.node_id,
                group,
                &dir,
                Arc::clone(&self.raft_config),
                self.config.log.clone(),
                Arc::clone(&self.peers),
            )
        };
        let repair_error = |e: quipu_raft::repair::RepairError| NodeError::Raft {
            group,
            reason: e.to_string(),
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

    async fn start_replica(&self, group: GroupId, replicas: &[NodeId], created: bool) {
        let partition = match self.partition(group) {
            Some(partition) => partition,
            None => match self.open_partition(group).await {
                Ok(partition) => partition,
                Err(e) => {
                    tracing::error!(node_id = self.config.node_id, %group, error = %e, "cannot open an assigned partition");
                    return;
                }
            },
        };
        if created && replicas.first() == Some(&self.config.node_id) {
            let metadata = self.metadata.metadata();
            let addresses: HashMap<NodeId, String> = metadata
                .nodes()
                .map(|n| (n.id, n.raft_addr.clone()))
                .collect();
            let members: Vec<(NodeId, String)> = replicas
                .iter()
                .filter_map(|id| addresses.get(id).map(|addr| (*id, addr.clone())))
                .collect();
            // After a restart the group is already initialized: that error is expected.
            if let Err(e) = partition.bootstrap(members).await {
                tracing::debug!(%group, error = %e, "partition bootstrap skipped");
            }
        }
    }

    async fn delete_replica(&self, group: GroupId) {
        let partition = self
            .partitions
            .write()
            .expect("partitions lock poisoned by a panic")
            .remove(&group);
        self.groups.remove(group);
        if let Some(partition) = partition {
            partition.shutdown().await;
            drop(partition);
        }
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
                tracing::error!(node_id = self.config.node_id, %group, error = %e, "cannot delete a partition's data")
            }
            Err(e) => {
                tracing::error!(node_id = self.config.node_id, %group, error = %e, "partition deletion task failed")
            }
        }
    }
}

async fn open_controller(
    config: &NodeConfig,
    raft_config: Arc<openraft::Config>,
    peers: Arc<Peers>,
) -> Result<
    (
        Raft<TypeConfig>,
        Arc<QuietCell>,
        ControllerStateMachine,
        tokio::sync::mpsc::Receiver<Effect>,
    ),
    NodeError,
> {
    let group = GroupId::CONTROLLER;
    let dir = config.data_dir.join("controller");
    // The cluster's metadata is always synced before it is acknowledged and never expires,
    // whatever the partitions' settings (as Kafka's KRaft metadata log).
    let log_config = LogConfig {
        fsync: quipu_storage::FsyncPolicy::Always,
        retention_bytes: None,
        retention_ms: None,
        ..config.log.clone()
    };
    let shared = Arc::new(PartitionShared::default());
    let (_, store) = open_log_store(group, &dir, log_config, Arc::clone(&shared)).await?;
    let raft_error = |reason: String| NodeError::Raft { group, reason };
    let (metadata, effects) = ControllerStateMachine::open(dir, config.node_id)
        .await
        .map_err(|e| raft_error(e.to_string()))?;
    let network = GroupNetwork {
        group,
        local: config.node_id,
        peers,
    };
    let raft = Raft::new(
        config.node_id,
        raft_config,
        network,
        store,
        metadata.clone(),
    )
    .await
    .map_err(|e| raft_error(e.to_string()))?;
    let quiet = Arc::new(QuietCell::new(&raft, shared));
    Ok((raft, quiet, metadata, effects))
}

/// Carries out, in order, the controller's effects for this node.
async fn carry_out_effects(inner: Arc<Inner>, mut effects: tokio::sync::mpsc::Receiver<Effect>) {
    while let Some(effect) = effects.recv().await {
        match effect {
            Effect::StartReplica {
                group,
                replicas,
                created,
                ..
            } => {
                inner
                    .start_replica(GroupId(group), &replicas, created)
                    .await
            }
            Effect::DeleteReplica { group } => inner.delete_replica(GroupId(group)).await,
            Effect::ConfigChanged { topic } => {
                tracing::info!(
                    node_id = inner.config.node_id,
                    topic,
                    "topic config changed; replicas pick it up on reopen"
                );
            }
        }
    }
}

/// Whenever this node leads the controller, registers the configured voters it does not see in
/// the metadata yet (their addresses come from [`Node::join`]).
/// Registers this node (id, transport and API addresses) with the controller, and again whenever
/// the metadata does not show those addresses (after a change of address, or when the first
/// attempt found no controller leader). Checks every 250 ms; a registered node costs nothing.
async fn register_self(inner: Arc<Inner>) {
    let me = NodeInfo {
        id: inner.config.node_id,
        raft_addr: inner.addr.to_string(),
        api_addr: inner.config.api_addr.clone().unwrap_or_default(),
    };
    let mut ticker = tokio::time::interval(REGISTER_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let registered = inner
            .metadata
            .with_metadata(|m| m.nodes().any(|n| *n == me));
        if registered
            || inner
                .voters
                .read()
                .expect("voters lock poisoned by a panic")
                .is_empty()
        {
            continue; // done, or not a member of a cluster yet
        }
        if let Err(e) =
            request_controller(&inner, &ControllerRequest::RegisterNode(me.clone())).await
        {
            tracing::warn!(node_id = me.id, error = %e, "cannot register with the controller yet");
        }
    }
}

/// How often a node checks that the controller knows its addresses.
const REGISTER_INTERVAL: Duration = Duration::from_millis(250);

async fn request_controller(
    inner: &Inner,
    request: &ControllerRequest,
) -> Result<(), ControllerError> {
    let deadline = tokio::time::Instant::now() + CONTROLLER_PATIENCE;
    let mut backoff = Duration::from_millis(20);
    loop {
        let result = match inner.control.leader() {
            Some(leader) if leader == inner.config.node_id => inner.control.handle(request).await,
            Some(leader) => forward_to_controller(inner, leader, request).await,
            None => Err(ControllerError::NotLeader { leader: None }),
        };
        match result {
            Err(ControllerError::NotLeader { .. })
                if tokio::time::Instant::now() + backoff < deadline =>
            {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// Sends `request` to the controller leader `leader` and returns its answer. A transport failure
/// counts as "not leader" (the request was not handled; the caller retries).
async fn forward_to_controller(
    inner: &Inner,
    leader: NodeId,
    request: &ControllerRequest,
) -> Result<(), ControllerError> {
    let not_leader = ControllerError::NotLeader {
        leader: Some(leader),
    };
    let Some(addr) = inner.control.address_of(leader) else {
        return Err(not_leader);
    };
    let Ok(channel) = inner.peers.channel(&addr) else {
        return Err(not_leader);
    };
    let bytes =
        postcard::to_allocvec(request).map_err(|e| ControllerError::Unavailable(e.to_string()))?;
    let call = quipu_proto::v1::ControllerCall {
        from_node: inner.config.node_id,
        to_node: leader,
        request: bytes,
    };
    let mut client = quipu_proto::v1::raft_transport_client::RaftTransportClient::new(channel);
    match tokio::time::timeout(CONTROLLER_PATIENCE, client.controller(call)).await {
        Ok(Ok(reply)) => {
            postcard::from_bytes::<Result<(), ControllerError>>(&reply.into_inner().result)
                .map_err(|e| {
                    ControllerError::Unavailable(format!("undecodable controller reply: {e}"))
                })?
        }
        // Refused before it was handled (unreachable, not started): try again.
        Ok(Err(status)) if status.code() == tonic::Code::Unavailable => Err(not_leader),
        Ok(Err(status)) => Err(ControllerError::Unavailable(status.to_string())),
        Err(_) => Err(ControllerError::Unavailable(format!(
            "controller leader {leader} did not answer in time"
        ))),
    }
}

/// Runs blocking file work of `group` off the async runtime's threads.
async fn blocking_io<T: Send + 'static>(
    group: GroupId,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NodeError::Raft {
            group,
            reason: e.to_string(),
        })
}
