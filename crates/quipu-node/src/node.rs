//! [`Node`]: one Quipu node in a process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use quipu_proto::v1::raft_transport_server::RaftTransportServer;
use quipu_raft::NodeId;
use quipu_storage::LogConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use openraft::Raft;
use quipu_meta::{Effect, Metadata, TopicConfig};
use quipu_raft::shared::PartitionShared;
use quipu_raft::{ControllerStateMachine, TypeConfig};

use crate::config::NodeConfig;
use crate::controller::{ControllerError, ControllerHandle, ControllerRequest};
use crate::groups::Groups;
use crate::handoff::hand_off_leadership;
use crate::identity::ClusterIdentity;
use crate::network::{
    CONNECTION_WINDOW_BYTES, GroupNetwork, MESSAGE_BYTES_MAX, Peers, STREAM_WINDOW_BYTES,
};
use crate::partition::open_log_store;
use crate::quiesce::{self, Liveness, QuietCell};
use crate::retention::{enforce_retention, run_interval_sync, run_retention};
use crate::routing::{register_self, request_controller_and_apply};
use crate::transport::TransportService;
use crate::{GroupId, NodeError, Partition};

/// Most connections the Raft transport accepts at once, and from one address (peers hold one
/// each; joins and handoffs open short-lived ones).
const TRANSPORT_CONNECTIONS_MAX: usize = 4096;
const TRANSPORT_CONNECTIONS_PER_ADDRESS_MAX: usize = 256;

/// A number that differs between two starts of a node process, and after a replica was reopened
/// in place (peers use it to notice a restart, and wake the quiet groups they share with it).
pub(crate) fn incarnation() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let nanos = u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX);
    nanos ^ u64::from(std::process::id()).rotate_left(48)
}

impl Inner {
    /// The address other nodes reach this node's transport at.
    pub(crate) fn advertised_addr(&self) -> String {
        self.config
            .advertised_addr
            .clone()
            .unwrap_or_else(|| self.addr.to_string())
    }
}

/// What a node shares with its background tasks.
pub(crate) struct Inner {
    pub(crate) config: NodeConfig,
    pub(crate) raft_config: Arc<openraft::Config>,
    pub(crate) addr: SocketAddr,
    pub(crate) groups: Arc<Groups>,
    pub(crate) peers: Arc<Peers>,
    pub(crate) partitions: RwLock<HashMap<GroupId, Arc<Partition>>>,
    pub(crate) controller: Raft<TypeConfig>,
    pub(crate) metadata: ControllerStateMachine,
    /// Plans and proposes controller requests (shared with the transport service).
    pub(crate) control: ControllerHandle,
    /// When each peer's node heartbeat last arrived.
    pub(crate) liveness: Arc<Liveness>,
    /// The disk reserve and the bytes of produced batches in memory, for every replica.
    pub(crate) admission: Arc<crate::limits::Admission>,
    /// Held while a replica is opened, deleted or reopened: the controller's effects and the
    /// reopening of stopped replicas never interleave on one replica.
    pub(crate) replica_changes: tokio::sync::Mutex<()>,
    /// Replicas closed to be reopened whose reopening has not succeeded yet (tried again with
    /// backoff); a deleted replica leaves this set.
    pub(crate) reopening: std::sync::Mutex<std::collections::HashSet<GroupId>>,
    /// This node's incarnation, as its node heartbeats carry it: new at every start and after a
    /// replica is reopened, so peers wake the quiet groups they share with this node.
    pub(crate) incarnation: Arc<std::sync::atomic::AtomicU64>,
    /// The rest of the block of producer ids the controller handed this node.
    pub(crate) producer_ids: tokio::sync::Mutex<std::ops::Range<u64>>,
    /// The consumer groups this node coordinates now, with their members.
    pub(crate) membership: crate::coordinator::Membership,
    /// The last index of the controller log when the node started (`None`: empty).
    pub(crate) controller_log_end: Option<u64>,
    /// The controller's log, held by its Raft instance: a stop waits until it is let go, so that
    /// the data directory's lock is free when `stop` returns.
    pub(crate) controller_log: std::sync::Weak<quipu_storage::Log>,
    /// The cluster this node belongs to, once known.
    pub(crate) identity: ClusterIdentity,
}

/// A running node: its transport server, the controller group and the partitions it hosts. Its
/// queries and requests are [`NodeHandle`]'s (it dereferences to one); only the node itself
/// starts and stops.
#[derive(Debug)]
pub struct Node {
    inner: Arc<Inner>,
    handle: NodeHandle,
    /// Set when the node stops: the transport server then shuts down gracefully, and the
    /// streams peers opened to it end (which that shutdown waits for).
    stop: Option<watch::Sender<bool>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Binds the transport, opens this node's replica of the controller group (group 0) and starts
    /// carrying out the controller's effects. A new cluster is formed with [`Node::join`].
    pub async fn start(mut config: NodeConfig) -> Result<Node, NodeError> {
        config.validate()?;
        let mut raft_config = config
            .raft
            .clone()
            .validate()
            .map_err(|e| crate::config::NodeConfigError::Raft(Box::new(e)))?;
        // Partitions' commit indexes wait a little for entries to carry them (the controller's
        // go at once: `NodeConfig::controller_raft`).
        raft_config.commit_notice_delay = crate::config::commit_notice_delay(&raft_config);
        // A partition leader's entries go to its followers while its own log syncs them
        // (`docs/internals/replication.md`); not the controller's (`controller_raft`).
        raft_config.leader_flush_beside_replication = true;
        // A partition leader keeps up to this many AppendEntries in flight to each follower
        // (`docs/internals/replication.md`); the controller one (`controller_raft`).
        raft_config.replication_window = crate::config::PARTITION_REPLICATION_WINDOW;
        let raft_config = Arc::new(raft_config);
        std::fs::create_dir_all(config.data_dir.join("partitions")).map_err(|source| {
            NodeError::Dir {
                path: config.data_dir.clone(),
                source,
            }
        })?;
        config.log.shared_sync = crate::disk::open_shared_sync(&config)?;
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
        let identity = ClusterIdentity::load(&config.data_dir)?;
        let peers = Arc::new(Peers::new(
            identity.clone(),
            config
                .transport_tls
                .as_ref()
                .map(|tls| Arc::clone(&tls.client)),
        ));
        peers.throttle.set_rate(config.move_bytes_per_sec);

        // `controller_log_end`: what this node's controller log held at start; until it is
        // applied again (after the leader's first message says it is committed), this node's
        // metadata is behind.
        let controller_raft = Arc::new(
            config
                .controller_raft(&raft_config)
                .validate()
                .map_err(|e| NodeError::Config(crate::NodeConfigError::Raft(Box::new(e))))?,
        );
        let (controller, controller_quiet, metadata, effects, controller_log_end, controller_log) =
            open_controller(&config, controller_raft, Arc::clone(&peers)).await?;
        let (restore, effects) = effects;
        let progress = metadata.progress();
        groups.insert(GroupId::CONTROLLER, controller.clone(), controller_quiet);

        let liveness = Arc::new(Liveness::default());
        let control = ControllerHandle {
            node_id: config.node_id,
            raft: controller.clone(),
            metadata: metadata.clone(),
            topic_defaults: config.topic_defaults(),
            limits: config.cluster_limits,
        };
        let started = Arc::new(std::sync::OnceLock::new());
        let (stop, stopping) = watch::channel(false);
        let service = TransportService {
            node_id: config.node_id,
            groups: Arc::clone(&groups),
            peers: Arc::clone(&peers),
            liveness: Arc::clone(&liveness),
            control: control.clone(),
            liveness_timeout: quiesce::Timings::of(&raft_config).liveness,
            identity: identity.clone(),
            tls: config.transport_tls.is_some(),
            node: Arc::clone(&started),
            stopping: stopping.clone(),
        };
        let router = tonic::transport::Server::builder()
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(quipu_proto::HTTP2_FRAME_BYTES_MAX)
            .add_service(
                RaftTransportServer::new(service)
                    .max_decoding_message_size(MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(MESSAGE_BYTES_MAX),
            );
        let shutdown = async {
            let mut stopping = stopping;
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        // Accepted sockets get TCP_NODELAY (`ConnectionLimits::accept`): without it every small
        // reply waits for a delayed ACK.
        let limits = crate::ConnectionLimits::new(
            TRANSPORT_CONNECTIONS_MAX,
            TRANSPORT_CONNECTIONS_PER_ADDRESS_MAX,
        );
        let server = match &config.transport_tls {
            None => tokio::spawn(router.serve_with_incoming_shutdown(
                crate::incoming::admitted(listener, limits, "transport"),
                shutdown,
            )),
            Some(tls) => tokio::spawn(router.serve_with_incoming_shutdown(
                crate::incoming::admitted_tls(
                    listener,
                    limits,
                    Arc::clone(&tls.server),
                    "transport",
                ),
                shutdown,
            )),
        };
        let admission = Arc::new(crate::limits::Admission {
            disk: crate::disk::DiskGuard::new(config.data_dir.clone(), config.disk_reserve_bytes),
            budget: crate::limits::ProduceBudget::new(config.produce_bytes_in_flight_max),
            producers: config.producers,
        });
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
            liveness: Arc::clone(&liveness),
            admission,
            replica_changes: tokio::sync::Mutex::new(()),
            reopening: std::sync::Mutex::default(),
            incarnation: Arc::new(std::sync::atomic::AtomicU64::new(incarnation())),
            producer_ids: tokio::sync::Mutex::new(0..0),
            membership: crate::coordinator::Membership::default(),
            controller_log_end,
            controller_log,
            identity,
        });
        let _ = started.set(Arc::downgrade(&inner));
        let tasks = vec![
            tokio::spawn(crate::effects::carry_out_effects(
                Arc::clone(&inner),
                restore,
                effects,
                progress,
            )),
            tokio::spawn(register_self(Arc::clone(&inner))),
            tokio::spawn(quiesce::run(
                inner.config.node_id,
                Arc::clone(&inner.incarnation),
                Arc::clone(&inner.groups),
                Arc::clone(&inner.peers),
                liveness,
                quiesce::Timings::of(&inner.raft_config),
                inner.config.quiesce,
            )),
            tokio::spawn(run_retention(Arc::clone(&inner))),
            tokio::spawn(run_interval_sync(Arc::clone(&inner))),
            tokio::spawn(crate::disk::run_spare_release(Arc::clone(&inner))),
            tokio::spawn(crate::coordinator::run_ticks(Arc::clone(&inner))),
            tokio::spawn(crate::replicas::run_reopen_stopped(Arc::clone(&inner))),
            tokio::spawn(crate::cluster::run_controller_voters(Arc::clone(&inner))),
            tokio::spawn(crate::reassign::run_reassignments(Arc::clone(&inner))),
            tokio::spawn(crate::reassign::run_preferred_leaders(Arc::clone(&inner))),
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
        let handed = hand_off_leadership(&self.inner, true).await;
        self.stop().await;
        handed
    }

    /// Stops every group and the transport, and closes each replica's log (synced, with its
    /// clean-shutdown marker, so the next start skips recovering it); a log something still
    /// holds is only synced, and recovered at the next start as after a crash.
    pub async fn stop(self) {
        self.stop_with(true).await;
    }

    /// Fault injection: stops as [`Node::stop`] does but leaves every log without its
    /// clean-shutdown marker (synced, not closed), so the next start recovers each one as after
    /// a crash of the process.
    #[cfg(feature = "fault-injection")]
    pub async fn stop_unclean(self) {
        self.stop_with(false).await;
    }

    async fn stop_with(mut self, close_logs: bool) {
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
        }
        let mut closed = 0;
        if close_logs {
            // Concurrently: the wait for each replica's last holders is bounded once, not per
            // replica.
            closed = futures_util::future::join_all(partitions.into_iter().map(Partition::close))
                .await
                .into_iter()
                .filter(|closed| *closed)
                .count();
        } else {
            for partition in &partitions {
                partition.shutdown().await;
            }
        }
        self.inner.groups.remove(GroupId::CONTROLLER);
        // Held across the shutdown, to close the controller's log once nothing else does.
        let controller_log = self.inner.controller_log.upgrade().filter(|_| close_logs);
        if let Err(e) = self.inner.controller.shutdown().await {
            tracing::warn!(
                node_id = self.id(),
                error = &e as &dyn std::error::Error,
                "controller did not shut down cleanly"
            );
        }
        if let Some(log) = controller_log {
            // Raft's tasks end on their own schedule after the shutdown and let the log go;
            // then it is closed (synced, with its clean-shutdown marker), as a replica's is.
            if !crate::partition::close_log(GroupId::CONTROLLER, log).await {
                tracing::warn!(node_id = self.id(), "the controller log is not closed");
            }
        }
        // Raft's tasks end on their own schedule after the shutdown; the log (and the lock on
        // its directory) goes with the last of them. Bounded, like a replica's close.
        let deadline = tokio::time::Instant::now() + CONTROLLER_LOG_RELEASE_WAIT;
        while self.inner.controller_log.strong_count() > 0 && tokio::time::Instant::now() < deadline
        {
            // Nothing to await on a `Weak`: the holders let go by themselves.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if self.inner.controller_log.strong_count() > 0 {
            tracing::warn!(
                node_id = self.id(),
                "the controller log is still held after the stop"
            );
        }
        if let Some(stop) = self.stop.take() {
            stop.send_replace(true);
        }
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(
                        node_id = self.id(),
                        error = &e as &dyn std::error::Error,
                        "transport server failed"
                    )
                }
                Err(e) => {
                    tracing::warn!(
                        node_id = self.id(),
                        error = &e as &dyn std::error::Error,
                        "transport server task failed"
                    )
                }
            }
        }
        tracing::info!(node_id = self.id(), logs_closed = closed, "node stopped");
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
    pub(crate) inner: Arc<Inner>,
}

impl NodeHandle {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.config.node_id
    }

    /// Where this node keeps its data (controller and partition replicas).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.config.data_dir
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

    /// The settings a topic that sets none of its own runs with on this node.
    pub fn topic_defaults(&self) -> quipu_meta::TopicSettings {
        self.inner.config.topic_defaults()
    }

    /// Bytes of produced batches this node holds now, not yet in a leader's log (at most
    /// `produce_bytes_in_flight_max`).
    pub fn produce_bytes_in_flight(&self) -> u64 {
        self.inner.admission.budget.in_flight()
    }

    /// The controller group's voters (id, transport address), as this node's replica knows them.
    pub fn controller_voters(&self) -> Vec<(NodeId, String)> {
        let metrics = self.inner.controller.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        membership
            .voter_ids()
            .map(|id| {
                let addr = membership
                    .get_node(&id)
                    .map(|n| n.addr.clone())
                    .unwrap_or_default();
                (id, addr)
            })
            .collect()
    }

    /// Whether the controller group's membership, as this node's replica knows it, is one
    /// configuration: no change is half done (a change goes through a joint configuration, old
    /// and new voters, which needs a majority of each until the new one alone is committed).
    pub fn controller_membership_settled(&self) -> bool {
        let metrics = self.inner.controller.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_joint_config()
            .len()
            == 1
    }

    /// The cluster's id (Kafka's cluster id), once this node knows it: chosen by the first
    /// controller leader, and the same on every node.
    pub fn cluster_id(&self) -> Option<String> {
        self.inner.identity.get().map(str::to_owned)
    }

    /// The controller leader this node knows of.
    pub fn controller_leader(&self) -> Option<NodeId> {
        self.inner.controller.metrics().borrow().current_leader
    }

    /// Where this node's controller log stands: the last index applied, the last index its
    /// latest snapshot covers, and the last index purged (each `None` until there is one).
    pub fn controller_log_state(&self) -> ControllerLogState {
        let metrics = self.inner.controller.metrics().borrow().clone();
        ControllerLogState {
            applied: metrics.last_applied.map(|id| id.index),
            snapshot: metrics.snapshot.map(|id| id.index),
            purged: metrics.purged.map(|id| id.index),
        }
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
        request.check_client_request()?;
        request_controller_and_apply(&self.inner, &request)
            .await
            .map(|_| ())
    }

    /// Waits, at most `patience`, until this node's controller replica has applied everything
    /// its log held when the node started: a restarted node's metadata (topics, nodes) is then
    /// at least what it was before, not empty while it waits for the controller leader to say
    /// what is committed. Returns whether it has (at once for a node that started empty). A
    /// server serves clients only after this, so that it never calls an existing topic unknown.
    pub async fn wait_for_metadata(&self, patience: std::time::Duration) -> bool {
        let Some(end) = self.inner.controller_log_end else {
            return true;
        };
        self.inner
            .controller
            .wait(Some(patience))
            .metrics(
                |m| m.last_applied.is_some_and(|applied| applied.index >= end),
                "the controller log held at start is applied",
            )
            .await
            .is_ok()
    }

    /// A new idempotent producer id, never handed out before in this cluster (Kafka's
    /// InitProducerId without a transactional id); its epoch is 0. Taken from a block of
    /// [`crate::routing::PRODUCER_ID_BLOCK`] ids the controller hands this node; the ids left in
    /// a block when the node stops are never used.
    pub async fn init_producer_id(&self) -> Result<i64, ControllerError> {
        crate::routing::next_producer_id(&self.inner).await
    }

    /// Checks `request` as the controller leader would plan it, against this node's view of the
    /// metadata and its own topic defaults, without proposing anything (Kafka's
    /// `validate_only`).
    pub fn validate(&self, request: &ControllerRequest) -> Result<(), ControllerError> {
        request.check_client_request()?;
        let defaults = self.inner.config.topic_defaults();
        self.inner
            .metadata
            .with_metadata(|m| request.plan(m, &defaults, &self.inner.config.cluster_limits))
            .map(|_| ())
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

/// Where a node's controller log stands ([`NodeHandle::controller_log_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerLogState {
    /// The last index applied.
    pub applied: Option<u64>,
    /// The last index the latest snapshot covers.
    pub snapshot: Option<u64>,
    /// The last index purged from the log.
    pub purged: Option<u64>,
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
        (Vec<Effect>, tokio::sync::mpsc::Receiver<Effect>),
        Option<u64>,
        std::sync::Weak<quipu_storage::Log>,
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
    let (log, store) =
        open_log_store(group, config.node_id, &dir, log_config, Arc::clone(&shared)).await?;
    // A restarted node applies the metadata committed before its stop at once.
    store.keep_committed();
    // The last index the log holds (`None`: empty).
    let log_end = log
        .next_index()
        .checked_sub(1)
        .filter(|last| *last >= log.first_index());
    let log = Arc::downgrade(&log);
    let raft_error = |source: crate::error::BoxError| NodeError::Raft { group, source };
    let (metadata, effects) = ControllerStateMachine::open(dir, config.node_id)
        .await
        .map_err(|e| raft_error(Box::new(e)))?;
    let network = GroupNetwork::new(group, config.node_id, peers);
    let raft = Raft::new(
        config.node_id,
        raft_config,
        network,
        store,
        metadata.clone(),
    )
    .await
    .map_err(|e| raft_error(Box::new(e)))?;
    // What the snapshot and the entries openraft applied again as it started had this node do.
    let restore = metadata.attach();
    let quiet = Arc::new(QuietCell::new(&raft, shared));
    Ok((raft, quiet, metadata, (restore, effects), log_end, log))
}

/// How long a stop waits for the controller's log to be let go.
const CONTROLLER_LOG_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
