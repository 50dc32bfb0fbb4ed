//! Why a connection closes ([`RequestError`]), and how node errors become Kafka error codes
//! (the only place that mapping is made).

use kafka_protocol::ResponseError;
use quipu_groups::GroupError;
use quipu_groups::consumer::ConsumerError;
use quipu_node::{CoordinatorError, FetchError, ProduceError, SequenceError};
use quipu_record::BatchError;

/// A cause from `kafka-protocol` (whose codec returns `anyhow` errors).
pub type CodecError = Box<dyn std::error::Error + Send + Sync>;

/// A request that cannot be answered: the connection is closed (as Kafka does), others are
/// unaffected.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Reading from the socket failed.
    #[error("socket read failed")]
    Io(#[source] std::io::Error),
    /// A frame's size prefix is out of range.
    #[error("request frame of {size} bytes (at most {max})")]
    FrameSize {
        /// The size prefix.
        size: i32,
        /// `request_bytes_max`.
        max: usize,
    },
    /// The frame is too short to hold a request header.
    #[error("request frame of {0} bytes has no header")]
    NoHeader(usize),
    /// The API key is not one this listener implements.
    #[error("unknown or unsupported api key {0}")]
    UnknownApi(i16),
    /// The API exists but not at this version.
    #[error("api key {api} does not support version {version}")]
    UnsupportedVersion {
        /// The API key.
        api: i16,
        /// The version asked for.
        version: i16,
    },
    /// The request header or body does not decode.
    #[error("malformed request (api key {api}, version {version})")]
    Malformed {
        /// The API key.
        api: i16,
        /// The version.
        version: i16,
        /// What the decoder said.
        #[source]
        source: CodecError,
    },
    /// An acks=0 produce was refused for a partition (not the leader, invalid, busy): the client
    /// expects no answer, so the connection is closed to tell it, as Kafka does; it then
    /// refreshes its metadata.
    #[error("an acks=0 produce was refused (error code {code} for a partition)")]
    UnacknowledgedRefused {
        /// The first partition's error code.
        code: i16,
    },
    /// The client closed the connection.
    #[error("the client closed the connection")]
    Closed,
    /// The client did not authenticate within the listener's time.
    #[error("no authentication within {}s", crate::sasl::AUTHENTICATION_TIMEOUT.as_secs())]
    AuthenticationTimeout,
    /// The client failed to authenticate (answered, then closed).
    #[error("authentication failed")]
    AuthenticationFailed,
    /// A request other than ApiVersions or SASL before authentication.
    #[error("{0:?} request before authentication")]
    Unauthenticated(kafka_protocol::messages::ApiKey),
    /// The response could not be encoded (a bug: a field set that the version lacks).
    #[error("cannot encode the response (api key {api}, version {version})")]
    Encode {
        /// The API key.
        api: i16,
        /// The version.
        version: i16,
        /// What the encoder said.
        #[source]
        source: CodecError,
    },
}

/// The Kafka error code of a refused or failed produce.
pub(crate) fn produce_error(error: &ProduceError) -> ResponseError {
    match error {
        ProduceError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        ProduceError::InvalidBatch(batch) => batch_error(batch),
        ProduceError::ProducerFields { .. } => ResponseError::InvalidRecord,
        ProduceError::Sequence { source, .. } => match source {
            SequenceError::OutOfOrder { .. } => ResponseError::OutOfOrderSequenceNumber,
            SequenceError::StaleEpoch { .. } => ResponseError::InvalidProducerEpoch,
            SequenceError::UnknownProducer { .. } => ResponseError::UnknownProducerId,
        },
        // The outcome is unknown: a retriable timeout, as Kafka reports one. A busy node (nothing
        // proposed) is the same to a producer: no answer in time, try again.
        ProduceError::Unavailable { .. } | ProduceError::Busy { .. } => {
            ResponseError::RequestTimedOut
        }
        // Kafka's answer for a log directory that cannot take writes: clients refresh their
        // metadata and retry.
        ProduceError::DiskLow(_) => ResponseError::KafkaStorageError,
        ProduceError::BeyondHighWatermark { .. } => ResponseError::OffsetOutOfRange,
        // Kafka's answer to a client producing to an internal topic.
        ProduceError::InternalTopic { .. } => ResponseError::InvalidTopicException,
        // The node is shutting down: nothing was proposed; the client retries elsewhere.
        ProduceError::Task { .. } => ResponseError::NotLeaderOrFollower,
    }
}

/// The Kafka error code of a batch that failed validation.
pub(crate) fn batch_error(error: &BatchError) -> ResponseError {
    match error {
        BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. } => {
            ResponseError::MessageTooLarge
        }
        BatchError::Truncated { .. }
        | BatchError::BadMagic(_)
        | BatchError::InvalidBatchLength(_)
        | BatchError::LengthMismatch { .. }
        | BatchError::CrcMismatch { .. } => ResponseError::CorruptMessage,
        BatchError::UnknownCompression(_) => ResponseError::UnsupportedCompressionType,
        BatchError::TimestampOutOfRange { .. } | BatchError::MaxTimestampMismatch { .. } => {
            ResponseError::InvalidTimestamp
        }
        _ => ResponseError::InvalidRecord,
    }
}

/// The Kafka error code of a failed fetch.
pub(crate) fn fetch_error(error: &FetchError) -> ResponseError {
    match error {
        FetchError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        FetchError::Read {
            source: quipu_storage::ReadError::OffsetOutOfRange { .. },
            ..
        } => ResponseError::OffsetOutOfRange,
        FetchError::Read { .. } => ResponseError::KafkaStorageError,
        FetchError::Unavailable { .. } => ResponseError::NotLeaderOrFollower,
    }
}

/// The Kafka error code of a group coordinator's refusal.
pub(crate) fn coordinator_error(error: &CoordinatorError) -> ResponseError {
    match error {
        CoordinatorError::InvalidGroupId => ResponseError::InvalidGroupId,
        CoordinatorError::NotCoordinator { .. } => ResponseError::NotCoordinator,
        CoordinatorError::Loading { .. } => ResponseError::CoordinatorLoadInProgress,
        CoordinatorError::NotAvailable(_) => ResponseError::CoordinatorNotAvailable,
        CoordinatorError::Group(e) => group_error(e),
        CoordinatorError::Consumer(e) => consumer_error(e),
        CoordinatorError::RecordsTooLarge { .. } => ResponseError::InvalidCommitOffsetSize,
    }
}

/// The Kafka error code of a group's refusal.
pub(crate) fn group_error(error: &GroupError) -> ResponseError {
    match error {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout { .. } => ResponseError::InvalidSessionTimeout,
        GroupError::GroupMaxSizeReached(_) => ResponseError::GroupMaxSizeReached,
        GroupError::TooLong(_) => ResponseError::InvalidRequest,
    }
}

/// The Kafka error code of a KIP-848 group's refusal.
pub(crate) fn consumer_error(error: &ConsumerError) -> ResponseError {
    match error {
        ConsumerError::UnknownMemberId => ResponseError::UnknownMemberId,
        ConsumerError::FencedMemberEpoch { .. } => ResponseError::FencedMemberEpoch,
        ConsumerError::StaleMemberEpoch { .. } => ResponseError::StaleMemberEpoch,
        ConsumerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        ConsumerError::UnsupportedAssignor(_) => ResponseError::UnsupportedAssignor,
        ConsumerError::GroupMaxSizeReached(_) => ResponseError::GroupMaxSizeReached,
        ConsumerError::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
        ConsumerError::FencedInstanceId => ResponseError::FencedInstanceId,
        // Kafka's answer to a KIP-848 heartbeat for a classic group with members.
        ConsumerError::ClassicGroup => ResponseError::GroupIdNotFound,
    }
}
