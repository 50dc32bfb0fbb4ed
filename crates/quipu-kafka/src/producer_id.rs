//! InitProducerId: a new idempotent producer id from this node's block (`NodeHandle::
//! init_producer_id`), epoch 0. Transactions are not implemented: a request with a
//! transactional id is refused. As Kafka does for a producer without a transactional id, a
//! request that names its current producer id and epoch (KIP-360, v3+) gets a new id too.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use quipu_meta::acls::{Operation, ResourceType};
use quipu_node::Principal;

use crate::server::Context;

pub(crate) async fn handle(
    context: &Context,
    who: &Principal,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let refused = |error: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some_and(|id| !id.0.is_empty()) {
        return refused(ResponseError::InvalidRequest);
    }
    // KIP-679: IDEMPOTENT_WRITE on the cluster, or WRITE on some topic.
    let allowed = context
        .node
        .authorize_cluster(who, Operation::IdempotentWrite)
        || context
            .node
            .authorize_any(who, Operation::Write, ResourceType::Topic);
    if !allowed {
        return refused(ResponseError::ClusterAuthorizationFailed);
    }
    match context.node.init_producer_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "no producer id for a kafka client"
            );
            // Retriable: the client asks again (the controller may be electing a leader).
            refused(ResponseError::CoordinatorNotAvailable)
        }
    }
}
