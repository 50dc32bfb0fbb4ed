//! [`Node`]: one Quipu node in a process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use quipu_proto::v1::raft_transport_server::RaftTransportServer;
use quipu_raft::NodeId;
use quipu_storage::LogConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::network::{CONNECTION_WINDOW_BYTES, MESSAGE_BYTES_MAX, Peers, STREAM_WINDOW_BYTES};
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
}

impl NodeConfig {
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
            // Partition snapshots carry no records yet, so logs are never compacted behind one.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            ..openraft::Config::default()
        }
    }
}

/// The partitions a node hosts, by group; the transport looks groups up here.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    map: RwLock<HashMap<GroupId, Arc<Partition>>>,
}

impl Groups {
    pub fn get(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.map
            .read()
            .expect("groups lock poisoned by a panic")
            .get(&group)
            .cloned()
    }
}

/// A running node: its transport server and the partitions it hosts.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    raft_config: Arc<openraft::Config>,
    addr: SocketAddr,
    groups: Arc<Groups>,
    peers: Arc<Peers>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Node {
    /// Binds the transport and starts serving it. Partitions are opened with
    /// [`Node::open_partition`].
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let raft_config = config
            .raft
            .clone()
            .validate()
            .map_err(|e| NodeError::Raft {
                group: GroupId::CONTROLLER,
                reason: e.to_string(),
            })?;
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
        let service = TransportService {
            node_id: config.node_id,
            groups: Arc::clone(&groups),
            peers: Arc::clone(&peers),
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
        tracing::info!(node_id = config.node_id, %addr, "node started");
        Ok(Node {
            config,
            raft_config: Arc::new(raft_config),
            addr,
            groups,
            peers,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.node_id
    }

    /// The address the transport listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens (or creates) this node's replica of partition `group` and starts its Raft instance.
    pub async fn open_partition(&self, group: GroupId) -> Result<Arc<Partition>, NodeError> {
        if self.groups.get(group).is_some() {
            return Err(NodeError::AlreadyOpen(group));
        }
        let dir = self
            .config
            .data_dir
            .join("partitions")
            .join(format!("{:020}", group.0));
        let partition = Partition::open(
            self.config.node_id,
            group,
            &dir,
            Arc::clone(&self.raft_config),
            self.config.log.clone(),
            Arc::clone(&self.peers),
        )
        .await?;
        let partition = Arc::new(partition);
        let mut map = self
            .groups
            .map
            .write()
            .expect("groups lock poisoned by a panic");
        if map.contains_key(&group) {
            return Err(NodeError::AlreadyOpen(group));
        }
        map.insert(group, Arc::clone(&partition));
        Ok(partition)
    }

    /// Fault injection: cuts this node off the network (no Raft message in or out) or heals it.
    #[cfg(feature = "fault-injection")]
    pub fn set_isolated(&self, isolated: bool) {
        self.peers
            .isolated
            .store(isolated, std::sync::atomic::Ordering::SeqCst);
        tracing::warn!(
            node_id = self.config.node_id,
            isolated,
            "fault injection: network isolation changed"
        );
    }

    /// This node's replica of `group`, if open.
    pub fn partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.groups.get(group)
    }

    /// Stops every partition and the transport. Logs are not closed cleanly here: the next
    /// start recovers them as after a crash, which is always safe.
    pub async fn stop(mut self) {
        let partitions: Vec<Arc<Partition>> = {
            let mut map = self
                .groups
                .map
                .write()
                .expect("groups lock poisoned by a panic");
            map.drain().map(|(_, partition)| partition).collect()
        };
        for partition in &partitions {
            partition.shutdown().await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(node_id = self.config.node_id, error = %e, "transport server failed")
                }
                Err(e) => {
                    tracing::warn!(node_id = self.config.node_id, error = %e, "transport server task failed")
                }
            }
        }
        tracing::info!(node_id = self.config.node_id, "node stopped");
    }
}
