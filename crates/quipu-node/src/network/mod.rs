//! The sending side of the Raft transport: openraft's `RaftNetworkFactory` over gRPC.
//!
//! Invariant: one gRPC channel per peer address, shared by every group (HTTP/2 multiplexes
//! them); a message always names its group and both nodes, and every request carries this
//! node's cluster id once it is known ([`crate::identity`]).

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use quipu_proto::v1::raft_transport_client::RaftTransportClient;
use quipu_proto::v1::{RaftMessage, RaftReply, RaftRpc};
use quipu_raft::{NodeId, TypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

mod link;

use link::{client_of, run_link};

use crate::GroupId;
use crate::identity::{ClusterIdentity, Stamp};
use crate::telemetry;
use crate::throttle::Admission;

/// Largest Raft message, either way (an AppendEntries of several batches, or a snapshot chunk).
pub(crate) const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// HTTP/2 flow-control windows of the transport, both ways: large enough that a batch of Raft
/// entries never waits for a window update round trip.
pub(crate) const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
pub(crate) const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;
/// openraft's back-off after an unreachable peer (its default).
const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most messages in one `DeliverBatch` call (the receiver's bound, for senders built before
/// the stream).
pub(crate) const BATCH_MESSAGES_MAX: usize = 1024;
/// Messages with a payload at most this large go on a peer's stream (`DeliverStream`); larger
/// ones (bulk appends, snapshot chunks) go alone in a `Deliver` call, so they never hold up a
/// heartbeat behind them on the stream.
pub(crate) const STREAMED_PAYLOAD_MAX: usize = 1024 * 1024;
/// Messages sent on one peer's stream and not answered yet, at most; the receiver handles at
/// most as many of one stream at once.
pub(crate) const STREAM_IN_FLIGHT_MAX: usize = 4096;
/// Messages waiting in one peer's mailbox.
const MAILBOX_MAX: usize = 4096;
/// Opening a stream, or a `Deliver` call, that takes longer than this fails (its callers see
/// the peer as unreachable); the receiver answers each streamed message within it too.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keepalive: a half-open connection is noticed within interval + timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the answer to a message goes.
pub(crate) type Answer = oneshot::Sender<Result<RaftReply, tonic::Status>>;
/// A message waiting in a mailbox, with where its answer goes.
pub(crate) type Letter = (RaftMessage, Answer);

/// A transport client to one peer: its requests carry the cluster's stamp, and messages may be
/// as large as [`MESSAGE_BYTES_MAX`].
pub(crate) type TransportClient = RaftTransportClient<InterceptedService<Channel, Stamp>>;

/// This node's way to one peer: the gRPC channel, and the mailbox of the task that keeps the
/// peer's stream ([`link`]).
#[derive(Debug, Clone)]
pub(crate) struct Link {
    channel: Channel,
    mailbox: mpsc::Sender<Letter>,
    /// Whether messages go on the peer's stream, in order: false until a stream first opened
    /// (before, a peer that takes single calls only would get them in parallel), and while the
    /// peer takes single calls only.
    streamed: Arc<AtomicBool>,
}

/// The node's gRPC channels to its peers, by address, and a mailbox per peer.
#[derive(Debug)]
pub(crate) struct Peers {
    links: Mutex<HashMap<String, Link>>,
    /// The cluster's id, stamped on every request.
    identity: ClusterIdentity,
    /// Mutual TLS to every peer, if the transport uses it.
    tls: Option<Arc<quipu_tls::ClientTls>>,
    /// The bandwidth bound of catch-up traffic to the new replicas of partitions moving.
    pub throttle: crate::throttle::Throttle,
    /// Fault injection: while set, this node neither sends nor accepts Raft messages.
    #[cfg(feature = "fault-injection")]
    pub isolated: std::sync::atomic::AtomicBool,
}

impl Peers {
    /// No links yet; requests will carry `identity`'s stamp, over `tls` if given.
    pub(crate) fn new(identity: ClusterIdentity, tls: Option<Arc<quipu_tls::ClientTls>>) -> Peers {
        Peers {
            links: Mutex::default(),
            identity,
            tls,
            throttle: crate::throttle::Throttle::default(),
            #[cfg(feature = "fault-injection")]
            isolated: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether fault injection cut this node off the network.
    pub(crate) fn is_isolated(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        {
            self.isolated.load(std::sync::atomic::Ordering::SeqCst)
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            false
        }
    }
}

impl Peers {
    /// A transport client to the peer at `addr`, over its channel (created on first use).
    pub(crate) fn client(&self, addr: &str) -> Result<TransportClient, tonic::transport::Error> {
        self.link(addr)
            .map(|link| client_of(link.channel, &self.identity))
    }

    /// The link to the peer at `addr`, created on first use.
    fn link(&self, addr: &str) -> Result<Link, tonic::transport::Error> {
        let mut links = self
            .links
            .lock()
            .expect("peer links lock poisoned by a panic");
        if let Some(link) = links.get(addr) {
            return Ok(link.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(quipu_proto::HTTP2_FRAME_BYTES_MAX);
        // With TLS the connector makes each connection with the certificates in effect then
        // (tonic speaks HTTP/2 over it, hence the http:// endpoint).
        let channel = match &self.tls {
            None => endpoint.connect_lazy(),
            Some(tls) => {
                endpoint.connect_with_connector_lazy(quipu_tls::Connector(Arc::clone(tls)))
            }
        };
        let (mailbox, letters) = mpsc::channel(MAILBOX_MAX);
        let streamed = Arc::new(AtomicBool::new(false));
        tokio::spawn(run_link(
            channel.clone(),
            self.identity.clone(),
            letters,
            Arc::clone(&streamed),
        ));
        let link = Link {
            channel,
            mailbox,
            streamed,
        };
        links.insert(addr.to_string(), link.clone());
        Ok(link)
    }
}

/// One Raft message sent, counted when dropped ([`telemetry::raft_sent`]) with the result set
/// last: every way out of [`PeerLink::call`] counts it once, a call openraft dropped included.
struct SentRecord {
    rpc: &'static str,
    /// Payload bytes, once the message was encoded and admitted.
    bytes: usize,
    result: &'static str,
}

impl Drop for SentRecord {
    fn drop(&mut self) {
        telemetry::raft_sent(self.rpc, self.bytes, self.result);
    }
}

/// openraft's network factory for one group of this node.
#[derive(Debug, Clone)]
pub(crate) struct GroupNetwork {
    pub group: GroupId,
    pub local: NodeId,
    pub peers: Arc<Peers>,
    /// The order of this group's messages to each peer, shared by every client to that peer
    /// ([`PeerLink::order`]).
    pub orders: HashMap<NodeId, Arc<tokio::sync::RwLock<()>>>,
}

impl GroupNetwork {
    /// The factory of `group`'s links to its peers.
    pub(crate) fn new(group: GroupId, local: NodeId, peers: Arc<Peers>) -> GroupNetwork {
        GroupNetwork {
            group,
            local,
            peers,
            orders: HashMap::new(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerLink {
        PeerLink {
            group: self.group,
            local: self.local,
            target,
            link: self.peers.link(&node.addr).map_err(|e| e.to_string()),
            peers: Arc::clone(&self.peers),
            order: Arc::clone(self.orders.entry(target).or_default()),
        }
    }
}

/// The link from one group of this node to the same group on a peer.
#[derive(Debug)]
pub(crate) struct PeerLink {
    group: GroupId,
    local: NodeId,
    target: NodeId,
    link: Result<Link, String>,
    peers: Arc<Peers>,
    /// Keeps the group's AppendEntries to this peer in the order sent, though a leader has
    /// several in flight: the stream delivers in order, but one sent alone (over 1 MiB, in a
    /// call of its own) could overtake streamed ones or be overtaken. So a streamed one holds a
    /// shared hold until answered, and one sent alone an exclusive one: it goes once every
    /// earlier one was answered, and later ones wait for its answer. (Votes and snapshot chunks
    /// are not held: nothing else of the group is in flight to the peer with them.)
    order: Arc<tokio::sync::RwLock<()>>,
}

fn unreachable<E: Error>(error: impl Error + 'static) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&error))
}

impl PeerLink {
    /// Sends one message; `entries`: the number of entries of an append (which the move
    /// throttle may hold back), `None` for other messages.
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: RaftRpc,
        request: &Req,
        option: &RPCOption,
        entries: Option<usize>,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        // Counted once, however the call ends; "unreachable" unless it gets further (openraft
        // drops a call it stopped waiting for).
        let mut record = SentRecord {
            rpc: telemetry::rpc_label(rpc as i32),
            bytes: 0,
            result: "unreachable",
        };
        if self.peers.is_isolated() {
            let error = std::io::Error::other("this node is isolated by fault injection");
            return Err(unreachable(error));
        }
        let Link {
            channel, mailbox, ..
        } = self
            .link
            .clone()
            .map_err(|e| unreachable(std::io::Error::other(e)))?;
        let payload = quipu_raft::wire::encode(request).map_err(|e| {
            record.result = "error";
            RPCError::Network(NetworkError::new(&e))
        })?;
        if let Some(entries) = entries {
            // Catch-up traffic of a move takes its share of the node's bandwidth bound; it waits
            // at most half the append's time to live for it.
            match self
                .peers
                .throttle
                .admit(
                    self.group,
                    self.target,
                    payload.len(),
                    entries,
                    option.hard_ttl() / 2,
                )
                .await
            {
                Admission::Go => telemetry::raft_append_sent(entries),
                Admission::Shrink(hint) => {
                    record.result = "throttled";
                    return Err(RPCError::PayloadTooLarge(
                        PayloadTooLarge::new_entries_hint(hint),
                    ));
                }
                Admission::Later => {
                    record.result = "throttled";
                    let error = std::io::Error::other("catch-up traffic throttled");
                    return Err(unreachable(error));
                }
            }
        }
        record.bytes = payload.len();
        let streamed = payload.len() <= STREAMED_PAYLOAD_MAX;
        let message = RaftMessage {
            group_id: self.group.0,
            from_node: self.local,
            to_node: self.target,
            rpc: rpc as i32,
            payload: payload.into(),
        };
        let started = std::time::Instant::now();
        let call = async {
            if streamed {
                let _order = match entries {
                    Some(_) => Some(self.order.read().await),
                    None => None,
                };
                let (answer, reply) = oneshot::channel();
                mailbox
                    .send((message, answer))
                    .await
                    .map_err(|_| tonic::Status::unavailable("the peer's mailbox is closed"))?;
                reply
                    .await
                    .map_err(|_| tonic::Status::unavailable("the message was dropped"))?
            } else {
                let _order = match entries {
                    Some(_) => Some(self.order.write().await),
                    None => None,
                };
                let mut client = client_of(channel, &self.peers.identity);
                client
                    .deliver(message)
                    .await
                    .map(tonic::Response::into_inner)
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), call).await {
            Err(_) => {
                let error = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer within the rpc's hard ttl",
                );
                return Err(unreachable(error));
            }
            Ok(Err(status)) => {
                // The peer answered with a refusal (not hosted, not a member, ...) or the call
                // itself failed.
                if !matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                        | tonic::Code::Unknown
                ) {
                    record.result = "refused";
                }
                return Err(unreachable(status));
            }
            Ok(Ok(reply)) => reply,
        };
        let result: Result<Resp, RaftError<NodeId, E>> = postcard::from_bytes(&reply.payload)
            .map_err(|e| {
                record.result = "error";
                RPCError::Network(NetworkError::new(&e))
            })?;
        record.result = if result.is_ok() { "ok" } else { "error" };
        if result.is_ok() && entries.is_some_and(|n| n > 0) {
            telemetry::raft_append_round_trip(started.elapsed());
        }
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let entries = rpc.entries.len();
        self.call(RaftRpc::AppendEntries, &rpc, &option, Some(entries))
            .await
    }

    /// Several AppendEntries in flight at once only while they reach the peer in order and
    /// nothing holds them back: not to a peer that takes single calls only (built before the
    /// stream), nor while this group's catch-up traffic to it is throttled (a move).
    fn pipelines(&self) -> bool {
        let streamed = self
            .link
            .as_ref()
            .is_ok_and(|link| link.streamed.load(Ordering::Relaxed));
        streamed
            && self
                .peers
                .throttle
                .rate_for(self.group, self.target)
                .is_none()
    }

    fn backoff(&self) -> openraft::network::Backoff {
        if self
            .peers
            .throttle
            .rate_for(self.group, self.target)
            .is_some()
        {
            // A throttled replica is retried once what is owed is paid.
            let peers = Arc::clone(&self.peers);
            return openraft::network::Backoff::new(std::iter::from_fn(move || {
                Some(peers.throttle.owed())
            }));
        }
        openraft::network::Backoff::new(std::iter::repeat(DEFAULT_BACKOFF))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RaftRpc::InstallSnapshot, &rpc, &option, None)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RaftRpc::Vote, &rpc, &option, None).await
    }
}
