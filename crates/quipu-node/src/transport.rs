//! The receiving side of the Raft transport: a gRPC service that hands each message to the
//! group it names. Behaviour and errors: `docs/protocol/raft-transport.md`.

use std::sync::Arc;

use openraft::error::RaftError;
use openraft::raft::VoteResponse;
use quipu_proto::v1::raft_transport_server::RaftTransport;
use quipu_proto::v1::{
    CampaignReply, CampaignRequest, ControllerCall, ControllerReply, ElectLeadersReply,
    ElectLeadersRequest, JoinRequest, NodeHeartbeat, NodeHeartbeatReply, RaftBatch, RaftBatchItem,
    RaftBatchReply, RaftMessage, RaftReply, RaftRpc,
};
use quipu_raft::NodeId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::GroupId;
use crate::controller::{ControllerHandle, ControllerRequest};
use crate::groups::Groups;
use crate::network::{BATCH_MESSAGES_MAX, Peers};
use crate::quiesce::{self, Liveness};

/// The transport service of one node.
#[derive(Debug, Clone)]
pub(crate) struct TransportService {
    pub node_id: NodeId,
    pub groups: Arc<Groups>,
    pub peers: Arc<Peers>,
    pub liveness: Arc<Liveness>,
    pub control: ControllerHandle,
    /// How long a peer may stay silent and still count as alive.
    pub liveness_timeout: std::time::Duration,
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

fn encode<T: Serialize>(reply: &T) -> Result<Vec<u8>, Status> {
    postcard::to_allocvec(reply)
        .map_err(|e| Status::internal(format!("cannot encode the raft reply: {e}")))
}

impl TransportService {
    /// Refuses every message from a node that was removed from the cluster: its data is
    /// stale, and its votes or appends must never reach a group again.
    fn refuse_removed(&self, from: NodeId) -> Result<(), Status> {
        if self.control.metadata.with_metadata(|m| m.is_removed(from)) {
            return Err(Status::permission_denied(format!(
                "node {from} was removed from the cluster"
            )));
        }
        Ok(())
    }

    /// Hands one message to its group and encodes the group's answer.
    async fn handle(&self, message: RaftMessage) -> Result<RaftReply, Status> {
        if self.peers.is_isolated() {
            return Err(Status::unavailable(
                "this node is isolated by fault injection",
            ));
        }
        self.refuse_removed(message.from_node)?;
        if message.to_node != self.node_id {
            return Err(Status::failed_precondition(format!(
                "message for node {} reached node {}",
                message.to_node, self.node_id
            )));
        }
        let group = GroupId(message.group_id);
        let hosted = self.groups.get_hosted(group).ok_or_else(|| {
            Status::not_found(format!(
                "group {group} is not hosted on node {}",
                self.node_id
            ))
        })?;
        let raft = &hosted.raft;
        let payload = match RaftRpc::try_from(message.rpc) {
            Ok(RaftRpc::AppendEntries) => {
                encode(&raft.append_entries(decode(&message.payload)?).await)?
            }
            Ok(RaftRpc::Vote) if !hosted.quiet.may_vote() => {
                // This replica lost entries it had acknowledged: its vote could elect a leader
                // without them. Refused without touching its vote (as if it were down).
                let vote = raft.metrics().borrow().vote;
                let refusal: Result<VoteResponse<NodeId>, RaftError<NodeId>> = Ok(VoteResponse {
                    vote,
                    vote_granted: false,
                    last_log_id: None,
                });
                tracing::debug!(%group, from = message.from_node, "vote refused: this replica abstains");
                encode(&refusal)?
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
        // Handled first: a quiet follower's election timer is refreshed by its leader's message
        // before its timers run again.
        hosted.quiet.after_message(group, raft);
        Ok(RaftReply { payload })
    }
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn deliver(&self, request: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        self.handle(request.into_inner()).await.map(Response::new)
    }

    async fn deliver_batch(
        &self,
        request: Request<RaftBatch>,
    ) -> Result<Response<RaftBatchReply>, Status> {
        let messages = request.into_inner().messages;
        if messages.len() > BATCH_MESSAGES_MAX {
            return Err(Status::invalid_argument(format!(
                "a batch of {} messages exceeds {BATCH_MESSAGES_MAX}",
                messages.len()
            )));
        }
        // Groups answer independently: one slow group must not hold the others' heartbeats.
        let mut tasks = tokio::task::JoinSet::new();
        let count = messages.len();
        for (at, message) in messages.into_iter().enumerate() {
            let service = self.clone();
            tasks.spawn(async move { (at, service.handle(message).await) });
        }
        let mut items = vec![RaftBatchItem::default(); count];
        while let Some(done) = tasks.join_next().await {
            let (at, result) =
                done.map_err(|e| Status::internal(format!("a batch item failed: {e}")))?;
            items[at] = match result {
                Ok(reply) => RaftBatchItem {
                    reply: Some(reply),
                    status_code: 0,
                    status_message: String::new(),
                },
                Err(status) => RaftBatchItem {
                    reply: None,
                    status_code: status.code() as i32,
                    status_message: status.message().to_string(),
                },
            };
        }
        Ok(Response::new(RaftBatchReply { items }))
    }

    async fn heartbeat(
        &self,
        request: Request<NodeHeartbeat>,
    ) -> Result<Response<NodeHeartbeatReply>, Status> {
        if self.peers.is_isolated() {
            return Err(Status::unavailable(
                "this node is isolated by fault injection",
            ));
        }
        let heartbeat = request.into_inner();
        if heartbeat.to_node != self.node_id {
            return Err(Status::failed_precondition(format!(
                "heartbeat for node {} reached node {}",
                heartbeat.to_node, self.node_id
            )));
        }
        self.refuse_removed(heartbeat.from_node)?;
        if heartbeat.quiet.len() > quiesce::QUIET_GROUPS_MAX {
            return Err(Status::invalid_argument(format!(
                "a heartbeat listing {} quiet groups exceeds {}",
                heartbeat.quiet.len(),
                quiesce::QUIET_GROUPS_MAX
            )));
        }
        quiesce::on_node_heartbeat(&self.groups, &self.liveness, &heartbeat);
        Ok(Response::new(NodeHeartbeatReply {}))
    }

    async fn controller(
        &self,
        request: Request<ControllerCall>,
    ) -> Result<Response<ControllerReply>, Status> {
        if self.peers.is_isolated() {
            return Err(Status::unavailable(
                "this node is isolated by fault injection",
            ));
        }
        let call = request.into_inner();
        if call.to_node != self.node_id {
            return Err(Status::failed_precondition(format!(
                "controller request for node {} reached node {}",
                call.to_node, self.node_id
            )));
        }
        self.refuse_removed(call.from_node)?;
        let request: ControllerRequest = decode(&call.request)?;
        // Handled here only: a forwarded request is never forwarded again.
        let result = self.control.handle(&request).await;
        Ok(Response::new(ControllerReply {
            result: encode(&result)?,
        }))
    }

    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignReply>, Status> {
        if self.peers.is_isolated() {
            return Err(Status::unavailable(
                "this node is isolated by fault injection",
            ));
        }
        let request = request.into_inner();
        if request.to_node != self.node_id {
            return Err(Status::failed_precondition(format!(
                "campaign request for node {} reached node {}",
                request.to_node, self.node_id
            )));
        }
        self.refuse_removed(request.from_node)?;
        if request.group_ids.len() > quiesce::QUIET_GROUPS_MAX {
            return Err(Status::invalid_argument(format!(
                "a campaign request for {} groups exceeds {}",
                request.group_ids.len(),
                quiesce::QUIET_GROUPS_MAX
            )));
        }
        let mut started = Vec::new();
        for id in request.group_ids {
            let group = GroupId(id);
            let Some(hosted) = self.groups.get_hosted(group) else {
                continue;
            };
            let (leader, state) = {
                let metrics = hosted.raft.metrics();
                let m = metrics.borrow();
                (m.current_leader, m.state)
            };
            // From its leader, or from a node claiming to lead while this replica knows no
            // leader yet (just restarted): an election then is harmless. Never against another
            // leader this replica follows.
            let from_leader = leader.is_none_or(|l| l == request.from_node);
            if !from_leader || state != openraft::ServerState::Follower || !hosted.quiet.may_stand()
            {
                continue;
            }
            hosted.quiet.after_message(group, &hosted.raft);
            if hosted.raft.trigger().elect().await.is_ok() {
                tracing::info!(%group, from = request.from_node, "leader hands over: standing for election");
                started.push(id);
            }
        }
        Ok(Response::new(CampaignReply { started }))
    }

    async fn join(
        &self,
        request: Request<JoinRequest>,
    ) -> Result<Response<ControllerReply>, Status> {
        if self.peers.is_isolated() {
            return Err(Status::unavailable(
                "this node is isolated by fault injection",
            ));
        }
        let join = request.into_inner();
        if join.raft_addr.len() > ADDRESS_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "a Raft address of {} bytes exceeds {ADDRESS_BYTES_MAX}",
                join.raft_addr.len()
            )));
        }
        let request = ControllerRequest::Join {
            id: join.node_id,
            raft_addr: join.raft_addr,
        };
        // Routed like any controller request: the joining node knows no leader.
        let result = crate::routing::route(&self.control, &self.peers, &request).await;
        Ok(Response::new(ControllerReply {
            result: encode(&result)?,
        }))
    }

    async fn elect_leaders(
        &self,
        request: Request<ElectLeadersRequest>,
    ) -> Result<Response<ElectLeadersReply>, Status> {
        if self.peers.is_isolated() {
            return Err(Status::unavailable(
                "this node is isolated by fault injection",
            ));
        }
        let request = request.into_inner();
        self.refuse_removed(request.from_node)?;
        if request.to_node != self.node_id {
            return Err(Status::failed_precondition(format!(
                "election request for node {} reached node {}",
                request.to_node, self.node_id
            )));
        }
        if request.group_ids.len() > quiesce::QUIET_GROUPS_MAX {
            return Err(Status::invalid_argument(format!(
                "an election request for {} groups exceeds {}",
                request.group_ids.len(),
                quiesce::QUIET_GROUPS_MAX
            )));
        }
        let only: Option<std::collections::HashSet<u64>> =
            (!request.group_ids.is_empty()).then(|| request.group_ids.iter().copied().collect());
        let leaders = crate::reassign::Leaders {
            me: self.node_id,
            groups: &self.groups,
            metadata: &self.control.metadata,
            liveness: &self.liveness,
            liveness_timeout: self.liveness_timeout,
            peers: &self.peers,
        };
        let elected = leaders.elect_preferred(only.as_ref()).await;
        Ok(Response::new(ElectLeadersReply {
            asked: elected.asked,
            already: elected.already,
        }))
    }
}

/// Longest transport address a joining node may give.
const ADDRESS_BYTES_MAX: usize = 255;
