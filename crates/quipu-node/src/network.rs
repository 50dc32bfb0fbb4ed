//! The sending side of the Raft transport: openraft's `RaftNetworkFactory` over gRPC.
//!
//! Invariant: one gRPC channel per peer address, shared by every group (HTTP/2 multiplexes
//! them); a message always names its group and both nodes.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use quipu_proto::v1::raft_transport_client::RaftTransportClient;
use quipu_proto::v1::{RaftMessage, RaftRpc};
use quipu_raft::{NodeId, TypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::GroupId;

/// Largest Raft message, either way (an AppendEntries of several batches, or a snapshot chunk).
pub(crate) const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// HTTP/2 flow-control windows of the transport, both ways: large enough that a batch of Raft
/// entries never waits for a window update round trip.
pub(crate) const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
pub(crate) const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;
/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's gRPC channels to its peers, by address.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
    /// Fault injection: while set, this node neither sends nor accepts Raft messages.
    #[cfg(feature = "fault-injection")]
    pub isolated: std::sync::atomic::AtomicBool,
}

impl Peers {
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
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self
            .channels
            .lock()
            .expect("peer channels lock poisoned by a panic");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// openraft's network factory for one group of this node.
#[derive(Debug, Clone)]
pub(crate) struct GroupNetwork {
    pub group: GroupId,
    pub local: NodeId,
    pub peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerLink {
        PeerLink {
            group: self.group,
            local: self.local,
            target,
            channel: self.peers.channel(&node.addr).map_err(|e| e.to_string()),
            peers: Arc::clone(&self.peers),
        }
    }
}

/// The link from one group of this node to the same group on a peer.
#[derive(Debug)]
pub(crate) struct PeerLink {
    group: GroupId,
    local: NodeId,
    target: NodeId,
    channel: Result<Channel, String>,
    peers: Arc<Peers>,
}

fn unreachable<E: Error>(error: impl Error + 'static) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&error))
}

impl PeerLink {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: RaftRpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        if self.peers.is_isolated() {
            let error = std::io::Error::other("this node is isolated by fault injection");
            return Err(unreachable(error));
        }
        let channel = self
            .channel
            .clone()
            .map_err(|e| unreachable(std::io::Error::other(e)))?;
        let payload =
            postcard::to_allocvec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let message = RaftMessage {
            group_id: self.group.0,
            from_node: self.local,
            to_node: self.target,
            rpc: rpc as i32,
            payload,
        };
        let mut client = RaftTransportClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        let reply = match tokio::time::timeout(option.hard_ttl(), client.deliver(message)).await {
            Err(_) => {
                let error = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer within the rpc's hard ttl",
                );
                return Err(unreachable(error));
            }
            Ok(Err(status)) => return Err(unreachable(status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> = postcard::from_bytes(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RaftRpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RaftRpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RaftRpc::Vote, &rpc, &option).await
    }
}
