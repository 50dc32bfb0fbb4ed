//! The receiving side of the Raft transport: a gRPC service that hands each message to the
//! group it names. Behaviour and errors: `docs/protocol/raft-transport.md`.

use std::sync::Arc;

use quipu_proto::v1::raft_transport_server::RaftTransport;
use quipu_proto::v1::{RaftMessage, RaftReply, RaftRpc};
use quipu_raft::NodeId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::GroupId;
use crate::node::Groups;

/// The transport service of one node.
#[derive(Debug)]
pub(crate) struct TransportService {
    pub node_id: NodeId,
    pub groups: Arc<Groups>,
    pub peers: Arc<crate::network::Peers>,
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

fn encode<T: Serialize>(reply: &T) -> Result<Vec<u8>, Status> {
    postcard::to_allocvec(reply)
        .map_err(|e| Status::internal(format!("cannot encode the raft reply: {e}")))
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn deliver(&self, request: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        if self.peers.is_isolated() {
            return Err(Status::unavailable(
                "this node is isolated by fault injection",
            ));
        }
        let message = request.into_inner();
        if message.to_node != self.node_id {
            return Err(Status::failed_precondition(format!(
                "message for node {} reached node {}",
                message.to_node, self.node_id
            )));
        }
        let group = GroupId(message.group_id);
        let partition = self.groups.get(group).ok_or_else(|| {
            Status::not_found(format!(
                "group {group} is not hosted on node {}",
                self.node_id
            ))
        })?;
        let raft = partition.raft();
        let payload = match RaftRpc::try_from(message.rpc) {
            Ok(RaftRpc::AppendEntries) => {
                encode(&raft.append_entries(decode(&message.payload)?).await)?
            }
            Ok(RaftRpc::Vote) => encode(&raft.vote(decode(&message.payload)?).await)?,
            Ok(RaftRpc::InstallSnapshot) => {
                encode(&raft.install_snapshot(decode(&message.payload)?).await)?
            }
            Ok(RaftRpc::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown raft rpc {}",
                    message.rpc
                )));
            }
        };
        Ok(Response::new(RaftReply { payload }))
    }
}
