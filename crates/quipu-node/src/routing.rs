//! Controller requests from this node: registering itself, and routing requests to the controller
//! leader (here, or forwarded one hop over the transport).

use std::sync::Arc;
use std::time::Duration;

use quipu_meta::NodeInfo;
use quipu_raft::NodeId;

use crate::controller::{
    CONTROLLER_PATIENCE, ControllerError, ControllerHandle, ControllerRequest,
};
use crate::network::Peers;
use crate::node::Inner;

/// Registers this node (id, transport and API addresses) with the controller, and again whenever
/// the metadata does not show those addresses (after a change of address, or when the first
/// attempt found no controller leader). Checks every 250 ms; a registered node costs nothing.
pub(crate) async fn register_self(inner: Arc<Inner>) {
    let me = NodeInfo {
        id: inner.config.node_id,
        raft_addr: inner.advertised_addr(),
        api_addr: inner.config.api_addr.clone().unwrap_or_default(),
        kafka_addr: inner.config.kafka_addr.clone().unwrap_or_default(),
        rack: inner.config.rack.clone(),
    };
    let mut ticker = tokio::time::interval(REGISTER_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let registered = inner
            .metadata
            .with_metadata(|m| m.nodes().any(|n| *n == me));
        if registered || !inner.control.is_member() {
            continue; // done, or not a member of a cluster yet
        }
        if let Err(e) =
            request_controller(&inner, &ControllerRequest::RegisterNode(me.clone())).await
        {
            tracing::warn!(
                node_id = me.id,
                error = &e as &dyn std::error::Error,
                "cannot register with the controller yet"
            );
        }
    }
}

/// Producer ids a node asks the controller for at once (as Kafka's brokers do).
pub const PRODUCER_ID_BLOCK: u32 = 1000;

/// The next producer id of this node's block, asking the controller for a new block when it is
/// used up.
pub(crate) async fn next_producer_id(inner: &Inner) -> Result<i64, ControllerError> {
    let mut block = inner.producer_ids.lock().await;
    if block.is_empty() {
        let request = ControllerRequest::AllocateProducerIds {
            count: PRODUCER_ID_BLOCK,
        };
        let first = request_controller(inner, &request).await?.ok_or_else(|| {
            ControllerError::Unavailable("the controller answered without producer ids".into())
        })?;
        *block = first..first.saturating_add(u64::from(PRODUCER_ID_BLOCK));
    }
    let id = block.next().unwrap_or(u64::MAX);
    i64::try_from(id).map_err(|_| {
        ControllerError::Unavailable(format!("producer id {id} is past the last one (2^63 - 1)"))
    })
}

/// How often a node checks that the controller knows its addresses.
const REGISTER_INTERVAL: Duration = Duration::from_millis(250);

/// Carries out `request` on the controller leader (here, or forwarded); returns the first id of
/// the block for [`ControllerRequest::AllocateProducerIds`].
pub(crate) async fn request_controller(
    inner: &Inner,
    request: &ControllerRequest,
) -> Result<Option<u64>, ControllerError> {
    route(&inner.control, &inner.peers, request)
        .await
        .map(|handled| handled.allocated)
}

/// [`request_controller`] for a client: once the change is committed, waits (at most
/// [`APPLY_PATIENCE`]) until this node has applied it too, so that the client's next request
/// to this node sees it (kafkajs, for one, asks the node that created a topic for its leaders
/// at once). Never called from the controller's own apply path, which it would wait on.
pub(crate) async fn request_controller_and_apply(
    inner: &Inner,
    request: &ControllerRequest,
) -> Result<Option<u64>, ControllerError> {
    let handled = route(&inner.control, &inner.peers, request).await?;
    if let Some(index) = handled.index {
        let applied = inner
            .controller
            .wait(Some(APPLY_PATIENCE))
            .metrics(
                |m| m.last_applied.is_some_and(|applied| applied.index >= index),
                "the change is applied here",
            )
            .await;
        if applied.is_err() {
            tracing::warn!(
                index,
                "a committed controller change is not applied on this node yet: answering anyway"
            );
        }
    }
    Ok(handled.allocated)
}

/// How long a node waits to apply a change it asked the controller for before it answers.
const APPLY_PATIENCE: Duration = Duration::from_secs(10);

/// [`request_controller`] with what it needs only: this node's controller replica and its
/// connections (the transport service, which has no [`Inner`], routes joins with it).
pub(crate) async fn route(
    control: &ControllerHandle,
    peers: &Peers,
    request: &ControllerRequest,
) -> Result<crate::controller::Handled, ControllerError> {
    let deadline = tokio::time::Instant::now() + CONTROLLER_PATIENCE;
    let mut backoff = Duration::from_millis(20);
    loop {
        let result = match control.leader() {
            Some(leader) if leader == control.node_id => control.handle(request).await,
            Some(leader) => forward_to_controller(control, peers, leader, request).await,
            None => Err(ControllerError::NotLeader { leader: None }),
        };
        match result {
            Err(ControllerError::NotLeader { .. } | ControllerError::Starting { .. })
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
    control: &ControllerHandle,
    peers: &Peers,
    leader: NodeId,
    request: &ControllerRequest,
) -> Result<crate::controller::Handled, ControllerError> {
    let not_leader = ControllerError::NotLeader {
        leader: Some(leader),
    };
    let Some(addr) = control.address_of(leader) else {
        return Err(not_leader);
    };
    let Ok(mut client) = peers.client(&addr) else {
        return Err(not_leader);
    };
    let bytes =
        postcard::to_allocvec(request).map_err(|e| ControllerError::Unavailable(e.to_string()))?;
    let call = quipu_proto::v1::ControllerCall {
        from_node: control.node_id,
        to_node: leader,
        request: bytes,
    };
    match tokio::time::timeout(CONTROLLER_PATIENCE, client.controller(call)).await {
        Ok(Ok(reply)) => {
            let reply = reply.into_inner();
            let allocated =
                postcard::from_bytes::<Result<Option<u64>, ControllerError>>(&reply.result)
                    .map_err(|e| {
                        ControllerError::Unavailable(format!("undecodable controller reply: {e}"))
                    })??;
            Ok(crate::controller::Handled {
                allocated,
                index: (reply.applied_index > 0).then_some(reply.applied_index),
            })
        }
        // Refused before it was handled (unreachable, not started): try again.
        Ok(Err(status)) if status.code() == tonic::Code::Unavailable => Err(not_leader),
        Ok(Err(status)) => Err(ControllerError::Unavailable(status.to_string())),
        Err(_) => Err(ControllerError::Unavailable(format!(
            "controller leader {leader} did not answer in time"
        ))),
    }
}
