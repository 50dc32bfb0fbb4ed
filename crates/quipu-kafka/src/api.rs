//! The handler table and request dispatch. ApiVersions is built from [`supported_apis`], so a
//! client is offered exactly the APIs and versions that have a handler here (never
//! `ApiKey::valid_versions()`, which claims versions the message types cannot decode).

use bytes::{BufMut, Bytes};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterPartitionReassignmentsRequest, ApiKey, ApiVersionsRequest,
    ApiVersionsResponse, ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest, DeleteRecordsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    DescribeLogDirsRequest, DescribeTopicPartitionsRequest, ElectLeadersRequest, FetchRequest,
    FindCoordinatorRequest, HeartbeatRequest, HeartbeatResponse, IncrementalAlterConfigsRequest,
    InitProducerIdRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListOffsetsRequest, ListPartitionReassignmentsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest,
    DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message};
use quipu_node::Principal;

use crate::error::RequestError;
use crate::response::{Encoding, Response};
use crate::server::Context;
use crate::{
    acls, admin, consumer_group, delete_records, describe, fetch, group_admin, groups,
    leader_epoch, list_offsets, membership, metadata, produce, producer_id, reassign, sasl,
    scram_users,
};

/// One API this listener implements, with the versions it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedApi {
    /// The API.
    pub key: ApiKey,
    /// Lowest version answered.
    pub min: i16,
    /// Highest version answered.
    pub max: i16,
    /// What a client should know about this API here (for the compatibility matrix).
    pub note: &'static str,
}

/// Produce v0–2 are advertised but refused by closing the connection, as Kafka 4 does
/// (KAFKA-18659): librdkafka before 2.11.1 turns compression off unless Produce v0 is offered.
const PRODUCE_REFUSED_BELOW: i16 = 3;

/// One table entry at the message type's own versions.
const fn at<M: Message>(key: ApiKey, note: &'static str) -> SupportedApi {
    SupportedApi {
        key,
        min: M::VERSIONS.min,
        max: M::VERSIONS.max,
        note,
    }
}

/// Every API with a handler, and its versions.
pub fn supported_apis() -> [SupportedApi; 40] {
    [
        SupportedApi {
            key: ApiKey::Produce,
            min: 0,
            max: ProduceRequest::VERSIONS.max,
            note: "acks 0, 1 and -1; one RecordBatch v2 per partition, validated before it is \
                   stored; v0-2 close the connection (advertised for librdkafka < 2.11.1)",
        },
        SupportedApi {
            key: ApiKey::Fetch,
            min: FetchRequest::VERSIONS.min,
            max: FetchRequest::VERSIONS.max,
            note: "long poll (min_bytes, max_wait_ms up to 30 s); the first batch whole; no fetch \
                   sessions (session id 0); read_uncommitted and read_committed read the same \
                   (no transactions); OFFSET_OUT_OF_RANGE only below the log start offset or \
                   beyond the leader's log end offset: a fetch above the high watermark but \
                   within the log (a new leader's high watermark lags until it applies its \
                   first entry) waits, as Kafka's leader does",
        },
        SupportedApi {
            key: ApiKey::ListOffsets,
            min: ListOffsetsRequest::VERSIONS.min,
            max: 7,
            note: "earliest (-2), latest (-1), by timestamp, max timestamp (-3, v7); v8+ \
                   (earliest local, latest tiered) not offered",
        },
        SupportedApi {
            key: ApiKey::Metadata,
            min: MetadataRequest::VERSIONS.min,
            max: MetadataRequest::VERSIONS.max,
            note: "topic ids, leader epochs (the Raft term), the cluster id (32 hex digits, \
                   chosen once by the first controller leader; null until then); creates \
                   unknown topics when auto_create_topics is on",
        },
        SupportedApi {
            key: ApiKey::ApiVersions,
            min: ApiVersionsRequest::VERSIONS.min,
            max: ApiVersionsRequest::VERSIONS.max,
            note: "unknown versions answered at v0 with UNSUPPORTED_VERSION (KIP-511)",
        },
        at::<CreateTopicsRequest>(
            ApiKey::CreateTopics,
            "validate_only; -1 partitions or replication factor take the listener's defaults; \
             configs by Kafka name; manual replica assignments refused",
        ),
        at::<DeleteTopicsRequest>(ApiKey::DeleteTopics, "by name, or by topic id (v6)"),
        at::<DescribeConfigsRequest>(
            ApiKey::DescribeConfigs,
            "topics: every config in effect with its source (topic or default) and type; \
             brokers: the node's settings under Kafka's names, read-only",
        ),
        at::<AlterConfigsRequest>(
            ApiKey::AlterConfigs,
            "topics only; replaces the topic's configs; applied live to every replica",
        ),
        at::<CreatePartitionsRequest>(
            ApiKey::CreatePartitions,
            "validate_only; manual replica assignments refused",
        ),
        at::<IncrementalAlterConfigsRequest>(
            ApiKey::IncrementalAlterConfigs,
            "topics only; SET and DELETE (APPEND and SUBTRACT: INVALID_CONFIG, no list configs)",
        ),
        at::<DescribeClusterRequest>(ApiKey::DescribeCluster, "brokers, cluster id, controller"),
        at::<ElectLeadersRequest>(
            ApiKey::ElectLeaders,
            "preferred: the partition's leader hands over to its first replica when that one is \
             a live, caught-up voter; unclean: never (Raft elects only a replica holding every \
             committed record): ELECTION_NOT_NEEDED or ELIGIBLE_LEADERS_NOT_AVAILABLE",
        ),
        at::<AlterPartitionReassignmentsRequest>(
            ApiKey::AlterPartitionReassignments,
            "moves through the controller (learners catch up, joint consensus, then the old \
             replicas are deleted); null replicas cancel; the replication factor is kept",
        ),
        at::<ListPartitionReassignmentsRequest>(
            ApiKey::ListPartitionReassignments,
            "moves under way: the target's replicas then those leaving; adding, removing",
        ),
        at::<OffsetForLeaderEpochRequest>(
            ApiKey::OffsetForLeaderEpoch,
            "the largest Raft term at or below the asked epoch and where it ends in the leader's \
             log (truncation detection); -1/-1 for an epoch older than the log",
        ),
        at::<DeleteRecordsRequest>(
            ApiKey::DeleteRecords,
            "on the partition's leader, through Raft: the log start offset rises on every \
             replica (-1: to the high watermark); reads below it are out of range at once, whole \
             segments below it go at the next retention pass",
        ),
        at::<DescribeLogDirsRequest>(
            ApiKey::DescribeLogDirs,
            "one log dir (data_dir/partitions): each hosted replica's size and lag behind the \
             high watermark; total and usable bytes of its disk (v4)",
        ),
        at::<DescribeTopicPartitionsRequest>(
            ApiKey::DescribeTopicPartitions,
            "topics in name order, paged by cursor, at most 2000 partitions an answer; ISR as in \
             Metadata; no eligible leader replicas (ELR)",
        ),
        at::<InitProducerIdRequest>(
            ApiKey::InitProducerId,
            "idempotent producers: a new producer id (epoch 0) from the node's block, unique in \
             the cluster; a transactional id is refused with INVALID_REQUEST (no transactions)",
        ),
        at::<FindCoordinatorRequest>(
            ApiKey::FindCoordinator,
            "consumer groups (key type 0): the leader of the group's partition of \
             __consumer_offsets, created on first use; batched keys from v4; transaction \
             coordinators (key type 1): INVALID_REQUEST",
        ),
        at::<OffsetCommitRequest>(
            ApiKey::OffsetCommit,
            "committed by a majority of the offsets partition before the answer; checked \
             against the member's generation; metadata up to 4096 bytes; retention_time_ms \
             ignored",
        ),
        at::<OffsetFetchRequest>(
            ApiKey::OffsetFetch,
            "a linearizable read on the coordinator; batched groups from v8; unknown offsets \
             -1",
        ),
        at::<JoinGroupRequest>(
            ApiKey::JoinGroup,
            "classic protocol; MEMBER_ID_REQUIRED from v4; static members (v5); join barrier \
             up to the rebalance timeout; a new group waits group.initial.rebalance.delay.ms; \
             assignors run in the clients",
        ),
        at::<SyncGroupRequest>(
            ApiKey::SyncGroup,
            "the leader's assignments relayed unchanged; followers wait for them",
        ),
        at::<HeartbeatRequest>(
            ApiKey::Heartbeat,
            "REBALANCE_IN_PROGRESS while the group prepares a rebalance",
        ),
        at::<LeaveGroupRequest>(
            ApiKey::LeaveGroup,
            "batched members with per-member errors from v3",
        ),
        at::<DescribeGroupsRequest>(
            ApiKey::DescribeGroups,
            "state, protocol, members with client id, host, metadata and assignment; an \
             unknown group is Dead (GROUP_ID_NOT_FOUND from v6)",
        ),
        at::<ListGroupsRequest>(
            ApiKey::ListGroups,
            "the groups the answering node coordinates (clients ask every node); state and \
             type filters; every group is classic",
        ),
        at::<DeleteGroupsRequest>(
            ApiKey::DeleteGroups,
            "groups without members: metadata and committed offsets deleted through Raft",
        ),
        at::<OffsetDeleteRequest>(
            ApiKey::OffsetDelete,
            "GROUP_SUBSCRIBED_TO_TOPIC for topics a member subscribes to",
        ),
        at::<ConsumerGroupHeartbeatRequest>(
            ApiKey::ConsumerGroupHeartbeat,
            "KIP-848: server-side assignors uniform (default) and range; incremental \
             assignment with member epochs; topic names only (a regex: INVALID_REQUEST); \
             member ids from the client (v1)",
        ),
        at::<ConsumerGroupDescribeRequest>(
            ApiKey::ConsumerGroupDescribe,
            "state, epochs, assignor, members with assignment and target assignment",
        ),
        at::<SaslHandshakeRequest>(
            ApiKey::SaslHandshake,
            "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 as the listener offers (kafka.sasl_mechanisms); \
             after v0 the tokens follow as bare size-prefixed frames (librdkafka 2.0 needs v0 \
             offered)",
        ),
        at::<SaslAuthenticateRequest>(
            ApiKey::SaslAuthenticate,
            "against the users' SCRAM credentials in the cluster metadata (PLAIN too); no \
             re-authentication (session lifetime 0); a failure is answered after 500 ms and \
             closes the connection",
        ),
        at::<DescribeUserScramCredentialsRequest>(
            ApiKey::DescribeUserScramCredentials,
            "mechanisms and iterations of every or each named user; RESOURCE_NOT_FOUND, \
             DUPLICATE_RESOURCE",
        ),
        at::<AlterUserScramCredentialsRequest>(
            ApiKey::AlterUserScramCredentials,
            "upsertions (salted passwords, 4,096 to 16,384 iterations) and deletions, through \
             the controller; keys derived here, the salted password never stored",
        ),
        at::<DescribeAclsRequest>(
            ApiKey::DescribeAcls,
            "literal, prefixed, any and match pattern filters; topic, group, cluster and \
             transactional id resources (delegation tokens and users: none)",
        ),
        at::<CreateAclsRequest>(
            ApiKey::CreateAcls,
            "User: principals only; the valid creations of a request made together through \
             the controller, each invalid one refused with INVALID_REQUEST",
        ),
        at::<DeleteAclsRequest>(
            ApiKey::DeleteAcls,
            "every binding a filter selects (as DescribeAcls), deleted through the controller",
        ),
    ]
}

fn supported(key: ApiKey) -> Option<SupportedApi> {
    supported_apis().into_iter().find(|api| api.key == key)
}

/// A request frame, decoded.
#[derive(Debug)]
pub(crate) enum Request {
    /// ApiVersions at a version from the future: answered at v0 (KIP-511).
    FutureApiVersions { correlation_id: i32 },
    /// A request this listener handles.
    Known {
        key: ApiKey,
        correlation_id: i32,
        version: i16,
        /// The client's id from the request header ("" if none).
        client_id: String,
        body: Box<Body>,
    },
}

/// The body of a handled request.
#[derive(Debug)]
pub(crate) enum Body {
    ApiVersions,
    Metadata(MetadataRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
    DescribeConfigs(DescribeConfigsRequest),
    AlterConfigs(AlterConfigsRequest),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest),
    DescribeCluster(DescribeClusterRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    DescribeLogDirs(DescribeLogDirsRequest),
    DeleteRecords(DeleteRecordsRequest),
    DescribeTopicPartitions(DescribeTopicPartitionsRequest),
    InitProducerId(InitProducerIdRequest),
    FindCoordinator(FindCoordinatorRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
    DeleteGroups(DeleteGroupsRequest),
    OffsetDelete(OffsetDeleteRequest),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest),
    ConsumerGroupDescribe(ConsumerGroupDescribeRequest),
    ElectLeaders(ElectLeadersRequest),
    AlterPartitionReassignments(AlterPartitionReassignmentsRequest),
    ListPartitionReassignments(ListPartitionReassignmentsRequest),
    SaslHandshake(SaslHandshakeRequest),
    SaslAuthenticate(SaslAuthenticateRequest),
    DescribeUserScramCredentials(DescribeUserScramCredentialsRequest),
    AlterUserScramCredentials(AlterUserScramCredentialsRequest),
    DescribeAcls(DescribeAclsRequest),
    CreateAcls(CreateAclsRequest),
    DeleteAcls(DeleteAclsRequest),
}

/// Decodes one request frame (without its size prefix): the API key and version are checked
/// against the handler table before the header and body are decoded. No I/O: this is what the
/// fuzz target drives.
pub(crate) fn decode(frame: Bytes) -> Result<Request, RequestError> {
    if frame.len() < 4 {
        return Err(RequestError::NoHeader(frame.len()));
    }
    let api = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(api).map_err(|()| RequestError::UnknownApi(api))?;
    let range = supported(key).ok_or(RequestError::UnknownApi(api))?;
    let malformed = |source: anyhow::Error| RequestError::Malformed {
        api,
        version,
        source: source.into(),
    };
    let mut buf = frame;
    if key == ApiKey::ApiVersions && !(range.min..=range.max).contains(&version) {
        // KIP-511: read what can be read of the header and answer at v0, listing our ranges.
        let header = RequestHeader::decode(&mut buf, 1).map_err(malformed)?;
        return Ok(Request::FutureApiVersions {
            correlation_id: header.correlation_id,
        });
    }
    if !(range.min..=range.max).contains(&version)
        || (key == ApiKey::Produce && version < PRODUCE_REFUSED_BELOW)
    {
        return Err(RequestError::UnsupportedVersion { api, version });
    }
    let header =
        RequestHeader::decode(&mut buf, key.request_header_version(version)).map_err(malformed)?;
    let body = match key {
        ApiKey::ApiVersions => {
            ApiVersionsRequest::decode(&mut buf, version).map_err(malformed)?;
            Body::ApiVersions
        }
        ApiKey::Metadata => {
            Body::Metadata(MetadataRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::Produce => {
            Body::Produce(ProduceRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::Fetch => Body::Fetch(FetchRequest::decode(&mut buf, version).map_err(malformed)?),
        ApiKey::ListOffsets => {
            Body::ListOffsets(ListOffsetsRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::CreateTopics => {
            Body::CreateTopics(CreateTopicsRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::DeleteTopics => {
            Body::DeleteTopics(DeleteTopicsRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::CreatePartitions => Body::CreatePartitions(
            CreatePartitionsRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::DescribeConfigs => Body::DescribeConfigs(
            DescribeConfigsRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::AlterConfigs => {
            Body::AlterConfigs(AlterConfigsRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::IncrementalAlterConfigs => Body::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::DescribeCluster => Body::DescribeCluster(
            DescribeClusterRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::OffsetForLeaderEpoch => Body::OffsetForLeaderEpoch(
            OffsetForLeaderEpochRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::DeleteRecords => {
            Body::DeleteRecords(DeleteRecordsRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::DescribeLogDirs => Body::DescribeLogDirs(
            DescribeLogDirsRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::DescribeTopicPartitions => Body::DescribeTopicPartitions(
            DescribeTopicPartitionsRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::InitProducerId => Body::InitProducerId(
            InitProducerIdRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::FindCoordinator => Body::FindCoordinator(
            FindCoordinatorRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::OffsetCommit => {
            Body::OffsetCommit(OffsetCommitRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::OffsetFetch => {
            Body::OffsetFetch(OffsetFetchRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::JoinGroup => {
            Body::JoinGroup(JoinGroupRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::SyncGroup => {
            Body::SyncGroup(SyncGroupRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::Heartbeat => {
            Body::Heartbeat(HeartbeatRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::LeaveGroup => {
            Body::LeaveGroup(LeaveGroupRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::DescribeGroups => Body::DescribeGroups(
            DescribeGroupsRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::ListGroups => {
            Body::ListGroups(ListGroupsRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::DeleteGroups => {
            Body::DeleteGroups(DeleteGroupsRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::OffsetDelete => {
            Body::OffsetDelete(OffsetDeleteRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::ConsumerGroupHeartbeat => Body::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::ConsumerGroupDescribe => Body::ConsumerGroupDescribe(
            ConsumerGroupDescribeRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::ElectLeaders => {
            Body::ElectLeaders(ElectLeadersRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::AlterPartitionReassignments => Body::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::ListPartitionReassignments => Body::ListPartitionReassignments(
            ListPartitionReassignmentsRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::SaslHandshake => {
            Body::SaslHandshake(SaslHandshakeRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::SaslAuthenticate => Body::SaslAuthenticate(
            SaslAuthenticateRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::DescribeUserScramCredentials => Body::DescribeUserScramCredentials(
            DescribeUserScramCredentialsRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::AlterUserScramCredentials => Body::AlterUserScramCredentials(
            AlterUserScramCredentialsRequest::decode(&mut buf, version).map_err(malformed)?,
        ),
        ApiKey::DescribeAcls => {
            Body::DescribeAcls(DescribeAclsRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::CreateAcls => {
            Body::CreateAcls(CreateAclsRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        ApiKey::DeleteAcls => {
            Body::DeleteAcls(DeleteAclsRequest::decode(&mut buf, version).map_err(malformed)?)
        }
        _ => return Err(RequestError::UnknownApi(api)),
    };
    Ok(Request::Known {
        key,
        correlation_id: header.correlation_id,
        version,
        client_id: header
            .client_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        body: Box::new(body),
    })
}

/// Decodes a request frame (without its size prefix) as the listener does, and returns its API
/// key and version, or why the listener would close the connection. For fuzzing and tools.
pub fn decode_request(frame: Bytes) -> Result<(ApiKey, i16), RequestError> {
    match decode(frame)? {
        Request::FutureApiVersions { .. } => Ok((ApiKey::ApiVersions, 0)),
        Request::Known { key, version, .. } => Ok((key, version)),
    }
}

/// Handles one request frame of client `who`; `None` for a request that gets no response
/// (acks=0).
pub(crate) async fn dispatch(
    context: &Context,
    frame: Bytes,
    who: &Principal,
) -> Result<Option<Response>, RequestError> {
    let (key, id, version, client_id, body) = match decode(frame)? {
        Request::FutureApiVersions { correlation_id } => {
            let response = api_versions().with_error_code(ResponseError::UnsupportedVersion.code());
            return encode(ApiKey::ApiVersions, correlation_id, 0, &response).map(Some);
        }
        Request::Known {
            key,
            correlation_id,
            version,
            client_id,
            body,
        } => (key, correlation_id, version, client_id, body),
    };
    let answer = |response: &dyn Encode| response.frame(key, id, version).map(Some);
    quipu_node::telemetry::kafka_request(key_name(key));
    match *body {
        Body::ApiVersions => answer(&api_versions()),
        Body::Metadata(r) => answer(&metadata::handle(context, who, r, version).await),
        Body::Produce(r) => {
            let acks = r.acks;
            let response = produce::handle(context, who, r, version).await;
            if acks == 0 {
                let refused = response
                    .responses
                    .iter()
                    .flat_map(|topic| &topic.partition_responses)
                    .map(|partition| partition.error_code)
                    .find(|code| *code != 0);
                return match refused {
                    // Kafka sends nothing back for acks=0, and closes the connection when a
                    // partition refused its batch: the only way the client can learn of it.
                    Some(code) => Err(RequestError::UnacknowledgedRefused { code }),
                    None => Ok(None),
                };
            }
            answer(&response)
        }
        Body::Fetch(r) => {
            let answer = fetch::handle(context, who, r, version).await;
            encode_fetch(id, version, answer).map(Some)
        }
        Body::ListOffsets(r) => answer(&list_offsets::handle(context, who, r, version).await),
        Body::CreateTopics(r) => answer(&admin::create_topics(context, who, r, version).await),
        Body::DeleteTopics(r) => answer(&admin::delete_topics(context, who, r, version).await),
        Body::CreatePartitions(r) => answer(&admin::create_partitions(context, who, r).await),
        Body::DescribeConfigs(r) => {
            answer(&admin::describe_configs(context, who, r, version).await)
        }
        Body::AlterConfigs(r) => answer(&admin::alter_configs(context, who, r).await),
        Body::IncrementalAlterConfigs(r) => {
            answer(&admin::incremental_alter_configs(context, who, r).await)
        }
        Body::DescribeCluster(r) => answer(&admin::describe_cluster(context, r)),
        Body::OffsetForLeaderEpoch(r) => answer(&leader_epoch::handle(context, who, r).await),
        Body::DeleteRecords(r) => answer(&delete_records::handle(context, who, r).await),
        Body::DescribeLogDirs(r) => answer(&describe::describe_log_dirs(context, who, r, version)),
        Body::DescribeTopicPartitions(r) => {
            answer(&describe::describe_topic_partitions(context, who, r))
        }
        Body::InitProducerId(r) => answer(&producer_id::handle(context, who, r).await),
        Body::FindCoordinator(r) => {
            answer(&groups::find_coordinator(context, who, r, version).await)
        }
        Body::OffsetCommit(r) => answer(&groups::offset_commit(context, who, r).await),
        Body::OffsetFetch(r) => answer(&groups::offset_fetch(context, who, r, version).await),
        // Classic membership: READ on the group, else GROUP_AUTHORIZATION_FAILED.
        Body::JoinGroup(r) if !group_readable(context, who, &r.group_id) => answer(
            &JoinGroupResponse::default()
                .with_generation_id(-1)
                .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
        ),
        Body::SyncGroup(r) if !group_readable(context, who, &r.group_id) => answer(
            &SyncGroupResponse::default()
                .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
        ),
        Body::Heartbeat(r) if !group_readable(context, who, &r.group_id) => answer(
            &HeartbeatResponse::default()
                .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
        ),
        Body::LeaveGroup(r) if !group_readable(context, who, &r.group_id) => answer(
            &LeaveGroupResponse::default()
                .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
        ),
        Body::JoinGroup(r) => {
            let client = membership::Client {
                id: &client_id,
                host: format!("/{}", who.host),
            };
            answer(&membership::join_group(context, r, version, client).await)
        }
        Body::SyncGroup(r) => answer(&membership::sync_group(context, r, version).await),
        Body::Heartbeat(r) => answer(&membership::heartbeat(context, r).await),
        Body::LeaveGroup(r) => answer(&membership::leave_group(context, r, version).await),
        Body::DescribeGroups(r) => {
            answer(&group_admin::describe_groups(context, who, r, version).await)
        }
        Body::ListGroups(r) => answer(&group_admin::list_groups(context, who, r, version)),
        Body::DeleteGroups(r) => answer(&group_admin::delete_groups(context, who, r).await),
        Body::OffsetDelete(r) => answer(&group_admin::offset_delete(context, who, r).await),
        Body::ConsumerGroupHeartbeat(r) => {
            let client = membership::Client {
                id: &client_id,
                host: format!("/{}", who.host),
            };
            answer(&consumer_group::heartbeat(context, who, r, version, client).await)
        }
        Body::ConsumerGroupDescribe(r) => answer(&consumer_group::describe(context, who, r).await),
        Body::ElectLeaders(r) => answer(&reassign::elect_leaders(context, who, r, version).await),
        Body::AlterPartitionReassignments(r) => {
            answer(&reassign::alter_partition_reassignments(context, who, r, version).await)
        }
        Body::ListPartitionReassignments(r) => {
            answer(&reassign::list_partition_reassignments(context, who, r))
        }
        Body::SaslHandshake(_) => answer(&sasl::handshake_out_of_place(context)),
        Body::SaslAuthenticate(_) => answer(&sasl::authenticate_out_of_place()),
        Body::DescribeUserScramCredentials(r) => answer(&scram_users::describe(context, who, r)),
        Body::AlterUserScramCredentials(r) => answer(&scram_users::alter(context, who, r).await),
        Body::DescribeAcls(r) => answer(&acls::describe(context, who, &r)),
        Body::CreateAcls(r) => answer(&acls::create(context, who, r).await),
        Body::DeleteAcls(r) => answer(&acls::delete(context, who, r).await),
    }
}

fn group_readable(context: &Context, who: &Principal, group: &str) -> bool {
    crate::authorize::group(context, who, quipu_meta::acls::Operation::Read, group)
}

/// An API's name as Kafka spells it (`Produce`, `Fetch`, ...), for the request counter: made
/// once for the handler table, not per request.
fn key_name(key: ApiKey) -> &'static str {
    static NAMES: std::sync::OnceLock<Vec<(ApiKey, &'static str)>> = std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            supported_apis()
                .into_iter()
                .map(|api| {
                    let name: &'static str = Box::leak(format!("{:?}", api.key).into_boxed_str());
                    (api.key, name)
                })
                .collect()
        })
        .iter()
        .find_map(|(k, name)| (*k == key).then_some(*name))
        .unwrap_or("unknown")
}

/// A response that can be framed (object-safe over `Encodable`).
trait Encode {
    fn frame(
        &self,
        key: ApiKey,
        correlation_id: i32,
        version: i16,
    ) -> Result<Response, RequestError>;
}

impl<R: Encodable> Encode for R {
    fn frame(
        &self,
        key: ApiKey,
        correlation_id: i32,
        version: i16,
    ) -> Result<Response, RequestError> {
        encode(key, correlation_id, version, self)
    }
}

/// The ApiVersions answer: the handler table.
fn api_versions() -> ApiVersionsResponse {
    let api_keys = supported_apis()
        .into_iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.min)
                .with_max_version(api.max)
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(api_keys)
}

/// A size-prefixed response frame: header (at the version the API uses for `version`), body.
pub(crate) fn encode<R: Encodable>(
    key: ApiKey,
    correlation_id: i32,
    version: i16,
    response: &R,
) -> Result<Response, RequestError> {
    encode_spans(key, correlation_id, version, response, Vec::new())
}

/// A Fetch answer's frame: its span markers go out as the log's bytes they stand for, not
/// copied into the frame.
fn encode_fetch(
    correlation_id: i32,
    version: i16,
    answer: fetch::FetchAnswer,
) -> Result<Response, RequestError> {
    encode_spans(
        ApiKey::Fetch,
        correlation_id,
        version,
        &answer.response,
        answer.spans,
    )
}

/// [`encode`], with the span markers the response holds replaced by `spans`, in order (see
/// [`Response`]).
fn encode_spans<R: Encodable>(
    key: ApiKey,
    correlation_id: i32,
    version: i16,
    response: &R,
    spans: Vec<Vec<Bytes>>,
) -> Result<Response, RequestError> {
    let failed = |source: anyhow::Error| RequestError::Encode {
        api: key as i16,
        version,
        source: source.into(),
    };
    let header_version = key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(failed)?
        + response.compute_size(version).map_err(failed)?;
    let span_bytes: usize = spans.iter().flatten().map(Bytes::len).sum();
    let mut frame = Encoding::new((4 + size).saturating_sub(span_bytes), spans);
    frame.put_i32(i32::try_from(size).map_err(|e| failed(e.into()))?);
    header.encode(&mut frame, header_version).map_err(failed)?;
    response.encode(&mut frame, version).map_err(failed)?;
    frame.finish().map_err(|e| failed(e.into()))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap
    )]

    use super::*;
    use crate::response::{SPAN_BYTES_MIN, span_marker};
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    fn response_of(records: Vec<Bytes>) -> FetchResponse {
        let partitions = records
            .into_iter()
            .enumerate()
            .map(|(i, records)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(records.len() as i64)
                    .with_records(Some(records))
            })
            .collect();
        FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_topic_id(uuid::Uuid::from_u128(7))
                .with_partitions(partitions),
        ])
    }

    proptest! {
        /// A fetch answer whose records are span markers encodes to the same bytes as the answer
        /// with every partition's records in one buffer, at every Fetch version; the spans'
        /// bytes are the log's own (chunks of their own, not copies).
        #[test]
        fn a_fetch_answer_with_spans_is_the_same_bytes(
            partitions in proptest::collection::vec(
                proptest::collection::vec(0usize..12_000, 1..4), 0..5),
            version in 4i16..=17,
        ) {
            let parts: Vec<Vec<Bytes>> = partitions
                .iter()
                .enumerate()
                .map(|(i, sizes)| sizes
                    .iter()
                    .enumerate()
                    .map(|(j, &size)| Bytes::from((0..size).map(|b| (b ^ i ^ (j << 3)) as u8).collect::<Vec<_>>()))
                    .collect())
                .collect();
            let joined = |span: &[Bytes]| Bytes::from(span.concat());
            let expected = response_of(parts.iter().map(|span| joined(span)).collect());
            let mut spans = Vec::new();
            let records = parts
                .iter()
                .map(|span| {
                    let len = span.iter().map(Bytes::len).sum();
                    match span_marker(len).filter(|_| len >= SPAN_BYTES_MIN) {
                        Some(marker) => {
                            spans.push(span.clone());
                            marker
                        }
                        None => joined(span),
                    }
                })
                .collect();
            let span_parts = spans.iter().flatten().filter(|part| !part.is_empty()).count();
            let answer = crate::fetch::FetchAnswer { response: response_of(records), spans };
            let copied = encode(ApiKey::Fetch, 42, version, &expected).unwrap().to_bytes();
            let shared = encode_fetch(42, version, answer).unwrap();
            prop_assert_eq!(shared.to_bytes(), copied);
            prop_assert!(
                shared.chunk_count() > span_parts,
                "every part of a span is a chunk of its own, after the frame's head"
            );
        }
    }
}
