//! Errors of the client API as gRPC statuses, each with an [`ErrorDetail`] in its details:
//! `docs/protocol/grpc.md` lists them.

use prost::Message;
use quipu_node::{ControllerError, FetchError, NodeHandle, ProduceError};
use quipu_proto::v1::{ErrorDetail, ErrorReason};
use tonic::{Code, Status};

/// A status with a structured detail.
pub(crate) fn status(
    code: Code,
    reason: ErrorReason,
    message: impl Into<String>,
    leader: Option<(u64, String)>,
) -> Status {
    let (leader_id, leader_addr) = match leader {
        Some((id, addr)) => (Some(id), addr),
        None => (None, String::new()),
    };
    let detail = ErrorDetail {
        reason: reason as i32,
        leader_id,
        leader_addr,
    };
    Status::with_details(code, message, detail.encode_to_vec().into())
}

pub(crate) fn unknown_topic(name: &str) -> Status {
    status(
        Code::NotFound,
        ErrorReason::UnknownTopic,
        format!("unknown topic {}", quipu_meta::shown(name)),
        None,
    )
}

/// A topic setting is unknown or out of its range.
pub(crate) fn invalid_config(message: impl Into<String>) -> Status {
    status(
        Code::InvalidArgument,
        ErrorReason::InvalidConfig,
        message,
        None,
    )
}

pub(crate) fn invalid(message: impl Into<String>) -> Status {
    status(
        Code::InvalidArgument,
        ErrorReason::InvalidArgument,
        message,
        None,
    )
}

/// "Not leader", naming `leader` and its API address when known.
pub(crate) fn not_leader(node: &NodeHandle, what: &str, leader: Option<u64>) -> Status {
    let hint = leader.map(|id| (id, api_addr_of(node, id)));
    let message = match &hint {
        Some((id, addr)) => {
            format!("{what}: this node does not lead it; node {id} at {addr:?} does")
        }
        None => format!("{what}: this node does not lead it; the leader is not known yet"),
    };
    status(
        Code::FailedPrecondition,
        ErrorReason::NotLeader,
        message,
        hint,
    )
}

/// The client API address node `id` registered (empty if unknown).
pub(crate) fn api_addr_of(node: &NodeHandle, id: u64) -> String {
    node.with_metadata(|m| {
        m.nodes()
            .find(|n| n.id == id)
            .map(|n| n.api_addr.clone())
            .unwrap_or_default()
    })
}

pub(crate) fn from_controller(node: &NodeHandle, error: ControllerError) -> Status {
    match error {
        ControllerError::UnknownTopic(name) => unknown_topic(&name),
        ControllerError::TopicExists(name) => status(
            Code::AlreadyExists,
            ErrorReason::TopicExists,
            format!("topic {name} already exists"),
            None,
        ),
        ControllerError::InvalidConfig(reason) => invalid_config(reason),
        error @ ControllerError::Starting { .. } => status(
            Code::Unavailable,
            ErrorReason::NotLeader,
            format!("{error}; retry shortly"),
            None,
        ),
        error @ (ControllerError::NotEnoughNodes { .. } | ControllerError::InternalTopic(_)) => {
            invalid(error.to_string())
        }
        ControllerError::Plan(reason)
        | ControllerError::Refused(reason)
        | ControllerError::NodeHoldsReplicas(reason) => invalid(reason),
        // Only a joining node meets it; a client's request never does.
        ControllerError::OtherCluster(reason) => status(
            Code::FailedPrecondition,
            ErrorReason::Unspecified,
            reason,
            None,
        ),
        error @ (ControllerError::NodeRemoved(_) | ControllerError::UnknownNode(_)) => status(
            Code::NotFound,
            ErrorReason::UnknownNode,
            error.to_string(),
            None,
        ),
        ControllerError::LimitExceeded(reason) => status(
            Code::ResourceExhausted,
            ErrorReason::LimitExceeded,
            reason,
            None,
        ),
        ControllerError::NotLeader { leader } => {
            // No controller leader answered within the patience: no change can be made now.
            let hint = leader.map(|id| (id, api_addr_of(node, id)));
            status(
                Code::Unavailable,
                ErrorReason::NotLeader,
                "no controller leader is available; retry later",
                hint,
            )
        }
        ControllerError::Unavailable(reason) => status(
            Code::Unavailable,
            ErrorReason::UnknownOutcome,
            format!(
                "the controller did not answer; the change may or may not have been made: {reason}"
            ),
            None,
        ),
    }
}

pub(crate) fn from_produce(node: &NodeHandle, error: ProduceError) -> Status {
    match error {
        ProduceError::NotLeader { group, leader, .. } => {
            not_leader(node, &format!("partition group {group}"), leader)
        }
        ProduceError::InvalidBatch(quipu_record::BatchError::TooLarge { len, max }) => status(
            Code::InvalidArgument,
            ErrorReason::MessageTooLarge,
            format!("a record batch of {len} bytes exceeds the maximum of {max} bytes"),
            None,
        ),
        ProduceError::InvalidBatch(e) => invalid(format!("invalid record batch: {e}")),
        error @ ProduceError::ProducerFields { .. } => invalid(chain(&error)),
        error @ ProduceError::InternalTopic { .. } => invalid(error.to_string()),
        ProduceError::Sequence { group, source } => {
            use quipu_node::SequenceError;
            let reason = match source {
                SequenceError::OutOfOrder { .. } => ErrorReason::OutOfOrderSequence,
                SequenceError::StaleEpoch { .. } => ErrorReason::InvalidProducerEpoch,
                SequenceError::UnknownProducer { .. } => ErrorReason::UnknownProducerId,
            };
            status(
                Code::FailedPrecondition,
                reason,
                format!("partition group {group}: {source}; nothing was written"),
                None,
            )
        }
        ProduceError::Busy { max } => status(
            Code::ResourceExhausted,
            ErrorReason::Busy,
            format!("the node holds its most bytes of produce requests ({max}); retry later"),
            None,
        ),
        error @ ProduceError::BeyondHighWatermark { .. } => status(
            Code::OutOfRange,
            ErrorReason::OffsetOutOfRange,
            error.to_string(),
            None,
        ),
        ProduceError::DiskLow(low) => status(
            Code::ResourceExhausted,
            ErrorReason::DiskFull,
            format!("{low}; nothing was written, retry later"),
            None,
        ),
        ProduceError::Task { group, source } => status(
            Code::Unavailable,
            ErrorReason::ShuttingDown,
            format!("partition group {group}: nothing was proposed: {source}"),
            None,
        ),
        ProduceError::Unavailable { group, source } => status(
            Code::Unavailable,
            ErrorReason::UnknownOutcome,
            format!("partition group {group}: the batch may or may not be committed: {source}"),
            None,
        ),
    }
}

/// An error and its sources, one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

pub(crate) fn from_fetch(node: &NodeHandle, error: FetchError) -> Status {
    match error {
        FetchError::NotLeader { group, leader } => {
            not_leader(node, &format!("partition group {group}"), leader)
        }
        FetchError::Read {
            group,
            source: source @ quipu_storage::ReadError::OffsetOutOfRange { .. },
        } => status(
            Code::OutOfRange,
            ErrorReason::OffsetOutOfRange,
            format!("partition group {group}: {source}"),
            None,
        ),
        FetchError::Read { group, source } => status(
            Code::Internal,
            ErrorReason::Unspecified,
            format!("partition group {group} cannot serve the read: {source}"),
            None,
        ),
        FetchError::Unavailable { group, source } => status(
            Code::Unavailable,
            ErrorReason::Unspecified,
            format!("partition group {group}: {source}"),
            None,
        ),
    }
}

/// The status of a refusal by the group coordinator.
pub(crate) fn from_coordinator(node: &NodeHandle, error: quipu_node::CoordinatorError) -> Status {
    use quipu_groups::GroupError;
    use quipu_groups::consumer::ConsumerError;
    use quipu_node::CoordinatorError;
    let message = chain(&error);
    match error {
        CoordinatorError::InvalidGroupId | CoordinatorError::RecordsTooLarge { .. } => {
            invalid(message)
        }
        CoordinatorError::NotCoordinator { leader, .. } => {
            let hint = leader.map(|id| (id, api_addr_of(node, id)));
            status(
                Code::FailedPrecondition,
                ErrorReason::NotCoordinator,
                message,
                hint,
            )
        }
        CoordinatorError::Loading { .. } | CoordinatorError::NotAvailable(_) => status(
            Code::Unavailable,
            ErrorReason::CoordinatorNotAvailable,
            message,
            None,
        ),
        CoordinatorError::Group(GroupError::UnknownMemberId)
        | CoordinatorError::Consumer(ConsumerError::UnknownMemberId) => status(
            Code::FailedPrecondition,
            ErrorReason::UnknownMember,
            message,
            None,
        ),
        CoordinatorError::Consumer(
            ConsumerError::FencedMemberEpoch { .. } | ConsumerError::StaleMemberEpoch { .. },
        )
        | CoordinatorError::Group(
            GroupError::IllegalGeneration { .. } | GroupError::FencedInstanceId,
        )
        | CoordinatorError::Consumer(ConsumerError::FencedInstanceId) => status(
            Code::FailedPrecondition,
            ErrorReason::FencedMemberEpoch,
            message,
            None,
        ),
        CoordinatorError::Consumer(ConsumerError::InvalidRequest(_))
        | CoordinatorError::Group(GroupError::TooLong(_)) => invalid(message),
        CoordinatorError::Group(_) | CoordinatorError::Consumer(_) => status(
            Code::FailedPrecondition,
            ErrorReason::GroupRefused,
            message,
            None,
        ),
    }
}
