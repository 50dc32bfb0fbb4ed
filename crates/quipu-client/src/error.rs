//! What a client call can fail with, read from the server's status and its `ErrorDetail`.

use prost::Message;
use quipu_proto::v1::{ErrorDetail, ErrorReason};

/// A client call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No node answered at any of these addresses.
    #[error("no Quipu node answered at {addrs}: is the cluster running, and is the address right?")]
    Unreachable {
        /// The addresses tried.
        addrs: String,
    },
    /// The topic does not exist.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// The partition does not exist.
    #[error("{0}")]
    UnknownPartition(String),
    /// The topic exists already.
    #[error("{0}")]
    TopicExists(String),
    /// The request was refused as invalid.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A create would take the cluster past one of its limits (topics, replicas per node).
    #[error("{0}")]
    LimitExceeded(String),
    /// A record batch is larger than the partition accepts.
    #[error("{0}")]
    MessageTooLarge(String),
    /// The offset is outside the partition's log (below its start, or beyond the end).
    #[error("{0}")]
    OffsetOutOfRange(String),
    /// A write failed in a way that leaves its outcome unknown: it may or may not be committed.
    #[error("unknown outcome: {0}")]
    UnknownOutcome(String),
    /// An idempotent producer's batch does not follow the producer's last one in the partition
    /// (an earlier batch is missing): nothing was written.
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// An idempotent producer's batch was refused because its epoch is older than the
    /// producer's current one, or the partition does not know the producer (expired, or never
    /// seen) and the batch does not start at sequence 0. Nothing was written.
    #[error("{0}")]
    ProducerRefused(String),
    /// The cluster could not serve the request in time (no leader, not enough replicas).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The group does not know this member (it expired, or the coordinator moved): rejoin.
    #[error("{0}")]
    UnknownMember(String),
    /// The member's epoch (or generation) is not its group's: it was fenced; rejoin holding
    /// nothing.
    #[error("{0}")]
    FencedMember(String),
    /// The group has members (a delete or an offset reset needs it empty).
    #[error("{0}")]
    GroupNotEmpty(String),
    /// No such group.
    #[error("{0}")]
    UnknownGroup(String),
    /// The group refused the request for another reason (the message says which).
    #[error("{0}")]
    GroupRefused(String),
    /// No registered node has that id, or it was removed from the cluster.
    #[error("{0}")]
    UnknownNode(String),
    /// The caller's principal may not do this (an ACL refuses it, or none allows it).
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    /// The credentials were refused (a wrong password, an unknown user).
    #[error("not authenticated: {0}")]
    NotAuthenticated(String),
    /// Anything else the server or the transport reported.
    #[error("{0}")]
    Other(String),
}

/// How one try of a call on a node failed.
pub(crate) enum Attempt {
    /// The node's answer, or the transport's failure: classified by [`classify`].
    Status(tonic::Status),
    /// The request never left this client (its produce session had ended): worth retrying.
    NotSent(ClientError),
    /// Final, before anything was sent (a bad address, a request too large to send).
    Fatal(ClientError),
}

/// What the client makes of one failed call.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Not the leader; `Some` names the leader's API address.
    NotLeader(Option<String>),
    /// Refused before anything was done, worth retrying after a pause (no leader yet, not
    /// enough replicas, the node could not be connected to).
    Retry(ClientError),
    /// Final.
    Fatal(ClientError),
}

/// Reads a failed call's status. `idempotent`: whether the call may be repeated when its outcome
/// is unknown (reads and most admin calls may; a produce may not, it would duplicate records).
pub(crate) fn classify(status: &tonic::Status, idempotent: bool) -> Failure {
    let detail = ErrorDetail::decode(status.details()).ok();
    let reason = detail
        .as_ref()
        .and_then(|d| ErrorReason::try_from(d.reason).ok())
        .unwrap_or(ErrorReason::Unspecified);
    let message = status.message().to_string();
    match reason {
        ErrorReason::NotLeader => {
            let addr = detail
                .map(|d| d.leader_addr)
                .filter(|addr| !addr.is_empty());
            if status.code() == tonic::Code::Unavailable {
                // No controller leader: nothing was done.
                return Failure::Retry(ClientError::Unavailable(message));
            }
            Failure::NotLeader(addr)
        }
        ErrorReason::UnknownTopic => Failure::Fatal(ClientError::UnknownTopic(message)),
        ErrorReason::UnknownPartition => Failure::Fatal(ClientError::UnknownPartition(message)),
        ErrorReason::TopicExists => Failure::Fatal(ClientError::TopicExists(message)),
        ErrorReason::InvalidArgument | ErrorReason::InvalidConfig => {
            Failure::Fatal(ClientError::InvalidArgument(message))
        }
        ErrorReason::MessageTooLarge => Failure::Fatal(ClientError::MessageTooLarge(message)),
        ErrorReason::LimitExceeded => Failure::Fatal(ClientError::LimitExceeded(message)),
        ErrorReason::OffsetOutOfRange => Failure::Fatal(ClientError::OffsetOutOfRange(message)),
        ErrorReason::NotEnoughReplicas => Failure::Retry(ClientError::Unavailable(message)),
        ErrorReason::UnknownOutcome if idempotent => {
            Failure::Retry(ClientError::UnknownOutcome(message))
        }
        ErrorReason::UnknownOutcome => Failure::Fatal(ClientError::UnknownOutcome(message)),
        ErrorReason::ShuttingDown | ErrorReason::Busy | ErrorReason::DiskFull => {
            Failure::Retry(ClientError::Unavailable(message))
        }
        ErrorReason::OutOfOrderSequence => Failure::Fatal(ClientError::OutOfOrderSequence(message)),
        ErrorReason::InvalidProducerEpoch | ErrorReason::UnknownProducerId => {
            Failure::Fatal(ClientError::ProducerRefused(message))
        }
        ErrorReason::NotCoordinator => Failure::NotLeader(
            detail
                .map(|d| d.leader_addr)
                .filter(|addr| !addr.is_empty()),
        ),
        ErrorReason::CoordinatorNotAvailable => Failure::Retry(ClientError::Unavailable(message)),
        ErrorReason::UnknownMember => Failure::Fatal(ClientError::UnknownMember(message)),
        ErrorReason::FencedMemberEpoch => Failure::Fatal(ClientError::FencedMember(message)),
        ErrorReason::GroupNotEmpty => Failure::Fatal(ClientError::GroupNotEmpty(message)),
        ErrorReason::UnknownGroup => Failure::Fatal(ClientError::UnknownGroup(message)),
        ErrorReason::GroupRefused => Failure::Fatal(ClientError::GroupRefused(message)),
        ErrorReason::UnknownNode => Failure::Fatal(ClientError::UnknownNode(message)),
        ErrorReason::NotAuthorized => Failure::Fatal(ClientError::NotAuthorized(message)),
        ErrorReason::NotAuthenticated => Failure::Fatal(ClientError::NotAuthenticated(message)),
        ErrorReason::Unspecified => transport(status, idempotent),
    }
}

/// What an idempotent produce that gave up reports: an error that would say "nothing was done"
/// of one call (unavailable, unreachable) is an unknown outcome after several, since an earlier
/// try may have been written. Its sequence numbers must not be reused.
pub(crate) fn after_idempotent_retries(error: ClientError) -> ClientError {
    match error {
        ClientError::Unavailable(message) => ClientError::UnknownOutcome(message),
        ClientError::Unreachable { addrs } => ClientError::UnknownOutcome(format!(
            "no node answered at {addrs}; an earlier try may have been written"
        )),
        other => other,
    }
}

/// A status without a detail: the transport's, or a server that failed unexpectedly.
fn transport(status: &tonic::Status, idempotent: bool) -> Failure {
    let message = format!("{}: {}", status.code(), status.message());
    // Only a failure to connect proves the request never left: "connection reset" or "error
    // reading a body from connection" are breaks after it may have been sent.
    let never_connected = status.code() == tonic::Code::Unavailable && {
        let text = format!("{status:?}").to_lowercase();
        text.contains("tcp connect error")
            || text.contains("connecterror")
            || text.contains("connection refused")
    };
    // A connection that broke mid-call (the node died, an HTTP/2 stream was reset) says nothing
    // about what the server did.
    let broken = matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
    );
    if never_connected || (idempotent && broken) {
        return Failure::Retry(ClientError::Unavailable(message));
    }
    if broken {
        return Failure::Fatal(ClientError::UnknownOutcome(message));
    }
    Failure::Fatal(ClientError::Other(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jepsen seed 1488752003: a send that gave up as "unavailable" after an earlier try had been
    /// written let the producer reuse its sequence number for another value, which the partition
    /// took for a retry and acknowledged at the first value's offset.
    #[test]
    fn an_idempotent_produce_that_gave_up_has_an_unknown_outcome() {
        for error in [
            ClientError::Unavailable("no leader".into()),
            ClientError::Unreachable {
                addrs: "127.0.0.1:1".into(),
            },
        ] {
            assert!(matches!(
                after_idempotent_retries(error),
                ClientError::UnknownOutcome(_)
            ));
        }
        assert!(matches!(
            after_idempotent_retries(ClientError::OutOfOrderSequence("out of order".into())),
            ClientError::OutOfOrderSequence(_)
        ));
    }

    #[test]
    fn a_broken_connection_is_retried_by_reads_and_unknown_to_writes() {
        for code in [
            tonic::Code::Unknown,
            tonic::Code::Cancelled,
            tonic::Code::DeadlineExceeded,
        ] {
            let status = tonic::Status::new(code, "h2 protocol error: error reading a body");
            assert!(matches!(
                classify(&status, true),
                Failure::Retry(ClientError::Unavailable(_))
            ));
            assert!(matches!(
                classify(&status, false),
                Failure::Fatal(ClientError::UnknownOutcome(_))
            ));
        }
        let reset = tonic::Status::new(
            tonic::Code::Unavailable,
            "error reading a body from connection: connection reset",
        );
        assert!(
            matches!(
                classify(&reset, false),
                Failure::Fatal(ClientError::UnknownOutcome(_))
            ),
            "a reset connection may have delivered the produce"
        );
        let refused = tonic::Status::new(
            tonic::Code::Unavailable,
            "tcp connect error: Connection refused",
        );
        assert!(matches!(
            classify(&refused, false),
            Failure::Retry(ClientError::Unavailable(_))
        ));
        let bad = tonic::Status::new(tonic::Code::Internal, "bug");
        assert!(matches!(
            classify(&bad, true),
            Failure::Fatal(ClientError::Other(_))
        ));
    }
}
