//! The receiving side of the Raft transport: a gRPC service that hands each message to the
//! group it names. Behaviour and errors: `docs/protocol/raft-transport.md`.
//!
//! Invariant: a request reaches a handler only when it comes from this cluster (its stamp,
//! [`crate::identity`]), is addressed to this node and comes from a node that was not removed;
//! a Raft message reaches openraft only when its values are possible ([`checks`]) and its
//! sender is a member of its group.

mod checks;

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{Semaphore, mpsc, watch};

use openraft::error::RaftError;
use openraft::raft::VoteResponse;
use quipu_proto::v1::raft_transport_server::RaftTransport;
use quipu_proto::v1::{
    CampaignReply, CampaignRequest, ControllerCall, ControllerReply, ElectLeadersReply,
    ElectLeadersRequest, JoinRequest, NodeHeartbeat, NodeHeartbeatReply, RaftBatch, RaftBatchItem,
    RaftBatchReply, RaftMessage, RaftReply, RaftRpc, RaftStreamMessage, RaftStreamReply,
    ReportReply, ReportRequest,
};
use quipu_raft::NodeId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status, Streaming};

use crate::GroupId;
use crate::controller::{ControllerHandle, ControllerRequest};
use crate::groups::Groups;
use crate::identity::ClusterIdentity;
use crate::network::{BATCH_MESSAGES_MAX, CALL_TIMEOUT, Peers, STREAM_IN_FLIGHT_MAX};
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
    /// The cluster this node belongs to, once known.
    pub identity: ClusterIdentity,
    /// Whether the transport runs mutual TLS: then every request's sender is the node its
    /// client certificate names.
    pub tls: bool,
    /// The node, once it has started (the transport listens before): what `Report` reads.
    pub node: Arc<std::sync::OnceLock<std::sync::Weak<crate::node::Inner>>>,
    /// Set when the node stops: every stream from a peer then ends (after answering what it
    /// took), which the server's graceful shutdown waits for.
    pub stopping: watch::Receiver<bool>,
}

/// Who sent a request, as far as the connection proves it: with mutual TLS, the node its
/// certificate names; without, nobody in particular (a message's `from_node` is taken on trust).
#[derive(Debug, Clone, Copy)]
struct Caller(Option<NodeId>);

impl Caller {
    /// A message claiming to come from `from` must come from the node the certificate names.
    fn speaks_for(self, from: NodeId) -> Result<(), Status> {
        match self.0 {
            Some(certified) if certified != from => Err(Status::permission_denied(format!(
                "the certificate of node {certified} cannot speak for node {from}"
            ))),
            _ => Ok(()),
        }
    }
}

/// Refuses a request (`what`) that lists more groups than a node heartbeat may.
fn groups_within_bound(count: usize, what: &str) -> Result<(), Status> {
    if count > quiesce::QUIET_GROUPS_MAX {
        return Err(Status::invalid_argument(format!(
            "{what} of {count} groups exceeds {}",
            quiesce::QUIET_GROUPS_MAX
        )));
    }
    Ok(())
}

/// A Raft message's payload; the record batches it carries keep the received bytes.
fn decode_message<T: DeserializeOwned>(payload: &Bytes) -> Result<T, Status> {
    quipu_raft::wire::decode_shared(payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))
}

fn encode<T: Serialize>(reply: &T) -> Result<Vec<u8>, Status> {
    quipu_raft::wire::encode(reply)
        .map_err(|e| Status::internal(format!("cannot encode the raft reply: {e}")))
}

impl TransportService {
    /// What every request passes first: this node takes part in the network (fault
    /// injection), the request is not stamped with another cluster's id, and, with mutual TLS,
    /// its connection's certificate names a node (the handshake already checked it is the
    /// cluster CA's and valid).
    fn admit<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.admit_stamped(request.metadata())?;
        if !self.tls {
            return Ok(Caller(None));
        }
        let certs = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated("the transport requires a client certificate")
        })?;
        let node = certs.first().and_then(quipu_tls::node_of).ok_or_else(|| {
            Status::permission_denied(format!(
                "the client certificate names no node ({}ID)",
                quipu_tls::NODE_NAME_PREFIX
            ))
        })?;
        Ok(Caller(Some(node)))
    }

    /// The part of [`Self::admit`] that may change while a connection stays open, so a stream
    /// passes it again with each message: this node takes part in the network, and `metadata`
    /// is not stamped with another cluster's id than the one this node knows now.
    fn admit_stamped(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        if self.peers.is_isolated() {
            return Err(Status::unavailable(
                "this node is isolated by fault injection",
            ));
        }
        self.identity.admit(metadata)
    }

    /// A request from node `from` for node `to` (`what` names it in the error): it must come
    /// from `from` as far as the connection proves, be addressed to this node, and `from` must
    /// not be a node that was removed from the cluster (its data is stale, and its votes or
    /// appends must never reach a group again).
    fn admit_peer(
        &self,
        caller: Caller,
        from: NodeId,
        to: NodeId,
        what: &str,
    ) -> Result<(), Status> {
        caller.speaks_for(from)?;
        if to != self.node_id {
            return Err(Status::failed_precondition(format!(
                "{what} for node {to} reached node {}",
                self.node_id
            )));
        }
        if self.control.metadata.with_metadata(|m| m.is_removed(from)) {
            return Err(Status::permission_denied(format!(
                "node {from} was removed from the cluster"
            )));
        }
        Ok(())
    }

    /// The sender of a message of `group` must be a member of it: of the group's membership as
    /// this replica knows it (voters and learners, of every configuration in a joint one), or,
    /// for a replica that has not caught up with it, of what the controller's metadata says
    /// (a partition's replicas and the move under way; the controller's registered nodes). A
    /// replica that knows no membership yet (new, or just added as a learner) hears anyone.
    fn admit_member(
        &self,
        group: GroupId,
        raft: &openraft::Raft<quipu_raft::TypeConfig>,
        from: NodeId,
    ) -> Result<(), Status> {
        let known = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            membership.nodes().next().is_none() || membership.get_node(&from).is_some()
        };
        let member = known
            || self.control.metadata.with_metadata(|m| {
                if group == GroupId::CONTROLLER {
                    m.node(from).is_some()
                } else {
                    m.partition(group.0)
                        .is_some_and(|(_, _, assignment)| assignment.involves(from))
                }
            });
        if member {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "node {from} is not a member of group {group}"
        )))
    }

    /// Hands one message to its group and encodes the group's answer (counted either way).
    async fn handle(&self, caller: Caller, message: RaftMessage) -> Result<RaftReply, Status> {
        let label = crate::telemetry::rpc_label(message.rpc);
        let answer = self.answer(caller, message).await;
        crate::telemetry::raft_received(label, answer.is_ok());
        answer
    }

    /// What [`Self::handle`] answers.
    async fn answer(&self, caller: Caller, message: RaftMessage) -> Result<RaftReply, Status> {
        let from = message.from_node;
        self.admit_peer(caller, from, message.to_node, "message")?;
        let group = GroupId(message.group_id);
        let hosted = self.groups.get_hosted(group).ok_or_else(|| {
            Status::not_found(format!(
                "group {group} is not hosted on node {}",
                self.node_id
            ))
        })?;
        let raft = &hosted.raft;
        self.admit_member(group, raft, from)?;
        let payload = match RaftRpc::try_from(message.rpc) {
            Ok(RaftRpc::AppendEntries) => {
                let rpc: openraft::raft::AppendEntriesRequest<quipu_raft::TypeConfig> =
                    decode_message(&message.payload)?;
                checks::check_append(group, from, &rpc)?;
                let (started, carrying) = (std::time::Instant::now(), !rpc.entries.is_empty());
                let answer = raft.append_entries(rpc).await;
                if carrying && answer.is_ok() {
                    crate::telemetry::raft_append_handled(started.elapsed());
                }
                encode(&answer)?
            }
            Ok(RaftRpc::Vote) if !hosted.quiet.may_vote() => {
                checks::check_vote_request(group, from, &decode_message(&message.payload)?)?;
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
            Ok(RaftRpc::Vote) => {
                let rpc = decode_message(&message.payload)?;
                checks::check_vote_request(group, from, &rpc)?;
                encode(&raft.vote(rpc).await)?
            }
            Ok(RaftRpc::InstallSnapshot) => {
                let rpc = decode_message(&message.payload)?;
                checks::check_snapshot(group, from, &rpc)?;
                encode(&raft.install_snapshot(rpc).await)?
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
        Ok(RaftReply {
            payload: payload.into(),
        })
    }
}

/// The answers of one `DeliverStream`, as they are ready.
type ReplyStream = Pin<Box<dyn Stream<Item = Result<RaftStreamReply, Status>> + Send>>;

impl TransportService {
    /// Hands each message of a stream to its group, at most [`STREAM_IN_FLIGHT_MAX`] at once,
    /// and sends each answer back as soon as it is ready, within [`CALL_TIMEOUT`]. Every
    /// message passes what a call's request passes ([`Self::admit`]) again when it arrives:
    /// the stream may have opened before this node knew its cluster's id, or was isolated.
    /// Stops taking messages when the sender ends its side, stops reading answers, or this node
    /// stops; the answers of what it took still go out, then the stream ends.
    async fn serve_stream(
        self: Arc<Self>,
        caller: Caller,
        metadata: Arc<tonic::metadata::MetadataMap>,
        mut inbound: Streaming<RaftStreamMessage>,
        replies: mpsc::Sender<Result<RaftStreamReply, Status>>,
    ) {
        let permits = Arc::new(Semaphore::new(STREAM_IN_FLIGHT_MAX));
        let mut stopping = self.stopping.clone();
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let next = tokio::select! {
                next = inbound.message() => next,
                () = replies.closed() => return,
                _ = stopping.wait_for(|stopping| *stopping) => return,
            };
            let streamed = match next {
                Ok(Some(streamed)) => streamed,
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!(error = %status, "a Raft stream from a peer broke");
                    return;
                }
            };
            let (service, replies) = (Arc::clone(&self), replies.clone());
            let metadata = Arc::clone(&metadata);
            let mut handling = Box::pin(async move {
                let _permit = permit;
                let answer = async {
                    let message = streamed.message.ok_or_else(|| {
                        Status::invalid_argument("a stream message lacks its message")
                    })?;
                    service.admit_stamped(&metadata)?;
                    let group = message.group_id;
                    tokio::time::timeout(CALL_TIMEOUT, service.handle(caller, message))
                        .await
                        .map_err(|_| {
                            Status::deadline_exceeded(format!(
                                "group {group} did not answer within {CALL_TIMEOUT:?}"
                            ))
                        })?
                };
                let item = batch_item(answer.await);
                let _ = replies
                    .send(Ok(RaftStreamReply {
                        id: streamed.id,
                        item: Some(item),
                    }))
                    .await;
            });
            // Polled once before the next message is read: openraft hands a message to its
            // group's Raft core on the first poll, so a group's messages reach its core in the
            // order they came (a leader keeps several AppendEntries in flight, and one that
            // overtook an earlier one would be a conflict).
            if futures_util::poll!(&mut handling).is_pending() {
                tokio::spawn(handling);
            }
        }
    }
}

/// One message's answer as an item of a batch or stream reply.
fn batch_item(result: Result<RaftReply, Status>) -> RaftBatchItem {
    match result {
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
    }
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn deliver(&self, request: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        let caller = self.admit(&request)?;
        self.handle(caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn deliver_batch(
        &self,
        request: Request<RaftBatch>,
    ) -> Result<Response<RaftBatchReply>, Status> {
        let caller = self.admit(&request)?;
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
            tasks.spawn(async move { (at, service.handle(caller, message).await) });
        }
        let mut items = vec![RaftBatchItem::default(); count];
        while let Some(done) = tasks.join_next().await {
            let (at, result) =
                done.map_err(|e| Status::internal(format!("a batch item failed: {e}")))?;
            items[at] = batch_item(result);
        }
        Ok(Response::new(RaftBatchReply { items }))
    }

    type DeliverStreamStream = ReplyStream;

    async fn deliver_stream(
        &self,
        request: Request<Streaming<RaftStreamMessage>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let caller = self.admit(&request)?;
        let (metadata, _, inbound) = request.into_parts();
        let (replies, mut out) = mpsc::channel(STREAM_IN_FLIGHT_MAX);
        tokio::spawn(Arc::new(self.clone()).serve_stream(
            caller,
            Arc::new(metadata),
            inbound,
            replies,
        ));
        Ok(Response::new(Box::pin(futures_util::stream::poll_fn(
            move |cx| out.poll_recv(cx),
        ))))
    }

    async fn heartbeat(
        &self,
        request: Request<NodeHeartbeat>,
    ) -> Result<Response<NodeHeartbeatReply>, Status> {
        let caller = self.admit(&request)?;
        let heartbeat = request.into_inner();
        self.admit_peer(caller, heartbeat.from_node, heartbeat.to_node, "heartbeat")?;
        groups_within_bound(heartbeat.quiet.len(), "a heartbeat listing quiet groups")?;
        quiesce::on_node_heartbeat(&self.groups, &self.liveness, &heartbeat);
        Ok(Response::new(NodeHeartbeatReply {}))
    }

    async fn controller(
        &self,
        request: Request<ControllerCall>,
    ) -> Result<Response<ControllerReply>, Status> {
        let caller = self.admit(&request)?;
        let call = request.into_inner();
        self.admit_peer(caller, call.from_node, call.to_node, "controller request")?;
        let request: ControllerRequest = decode(&call.request)?;
        // A node registers itself only: never another node's addresses.
        if let ControllerRequest::RegisterNode(info) = &request
            && info.id != call.from_node
        {
            return Err(Status::permission_denied(format!(
                "node {} may not register node {}",
                call.from_node, info.id
            )));
        }
        // Handled here only: a forwarded request is never forwarded again.
        let result = self.control.handle(&request).await;
        let applied_index = result.as_ref().ok().and_then(|h| h.index).unwrap_or(0);
        Ok(Response::new(ControllerReply {
            result: encode(&result.map(|handled| handled.allocated))?,
            applied_index,
        }))
    }

    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignReply>, Status> {
        let caller = self.admit(&request)?;
        let request = request.into_inner();
        self.admit_peer(
            caller,
            request.from_node,
            request.to_node,
            "campaign request",
        )?;
        groups_within_bound(request.group_ids.len(), "a campaign request")?;
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
                tokio::spawn(crate::handoff::stand_until_led(group, hosted));
            }
        }
        Ok(Response::new(CampaignReply { started }))
    }

    async fn join(
        &self,
        request: Request<JoinRequest>,
    ) -> Result<Response<ControllerReply>, Status> {
        let caller = self.admit(&request)?;
        let join = request.into_inner();
        // A node joins as itself only.
        caller.speaks_for(join.node_id)?;
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
        let applied_index = result.as_ref().ok().and_then(|h| h.index).unwrap_or(0);
        Ok(Response::new(ControllerReply {
            result: encode(&result.map(|handled| handled.allocated))?,
            applied_index,
        }))
    }

    async fn elect_leaders(
        &self,
        request: Request<ElectLeadersRequest>,
    ) -> Result<Response<ElectLeadersReply>, Status> {
        let caller = self.admit(&request)?;
        let request = request.into_inner();
        self.admit_peer(
            caller,
            request.from_node,
            request.to_node,
            "election request",
        )?;
        groups_within_bound(request.group_ids.len(), "an election request")?;
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

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportReply>, Status> {
        let caller = self.admit(&request)?;
        let request = request.into_inner();
        self.admit_peer(caller, request.from_node, request.to_node, "report request")?;
        let inner = self
            .node
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| Status::unavailable("the node is starting"))?;
        Ok(Response::new(
            crate::node::NodeHandle { inner }.local_report(),
        ))
    }
}

/// Longest transport address a joining node may give.
const ADDRESS_BYTES_MAX: usize = 255;
